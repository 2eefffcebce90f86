"""Property tests of the Retry concern (hypothesis)."""

from __future__ import annotations

import asyncio
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aura_sync.effects import ManualClock, SeededRng
from aura_sync.errors import RateLimited, RetryExhausted
from aura_sync.infrastructure.retry import (
    BackoffStrategy,
    GiveUpReason,
    Jitter,
    RetryBudget,
    RetryPolicy,
)

FAST = settings(max_examples=60, deadline=None)

seconds = st.floats(min_value=0.0, max_value=1e4, allow_nan=False, allow_infinity=False)
small_seconds = st.floats(min_value=0.0, max_value=10.0, allow_nan=False, allow_infinity=False)
strategies = st.sampled_from(list(BackoffStrategy))
jitters = st.sampled_from(list(Jitter))
retry_index = st.one_of(st.integers(0, 200), st.integers(0, 10**40))


@st.composite
def policies(draw: st.DrawFn) -> RetryPolicy:
    return RetryPolicy(
        strategy=draw(strategies),
        max_attempts=draw(st.integers(1, 8)),
        initial_delay=draw(small_seconds),
        max_delay=draw(small_seconds),
        jitter=draw(jitters),
    )


def expected_delay(policy: RetryPolicy, k: int) -> Fraction:
    """The un-jittered formula, computed exactly and capped."""
    cap = Fraction(policy.max_delay)
    initial = Fraction(policy.initial_delay)
    if initial == 0:
        return Fraction(0)
    if policy.strategy is BackoffStrategy.EXPONENTIAL:
        if k > 2000:  # 2**k * initial is astronomically over any float cap
            return cap
        raw = initial * 2**k
    elif policy.strategy is BackoffStrategy.LINEAR:
        raw = initial * (k + 1)
    else:
        raw = initial
    return min(raw, cap)


@FAST
@given(policies(), retry_index)
def test_un_jittered_delay_follows_the_formula_and_the_cap(policy: RetryPolicy, k: int) -> None:
    delay = policy.calculate_delay(k)
    assert 0.0 <= delay <= policy.max_delay
    assert delay == pytest.approx(float(expected_delay(policy, k)), rel=1e-12, abs=0.0)


@FAST
@given(policies(), retry_index, st.none() | small_seconds, st.integers(0, 2**32))
def test_jittered_delay_stays_within_its_bounds(
    policy: RetryPolicy, k: int, prev: float | None, seed: int
) -> None:
    delay = policy.next_delay(k, prev, SeededRng(seed))
    v = policy.calculate_delay(k)
    cap = policy.max_delay
    assert 0.0 <= delay <= cap
    if policy.jitter is Jitter.NONE:
        assert delay == v
    elif policy.jitter is Jitter.FULL:
        assert delay <= v
    elif policy.jitter is Jitter.EQUAL:
        assert v / 2 <= delay <= v
    else:
        base = policy.initial_delay
        last = base if prev is None else prev
        assert min(base, cap) <= delay <= min(cap, max(base, 3 * last))


@FAST
@given(small_seconds, small_seconds, st.lists(st.integers(0, 2**32), min_size=1, max_size=20))
def test_decorrelated_chain_stays_in_base_cap(base: float, cap: float, seeds: list[int]) -> None:
    policy = (
        RetryPolicy.exponential()
        .with_initial_delay(base)
        .with_max_delay(cap)
        .with_jitter(Jitter.DECORRELATED)
    )
    prev: float | None = None
    for k, seed in enumerate(seeds):
        prev = policy.next_delay(k, prev, SeededRng(seed))
        assert min(base, cap) <= prev <= cap


class _Counter:
    def __init__(self, failures: int, exc: type[Exception] = ConnectionError) -> None:
        self.failures = failures
        self.exc = exc
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.exc(f"failure {self.calls}")
        return "ok"


@FAST
@given(policies(), st.integers(0, 12), st.integers(0, 2**32))
def test_at_most_max_attempts_calls_and_waits_follow_the_plan(
    policy: RetryPolicy, failures: int, seed: int
) -> None:
    clock = ManualClock()
    waits: list[float] = []
    fn = _Counter(failures)
    result = policy.with_on_retry(lambda ctx: waits.append(ctx.next_delay)).execute_with_result(
        fn, clock=clock, rng=SeededRng(seed)
    )
    assert fn.calls == min(failures + 1, policy.max_attempts)
    assert result.attempts == fn.calls
    assert result.is_success == (failures < policy.max_attempts)
    assert len(waits) == fn.calls - 1
    assert all(0.0 <= w <= policy.max_delay for w in waits)
    if policy.jitter is Jitter.NONE:
        assert waits == [policy.calculate_delay(k) for k in range(len(waits))]
    assert clock.now() == pytest.approx(sum(waits))
    assert result.total_delay == pytest.approx(sum(waits))


