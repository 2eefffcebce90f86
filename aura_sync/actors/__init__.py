"""The actor layer: each infrastructure concern as a pykka actor.

An actor is reached only through typed, immutable messages sent to its
:class:`ActorAddress` (``tell``, ``ask`` with a timeout, ``ask_async``); the
address stays valid across restarts and keeps the messages queued for it.
``address.call(request, timeout)`` returns a request's typed reply and raises
the :mod:`aura_sync.errors` exception of an error reply.  How to write an actor
is documented in :mod:`aura_sync.actors.base`.

Layer: actors (imports messages, cores, effects, values).
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
