"""The five infrastructure concerns as plain, synchronous, single-threaded cores.

Each core takes its time (and randomness) from injected effects, has no
threads, sockets or sleeping, and is wrapped by an actor in
:mod:`aura_sync.actors`.  The names follow the Rust design
(``aura-sync::infrastructure``):

- :mod:`~aura_sync.infrastructure.peers` -- ``PeerManager``, ``PeerInfo``,
  ``PeerDiscoveryConfig``, ``PeerStatus``, ``PeerMetadata``
- :mod:`~aura_sync.infrastructure.retry` -- ``RetryPolicy``, ``BackoffStrategy``,
  ``RetryContext``, ``RetryResult``, ``with_exponential_backoff``
- :mod:`~aura_sync.infrastructure.cache` -- ``CacheManager``, ``CacheEpochTracker``,
  ``CacheInvalidation``
- :mod:`~aura_sync.infrastructure.connections` -- ``ConnectionPool``,
  ``ConnectionMetadata``, ``PoolConfig``
- :mod:`~aura_sync.infrastructure.rate_limit` -- ``RateLimiter``, ``RateLimit``,
  ``RateLimitConfig``, ``RateLimitResult``

Layer: cores.  Imports values and effects only.
"""

from aura_sync.infrastructure.cache import (
    CacheEpochTracker,
    CacheFloorSnapshot,
    CacheInvalidation,
    CacheManager,
    CacheStatistics,
)
from aura_sync.infrastructure.capabilities import (
    SYNC_REQUEST_DIGEST,
    AuthorityKeyPair,
    generate_authority_keypair,
    issue_capability_token,
    verify_capability_token,
)
from aura_sync.infrastructure.connections import (
    Connection,
    ConnectionHandle,
    ConnectionMetadata,
    ConnectionPool,
    ConnectionState,
    Connector,
    PoolConfig,
    PoolStatistics,
)
from aura_sync.infrastructure.peers import (
    PeerDiscovery,
    PeerDiscoveryConfig,
    PeerInfo,
    PeerManager,
    PeerManagerStatistics,
    PeerMetadata,
    PeerStatus,
    PeerTableSnapshot,
    StaticDiscovery,
)
from aura_sync.infrastructure.rate_limit import (
    ALLOWED,
    Allowed,
    DenialReason,
    Denied,
    FlowBudget,
    Outcome,
    RateLimit,
    RateLimitConfig,
    RateLimiter,
    RateLimiterSnapshot,
    RateLimiterStatistics,
    RateLimitResult,
)
from aura_sync.infrastructure.retry import (
    BackoffStrategy,
    Jitter,
    RetryBudget,
    RetryContext,
    RetryDecision,
    RetryPolicy,
    RetryResult,
    with_exponential_backoff,
    with_exponential_backoff_async,
)

__all__ = [
    "ALLOWED",
    "SYNC_REQUEST_DIGEST",
    "Allowed",
    "AuthorityKeyPair",
    "BackoffStrategy",
    "CacheEpochTracker",
    "CacheFloorSnapshot",
    "CacheInvalidation",
    "CacheManager",
    "CacheStatistics",
    "Connection",
    "ConnectionHandle",
    "ConnectionMetadata",
    "ConnectionPool",
    "ConnectionState",
    "Connector",
    "DenialReason",
    "Denied",
    "FlowBudget",
    "Jitter",
    "Outcome",
    "PeerDiscovery",
    "PeerDiscoveryConfig",
    "PeerInfo",
    "PeerManager",
    "PeerManagerStatistics",
    "PeerMetadata",
    "PeerStatus",
    "PeerTableSnapshot",
    "PoolConfig",
    "PoolStatistics",
    "RateLimit",
    "RateLimitConfig",
    "RateLimitResult",
    "RateLimiter",
    "RateLimiterSnapshot",
    "RateLimiterStatistics",
    "RetryBudget",
    "RetryContext",
    "RetryDecision",
    "RetryPolicy",
    "RetryResult",
    "StaticDiscovery",
    "generate_authority_keypair",
    "issue_capability_token",
    "verify_capability_token",
    "with_exponential_backoff",
    "with_exponential_backoff_async",
]
