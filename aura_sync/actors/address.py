"""Stable actor addresses: what callers hold instead of an actor.

An :class:`ActorAddress` owns the mailbox every incarnation of a child is bound
to, so queued messages reach the next incarnation after a crash (only the one
that crashed it gets ``ActorCrashed``).  After a permanent stop, asks get
``ActorStopped`` at once and tells are dead letters.  :func:`spawn` starts an
unsupervised actor.
"""

from __future__ import annotations

import asyncio
import itertools
import math
from collections.abc import Callable
from typing import Any, Protocol, TypeVar, cast

from aura_sync.actors._mailbox import Mailbox, dead_letter
from aura_sync.actors._reply import ReplySlot, _AsyncReply, _SyncReply
from aura_sync.actors.base import AuraActor, current_actor
from aura_sync.effects import check_seconds
from aura_sync.errors import InvalidArgument, WrongType
from aura_sync.messages import Ack, ErrorReply, Message, Request
from aura_sync.messages.supervision import ExitKind

__all__ = ["DEFAULT_ASK_TIMEOUT", "ActorAddress", "Link", "spawn"]

DEFAULT_ASK_TIMEOUT = 5.0
"""Seconds an ask waits for its reply unless told otherwise."""

_INF = math.inf
R = TypeVar("R")
_names = itertools.count(1)


class Link(Protocol):
    """Who hears about an address's incarnations starting and ending (its supervisor)."""

    def started(self, address: ActorAddress, incarnation: int) -> None:
        """Incarnation ``incarnation`` finished ``on_start`` (called in its thread)."""

    def exited(self, address: ActorAddress, incarnation: int, kind: ExitKind, reason: str) -> None:
        """Incarnation ``incarnation`` ended (called last thing in its thread)."""


