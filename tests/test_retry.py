"""Unit tests of the Retry concern: policy, planner, executors, budget and messages."""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import inspect
import math
import threading
import warnings
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from aura_sync.effects import ManualClock, Scheduler, SeededRng
from aura_sync.errors import (
    AuraError,
    InvalidArgument,
    RateLimited,
    RetryExhausted,
    WrongType,
)
from aura_sync.infrastructure.retry import (
    BackoffStrategy,
    GiveUpReason,
    Jitter,
    RetryBudget,
    RetryContext,
    RetryDecision,
    RetryPolicy,
    retry,
    with_exponential_backoff,
)


class Flaky:
    """A callable that raises ``errors[i]`` on call i, then returns ``value``.

    ``cost`` seconds of the clock pass inside every call.
    """

    def __init__(
        self,
        errors: list[BaseException],
        value: object = "ok",
        clock: ManualClock | None = None,
        cost: float = 0.0,
    ) -> None:
        self.errors = list(errors)
        self.value = value
        self.calls = 0
        self.clock = clock
        self.cost = cost
        self.call_times: list[float] = []

    def __call__(self) -> object:
        if self.clock is not None:
            self.call_times.append(self.clock.now())
            self.clock.advance(self.cost)
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return self.value

    async def run_async(self) -> object:
        await asyncio.sleep(0)
        return self()


def failing(n: int, exc: type[Exception] = ConnectionError) -> list[BaseException]:
    return [exc(f"failure {i}") for i in range(n)]


# --- reference values and delays ---------------------------------------------------------


def test_defaults_follow_the_rust_module() -> None:
    policy = RetryPolicy.exponential()
    assert policy.strategy is BackoffStrategy.EXPONENTIAL
    assert policy.max_attempts == 4
    assert policy.initial_delay == 0.1
    assert policy.max_delay == 30.0
    assert policy.jitter is Jitter.NONE
    assert policy.timeout is None
    assert policy.budget is None
    assert RetryPolicy() == policy


def test_exponential_reference_delays() -> None:
    policy = RetryPolicy.exponential()
    assert [policy.calculate_delay(k) for k in range(4)] == pytest.approx([0.1, 0.2, 0.4, 0.8])


def test_linear_reference_delays() -> None:
    policy = RetryPolicy.linear()
    assert [policy.calculate_delay(k) for k in (0, 1, 4)] == pytest.approx([0.1, 0.2, 0.5])


def test_fixed_delay_is_constant_and_kept_above_the_default_cap() -> None:
    assert [RetryPolicy.fixed(0.25).calculate_delay(k) for k in (0, 1, 7)] == [0.25] * 3
    slow = RetryPolicy.fixed(60)
    assert slow.max_delay == 60.0
    assert slow.calculate_delay(3) == 60.0


def test_delays_are_capped_and_huge_indices_saturate() -> None:
    exp = RetryPolicy.exponential().with_max_delay(1.0)
    assert exp.calculate_delay(3) == 0.8
    assert exp.calculate_delay(4) == 1.0
    for k in (1100, 10**6, 10**30):
        assert exp.calculate_delay(k) == 1.0
    lin = RetryPolicy.linear().with_max_delay(2.0)
    assert lin.calculate_delay(30) == 2.0
    assert lin.calculate_delay(10**400) == 2.0
    zero = RetryPolicy.exponential().with_initial_delay(0)
    assert zero.calculate_delay(10**30) == 0.0


def test_max_delay_below_initial_delay_is_allowed_and_the_cap_wins() -> None:
    policy = RetryPolicy.exponential().with_initial_delay(5).with_max_delay(1)
    assert [policy.calculate_delay(k) for k in range(3)] == [1.0, 1.0, 1.0]
    # Builder order does not matter.
    other = RetryPolicy.exponential().with_max_delay(1).with_initial_delay(5)
    assert other == policy


def test_jitter_modes_stay_in_their_bounds() -> None:
    rng = SeededRng(1)
    base = RetryPolicy.exponential().with_initial_delay(1).with_max_delay(10)
    full = base.with_jitter(True)
    assert full.jitter is Jitter.FULL
    equal = base.with_jitter(Jitter.EQUAL)
    for k in range(6):
        v = base.calculate_delay(k)
        assert base.next_delay(k, rng=rng) == v
        assert 0 <= full.next_delay(k, rng=rng) <= v
        assert v / 2 <= equal.next_delay(k, rng=rng) <= v
    assert base.with_jitter(True).with_jitter(False).jitter is Jitter.NONE


def test_full_jitter_actually_varies() -> None:
    policy = RetryPolicy.exponential().with_initial_delay(1).with_jitter(True)
    rng = SeededRng(3)
    samples = {policy.next_delay(2, rng=rng) for _ in range(20)}
    assert len(samples) > 10
    assert max(samples) <= 4.0


