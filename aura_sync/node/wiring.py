"""The node's supervision tree and the glue between the transport and the actors.

Tree (``root`` is REST_FOR_ONE: a restarted transport restarts what depends on it)::

    root
    |-- transport        TransportActor: owns the listener (re-listens on the same port)
    |-- infrastructure   cache, rate_limiter, peer_manager, pool
    `-- protocols        ONE_FOR_ONE: anti_entropy (the journal sync protocol actor)

The transport calls its handlers on its own thread; they only ``tell`` the
anti-entropy actor (:class:`EventRouter`, which buffers the events that
arrive before that actor is up).  The pool dials through one
:class:`~aura_sync.transport.base.TransportConnector`, resolving a peer's
address from the peer table the anti-entropy actor last read.

Layer: runtime.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aura_sync.actors.address import ActorAddress
from aura_sync.actors.base import AuraActor
from aura_sync.effects import Clock, Rng, Scheduler
from aura_sync.errors import NotFound, StartFailed, SupervisorGaveUp
from aura_sync.infrastructure.peers import StaticDiscovery
from aura_sync.node.config import NodeConfig
from aura_sync.protocols.anti_entropy import (
    AntiEntropyActor,
    AntiEntropyConfig,
    InfraAddresses,
    PeerTableView,
    SyncObserver,
    TransportEventMessage,
)
from aura_sync.protocols.journal import Journal
from aura_sync.supervisors import ChildContext, ChildSpec, Supervisor
from aura_sync.supervisors.spec import ONE_FOR_ONE, REST_FOR_ONE
from aura_sync.transport.base import Listener, Transport, TransportConnector

__all__ = ["EventRouter", "TransportActor", "Tree", "build_tree", "infra_addresses"]

INFRA_CHILDREN = ("cache", "rate_limiter", "peer_manager", "pool")


class EventRouter:
    """Forwards transport events to the anti-entropy actor; buffers them until it is up."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._target: ActorAddress | None = None
        self._early: list[Any] = []
        self._closed = False

    def attach(self, target: ActorAddress) -> None:
        """Deliver to ``target`` from now on (the buffered events first)."""
        with self._lock:
            self._target = target
            early, self._early = self._early, []
        for event in early:
            target.tell(TransportEventMessage(event))

    def detach(self) -> None:
        """Drop events from now on (the node is stopping)."""
        with self._lock:
            self._target = None
            self._early = []
            self._closed = True

    def __call__(self, event: Any) -> None:
        with self._lock:
            if self._closed:
                return
            target = self._target
            if target is None:
                self._early.append(event)
                return
        target.tell(TransportEventMessage(event))


class TransportActor(AuraActor):
    """Owns the node's listener: listens in ``on_start``, closes it on stop or crash.

    A restarted incarnation listens again on the port the first one bound
    (kept in the stash), so peers keep reaching the node.
    """

    def __init__(
        self,
        transport: Transport,
        address: str,
        handler: Callable[[Any], None],
        stash: dict[str, Any],
        on_listening: Callable[[str], None],
    ) -> None:
        super().__init__()
        self._transport = transport
        self._wanted = address
        self._handler = handler
        self._stash = stash
        self._on_listening = on_listening
        self._listener: Listener | None = None

    def on_start(self) -> None:
        """Listen (on the previously bound address after a restart)."""
        address = self._stash.get("bound", self._wanted)
        self._listener = self._transport.listen(address, self._handler)
        self._stash["bound"] = self._listener.address
        self._on_listening(self._listener.address)

    def on_stop(self) -> None:
        """Close the listener (established connections are the pool's business)."""
        if self._listener is not None:
            self._listener.close()

    def on_crash(self, exc: BaseException) -> None:
        """Close the listener of the dead incarnation."""
        self.on_stop()


