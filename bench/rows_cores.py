"""Row group 5: cache freshness checks, peer selection, connection pool cycles.

Each aura core is timed against the plain-Python code a user would write
without it (interleaved, same run):

- cache: ``CacheManager.is_fresh(key, epoch)`` over 1024 invalidated keys
  (half the checks fresh) vs a ``dict`` of floors (``floors.get(key, 0) <=
  epoch``), checks per second;
- peer selection: ``PeerManager.select_sync_peers(5)`` over 10 000 and
  100 000 connected, eligible peers vs filtering plain records and
  ``sorted(...)[:5]`` by the same score, time per selection;
- pool (core): ``ConnectionPool.acquire(peer)`` + ``release(peer, handle)``
  over 10 peers vs a ``dict`` of idle lists (pop or connect, append back),
  cycles per second;
- pool (actor): acquire/release cycles through ``PoolActor`` vs the same
  two asks to a raw pykka actor, pinned and unpinned (when
  :mod:`aura_sync.actors` has ``PoolActor``).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

from bench._harness import Context, optional_module


def _cycle_loop(fn: Callable[[Any], Any], items: list[Any]) -> Callable[[int], None]:
    nxt = itertools.cycle(items).__next__

    def loop(n: int) -> None:
        for _ in range(n):
            fn(nxt())

    return loop


# --- cache ----------------------------------------------------------------------------


def cache_rows(ctx: Context) -> None:
    """Freshness checks per second, aura CacheManager vs a dict of floors."""
    cache, why = optional_module("aura_sync.infrastructure.cache", "CacheManager")
    n_keys = 1024
    keys = [f"doc/{i}" for i in range(n_keys)]
    floors = {k: 100 + (i % 7) for i, k in enumerate(keys)}
    # (key, epoch) probes: alternating fresh (epoch above the floor) and stale
    probes = [(k, floors[k] + (1 if i % 2 else -1)) for i, k in enumerate(keys)]
    get = floors.get

    def dict_check(probe: tuple[str, int]) -> bool:
        return get(probe[0], 0) <= probe[1]

    loops = {"dict of floors": _cycle_loop(dict_check, probes)}
    if cache is not None:
        manager = cache.CacheManager(max_keys=n_keys)
        for k, floor in floors.items():
            manager.invalidate_keys([k], floor)
        is_fresh = manager.is_fresh
        for k, epoch in probes:
            assert is_fresh(k, epoch) == (floors[k] <= epoch)

        def aura_check(probe: tuple[str, int]) -> bool:
            return bool(is_fresh(probe[0], probe[1]))

        loops["aura"] = _cycle_loop(aura_check, probes)
    stats = ctx.interleaved(loops)
    name = f"cache freshness checks, {n_keys} keys vs dict of floors"
    if cache is None:
        ctx.unavailable(name, why, baseline=stats["dict of floors"])
        return
    stats["aura"].label = "aura CacheManager.is_fresh"
    ctx.compare(name, stats["aura"], stats["dict of floors"], note="half fresh, half stale")


# --- peers ------------------------------------------------------------------------------


def _score(trust: int, succ: int, fail: int, active: int, max_sessions: int) -> float:
    total = succ + fail
    rate = succ / total if total else 0.5
    return 0.5 * trust / 100 + 0.3 * rate + 0.2 * (1 - min(active / max_sessions, 1))


def peer_rows(ctx: Context) -> None:
    """Time to select 5 of N peers, aura PeerManager vs filter + sorted on plain records."""
    peers_mod, why = optional_module(
        "aura_sync.infrastructure.peers", "PeerManager", "PeerDiscoveryConfig", "PeerStatus"
    )
    from aura_sync.ids import DeviceId

    sizes = (100, 1000) if ctx.size.name == "tiny" else (10_000, 100_000)
    for n_peers in sizes:
        name = f"select 5 of {n_peers:,} peers vs filter + sorted"
        records = []
        for i in range(n_peers):
            pid = DeviceId.from_int(i * 7919 + 1)
            rec = {
                "id": pid,
                "status": "connected",
                "trust": 50 + i % 51,
                "verified": True,
                "sync": True,
                "succ": i % 13,
                "fail": i % 5,
                "active": i % 4,
            }
            records.append(rec)

        def naive_select(_: object, records: list[dict[str, Any]] = records) -> list[DeviceId]:
            eligible = [
                r
                for r in records
                if r["status"] == "connected"
                and r["active"] < 10
                and r["trust"] >= 50
                and r["verified"]
                and r["sync"]
            ]
            eligible.sort(
                key=lambda r: (-_score(r["trust"], r["succ"], r["fail"], r["active"], 10), r["id"])
            )
            return [r["id"] for r in eligible[:5]]

        loops: dict[str, Callable[[int], None]] = {
            "filter + sorted": _cycle_loop(naive_select, [0])
        }
        if peers_mod is not None:
            manager = _peer_manager(peers_mod, records)
            select = manager.select_sync_peers
            got, want = select(5), naive_select(0)
            note = "same 5 as baseline" if got == want else "differs from baseline selection"
            loops["aura"] = _cycle_loop(_select_five(manager), [0])
        stats = ctx.interleaved(loops, unit="ns/op")
        base = stats["filter + sorted"]
        base.label = "filter + sorted"
        if peers_mod is None:
            ctx.unavailable(name, why, baseline=base)
            continue
        stats["aura"].label = "aura select_sync_peers(5)"
        ctx.compare(name, stats["aura"], base, note=note)


def _select_five(manager: Any) -> Callable[[object], object]:
    select = manager.select_sync_peers

    def run(_: object) -> object:
        return select(5)

    return run


def _peer_manager(peers_mod: Any, records: list[dict[str, Any]]) -> Any:
    """A PeerManager holding ``records`` as CONNECTED, eligible peers.

    Bulk-loaded through ``PeerManager.restore`` when the module has it (the
    peer-by-peer API costs ~90 µs a peer, too slow for 100 000 peers in a
    quick run); otherwise peer by peer.
    """
    from aura_sync.effects import SystemClock

    config = peers_mod.PeerDiscoveryConfig(max_tracked_peers=len(records) + 1)
    status = peers_mod.PeerStatus
    clock = SystemClock()
    if all(hasattr(peers_mod, n) for n in ("PeerTableSnapshot", "PeerInfo", "PeerMetadata")):
        now = clock.now()
        infos = tuple(
            peers_mod.PeerInfo(
                r["id"],
                None,
                peers_mod.PeerMetadata(
                    status=status.CONNECTED,
                    discovered_at=now,
                    last_seen=now,
                    last_status_change=now,
                    successful_syncs=r["succ"],
                    failed_syncs=r["fail"],
                    trust_level=r["trust"],
                    has_sync_capability=True,
                    verified=True,
                    active_sessions=r["active"],
                ),
            )
            for r in records
        )
        snapshot = peers_mod.PeerTableSnapshot(peers=infos, last_discovery=None)
        return peers_mod.PeerManager.restore(config, snapshot, clock=clock)
    manager = peers_mod.PeerManager(config, clock=clock)
    for r in records:
        pid = r["id"]
        manager.add_peer(pid)
        manager.set_peer_status(pid, status.CONNECTING)
        manager.set_peer_status(pid, status.CONNECTED)
        manager.update_peer_metadata(
            pid,
            trust_level=r["trust"],
            verified=True,
            has_sync_capability=True,
            successful_syncs=r["succ"],
            failed_syncs=r["fail"],
            active_sessions=r["active"],
        )
    return manager


# --- pool -------------------------------------------------------------------------------


class _FakeConnection:
    """A connection that is always healthy and closes for free."""

    __slots__ = ("closed",)

    def __init__(self) -> None:
        self.closed = False

    def is_healthy(self) -> bool:
        return not self.closed

    def close(self) -> None:
        self.closed = True


class _FakeConnector:
    def connect(self, peer_id: Any) -> _FakeConnection:
        return _FakeConnection()


class _DictPool:
    """The ten-line pool a user would write: a dict of idle lists, health-checked on borrow."""

    def __init__(self, connector: _FakeConnector) -> None:
        self.idle: dict[Any, list[_FakeConnection]] = {}
        self.connector = connector

    def acquire(self, peer: Any) -> _FakeConnection:
        idle = self.idle.get(peer)
        while idle:
            conn = idle.pop()
            if conn.is_healthy():
                return conn
        return self.connector.connect(peer)

    def release(self, peer: Any, conn: _FakeConnection) -> None:
        self.idle.setdefault(peer, []).append(conn)


def pool_rows(ctx: Context) -> None:
    """Acquire+release cycles per second: the pool core, then through PoolActor."""
    conns, why = optional_module(
        "aura_sync.infrastructure.connections", "ConnectionPool", "PoolConfig"
    )
    from aura_sync.ids import DeviceId

    peers = [DeviceId.from_int(i + 1) for i in range(10)]
    dict_pool = _DictPool(_FakeConnector())

    def dict_cycle(peer: Any) -> None:
        c = dict_pool.acquire(peer)
        dict_pool.release(peer, c)

    loops = {"dict of idle lists": _cycle_loop(dict_cycle, peers)}
    if conns is not None:
        pool = conns.ConnectionPool(conns.PoolConfig(), _FakeConnector())
        acquire, release = pool.acquire, pool.release

        def aura_cycle(peer: Any) -> None:
            release(peer, acquire(peer))

        loops["aura"] = _cycle_loop(aura_cycle, peers)
    stats = ctx.interleaved(loops)
    base = stats["dict of idle lists"]
    name = "pool acquire+release (core), 10 peers vs dict of idle lists"
    if conns is None:
        ctx.unavailable(name, why, baseline=base)
    else:
        stats["aura"].label = "aura ConnectionPool"
        ctx.compare(name, stats["aura"], base, note="health-checked reuse")
    pool_actor_rows(ctx)


def pool_actor_rows(ctx: Context) -> None:
    """Acquire+release cycles through PoolActor vs two asks to a no-op raw pykka actor.

    Threaded: run pinned and unpinned, both sides started inside each mode and
    timed interleaved.
    """
    from bench.rows_actors import actors_api

    name = "pool acquire+release through PoolActor vs 2 raw pykka asks"
    actors, why = actors_api()
    if actors is not None and not hasattr(actors, "PoolActor"):
        actors, why = None, "not available yet: aura_sync.actors has no PoolActor"
    for pinned, mode in ctx.affinity_modes():
        with mode():
            _pool_actor_mode(ctx, name, actors, why, pinned)


def _pool_actor_mode(ctx: Context, name: str, actors: Any, why: str, pinned: bool) -> None:
    from aura_sync.ids import DeviceId
    from bench.rows_actors import _NullActor

    raw = _NullActor.start()
    address = None
    try:
        ask = raw.ask
        ping = ("ping",)

        def raw_cycle(_: object) -> None:
            ask(ping)
            ask(ping)

        loops = {"2 raw pykka asks": _cycle_loop(raw_cycle, [0])}
        if actors is not None:
            from aura_sync.actors.pool import PoolLease
            from aura_sync.infrastructure.connections import PoolConfig
            from aura_sync.messages.pool import Acquire, Release

            address = actors.spawn(lambda: actors.PoolActor(PoolConfig(), _FakeConnector()))
            peers = [DeviceId.from_int(i + 1) for i in range(10)]
            acquires = {p: Acquire(p) for p in peers}
            pool_ask = address.ask

            def aura_cycle(peer: Any) -> None:
                got = pool_ask(acquires[peer], 10.0)
                if type(got) is not PoolLease:
                    raise RuntimeError(f"PoolActor refused an acquire: {got!r}")
                pool_ask(Release(peer, got.handle_id), 10.0)

            aura_cycle(peers[0])
            loops["aura PoolActor"] = _cycle_loop(aura_cycle, peers)
        stats = ctx.interleaved(loops)
    finally:
        raw.stop()
        if address is not None:
            address.stop()
    base = stats["2 raw pykka asks"]
    if actors is None:
        ctx.unavailable(name, why, baseline=base, pinned=pinned)
    else:
        ctx.compare(name, stats["aura PoolActor"], base, pinned=pinned, note="cycles/s")


def run(ctx: Context) -> None:
    """Cache, peer selection and pool rows."""
    for part in (cache_rows, peer_rows, pool_rows):
        try:
            part(ctx)
        except Exception as exc:  # one broken core must not hide the others
            ctx.error(part.__name__.replace("_rows", ""), exc)