def test_equal_and_decorrelated_jitter_actually_vary_over_their_range() -> None:
    # The bound checks alone pass for a jitter that returns v (or v/2, or base)
    # every time: these samples must spread over the documented interval.
    rng = SeededRng(11)
    equal = RetryPolicy.exponential().with_initial_delay(1).with_jitter(Jitter.EQUAL)
    samples = [equal.next_delay(2, rng=rng) for _ in range(200)]  # v = 4: U(2, 4)
    assert len(set(samples)) > 100
    assert min(samples) < 2.2 and max(samples) > 3.8
    decorrelated = (
        RetryPolicy.exponential()
        .with_initial_delay(1)
        .with_max_delay(100)
        .with_jitter(Jitter.DECORRELATED)
    )
    samples = [decorrelated.next_delay(0, 10.0, rng) for _ in range(200)]  # U(1, 30)
    assert len(set(samples)) > 100
    assert min(samples) < 3.0 and max(samples) > 28.0


def test_decorrelated_jitter_uses_previous_delay() -> None:
    policy = (
        RetryPolicy.exponential()
        .with_initial_delay(1)
        .with_max_delay(100)
        .with_jitter(Jitter.DECORRELATED)
    )
    rng = SeededRng(5)
    for _ in range(50):
        first = policy.next_delay(0, None, rng)
        assert 1.0 <= first <= 3.0  # U(base, 3 * base)
        later = policy.next_delay(7, 10.0, rng)
        assert 1.0 <= later <= 30.0  # U(base, 3 * prev)
    capped = policy.with_max_delay(2.0)
    assert all(1.0 <= capped.next_delay(0, 50.0, rng) <= 2.0 for _ in range(50))
    # A previous delay below base (e.g. 0) is clamped: U(base, max(base, 3 * prev)) = base.
    assert policy.next_delay(3, 0.0, rng) == 1.0
    assert policy.next_delay(3, 0.2, rng) == 1.0


# --- builders are immutable ---------------------------------------------------------


def test_builders_return_new_policies_and_leave_the_original_alone() -> None:
    base = RetryPolicy.exponential()
    built = (
        base.with_max_attempts(7)
        .with_initial_delay(0.5)
        .with_max_delay(9)
        .with_jitter(Jitter.EQUAL)
        .with_timeout(12)
        .with_retry_on(ConnectionError)
    )
    assert base == RetryPolicy.exponential()
    assert (built.max_attempts, built.initial_delay, built.max_delay) == (7, 0.5, 9.0)
    assert (built.jitter, built.timeout, built.retry_on) == (Jitter.EQUAL, 12.0, (ConnectionError,))
    assert built.with_timeout(None).timeout is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        built.max_attempts = 1  # type: ignore[misc]


def test_int_seconds_are_stored_as_float() -> None:
    policy = RetryPolicy.exponential().with_initial_delay(2).with_max_delay(20)
    assert type(policy.initial_delay) is float
    assert type(policy.max_delay) is float


# --- execute -------------------------------------------------------------------------


def test_execute_returns_at_once_on_success_without_sleeping() -> None:
    clock = ManualClock()
    fn = Flaky([])
    assert RetryPolicy.exponential().execute(fn, clock=clock) == "ok"
    assert fn.calls == 1
    assert clock.now() == 0.0


def test_execute_retries_with_the_reference_delays() -> None:
    clock = ManualClock()
    fn = Flaky(failing(3), clock=clock)
    assert RetryPolicy.exponential().execute(fn, clock=clock) == "ok"
    assert fn.calls == 4
    assert fn.call_times == pytest.approx([0.0, 0.1, 0.3, 0.7])


def test_execute_exhausted_raises_with_the_last_error_chained() -> None:
    clock = ManualClock()
    errors = failing(10)
    fn = Flaky(errors, clock=clock)
    with pytest.raises(RetryExhausted) as info:
        RetryPolicy.exponential().execute(fn, clock=clock)
    assert fn.calls == 4
    assert info.value.attempts == 4
    assert info.value.last_error is errors[3]
    assert info.value.__cause__ is errors[3]
    assert "4 attempt" in str(info.value) and "failure 3" in str(info.value)
    assert clock.now() == pytest.approx(0.1 + 0.2 + 0.4)


def test_single_attempt_policy_never_sleeps() -> None:
    clock = ManualClock()
    fn = Flaky(failing(1), clock=clock)
    with pytest.raises(RetryExhausted):
        RetryPolicy.exponential().with_max_attempts(1).execute(fn, clock=clock)
    assert fn.calls == 1 and clock.now() == 0.0


def test_non_retryable_error_is_reraised_unchanged_at_once() -> None:
    clock = ManualClock()
    boom = KeyError("boom")
    fn = Flaky([boom], clock=clock)
    policy = RetryPolicy.exponential().with_retry_on((ConnectionError, TimeoutError))
    with pytest.raises(KeyError) as info:
        policy.execute(fn, clock=clock)
    assert info.value is boom
    assert fn.calls == 1
    assert clock.now() == 0.0


def test_retry_on_predicate_selects_errors() -> None:
    clock = ManualClock()
    policy = RetryPolicy.exponential().with_retry_on(lambda e: "transient" in str(e))
    fn = Flaky([OSError("transient 1"), OSError("transient 2")], clock=clock)
    assert policy.execute(fn, clock=clock) == "ok"
    assert fn.calls == 3
    fatal = Flaky([OSError("transient"), OSError("fatal")], clock=clock)
    with pytest.raises(OSError, match="fatal"):
        policy.execute(fatal, clock=clock)
    assert fatal.calls == 2


