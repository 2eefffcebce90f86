"""Row group 3, rate limiter core: decisions per second over 1000 peers, round-robin.

Two scenarios, each timed with every side interleaved:

- allow-heavy: a per-peer limit of 100 000 ops/s (burst 100 000), so every
  decision in the run is an allow;
- deny-heavy: a per-peer limit of 1 op/s (burst 1), so after each peer's first
  request nearly every decision is a deny.

Sides (each keyed by peer, all on the real clock):

- aura: ``RateLimiter.check_rate_limit(peer_id)`` (cost 1, the default) with
  those peer limits and a global limit too high to matter (aura checks it
  anyway: extra work the baselines do not do); a denial returns a ``Denied``
  with the exact ``retry_after``;
- ``limits`` 5.x with ``MemoryStorage``: moving window, fixed window and
  sliding window counter strategies (``strategy.hit(item, key)``, a bool);
- ``pyrate-limiter`` 4.x: a ``Limiter`` over a bucket factory that keeps one
  bucket per key, both the default ``InMemoryBucket`` (sliding log) and a
  ``StateBucket`` with GCRA; ``try_acquire(key, blocking=False)``, a bool;
- deny-heavy only, a like-for-like extra: ``limits`` moving window that, like
  aura, also says when to retry on a denial (``hit``, then on False
  ``get_window_stats(item, key).reset_time - time.time()``).  It is not one of
  the best-of baselines: the target is always on the best of the plain ones.

Fairness: every side is called the same way, through one C-level pipeline,
``sum(map(operator.is_, map(decide, islice(keys, n)), repeat(allowed)))``:
``decide`` is the library's own bound method (aura's
``limiter.check_rate_limit``) or a ``functools.partial`` of it (``limits``:
``partial(strategy.hit, item)``; pyrate: ``partial(limiter.try_acquire,
blocking=False)``), so no side pays a Python wrapper frame per decision, and
allows are counted by identity with the side's own allow value (aura's
``ALLOWED`` singleton, ``True`` for the rest): the same C call per decision
for every side.  Only the like-for-like extra needs a Python function (there
is no single ``limits`` call that both decides and says when to retry).
``limits``' ``MemoryStorage`` expires entries on a ``threading.Timer`` thread
started 10 ms after use; a timer left pending at the end of a side's
repetition would run in the *next* side's timed repetition (over 1000 keys,
sometimes for tens of ms) and be charged to it.  So each ``limits`` side ends
its repetition by cancelling its pending timer and joining it (an expiry
already running finishes on that side's clock).  That skips some of the
baselines' own cleanup, so if anything it flatters them.

Target (issue 4): aura >= 10x the best baseline in each scenario.  The note
on each row gives the share of decisions that were allows, to show the
scenario really is allow- or deny-heavy for that side.
"""

from __future__ import annotations

import functools
import itertools
import operator
import time
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
    """``n`` decisions over the keys, round-robin, counting allows; same loop for every side.

    ``decide(key)`` is the side's own bound method (or a ``functools.partial``
    of it); ``allowed`` is the value it returns for an allow (compared by
    identity: aura's ``ALLOWED`` singleton, or ``True``).  The loop is all C
    (``islice``/``map``/``operator.is_``/``sum``), so the harness adds the same
    small cost to every side and no Python frame of its own.
    """

    def __init__(
        self,
        decide: Callable[[Any], Any],
        keys: list[Any],
        allowed: object,
        settle: Callable[[], None] | None = None,
    ):
        self.decide = decide
        self.keys = itertools.cycle(keys)
        self.allowed = allowed
        self.settle = settle
        self.total = 0
        self.allows = 0

    def loop(self, n: int) -> None:
        allows = sum(
            map(
                operator.is_,
                map(self.decide, itertools.islice(self.keys, n)),
                itertools.repeat(self.allowed),
            )
        )
        if self.settle is not None:
            self.settle()  # on this side's clock, before the next side runs
        self.total += n
        self.allows += allows

    @property
    def allow_share(self) -> float:
        return self.allows / self.total if self.total else 0.0