@FAST
@given(
    st.lists(st.booleans(), min_size=1, max_size=10),
    st.integers(1, 12),
    st.booleans(),
)
def test_non_retryable_errors_stop_at_once(
    retryable: list[bool], max_attempts: int, run_async: bool
) -> None:
    """Errors: True = retryable OSError, False = non-retryable KeyError; then success."""
    clock = ManualClock()
    errors: list[Exception] = [
        OSError(f"transient {i}") if ok else KeyError(f"fatal {i}")
        for i, ok in enumerate(retryable)
    ]
    calls = 0

    def fn() -> str:
        nonlocal calls
        calls += 1
        if calls <= len(errors):
            raise errors[calls - 1]
        return "ok"

    async def afn() -> str:
        return fn()

    policy = RetryPolicy.exponential().with_max_attempts(max_attempts).with_retry_on(OSError)
    first_fatal = next((i for i, ok in enumerate(retryable) if not ok), None)
    try:
        value = (
            asyncio.run(policy.execute_async(afn, clock=clock))
            if run_async
            else (policy.execute(fn, clock=clock))
        )
    except KeyError as exc:
        assert first_fatal is not None and first_fatal < max_attempts
        assert exc is errors[first_fatal]
        assert calls == first_fatal + 1
    except RetryExhausted as exc:
        assert calls == max_attempts
        assert first_fatal is None or first_fatal >= max_attempts
        assert exc.__cause__ is errors[max_attempts - 1]
    else:
        assert value == "ok"
        assert first_fatal is None and len(errors) < max_attempts
        assert calls == len(errors) + 1


@FAST
@given(policies(), st.floats(0.01, 20.0), st.integers(0, 12))
def test_timeout_is_never_slept_past(policy: RetryPolicy, timeout: float, failures: int) -> None:
    clock = ManualClock()
    fn = _Counter(failures)
    result = policy.with_timeout(timeout).execute_with_result(fn, clock=clock, rng=SeededRng(1))
    assert clock.now() <= timeout
    if not result.is_success:
        assert result.reason in (GiveUpReason.MAX_ATTEMPTS, GiveUpReason.TIMEOUT)


@FAST
@given(st.integers(0, 6), small_seconds, st.floats(0.0, 100.0))
def test_retry_after_is_a_lower_bound_on_the_wait(
    k: int, initial: float, retry_after: float
) -> None:
    policy = RetryPolicy.exponential().with_initial_delay(initial).with_max_attempts(10)
    decision = policy.plan(k, RateLimited(retry_after))
    assert decision.should_retry
    assert decision.delay == max(policy.calculate_delay(k), retry_after)


@FAST
@given(st.lists(st.booleans(), max_size=200))
def test_budget_matches_an_exact_model(ops: list[bool]) -> None:
    """True = try a retry, False = record a success; the model is exact fractions."""
    budget = RetryBudget()
    tokens = Fraction(10)
    for retry in ops:
        if retry:
            allowed = tokens > 5
            assert budget.withdraw() == allowed
            if allowed:
                tokens -= 1
        else:
            budget.record_success()
            tokens = min(Fraction(10), tokens + Fraction(1, 10))
        assert budget.tokens == float(tokens)
        assert 4 <= budget.tokens <= 10
        assert budget.can_retry() == (tokens > 5)


@FAST
@given(policies(), st.integers(0, 10), st.integers(0, 2**32))
def test_the_hook_context_adds_up_to_the_result(
    policy: RetryPolicy, failures: int, seed: int
) -> None:
    """accumulated_delay is the sum of the earlier waits, is_last_attempt marks the last call,
    and the waits the hook is told of are exactly the result's total_delay."""
    contexts: list[Any] = []
    errors = [ConnectionError(f"down {i}") for i in range(failures)]

    def call() -> str:
        if errors:
            raise errors.pop(0)
        return "ok"

    result = policy.with_on_retry(contexts.append).execute_with_result(
        call, clock=ManualClock(), rng=SeededRng(seed)
    )
    waited = 0.0
    for i, ctx in enumerate(contexts):
        assert ctx.attempt == i + 1
        assert ctx.accumulated_delay == pytest.approx(waited)
        assert ctx.is_last_attempt == (ctx.attempts_left == 1)
        waited += ctx.next_delay
    assert result.total_delay == pytest.approx(waited)
    assert result.attempts == len(contexts) + 1  # one context per wait, one call after each
    if result.is_success:
        assert result.attempts == failures + 1
    else:  # gave up: the last retry the hook saw was announced as the last attempt
        assert result.attempts == policy.max_attempts
        assert not contexts or contexts[-1].is_last_attempt
