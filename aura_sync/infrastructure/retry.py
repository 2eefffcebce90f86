"""Retry with backoff, jitter, a total timeout, ``retry_after`` and a shared retry budget.

One planner, :meth:`RetryPolicy.plan`, decides after each failure whether and how
long to wait, without sleeping; ``execute``, ``execute_async`` and ``@retry`` loop
around it sleeping through the injected clock, actors ask the Scheduler to wake them.
Errors not matching ``retry_on`` are re-raised unchanged, base exceptions are never
caught, exhaustion raises :class:`~aura_sync.errors.RetryExhausted` (last error chained).
"""

from __future__ import annotations

import enum
import functools
import inspect
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from types import CoroutineType
from typing import Any, Final, Generic, NoReturn, TypeAlias, TypeVar, cast

from aura_sync._checks import check_int
from aura_sync.effects import Clock, Rng, SystemRng, check_seconds, system_effects
from aura_sync.errors import InvalidArgument, RetryExhausted, WrongType
from aura_sync.infrastructure.retry_budget import RetryBudget

__all__ = [
    "DEFAULT_INITIAL_DELAY",
    "DEFAULT_MAX_ATTEMPTS",
    "DEFAULT_MAX_DELAY",
    "BackoffStrategy",
    "GiveUpReason",
    "Jitter",
    "RetryBudget",
    "RetryContext",
    "RetryDecision",
    "RetryOn",
    "RetryPolicy",
    "RetryResult",
    "with_exponential_backoff",
]  # and the decorator ``retry``, left out so that ``import *`` cannot shadow this module

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])

DEFAULT_MAX_ATTEMPTS: Final = 4  # total calls, the first one included
DEFAULT_INITIAL_DELAY: Final = 0.1  # seconds before the first retry
DEFAULT_MAX_DELAY: Final = 30.0  # seconds, the cap on any backoff delay

# What ``retry_on`` holds: exception types, or a predicate on the error.
RetryOn: TypeAlias = tuple[type[Exception], ...] | Callable[[BaseException], object]


class BackoffStrategy(enum.Enum):
    """Delay growth with the retry index ``k``: ``initial * 2**k``, ``* (k + 1)``, or fixed."""

    EXPONENTIAL = "exponential"
    LINEAR = "linear"
    FIXED = "fixed"


class Jitter(enum.Enum):
    """Randomness on a delay ``v`` (AWS formulas): NONE ``v``; FULL ``U(0, v)``; EQUAL
    ``v/2 + U(0, v/2)``; DECORRELATED ``min(cap, U(initial, 3 * previous delay))``."""

    NONE = "none"
    FULL = "full"
    EQUAL = "equal"
    DECORRELATED = "decorrelated"


class GiveUpReason(enum.Enum):
    """Why the planner gave up (the value explains it); a NOT_RETRYABLE error is re-raised."""

    NOT_RETRYABLE = "the error is not retryable"
    MAX_ATTEMPTS = "no attempts left"
    TIMEOUT = "the next wait would pass the timeout"
    BUDGET = "the retry budget is spent"


# Shared defaults: a SystemClock (its timer thread starts only if a timer is
# scheduled, which retry never does) and a SystemRng; both are thread-safe.
_DEFAULT_CLOCK: Final = system_effects()[0]
_DEFAULT_RNG: Final = SystemRng()


def _rng(rng: object) -> Rng:
    if rng is None:
        return _DEFAULT_RNG
    if not isinstance(rng, Rng):
        raise WrongType(f"rng must be an aura_sync.effects.Rng, got {type(rng).__name__} {rng!r}")
    return rng


def _clock(clock: object) -> Clock:
    if clock is None:
        return _DEFAULT_CLOCK
    if not isinstance(clock, Clock):
        raise WrongType(f"clock must be an aura_sync.effects.Clock, got {clock!r}")
    return clock


def _retry_on(retry_on: object) -> RetryOn:
    """``with_retry_on``'s argument as a tuple of types or a predicate."""
    if isinstance(retry_on, type):
        retry_on = (retry_on,)
    if isinstance(retry_on, tuple | list | frozenset | set):
        types = tuple(retry_on)
        if not types:
            raise InvalidArgument(f"retry_on needs at least one exception type, got {retry_on!r}")
        for tp in types:
            if not (isinstance(tp, type) and issubclass(tp, Exception)):
                raise WrongType(f"retry_on types must be Exception subclasses, got {tp!r}")
        return types
    if callable(retry_on):
        return retry_on
    raise WrongType(f"retry_on must be exception types or a predicate, got {retry_on!r}")


