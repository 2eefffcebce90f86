"""Checks of the node's fixed ports before start, and the reading of a listen failure.

Layer: runtime.
"""

from __future__ import annotations

import socket

from aura_sync.errors import TransportError
from aura_sync.node.config import NodeConfig

__all__ = ["listen_failure", "probe_ports"]


def probe_ports(config: NodeConfig) -> None:
    """Raise TransportError now if a fixed port the node needs is taken (before any start).

    A start failure deep in the tree is also caught (see :func:`listen_failure`);
    probing first keeps the operator's report to one line.
    """
    host, _, port = config.listen.rpartition(":")
    wanted = [("listen", host.strip("[]"), int(port))]
    if config.metrics_port:
        wanted.append(("metrics_port", config.metrics_listen, config.metrics_port))
    for key, host, number in wanted:
        if number == 0:
            continue
        try:
            infos = socket.getaddrinfo(host, number, type=socket.SOCK_STREAM)
            with socket.socket(infos[0][0], socket.SOCK_STREAM) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                probe.bind(infos[0][4])
        except OSError as exc:
            where = f"[{host}]:{number}" if ":" in host else f"{host}:{number}"
            raise TransportError(
                f"cannot listen on {where!r} (config key {key}): {exc.strerror or exc}"
            ) from None


def listen_failure(message: str) -> str | None:
    """The transport's own words if a start failure is its listen failure, else None."""
    marker = "raised TransportError: "
    at = message.find(marker)
    if at < 0:
        return None
    return message[at + len(marker) :].removesuffix(")")