def test_retry_on_accepts_a_list_of_types() -> None:
    policy = RetryPolicy.exponential().with_retry_on([ConnectionError, TimeoutError])
    assert policy.retry_on == (ConnectionError, TimeoutError)
    assert policy.plan(0, TimeoutError()).should_retry
    assert policy.plan(0, ValueError()).reason is GiveUpReason.NOT_RETRYABLE


def test_base_exceptions_are_never_caught() -> None:
    clock = ManualClock()
    fn = Flaky([KeyboardInterrupt()], clock=clock)
    with pytest.raises(KeyboardInterrupt):
        RetryPolicy.exponential().execute_with_result(fn, clock=clock)
    assert fn.calls == 1
    assert RetryPolicy().plan(0, KeyboardInterrupt()).reason is GiveUpReason.NOT_RETRYABLE


def test_execute_with_result_success_statistics() -> None:
    clock = ManualClock()
    errors = failing(2)
    fn = Flaky(errors, value=42, clock=clock, cost=1.0)
    result = RetryPolicy.exponential().execute_with_result(fn, clock=clock)
    assert result.is_success and result.had_retries
    assert result.value == 42 and result.unwrap() == 42
    assert result.attempts == 3
    assert result.errors == tuple(errors)
    assert result.error is None and result.reason is None
    assert result.total_delay == pytest.approx(0.3)
    assert result.elapsed == pytest.approx(3.0 + 0.3)


def test_execute_with_result_first_try_has_no_retries() -> None:
    result = RetryPolicy().execute_with_result(lambda: None, clock=ManualClock())
    assert result.is_success and not result.had_retries
    assert result.value is None and result.unwrap() is None
    assert result.attempts == 1 and result.errors == ()


def test_execute_with_result_failure_unwraps_like_execute() -> None:
    clock = ManualClock()
    errors = failing(5)
    result = RetryPolicy().with_max_attempts(2).execute_with_result(Flaky(errors), clock=clock)
    assert not result.is_success
    assert result.error is errors[1]
    assert result.reason is GiveUpReason.MAX_ATTEMPTS
    assert result.attempts == 2 and result.total_delay == pytest.approx(0.1)
    with pytest.raises(RetryExhausted) as info:
        result.unwrap()
    assert info.value.__cause__ is errors[1] and info.value.attempts == 2

    boom = KeyError("k")
    result = RetryPolicy().with_retry_on(OSError).execute_with_result(Flaky([boom]), clock=clock)
    assert result.reason is GiveUpReason.NOT_RETRYABLE
    with pytest.raises(KeyError) as raw:
        result.unwrap()
    assert raw.value is boom


def test_elapsed_never_negative_when_the_clock_steps_back() -> None:
    clock = ManualClock(100.0)

    def step_back() -> str:
        clock.set(50.0)
        return "ok"

    result = RetryPolicy().execute_with_result(step_back, clock=clock)
    assert result.elapsed == 0.0


def test_execute_refuses_coroutine_functions_and_coroutines() -> None:
    async def job() -> int:
        return 1

    with pytest.raises(WrongType, match="execute_async"):
        RetryPolicy().execute(job, clock=ManualClock())

    def make_job() -> object:  # a plain function that returns a coroutine
        return job()

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "coroutine was never awaited"
        with pytest.raises(WrongType, match="coroutine"):
            RetryPolicy().execute(make_job, clock=ManualClock())


def test_with_exponential_backoff_shortcut() -> None:
    clock = ManualClock()
    fn = Flaky(failing(4), clock=clock)
    assert with_exponential_backoff(fn, 5, clock=clock) == "ok"
    assert fn.call_times == pytest.approx([0.0, 0.1, 0.3, 0.7, 1.5])
    fn = Flaky(failing(4), clock=clock)
    with pytest.raises(RetryExhausted):
        with_exponential_backoff(fn, 2, clock=clock)
    assert fn.calls == 2


# --- timeout -------------------------------------------------------------------------


def test_timeout_gives_up_before_a_wait_would_pass_it() -> None:
    clock = ManualClock()
    fn = Flaky(failing(10), clock=clock)
    policy = RetryPolicy.exponential().with_max_attempts(10).with_timeout(0.5)
    result = policy.execute_with_result(fn, clock=clock)
    # waits 0.1 and 0.2 (elapsed 0.3); the next 0.4 would end at 0.7 > 0.5
    assert result.reason is GiveUpReason.TIMEOUT
    assert fn.calls == 3
    assert clock.now() == pytest.approx(0.3)
    with pytest.raises(RetryExhausted, match="timeout"):
        result.unwrap()


def test_timeout_counts_time_spent_in_attempts() -> None:
    clock = ManualClock()
    fn = Flaky(failing(10), clock=clock, cost=2.0)
    policy = RetryPolicy.fixed(1.0).with_max_attempts(10).with_timeout(5.0)
    with pytest.raises(RetryExhausted) as info:
        policy.execute(fn, clock=clock)
    # call at 0 (ends 2), wait to 3, call (ends 5): 5 + 1 > 5, give up
    assert info.value.attempts == 2
    assert clock.now() == pytest.approx(5.0)