def _limits_with_retry_after(strategy: Any, item: Any) -> Callable[[str], bool | float]:
    """``limits`` moving window that also says when to retry: True, or seconds to wait."""
    hit = strategy.hit
    window_stats = strategy.get_window_stats
    now = time.time

    def decide(key: str) -> bool | float:
        if hit(item, key):
            return True
        return max(0.0, float(window_stats(item, key).reset_time) - now())

    return decide


def _settle_storage(storage: Any) -> Callable[[], None]:
    """Cancel and join the pending expiry timer of a ``limits`` ``MemoryStorage``."""

    def settle() -> None:
        timer = storage.timer
        timer.cancel()
        timer.join()

    return settle


LIKE_FOR_LIKE = "limits moving window + retry-after (get_window_stats)"
"""The label of the deny-heavy extra side (not a best-of baseline)."""


def _limits_sides(
    rate: int, keys: list[str], *, with_retry_after: bool = False
) -> tuple[dict[str, _Counted], str]:
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
        storage = MemoryStorage()
        decide = functools.partial(strategy(storage).hit, item)
        sides[label] = _Counted(decide, keys, True, _settle_storage(storage))
    if with_retry_after:
        storage = MemoryStorage()
        with_retry = _limits_with_retry_after(MovingWindowRateLimiter(storage), item)
        sides[LIKE_FOR_LIKE] = _Counted(with_retry, keys, True, _settle_storage(storage))
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
        decide = functools.partial(pl.Limiter(PerKeyFactory(make)).try_acquire, blocking=False)
        sides[label] = _Counted(decide, keys, True)
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
    return _Counted(limiter.check_rate_limit, peers, rl.ALLOWED)


def run(ctx: Context) -> None:
    """Both scenarios: aura against each baseline, with the target on the best baseline."""
    from aura_sync.ids import DeviceId

    n_peers = PEERS_FULL  # the row is defined on 1000 peers at every size
    peer_ids = [DeviceId.from_int(i + 1) for i in range(n_peers)]
    keys = [str(p) for p in peer_ids]
    rl, why = optional_module(
        "aura_sync.infrastructure.rate_limit", "RateLimiter", "RateLimitConfig", "ALLOWED"
    )
    for scenario, (rate, burst) in SCENARIOS.items():
        sides: dict[str, _Counted] = {}
        missing: list[str] = []
        for got, miss in (
            _limits_sides(rate, keys, with_retry_after=scenario == "deny-heavy"),
            _pyrate_sides(rate, keys),
        ):
            sides.update(got)
            if miss:
                missing.append(miss)
        aura: _Counted | None = None
        if rl is not None:
            aura = _aura_side(rl, rate, burst, peer_ids)
            sides["aura"] = aura
        loops = {label: side.loop for label, side in sides.items()}
        stats = ctx.interleaved(loops) if loops else {}
        base_labels = [label for label in sides if label not in ("aura", LIKE_FOR_LIKE)]
        for label in sides:
            if label != "aura":
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
        extra = [LIKE_FOR_LIKE] if LIKE_FOR_LIKE in sides else []
        for label in base_labels + extra:
            is_best = label == best
            if is_best:
                kind = "best baseline; "
            elif label == LIKE_FOR_LIKE:
                kind = "like-for-like extra (also computes a retry-after), not a best-of baseline; "
            else:
                kind = ""
            ctx.compare(
                f"{scenario}, {n_peers} peers vs {label}",
                aura_stats,
                stats[label],
                target=BEST_TARGET if is_best else None,
                note=(
                    f"{kind}allowed {aura.allow_share:.1%} vs {sides[label].allow_share:.1%}; "
                    "every side a direct bound call or functools.partial in one C-level loop"
                ),
            )
