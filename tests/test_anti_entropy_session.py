"""Sync sessions (``aura_sync.protocols.session``): every path gives back what it borrowed.

The session generator is driven by hand: each step it yields (an ask of the
rate limiter, the peer manager, the pool) is answered by the test, so the
compensation of each failure is checked without actors or sockets, on a
``ManualClock``.
"""

from __future__ import annotations

import collections
from collections.abc import Iterator
from typing import Any

import pytest

from aura_sync.actors._tasks import Ask, Task, Tasks
from aura_sync.effects import ManualClock, Scheduler, SeededRng
from aura_sync.errors import AskTimeout, RateLimited
from aura_sync.identity import NodeIdentity
from aura_sync.ids import DeviceId
from aura_sync.infrastructure.rate_limit import ALLOWED, DenialReason, Denied
from aura_sync.messages.peers import EndSyncSession, StartSyncSession
from aura_sync.messages.pool import Acquire
from aura_sync.messages.rate_limit import CheckRateLimit
from aura_sync.messages.sync import RetrySync
from aura_sync.protocols.anti_entropy import AntiEntropyConfig, InfraAddresses
from aura_sync.protocols.journal import Journal
from aura_sync.protocols.session import DEFER_AT_MOST, PUSHES_SETTLE, Sessions, give_back

P = DeviceId.from_int(7)


