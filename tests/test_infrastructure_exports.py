"""The package ``aura_sync.infrastructure`` re-exports each core module's ``__all__``: the
seed's API and every name it exported before stay importable from it."""

from __future__ import annotations

import types

import aura_sync.infrastructure as infra

SEED_API = (  # the Rust design's ``pub use`` lines
    "PeerManager", "PeerInfo", "PeerDiscoveryConfig", "PeerStatus", "PeerMetadata",
    "RetryPolicy", "BackoffStrategy", "RetryContext", "RetryResult", "with_exponential_backoff",
    "CacheManager", "CacheEpochTracker", "CacheInvalidation", "ConnectionPool",
    "ConnectionMetadata", "PoolConfig", "RateLimiter", "RateLimit", "RateLimitConfig",
    "RateLimitResult",
)  # fmt: skip
EXPORTED_BEFORE = (
    "ALLOWED", "SYNC_REQUEST_DIGEST", "Allowed", "AuthorityKeyPair", "BackoffStrategy",
    "CacheEpochTracker", "CacheFloorSnapshot", "CacheInvalidation", "CacheManager",
    "CacheStatistics", "Connection", "ConnectionHandle", "ConnectionMetadata", "ConnectionPool",
    "ConnectionState", "Connector", "DenialReason", "Denied", "FlowBudget", "Jitter", "Outcome",
    "PeerDiscovery", "PeerDiscoveryConfig", "PeerInfo", "PeerManager", "PeerManagerStatistics",
    "PeerMetadata", "PeerStatus", "PeerTableSnapshot", "PoolConfig", "PoolStatistics",
    "RateLimit", "RateLimitConfig", "RateLimitResult", "RateLimiter", "RateLimiterSnapshot",
    "RateLimiterStatistics", "RetryBudget", "RetryContext", "RetryDecision", "RetryPolicy",
    "RetryResult", "StaticDiscovery", "generate_authority_keypair", "issue_capability_token",
    "verify_capability_token", "with_exponential_backoff",
)  # fmt: skip


def test_the_package_exports_the_seed_api_and_its_former_names() -> None:
    missing = [name for name in (*SEED_API, *EXPORTED_BEFORE) if not hasattr(infra, name)]
    assert missing == []


def test_the_submodules_are_not_shadowed_by_re_exported_names() -> None:
    for name in ("cache", "capabilities", "connections", "peers", "rate_limit", "retry"):
        assert isinstance(getattr(infra, name), types.ModuleType), name