def test_a_wait_ending_exactly_at_the_timeout_is_allowed() -> None:
    clock = ManualClock()
    fn = Flaky(failing(1), clock=clock)
    assert RetryPolicy.fixed(1.0).with_timeout(1.0).execute(fn, clock=clock) == "ok"
    assert clock.now() == 1.0


# --- retry_after ---------------------------------------------------------------------


def test_rate_limited_retry_after_is_honoured() -> None:
    clock = ManualClock()
    fn = Flaky([RateLimited(2.5), RateLimited(0.01)], clock=clock)
    assert RetryPolicy.exponential().execute(fn, clock=clock) == "ok"
    # max(0.1, 2.5) then max(0.2, 0.01)
    assert fn.call_times == pytest.approx([0.0, 2.5, 2.7])


def test_retry_after_may_exceed_max_delay() -> None:
    clock = ManualClock()
    fn = Flaky([RateLimited(50.0)], clock=clock)
    assert RetryPolicy.exponential().with_max_delay(1).execute(fn, clock=clock) == "ok"
    assert clock.now() == 50.0


class _Throttled(Exception):
    def __init__(self, retry_after: object) -> None:
        super().__init__(f"throttled {retry_after!r}")
        self.retry_after = retry_after


def test_any_error_with_a_numeric_retry_after_is_honoured() -> None:
    decision = RetryPolicy().plan(0, _Throttled(3), rng=SeededRng())
    assert decision == RetryDecision(True, 3.0, None)


@pytest.mark.parametrize("value", [math.nan, math.inf, -1.0, "soon", None, True])
def test_unusable_retry_after_is_ignored(value: object) -> None:
    decision = RetryPolicy().plan(1, _Throttled(value))
    assert decision.delay == pytest.approx(0.2)


def test_retry_after_past_the_timeout_gives_up() -> None:
    clock = ManualClock()
    fn = Flaky([RateLimited(10.0)], clock=clock)
    with pytest.raises(RetryExhausted) as info:
        RetryPolicy().with_timeout(5).execute(fn, clock=clock)
    assert isinstance(info.value.__cause__, RateLimited)
    assert clock.now() == 0.0


# --- the planner ---------------------------------------------------------------------


def test_plan_answers_without_sleeping() -> None:
    policy = RetryPolicy.exponential()
    err = ConnectionError("down")
    assert policy.plan(0, err) == RetryDecision(True, 0.1, None)
    assert policy.plan(2, err, prev_delay=0.2, elapsed=0.3).delay == pytest.approx(0.4)
    assert policy.plan(3, err) == RetryDecision(False, 0.0, GiveUpReason.MAX_ATTEMPTS)
    assert policy.with_retry_on(KeyError).plan(0, err).reason is GiveUpReason.NOT_RETRYABLE
    assert policy.with_timeout(1.0).plan(1, err, elapsed=0.9).reason is GiveUpReason.TIMEOUT
    match policy.plan(1, err):
        case RetryDecision(should_retry=True, delay=d):
            assert d == pytest.approx(0.2)
        case _:
            pytest.fail("expected a retry")


def test_execute_uses_the_same_planner_as_actors() -> None:
    """The delays execute sleeps are exactly the delays a plan() loop computes."""
    policy = (
        RetryPolicy.exponential()
        .with_max_attempts(8)
        .with_initial_delay(0.5)
        .with_jitter(Jitter.DECORRELATED)
    )
    errors: list[BaseException] = [*failing(3), RateLimited(9.0), *failing(10)]
    seen: list[float] = []
    clock = ManualClock()
    with pytest.raises(RetryExhausted):
        policy.with_on_retry(lambda ctx: seen.append(ctx.next_delay)).execute(
            Flaky(list(errors)), clock=clock, rng=SeededRng(11)
        )

    rng = SeededRng(11)
    planned: list[float] = []
    prev: float | None = None
    elapsed = 0.0
    for index, err in enumerate(errors):
        decision = policy.plan(index, err, prev, elapsed, rng)
        if not decision.should_retry:
            break
        planned.append(decision.delay)
        prev = decision.delay
        elapsed += decision.delay
    assert seen == planned
    assert len(seen) == 7
    assert seen[3] >= 9.0
    assert clock.now() == pytest.approx(sum(planned))


def test_actor_style_retry_through_the_scheduler() -> None:
    """An actor plans, asks the Scheduler for a wake-up, and is woken by the clock."""
    clock = ManualClock()
    scheduler = Scheduler(clock)
    policy = RetryPolicy.exponential()

    class Mailbox:
        def __init__(self) -> None:
            self.received: list[Any] = []

        def tell(self, message: Any) -> None:
            self.received.append(message)

    inbox = Mailbox()
    decision = policy.plan(0, ConnectionError("down"), elapsed=0.0)
    assert decision.should_retry
    wake_up = ("retry", 7, 1)  # any message the actor chooses
    scheduler.send_after(decision.delay, inbox, wake_up)
    clock.advance(0.05)
    assert inbox.received == []
    clock.advance(0.05)
    assert inbox.received == [wake_up]