def _retry_after_of(error: BaseException) -> float | None:
    """The error's ``retry_after`` in seconds, if it is a finite number >= 0."""
    value = getattr(error, "retry_after", None)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    seconds = float(value)
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


@dataclass(frozen=True, slots=True)
class RetryDecision:
    """What :meth:`RetryPolicy.plan` decided: retry after ``delay`` seconds, or give up
    for ``reason`` (``delay`` 0.0).  Pass ``delay`` back as the next ``prev_delay``."""

    should_retry: bool
    delay: float = 0.0
    reason: GiveUpReason | None = None


@dataclass(frozen=True, slots=True)
class RetryContext:
    """What an ``on_retry`` hook is told before each wait: ``attempt``, calls made (the
    failed one included); ``next_delay``, seconds about to be waited; ``elapsed``, seconds
    since the first call; ``accumulated_delay``, the sum of the earlier waits."""

    attempt: int
    max_attempts: int
    last_error: BaseException
    next_delay: float
    elapsed: float
    accumulated_delay: float = 0.0

    @property
    def attempts_left(self) -> int:
        """How many calls the policy still allows after this failure."""
        return max(0, self.max_attempts - self.attempt)

    @property
    def is_last_attempt(self) -> bool:
        """Whether the call made after this wait is the last one the policy allows."""
        return self.attempt + 1 >= self.max_attempts


