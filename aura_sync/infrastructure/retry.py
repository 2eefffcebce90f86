"""Retry with backoff, jitter, timeout, ``retry_after`` and a shared retry budget.

Role
    The Retry concern of aura-sync (Rust ``aura_sync::infrastructure::retry``).
    A :class:`RetryPolicy` is an immutable value built with ``with_*`` methods
    that each return a new policy::

        policy = (RetryPolicy.exponential()
                  .with_max_attempts(5)
                  .with_initial_delay(0.1)
                  .with_jitter(True))
        value = policy.execute(fetch_digest, clock=clock)

One mechanism, three drivers
    Every retry decision is made by :meth:`RetryPolicy.plan`, a planner that
    never sleeps: given the index of the attempt that just failed, its error,
    the previous delay and the elapsed time, it answers with a
    :class:`RetryDecision` (retry after ``delay`` seconds, or give up with a
    :class:`GiveUpReason`).  :meth:`RetryPolicy.execute` (plain callables),
    :meth:`RetryPolicy.execute_async` (coroutine functions) and the
    ``execute_with_result`` variants are thin loops around that planner that
    sleep through the injected :class:`~aura_sync.effects.Clock`.  Actors never
    sleep: they call :meth:`RetryPolicy.plan` themselves and ask the
    :class:`~aura_sync.effects.Scheduler` to send them a
    :class:`~aura_sync.messages.retry.RetryDue` after ``decision.delay``.

Delays (float seconds)
    :meth:`RetryPolicy.calculate_delay` is the un-jittered delay before retry
    ``k`` (0-based): exponential ``initial * 2**k``, linear
    ``initial * (k + 1)``, fixed ``initial``, always capped at ``max_delay``
    (huge ``k`` saturates at the cap instead of overflowing).
    :meth:`RetryPolicy.next_delay` applies jitter with the formulas of the AWS
    Architecture Blog's "Exponential Backoff And Jitter": full ``U(0, v)``,
    equal ``v/2 + U(0, v/2)``, decorrelated ``min(cap, U(base, 3 * prev))``
    (decorrelated ignores the strategy: it is its own recurrence).

Rules decided here (documented contract)
    * ``max_delay`` smaller than ``initial_delay`` is allowed: the cap wins,
      so builder calls can come in any order.  :meth:`RetryPolicy.fixed`
      raises the cap to the fixed delay if needed so that the delay is kept.
    * An error that does not match ``retry_on`` is not retried: ``execute``
      re-raises the original exception object at once, unwrapped.
      ``BaseException``\\ s that are not ``Exception``\\ s (``KeyboardInterrupt``,
      ``SystemExit``, ``asyncio.CancelledError``) are never caught at all.
    * An error with a finite, non-negative numeric ``retry_after`` attribute
      (e.g. :class:`~aura_sync.errors.RateLimited`) makes the wait
      ``max(backoff, retry_after)``; ``retry_after`` may exceed ``max_delay``
      (the server's instruction wins over our cap).  A ``retry_after`` that is
      not such a number is ignored.
    * ``timeout`` is a budget of total elapsed time measured from the start of
      ``execute``: the loop never sleeps past it and gives up with
      :class:`~aura_sync.errors.RetryExhausted` when the next wait would end
      after it.  A running attempt is never interrupted.
    * Exhaustion (attempts, timeout or budget) raises
      :class:`~aura_sync.errors.RetryExhausted` with ``attempts`` and the last
      error chained as ``__cause__``.
    * Exceptions raised by ``retry_on`` predicates and ``on_retry`` hooks are
      bugs of the caller: they propagate unchanged and end the loop.

Layer: cores.  Imports values and effects only; knows nothing of actors or
messages.
"""

from __future__ import annotations

import dataclasses
import enum
import inspect
import math
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final, Generic, TypeAlias, TypeVar

from aura_sync._checks import check_bool, check_int
from aura_sync.effects import Clock, Rng, SystemRng, check_seconds, system_effects
from aura_sync.errors import InvalidArgument, RetryExhausted, WrongType

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
    "with_exponential_backoff_async",
]

T = TypeVar("T")

DEFAULT_MAX_ATTEMPTS: Final = 4
"""Default total number of calls, the first one included."""
DEFAULT_INITIAL_DELAY: Final = 0.1
"""Default delay before the first retry, in seconds."""
DEFAULT_MAX_DELAY: Final = 30.0
"""Default cap on any backoff delay, in seconds."""

RetryOn: TypeAlias = tuple[type[Exception], ...] | Callable[[BaseException], object]
"""What ``retry_on`` holds: exception types, or a predicate on the error."""


class BackoffStrategy(enum.Enum):
    """How the un-jittered delay grows with the retry index ``k`` (0-based)."""

    EXPONENTIAL = "exponential"
    """``initial * 2**k``."""
    LINEAR = "linear"
    """``initial * (k + 1)``."""
    FIXED = "fixed"
    """``initial`` every time."""