# --- on_retry hook -------------------------------------------------------------------


def test_on_retry_hook_gets_the_context() -> None:
    clock = ManualClock()
    errors = failing(3)
    contexts: list[RetryContext] = []
    policy = RetryPolicy.exponential().with_on_retry(contexts.append)
    assert policy.execute(Flaky(errors, clock=clock, cost=1.0), clock=clock) == "ok"
    assert [c.attempt for c in contexts] == [1, 2, 3]
    assert {c.max_attempts for c in contexts} == {4}
    assert [c.last_error for c in contexts] == errors
    assert [c.next_delay for c in contexts] == pytest.approx([0.1, 0.2, 0.4])
    assert [c.elapsed for c in contexts] == pytest.approx([1.0, 2.1, 3.3])
    assert [c.attempts_left for c in contexts] == [3, 2, 1]


def test_on_retry_hook_is_not_called_when_giving_up() -> None:
    calls: list[RetryContext] = []
    policy = RetryPolicy().with_max_attempts(2).with_on_retry(calls.append)
    with pytest.raises(RetryExhausted):
        policy.execute(Flaky(failing(5)), clock=ManualClock())
    assert len(calls) == 1


def test_on_retry_hook_errors_propagate() -> None:
    def hook(ctx: RetryContext) -> None:
        raise RuntimeError("hook bug")

    fn = Flaky(failing(3))
    with pytest.raises(RuntimeError, match="hook bug"):
        RetryPolicy().with_on_retry(hook).execute(fn, clock=ManualClock())
    assert fn.calls == 1


def test_sync_execute_refuses_an_async_hook() -> None:
    async def hook(ctx: RetryContext) -> None:
        return None

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(WrongType, match="execute_async"):
            RetryPolicy().with_on_retry(hook).execute(Flaky(failing(1)), clock=ManualClock())


# --- async ---------------------------------------------------------------------------


def test_execute_async_retries_and_sleeps_on_the_clock() -> None:
    clock = ManualClock()
    fn = Flaky(failing(2), value="async ok", clock=clock)
    value = asyncio.run(RetryPolicy.exponential().execute_async(fn.run_async, clock=clock))
    assert value == "async ok"
    assert fn.call_times == pytest.approx([0.0, 0.1, 0.3])


def test_execute_async_exhausted_and_non_retryable() -> None:
    clock = ManualClock()
    errors = failing(9)
    fn = Flaky(errors, clock=clock)
    with pytest.raises(RetryExhausted) as info:
        asyncio.run(RetryPolicy().with_max_attempts(3).execute_async(fn.run_async, clock=clock))
    assert fn.calls == 3 and info.value.__cause__ is errors[2]

    boom = ValueError("bad")
    fn = Flaky([boom])
    with pytest.raises(ValueError) as raw:
        asyncio.run(RetryPolicy().with_retry_on(OSError).execute_async(fn.run_async, clock=clock))
    assert raw.value is boom and fn.calls == 1


def test_execute_async_honours_retry_after_and_awaits_async_hooks() -> None:
    clock = ManualClock()
    seen: list[float] = []

    async def hook(ctx: RetryContext) -> None:
        await asyncio.sleep(0)
        seen.append(ctx.next_delay)

    fn = Flaky([RateLimited(4.0)], clock=clock)
    policy = RetryPolicy().with_on_retry(hook)
    assert asyncio.run(policy.execute_async(fn.run_async, clock=clock)) == "ok"
    assert seen == [4.0]
    assert clock.now() == 4.0


def test_execute_async_needs_an_awaitable() -> None:
    with pytest.raises(WrongType, match="awaitable"):
        asyncio.run(RetryPolicy().execute_async(lambda: 5, clock=ManualClock()))  # type: ignore[arg-type,return-value]


def test_execute_async_retries_a_callable_that_raises_before_returning_an_awaitable() -> None:
    # fn may be any callable returning an awaitable; one that raises at once
    # made a failed attempt like any other, but the error escaped unretried.
    clock = ManualClock()
    calls = 0

    def flaky() -> Awaitable[str]:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise ConnectionError(f"refused {calls}")

        async def ok() -> str:
            return "ok"

        return ok()

    assert asyncio.run(RetryPolicy().execute_async(flaky, clock=clock)) == "ok"
    assert calls == 3
    assert clock.now() == pytest.approx(0.1 + 0.2)
    boom = ValueError("not retryable")

    def bad() -> Awaitable[str]:
        raise boom

    with pytest.raises(ValueError) as info:
        asyncio.run(RetryPolicy().with_retry_on(OSError).execute_async(bad, clock=clock))
    assert info.value is boom


def test_async_cancellation_is_not_retried() -> None:
    clock = ManualClock()
    calls = 0

    async def cancelled() -> None:
        nonlocal calls
        calls += 1
        raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        asyncio.run(RetryPolicy().execute_async(cancelled, clock=clock))
    assert calls == 1


# --- budget --------------------------------------------------------------------------


