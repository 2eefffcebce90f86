"""A raw TLS peer, outside any transport (for sending malformed frames), and a factory of
real TCP transports that closes them all after a test."""

from __future__ import annotations

import contextlib
import select
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

from OpenSSL import SSL

from aura_sync.identity import NodeIdentity
from aura_sync.ids import DeviceId
from aura_sync.transport import TcpTransport, TransportConfig, tls


def tls_retry(sock: socket.socket, op: Callable[[], Any], timeout: float = 5.0) -> Any:
    """Run a pyOpenSSL call on a non-blocking socket, waiting out WantRead/WantWrite.

    Raises TimeoutError after ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    poller = select.poll()  # (not select.select: any descriptor number, even above 1023)
    poller.register(sock, select.POLLIN | select.POLLOUT)
    while True:
        try:
            return op()
        except (SSL.WantReadError, SSL.WantWriteError):
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("raw TLS peer timed out") from None
            poller.poll(min(left, 0.05) * 1000)


def raw_tls_client(
    identity: NodeIdentity, address: str, expected: DeviceId, source: str | None = None
) -> tuple[socket.socket, SSL.Connection]:
    """A mutual-TLS connection to ``address`` ("host:port") expecting ``expected``'s key
    (``source``: the local host to connect from, e.g. another loopback address)."""
    host, port = address.rsplit(":", 1)
    bind = None if source is None else (source, 0)
    sock = socket.create_connection((host, int(port)), timeout=5, source_address=bind)
    sock.setblocking(False)
    conn = SSL.Connection(tls.client_context(identity), sock)
    tls.attach_check(conn, expected)
    conn.set_connect_state()
    tls_retry(sock, conn.do_handshake)
    return sock, conn


@contextlib.contextmanager
def transports(default: TransportConfig) -> Iterator[Callable[..., TcpTransport]]:
    """A factory of :class:`TcpTransport` (a new identity and ``default`` config unless
    given); every transport it made is closed on exit."""
    made: list[TcpTransport] = []

    def factory(identity: NodeIdentity | None = None, **kwargs: Any) -> TcpTransport:
        transport = TcpTransport(
            identity or NodeIdentity.generate(), kwargs.pop("config", default), **kwargs
        )
        made.append(transport)
        return transport

    try:
        yield factory
    finally:
        for transport in made:
            transport.close()