class Jitter(enum.Enum):
    """How randomness is applied to a backoff delay ``v`` (AWS formulas)."""

    NONE = "none"
    """``v`` exactly."""
    FULL = "full"
    """``U(0, v)``."""
    EQUAL = "equal"
    """``v/2 + U(0, v/2)``."""
    DECORRELATED = "decorrelated"
    """``min(cap, U(base, 3 * prev))`` with ``base = initial_delay``."""


class GiveUpReason(enum.Enum):
    """Why the planner decided not to retry."""

    NOT_RETRYABLE = "not_retryable"
    """The error does not match ``retry_on``; it is re-raised as is."""
    MAX_ATTEMPTS = "max_attempts"
    """``max_attempts`` calls were made."""
    TIMEOUT = "timeout"
    """The next wait would end after the policy's total ``timeout``."""
    BUDGET = "budget"
    """The shared :class:`RetryBudget` refused a retry (retry storm)."""

    @property
    def description(self) -> str:
        """A short human explanation, used in error messages."""
        return _REASON_TEXT[self]


_REASON_TEXT: Final = {
    GiveUpReason.NOT_RETRYABLE: "the error is not retryable",
    GiveUpReason.MAX_ATTEMPTS: "no attempts left",
    GiveUpReason.TIMEOUT: "the next wait would pass the timeout",
    GiveUpReason.BUDGET: "the retry budget is spent",
}

_MAX_BUDGET_TOKENS: Final = 1000
_MILLI: Final = 1000


# --- argument checks -----------------------------------------------------------------


def _check_optional_seconds(value: object, name: str) -> float | None:
    return None if value is None else check_seconds(value, name)


# Shared defaults: building a SystemClock (a Condition) or seeding a SystemRng
# per call dominated the success path.  Both are thread-safe; the clock's timer
# thread only starts if someone schedules a timer on it, which retry never does.
_DEFAULT_CLOCK: Final = system_effects()[0]
_DEFAULT_RNG: Final = SystemRng()


def _check_rng(rng: object) -> Rng:
    if rng is None:
        return _DEFAULT_RNG
    if not isinstance(rng, Rng):
        raise WrongType(f"rng must be an aura_sync.effects.Rng, got {type(rng).__name__} {rng!r}")
    return rng


def _check_clock(clock: object) -> Clock:
    if clock is None:
        return _DEFAULT_CLOCK
    if not isinstance(clock, Clock):
        raise WrongType(
            f"clock must be an aura_sync.effects.Clock, got {type(clock).__name__} {clock!r}"
        )
    return clock


def _check_fn(fn: object, *, want_async: bool) -> None:
    if not callable(fn):
        raise WrongType(f"fn must be callable, got {type(fn).__name__} {fn!r}")
    if not want_async and inspect.iscoroutinefunction(fn):
        raise WrongType(f"fn is a coroutine function, use execute_async: got {fn!r}")


def _normalize_retry_on(retry_on: object) -> RetryOn:
    """Turn ``with_retry_on``'s argument into a tuple of types or a predicate."""
    if isinstance(retry_on, type):
        retry_on = (retry_on,)
    if isinstance(retry_on, tuple | list | frozenset | set):
        types = tuple(retry_on)
        if not types:
            raise InvalidArgument(f"retry_on needs at least one exception type, got {retry_on!r}")
        for tp in types:
            if not (isinstance(tp, type) and issubclass(tp, Exception)):
                raise WrongType(
                    f"retry_on types must be Exception subclasses, got {tp!r} in {retry_on!r}"
                )
        return types
    if callable(retry_on):
        return retry_on
    raise WrongType(
        "retry_on must be an exception type, a tuple of them, or a predicate, "
        f"got {type(retry_on).__name__} {retry_on!r}"
    )


def _retry_after_of(error: BaseException) -> float | None:
    """The error's ``retry_after`` in seconds, if it is a usable number."""
    value = getattr(error, "retry_after", None)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    seconds = float(value)
    if not math.isfinite(seconds) or seconds < 0:
        return None
    return seconds


# --- retry budget ------------------------------------------------------------------


