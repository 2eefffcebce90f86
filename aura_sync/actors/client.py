"""Typed clients: the convenient way to call an actor.

An :class:`ActorClient` holds an :class:`~aura_sync.actors.ActorAddress` and
a default timeout.  A client subclasses it with one method per operation (the
infrastructure actors need none: they are asked with ``address.call``)::

    class CounterClient(ActorClient):
        def add(self, n: int) -> int:
            return self._call(Add(n), expect=Total).value

        async def add_async(self, n: int) -> int:
            return (await self._call_async(Add(n), expect=Total)).value

:meth:`ActorClient._call` asks, raises the :mod:`aura_sync.errors`
exception an :class:`~aura_sync.messages.ErrorReply` stands for
(``reply.to_exception()``), and checks the reply type, so callers see plain
return values and ordinary exceptions.  Because the address is stable, a
client built before a crash keeps working after the restart.

Layer: actors.
"""

from __future__ import annotations

from typing import Any, TypeVar, overload

from aura_sync.actors.address import DEFAULT_ASK_TIMEOUT, ActorAddress
from aura_sync.effects import check_seconds
from aura_sync.errors import ActorError, WrongType
from aura_sync.messages import ErrorReply

__all__ = ["ActorClient"]

R = TypeVar("R")
R2 = TypeVar("R2")


class ActorClient:
    """Base of the typed clients: asks with a timeout, error replies become exceptions.

    ``address`` is the actor's address; ``timeout`` (seconds, > 0) is the
    default ask timeout of every call.
    """

    __slots__ = ("_address", "_timeout")

    def __init__(self, address: ActorAddress, *, timeout: float = DEFAULT_ASK_TIMEOUT) -> None:
        """Wrap ``address``; raises WrongType / InvalidArgument for bad arguments."""
        if not isinstance(address, ActorAddress):
            raise WrongType(f"address must be an ActorAddress, got {type(address).__name__}")
        self._address = address
        self._timeout = check_seconds(timeout, "timeout", allow_zero=False)

    @property
    def address(self) -> ActorAddress:
        """The actor's (stable) address."""
        return self._address

    @property
    def timeout(self) -> float:
        """Default ask timeout, in seconds."""
        return self._timeout

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._address.name!r}, timeout={self._timeout})"

    def _tell(self, message: Any) -> None:
        """Send ``message`` without waiting (dead-lettered if the actor is stopped)."""
        self._address.tell(message)

    @overload
    def _call(self, message: Any, expect: type[R], timeout: float | None = None) -> R: ...

    @overload
    def _call(
        self, message: Any, expect: tuple[type[R], type[R2]], timeout: float | None = None
    ) -> R | R2: ...

    def _call(self, message: Any, expect: Any, timeout: float | None = None) -> Any:
        """Ask ``message`` and return the reply if it is an ``expect`` instance.

        ``timeout`` defaults to the client's.  Raises the exception an
        ``ErrorReply`` carries, :class:`~aura_sync.errors.AskTimeout`, or
        :class:`~aura_sync.errors.ActorError` for a reply of the wrong type.
        """
        reply = self._address.ask(message, self._timeout if timeout is None else timeout)
        return self._check(message, reply, expect)

    @overload
    async def _call_async(
        self, message: Any, expect: type[R], timeout: float | None = None
    ) -> R: ...

    @overload
    async def _call_async(
        self, message: Any, expect: tuple[type[R], type[R2]], timeout: float | None = None
    ) -> R | R2: ...

    async def _call_async(self, message: Any, expect: Any, timeout: float | None = None) -> Any:
        """:meth:`_call` for asyncio: awaits without blocking the event loop."""
        reply = await self._address.ask_async(
            message, self._timeout if timeout is None else timeout
        )
        return self._check(message, reply, expect)

    def _check(self, message: Any, reply: Any, expect: Any) -> Any:
        if isinstance(reply, expect):
            return reply
        if isinstance(reply, ErrorReply):
            raise reply.to_exception()
        names = (
            " | ".join(t.__name__ for t in expect) if isinstance(expect, tuple) else expect.__name__
        )
        raise ActorError(
            f"{self._address.name} answered {type(message).__name__} with "
            f"{type(reply).__name__}, expected {names}"
        )
