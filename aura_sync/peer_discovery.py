"""Deprecated: the Phase-1 peer discovery name, kept for migration.

``aura_sync.peer_discovery.PeerDiscoveryService`` is an alias of
:class:`aura_sync.infrastructure.peers.PeerManager`; accessing it emits a
:class:`DeprecationWarning` naming the replacement.  Migrate::

    # old
    from aura_sync.peer_discovery import PeerDiscoveryService
    # new
    from aura_sync.infrastructure.peers import PeerDiscoveryConfig, PeerManager

Layer: cores (a re-export of one).
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

from aura_sync.infrastructure.peers import PeerManager

__all__ = ["PeerDiscoveryService"]

_REPLACEMENTS = {"PeerDiscoveryService": "aura_sync.infrastructure.peers.PeerManager"}

if TYPE_CHECKING:
    PeerDiscoveryService = PeerManager


def __getattr__(name: str) -> type[PeerManager]:
    replacement = _REPLACEMENTS.get(name)
    if replacement is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    warnings.warn(
        f"aura_sync.peer_discovery.{name} is deprecated; use {replacement} instead",
        DeprecationWarning,
        stacklevel=2,
    )
    return PeerManager