class _RoutedAntiEntropy(AntiEntropyActor):
    """The anti-entropy actor, attached to the node's event router once it runs."""

    def __init__(self, *args: Any, router: EventRouter, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._router = router

    def on_start(self) -> None:
        """Start the protocol, then receive the transport's events (buffered until now)."""
        super().on_start()
        self._router.attach(self.address)


def infra_addresses(infra: Supervisor) -> dict[str, ActorAddress]:
    """The four infrastructure actors' (stable) addresses, without blocking.

    Usable inside a child factory (a supervisor's thread), where a blocking
    ``address_of`` ask is not allowed: the addresses live in the
    supervisor's persistent child slots.  Raises
    :class:`~aura_sync.errors.StartFailed` if one is missing.
    """
    out: dict[str, ActorAddress] = {}
    for name in INFRA_CHILDREN:
        try:
            out[name] = infra.child_address(name)
        except NotFound:
            raise StartFailed(f"the infrastructure supervisor has no {name!r} child") from None
    return out


@dataclass(frozen=True, slots=True)
class Tree:
    """The built (not yet started) tree: the root and its two nested supervisors."""

    root: Supervisor
    infra: Supervisor
    protocols: Supervisor


def build_tree(
    cfg: NodeConfig,
    *,
    transport: Transport,
    journal: Journal,
    router: EventRouter,
    token: bytes | None,
    faults: bool,
    on_listening: Callable[[str], None],
    on_give_up: Callable[[SupervisorGaveUp], None],
    effects: tuple[Clock, Scheduler, Rng],
    observer: SyncObserver | None = None,
) -> Tree:
    """Build the node's tree (see the module docstring); nothing is started yet."""
    from aura_sync.supervisors.infrastructure import InfrastructureConfig, infrastructure_supervisor

    table = PeerTableView()
    me = journal.author
    infra = infrastructure_supervisor(
        InfrastructureConfig(
            rate_limit=cfg.rate_limit,
            pool=cfg.pool,
            peers=cfg.peers,
            cache_max_keys=cfg.cache_max_keys,
            shutdown=cfg.shutdown_timeout / 4,
        ),
        connector=TransportConnector(transport, table.resolve, router),
        discovery=StaticDiscovery(
            [(p.device_id, p.address) for p in cfg.bootstrap if p.device_id != me]
        ),
        fault_injection=faults,
        name="infrastructure",
    )
    ae_config = AntiEntropyConfig(
        sync_interval=cfg.sync_interval,
        peers_per_round=cfg.peers_per_round,
        batch_size=cfg.batch_size,
        request_timeout=cfg.request_timeout,
        require_capability=cfg.capabilities_required,
        refuse_sync=cfg.refuse_sync,
        token=token,
    )

    def start_anti_entropy(ctx: ChildContext) -> AuraActor:
        found = infra_addresses(infra)
        return _RoutedAntiEntropy(
            ae_config,
            journal,
            InfraAddresses(found["peer_manager"], found["rate_limiter"], found["pool"]),
            router=router,
            table=table,
            clock=ctx.clock,
            scheduler=ctx.scheduler,
            rng=ctx.rng,
            stash=ctx.stash,
            fault_injection=faults,
            observer=observer,
        )

    protocols = Supervisor(
        [ChildSpec("anti_entropy", start=start_anti_entropy, shutdown=cfg.shutdown_timeout / 2)],
        strategy=ONE_FOR_ONE,
        intensity=5,
        period=10.0,
        name="protocols",
    )
    clock, scheduler, rng = effects
    root = Supervisor(
        [
            ChildSpec(
                "transport",
                start=lambda ctx: TransportActor(
                    transport, cfg.listen, router, ctx.stash, on_listening
                ),
            ),
            ChildSpec("infrastructure", start=lambda ctx: infra, shutdown=cfg.shutdown_timeout),
            ChildSpec("protocols", start=lambda ctx: protocols, shutdown=cfg.shutdown_timeout),
        ],
        strategy=REST_FOR_ONE,
        intensity=3,
        period=10.0,
        clock=clock,
        scheduler=scheduler,
        rng=rng,
        on_give_up=on_give_up,
        name="root",
    )
    return Tree(root, infra, protocols)
