"""The actor base class: typed messages in, typed replies out, dispatched by a table.

Subclass :class:`AuraActor` with one :func:`handles` method (or :func:`forward`
line) per message type, returning the reply (``None`` answers ``Ack``,
:data:`DEFERRED` answers later).  An ``AuraError`` becomes the asker's
``ErrorReply``; an unhandled message gets ``UnhandledMessage``; any other
exception is a crash: the asker gets ``ActorCrashed``, ``on_crash`` runs and the
incarnation ends, leaving the mailbox to the next one.  Never block in a handler.
"""

from __future__ import annotations

import dataclasses
import logging
import operator
import threading
import typing
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar, cast

import pykka

from aura_sync.actors._mailbox import WAKE, LocalMessage, Mailbox, deadletter_logger
from aura_sync.actors._pykka import ActorStop, PykkaActor, rebind_inbox
from aura_sync.actors._reply import DEFERRED, ReplySlot
from aura_sync.errors import (
    ActorCrashed,
    ActorError,
    ActorStopped,
    AuraError,
    InvalidArgument,
    WrongType,
)
from aura_sync.messages import Ack, ErrorReply, Message, codec
from aura_sync.messages.supervision import ExitKind

if TYPE_CHECKING:
    from aura_sync.actors.address import ActorAddress

__all__ = [
    "DEFERRED", "AuraActor", "LocalMessage", "ReplySlot", "current_actor", "forward", "handles",
]  # fmt: skip

logger = logging.getLogger("aura_sync.actors")

F = TypeVar("F", bound=Callable[..., Any])
Handler = Callable[[Any, Any], Any]

_ACK: Any = Ack()
_local = threading.local()


def current_actor() -> AuraActor | None:
    """The actor whose thread is calling, or None (blocking helpers refuse actors)."""
    actor: AuraActor | None = getattr(_local, "actor", None)
    return actor


def handles(*types: type) -> Callable[[F], F]:
    """Declare the method as the handler of ``types`` (Message or LocalMessage classes);
    a base class's handler serves subclasses; a decorated override replaces the types
    inherited under its name, an undecorated one keeps them."""
    if not types:
        raise InvalidArgument("handles() needs at least one message type, got none")
    for tp in types:
        if not (isinstance(tp, type) and issubclass(tp, Message | LocalMessage)):
            raise WrongType(f"handles() takes Message or LocalMessage classes, got {tp!r}")

    def mark(fn: F) -> F:
        previous: tuple[type, ...] = getattr(fn, "_aura_handles", ())
        fn._aura_handles = previous + types  # type: ignore[attr-defined]
        return fn

    return mark


def forward(core: str, method: str, request: type[Message]) -> Handler:
    """A handler of ``request`` answering ``self.<core>.<method>(*request's fields)``
    (``Ack`` for a ``Request[None]``), for an operation that is one core call:
    ``_peer_rate = forward("_limiter", "peer_rate", GetPeerRate)`` in the class body."""
    target = operator.attrgetter(f"{core}.{method}")
    names = [f.name for f in dataclasses.fields(request)]  # type: ignore[arg-type]
    ack = typing.get_args(getattr(request, "__orig_bases__", (None,))[0]) == (type(None),)

    def handler(self: Any, msg: Any) -> Any:
        result = target(self)(*[getattr(msg, name) for name in names])
        return None if ack else result

    return handles(request)(handler)


def _build_table(cls: type) -> dict[type, Handler]:
    """The message-type -> function table of ``cls`` (see :func:`handles`)."""
    by_type: dict[type, str] = {}
    for klass in reversed(cls.__mro__):
        here: dict[type, str] = {}
        for name, value in vars(klass).items():
            for tp in getattr(value, "_aura_handles", ()):
                if (other := here.setdefault(tp, name)) != name:
                    raise TypeError(
                        f"{klass.__qualname__}: {tp.__name__} is handled by both "
                        f"{other}() and {name}()"
                    )
        redefined = set(here.values())  # a decorated redefinition replaces the inherited types
        by_type = {tp: n for tp, n in by_type.items() if n not in redefined} | here
    return {tp: getattr(cls, name) for tp, name in by_type.items()}


