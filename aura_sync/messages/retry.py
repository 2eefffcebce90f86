"""Retry messages: a serializable policy spec and the scheduled retry wake-up.

Tags 0x0010-0x001F.

* :class:`RetryPolicySpec` carries the data part of a
  :class:`~aura_sync.infrastructure.retry.RetryPolicy` over the wire or into
  an actor's configuration (strategy, attempts, delays, jitter, timeout).
  The behavioural parts of a policy (``retry_on``, the shared
  ``RetryBudget``, the ``on_retry`` hook) are local objects and are not
  carried: :meth:`RetryPolicySpec.to_policy` gives a policy without them and
  the receiver attaches its own with the ``with_*`` builders.
* :class:`RetryDue` is the message an actor asks the
  :class:`~aura_sync.effects.Scheduler` to send back to itself after
  :attr:`RetryDecision.delay <aura_sync.infrastructure.retry.RetryDecision.delay>`
  seconds: actors never sleep, they are woken up to make the next attempt.

Validation lives in ``__post_init__`` and is the policy's own validation, so a
spec built in code and a spec decoded from bytes are checked identically
(decoding turns the error into a :class:`~aura_sync.errors.DecodeError`).

Layer: messages.  Imports the retry core for its enums and validation.
"""

from __future__ import annotations

from aura_sync._checks import check_u64
from aura_sync.effects import check_seconds
from aura_sync.errors import InvalidArgument, WrongType
from aura_sync.infrastructure.retry import (
    DEFAULT_INITIAL_DELAY,
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_MAX_DELAY,
    BackoffStrategy,
    Jitter,
    RetryPolicy,
)
from aura_sync.messages._base import Message, message

__all__ = ["RetryDue", "RetryPolicySpec"]

_U64_LIMIT = 1 << 64
_INF = float("inf")


@message(0x0010)
class RetryPolicySpec(Message):
    """The serializable data of a :class:`RetryPolicy`.

    :ivar strategy: backoff strategy.
    :ivar max_attempts: total calls, first included (int >= 1).
    :ivar initial_delay: seconds before the first retry (>= 0, finite).
    :ivar max_delay: cap on backoff delays in seconds (>= 0, finite).
    :ivar jitter: jitter mode.
    :ivar timeout: total seconds allowed (> 0, finite), or None.
    :raises WrongType, InvalidArgument: on an invalid field, naming it and its value.
    """

    strategy: BackoffStrategy = BackoffStrategy.EXPONENTIAL
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    initial_delay: float = DEFAULT_INITIAL_DELAY
    max_delay: float = DEFAULT_MAX_DELAY
    jitter: Jitter = Jitter.NONE
    timeout: float | None = None

    def __post_init__(self) -> None:
        # The policy's own checks, field by field, with its messages and in its
        # order (building a whole RetryPolicy to validate cost ~10x more); ints
        # are normalised to float seconds as the policy does.
        strategy = self.strategy
        max_attempts = self.max_attempts
        if type(max_attempts) is int and max_attempts >= _U64_LIMIT:
            raise InvalidArgument(f"max_attempts must be < 2**64 on the wire, got {max_attempts!r}")
        if not isinstance(strategy, BackoffStrategy):
            raise WrongType(f"strategy must be a BackoffStrategy, got {strategy!r}")
        if type(max_attempts) is not int:
            raise WrongType(
                f"max_attempts must be an int, got {type(max_attempts).__name__} {max_attempts!r}"
            )
        if max_attempts < 1:
            raise InvalidArgument(f"max_attempts must be >= 1, got {max_attempts!r}")
        delay = self.initial_delay
        if delay.__class__ is not float or not 0.0 <= delay < _INF:
            object.__setattr__(self, "initial_delay", check_seconds(delay, "initial_delay"))
        delay = self.max_delay
        if delay.__class__ is not float or not 0.0 <= delay < _INF:
            object.__setattr__(self, "max_delay", check_seconds(delay, "max_delay"))
        if not isinstance(self.jitter, Jitter):
            raise WrongType(f"jitter must be a Jitter, got {self.jitter!r}")
        timeout = self.timeout
        if timeout is not None and (timeout.__class__ is not float or not 0.0 < timeout < _INF):
            object.__setattr__(self, "timeout", check_seconds(timeout, "timeout", allow_zero=False))

    def to_policy(self) -> RetryPolicy:
        """The :class:`RetryPolicy` with these settings (default ``retry_on``, no budget/hook)."""
        return RetryPolicy(
            strategy=self.strategy,
            max_attempts=self.max_attempts,
            initial_delay=self.initial_delay,
            max_delay=self.max_delay,
            jitter=self.jitter,
            timeout=self.timeout,
        )

    @classmethod
    def from_policy(cls, policy: RetryPolicy) -> RetryPolicySpec:
        """The spec of ``policy``; its ``retry_on``, budget and hook are not carried.

        :raises WrongType: ``policy`` is not a :class:`RetryPolicy`.
        """
        if not isinstance(policy, RetryPolicy):
            raise WrongType(f"policy must be a RetryPolicy, got {type(policy).__name__} {policy!r}")
        return cls(
            strategy=policy.strategy,
            max_attempts=policy.max_attempts,
            initial_delay=policy.initial_delay,
            max_delay=policy.max_delay,
            jitter=policy.jitter,
            timeout=policy.timeout,
        )


@message(0x0011)
class RetryDue(Message):
    """Time to make attempt ``attempt`` of operation ``operation_id``.

    An actor sends this to itself through the Scheduler after
    ``RetryPolicy.plan`` answered "retry after d seconds".

    :ivar operation_id: the actor's id for the operation (0..2**64-1).
    :ivar attempt: 0-based index of the attempt to make now (0..2**64-1);
        the index to pass to ``plan`` if it fails.
    :raises WrongType, InvalidArgument: on a non-int or out-of-range field.
    """

    operation_id: int
    attempt: int

    def __post_init__(self) -> None:
        check_u64(self.operation_id, "operation_id")
        check_u64(self.attempt, "attempt")
