"""Fault injection (tag 0xB8): :class:`InjectCrash`."""

from __future__ import annotations

from aura_sync.messages._base import Message, message

__all__ = ["InjectCrash"]


@message(0x00B8)
class InjectCrash(Message):
    """Crash the receiving actor on purpose, if it was created with ``fault_injection=True``
    (an asker gets ``ErrorReply(ActorCrashed)``); otherwise ``ErrorReply(InvalidArgument)``
    and nothing happens.  ``reason`` goes to the logs and supervision events."""

    reason: str = "injected crash"
