"""The infrastructure cores (peers, retry, cache, connections, rate_limit): plain,
synchronous, single-threaded classes named after the Rust design, taking time and
randomness from injected effects; each is wrapped by an actor in :mod:`aura_sync.actors`.
The package re-exports the public names (``__all__``) of each core module.
"""

from aura_sync.infrastructure.cache import *  # noqa: F403
from aura_sync.infrastructure.capabilities import *  # noqa: F403
from aura_sync.infrastructure.connections import *  # noqa: F403
from aura_sync.infrastructure.peers import *  # noqa: F403
from aura_sync.infrastructure.rate_limit import *  # noqa: F403
from aura_sync.infrastructure.retry import *  # noqa: F403
