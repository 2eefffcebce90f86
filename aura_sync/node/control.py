"""The node's control socket: other local processes ask and tell its actors, typed.

``<data_dir>/control.sock`` is a Unix domain socket (mode 0600; the node
refuses to open it when the data directory is writable by group or others).
Frames are the transport's (4-byte length, then one codec message); a client
sends :class:`~aura_sync.node.wire.ControlCall` frames and gets one
reply frame each: the actor's reply when it is a message (``ErrorReply``,
``Ack`` included), else a value envelope (``ValueReply``, ``TupleReply``,
``IdsReply``).  :class:`~aura_sync.node.control_client.ControlClient`
(re-exported here) unwraps them, so
``ControlClient(d).call("rate_limiter", GetPeerRate(p), 5.0)`` returns the
same typed value as ``address.call`` in-process.

Guarantees: the server runs on its own asyncio thread and asks actors with
``ask_async`` (no actor and no other client waits on a client); at most
``MAX_CLIENTS`` clients at once (the next is told so and closed); frames
above ``MAX_CONTROL_FRAME`` bytes, malformed frames and garbage close only
that client (after an ``ErrorReply``); an unknown message or target gets an
``ErrorReply``; an idle client is closed after ``IDLE_TIMEOUT``.

Layer: runtime.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import stat
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, cast

from aura_sync.actors.address import ActorAddress
from aura_sync.errors import AuraError, ConfigError, InvalidArgument
from aura_sync.ids import DeviceId
from aura_sync.messages._base import Message
from aura_sync.messages.codec import decode, encode
from aura_sync.messages.common import Ack, ErrorReply
from aura_sync.node.control_client import (
    CONTROL_SOCKET,
    MAX_CONTROL_FRAME,
    ControlClient,
    _short,
    socket_path,
    unwrap_reply,
)
from aura_sync.node.wire import (
    ChildRow,
    ControlCall,
    CrashActor,
    GetChildren,
    IdsReply,
    OpsPage,
    ReadOps,
    StopNode,
    TupleReply,
    ValueReply,
)
from aura_sync.transport._frames import FrameDecoder, FrameError, encode_frame

if TYPE_CHECKING:
    from aura_sync.node.node import Node

__all__ = [
    "CONTROL_SOCKET",
    "MAX_CLIENTS",
    "MAX_CONTROL_FRAME",
    "ControlClient",
    "ControlServer",
    "socket_path",
    "unwrap_reply",
]

_log = logging.getLogger("aura_sync.node.control")

MAX_CLIENTS: Final = 16
IDLE_TIMEOUT: Final = 120.0
MAX_CALL_TIMEOUT: Final = 60.0
_SEND_TIMEOUT: Final = 10.0


def _check_dir(data_dir: Path) -> None:
    mode = os.stat(data_dir).st_mode
    if mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise ConfigError(
            f"config key 'data_dir' has invalid value {str(data_dir)!r}: it is writable by "
            f"others (mode {stat.S_IMODE(mode):o}), so the control socket would not be "
            f"private: chmod go-w it"
        )


def wire_reply(reply: object) -> Message:
    """The message that carries ``reply`` (an actor's reply) across the socket."""
    if isinstance(reply, Message):
        return reply
    if reply is None:
        return Ack()
    if isinstance(reply, bool):
        return ValueReply(flag=reply)
    if isinstance(reply, int):
        return ValueReply(integer=reply)
    if isinstance(reply, float):
        return ValueReply(real=reply)
    if isinstance(reply, str):
        return ValueReply(text=reply)
    if isinstance(reply, bytes):
        return ValueReply(raw=reply)
    if isinstance(reply, tuple):
        if reply and all(type(x) is DeviceId for x in reply):
            return IdsReply(reply)
        if all(isinstance(x, Message) for x in reply):
            return TupleReply(reply)
    return ErrorReply("InvalidArgument", f"a {type(reply).__name__} reply cannot leave the node")


# --- the server ------------------------------------------------------------------------------


class ControlServer:
    """Serves ``control.sock`` for ``node`` on a thread of its own (see the module docstring)."""

    def __init__(self, node: Node, *, max_clients: int = MAX_CLIENTS) -> None:
        data_dir = node.config.data_dir
        _check_dir(data_dir)
        self._node = node
        self._max_clients = max_clients
        self._clients = 0
        self._stop = threading.Event()
        self.path = socket_path(data_dir)
        self._sock = self._bind(self.path)
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.AbstractServer | None = None
        ready = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(ready,), name="aura-control", daemon=True
        )
        self._thread.start()
        ready.wait(10.0)

    @staticmethod
    def _bind(path: Path) -> socket.socket:
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        for stale in (path, tmp):  # the data directory lock says no other node uses them
            with contextlib.suppress(FileNotFoundError):
                os.unlink(stale)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        name, fd = _short(tmp)
        try:
            sock.bind(name)
            os.chmod(tmp, 0o600)  # before the name clients look for exists
            os.replace(tmp, path)
            sock.listen(MAX_CLIENTS)
        except OSError as exc:
            sock.close()
            raise ConfigError(f"cannot open the control socket {str(path)!r}: {exc}") from None
        finally:
            if fd is not None:
                os.close(fd)
        sock.setblocking(False)
        return sock

    def _run(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self._loop)

        async def serve() -> None:
            self._server = await asyncio.start_unix_server(self._client, sock=self._sock)
            ready.set()

        self._loop.run_until_complete(serve())
        self._loop.run_forever()

    def close(self, timeout: float = 1.0) -> None:
        """Stop serving, close every client and remove the socket file."""
        self._stop.set()

        def shut() -> None:
            if self._server is not None:
                self._server.close()
            for task in asyncio.all_tasks(self._loop):
                task.cancel()
            self._loop.call_later(0.05, self._loop.stop)

        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(shut)
        self._thread.join(timeout)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._clients >= self._max_clients:
            await self._send(writer, ErrorReply("Overloaded", "too many control clients"))
            writer.close()
            return
        self._clients += 1
        decoder = FrameDecoder(MAX_CONTROL_FRAME)
        try:
            while not self._stop.is_set():
                data = await asyncio.wait_for(reader.read(1 << 16), IDLE_TIMEOUT)
                if not data:
                    return
                for frame in decoder.feed(data):
                    if not await self._send(writer, await self._answer(frame)):
                        return
        except FrameError as exc:
            await self._send(writer, ErrorReply("DecodeError", str(exc)))
        except (TimeoutError, ConnectionError, OSError, asyncio.CancelledError):
            pass  # cancelled: the server is closing
        finally:
            self._clients -= 1
            writer.close()

    async def _send(self, writer: asyncio.StreamWriter, reply: Message) -> bool:
        try:
            data = encode(reply, max_size=MAX_CONTROL_FRAME)
        except InvalidArgument as exc:
            data = encode(ErrorReply.from_exception(exc))
        try:
            writer.write(encode_frame(data))
            await asyncio.wait_for(writer.drain(), _SEND_TIMEOUT)
        except (TimeoutError, ConnectionError, OSError):
            return False
        return True

    async def _answer(self, frame: bytes) -> Message:
        try:
            call = decode(frame, max_size=MAX_CONTROL_FRAME)
            if not isinstance(call, ControlCall):
                raise InvalidArgument(
                    f"a control frame must hold a ControlCall, got {type(call).__name__}"
                )
            if not 0.0 < call.timeout <= MAX_CALL_TIMEOUT:
                raise InvalidArgument(
                    f"timeout must be in (0, {MAX_CALL_TIMEOUT}] seconds, got {call.timeout!r}"
                )
            if call.target == "node":
                return wire_reply(await self._node_request(call.body, call.timeout))
            address = self._address(call.target)
            if not call.reply:
                address.tell(call.body)
                return Ack()
            return wire_reply(await address.ask_async(call.body, call.timeout))
        except AuraError as exc:
            return ErrorReply.from_exception(exc)
        except Exception as exc:  # a bug must not take the server down: tell the client
            _log.exception("event=control_error")
            return ErrorReply.from_exception(exc)

    def _address(self, target: str) -> ActorAddress:
        node = self._node
        sups = node.supervisors()
        if target in sups and sups[target] is not None:
            return cast(Any, sups[target]).address  # type: ignore[no-any-return]
        with contextlib.suppress(InvalidArgument):
            return node.address_of(target)
        for sup in (sups["protocols"], sups["infrastructure"]):
            if sup is not None:
                with contextlib.suppress(AuraError, KeyError):
                    return sup.child_address(target)
        raise InvalidArgument(f"unknown control target {target!r}")

    async def _node_request(self, body: Message, timeout: float) -> object:
        node = self._node
        if isinstance(body, ReadOps):
            reader = node._journal_reader()
            wait = min(body.wait, timeout)
            page = await asyncio.to_thread(
                reader.wait_read, body.after, body.limit, wait, self._stop
            )
            return _fit(page)
        if isinstance(body, GetChildren):
            return await asyncio.to_thread(self._children, timeout)
        if isinstance(body, CrashActor):
            node.inject_crash(body.target, "injected through the control socket")
            return None
        if isinstance(body, StopNode):
            threading.Thread(target=node.stop, name="aura-control-stop", daemon=True).start()
            return None
        raise InvalidArgument(f"the node target does not handle {type(body).__name__}")

    def _children(self, timeout: float) -> tuple[ChildRow, ...]:
        rows: list[ChildRow] = []
        sups = self._node.supervisors()

        def walk(name: str, prefix: str) -> None:
            sup = sups.get(name)
            if sup is None:
                return
            for child in sup.which_children(timeout):
                path = f"{prefix}/{child.id}"
                rows.append(ChildRow(path, child.status.value, child.restarts))
                if child.id in sups:
                    walk(child.id, path)

        walk("root", "root")
        return tuple(rows)


def _fit(page: OpsPage) -> OpsPage:
    """``page`` cut to the entries that fit in half a reply frame (at least one)."""
    size = 0
    for i, entry in enumerate(page.entries):
        size += len(entry.payload) + 96  # the id, the author and the framing
        if i and size > MAX_CONTROL_FRAME // 2:
            return OpsPage(page.entries[:i], page.entries[i - 1].cursor)
    return page