@dataclass(frozen=True, slots=True)
class RetryResult(Generic[T]):
    """The outcome of ``execute_with_result``: ``value`` or the last ``error`` and the
    ``reason`` to give up; ``attempts`` (calls), ``total_delay`` (seconds waited),
    ``elapsed`` (seconds from the first call) and every error, in order."""

    value: T | None
    error: BaseException | None
    attempts: int
    total_delay: float
    elapsed: float
    errors: tuple[BaseException, ...] = ()
    reason: GiveUpReason | None = None

    @property
    def is_success(self) -> bool:
        """Whether some attempt succeeded."""
        return self.error is None

    @property
    def had_retries(self) -> bool:
        """Whether more than one call was made."""
        return self.attempts > 1

    def unwrap(self) -> T:
        """The value, or raise what ``execute`` would have: the error or :class:`RetryExhausted`."""
        err = self.error
        if err is None:
            return self.value  # type: ignore[return-value]  # T may include None
        if self.reason is GiveUpReason.NOT_RETRYABLE:
            raise err
        reason = self.reason.value if self.reason is not None else "gave up"
        raise RetryExhausted(
            f"gave up after {self.attempts} attempt(s), {reason} "
            f"(waited {self.total_delay:.6g} s, elapsed {self.elapsed:.6g} s); "
            f"last error: {type(err).__name__}: {err}",
            self.attempts,
            err,
        ) from err


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """An immutable retry policy; each ``with_*`` builder returns a checked copy.
    ``max_attempts`` counts calls, the first included; delays are seconds (a lower
    ``max_delay`` wins); ``timeout`` counts from the first call; ``on_retry`` gets a
    :class:`RetryContext` before each wait."""

    strategy: BackoffStrategy = BackoffStrategy.EXPONENTIAL
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    initial_delay: float = DEFAULT_INITIAL_DELAY
    max_delay: float = DEFAULT_MAX_DELAY
    jitter: Jitter = Jitter.NONE
    timeout: float | None = None
    retry_on: RetryOn = (Exception,)
    budget: RetryBudget | None = None
    on_retry: Callable[[RetryContext], object] | None = None

    def __post_init__(self) -> None:
        setf = object.__setattr__
        if not isinstance(self.strategy, BackoffStrategy):
            raise WrongType(f"strategy must be a BackoffStrategy, got {self.strategy!r}")
        check_int(self.max_attempts, "max_attempts", minimum=1)
        setf(self, "initial_delay", check_seconds(self.initial_delay, "initial_delay"))
        setf(self, "max_delay", check_seconds(self.max_delay, "max_delay"))
        if not isinstance(self.jitter, Jitter):
            raise WrongType(f"jitter must be a Jitter, got {self.jitter!r}")
        if self.timeout is not None:
            setf(self, "timeout", check_seconds(self.timeout, "timeout", allow_zero=False))
        setf(self, "retry_on", _retry_on(self.retry_on))
        budget, hook = self.budget, self.on_retry
        if budget is not None and not isinstance(budget, RetryBudget):
            raise WrongType(f"budget must be a RetryBudget or None, got {budget!r}")
        if hook is not None and not callable(hook):
            raise WrongType(f"on_retry must be callable or None, got {hook!r}")

    @classmethod
    def exponential(cls) -> RetryPolicy:
        """Exponential backoff (``initial * 2**k``): 4 attempts, 0.1 s, 30 s cap."""
        return cls(strategy=BackoffStrategy.EXPONENTIAL)

    @classmethod
    def linear(cls) -> RetryPolicy:
        """Linear backoff (``initial * (k + 1)``) with the defaults."""
        return cls(strategy=BackoffStrategy.LINEAR)

    @classmethod
    def fixed(cls, delay: float) -> RetryPolicy:
        """``delay`` seconds (>= 0) before every retry; the cap is ``max(30 s, delay)``."""
        seconds = check_seconds(delay, "delay")
        return cls(
            strategy=BackoffStrategy.FIXED,
            initial_delay=seconds,
            max_delay=max(DEFAULT_MAX_DELAY, seconds),
        )

    def with_max_attempts(self, n: int) -> RetryPolicy:
        """A copy allowing ``n`` calls in total, the first included (int >= 1)."""
        return replace(self, max_attempts=n)

    def with_initial_delay(self, seconds: float) -> RetryPolicy:
        """A copy whose first retry waits ``seconds`` (>= 0, finite)."""
        return replace(self, initial_delay=seconds)

    def with_max_delay(self, seconds: float) -> RetryPolicy:
        """A copy whose backoff delays are capped at ``seconds`` (>= 0, finite)."""
        return replace(self, max_delay=seconds)

    def with_jitter(self, jitter: bool | Jitter) -> RetryPolicy:
        """A copy with jitter: True is :attr:`Jitter.FULL`, False :attr:`Jitter.NONE`."""
        if isinstance(jitter, bool):
            jitter = Jitter.FULL if jitter else Jitter.NONE
        return replace(self, jitter=jitter)

    def with_timeout(self, total_seconds: float | None) -> RetryPolicy:
        """A copy giving up when the next wait would end after ``total_seconds`` (> 0, or None)."""
        return replace(self, timeout=total_seconds)

    def with_retry_on(self, retry_on: RetryOn | type[Exception] | list[Any]) -> RetryPolicy:
        """A copy retrying only matching errors (types, or a predicate); others re-raise."""
        return replace(self, retry_on=_retry_on(retry_on))

    def with_budget(self, budget: RetryBudget | None) -> RetryPolicy:
        """A copy drawing every retry from the shared ``budget`` (None: no budget)."""
        return replace(self, budget=budget)

    def with_on_retry(self, hook: Callable[[RetryContext], object] | None) -> RetryPolicy:
        """A copy calling ``hook(RetryContext)`` before each wait (async hooks: async only)."""
        return replace(self, on_retry=hook)

    def calculate_delay(self, retry: int) -> float:
        """The un-jittered delay in seconds before retry ``retry`` (0-based), capped."""
        return self._base_delay(check_int(retry, "retry", minimum=0))

    def _base_delay(self, k: int) -> float:
        initial = self.initial_delay
        if initial == 0.0:
            return 0.0
        try:
            if self.strategy is BackoffStrategy.EXPONENTIAL:
                delay = math.ldexp(initial, k)  # initial * 2**k, exact
            elif self.strategy is BackoffStrategy.LINEAR:
                delay = initial * (k + 1)
            else:
                delay = initial
        except OverflowError:
            delay = math.inf
        return min(delay, self.max_delay)

    def next_delay(
        self, retry: int, prev_delay: float | None = None, rng: Rng | None = None
    ) -> float:
        """The jittered delay before retry ``retry``; ``prev_delay`` serves decorrelated jitter."""
        k = check_int(retry, "retry", minimum=0)
        prev = None if prev_delay is None else check_seconds(prev_delay, "prev_delay")
        return self._next_delay(k, prev, _rng(rng))

    def _next_delay(self, k: int, prev: float | None, rng: Rng) -> float:
        mode = self.jitter
        if mode is Jitter.DECORRELATED:
            base = self.initial_delay
            upper = max(base, 3 * (base if prev is None else prev))
            return min(self.max_delay, max(base, rng.uniform(base, upper)))
        delay = self._base_delay(k)
        if mode is Jitter.FULL:
            return min(delay, rng.uniform(0.0, delay))
        if mode is Jitter.EQUAL:
            return min(delay, delay / 2 + rng.uniform(0.0, delay / 2))
        return delay

    def plan(
        self,
        attempt_index: int,
        error: BaseException,
        prev_delay: float | None = None,
        elapsed: float = 0.0,
        rng: Rng | None = None,
    ) -> RetryDecision:
        """What follows the failure of attempt ``attempt_index`` (0-based): give up if the
        error is not retryable or no attempt is left, else wait ``max(next_delay,
        error.retry_after)`` unless that passes ``timeout``; a budget token is taken last."""
        index = check_int(attempt_index, "attempt_index", minimum=0)
        if not isinstance(error, BaseException):
            raise WrongType(f"error must be an exception, got {type(error).__name__} {error!r}")
        prev = None if prev_delay is None else check_seconds(prev_delay, "prev_delay")
        return self._plan(index, error, prev, check_seconds(elapsed, "elapsed"), _rng(rng))

    def _plan(
        self, index: int, error: BaseException, prev: float | None, elapsed: float, rng: Rng
    ) -> RetryDecision:
        retry_on = self.retry_on  # never a non-Exception error
        if not isinstance(error, Exception) or not (
            isinstance(error, retry_on) if isinstance(retry_on, tuple) else retry_on(error)
        ):
            return RetryDecision(False, 0.0, GiveUpReason.NOT_RETRYABLE)
        if index + 1 >= self.max_attempts:
            return RetryDecision(False, 0.0, GiveUpReason.MAX_ATTEMPTS)
        delay = self._next_delay(index, prev, rng)
        retry_after = _retry_after_of(error)
        if retry_after is not None and retry_after > delay:
            delay = retry_after  # the server's instruction may exceed max_delay
        if self.timeout is not None and elapsed + delay > self.timeout:
            return RetryDecision(False, 0.0, GiveUpReason.TIMEOUT)
        if self.budget is not None and not self.budget.withdraw():
            return RetryDecision(False, 0.0, GiveUpReason.BUDGET)
        return RetryDecision(True, delay, None)

    def record_success(self) -> None:
        """Tell the budget (if any) that a call succeeded; actors call it on success."""
        if self.budget is not None:
            self.budget.record_success()

    def execute(
        self,
        fn: Callable[..., T],
        /,
        *args: Any,
        clock: Clock | None = None,
        rng: Rng | None = None,
        **kwargs: Any,
    ) -> T:
        """``fn(*args, **kwargs)`` until it succeeds, sleeping through ``clock`` in between;
        raises RetryExhausted or a non-retryable error (WrongType for a coroutine function)."""
        return self._execute(fn, args, kwargs, clock, rng)

    def _execute(
        self, fn: Callable[..., T], args: Any, kwargs: Any, clock: Clock | None, rng: Rng | None
    ) -> T:
        run_clock = _DEFAULT_CLOCK if clock is None else _clock(clock)
        if rng is not None:
            _rng(rng)
        start = run_clock.now()
        try:
            value = fn(*args, **kwargs)
        except Exception as exc:  # the slow path (a non-callable fn raises here too)
            run = _Run(self, run_clock, _rng(rng), start)
            return self._loop(_bind(fn, args, kwargs), run, exc).unwrap()
        if value.__class__ is CoroutineType:
            _refuse_awaitable(value, fn)
        if self.budget is not None:
            self.budget.record_success()
        return value

    def execute_with_result(
        self,
        fn: Callable[..., T],
        /,
        *args: Any,
        clock: Clock | None = None,
        rng: Rng | None = None,
        **kwargs: Any,
    ) -> RetryResult[T]:
        """Like :meth:`execute`, but every ``Exception`` of ``fn`` ends up in the result."""
        call = _bind(fn, args, kwargs)
        return self._loop(call, _Run(self, _clock(clock), _rng(rng), None), None)

    def _loop(self, call: Callable[[], T], run: _Run, error: Exception | None) -> RetryResult[T]:
        """The sync loop; ``error`` is the failure of a first call already made, if any."""
        while True:
            if error is not None:
                step = run.failed(error)
                if isinstance(step, RetryResult):
                    return step
                outcome = None if self.on_retry is None else self.on_retry(step)
                if inspect.isawaitable(outcome):
                    _refuse_awaitable(outcome, self.on_retry, "on_retry")
                run.clock.sleep(step.next_delay)
            try:
                value = call()
            except Exception as exc:
                error = exc
            else:
                if value.__class__ is CoroutineType:
                    _refuse_awaitable(value, call)
                return run.success(value)

    async def execute_async(
        self,
        fn: Callable[..., Awaitable[T]],
        /,
        *args: Any,
        clock: Clock | None = None,
        rng: Rng | None = None,
        **kwargs: Any,
    ) -> T:
        """:meth:`execute` for coroutine functions (sleeps with ``clock.sleep_async``)."""
        return (await self._loop_async(_bind(fn, args, kwargs), clock, rng)).unwrap()

    async def _loop_async(
        self, call: Callable[[], Awaitable[T]], clock: Clock | None, rng: Rng | None
    ) -> RetryResult[T]:
        run = _Run(self, _clock(clock), _rng(rng), None)
        while True:
            try:
                pending = call()  # a plain callable may raise before any await
            except Exception as exc:
                step = run.failed(exc)
            else:
                if not inspect.isawaitable(pending):
                    raise WrongType(f"fn must return an awaitable in execute_async: {pending!r}")
                try:
                    return run.success(await pending)
                except Exception as exc:
                    step = run.failed(exc)
            if isinstance(step, RetryResult):
                return step
            if self.on_retry is not None:
                outcome = self.on_retry(step)
                if inspect.isawaitable(outcome):
                    await outcome
            await run.clock.sleep_async(step.next_delay)


