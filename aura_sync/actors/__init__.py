"""The actor layer: each infrastructure concern as a pykka actor behind a stable address.

Callers hold an :class:`ActorAddress` (valid across restarts, keeping queued
messages) and use ``address.call(request, timeout)`` for a request's typed
reply; writing an actor is documented in :mod:`aura_sync.actors.base`.
"""

from aura_sync.actors._faults import InjectedCrash
from aura_sync.actors.address import DEFAULT_ASK_TIMEOUT, ActorAddress, Link, spawn
from aura_sync.actors.base import (
    DEFERRED,
    AuraActor,
    LocalMessage,
    ReplySlot,
    current_actor,
    handles,
)
from aura_sync.actors.cache import CacheActor
from aura_sync.actors.peer_manager import PeerManagerActor
from aura_sync.actors.pool import PoolActor, PoolLease
from aura_sync.actors.rate_limiter import RateLimiterActor

__all__ = [
    "DEFAULT_ASK_TIMEOUT",
    "DEFERRED",
    "ActorAddress",
    "AuraActor",
    "CacheActor",
    "InjectedCrash",
    "Link",
    "LocalMessage",
    "PeerManagerActor",
    "PoolActor",
    "PoolLease",
    "RateLimiterActor",
    "ReplySlot",
    "current_actor",
    "handles",
    "spawn",
]
