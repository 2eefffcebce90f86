"""The node's supervision tree and the glue between the transport and the actors.

Tree (``root`` is REST_FOR_ONE: a restarted transport restarts what depends on it)::

    root
    |-- transport        TransportActor: owns the listener (re-listens on the same port)
    |-- infrastructure   cache, rate_limiter, peer_manager, pool
    `-- protocols        ONE_FOR_ONE: anti_entropy, then the plug-ins (ProtocolSpec)

The transport calls its handlers on its own thread; they only ``tell`` the
protocol actor that declared the message's type
(:class:`~aura_sync.protocols.plugin.EventRouter`, which buffers the events
that arrive before that actor is up, and answers undeclared requests with
an error reply).  The pool dials through one
:class:`~aura_sync.transport.base.TransportConnector`, resolving a peer's
address from the peer table the anti-entropy actor last read; the transport
trims the connections of the least trusted peers first, never those of a peer
this node dialed itself (a peer it selected: protected).  A peer banned for its
behaviour is refused by the transport at accept (its host, before TLS) and by
the router right after TLS (its identity).

Layer: runtime.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from aura_sync.actors.address import ActorAddress
from aura_sync.actors.base import AuraActor
from aura_sync.effects import Clock, Rng, Scheduler
from aura_sync.errors import NotFound, StartFailed, SupervisorGaveUp, WrongType
from aura_sync.ids import DeviceId
from aura_sync.infrastructure.peers import StaticDiscovery
from aura_sync.node.config import NodeConfig
from aura_sync.protocols import anti_entropy
from aura_sync.protocols.anti_entropy import SyncObserver
from aura_sync.protocols.journal import Journal
from aura_sync.protocols.plugin import (
    EventRouter,
    PeerTableView,
    ProtocolContext,
    ProtocolSpec,
    Routes,
    TransportHandle,
    resolve_spec,
)
from aura_sync.supervisors import ChildContext, ChildSpec, Supervisor
from aura_sync.supervisors.spec import ONE_FOR_ONE, REST_FOR_ONE
from aura_sync.transport.base import Connection, Listener, Transport, TransportConnector

__all__ = [
    "EventRouter",
    "TransportActor",
    "Tree",
    "build_tree",
    "infra_addresses",
    "protocol_specs",
]

INFRA_CHILDREN = ("cache", "rate_limiter", "peer_manager", "pool")
_RESERVED_IDS = frozenset({*INFRA_CHILDREN, "transport", "infrastructure", "protocols", "root"})


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


class _OwnDials(TransportConnector):
    """The pool's connector: a peer this node dials (one it selected) is protected from
    the transport's watermark trimming (``protect``, where the transport has it)."""

    def __init__(self, transport: Transport, *args: Any) -> None:
        super().__init__(transport, *args)
        self._protect: Callable[[DeviceId], None] | None = getattr(transport, "protect", None)

    def connect(self, peer_id: DeviceId) -> Connection:
        conn = super().connect(peer_id)
        if self._protect is not None:
            self._protect(peer_id)
        return conn


def protocol_specs(cfg: NodeConfig, extra: Sequence[ProtocolSpec] = ()) -> Routes:
    """The node's protocols: anti-entropy, then ``extra``, then ``cfg.protocols``.

    Raises :class:`~aura_sync.errors.StartFailed` for a reference that does not
    resolve, a duplicate id or a type claimed twice (naming both).
    """
    for item in extra:
        if not isinstance(item, ProtocolSpec):
            raise WrongType(f"protocols must hold ProtocolSpec values, got {item!r}")
    named = [resolve_spec(ref) for ref in cfg.protocols]
    for spec in (*extra, *named):
        if spec.id in _RESERVED_IDS:
            raise StartFailed(f"protocol id {spec.id!r} is taken by the node's own actor")
    return Routes([anti_entropy.spec(), *extra, *named])


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
        connector=_OwnDials(transport, table.resolve, router),
        discovery=StaticDiscovery(
            [(p.device_id, p.address) for p in cfg.bootstrap if p.device_id != me]
        ),
        fault_injection=faults,
        name="infrastructure",
    )
    handle = TransportHandle(router, transport)
    scorer = getattr(transport, "set_connection_scorer", None)
    if scorer is not None:  # trim the least trusted peers' connections first
        scorer(lambda conn: float(table.trust(conn.peer_id)))
    specs = router.routes.specs

    def starter(spec: ProtocolSpec) -> Callable[[ChildContext], AuraActor]:
        def start(ctx: ChildContext) -> AuraActor:
            router.attach(spec.id, ctx.address)  # stable: events queue in its mailbox
            pctx = ProtocolContext(
                child=ctx,
                infra=infra_addresses(infra),
                transport=handle,
                config=cfg,
                journal=journal,
                token=token,
                address_book=table,
                fault_injection=faults,
                observer=observer,
            )
            return spec.factory(pctx)

        return start

    share = cfg.shutdown_timeout / (2 * max(1, len(specs)))
    protocols = Supervisor(
        [
            ChildSpec(
                spec.id,
                start=starter(spec),
                shutdown=share if spec.shutdown is None else spec.shutdown,
            )
            for spec in specs
        ],
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