class Recorder:
    """Stands in for an actor address: records what it is told."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.told: list[Any] = []

    def tell(self, msg: Any) -> None:
        self.told.append(msg)


class Rig:
    def __init__(self, **config: Any) -> None:
        self.clock = ManualClock()
        self.journal = Journal.open(":memory:", identity=NodeIdentity.generate())
        self.pm, self.rl, self.pool, self.me = (
            Recorder(n) for n in ("peer_manager", "rate_limiter", "pool", "me")
        )
        self.stats: dict[str, int] = collections.defaultdict(int)
        scheduler = Scheduler(self.clock)
        self.sessions = Sessions(
            config=AntiEntropyConfig(**config),
            journal=self.journal,
            infra=InfraAddresses(self.pm, self.rl, self.pool),  # type: ignore[arg-type]
            tasks=Tasks(None, scheduler),  # type: ignore[arg-type]
            owner=lambda: self.me,  # type: ignore[arg-type, return-value]
            clock=self.clock,
            scheduler=scheduler,
            rng=SeededRng(1),
            stats=self.stats,
            bump_epoch=lambda: None,
            count_refusal=lambda peer, exc: None,
        )

    def retries(self) -> list[RetrySync]:
        """Fire the scheduled timers; the RetrySync messages told to the actor."""
        self.clock.advance(60.0)
        return [m for m in self.me.told if isinstance(m, RetrySync)]


@pytest.fixture
def rig() -> Iterator[Rig]:
    r = Rig()
    try:
        yield r
    finally:
        r.journal.close()


def _step(gen: Task, value: Any = None, error: BaseException | None = None) -> Any:
    try:
        return gen.send(value) if error is None else gen.throw(error)
    except StopIteration:
        return None


def test_a_failure_after_the_session_opened_ends_it_and_plans_a_retry(rig: Rig) -> None:
    gen = rig.sessions.sync(P, 0, None, 0.0)
    ask = next(gen)
    assert isinstance(ask, Ask) and ask.target is rig.rl and ask.message == CheckRateLimit(P, 1)
    ask = _step(gen, ALLOWED)
    assert ask.target is rig.pm and ask.message == StartSyncSession(P)
    assert len(rig.sessions.held) == 1 and P in rig.sessions.syncing
    ask = _step(gen, None)  # the session is open
    assert ask.target is rig.pool and ask.message == Acquire(P, None)
    rig.clock.advance(0.25)
    assert _step(gen, error=AskTimeout("the pool did not answer")) is None  # the task ends
    assert rig.pm.told == [EndSyncSession(P, False, 0.25)]  # ended, with its latency
    assert rig.pool.told == []  # nothing was lent, nothing to give back
    assert rig.sessions.held == {} and rig.sessions.syncing == set()
    assert (rig.stats["rounds_failed"], rig.stats["retries"]) == (1, 1)
    [retry] = rig.retries()
    assert (retry.peer_id, retry.attempt) == (P, 1)


def test_a_denial_opens_no_session_and_retries_after_the_limiters_delay(rig: Rig) -> None:
    gen = rig.sessions.sync(P, 0, None, 0.0)
    next(gen)
    assert _step(gen, Denied(3.0, DenialReason.PEER)) is None
    assert rig.pm.told == [] and rig.stats["rate_limited"] == 1
    rig.clock.advance(2.9)
    assert [m for m in rig.me.told if isinstance(m, RetrySync)] == []  # not before retry_after
    [retry] = rig.retries()
    assert retry.prev_delay >= 3.0


def test_abandon_ends_the_open_sessions(rig: Rig) -> None:
    gen = rig.sessions.sync(P, 0, None, 0.0)
    next(gen)
    _step(gen, ALLOWED)
    _step(gen, None)  # the session is open; the pool's answer is awaited
    rig.sessions.abandon("stopping")
    gen.close()
    assert rig.pm.told == [EndSyncSession(P, False, 0.0)]
    assert rig.sessions.held == {} and rig.sessions.syncing == set()


def test_a_session_opened_for_nobody_is_ended_by_give_back() -> None:
    pm = Recorder("peer_manager")
    ask = Ask(pm, StartSyncSession(P), 5.0)  # type: ignore[arg-type]
    give_back(ask, 1, True)  # the reply of a session opened: its count
    assert pm.told == [EndSyncSession(P, False, 0.0)]


def test_a_peer_agreed_with_is_skipped_while_our_journal_is_unchanged() -> None:
    rig = Rig(max_cached_skips=2)
    try:
        fingerprint = rig.journal.digest().fingerprint
        rig.sessions.agreed[P] = (fingerprint, 0)
        for _ in range(2):
            gen = rig.sessions.sync(P, 0, None, 0.0)
            with pytest.raises(StopIteration):
                next(gen)
        assert rig.stats["rounds_skipped"] == 2
        gen = rig.sessions.sync(P, 0, None, 0.0)  # a third skip in a row is not allowed
        assert next(gen).message == CheckRateLimit(P, 1)
        gen.close()
        rig.sessions.agreed[P] = (fingerprint, 0)
        rig.journal.append(b"new")  # our journal changed: sync again
        gen = rig.sessions.sync(P, 0, None, 0.0)
        assert next(gen).message == CheckRateLimit(P, 1)
        gen.close()
        assert P not in rig.sessions.agreed
    finally:
        rig.journal.close()


def _starts(rig: Rig, attempt: int = 0) -> bool:
    """Whether a session with P starts now (its first step is the rate limiter's ask)."""
    gen = rig.sessions.sync(P, attempt, None if attempt == 0 else 0.2, 0.0)
    step = _step(gen)
    gen.close()
    if step is None:
        return False
    assert step.message == CheckRateLimit(P, 1)
    return True


def test_a_session_waits_while_we_push_fresh_ops_to_the_peer_but_not_for_long(rig: Rig) -> None:
    rig.sessions.fresh[P] = [bytes(32)]  # our push task to P is draining its queue
    rig.stats["ticks_without_success"] = 5
    assert not _starts(rig)
    assert rig.stats["rounds_skipped"] == 1 and rig.stats["ticks_without_success"] == 0
    rig.clock.advance(DEFER_AT_MOST - 0.01)
    assert not _starts(rig)  # still pushing, still inside the bound
    assert _starts(rig, attempt=1)  # a retry of a failed session is never put off
    rig.clock.advance(0.01)
    assert _starts(rig)  # put off DEFER_AT_MOST in a row: it runs all the same
    assert not _starts(rig)  # and the next round may wait again
    del rig.sessions.fresh[P]  # the push is over: nothing to wait for
    assert _starts(rig) and rig.sessions.deferred == {}


def test_sessions_wait_until_pushes_to_us_settle(rig: Rig) -> None:
    grew = [rig.clock.now()]  # pushed ops grew our journal just now (from any peer)
    rig.sessions.pushes_in = lambda: grew[0]
    assert not _starts(rig)
    rig.clock.advance(PUSHES_SETTLE / 2)
    grew[0] = rig.clock.now()  # more arrived
    rig.clock.advance(PUSHES_SETTLE - 0.01)
    assert not _starts(rig)
    rig.clock.advance(0.01)
    assert _starts(rig)  # quiet for PUSHES_SETTLE: reconcile now
    assert rig.stats["rounds_skipped"] == 2


def test_rate_limited_is_what_a_denial_becomes() -> None:
    from aura_sync.protocols.session import _raise_if_denied

    with pytest.raises(RateLimited) as info:
        _raise_if_denied(Denied(1.5, DenialReason.GLOBAL))
    assert info.value.retry_after == 1.5
    _raise_if_denied(ALLOWED)
