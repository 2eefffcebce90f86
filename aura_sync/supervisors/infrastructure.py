"""The infrastructure supervisor: cache, rate limiter, peer manager and pool, ONE_FOR_ONE.

They start in that order and stop in reverse (no ``pool`` without a connector).
None depends on a sibling: none holds another's address, each keeps what must
survive a crash in its own stash, so a crash restarts that child only (a
rate-limiter crash leaves the pool's connections open).  The connector is the
transport's, supervised by the node above this tree.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final, TypedDict, Unpack

from aura_sync._checks import check_bool, check_int
from aura_sync.actors.address import ActorAddress
from aura_sync.actors.cache import CacheActor
from aura_sync.actors.peer_manager import PeerManagerActor
from aura_sync.actors.pool import PoolActor
from aura_sync.actors.rate_limiter import DEFAULT_DROP_IDLE_INTERVAL, RateLimiterActor
from aura_sync.effects import Clock, Rng, Scheduler, check_seconds
from aura_sync.errors import NotFound, SupervisorGaveUp, SupervisorStopped, WrongType
from aura_sync.infrastructure.cache import DEFAULT_MAX_KEYS, DEFAULT_MAX_VALUES
from aura_sync.infrastructure.connections import Connector, PoolConfig
from aura_sync.infrastructure.peers import PeerDiscovery, PeerDiscoveryConfig
from aura_sync.infrastructure.rate_limit import RateLimitConfig
from aura_sync.supervisors.spec import ONE_FOR_ONE, ChildContext, ChildSpec
from aura_sync.supervisors.supervisor import Supervisor

CACHE: Final = "cache"
RATE_LIMITER: Final = "rate_limiter"
PEER_MANAGER: Final = "peer_manager"
POOL: Final = "pool"
CHILD_IDS: Final = (CACHE, RATE_LIMITER, PEER_MANAGER, POOL)
"""The child ids, in start order."""


@dataclass(frozen=True, slots=True)
class InfrastructureConfig:
    """Configuration of the four infrastructure actors and of their supervisor: the cores'
    configs, ``cache_max_keys`` (>= 1) with exact floors, ``cache_max_values`` (>= 0; 0:
    no store), seconds between drops of idle buckets (> 0), the restart-intensity
    ``period`` (> 0) and ``intensity`` (>= 0), ``shutdown`` per child (>= 0).  Raises
    WrongType / InvalidArgument naming the field and value."""

    rate_limit: RateLimitConfig = field(default_factory=RateLimitConfig)
    pool: PoolConfig = field(default_factory=PoolConfig)
    peers: PeerDiscoveryConfig = field(default_factory=PeerDiscoveryConfig)
    cache_max_keys: int = DEFAULT_MAX_KEYS
    cache_max_values: int = DEFAULT_MAX_VALUES
    drop_idle_interval: float = DEFAULT_DROP_IDLE_INTERVAL
    intensity: int = 5
    period: float = 5.0
    shutdown: float = 5.0

    def __post_init__(self) -> None:
        configs = {"rate_limit": RateLimitConfig, "pool": PoolConfig, "peers": PeerDiscoveryConfig}
        for name, cls in configs.items():
            value = getattr(self, name)
            if type(value) is not cls:
                raise WrongType(f"{name} must be a {cls.__name__}, got {value!r}")
        check_int(self.cache_max_keys, "cache_max_keys", minimum=1)
        check_int(self.cache_max_values, "cache_max_values", minimum=0)
        check_int(self.intensity, "intensity", minimum=0)
        for name in ("drop_idle_interval", "period", "shutdown"):
            seconds = check_seconds(getattr(self, name), name, allow_zero=name == "shutdown")
            object.__setattr__(self, name, seconds)


class InfrastructureOptions(TypedDict, total=False):
    """Keyword options of :func:`infrastructure_supervisor` and ``Infrastructure.start``."""

    connector: Connector | None
    discovery: PeerDiscovery | None
    clock: Clock | None
    scheduler: Scheduler | None
    rng: Rng | None
    fault_injection: bool
    on_give_up: Callable[[SupervisorGaveUp], None] | None
    name: str


def infrastructure_supervisor(
    config: InfrastructureConfig | None = None,
    *,
    connector: Connector | None = None,
    discovery: PeerDiscovery | None = None,
    clock: Clock | None = None,
    scheduler: Scheduler | None = None,
    rng: Rng | None = None,
    fault_injection: bool = False,
    on_give_up: Callable[[SupervisorGaveUp], None] | None = None,
    name: str = "infrastructure",
) -> Supervisor:
    """The (not yet started) infrastructure supervisor: no pool child without a
    ``connector``; ``discovery`` is the peer manager's; with ``fault_injection`` the
    children honour ``InjectCrash``; child addresses are ``name/child_id``.  Start it, or
    return it from a parent's ``ChildSpec.start`` with a ``shutdown`` >= 4 x config.shutdown."""
    cfg = InfrastructureConfig() if config is None else config
    if type(cfg) is not InfrastructureConfig:
        raise WrongType(f"config must be an InfrastructureConfig, got {type(cfg).__name__} {cfg!r}")
    if connector is not None and not callable(getattr(connector, "connect", None)):
        raise WrongType(f"connector must have a connect(peer_id) method, got {connector!r}")
    if discovery is not None and not callable(getattr(discovery, "discover", None)):
        raise WrongType(f"discovery must have a discover(timeout) method, got {discovery!r}")
    check_bool(fault_injection, "fault_injection")
    faults = {"fault_injection": fault_injection}

    def effects(ctx: ChildContext) -> dict[str, Any]:
        return {"clock": ctx.clock, "scheduler": ctx.scheduler, "stash": ctx.stash, **faults}

    factories: dict[str, Callable[[ChildContext], Any]] = {
        CACHE: lambda ctx: CacheActor(
            cfg.cache_max_keys, max_values=cfg.cache_max_values, stash=ctx.stash, **faults
        ),
        RATE_LIMITER: lambda ctx: RateLimiterActor(
            cfg.rate_limit, drop_idle_interval=cfg.drop_idle_interval, **effects(ctx)
        ),
        PEER_MANAGER: lambda ctx: PeerManagerActor(cfg.peers, discovery=discovery, **effects(ctx)),
    }
    if connector is not None:  # else no pool child
        factories[POOL] = lambda ctx: PoolActor(cfg.pool, connector, **effects(ctx))
    specs = [
        ChildSpec(child_id, start, shutdown=cfg.shutdown) for child_id, start in factories.items()
    ]
    return Supervisor(
        specs,
        strategy=ONE_FOR_ONE,
        intensity=cfg.intensity,
        period=cfg.period,
        clock=clock,
        scheduler=scheduler,
        rng=rng,
        on_give_up=on_give_up,
        name=name,
    )


