"""aura-sync: sync infrastructure for peer-to-peer applications.

Peer discovery and selection, retry with backoff, epoch-based cache
invalidation, connection pooling and rate limiting, each a pykka actor reached
through typed immutable messages, under an OTP-style supervisor tree.

Layers (each imports only those above it): values (:mod:`aura_sync.ids`,
:mod:`aura_sync.errors`) -> effects (:mod:`aura_sync.effects`) -> cores
(:mod:`aura_sync.infrastructure`) -> messages (:mod:`aura_sync.messages`) ->
actors (:mod:`aura_sync.actors`) -> supervision (:mod:`aura_sync.supervisors`)
-> runtime (transport, protocols, node, cli).
"""

from aura_sync.ids import DeviceId, Epoch

__version__ = "0.1.0"

__all__ = ["DeviceId", "Epoch", "__version__"]