class RetryBudget:
    """A token bucket shared by many policies that stops retry storms (gRPC-style).

    The bucket starts full at ``max_tokens``.  Every retry withdraws one token
    (:meth:`withdraw`); every success deposits ``token_ratio`` tokens
    (:meth:`record_success`), never above ``max_tokens``.  Retries are allowed
    only while the count is strictly above ``max_tokens / 2``, so when most
    calls fail the retries stop and only first attempts go out; successes
    re-open the budget.  With the defaults (10, 0.1) a full budget allows
    5 retries; after that each retry costs what 10 successes deposit.

    Unlike gRPC, which charges a token for every failed call, only a retry
    that actually happens is charged here: the budget then counts exactly the
    extra load that retries put on the other side.

    Counts are kept in integer thousandths of a token (gRPC's precision), so
    deposits never drift.  Thread-safe: one budget is meant to be shared by
    every policy that talks to the same service.
    """

    __slots__ = ("_lock", "_max_milli", "_ratio_milli", "_tokens_milli")

    def __init__(self, max_tokens: float = 10, token_ratio: float = 0.1) -> None:
        """Create a full budget.

        :param max_tokens: capacity in tokens, 0 < max_tokens <= 1000.
        :param token_ratio: tokens deposited per success, at least 0.001 and
            at most ``max_tokens``.
        :raises WrongType: a non-number (or a bool).
        :raises InvalidArgument: a value out of range, NaN or infinite.
        """
        max_milli = self._to_milli(max_tokens, "max_tokens")
        if not 0 < max_milli <= _MAX_BUDGET_TOKENS * _MILLI:
            raise InvalidArgument(
                f"max_tokens must be in (0, {_MAX_BUDGET_TOKENS}], got {max_tokens!r}"
            )
        ratio_milli = self._to_milli(token_ratio, "token_ratio")
        if not 0 < ratio_milli <= max_milli:
            raise InvalidArgument(
                f"token_ratio must be in [0.001, max_tokens={max_tokens!r}], got {token_ratio!r}"
            )
        self._max_milli = max_milli
        self._ratio_milli = ratio_milli
        self._tokens_milli = max_milli
        self._lock = threading.Lock()

    @staticmethod
    def _to_milli(value: object, name: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise WrongType(f"{name} must be a number, got {type(value).__name__} {value!r}")
        try:
            number = float(value)  # an int too large for a float raises OverflowError
        except OverflowError:
            number = math.inf
        if not math.isfinite(number):
            raise InvalidArgument(f"{name} must be finite, got {value!r}")
        return round(number * _MILLI)

    @property
    def max_tokens(self) -> float:
        """Capacity in tokens."""
        return self._max_milli / _MILLI

    @property
    def token_ratio(self) -> float:
        """Tokens deposited per success."""
        return self._ratio_milli / _MILLI

    @property
    def tokens(self) -> float:
        """Tokens currently in the bucket."""
        with self._lock:
            return self._tokens_milli / _MILLI

    def _above_threshold(self) -> bool:
        return self._tokens_milli * 2 > self._max_milli

    def can_retry(self) -> bool:
        """True while a retry would be allowed (tokens > max_tokens / 2); changes nothing."""
        with self._lock:
            return self._above_threshold()

    def withdraw(self) -> bool:
        """Take one token for a retry, atomically.

        :returns: True if the retry may go ahead (a token was taken); False,
            with nothing taken, if the budget is at or below half.
        """
        with self._lock:
            if not self._above_threshold():
                return False
            self._tokens_milli = max(0, self._tokens_milli - _MILLI)
            return True

    def record_success(self) -> None:
        """Deposit ``token_ratio`` tokens for a successful call (capped at ``max_tokens``)."""
        with self._lock:
            self._tokens_milli = min(self._max_milli, self._tokens_milli + self._ratio_milli)

    def __copy__(self) -> RetryBudget:
        """A budget is a shared resource: copies of a policy share the same one."""
        return self

    def __deepcopy__(self, memo: dict[int, object]) -> RetryBudget:
        """Deep copies share it too (so ``dataclasses.asdict`` of a policy works)."""
        return self

    def __repr__(self) -> str:
        return (
            f"RetryBudget(max_tokens={self.max_tokens}, token_ratio={self.token_ratio}, "
            f"tokens={self.tokens})"
        )


# --- value types ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RetryDecision:
    """What :meth:`RetryPolicy.plan` decided after a failed attempt.

    Use :meth:`retry_after_delay` / :meth:`give_up` to build one, or match on
    it: ``case RetryDecision(should_retry=True, delay=d): schedule(d)``.

    :ivar should_retry: True to make another attempt.
    :ivar delay: seconds to wait before it (0.0 when giving up); pass it back
        as ``prev_delay`` to the next :meth:`RetryPolicy.plan` call.
    :ivar reason: why not, when ``should_retry`` is false; else None.
    """

    should_retry: bool
    delay: float = 0.0
    reason: GiveUpReason | None = None

    def __post_init__(self) -> None:
        check_bool(self.should_retry, "should_retry")
        object.__setattr__(self, "delay", check_seconds(self.delay, "delay"))
        if self.reason is not None and not isinstance(self.reason, GiveUpReason):
            raise WrongType(f"reason must be a GiveUpReason or None, got {self.reason!r}")
        if self.should_retry and self.reason is not None:
            raise InvalidArgument(f"a retry decision has no give-up reason, got {self.reason!r}")
        if not self.should_retry and self.reason is None:
            raise InvalidArgument("a give-up decision needs a reason, got None")
        if not self.should_retry and self.delay != 0.0:
            raise InvalidArgument(
                f"a give-up decision has delay 0.0 (nothing to wait for), got {self.delay!r}"
            )

    @classmethod
    def retry_after_delay(cls, delay: float) -> RetryDecision:
        """Retry after ``delay`` seconds (>= 0)."""
        return cls(True, delay, None)

    @classmethod
    def give_up(cls, reason: GiveUpReason) -> RetryDecision:
        """Stop retrying because of ``reason``."""
        return cls(False, 0.0, reason)


@dataclass(frozen=True, slots=True)
class RetryContext:
    """What an ``on_retry`` hook is told before each wait.

    :ivar attempt: number of attempts made so far, the failed one included
        (1 after the first call failed; never above ``max_attempts``).
    :ivar max_attempts: the policy's total number of allowed calls.
    :ivar last_error: the error of the attempt that just failed.
    :ivar next_delay: seconds the loop is about to wait before the next attempt.
    :ivar elapsed: seconds since the operation started (before the wait).
    """

    attempt: int
    max_attempts: int
    last_error: BaseException
    next_delay: float
    elapsed: float

    def __post_init__(self) -> None:
        check_int(self.attempt, "attempt", minimum=1)
        check_int(self.max_attempts, "max_attempts", minimum=1)
        if self.attempt > self.max_attempts:
            raise InvalidArgument(
                f"attempt must be <= max_attempts={self.max_attempts}, got {self.attempt}"
            )
        if not isinstance(self.last_error, BaseException):
            raise WrongType(f"last_error must be an exception, got {self.last_error!r}")
        object.__setattr__(self, "next_delay", check_seconds(self.next_delay, "next_delay"))
        object.__setattr__(self, "elapsed", check_seconds(self.elapsed, "elapsed"))

    @property
    def attempts_left(self) -> int:
        """How many calls the policy still allows after this failure."""
        return max(0, self.max_attempts - self.attempt)


@dataclass(frozen=True, slots=True)
class RetryResult(Generic[T]):
    """The outcome of :meth:`RetryPolicy.execute_with_result`, with statistics.

    :ivar value: the successful call's return value (None on failure).
    :ivar error: the last error on failure (the original exception), else None.
    :ivar attempts: calls made (>= 1).
    :ivar total_delay: seconds spent waiting between attempts.
    :ivar elapsed: seconds from the first call to the end, by the clock used.
    :ivar errors: every error seen, in order (the last one is ``error``).
    :ivar reason: why the loop gave up on failure, else None.
    """

    value: T | None
    error: BaseException | None
    attempts: int
    total_delay: float
    elapsed: float
    errors: tuple[BaseException, ...] = ()
    reason: GiveUpReason | None = None

    def __post_init__(self) -> None:
        check_int(self.attempts, "attempts", minimum=1)
        object.__setattr__(self, "total_delay", check_seconds(self.total_delay, "total_delay"))
        object.__setattr__(self, "elapsed", check_seconds(self.elapsed, "elapsed"))
        if type(self.errors) is not tuple or not all(
            isinstance(e, BaseException) for e in self.errors
        ):
            raise WrongType(f"errors must be a tuple of exceptions, got {self.errors!r}")
        if len(self.errors) > self.attempts:
            raise InvalidArgument(
                f"errors holds {len(self.errors)} errors, more than attempts={self.attempts}"
            )
        if self.error is None:
            if self.reason is not None:
                raise InvalidArgument(f"a success has no give-up reason, got {self.reason!r}")
        else:
            if not isinstance(self.error, BaseException):
                raise WrongType(f"error must be an exception or None, got {self.error!r}")
            if not isinstance(self.reason, GiveUpReason):
                raise InvalidArgument(f"a failure needs a GiveUpReason, got {self.reason!r}")
            if self.errors and self.errors[-1] is not self.error:
                raise InvalidArgument(
                    f"error must be the last of errors, got error={self.error!r} "
                    f"but errors[-1]={self.errors[-1]!r}"
                )

    @property
    def is_success(self) -> bool:
        """True if some attempt succeeded."""
        return self.error is None

    @property
    def had_retries(self) -> bool:
        """True if more than one call was made."""
        return self.attempts > 1

    def unwrap(self) -> T:
        """The value, or raise exactly what :meth:`RetryPolicy.execute` would have raised.

        :raises BaseException: the original error if it was not retryable.
        :raises RetryExhausted: otherwise on failure, with the last error as
            ``__cause__``.
        """
        if self.error is None:
            return self.value  # type: ignore[return-value]  # T may include None
        if self.reason is GiveUpReason.NOT_RETRYABLE:
            raise self.error
        assert self.reason is not None
        err = self.error
        raise RetryExhausted(
            f"gave up after {self.attempts} attempt(s), {self.reason.description} "
            f"(waited {self.total_delay:.6g} s, elapsed {self.elapsed:.6g} s); "
            f"last error: {type(err).__name__}: {err}",
            self.attempts,
            err,
        ) from err


# --- the policy --------------------------------------------------------------------


_DEFAULT_RETRY_ON: Final[tuple[type[Exception], ...]] = (Exception,)


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """An immutable retry policy; every ``with_*`` builder returns a new one.

    Build with :meth:`exponential`, :meth:`linear` or :meth:`fixed` and the
    ``with_*`` methods; the keyword constructor takes the same fields and
    validates them the same way.  Policies are values (safe to share between
    threads); the only shared mutable part is an attached :class:`RetryBudget`,
    which is thread-safe.

    :ivar strategy: how the delay grows (:class:`BackoffStrategy`).
    :ivar max_attempts: total calls allowed, the first included (>= 1).
    :ivar initial_delay: seconds before the first retry (>= 0).
    :ivar max_delay: cap in seconds on any backoff delay (>= 0; may be below
        ``initial_delay``, then every delay is ``max_delay``).
    :ivar jitter: :class:`Jitter` mode.
    :ivar timeout: total seconds allowed from the first call, or None.
    :ivar retry_on: exception types to retry, or a predicate on the error.
    :ivar budget: a shared :class:`RetryBudget`, or None.
    :ivar on_retry: hook called with a :class:`RetryContext` before each wait.
    """

    strategy: BackoffStrategy = BackoffStrategy.EXPONENTIAL
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    initial_delay: float = DEFAULT_INITIAL_DELAY
    max_delay: float = DEFAULT_MAX_DELAY
    jitter: Jitter = Jitter.NONE
    timeout: float | None = None
    retry_on: RetryOn = _DEFAULT_RETRY_ON
    budget: RetryBudget | None = None
    on_retry: Callable[[RetryContext], object] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.strategy, BackoffStrategy):
            raise WrongType(f"strategy must be a BackoffStrategy, got {self.strategy!r}")
        check_int(self.max_attempts, "max_attempts", minimum=1)
        object.__setattr__(
            self, "initial_delay", check_seconds(self.initial_delay, "initial_delay")
        )
        object.__setattr__(self, "max_delay", check_seconds(self.max_delay, "max_delay"))
        if not isinstance(self.jitter, Jitter):
            raise WrongType(f"jitter must be a Jitter, got {self.jitter!r}")
        if self.timeout is not None:
            object.__setattr__(
                self, "timeout", check_seconds(self.timeout, "timeout", allow_zero=False)
            )
        object.__setattr__(self, "retry_on", _normalize_retry_on(self.retry_on))
        if self.budget is not None and not isinstance(self.budget, RetryBudget):
            raise WrongType(
                f"budget must be a RetryBudget or None, got {type(self.budget).__name__} "
                f"{self.budget!r}"
            )
        if self.on_retry is not None and not callable(self.on_retry):
            raise WrongType(
                f"on_retry must be callable or None, got {type(self.on_retry).__name__} "
                f"{self.on_retry!r}"
            )

    # -- constructors -------------------------------------------------------------

    @classmethod
    def exponential(cls) -> RetryPolicy:
        """Exponential backoff (``initial * 2**k``); defaults 4 attempts, 0.1 s, 30 s cap."""
        return cls(strategy=BackoffStrategy.EXPONENTIAL)

    @classmethod
    def linear(cls) -> RetryPolicy:
        """Linear backoff (``initial * (k + 1)``) with the defaults."""
        return cls(strategy=BackoffStrategy.LINEAR)

    @classmethod
    def fixed(cls, delay: float) -> RetryPolicy:
        """The same ``delay`` seconds (>= 0) before every retry.

        The cap is ``max(30 s, delay)`` so that the requested delay is kept.

        :raises WrongType: ``delay`` is not a number.
        :raises InvalidArgument: ``delay`` is negative, NaN or infinite.
        """
        seconds = check_seconds(delay, "delay")
        return cls(
            strategy=BackoffStrategy.FIXED,
            initial_delay=seconds,
            max_delay=max(DEFAULT_MAX_DELAY, seconds),
        )

    # -- builders -----------------------------------------------------------------

    def _replace(self, **changes: object) -> RetryPolicy:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    def with_max_attempts(self, n: int) -> RetryPolicy:
        """A copy allowing ``n`` calls in total, the first included (int >= 1).

        :raises WrongType: ``n`` is not an int (bools are refused).
        :raises InvalidArgument: ``n`` < 1.
        """
        return self._replace(max_attempts=check_int(n, "max_attempts", minimum=1))

    def with_initial_delay(self, seconds: float) -> RetryPolicy:
        """A copy whose first retry waits ``seconds`` (>= 0, finite)."""
        return self._replace(initial_delay=check_seconds(seconds, "initial_delay"))

    def with_max_delay(self, seconds: float) -> RetryPolicy:
        """A copy whose backoff delays are capped at ``seconds`` (>= 0, finite)."""
        return self._replace(max_delay=check_seconds(seconds, "max_delay"))

    def with_jitter(self, jitter: bool | Jitter) -> RetryPolicy:
        """A copy with jitter: True means :attr:`Jitter.FULL`, False :attr:`Jitter.NONE`.

        :raises WrongType: anything but a bool or a :class:`Jitter`.
        """
        if isinstance(jitter, bool):
            mode = Jitter.FULL if jitter else Jitter.NONE
        elif isinstance(jitter, Jitter):
            mode = jitter
        else:
            raise WrongType(
                f"jitter must be a bool or a Jitter, got {type(jitter).__name__} {jitter!r}"
            )
        return self._replace(jitter=mode)

    def with_timeout(self, total_seconds: float | None) -> RetryPolicy:
        """A copy that gives up when the next wait would end after ``total_seconds``.

        Measured from the first call; ``None`` removes the timeout.
        :raises InvalidArgument: ``total_seconds`` <= 0, NaN or infinite.
        """
        if total_seconds is None:
            return self._replace(timeout=None)
        return self._replace(timeout=check_seconds(total_seconds, "timeout", allow_zero=False))

    def with_retry_on(
        self,
        retry_on: type[Exception]
        | tuple[type[Exception], ...]
        | list[type[Exception]]
        | Callable[[BaseException], object],
    ) -> RetryPolicy:
        """A copy that retries only matching errors; others are re-raised at once.

        :param retry_on: an ``Exception`` subclass, a non-empty tuple or list of
            them, or a predicate ``error -> truthy``.
        :raises WrongType: a type that is not an ``Exception`` subclass, or
            something that is neither types nor callable.
        :raises InvalidArgument: an empty collection.
        """
        return self._replace(retry_on=_normalize_retry_on(retry_on))

    def with_budget(self, budget: RetryBudget | None) -> RetryPolicy:
        """A copy that draws every retry from the shared ``budget`` (None: no budget)."""
        if budget is not None and not isinstance(budget, RetryBudget):
            raise WrongType(
                f"budget must be a RetryBudget or None, got {type(budget).__name__} {budget!r}"
            )
        return self._replace(budget=budget)

    def with_on_retry(self, hook: Callable[[RetryContext], object] | None) -> RetryPolicy:
        """A copy that calls ``hook(RetryContext)`` before each wait (None: no hook).

        In :meth:`execute_async` the hook may also be a coroutine function.
        """
        if hook is not None and not callable(hook):
            raise WrongType(
                f"on_retry must be callable or None, got {type(hook).__name__} {hook!r}"
            )
        return self._replace(on_retry=hook)

    # -- delays -------------------------------------------------------------------

    def calculate_delay(self, retry: int) -> float:
        """The un-jittered delay in seconds before retry ``retry`` (0-based), capped.

        :raises WrongType: ``retry`` is not an int.
        :raises InvalidArgument: ``retry`` < 0.
        """
        k = check_int(retry, "retry", minimum=0)
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
        """The jittered backoff in seconds before retry ``retry`` (0-based).

        :param retry: retry index, int >= 0.
        :param prev_delay: the previous delay in seconds, used only by
            :attr:`Jitter.DECORRELATED` (None: ``initial_delay``).
        :param rng: randomness (default: a :class:`~aura_sync.effects.SystemRng`).
        :returns: a delay in ``[0, max_delay]``; with decorrelated jitter in
            ``[min(initial_delay, max_delay), max_delay]``.
        :raises WrongType, InvalidArgument: on a bad argument.
        """
        base_delay = self.calculate_delay(retry)
        prev = _check_optional_seconds(prev_delay, "prev_delay")
        source = _check_rng(rng)
        mode = self.jitter
        if mode is Jitter.NONE:
            return base_delay
        if mode is Jitter.FULL:
            return min(base_delay, source.uniform(0.0, base_delay))
        if mode is Jitter.EQUAL:
            half = base_delay / 2
            return min(base_delay, half + source.uniform(0.0, half))
        base = self.initial_delay
        last = base if prev is None else prev
        upper = max(base, 3 * last)
        return min(self.max_delay, max(base, source.uniform(base, upper)))

    # -- the planner --------------------------------------------------------------

    def is_retryable(self, error: BaseException) -> bool:
        """True if ``error`` matches ``retry_on`` (never for non-``Exception`` errors).

        :raises WrongType: ``error`` is not an exception.
        """
        if not isinstance(error, BaseException):
            raise WrongType(f"error must be an exception, got {type(error).__name__} {error!r}")
        if not isinstance(error, Exception):
            return False
        retry_on = self.retry_on
        if isinstance(retry_on, tuple):
            return isinstance(error, retry_on)
        return bool(retry_on(error))

    def plan(
        self,
        attempt_index: int,
        error: BaseException,
        prev_delay: float | None = None,
        elapsed: float = 0.0,
        rng: Rng | None = None,
    ) -> RetryDecision:
        """Decide what follows the failure of attempt ``attempt_index``; never sleeps.

        The single decision procedure behind every ``execute`` variant, and the
        API for actors, which schedule a wake-up after ``decision.delay``
        instead of sleeping.  In order: a non-retryable error gives up
        (NOT_RETRYABLE); the last allowed attempt gives up (MAX_ATTEMPTS); the
        wait is ``max(next_delay(...), error.retry_after)``; a wait that would
        end after ``timeout`` gives up (TIMEOUT); finally the budget, if any,
        must grant a token (else BUDGET).  The only side effect is that token
        withdrawal, made only when the answer is "retry".

        :param attempt_index: 0-based index of the attempt that failed (0 is
            the first call); it is also the retry index of the next delay.
        :param error: the exception that attempt raised.
        :param prev_delay: the previous :attr:`RetryDecision.delay` (seconds),
            None before the first retry.
        :param elapsed: seconds since the first call started (>= 0).
        :param rng: randomness for jitter (default: a SystemRng).
        :returns: a :class:`RetryDecision`.
        :raises WrongType, InvalidArgument: on a bad argument (nothing is withdrawn).
        """
        index = check_int(attempt_index, "attempt_index", minimum=0)
        if not isinstance(error, BaseException):
            raise WrongType(f"error must be an exception, got {type(error).__name__} {error!r}")
        prev = _check_optional_seconds(prev_delay, "prev_delay")
        spent = check_seconds(elapsed, "elapsed")
        source = _check_rng(rng)
        if not self.is_retryable(error):
            return RetryDecision.give_up(GiveUpReason.NOT_RETRYABLE)
        if index + 1 >= self.max_attempts:
            return RetryDecision.give_up(GiveUpReason.MAX_ATTEMPTS)
        delay = self.next_delay(index, prev, source)
        retry_after = _retry_after_of(error)
        if retry_after is not None:
            delay = max(delay, retry_after)
        if self.timeout is not None and spent + delay > self.timeout:
            return RetryDecision.give_up(GiveUpReason.TIMEOUT)
        if self.budget is not None and not self.budget.withdraw():
            return RetryDecision.give_up(GiveUpReason.BUDGET)
        return RetryDecision.retry_after_delay(delay)

    def record_success(self) -> None:
        """Tell the budget (if any) that a call succeeded; actors call it on success."""
        if self.budget is not None:
            self.budget.record_success()

    # -- executors ----------------------------------------------------------------

    def execute(
        self, fn: Callable[[], T], *, clock: Clock | None = None, rng: Rng | None = None
    ) -> T:
        """Call ``fn()`` until it succeeds, sleeping through ``clock`` between attempts.

        :param fn: a plain zero-argument callable (use :meth:`execute_async`
            for coroutine functions).
        :param clock: where to sleep and read time (default: SystemClock).
        :param rng: randomness for jitter (default: SystemRng).
        :returns: ``fn``'s return value.
        :raises RetryExhausted: attempts, timeout or budget ran out; the last
            error is ``__cause__`` and ``last_error``.
        :raises Exception: a non-retryable error of ``fn``, re-raised unchanged.
        :raises WrongType: ``fn`` is not callable or is a coroutine function.
        """
        _check_fn(fn, want_async=False)
        run_clock = _check_clock(clock)
        run_rng = _check_rng(rng)
        start = run_clock.now()
        try:
            value = fn()
        except Exception as exc:  # the slow path: plan, sleep, retry
            return self._run_sync(fn, _Run(self, run_clock, run_rng, start), exc).unwrap()
        if inspect.iscoroutine(value):
            value.close()
            raise WrongType(f"fn returned a coroutine; use execute_async, got {fn!r}")
        self.record_success()  # the fast path: one call, no result object
        return value

    def execute_with_result(
        self, fn: Callable[[], T], *, clock: Clock | None = None, rng: Rng | None = None
    ) -> RetryResult[T]:
        """Like :meth:`execute` but return a :class:`RetryResult` instead of raising.

        Every ``Exception`` of ``fn`` ends up in the result; ``unwrap()`` raises
        what :meth:`execute` would raise.  Exceptions from a ``retry_on``
        predicate or ``on_retry`` hook propagate.
        """
        _check_fn(fn, want_async=False)
        return self._run_sync(fn, _Run(self, _check_clock(clock), _check_rng(rng)), None)

    def _run_sync(
        self, fn: Callable[[], T], run: _Run, pending: Exception | None
    ) -> RetryResult[T]:
        """The sync retry loop; ``pending`` is a failure of a first call already made."""
        while True:
            if pending is None:
                try:
                    value = fn()
                except Exception as first:
                    pending = first
                else:
                    if inspect.iscoroutine(value):
                        value.close()
                        raise WrongType(f"fn returned a coroutine; use execute_async, got {fn!r}")
                    return run.success(value)
            error, pending = pending, None
            decision = run.failed(error)
            if not decision.should_retry:
                return run.failure(error, decision)
            context = run.context(error, decision)
            if self.on_retry is not None:
                outcome = self.on_retry(context)
                if inspect.isawaitable(outcome):
                    if inspect.iscoroutine(outcome):
                        outcome.close()
                    raise WrongType(
                        "on_retry returned an awaitable; async hooks need execute_async, "
                        f"got {outcome!r}"
                    ) from None
            run.clock.sleep(decision.delay)
            run.waited(decision.delay)

    async def execute_async(
        self,
        fn: Callable[[], Awaitable[T]],
        *,
        clock: Clock | None = None,
        rng: Rng | None = None,
    ) -> T:
        """Await ``fn()`` until it succeeds, sleeping with ``clock.sleep_async``.

        Same contract as :meth:`execute`; ``fn`` is a coroutine function (or
        any callable returning an awaitable; an exception raised by the call
        itself, before any await, is a failed attempt like any other).

        :raises WrongType: ``fn`` is not callable or returns a non-awaitable.
        """
        result = await self.execute_with_result_async(fn, clock=clock, rng=rng)
        return result.unwrap()

    async def execute_with_result_async(
        self,
        fn: Callable[[], Awaitable[T]],
        *,
        clock: Clock | None = None,
        rng: Rng | None = None,
    ) -> RetryResult[T]:
        """The async counterpart of :meth:`execute_with_result`."""
        _check_fn(fn, want_async=True)
        run = _Run(self, _check_clock(clock), _check_rng(rng))
        while True:
            try:
                pending = fn()  # a plain callable may raise before any await
                if not inspect.isawaitable(pending):
                    raise _NotAwaitable(pending)
                value = await pending
            except _NotAwaitable as bad:
                raise WrongType(
                    f"fn must return an awaitable in execute_async, got "
                    f"{type(bad.value).__name__} {bad.value!r} from {fn!r}"
                ) from None
            except Exception as exc:
                decision = run.failed(exc)
                if not decision.should_retry:
                    return run.failure(exc, decision)
                context = run.context(exc, decision)
                if self.on_retry is not None:
                    outcome = self.on_retry(context)
                    if inspect.isawaitable(outcome):
                        await outcome
                await run.clock.sleep_async(decision.delay)
                run.waited(decision.delay)
            else:
                return run.success(value)