class Infrastructure:
    """A running infrastructure supervisor and its children's addresses, stable across
    restarts: ``cache``, ``rate_limiter``, ``peers``, ``pool`` (``infra.peers.call(
    GetPeer(p))``).  Wrap a running (say nested) one with ``Infrastructure(sup)``
    (never blocks; SupervisorStopped if it is not running), or :meth:`start` one."""

    __slots__ = ("_pool", "cache", "peers", "rate_limiter", "supervisor")

    def __init__(self, supervisor: Supervisor) -> None:
        if not isinstance(supervisor, Supervisor):
            raise WrongType(f"supervisor must be a Supervisor, got {supervisor!r}")
        if not supervisor.is_alive():
            raise SupervisorStopped(f"supervisor {supervisor.name} is not running")
        address = supervisor.child_address  # the stable addresses, read without an ask
        self.supervisor = supervisor
        self.cache = address(CACHE)
        self.rate_limiter = address(RATE_LIMITER)
        self.peers: ActorAddress = address(PEER_MANAGER)
        self._pool: ActorAddress | None = None
        with contextlib.suppress(NotFound):  # no pool child without a connector
            self._pool = address(POOL)

    @property
    def pool(self) -> ActorAddress:
        """The pool's address; NotFound if the supervisor was built without a connector."""
        if self._pool is None:
            raise NotFound(f"{self.supervisor.name} has no pool: it was built without a connector")
        return self._pool

    @classmethod
    def start(
        cls,
        config: InfrastructureConfig | None = None,
        *,
        timeout: float = 30.0,
        **options: Unpack[InfrastructureOptions],
    ) -> Infrastructure:
        """Build (:func:`infrastructure_supervisor`, same options) and start the supervisor,
        waiting up to ``timeout`` seconds (``StartFailed``); ``with`` stops it."""
        return cls._wrap(infrastructure_supervisor(config, **options).start(timeout))

    @classmethod
    async def start_async(
        cls,
        config: InfrastructureConfig | None = None,
        *,
        timeout: float = 30.0,
        **options: Unpack[InfrastructureOptions],
    ) -> Infrastructure:
        """:meth:`start` for asyncio: awaits the children's start without blocking the loop."""
        return cls._wrap(await infrastructure_supervisor(config, **options).start_async(timeout))

    @classmethod
    def _wrap(cls, supervisor: Supervisor) -> Infrastructure:
        try:
            return cls(supervisor)
        except BaseException:
            supervisor.stop()  # returns at once: the only failure is a supervisor that ended
            raise

    def stop(self, timeout: float = 30.0) -> None:
        """Stop a root supervisor, children in reverse order; idempotent."""
        self.supervisor.stop(timeout)

    def __enter__(self) -> Infrastructure:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<Infrastructure {self.supervisor!r}>"
