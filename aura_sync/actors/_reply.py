"""One-shot reply slots: how an answer travels back from an actor to its asker.

Every ``ask`` queues ``(message, slot)``: :class:`_SyncReply` (``ask``) is a lock
released by ``set``, :class:`_AsyncReply` (``ask_async``) completes an asyncio
future on its loop, :class:`_PykkaReply` a pykka future.  A slot is claimed
once: the reply or the asker's timeout wins, and a later ``set`` returns False,
so an actor holding a deferred slot sees that its asker has gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from _thread import allocate_lock
from typing import TYPE_CHECKING, Any, Final

from aura_sync.errors import AskTimeout
from aura_sync.messages import ErrorReply

if TYPE_CHECKING:
    import pykka

__all__ = ["DEFERRED", "ReplySlot"]

logger = logging.getLogger("aura_sync.actors")


class _Deferred:
    __slots__ = ()

    def __repr__(self) -> str:
        return "DEFERRED"


DEFERRED: Final = _Deferred()
"""Returned by a handler that keeps ``self.current_reply()`` to ``set`` later; slots
still pending when the actor ends get ``ActorCrashed`` / ``ActorStopped``."""


def ask_timeout(target: object, message: object, timeout: float) -> AskTimeout:
    """The error of an ask of ``message`` that ``target`` did not answer in time."""
    return AskTimeout(f"no reply from {target} to {type(message).__name__} within {timeout} s")


class ReplySlot:
    """Where the reply to one ``ask`` goes; thread-safe, completed at most once."""

    __slots__ = ("_claim",)

    def __init__(self) -> None:
        self._claim = allocate_lock()

    def set(self, reply: Any) -> bool:
        """Deliver ``reply`` to the asker; False if the slot was completed already or the
        asker gave up (then give what was handed out to someone else)."""
        if not self._claim.acquire(False):
            return False
        try:
            self._deliver(reply)
        except Exception:  # the asker's slot is broken: that must not hurt the replying actor
            logger.exception("reply slot %s could not deliver %s", type(self).__name__, reply)
            return False
        return True

    def fail(self, exc: BaseException) -> bool:
        """Answer with ``ErrorReply.from_exception(exc)``; same return as :meth:`set`."""
        return self.set(ErrorReply.from_exception(exc))

    def is_pending(self) -> bool:
        """``True`` while nobody has completed the slot and the asker still waits."""
        return not self._claim.locked()

    def _deliver(self, reply: Any) -> None:  # pragma: no cover - abstract
        raise NotImplementedError


class _SyncReply(ReplySlot):
    """Slot for a blocking ask: a lock held until the reply is set."""

    __slots__ = ("_done", "_value")

    def __init__(self) -> None:
        self._claim = allocate_lock()
        done = allocate_lock()
        done.acquire()
        self._done = done
        self._value: Any = None

    def set(self, reply: Any) -> bool:
        # Claim and deliver inlined: this is the hot path of every ask.
        if not self._claim.acquire(False):
            return False
        self._value = reply
        self._done.release()
        return True

    def wait(self, timeout: float, target: object, message: object) -> Any:
        """Block up to ``timeout`` seconds for the reply; raise AskTimeout after."""
        if self._done.acquire(True, timeout):
            return self._value
        if self._claim.acquire(False):
            raise ask_timeout(target, message, timeout)
        # The actor claimed the slot just as we timed out: its reply is on the way.
        self._done.acquire()
        return self._value


def _complete(future: asyncio.Future[Any], value: Any) -> None:
    if not future.done():
        future.set_result(value)


class _AsyncReply(ReplySlot):
    """Slot for ``ask_async``: resolves an asyncio future on its own loop."""

    __slots__ = ("_future", "_loop")

    def __init__(self, loop: asyncio.AbstractEventLoop, future: asyncio.Future[Any]) -> None:
        self._claim = allocate_lock()
        self._loop = loop
        self._future = future

    def _deliver(self, reply: Any) -> None:
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody listens any more
            self._loop.call_soon_threadsafe(_complete, self._future, reply)

    def expire(self, target: object, message: object, timeout: float) -> None:
        """Called on the loop when the ask times out: fail the future unless a reply won."""
        if self._claim.acquire(False) and not self._future.done():
            self._future.set_exception(ask_timeout(target, message, timeout))

    def abandon(self) -> None:
        """The awaiting coroutine is gone (done or cancelled): refuse later replies."""
        self._claim.acquire(False)


class _PykkaReply(ReplySlot):
    """Adapter for a pykka future (messages sent with pykka's ``ActorRef.ask``)."""

    __slots__ = ("_future",)

    def __init__(self, future: pykka.Future[Any]) -> None:
        self._claim = allocate_lock()
        self._future = future

    def _deliver(self, reply: Any) -> None:
        self._future.set(reply)