def test_budget_allows_five_retries_from_full_then_refills_on_success() -> None:
    budget = RetryBudget()
    assert (budget.max_tokens, budget.token_ratio, budget.tokens) == (10.0, 0.1, 10.0)
    assert [budget.withdraw() for _ in range(6)] == [True] * 5 + [False]
    assert budget.tokens == 5.0
    assert not budget.can_retry()
    budget.record_success()
    assert budget.tokens == 5.1 and budget.can_retry()
    assert budget.withdraw()
    # From here each retry costs what ten successes deposit.
    for _ in range(9):
        budget.record_success()
    assert budget.tokens == 5.0 and not budget.withdraw()  # exact: no float drift
    budget.record_success()
    assert budget.tokens == 5.1 and budget.withdraw()
    for _ in range(100):
        budget.record_success()
    assert budget.tokens == 10.0


def test_shared_budget_stops_a_retry_storm() -> None:
    clock = ManualClock()
    budget = RetryBudget()
    policy = RetryPolicy.exponential().with_max_attempts(4).with_budget(budget)
    total_calls = 0
    reasons = []
    for _ in range(20):
        fn = Flaky(failing(100), clock=clock)
        result = policy.execute_with_result(fn, clock=clock)
        total_calls += fn.calls
        reasons.append(result.reason)
    # Without a budget: 20 * 4 = 80 calls.  With it: 20 first attempts + 5 retries.
    assert total_calls == 25
    assert reasons[-1] is GiveUpReason.BUDGET
    # Successes re-open it.
    for _ in range(10):
        policy.execute(lambda: None, clock=clock)
    assert budget.can_retry()


def test_budget_is_thread_safe() -> None:
    budget = RetryBudget(max_tokens=100, token_ratio=1)
    barrier = threading.Barrier(4)
    granted: list[int] = []
    lock = threading.Lock()

    def worker() -> None:
        barrier.wait(timeout=10)
        count = sum(budget.withdraw() for _ in range(100))
        with lock:
            granted.append(count)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert sum(granted) == 50
    assert budget.tokens == 50.0


def test_copies_of_a_policy_share_its_budget() -> None:
    budget = RetryBudget()
    policy = RetryPolicy().with_budget(budget)
    assert copy.deepcopy(policy).budget is budget
    assert dataclasses.asdict(policy)["budget"] is budget
    assert policy.with_max_attempts(9).budget is budget


def test_budget_is_untouched_when_not_retrying() -> None:
    budget = RetryBudget()
    policy = RetryPolicy().with_budget(budget)
    policy.plan(3, ConnectionError())  # max attempts
    policy.with_retry_on(KeyError).plan(0, ConnectionError())  # not retryable
    policy.with_timeout(0.05).plan(0, ConnectionError())  # timeout
    assert budget.tokens == 10.0
    assert policy.plan(0, ConnectionError()).should_retry
    assert budget.tokens == 9.0


# --- validation ---------------------------------------------------------------------

P = RetryPolicy()


async def _coro_fn() -> None:
    return None


