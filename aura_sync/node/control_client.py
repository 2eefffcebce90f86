"""The client of a node's control socket: light to import (no actors, no transport).

:class:`ControlClient` sends :class:`~aura_sync.node.wire.ControlCall`
frames (4-byte big-endian length, then one codec message) to
``<data_dir>/control.sock`` and unwraps the reply frames, so ``call``
returns what ``address.call`` returns in-process (see
:mod:`aura_sync.node.control` for the server).

Layer: runtime.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Final, TypeVar, cast

from aura_sync.errors import AuraError, ConfigError, DecodeError
from aura_sync.messages._base import Message, Request
from aura_sync.messages.codec import decode, encode
from aura_sync.messages.common import Ack, ErrorReply
from aura_sync.node.wire import ControlCall, IdsReply, TupleReply, ValueReply

__all__ = ["CONTROL_SOCKET", "MAX_CONTROL_FRAME", "ControlClient", "socket_path", "unwrap_reply"]

CONTROL_SOCKET: Final = "control.sock"
MAX_CONTROL_FRAME: Final = 4 << 20
"""The largest frame either side sends or accepts (bytes of payload)."""

R = TypeVar("R")


def socket_path(data_dir: Path) -> Path:
    """Where a node with this data directory listens for control clients."""
    return Path(data_dir) / CONTROL_SOCKET


def _short(path: Path) -> tuple[str, int | None]:
    """A name ``bind``/``connect`` accept for ``path`` (Unix paths are short: 107 bytes).

    A long path is reached through an ``O_PATH`` descriptor of its directory
    (``/proc/self/fd/N/name``); the caller closes the descriptor.
    """
    if len(os.fsencode(path)) < 100:
        return str(path), None
    fd = os.open(path.parent, os.O_PATH | os.O_DIRECTORY)
    return f"/proc/self/fd/{fd}/{path.name}", fd


def unwrap_reply(reply: Message) -> Any:
    """The value ``address.call`` would return for a reply frame (errors raised)."""
    if isinstance(reply, ValueReply):
        return reply.value
    if isinstance(reply, TupleReply):
        return reply.items
    if isinstance(reply, IdsReply):
        return reply.ids
    if isinstance(reply, ErrorReply):
        raise reply.to_exception()
    return None if isinstance(reply, Ack) else reply


class ControlClient:
    """A connection to a running node's control socket (blocking; one call at a time).

    :raises ConfigError: no node listens there (not running, or another data directory).
    """

    def __init__(self, data_dir: Path | str, *, connect_timeout: float = 5.0) -> None:
        self.path = socket_path(Path(data_dir))
        deadline = time.monotonic() + connect_timeout
        pause = threading.Event()
        while True:  # a node that is starting opens its socket within moments
            try:
                self._sock = self._connect(connect_timeout)
                break
            except (FileNotFoundError, ConnectionRefusedError) as exc:
                if time.monotonic() >= deadline:
                    raise ConfigError(
                        f"no node answers on {str(self.path)!r} ({exc.strerror or exc}): is "
                        f"a node running with this data directory?"
                    ) from None
                pause.wait(0.05)
            except OSError as exc:
                raise ConfigError(
                    f"cannot connect to {str(self.path)!r}: {exc.strerror or exc}"
                ) from None

    def _connect(self, timeout: float) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        name, fd = _short(self.path)
        try:
            sock.connect(name)
        except OSError:
            sock.close()
            raise
        finally:
            if fd is not None:
                os.close(fd)
        return sock

    def ask(self, target: str, message: Message, timeout: float = 5.0) -> Message:
        """Send ``message`` to ``target`` and return the reply frame's message as it is."""
        return self._roundtrip(ControlCall(target, message, float(timeout), True), timeout)

    def call(self, target: str, request: Request[R], timeout: float = 5.0) -> R:
        """``address.call`` across the socket: the typed reply, or the error raised."""
        return cast(R, unwrap_reply(self.ask(target, request, timeout)))

    def pipeline(
        self, target: str, requests: Iterable[Request[R]], timeout: float = 5.0, depth: int = 4
    ) -> Iterator[R]:
        """:meth:`call` of each request, up to ``depth`` in flight; the replies in order.

        Every reply that comes back is yielded.  After an error reply (or an
        exception from ``requests``) no further request is sent: the requests
        already in flight are answered and their replies yielded, then the
        first error is raised.
        """
        self._sock.settimeout(timeout + 5.0)
        in_flight = 0
        failed: Exception | None = None
        pending = iter(requests)
        while True:
            if failed is None:
                try:
                    request = next(pending, None)
                except Exception as exc:  # the caller's error: answer what was sent first
                    failed, request = exc, None
                if request is not None:
                    self._send(ControlCall(target, request, float(timeout), True))
                    in_flight += 1
                    if in_flight < depth:
                        continue
            if not in_flight:
                break
            in_flight -= 1
            reply = self._receive()  # a broken stream raises at once
            try:
                value = cast(R, unwrap_reply(reply))
            except AuraError as exc:  # the node's error reply to this request
                failed = failed or exc
                continue
            yield value
        if failed is not None:
            raise failed

    def tell(self, target: str, message: Message, timeout: float = 5.0) -> None:
        """Queue ``message`` for ``target`` (returns once the node accepted it)."""
        unwrap_reply(self._roundtrip(ControlCall(target, message, float(timeout), False), timeout))

    def _roundtrip(self, call: ControlCall, timeout: float) -> Message:
        self._sock.settimeout(timeout + 5.0)
        self._send(call)
        return self._receive()

    def _receive(self) -> Message:
        header = self._read(4)
        length = int.from_bytes(header, "big")
        if not 0 < length <= MAX_CONTROL_FRAME:
            raise DecodeError(f"the node sent a frame of {length} bytes")
        return decode(self._read(length), max_size=MAX_CONTROL_FRAME)

    def _read(self, n: int) -> bytes:
        chunks: list[bytes] = []
        while n:
            data = self._sock.recv(min(n, 1 << 20))
            if not data:
                raise ConfigError(f"the node closed the control connection {str(self.path)!r}")
            chunks.append(data)
            n -= len(data)
        return b"".join(chunks)

    def _send(self, call: ControlCall) -> None:
        data = encode(call, max_size=MAX_CONTROL_FRAME)
        self._sock.sendall(len(data).to_bytes(4, "big") + data)

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> ControlClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
