"""The infrastructure supervisor: cache, rate limiter, peer manager and pool, ONE_FOR_ONE.

The children start in that order and stop in reverse (no ``pool`` without a
connector).  None depends on a sibling: none holds another's address, and each
keeps what must survive a crash in its own stash, so a crash restarts that
child only (a rate-limiter crash leaves the pool's connections open).  The
pool's connector is the transport's, supervised by the node above this tree.
:class:`Infrastructure` starts or wraps the supervisor and exposes the
children's addresses, valid across restarts.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final, TypedDict, Unpack

from aura_sync._checks import check_bool, check_int
from aura_sync.actors.address import DEFAULT_ASK_TIMEOUT, ActorAddress
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

__all__ = [
    "CACHE",
    "CHILD_IDS",
    "PEER_MANAGER",
    "POOL",
    "RATE_LIMITER",
    "Infrastructure",
    "InfrastructureConfig",
    "infrastructure_supervisor",
]

CACHE: Final = "cache"
RATE_LIMITER: Final = "rate_limiter"
PEER_MANAGER: Final = "peer_manager"
POOL: Final = "pool"
CHILD_IDS: Final = (CACHE, RATE_LIMITER, PEER_MANAGER, POOL)
"""The child ids, in start order."""


def _check_type(value: object, cls: type, name: str) -> None:
    if type(value) is not cls:
        raise WrongType(f"{name} must be a {cls.__name__}, got {type(value).__name__} {value!r}")


@dataclass(frozen=True, slots=True)
class InfrastructureConfig:
    """Configuration of the four infrastructure actors and of their supervisor.

    ``rate_limit``, ``pool``, ``peers``: the cores' configs.  ``cache_max_keys``
    (>= 1; 1024): keys whose floors are tracked exactly; ``cache_max_values``
    (>= 0, 0 disables the store; 1024).  Seconds: ``drop_idle_interval`` (> 0;
    60) between drops of idle rate-limit buckets, ``period`` (> 0; 5) of the
    restart-intensity window, ``shutdown`` (>= 0; 5) per child, ``ask_timeout``
    (> 0; 5).  ``intensity`` (>= 0; 5): restarts within ``period`` before the
    supervisor gives up.  Raises :class:`~aura_sync.errors.WrongType` /
    :class:`~aura_sync.errors.InvalidArgument` naming the field and value.
    """

    rate_limit: RateLimitConfig = field(default_factory=RateLimitConfig)
    pool: PoolConfig = field(default_factory=PoolConfig)
    peers: PeerDiscoveryConfig = field(default_factory=PeerDiscoveryConfig)
    cache_max_keys: int = DEFAULT_MAX_KEYS
    cache_max_values: int = DEFAULT_MAX_VALUES
    drop_idle_interval: float = DEFAULT_DROP_IDLE_INTERVAL
    intensity: int = 5
    period: float = 5.0
    shutdown: float = 5.0
    ask_timeout: float = DEFAULT_ASK_TIMEOUT

    def __post_init__(self) -> None:
        _check_type(self.rate_limit, RateLimitConfig, "rate_limit")
        _check_type(self.pool, PoolConfig, "pool")
        _check_type(self.peers, PeerDiscoveryConfig, "peers")
        check_int(self.cache_max_keys, "cache_max_keys", minimum=1)
        check_int(self.cache_max_values, "cache_max_values", minimum=0)
        check_int(self.intensity, "intensity", minimum=0)
        setf = object.__setattr__
        setf(
            self,
            "drop_idle_interval",
            check_seconds(self.drop_idle_interval, "drop_idle_interval", allow_zero=False),
        )
        setf(self, "period", check_seconds(self.period, "period", allow_zero=False))
        setf(self, "shutdown", check_seconds(self.shutdown, "shutdown"))
        setf(self, "ask_timeout", check_seconds(self.ask_timeout, "ask_timeout", allow_zero=False))


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
    """The (not yet started) infrastructure supervisor.

    ``connector``: the pool's non-blocking :class:`Connector` (None: no pool);
    ``discovery``: the peer manager's optional non-blocking discovery;
    ``clock``/``scheduler``/``rng``: effects (default: the system ones, or the
    parent's when nested); ``fault_injection``: children honour ``InjectCrash``;
    ``on_give_up``: called when a root supervisor exceeds its intensity;
    ``name``: child addresses are ``name/child_id``.  Start it with ``.start()``
    or return it from a parent's ``ChildSpec.start`` (give that spec a
    ``shutdown`` of at least ``4 * config.shutdown``).  Raises ``WrongType`` /
    ``InvalidArgument``.
    """
    if config is None:
        config = InfrastructureConfig()
    elif type(config) is not InfrastructureConfig:
        raise WrongType(
            f"config must be an InfrastructureConfig, got {type(config).__name__} {config!r}"
        )
    if connector is not None and not callable(getattr(connector, "connect", None)):
        raise WrongType(
            "connector must have a connect(peer_id) method, got "
            f"{type(connector).__name__} {connector!r}"
        )
    if discovery is not None and not callable(getattr(discovery, "discover", None)):
        raise WrongType(
            "discovery must have a discover(timeout) method, got "
            f"{type(discovery).__name__} {discovery!r}"
        )
    check_bool(fault_injection, "fault_injection")
    cfg = config

    def effects(ctx: ChildContext) -> dict[str, Any]:
        return {
            "clock": ctx.clock,
            "scheduler": ctx.scheduler,
            "stash": ctx.stash,
            "fault_injection": fault_injection,
        }

    factories: dict[str, Callable[[ChildContext], Any]] = {
        CACHE: lambda ctx: CacheActor(
            cfg.cache_max_keys,
            max_values=cfg.cache_max_values,
            stash=ctx.stash,
            fault_injection=fault_injection,
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
    """A started infrastructure supervisor and its children's addresses.

    ``supervisor``; ``cache``, ``rate_limiter``, ``peers`` and ``pool`` are
    addresses, stable across restarts (``infra.peers.call(GetPeer(p))``).
    Built by :meth:`start` (stops on ``with``-exit), :meth:`start_async` or
    :meth:`attach`.
    """

    __slots__ = ("_pool", "cache", "peers", "rate_limiter", "supervisor")

    def __init__(self, supervisor: Supervisor, config: InfrastructureConfig | None = None) -> None:
        """Wrap a *running* infrastructure supervisor (see :meth:`attach`); never blocks."""
        if not isinstance(supervisor, Supervisor):
            raise WrongType(
                f"supervisor must be a Supervisor, got {type(supervisor).__name__} {supervisor!r}"
            )
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
        pool = self._pool
        if pool is None:
            raise NotFound(f"{self.supervisor.name} has no pool: it was built without a connector")
        return pool

    @classmethod
    def attach(
        cls, supervisor: Supervisor, config: InfrastructureConfig | None = None
    ) -> Infrastructure:
        """The handle of a running (e.g. nested) infrastructure supervisor.

        ``config`` is accepted for compatibility and unused.  Raises
        ``SupervisorStopped`` if it is not running.
        """
        return cls(supervisor, config)

    @classmethod
    def start(
        cls,
        config: InfrastructureConfig | None = None,
        *,
        timeout: float = 30.0,
        **options: Unpack[InfrastructureOptions],
    ) -> Infrastructure:
        """Build (:func:`infrastructure_supervisor`, same options) and start the supervisor.

        ``timeout``: seconds to wait for the children to start.  Raises
        ``StartFailed`` if a child fails to start, and the builder's errors.
        """
        config = config or InfrastructureConfig()
        supervisor = infrastructure_supervisor(config, **options).start(timeout)
        return cls._wrap(supervisor, config)

    @classmethod
    async def start_async(
        cls,
        config: InfrastructureConfig | None = None,
        *,
        timeout: float = 30.0,
        **options: Unpack[InfrastructureOptions],
    ) -> Infrastructure:
        """:meth:`start` for asyncio: awaits the children's start without blocking the loop."""
        config = config or InfrastructureConfig()
        supervisor = await infrastructure_supervisor(config, **options).start_async(timeout)
        return cls._wrap(supervisor, config)

    @classmethod
    def _wrap(cls, supervisor: Supervisor, config: InfrastructureConfig) -> Infrastructure:
        try:
            return cls(supervisor, config)
        except BaseException:
            supervisor.stop()  # returns at once: the only failure is a supervisor that ended
            raise

    def stop(self, timeout: float = 30.0) -> None:
        """Stop a root supervisor, children in reverse order; idempotent.

        A nested one is stopped by its parent (``terminate_child``).
        """
        self.supervisor.stop(timeout)

    def __enter__(self) -> Infrastructure:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<Infrastructure {self.supervisor!r}>"