def _bind(fn: Callable[..., T], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Callable[[], T]:
    if not callable(fn):
        raise WrongType(f"fn must be callable, got {type(fn).__name__} {fn!r}")
    return functools.partial(fn, *args, **kwargs) if args or kwargs else fn


def _refuse_awaitable(value: Any, call: object, name: str = "fn") -> NoReturn:
    if inspect.iscoroutine(value):
        value.close()  # never awaited: close it so that no warning is printed
    raise WrongType(f"{name} returned a coroutine or awaitable; use execute_async: {call!r}")


class _Run:
    """The bookkeeping of one execute call, shared by the sync and async loops."""

    __slots__ = ("attempts", "clock", "errors", "policy", "prev_delay", "rng", "start", "total")

    def __init__(self, policy: RetryPolicy, clock: Clock, rng: Rng, start: float | None) -> None:
        self.policy, self.clock, self.rng = policy, clock, rng
        self.start = clock.now() if start is None else start
        self.attempts = 0
        self.errors: list[BaseException] = []
        self.total = 0.0
        self.prev_delay: float | None = None

    def elapsed(self) -> float:
        return max(0.0, self.clock.now() - self.start)  # a clock stepping back stays >= 0

    def failed(self, error: BaseException) -> RetryResult[Any] | RetryContext:
        """Plan after ``error``: the final result, or the context of the wait to make."""
        policy = self.policy
        self.attempts += 1
        self.errors.append(error)
        decision = policy._plan(self.attempts - 1, error, self.prev_delay, self.elapsed(), self.rng)
        if not decision.should_retry:
            return self.result(None, error, decision.reason)
        delay = self.prev_delay = decision.delay
        context = RetryContext(
            self.attempts, policy.max_attempts, error, delay, self.elapsed(), self.total
        )
        self.total += delay
        return context

    def success(self, value: T) -> RetryResult[T]:
        self.attempts += 1
        self.policy.record_success()
        return self.result(value, None, None)

    def result(
        self, value: T | None, error: BaseException | None, reason: GiveUpReason | None
    ) -> RetryResult[T]:
        errors = tuple(self.errors)
        return RetryResult(value, error, self.attempts, self.total, self.elapsed(), errors, reason)


def retry(
    policy: RetryPolicy | None = None, *, clock: Clock | None = None, rng: Rng | None = None
) -> Callable[[F], F]:
    """Run each call of the decorated plain or coroutine function under ``policy`` (None:
    the default); the wrapper keeps its name, docstring and signature."""
    chosen = RetryPolicy() if policy is None else policy
    if not isinstance(chosen, RetryPolicy):
        raise WrongType(f"policy must be a RetryPolicy, got {type(policy).__name__} {policy!r}")
    _clock(clock)
    _rng(rng)

    def decorate(fn: F) -> F:
        _bind(fn, (), {})
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def run_async(*args: Any, **kwargs: Any) -> Any:
                result = await chosen._loop_async(_bind(fn, args, kwargs), clock, rng)
                return result.unwrap()

            return cast(F, run_async)

        @functools.wraps(fn)
        def run(*args: Any, **kwargs: Any) -> Any:
            return chosen._execute(fn, args, kwargs, clock, rng)

        return cast(F, run)

    return decorate


def with_exponential_backoff(
    fn: Callable[[], T], max_attempts: int, *, clock: Clock | None = None, rng: Rng | None = None
) -> T:
    """``RetryPolicy.exponential().with_max_attempts(max_attempts).execute(fn)``."""
    policy = RetryPolicy.exponential().with_max_attempts(max_attempts)
    return policy.execute(fn, clock=clock, rng=rng)