def _describe(exc: BaseException) -> str:
    try:
        text = str(exc)
    except Exception:  # an exception that cannot even be printed must not kill the actor
        text = "<unprintable>"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class AuraActor(PykkaActor):
    """Base class of every aura-sync actor, made by a factory (``ChildSpec.start`` or
    ``spawn``) and bound to an address before it starts, on a daemon thread."""

    _aura_table: ClassVar[dict[type, Handler]] = {}
    _aura_reports_started: ClassVar[bool] = True
    """False for actors that announce readiness themselves (supervisors)."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._aura_table = _build_table(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """Initialise the actor; subclasses must call ``super().__init__()``."""
        super().__init__(*args, **kwargs)
        self._aura_mailbox: Mailbox = cast(Mailbox, self.actor_inbox)
        self._aura_live = True
        self._aura_killed = False
        self._aura_started = False
        self._aura_address: ActorAddress | None = None
        self._aura_incarnation = 0
        self._aura_reply: ReplySlot | None = None
        self._aura_deferred: list[ReplySlot] = []
        self._aura_prune_at = 64
        self._aura_exit_kind = ExitKind.NORMAL
        self._aura_exit_reason = "stopped"
        self._aura_crash: BaseException | None = None
        self._aura_thread: threading.Thread | None = None

    # --- public API for subclasses ---------------------------------------------------

    @property
    def address(self) -> ActorAddress:
        """This actor's stable address (valid across restarts); ActorError before it is bound."""
        address = self._aura_address
        if address is None:
            raise ActorError(f"{type(self).__name__} is not bound to an address yet")
        return address

    @property
    def incarnation(self) -> int:
        """How many times this child has been started, this one included (1 = first)."""
        return self._aura_incarnation

    def current_reply(self) -> ReplySlot | None:
        """The reply slot of the message being handled (None if told), to answer later."""
        return self._aura_reply

    def stop(self) -> None:
        """Stop this incarnation after the current message (a normal exit; a PERMANENT
        child is restarted).  Queued messages stay in the mailbox."""
        self._aura_live = False
        self._aura_mailbox.put_item((WAKE, None))

    def on_crash(self, exc: BaseException) -> None:
        """Hook after a crash or failed ``on_start`` (instead of ``on_stop``): release what the
        incarnation holds."""

    # --- runtime internals -------------------------------------------------------------

    def _aura_bind(self, address: ActorAddress, incarnation: int) -> None:
        if self._aura_address is not None or self._aura_started:
            raise ActorError(f"{type(self).__name__} already started: factories make new ones")
        self._aura_address = address
        self._aura_incarnation = incarnation
        mailbox = address._mailbox
        self._aura_mailbox = mailbox
        rebind_inbox(self, mailbox)

    def _aura_start(self) -> None:
        self._aura_started = True
        address = self._aura_address
        where = address.name if address is not None else type(self).__name__
        name = f"aura-actor:{where}#{self._aura_incarnation}"
        thread = threading.Thread(target=self._aura_run, name=name, daemon=True)
        self._aura_thread = thread
        thread.start()

    def _aura_kill(self) -> None:
        """Give up on this incarnation (it overran a timeout): it must never consume again."""
        self._aura_killed = True
        self.stop()

    def _aura_stop_with(self, kind: ExitKind, reason: str) -> None:
        """End this incarnation after the current message with the given exit kind."""
        self._aura_exit_kind = kind
        self._aura_exit_reason = reason
        self.stop()

    def _aura_report_started(self) -> None:
        address = self._aura_address
        if address is not None and not self._aura_killed:
            address._incarnation_started(self)

    def __str__(self) -> str:
        address = self._aura_address
        if address is None:
            return f"{type(self).__name__} (unbound)"
        return f"{type(self).__name__} {address.name}#{self._aura_incarnation}"

    def _aura_run(self) -> None:
        _local.actor = self
        try:
            try:
                self.on_start()
            except BaseException as exc:
                self._aura_exit_kind = ExitKind.START_FAILED
                self._aura_exit_reason = f"on_start raised {_describe(exc)}"
                self._aura_crash = exc
                logger.error("%s failed to start", self, exc_info=exc)
            else:
                if self._aura_reports_started and self._aura_live:
                    self._aura_report_started()
                try:
                    self._aura_receive()
                except BaseException as exc:  # a runtime failure: end as a crash, with teardown
                    self._aura_on_crash(self._aura_reply, exc, "in its receive loop")
            self._aura_teardown()
        except BaseException:  # the runtime itself must never die silently
            logger.exception("internal error in the loop of %s", self)
            self._aura_exit_kind = ExitKind.CRASHED
            self._aura_exit_reason = "internal runtime error"
        finally:
            _local.actor = None
            self.actor_stopped.set()
            address = self._aura_address
            if address is not None:
                address._incarnation_exited(self, self._aura_exit_kind, self._aura_exit_reason)
            else:
                pykka.ActorRegistry.unregister(self.actor_ref)

    def _aura_receive(self) -> None:
        """The receive loop: one table lookup and one call per message."""
        get = self._aura_mailbox.get
        table = self._aura_table
        ack = _ACK
        deferred = DEFERRED
        while self._aura_live:
            message, reply = get()
            handler = table.get(message.__class__)
            if handler is None:
                handler = self._aura_resolve(message, reply)
                if handler is None:
                    continue
            self._aura_reply = reply
            try:
                result = handler(self, message)
            except AuraError as exc:
                self._aura_expected_error(message, reply, exc)
                continue
            except BaseException as exc:
                self._aura_on_crash(reply, exc, f"handling {type(message).__name__}")
                return
            if reply is not None:
                if result is None:
                    reply.set(ack)
                elif result is deferred:
                    self._aura_keep_deferred(reply)
                else:
                    reply.set(result)

    def _aura_teardown(self) -> None:
        """After the loop: on_crash or on_stop, fail the pending deferred replies; unlike
        pykka's teardown, leave the mailbox (the address's) to the next incarnation."""
        crash = self._aura_crash
        if crash is not None:
            try:
                self.on_crash(crash)
            except Exception:
                logger.exception("on_crash of %s raised", self)
            error: type[ActorError] = ActorCrashed
        else:
            try:
                self.on_stop()
            except Exception as exc:
                logger.exception("on_stop of %s raised", self)
                self._aura_exit_kind = ExitKind.CRASHED
                self._aura_exit_reason = f"on_stop raised {_describe(exc)}"
            error = ActorStopped
        for slot in self._aura_deferred:
            slot.set(ErrorReply(error.__name__, f"{self} ended before answering"))
        self._aura_deferred.clear()

    def _aura_keep_deferred(self, reply: ReplySlot) -> None:
        slots = self._aura_deferred
        slots.append(reply)
        if len(slots) >= self._aura_prune_at:
            slots[:] = [s for s in slots if s.is_pending()]
            self._aura_prune_at = max(64, 2 * len(slots))

    def _aura_resolve(self, message: Any, reply: ReplySlot | None) -> Handler | None:
        """Slow path: runtime controls, handlers of base classes, unhandled messages."""
        cls = message.__class__
        if message is WAKE or cls is ActorStop:  # runtime controls
            if cls is ActorStop:  # pykka's ActorRef.stop() / Actor.stop()
                self._aura_live = False
            if reply is not None:
                reply.set(None)
            return None
        if isinstance(message, Message | LocalMessage):
            for base in cls.__mro__[1:]:
                handler = self._aura_table.get(base)
                if handler is not None:
                    self._aura_table[cls] = handler
                    return handler
        what = "" if isinstance(message, Message | LocalMessage) else "a non-message, "
        text = f"{self} has no handler for {what}{codec.describe(message)}"
        if reply is not None:
            reply.set(ErrorReply("UnhandledMessage", text))
        else:
            deadletter_logger.warning("dead letter: %s", text)
        return None

    def _aura_expected_error(self, message: Any, reply: ReplySlot | None, exc: AuraError) -> None:
        if reply is not None:
            reply.set(ErrorReply.from_exception(exc))
        else:
            logger.warning("%s refused told %s: %s", self, type(message).__name__, _describe(exc))

    def _aura_on_crash(self, reply: ReplySlot | None, exc: BaseException, what: str) -> None:
        """End this incarnation as a crash ``what`` ("handling Ping"); the asker learns why."""
        if reply is not None:  # a no-op if it was answered already
            reply.set(ErrorReply("ActorCrashed", f"{self} crashed {what}: {_describe(exc)}"))
        self._aura_live = False
        self._aura_crash = exc
        self._aura_exit_kind = ExitKind.CRASHED
        self._aura_exit_reason = f"{_describe(exc)} ({what})"
        logger.error("%s crashed %s", self, what, exc_info=exc)
