"""Row group 6, supervision: crash-to-serving latency and messages lost across restarts.

The supervised side is a ``CacheActor`` (fault injection on, its manager in
the child's stash) under a one-for-one :class:`~aura_sync.supervisors.Supervisor`
with a restart intensity high enough never to give up.  The baseline is what
a pykka user without a supervisor does: notice the actor died, start a new
one, and switch to its new reference.

- crash-to-serving latency: ``tell(InjectCrash())`` then ``ask(IsFresh)``
  on the same address; the time until the answer comes from the new
  incarnation (µs per crash, p50/p99).  Baseline: ``tell`` a crashing
  message to a raw pykka actor, wait for it to stop, start a new one, ask
  it.  Target (issue 4): p99 <= 2 ms.
- messages lost across restarts: per cycle one crash then 50 told
  ``InvalidateKeys`` without waiting, then count what was applied (the
  cache's ``total_invalidations``, which survives restarts).  Baseline: the
  same against raw pykka restarted by hand (tells to the dead actor or
  dropped from its mailbox are lost).  Target: 0 lost.

Threaded: every row runs pinned to one CPU and unpinned.  Crash logs of both
sides are silenced while the group runs.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from typing import Any

import pykka

from bench._harness import Context, Stats, Target, optional_module

P99_TARGET = Target("<=", 2000.0, on="p99_us")
LOST_TARGET = Target("<=", 0.0, on="max")
TELLS_PER_CRASH = 50


class _Crash(Exception):
    """The baseline's crash."""


class _CrashyCounter(pykka.ThreadingActor):
    """Raw pykka: counts ``"count"`` messages into a shared list; crashes on ``"crash"``."""

    def __init__(self, counter: list[int]) -> None:
        super().__init__()
        self.counter = counter

    def on_receive(self, message: Any) -> Any:
        if message == "crash":
            raise _Crash("injected")
        if message == "count":
            self.counter[0] += 1
        return None


