"""The persistent mailbox behind an :class:`~aura_sync.actors.ActorAddress`.

A :class:`queue.SimpleQueue` of ``(message, reply_slot_or_None)`` that belongs to
the address, not to an incarnation; it speaks pykka's inbox protocol too.  Dead
letters go to the ``aura_sync.deadletters`` logger.
"""

from __future__ import annotations

import logging
import queue
from typing import TYPE_CHECKING, Any, Final

from aura_sync.actors._pykka import ActorStop
from aura_sync.actors._reply import ReplySlot, _PykkaReply
from aura_sync.errors import ActorStopped
from aura_sync.messages import ErrorReply

if TYPE_CHECKING:
    from aura_sync.actors._pykka import Envelope
    from aura_sync.actors.address import ActorAddress

__all__ = ["LocalMessage", "Mailbox", "dead_letter", "deadletter_logger"]

deadletter_logger: Final = logging.getLogger("aura_sync.deadletters")
"""Logger of messages that could not be delivered or handled."""

Item = tuple[Any, ReplySlot | None]
"""One mailbox entry: the message and the slot its reply goes to (None for tell)."""


class LocalMessage:
    """Base of in-process messages that never cross the wire (they carry what msgpack
    cannot: a callable, an address, a live connection)."""

    __slots__ = ()


class _Wake:
    __slots__ = ()

    def __repr__(self) -> str:
        return "<wake>"


WAKE: Final = _Wake()
"""Put by a stop request so a blocked ``get()`` returns and the stop flag is seen."""


def dead_letter(target: object, message: object, why: str) -> None:
    """Log ``message`` (told to ``target``) as undeliverable, saying why."""
    if message is WAKE:
        return
    deadletter_logger.info("dead letter to %s: %r (%s)", target, message, why)


class Mailbox:
    """A persistent FIFO of ``(message, reply_slot)`` tuples (see the module doc)."""

    __slots__ = ("get", "get_nowait", "put_item", "queue")

    def __init__(self) -> None:
        self.queue: queue.SimpleQueue[Item] = queue.SimpleQueue()
        self.put_item = self.queue.put
        self.get = self.queue.get
        self.get_nowait = self.queue.get_nowait

    def put(self, envelope: Envelope[Any], /) -> None:
        """pykka's inbox protocol: accept a pykka ``Envelope`` (from ``ActorRef``)."""
        reply_to = envelope.reply_to
        self.put_item((envelope.message, None if reply_to is None else _PykkaReply(reply_to)))

    def empty(self) -> bool:
        """pykka's inbox protocol: whether nothing is queued (a snapshot)."""
        return self.queue.empty()

    def qsize(self) -> int:
        """Approximate number of queued entries."""
        return self.queue.qsize()

    def drain(self, address: ActorAddress) -> None:
        """Answer what is queued while ``address`` is closed (asks get ``ActorStopped``,
        tells are dead letters)."""
        while address._closed:
            try:
                message, slot = self.get_nowait()
            except queue.Empty:
                return
            fail_entry(address, message, slot, address._why)


def fail_entry(target: object, message: object, slot: ReplySlot | None, why: str) -> None:
    """Answer one undeliverable entry: ActorStopped for an ask, a dead letter for a tell."""
    if slot is not None:
        if message is WAKE or isinstance(message, ActorStop):
            slot.set(None)
        else:
            slot.set(ErrorReply(ActorStopped.__name__, f"{target} is stopped ({why})"))
    else:
        dead_letter(target, message, why)
