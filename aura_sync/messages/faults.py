"""Fault-injection messages (tags 0xB8-0xBF).

:class:`InjectCrash` makes an actor created with ``fault_injection=True``
crash on purpose (an ask is answered ``ErrorReply(ActorCrashed)``); otherwise
the asker gets ``ErrorReply(InvalidArgument)`` and nothing happens.
"""

from __future__ import annotations

from aura_sync.errors import InvalidArgument, WrongType
from aura_sync.messages._base import Message, message

__all__ = ["MAX_REASON_LENGTH", "InjectCrash"]

MAX_REASON_LENGTH = 1000
"""Longest accepted crash reason, in characters."""


@message(0x00B8)
class InjectCrash(Message):
    """Crash the receiving actor on purpose (fault injection).

    Reply: none on success (the actor crashes; an asker receives
    ``ErrorReply(ActorCrashed)``); ``ErrorReply(InvalidArgument)`` when the
    actor was not created with fault injection enabled.

    :ivar reason: why, for logs and supervision events (1..1000 characters).
    """

    reason: str = "injected crash"

    def __post_init__(self) -> None:
        if type(self.reason) is not str:
            raise WrongType(
                f"reason must be a str, got {type(self.reason).__name__} {self.reason!r}"
            )
        if not 0 < len(self.reason) <= MAX_REASON_LENGTH:
            raise InvalidArgument(
                f"reason must be 1..{MAX_REASON_LENGTH} characters, got {len(self.reason)}: "
                f"{self.reason[:80]!r}"
            )