BAD_CALLS: list[tuple[str, Callable[[], object], type[Exception], tuple[str, ...]]] = [
    ("max_attempts 0", lambda: P.with_max_attempts(0), InvalidArgument, ("max_attempts", "0")),
    ("max_attempts -3", lambda: P.with_max_attempts(-3), InvalidArgument, ("max_attempts", "-3")),
    ("max_attempts bool", lambda: P.with_max_attempts(True), WrongType, ("max_attempts", "True")),
    ("max_attempts float", lambda: P.with_max_attempts(2.0), WrongType, ("max_attempts", "2.0")),
    ("max_attempts str", lambda: P.with_max_attempts("3"), WrongType, ("max_attempts", "'3'")),  # type: ignore[arg-type]
    ("initial -1", lambda: P.with_initial_delay(-1), InvalidArgument, ("initial_delay", "-1")),
    (
        "initial nan",
        lambda: P.with_initial_delay(math.nan),
        InvalidArgument,
        ("initial_delay", "nan"),
    ),
    (
        "initial inf",
        lambda: P.with_initial_delay(math.inf),
        InvalidArgument,
        ("initial_delay", "inf"),
    ),
    ("initial bool", lambda: P.with_initial_delay(True), WrongType, ("initial_delay", "True")),
    ("initial str", lambda: P.with_initial_delay("1"), WrongType, ("initial_delay", "'1'")),  # type: ignore[arg-type]
    ("max_delay -0.5", lambda: P.with_max_delay(-0.5), InvalidArgument, ("max_delay", "-0.5")),
    ("max_delay nan", lambda: P.with_max_delay(math.nan), InvalidArgument, ("max_delay", "nan")),
    ("timeout 0", lambda: P.with_timeout(0), InvalidArgument, ("timeout", "0")),
    ("timeout -2", lambda: P.with_timeout(-2), InvalidArgument, ("timeout", "-2")),
    ("timeout inf", lambda: P.with_timeout(math.inf), InvalidArgument, ("timeout", "inf")),
    ("fixed -1", lambda: RetryPolicy.fixed(-1), InvalidArgument, ("delay", "-1")),
    ("fixed nan", lambda: RetryPolicy.fixed(math.nan), InvalidArgument, ("delay", "nan")),
    ("jitter str", lambda: P.with_jitter("full"), WrongType, ("jitter", "'full'")),  # type: ignore[arg-type]
    ("jitter int", lambda: P.with_jitter(1), WrongType, ("jitter", "1")),  # type: ignore[arg-type]
    ("retry_on empty", lambda: P.with_retry_on(()), InvalidArgument, ("retry_on", "()")),
    ("retry_on int", lambda: P.with_retry_on(int), WrongType, ("retry_on", "int")),  # type: ignore[arg-type]
    (
        "retry_on base",
        lambda: P.with_retry_on(KeyboardInterrupt),
        WrongType,
        ("retry_on", "KeyboardInterrupt"),
    ),  # type: ignore[arg-type]
    ("retry_on str", lambda: P.with_retry_on("x"), WrongType, ("retry_on", "'x'")),  # type: ignore[arg-type]
    ("budget", lambda: P.with_budget(10), WrongType, ("budget", "10")),  # type: ignore[arg-type]
    ("on_retry", lambda: P.with_on_retry(5), WrongType, ("on_retry", "5")),  # type: ignore[arg-type]
    ("delay k -1", lambda: P.calculate_delay(-1), InvalidArgument, ("retry", "-1")),
    ("delay k bool", lambda: P.calculate_delay(True), WrongType, ("retry", "True")),
    ("delay k float", lambda: P.calculate_delay(1.0), WrongType, ("retry", "1.0")),
    ("next prev", lambda: P.next_delay(0, -1.0), InvalidArgument, ("prev_delay", "-1.0")),
    ("next rng", lambda: P.next_delay(0, None, "rng"), WrongType, ("rng", "'rng'")),  # type: ignore[arg-type]
    ("plan index", lambda: P.plan(-1, OSError()), InvalidArgument, ("attempt_index", "-1")),
    ("plan error", lambda: P.plan(0, "oops"), WrongType, ("error", "'oops'")),  # type: ignore[arg-type]
    (
        "plan elapsed",
        lambda: P.plan(0, OSError(), None, -1.0),
        InvalidArgument,
        ("elapsed", "-1.0"),
    ),
    (
        "plan elapsed nan",
        lambda: P.plan(0, OSError(), None, math.nan),
        InvalidArgument,
        ("elapsed", "nan"),
    ),
    ("execute fn", lambda: P.execute(5), WrongType, ("fn", "5")),  # type: ignore[arg-type]
    ("execute coro fn", lambda: P.execute(_coro_fn), WrongType, ("fn", "_coro_fn")),
    ("execute clock", lambda: P.execute(lambda: 1, clock="now"), WrongType, ("clock", "'now'")),  # type: ignore[arg-type]
    ("execute rng", lambda: P.execute(lambda: 1, rng=3), WrongType, ("rng", "3")),  # type: ignore[arg-type]
    ("async fn", lambda: asyncio.run(P.execute_async(None)), WrongType, ("fn", "None")),  # type: ignore[arg-type]
    (
        "shortcut n",
        lambda: with_exponential_backoff(lambda: 1, 0),
        InvalidArgument,
        ("max_attempts", "0"),
    ),
    ("ctor attempts", lambda: RetryPolicy(max_attempts=0), InvalidArgument, ("max_attempts", "0")),
    ("ctor strategy", lambda: RetryPolicy(strategy="linear"), WrongType, ("strategy", "'linear'")),  # type: ignore[arg-type]
    ("ctor jitter", lambda: RetryPolicy(jitter=True), WrongType, ("jitter", "True")),  # type: ignore[arg-type]
    ("ctor timeout", lambda: RetryPolicy(timeout=-1), InvalidArgument, ("timeout", "-1")),
    ("budget max 0", lambda: RetryBudget(0), InvalidArgument, ("max_tokens", "0")),
    ("budget max big", lambda: RetryBudget(1001), InvalidArgument, ("max_tokens", "1001")),
    ("budget max nan", lambda: RetryBudget(math.nan), InvalidArgument, ("max_tokens", "nan")),
    ("budget max bool", lambda: RetryBudget(True), WrongType, ("max_tokens", "True")),
    ("budget ratio 0", lambda: RetryBudget(10, 0), InvalidArgument, ("token_ratio", "0")),
    ("budget ratio tiny", lambda: RetryBudget(10, 1e-5), InvalidArgument, ("token_ratio", "1e-05")),
    ("budget ratio big", lambda: RetryBudget(10, 11), InvalidArgument, ("token_ratio", "11")),
]


@pytest.mark.parametrize(
    ("call", "exc", "needles"),
    [pytest.param(c, e, n, id=i) for i, c, e, n in BAD_CALLS],
)
def test_bad_arguments_raise_errors_naming_argument_and_value(
    call: Callable[[], object], exc: type[Exception], needles: tuple[str, ...]
) -> None:
    with pytest.raises(exc) as info:
        call()
    assert isinstance(info.value, AuraError)
    for needle in needles:
        assert needle in str(info.value), f"{needle!r} not in {str(info.value)!r}"


