"""Messages of the application API and of the node's control socket (tags 0x0100-0x011F).

``ControlCall`` carries any registered message to a named actor of a
running node; the reply frame is the actor's reply when it is a message,
else one of the value envelopes (``ValueReply``, ``TupleReply``,
``IdsReply``).  The ``node`` target answers the node-level requests
(``ReadOps``, ``GetChildren``, ``CrashActor``, ``StopNode``).

Layer: runtime (messages of the node itself, above the infrastructure concerns).
"""

from __future__ import annotations

from aura_sync.ids import DeviceId
from aura_sync.messages._base import Message, Request, message

__all__ = [
    "ChildRow",
    "ControlCall",
    "CrashActor",
    "GetChildren",
    "IdsReply",
    "LogEntry",
    "OpsPage",
    "ReadOps",
    "StopNode",
    "TupleReply",
    "ValueReply",
]


@message(0x0100)
class ControlCall(Message):
    """Ask (``reply``) or tell ``body`` to the actor named ``target``, waiting ``timeout`` s."""

    target: str
    body: Message
    timeout: float
    reply: bool


@message(0x0101)
class ValueReply(Message):
    """The wire form of a reply that is a plain value: the one field set (all None: None)."""

    flag: bool | None = None
    integer: int | None = None
    real: float | None = None
    text: str | None = None
    raw: bytes | None = None

    @property
    def value(self) -> bool | int | float | str | bytes | None:
        for field in (self.flag, self.integer, self.real, self.text, self.raw):
            if field is not None:
                return field
        return None


@message(0x0102)
class TupleReply(Message):
    """The wire form of a reply that is a tuple of messages."""

    items: tuple[Message, ...]


@message(0x0103)
class IdsReply(Message):
    """The wire form of a reply that is a tuple of DeviceIds."""

    ids: tuple[DeviceId, ...]


@message(0x0104)
class LogEntry(Message):
    """One op of the journal as an application reads it; ``cursor`` is its local position.

    Cursors grow in the order the ops arrived here (local or synced) and are
    never reused: ``read(after=entry.cursor)`` resumes right after it.
    """

    cursor: int
    op_id: bytes
    author: DeviceId
    seq: int
    payload: bytes


@message(0x0105)
class OpsPage(Message):
    """Up to ``limit`` entries after a cursor; ``cursor`` is where the next read resumes."""

    entries: tuple[LogEntry, ...]
    cursor: int


@message(0x0106)
class ReadOps(Request[OpsPage]):
    """Entries after ``after`` (at most ``limit``), waiting up to ``wait`` s for one to arrive."""

    after: int
    limit: int
    wait: float


@message(0x0107)
class ChildRow(Message):
    """One supervised child: its path in the tree, status and restart count."""

    path: str
    status: str
    restarts: int


@message(0x0108)
class GetChildren(Request[tuple[ChildRow, ...]]):
    """The live supervision tree, depth first."""


@message(0x0109)
class CrashActor(Request[None]):
    """Crash the named actor on purpose (only when the node allows fault injection)."""

    target: str


@message(0x010A)
class StopNode(Request[None]):
    """Stop the node cleanly (the reply comes before it stops)."""
