"""Fault-injection messages (tags 0xB8-0xBF).

:class:`InjectCrash` asks an infrastructure actor to crash on purpose: its
handler raises :class:`~aura_sync.actors._faults.InjectedCrash`, an
*unexpected* exception, so the supervisor sees a real crash and restarts the
actor.  The chaos tests and the ``aura-sync demo`` use it to show that the
supervision tree recovers and loses nothing.

An actor honours it only when it was created with fault injection enabled
(``fault_injection=True``, off by default); otherwise the asker gets an
``ErrorReply`` of type ``InvalidArgument`` and nothing happens.  Because the
crash happens while handling the message, an ``ask`` of :class:`InjectCrash`
is answered with ``ErrorReply(ActorCrashed)`` by the runtime; a ``tell`` is
answered by nobody.

Layer: messages.
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