def test_rejected_calls_change_nothing() -> None:
    budget = RetryBudget()
    policy = RetryPolicy.exponential().with_budget(budget).with_max_attempts(5)
    snapshot = dataclasses.astuple(policy)
    for bad in (
        lambda: policy.with_max_attempts(0),
        lambda: policy.with_initial_delay(-1),
        lambda: policy.plan(0, ConnectionError(), None, -1.0),
        lambda: policy.plan(0, ConnectionError(), -1.0),
        lambda: policy.plan(0, ConnectionError(), rng="x"),  # type: ignore[arg-type]
        lambda: policy.execute("not callable", clock=ManualClock()),  # type: ignore[arg-type]
    ):
        with pytest.raises(AuraError):
            bad()
    assert dataclasses.astuple(policy) == snapshot
    assert budget.tokens == 10.0


# --- ergonomics: arguments, @retry, the Rust context names ----------------------------


def test_execute_passes_arguments_through() -> None:
    clock = ManualClock()
    seen: list[tuple[object, ...]] = []

    def add(a: int, b: int, *, scale: int = 1) -> int:
        seen.append((a, b, scale))
        if len(seen) < 3:
            raise ConnectionError("down")
        return (a + b) * scale

    assert RetryPolicy().execute(add, 2, 3, scale=10, clock=clock) == 50
    assert seen == [(2, 3, 10)] * 3
    result = RetryPolicy().execute_with_result(add, 1, b=1, clock=clock)
    assert result.unwrap() == 2 and result.attempts == 1

    async def mul(a: int, b: int) -> int:
        await asyncio.sleep(0)
        return a * b

    assert asyncio.run(RetryPolicy().execute_async(mul, 6, b=7, clock=clock)) == 42
    assert asyncio.run(RetryPolicy().execute_async(mul, 2, 2, clock=clock)) == 4


def test_retry_decorator_on_a_plain_function_keeps_name_doc_and_signature() -> None:
    clock = ManualClock()
    calls: list[tuple[str, int]] = []

    def fetch(key: str, /, attempt_budget: int = 3, *, rng: str = "mine") -> str:
        """Fetch ``key``."""
        calls.append((key, attempt_budget))
        if len(calls) < 3:
            raise ConnectionError("down")
        return f"{key}:{rng}"

    wrapped = retry(RetryPolicy.exponential(), clock=clock)(fetch)
    assert wrapped.__name__ == "fetch" and wrapped.__doc__ == "Fetch ``key``."
    assert inspect.signature(wrapped) == inspect.signature(fetch)
    assert not inspect.iscoroutinefunction(wrapped)
    # every argument reaches the function, even one called like execute's own keywords
    assert wrapped("k", 5, rng="theirs") == "k:theirs"
    assert calls == [("k", 5)] * 3
    assert clock.now() == pytest.approx(0.1 + 0.2)

    @retry(RetryPolicy().with_max_attempts(2), clock=clock)
    def broken() -> None:
        raise ConnectionError("always")

    with pytest.raises(RetryExhausted) as info:
        broken()
    assert info.value.attempts == 2


def test_retry_decorator_on_a_coroutine_function() -> None:
    clock = ManualClock()
    calls = 0

    async def fetch(key: str, *, times: int) -> str:
        """Fetch asynchronously."""
        nonlocal calls
        calls += 1
        if calls < times:
            raise ConnectionError("down")
        return key

    wrapped = retry(clock=clock)(fetch)
    assert inspect.iscoroutinefunction(wrapped)
    assert wrapped.__name__ == "fetch" and wrapped.__doc__ == "Fetch asynchronously."
    assert inspect.signature(wrapped) == inspect.signature(fetch)
    assert asyncio.run(wrapped("k", times=3)) == "k"
    assert calls == 3
    calls = 0
    with pytest.raises(RetryExhausted):
        asyncio.run(wrapped("k", times=10))  # the default policy: 4 attempts
    assert calls == 4


def test_retry_decorator_refuses_bad_arguments() -> None:
    with pytest.raises(WrongType, match=r"policy must be a RetryPolicy.*3"):
        retry(3)  # type: ignore[arg-type]
    with pytest.raises(WrongType, match="clock"):
        retry(clock="now")  # type: ignore[arg-type]
    with pytest.raises(WrongType, match="fn must be callable"):
        retry()(5)  # type: ignore[type-var]


def test_context_is_last_attempt_and_accumulated_delay() -> None:
    clock = ManualClock()
    contexts: list[RetryContext] = []
    policy = RetryPolicy.exponential().with_on_retry(contexts.append)
    assert policy.execute(Flaky(failing(3)), clock=clock) == "ok"
    assert [c.is_last_attempt for c in contexts] == [False, False, True]
    assert [c.accumulated_delay for c in contexts] == pytest.approx([0.0, 0.1, 0.3])
    assert [c.accumulated_delay + c.next_delay for c in contexts] == pytest.approx([0.1, 0.3, 0.7])
    assert RetryContext(1, 1, OSError(), 0.0, 0.0).is_last_attempt  # nothing after a 1-of-1