@contextlib.contextmanager
def _quiet_logs() -> Iterator[None]:
    """Silence the crash reports of pykka and aura_sync while crashing on purpose."""
    loggers = [logging.getLogger(name) for name in ("pykka", "aura_sync")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


class _RawRestarter:
    """The baseline: one raw pykka actor, restarted by hand when it died."""

    def __init__(self) -> None:
        self.counter = [0]
        self.ref = _CrashyCounter.start(self.counter)

    def _restart(self) -> None:
        """Wait for the crashed actor to be stopped, then start a new one."""
        self.ref.actor_stopped.wait(10)
        self.ref = _CrashyCounter.start(self.counter)

    def crash_to_serving(self) -> None:
        self.ref.tell("crash")
        self._restart()
        self.ref.ask("ping", timeout=10)

    def lost_in_cycles(self, cycles: int) -> tuple[int, int]:
        before = self.counter[0]
        sent = 0
        for _ in range(cycles):
            self.ref.tell("crash")  # the actor is alive here: started fresh below
            for _ in range(TELLS_PER_CRASH):
                sent += 1
                with contextlib.suppress(pykka.ActorDeadError):
                    self.ref.tell("count")
            self._restart()  # the user notices the death and starts a new actor
        return sent - (self.counter[0] - before), sent

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.ref.stop()


class _AuraSupervised:
    """A supervised CacheActor with fault injection on."""

    def __init__(self, sup_mod: Any, actors: Any) -> None:
        from aura_sync.messages.cache import GetCacheStatistics, InvalidateKeys, IsFresh
        from aura_sync.messages.faults import InjectCrash

        spec = sup_mod.ChildSpec(
            "cache", lambda ctx: actors.CacheActor(stash=ctx.stash, fault_injection=True)
        )
        self.sup = sup_mod.Supervisor([spec], intensity=10**9, period=1.0, name="bench-sup")
        self.sup.start()
        self.address = self.sup.address_of("cache")
        self.crash = InjectCrash("bench")
        self.probe = IsFresh("doc/1", 1)
        self.stats = GetCacheStatistics()
        self.invalidations = [InvalidateKeys((f"k{i}",), i + 1) for i in range(TELLS_PER_CRASH)]
        reply = self.address.ask(self.probe, 10.0)
        if type(reply).__name__ == "ErrorReply":
            raise RuntimeError(f"CacheActor answers IsFresh with {reply!r}")

    def crash_to_serving(self) -> None:
        self.address.tell(self.crash)
        reply = self.address.ask(self.probe, 10.0)
        if type(reply).__name__ == "ErrorReply":
            raise RuntimeError(f"no service after a restart: {reply!r}")

    def _applied(self) -> int:
        return int(self.address.ask(self.stats, 10.0).total_invalidations)

    def lost_in_cycles(self, cycles: int) -> tuple[int, int]:
        before = self._applied()
        sent = 0
        tell = self.address.tell
        for _ in range(cycles):
            tell(self.crash)
            for msg in self.invalidations:
                tell(msg)
                sent += 1
        return sent - (self._applied() - before), sent

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.sup.stop()


def _lost_stats(ctx: Context, label: str, run: Callable[[int], tuple[int, int]]) -> Stats:
    cycles = 2 if ctx.size.name == "tiny" else 20
    run(cycles)  # warm-up
    samples, lost_total, sent_total = [], 0, 0
    for _ in range(ctx.size.reps):
        lost, sent = run(cycles)
        samples.append(lost / sent)
        lost_total += lost
        sent_total += sent
    extra = {"lost": float(lost_total), "sent": float(sent_total)}
    return Stats(label, "lost/sent", samples, n=cycles * TELLS_PER_CRASH, extra=extra)


def _mode_rows(ctx: Context, sup_mod: Any, actors: Any, why: str, pinned: bool) -> None:
    raw = _RawRestarter()
    aura = None
    try:
        if sup_mod is not None:
            aura = _AuraSupervised(sup_mod, actors)
        ops: dict[str, Callable[[], object]] = {"raw pykka restarted by hand": raw.crash_to_serving}
        if aura is not None:
            ops["aura Supervisor + CacheActor"] = aura.crash_to_serving
        lat = ctx.interleaved_latency(ops)
        raw_lost = _lost_stats(ctx, "raw pykka restarted by hand", raw.lost_in_cycles)
        aura_lost = None
        if aura is not None:
            aura_lost = _lost_stats(ctx, "aura Supervisor + CacheActor", aura.lost_in_cycles)
    finally:
        raw.stop()
        if aura is not None:
            aura.stop()
    lat_name = "crash-to-serving latency vs raw pykka restarted by hand"
    lost_name = "messages lost across restarts vs raw pykka restarted by hand"
    base = _as_latency(lat["raw pykka restarted by hand"])
    if aura is None or aura_lost is None:
        ctx.unavailable(lat_name, why, baseline=base, pinned=pinned)
        ctx.unavailable(lost_name, why, baseline=raw_lost, pinned=pinned)
        return
    ctx.compare(
        lat_name,
        _as_latency(lat["aura Supervisor + CacheActor"]),
        base,
        target=P99_TARGET,
        pinned=pinned,
    )
    ctx.compare(
        lost_name,
        aura_lost,
        raw_lost,
        target=LOST_TARGET,
        pinned=pinned,
        note=(
            f"aura lost {aura_lost.extra['lost']:.0f} of {aura_lost.extra['sent']:.0f}, "
            f"pykka {raw_lost.extra['lost']:.0f} of {raw_lost.extra['sent']:.0f}"
        ),
    )


def _as_latency(stats: Stats) -> Stats:
    """Crashes per second -> µs per crash-to-serving (same samples, inverted)."""
    samples = [1e6 / s for s in stats.samples]
    return Stats(stats.label, "us/op", samples, n=stats.n, extra=dict(stats.extra))


def run(ctx: Context) -> None:
    """Both rows, pinned and unpinned (not available until the supervisor lands)."""
    from bench.rows_actors import actors_api

    sup_mod, why = optional_module("aura_sync.supervisors", "Supervisor", "ChildSpec")
    actors = None
    if sup_mod is not None:
        actors, why = actors_api()
        if actors is not None and not hasattr(actors, "CacheActor"):
            actors, why = None, "not available yet: aura_sync.actors has no CacheActor"
        if actors is None:
            sup_mod = None
    with _quiet_logs():
        for pinned, mode in ctx.affinity_modes():
            with mode():
                _mode_rows(ctx, sup_mod, actors, why, pinned)