class _NotAwaitable(Exception):
    """Internal: ``fn`` returned a non-awaitable (a caller bug, never retried)."""

    def __init__(self, value: object) -> None:
        super().__init__()
        self.value = value


class _Run:
    """The bookkeeping of one execute call, shared by the sync and async loops."""

    __slots__ = ("attempts", "clock", "errors", "policy", "prev_delay", "rng", "start", "total")

    def __init__(
        self, policy: RetryPolicy, clock: Clock, rng: Rng, start: float | None = None
    ) -> None:
        self.policy = policy
        self.clock = clock
        self.rng = rng
        self.start = clock.now() if start is None else start
        self.attempts = 0
        self.errors: list[BaseException] = []
        self.total = 0.0
        self.prev_delay: float | None = None

    def elapsed(self) -> float:
        # A clock stepped backwards must not make elapsed negative.
        return max(0.0, self.clock.now() - self.start)

    def failed(self, error: BaseException) -> RetryDecision:
        self.attempts += 1
        self.errors.append(error)
        return self.policy.plan(self.attempts - 1, error, self.prev_delay, self.elapsed(), self.rng)

    def context(self, error: BaseException, decision: RetryDecision) -> RetryContext:
        return RetryContext(
            self.attempts, self.policy.max_attempts, error, decision.delay, self.elapsed()
        )

    def waited(self, delay: float) -> None:
        self.total += delay
        self.prev_delay = delay

    def success(self, value: T) -> RetryResult[T]:
        self.attempts += 1
        self.policy.record_success()
        return RetryResult(
            value, None, self.attempts, self.total, self.elapsed(), tuple(self.errors), None
        )

    def failure(self, error: BaseException, decision: RetryDecision) -> RetryResult[T]:
        return RetryResult(
            None,
            error,
            self.attempts,
            self.total,
            self.elapsed(),
            tuple(self.errors),
            decision.reason,
        )


def with_exponential_backoff(
    fn: Callable[[], T],
    max_attempts: int,
    *,
    clock: Clock | None = None,
    rng: Rng | None = None,
) -> T:
    """Shortcut: ``RetryPolicy.exponential().with_max_attempts(max_attempts).execute(fn)``.

    Default delays (0.1 s doubling, 30 s cap), no jitter.
    :raises RetryExhausted, WrongType, InvalidArgument: as :meth:`RetryPolicy.execute`.
    """
    policy = RetryPolicy.exponential().with_max_attempts(max_attempts)
    return policy.execute(fn, clock=clock, rng=rng)


async def with_exponential_backoff_async(
    fn: Callable[[], Awaitable[T]],
    max_attempts: int,
    *,
    clock: Clock | None = None,
    rng: Rng | None = None,
) -> T:
    """The async shortcut: ``...with_max_attempts(max_attempts).execute_async(fn)``."""
    policy = RetryPolicy.exponential().with_max_attempts(max_attempts)
    return await policy.execute_async(fn, clock=clock, rng=rng)
