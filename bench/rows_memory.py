"""Row group 8, memory: bytes per item, measured with tracemalloc.

Each row builds N items inside a fresh structure and divides the traced
memory growth by N (the keys/ids are created beforehand, so only what the
structure itself holds is counted).  Baselines are the plain alternative:

- per tracked peer: ``PeerManager`` vs a ``dict`` of small per-peer records
  (the peer table a user would keep);
- per idle rate-limit bucket: ``RateLimiter`` after one request from each of
  N peers vs ``limits`` ``MemoryStorage`` (moving window) after the same;
- per cache floor: ``CacheManager`` with N keys invalidated vs a
  ``dict[str, int]`` of floors;
- per idle actor: a no-op ``AuraActor`` and a ``CacheActor`` (empty
  cache) vs an idle raw pykka ``ThreadingActor`` (Python heap only: thread
  stacks are not traced).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import pykka

from bench._harness import Context, Stats, optional_module


class _IdleActor(pykka.ThreadingActor):
    """A raw pykka actor that does nothing."""

    def on_receive(self, message: Any) -> Any:
        return None


def _row(
    ctx: Context,
    name: str,
    baseline: tuple[str, Callable[[int], object]],
    measured: tuple[str, Callable[[int], object]] | None,
    n: int,
    why: str,
) -> None:
    base = ctx.bytes_per(baseline[0], baseline[1], n)
    if measured is None:
        ctx.unavailable(name, why, baseline=base)
        return
    got: Stats = ctx.bytes_per(measured[0], measured[1], n)
    ctx.compare(name, got, base, note=f"N = {n:,}")


def peer_row(ctx: Context) -> None:
    """Bytes per tracked peer."""
    from aura_sync.ids import DeviceId

    n = ctx.scaled(20_000, 200)
    ids = [DeviceId.from_int(i + 1) for i in range(n)]

    def plain(k: int) -> object:
        table: dict[DeviceId, dict[str, Any]] = {}
        for pid in ids[:k]:
            table[pid] = {"status": "discovered", "trust": 50, "succ": 0, "fail": 0}
        return table

    peers, why = optional_module("aura_sync.infrastructure.peers", "PeerManager")
    measured = None
    if peers is not None:

        def aura(k: int) -> object:
            manager = peers.PeerManager(peers.PeerDiscoveryConfig(max_tracked_peers=k + 1))
            for pid in ids[:k]:
                manager.add_peer(pid)
            return manager

        measured = ("aura PeerManager", aura)
    _row(
        ctx,
        "bytes per tracked peer vs dict of records",
        ("dict of records", plain),
        measured,
        n,
        why,
    )


def bucket_row(ctx: Context) -> None:
    """Bytes per idle rate-limit bucket (one request from each peer, then idle)."""
    from aura_sync.ids import DeviceId

    n = ctx.scaled(10_000, 200)
    ids = [DeviceId.from_int(i + 1) for i in range(n)]
    keys = [str(p) for p in ids]
    try:
        import limits
        from limits.storage import MemoryStorage
        from limits.strategies import MovingWindowRateLimiter
    except ImportError:
        ctx.unavailable("bytes per idle rate-limit bucket", "limits is not installed")
        return
    item = limits.RateLimitItemPerSecond(100)

    def with_limits(k: int) -> object:
        storage = MemoryStorage()
        strategy = MovingWindowRateLimiter(storage)
        for key in keys[:k]:
            strategy.hit(item, key)
        # stop its expiry timer thread so nothing changes (or holds it) behind our back
        storage.timer.cancel()
        storage.timer.join()
        return strategy

    rl, why = optional_module(
        "aura_sync.infrastructure.rate_limit", "RateLimiter", "RateLimitConfig"
    )
    measured = None
    if rl is not None:

        def aura(k: int) -> object:
            config = rl.RateLimitConfig(max_tracked_peers=max(k, 10_000))
            limiter = rl.RateLimiter(config)
            for pid in ids[:k]:
                limiter.check_rate_limit(pid, 1)
            return limiter

        measured = ("aura RateLimiter", aura)
    _row(
        ctx,
        "bytes per idle rate-limit bucket vs limits moving window",
        ("limits MemoryStorage", with_limits),
        measured,
        n,
        why,
    )


def floor_row(ctx: Context) -> None:
    """Bytes per cache floor."""
    n = 1024
    keys = [f"doc/{i}" for i in range(n)]

    def plain(k: int) -> object:
        return {key: 7 for key in keys[:k]}

    cache, why = optional_module("aura_sync.infrastructure.cache", "CacheManager")
    measured = None
    if cache is not None:

        def aura(k: int) -> object:
            manager = cache.CacheManager(max_keys=k)
            manager.invalidate_keys(keys[:k], 7)
            return manager

        measured = ("aura CacheManager", aura)
    _row(
        ctx, "bytes per cache floor vs dict[str, int]", ("dict of floors", plain), measured, n, why
    )


def actor_row(ctx: Context) -> None:
    """Bytes per idle actor (Python heap): a no-op AuraActor and a CacheActor vs raw pykka."""
    from bench.rows_actors import _noop_case, actors_api

    n = 5 if ctx.size.name == "tiny" else 40

    def raw(k: int) -> object:
        refs = [_IdleActor.start() for _ in range(k)]
        for ref in refs:  # wait until each actor is running and idle
            ref.ask(("ping",), timeout=10)
        return _Stopper([ref.stop for ref in refs])

    actors, why = actors_api()
    if actors is None:
        _row(ctx, "bytes per idle actor vs raw pykka actor", ("raw pykka", raw), None, n, why)
        return
    noop = _noop_case(actors)

    def spawn_all(factory: Callable[[], Any], probe: Any) -> Callable[[int], object]:
        def build(k: int) -> object:
            addresses = [actors.spawn(factory) for _ in range(k)]
            for address in addresses:
                address.ask(probe, 10.0)
            return _Stopper([address.stop for address in addresses])

        return build

    _row(
        ctx,
        "bytes per idle AuraActor vs raw pykka actor",
        ("raw pykka ThreadingActor", raw),
        ("aura AuraActor (no-op)", spawn_all(noop.factory, noop.message)),
        n,
        why,
    )
    if hasattr(actors, "CacheActor"):
        from aura_sync.messages.cache import IsFresh

        _row(
            ctx,
            "bytes per idle CacheActor vs raw pykka actor",
            ("raw pykka ThreadingActor", raw),
            ("aura CacheActor", spawn_all(actors.CacheActor, IsFresh("k", 1))),
            n,
            why,
        )


class _Stopper:
    """Keeps actors alive while measured; stops them when dropped."""

    def __init__(self, stops: list[Callable[[], object]]) -> None:
        self.stops = stops

    def __del__(self) -> None:
        for stop in self.stops:
            with contextlib.suppress(Exception):
                stop()


def run(ctx: Context) -> None:
    """All memory rows; a row that raises is recorded and the others still run."""
    for part in (peer_row, bucket_row, floor_row, actor_row):
        try:
            part(ctx)
        except Exception as exc:
            ctx.error(part.__name__.replace("_row", ""), exc)
