"""Row group 3, rate limiter core: decisions per second over 1000 peers, round-robin.

Two scenarios, each timed with every side interleaved:

- allow-heavy: a per-peer limit of 100 000 ops/s (burst 100 000), so every
  decision in the run is an allow;
- deny-heavy: a per-peer limit of 1 op/s (burst 1), so after each peer's first
  request nearly every decision is a deny.

Sides (each keyed by peer, all on the real clock):

- aura: ``RateLimiter.check_rate_limit(peer_id, 1)`` with those peer limits
  and a global limit too high to matter (aura checks it anyway: extra work
  the baselines do not do);
- ``limits`` 5.x with ``MemoryStorage``: moving window, fixed window and
  sliding window counter strategies (``strategy.hit(item, key)``);
- ``pyrate-limiter`` 4.x: a ``Limiter`` over a bucket factory that keeps one
  bucket per key, both the default ``InMemoryBucket`` (sliding log) and a
  ``StateBucket`` with GCRA; ``try_acquire(key, blocking=False)``.

Target (issue 4): aura >= 10x the best baseline in each scenario.  The note
on each row gives the share of decisions that were allows, to show the
scenario really is allow- or deny-heavy for that side.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

from bench._harness import Context, Stats, Target, optional_module

BEST_TARGET = Target(">=", 10.0)
PEERS_FULL = 1000

SCENARIOS = {
    # name: (ops per second per peer, burst)
    "allow-heavy": (100_000, 100_000),
    "deny-heavy": (1, 1),
}


class _Counted:
    """A decision loop that also counts allows (outside the per-op hot path)."""

    def __init__(
        self, decide: Callable[[Any], Any], keys: list[Any], allowed: Callable[[Any], bool]
    ):
        self.decide = decide
        self.next_key = itertools.cycle(keys).__next__
        self.allowed = allowed
        self.total = 0
        self.allows = 0

    def loop(self, n: int) -> None:
        decide, next_key = self.decide, self.next_key
        last = None
        allows = 0
        allowed = self.allowed
        for _ in range(n):
            last = decide(next_key())
            if allowed(last):
                allows += 1
        self.total += n
        self.allows += allows

    @property
    def allow_share(self) -> float:
        return self.allows / self.total if self.total else 0.0


def _bind_hit(hit: Callable[..., bool], item: Any) -> Callable[[Any], bool]:
    def decide(key: Any) -> bool:
        return hit(item, key)

    return decide


def _bind_acquire(limiter: Any) -> Callable[[Any], bool]:
    acquire = limiter.try_acquire

    def decide(key: Any) -> bool:
        return bool(acquire(key, blocking=False))

    return decide


def _limits_sides(rate: int, keys: list[str]) -> tuple[dict[str, _Counted], str]:
    try:
        import limits
        from limits.storage import MemoryStorage
        from limits.strategies import (
            FixedWindowRateLimiter,
            MovingWindowRateLimiter,
            SlidingWindowCounterRateLimiter,
        )
    except ImportError:
        return {}, "limits is not installed (pip install aura-sync[bench])"
    item = limits.RateLimitItemPerSecond(rate)
    sides: dict[str, _Counted] = {}
    for label, strategy in (
        ("limits moving window", MovingWindowRateLimiter),
        ("limits fixed window", FixedWindowRateLimiter),
        ("limits sliding window counter", SlidingWindowCounterRateLimiter),
    ):
        sides[label] = _Counted(_bind_hit(strategy(MemoryStorage()).hit, item), keys, bool)
    return sides, ""


def _pyrate_sides(rate: int, keys: list[str]) -> tuple[dict[str, _Counted], str]:
    try:
        import pyrate_limiter as pl
    except ImportError:
        return {}, "pyrate-limiter is not installed (pip install aura-sync[bench])"

    class PerKeyFactory(pl.BucketFactory):
        """One bucket per key, created on first use (no leak thread)."""

        def __init__(self, make: Callable[[], Any]) -> None:
            self.make = make
            self.per_key: dict[str, Any] = {}
            self.clock = pl.MonotonicClock()

        def wrap_item(self, name: str, weight: int = 1) -> Any:
            return pl.RateItem(name, self.clock.now(), weight=weight)

        def get(self, item: Any) -> Any:
            bucket = self.per_key.get(item.name)
            if bucket is None:
                bucket = self.per_key[item.name] = self.make()
            return bucket

    rates = [pl.Rate(rate, pl.Duration.SECOND)]
    sides: dict[str, _Counted] = {}
    for label, make in (
        ("pyrate-limiter InMemoryBucket per key", lambda: pl.InMemoryBucket(rates)),
        ("pyrate-limiter GCRA StateBucket per key", lambda: pl.StateBucket(rates, pl.GCRA())),
    ):
        sides[label] = _Counted(_bind_acquire(pl.Limiter(PerKeyFactory(make))), keys, bool)
    return sides, ""


def _aura_side(rl: Any, rate: int, burst: int, peers: list[Any]) -> _Counted:
    from aura_sync.effects import SystemClock

    config = rl.RateLimitConfig(
        global_ops_per_second=10**9,
        global_burst=10**9,
        peer_ops_per_second=rate,
        peer_burst=burst,
        max_tracked_peers=max(10_000, 2 * len(peers)),
    )
    limiter = rl.RateLimiter(config, clock=SystemClock())
    allowed_type = rl.Allowed
    check = limiter.check_rate_limit
    return _Counted(lambda peer: check(peer, 1), peers, lambda result: type(result) is allowed_type)


def run(ctx: Context) -> None:
    """Both scenarios: aura against each baseline, with the target on the best baseline."""
    from aura_sync.ids import DeviceId

    n_peers = PEERS_FULL  # the row is defined on 1000 peers at every size
    peer_ids = [DeviceId.from_int(i + 1) for i in range(n_peers)]
    keys = [str(p) for p in peer_ids]
    rl, why = optional_module(
        "aura_sync.infrastructure.rate_limit", "RateLimiter", "RateLimitConfig", "Allowed"
    )
    for scenario, (rate, burst) in SCENARIOS.items():
        sides: dict[str, _Counted] = {}
        missing: list[str] = []
        for make in (_limits_sides, _pyrate_sides):
            got, miss = make(rate, keys)
            sides.update(got)
            if miss:
                missing.append(miss)
        aura: _Counted | None = None
        if rl is not None:
            aura = _aura_side(rl, rate, burst, peer_ids)
            sides["aura"] = aura
        loops = {label: side.loop for label, side in sides.items()}
        stats = ctx.interleaved(loops) if loops else {}
        base_labels = [label for label in sides if label != "aura"]
        for label in base_labels:
            stats[label].label = label
        for miss in missing:
            ctx.unavailable(f"{scenario} baseline", miss)
        if not base_labels:
            continue
        best = max(base_labels, key=lambda label: stats[label].median)
        if aura is None:
            ctx.unavailable(
                f"{scenario}, {n_peers} peers vs best ({best})", why, baseline=stats[best]
            )
            continue
        aura_stats: Stats = stats["aura"]
        aura_stats.label = "aura RateLimiter"
        for label in base_labels:
            is_best = label == best
            ctx.compare(
                f"{scenario}, {n_peers} peers vs {label}",
                aura_stats,
                stats[label],
                target=BEST_TARGET if is_best else None,
                note=(
                    f"{'best baseline; ' if is_best else ''}"
                    f"allowed {aura.allow_share:.1%} vs {sides[label].allow_share:.1%}"
                ),
            )