class ActorAddress:
    """The stable address of an actor; thread-safe.  ``name`` (non-empty) names it in
    logs and errors (a supervised child is ``"<supervisor>/<child id>"``)."""

    __slots__ = ("__weakref__", "_actor", "_closed", "_link", "_mailbox", "_put", "_why", "name")

    def __init__(self, name: str) -> None:
        if type(name) is not str:
            raise WrongType(f"name must be a str, got {type(name).__name__} {name!r}")
        if not name:
            raise InvalidArgument(f"name must not be empty, got {name!r}")
        self.name = name
        self._mailbox = Mailbox()
        self._put = self._mailbox.put_item
        self._closed = False
        self._why = ""
        self._actor: AuraActor | None = None
        self._link: Link | None = None

    def __repr__(self) -> str:
        state = "stopped" if self._closed else "open"
        return f"<ActorAddress {self.name} ({state})>"

    def __str__(self) -> str:
        return self.name

    # --- public API ---------------------------------------------------------------

    def tell(self, message: Message | Any) -> None:
        """Queue ``message``; never blocks, never raises (a stopped address dead-letters it)."""
        if self._closed:
            dead_letter(self, message, self._why)
            return
        self._put((message, None))
        if self._closed:  # stopped while we were putting: answer what is left
            self._mailbox.drain(self)  # type: ignore[unreachable]  # another thread may close

    def ask(self, message: Message | Any, timeout: float = DEFAULT_ASK_TIMEOUT) -> Any:
        """Send ``message`` and wait up to ``timeout`` seconds for the raw reply (failures
        answer an ``ErrorReply``); ``AskTimeout`` after.  Not inside an actor."""
        if timeout.__class__ is not float or not 0.0 <= timeout < _INF:
            timeout = check_seconds(timeout, "timeout")
        if self._closed:
            return self._stopped_reply()
        slot = _SyncReply()
        self._put((message, slot))
        if self._closed:  # closed concurrently (mypy cannot know another thread may close)
            self._mailbox.drain(self)  # type: ignore[unreachable]
        return slot.wait(timeout, self, message)

    async def ask_async(self, message: Message | Any, timeout: float = DEFAULT_ASK_TIMEOUT) -> Any:
        """:meth:`ask` for asyncio: awaits without blocking the loop (AskTimeout after
        ``timeout`` seconds; cancelling the awaiting task abandons the ask)."""
        if timeout.__class__ is not float or not 0.0 <= timeout < _INF:
            timeout = check_seconds(timeout, "timeout")
        if self._closed:
            return self._stopped_reply()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        slot = _AsyncReply(loop, future)
        self.ask_with(message, slot)
        timer = loop.call_later(timeout, slot.expire, self, message, timeout)
        try:
            return await future
        finally:
            timer.cancel()
            slot.abandon()

    def call(self, request: Request[R], timeout: float = DEFAULT_ASK_TIMEOUT) -> R:
        """Ask ``request`` and return its typed reply, or raise the exception an
        ``ErrorReply`` stands for (or ``AskTimeout``).  Actors use their tasks instead."""
        return cast(R, _unwrap(self.ask(request, timeout)))

    async def call_async(self, request: Request[R], timeout: float = DEFAULT_ASK_TIMEOUT) -> R:
        """:meth:`call` for asyncio: awaits the reply without blocking the loop."""
        return cast(R, _unwrap(await self.ask_async(request, timeout)))

    def ask_with(self, message: Message | Any, slot: ReplySlot) -> None:
        """Send ``message`` with ``slot`` for the reply; never blocks (the ask an actor may
        make: arm a timeout).  A stopped address answers ``ActorStopped`` at once."""
        if self._closed:
            slot.set(self._stopped_reply())
            return
        self._put((message, slot))
        if self._closed:  # closed concurrently (mypy cannot know another thread may close)
            self._mailbox.drain(self)  # type: ignore[unreachable]

    def is_alive(self) -> bool:
        """Whether the address accepts messages (True while a child restarts, too)."""
        return not self._closed

    def queued(self) -> int:
        """Approximate number of messages waiting in the mailbox."""
        return self._mailbox.qsize()

    def stop(self, timeout: float = DEFAULT_ASK_TIMEOUT) -> bool:
        """Stop an *unsupervised* actor after its current message and close the address
        (queued messages get ``ActorStopped``); waits up to ``timeout`` seconds for the
        thread (not from an actor): True if it is gone.  InvalidArgument if supervised."""
        timeout = check_seconds(timeout, "timeout")
        if self._link is not None:
            raise InvalidArgument(f"{self.name} is supervised: stop it with terminate_child")
        actor = self._actor
        stopped = True
        if actor is not None:
            actor.stop()
            thread = actor._aura_thread
            if thread is not None and current_actor() is None:  # not from an actor's thread
                thread.join(timeout)
                stopped = not thread.is_alive()
                if not stopped:
                    actor._aura_kill()
        self._close("stopped")
        return stopped

    # --- runtime internals (used by spawn and supervisors) ---------------------------

    def _stopped_reply(self) -> ErrorReply:
        return ErrorReply("ActorStopped", f"{self.name} is stopped ({self._why})")

    def _attach(self, actor: AuraActor, incarnation: int, link: Link | None) -> None:
        """Bind ``actor`` as incarnation ``incarnation`` and start its thread."""
        actor._aura_bind(self, incarnation)
        self._actor = actor
        self._link = link
        actor._aura_start()

    def _incarnation_started(self, actor: AuraActor) -> None:
        link = self._link
        if link is not None:
            link.started(self, actor._aura_incarnation)

    def _incarnation_exited(self, actor: AuraActor, kind: ExitKind, reason: str) -> None:
        if actor._aura_killed:
            return
        if self._actor is actor:
            self._actor = None
        link = self._link
        if link is not None:
            link.exited(self, actor._aura_incarnation, kind, reason)
        else:
            self._close(f"{kind.value}: {reason}")

    def _close(self, why: str) -> None:
        """Stop accepting messages and answer everything queued."""
        self._why = why
        self._closed = True
        self._mailbox.drain(self)

    def _reopen(self) -> None:
        self._closed = False
        self._why = ""


def _unwrap(reply: Any) -> Any:
    """A reply as :meth:`ActorAddress.call` returns it: errors raised, ``Ack`` as None."""
    cls = reply.__class__
    if cls is ErrorReply:
        raise cast(ErrorReply, reply).to_exception()
    if cls is Ack:
        return None
    return reply


def spawn(actor: AuraActor | Callable[[], AuraActor], *, name: str | None = None) -> ActorAddress:
    """Start an unsupervised actor (an unstarted :class:`AuraActor` or a factory of one);
    its address (``name``: the class name and a counter) closes when it ends."""
    if not isinstance(actor, AuraActor):
        if not callable(actor):
            raise WrongType(f"spawn needs an AuraActor or a factory, got {actor!r}")
        made = actor()
        if not isinstance(made, AuraActor):
            raise WrongType(f"spawn factory returned {type(made).__name__}, expected an AuraActor")
        actor = made
    if name is None:
        name = f"{type(actor).__name__}-{next(_names)}"
    address = ActorAddress(name)
    address._attach(actor, 1, None)
    return address
