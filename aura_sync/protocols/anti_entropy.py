"""The anti-entropy protocol actor: wires ticks, dialing, sessions and serving.

:class:`AntiEntropyActor` owns the node's journal use and talks to the
infrastructure actors only by messages, never blocking: its work runs as
tasks of :mod:`aura_sync.actors._tasks`.  Every ``sync_interval`` seconds
(+-10 %, a scheduled :class:`~aura_sync.messages.sync.SyncTick`) a round
reads the peer manager's table (the one address book: each peer's dial
address), dials the known peers that are not connected, asks for the best
``peers_per_round`` peers and runs one session with each
(:mod:`aura_sync.protocols.session`; put off, for at most 2 s, while pushes
flow between us), and now and then a peer exchange.  New local ops
are pushed at once to up to ``push_fanout`` connected peers.
Peers' requests are answered by :mod:`aura_sync.protocols.serving`;
reconciliation itself is :mod:`aura_sync.protocols.reconcile`.

Layer: runtime (protocols).
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import math
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from aura_sync._checks import check_bool, check_int
from aura_sync.actors._faults import FaultInjectionMixin, check_stash, resolve_effects
from aura_sync.actors._tasks import Ask, Step, TaskHost, Tasks
from aura_sync.actors.address import ActorAddress
from aura_sync.actors.base import AuraActor, handles
from aura_sync.effects import Clock, Rng, Scheduler, SystemRng, TimerHandle
from aura_sync.errors import (
    AskTimeout,
    AuraError,
    InvalidArgument,
    OpRefused,
    RateLimited,
    RequestTimeout,
    TransportError,
    UnknownPeer,
    WrongType,
)
from aura_sync.ids import DeviceId
from aura_sync.infrastructure.peer_scoring import Offence, PeerBan
from aura_sync.infrastructure.peers import PeerInfo, PeerStatus, PeerTableSnapshot
from aura_sync.infrastructure.retry import Jitter, RetryPolicy
from aura_sync.messages.peers import (
    AddPeer,
    GetPeer,
    GetPeerTable,
    ReportOffence,
    SelectSyncPeers,
    SetPeerStatus,
    UpdatePeerMetadata,
)
from aura_sync.messages.rate_limit import RotateEpoch
from aura_sync.messages.sync import (
    MAX_APPEND,
    MAX_IDS_BATCH,
    MAX_OPS_BATCH,
    AppendOps,
    GetSyncStatus,
    OpsAppended,
    PresentCapability,
    RetrySync,
    SyncStatus,
    SyncTick,
)
from aura_sync.protocols.admission import AdmissionConfig, journal_write
from aura_sync.protocols.journal import Journal
from aura_sync.protocols.plugin import (
    PeerTableView,
    ProtocolContext,
    ProtocolSpec,
    TransportEventMessage,
)
from aura_sync.protocols.serving import SYNC_REQUESTS, FlowEpochTick, FlushPushes, Server
from aura_sync.protocols.session import Sessions, give_back
from aura_sync.transport.base import Connected, Connection, Disconnected, Inbound

__all__ = [
    "AntiEntropyActor",
    "AntiEntropyConfig",
    "AppendOps",
    "GetSyncStatus",
    "InfraAddresses",
    "OpsAppended",
    "PeerTableView",
    "RetrySync",
    "SyncStatus",
    "SyncTick",
    "TransportEventMessage",
    "spec",
]

_log = logging.getLogger("aura_sync.protocols.anti_entropy")

_STATS_KEY: Final = "aura_sync.anti_entropy.stats"
_EPOCH_KEY: Final = "aura_sync.anti_entropy.epoch"
_ANSWERED_KEY: Final = "aura_sync.anti_entropy.answered"
_TASK_IDS_KEY: Final = "aura_sync.anti_entropy.task_ids"
_REFUSED_KEY: Final = "aura_sync.anti_entropy.refused"
_STAT_NAMES: Final = (
    "rounds_started",
    "rounds_succeeded",
    "rounds_failed",
    "rounds_skipped",
    "rate_limited",
    "retries",
    "request_retries",
    "requests_denied_by_peer",
    "ops_pulled",
    "ops_pushed",
    "ops_received",
    "ops_served",
    "requests_served",
    "requests_refused",
    "requests_rate_limited",
    "shed_permille",
    "journal_write_failures",
    "journal_write_failing",
    "ticks_without_success",
    "overload_reports",
    "batches_refused",
    "peer_exchanges",
    "dials",
    "dial_failures",
    "offences",
    "peers_banned",
    "messages_handled",
)
_STREAM_FAULTS: Final = ("malformed frame", "protocol violation")
"""Prefixes of the close reasons the transport gives a peer's undecodable stream."""


@dataclass(frozen=True, slots=True)
class InfraAddresses:
    """The infrastructure actors the protocol talks to (stable across their restarts)."""

    peer_manager: ActorAddress
    rate_limiter: ActorAddress
    pool: ActorAddress


def _default_retry() -> RetryPolicy:
    return (
        RetryPolicy.exponential()
        .with_max_attempts(4)
        .with_initial_delay(0.2)
        .with_max_delay(5.0)
        .with_jitter(Jitter.FULL)
        .with_retry_on((TransportError, RateLimited, AskTimeout))
    )


def _default_request_retry() -> RetryPolicy:
    return (
        RetryPolicy.exponential()
        .with_max_attempts(4)
        .with_initial_delay(0.05)
        .with_max_delay(1.0)
        .with_retry_on((RequestTimeout, RateLimited))
    )


class SyncObserver(Protocol):
    """Told durations as they happen (the node's :class:`~aura_sync.node.metrics.NodeMetrics`)."""

    def observe_sync_session(self, seconds: float, *, success: bool) -> None:
        """One session with a peer ended after ``seconds`` (clock time)."""

    def observe_served_request(self, seconds: float) -> None:
        """One peer request was answered after ``seconds`` (wall time)."""


@dataclass(frozen=True, slots=True)
class AntiEntropyConfig:
    """Settings of the anti-entropy actor (checked here: it is built from user configuration).

    :param sync_interval: seconds between rounds (> 0), jittered by +-10 %.
    :param peers_per_round: peers synced per round (1..64).
    :param batch_size: ops per pull/push message (1..128).
    :param request_timeout: seconds one network request may take (> 0).
    :param ask_timeout: seconds one ask to an infrastructure actor may take (> 0).
    :param require_capability: refuse sync requests of peers that have not
        presented a valid capability token, and present ``token``.
    :param refuse_sync: refuse every sync request and run no rounds.
    :param list_threshold: a differing range with at most this many ids
        (each side) is listed instead of split (1..1024).
    :param max_cached_skips: rounds in a row a peer may be skipped while our
        journal still has the fingerprint both sides agreed on (0: never skip).
    :param exchange_every: run peer exchange every this many rounds (>= 1).
    :param max_dials: most dials in flight at once (>= 1).
    :param push_limit: most ops pushed to a peer per session, and per burst of
        new local ops (1..2**20): the bulk of a transfer is the receiver's pull,
        which its own admission does not charge.
    :param push_fanout: connected peers each new local op is pushed to at once
        (0..64; 0: wait for the sessions).
    :param retry: planner for failed sessions and dials.
    :param request_retry: planner for timed-out requests inside a session.
    :param token: this node's capability token, or None.
    :param admission: inbound admission (:class:`~aura_sync.protocols.admission.AdmissionConfig`).
    """

    sync_interval: float = 2.0
    peers_per_round: int = 3
    batch_size: int = MAX_OPS_BATCH
    request_timeout: float = 5.0
    ask_timeout: float = 5.0
    require_capability: bool = False
    refuse_sync: bool = False
    list_threshold: int = MAX_IDS_BATCH
    max_cached_skips: int = 3
    exchange_every: int = 4
    max_dials: int = 8
    push_limit: int = 2048
    push_fanout: int = 8
    retry: RetryPolicy = field(default_factory=_default_retry)
    request_retry: RetryPolicy = field(default_factory=_default_request_retry)
    token: bytes | None = None
    admission: AdmissionConfig = field(default_factory=AdmissionConfig)

    def __post_init__(self) -> None:
        for name in ("sync_interval", "request_timeout", "ask_timeout"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise WrongType(f"{name} must be seconds, got {type(value).__name__} {value!r}")
            if not (math.isfinite(value) and value > 0):
                raise InvalidArgument(f"{name} must be finite seconds > 0, got {value!r}")
            object.__setattr__(self, name, float(value))
        check_int(self.peers_per_round, "peers_per_round", minimum=1, maximum=64)
        check_int(self.batch_size, "batch_size", minimum=1, maximum=MAX_OPS_BATCH)
        check_int(self.list_threshold, "list_threshold", minimum=1, maximum=MAX_IDS_BATCH)
        check_int(self.max_cached_skips, "max_cached_skips", minimum=0, maximum=1000)
        check_int(self.exchange_every, "exchange_every", minimum=1, maximum=1_000_000)
        check_int(self.max_dials, "max_dials", minimum=1, maximum=1024)
        check_int(self.push_limit, "push_limit", minimum=1, maximum=2**20)
        check_int(self.push_fanout, "push_fanout", minimum=0, maximum=64)
        for name in ("require_capability", "refuse_sync"):
            check_bool(getattr(self, name), name)
        for name in ("retry", "request_retry"):
            if not isinstance(getattr(self, name), RetryPolicy):
                raise WrongType(f"{name} must be a RetryPolicy, got {getattr(self, name)!r}")
        if not isinstance(self.admission, AdmissionConfig):
            raise WrongType(f"admission must be an AdmissionConfig, got {self.admission!r}")
        if self.token is not None and type(self.token) is not bytes:
            raise WrongType(f"token must be bytes or None, got {type(self.token).__name__}")
        if self.require_capability and not self.refuse_sync and self.token is None:
            raise InvalidArgument("require_capability needs this node's token, got None")


class AntiEntropyActor(TaskHost, FaultInjectionMixin, AuraActor):
    """The anti-entropy journal sync protocol actor (see the module docstring).

    :param config: :class:`AntiEntropyConfig`.
    :param journal: the node's journal (owned by the node, written only here).
    :param infra: the infrastructure actors' addresses.
    :param table: where the peer table is published for the pool's connector.
    :param clock, scheduler, rng: effects.
    :param stash: the dict that survives restarts (counters, journal epoch).
    :param fault_injection: honour :class:`~aura_sync.messages.faults.InjectCrash`.
    :param observer: told each session's and each served request's duration.
    :param on_ban: ``on_ban(peer, addresses, seconds)``, called (on the actor's thread,
        must not block) for each ban a reported offence earned, with the remote
        addresses of the peer's connections (which the actor then closes).

    Handles :class:`SyncTick`, :class:`RetrySync` (told), :class:`AppendOps`,
    :class:`GetSyncStatus` (requests) and :class:`TransportEventMessage`.
    """

    def __init__(
        self,
        config: AntiEntropyConfig,
        journal: Journal,
        infra: InfraAddresses,
        *,
        table: PeerTableView | None = None,
        clock: Clock | None = None,
        scheduler: Scheduler | None = None,
        rng: Rng | None = None,
        stash: dict[str, Any] | None = None,
        fault_injection: bool = False,
        observer: SyncObserver | None = None,
        on_ban: Callable[[DeviceId, frozenset[str], float], None] | None = None,
    ) -> None:
        super().__init__()
        self._init_faults(fault_injection)
        self._on_ban = on_ban
        self._config = config
        self._journal = journal
        self._infra = infra
        self._table = table if table is not None else PeerTableView()
        self._clock, self._scheduler = resolve_effects(clock, scheduler)
        self._rng: Rng = rng or SystemRng()
        self._stash = stash = check_stash(stash)
        self._stats: dict[str, int] = stash.setdefault(_STATS_KEY, dict.fromkeys(_STAT_NAMES, 0))
        # Task ids unique across incarnations: a reply to a dead incarnation's task must
        # never resume a task of this one that happens to have the same number.
        self._tasks = Tasks(
            self,
            self._scheduler,
            ids=stash.setdefault(_TASK_IDS_KEY, itertools.count(1)),
            give_back=give_back,
            answered=stash.setdefault(_ANSWERED_KEY, {}),
        )
        self._sessions = Sessions(
            config=config,
            journal=journal,
            infra=infra,
            tasks=self._tasks,
            owner=lambda: self.address,
            clock=self._clock,
            scheduler=self._scheduler,
            rng=self._rng,
            stats=self._stats,
            bump_epoch=self._bump_epoch,
            count_refusal=self._count_refusal,
            observer=observer,
        )
        self._verified: list[tuple[DeviceId, str]] = []
        self._server = Server(
            config,
            journal,
            infra=infra,
            tasks=self._tasks,
            stats=self._stats,
            bump_epoch=self._bump_epoch,
            count_refusal=self._count_refusal,
            verified_addresses=self._verified_peers,
            on_authorized=self._on_authorized,
            observer=observer,
            clock=self._clock,
            queued=lambda: self.address.queued(),  # noqa: PLW0108  (bound once started)
            schedule_flush=lambda: self.address.tell(FlushPushes()),
        )
        self._server.report = self._report
        self._sessions.reconciled = self._server.reconciled
        self._sessions.pushes_in = lambda: self._server.pushed_at
        self._open: dict[DeviceId, dict[str, Connection]] = {}
        self._slotless: set[DeviceId] = set()  # connected, not in the peer table
        self._ticks = 0
        self._tick_timer: TimerHandle | None = None
        self._epoch_timer: TimerHandle | None = None
        self._own_ops = journal.own_ops
        self._refused: dict[DeviceId, int] = stash.setdefault(_REFUSED_KEY, {})

    # --- lifecycle ------------------------------------------------------------------------

    @property
    def _epoch(self) -> int:
        value: int = self._stash.get(_EPOCH_KEY, 0)
        return value

    def _bump_epoch(self) -> None:
        self._stash[_EPOCH_KEY] = self._epoch + 1

    def _count_refusal(self, peer: DeviceId, exc: OpRefused) -> None:
        self._stats["batches_refused"] += 1
        self._refused[peer] = self._refused.get(peer, 0) + 1
        _log.warning("event=ops_refused peer=%s error=%r", peer, str(exc))
        self._report(peer, Offence.REFUSED_OPS)

    def _report(self, peer: DeviceId, offence: Offence, address: str | None = None) -> None:
        """Tell the peer manager about ``offence``; a ban it earns closes the peer's
        connections and goes to ``on_ban`` (the transport refuses it from then on)."""
        self._stats["offences"] += 1
        if address is None:
            address = next((c.remote_address for c in self._open.get(peer, {}).values()), None)
        self._tasks.spawn(self._report_task(peer, offence, address), f"report {peer}")

    def _report_task(
        self, peer: DeviceId, offence: Offence, address: str | None
    ) -> Generator[Step, Any, None]:
        ban = yield self._ask(self._infra.peer_manager, ReportOffence(peer, offence, address))
        if ban is None:
            return
        assert isinstance(ban, PeerBan)
        self._stats["peers_banned"] += 1
        conns = list(self._open.get(peer, {}).values())
        addresses = frozenset({c.remote_address for c in conns} | ({address} if address else set()))
        _log.warning(
            "event=peer_banned peer=%s seconds=%.0f bans=%d reason=%s addresses=%s",
            peer, ban.until - self._clock.now(), ban.bans, ban.reason, sorted(addresses),
        )  # fmt: skip
        if self._on_ban is not None:
            self._on_ban(peer, addresses, max(ban.until - self._clock.now(), 0.001))
        for conn in conns:
            conn.close()

    def _verified_peers(self) -> list[tuple[DeviceId, str]]:
        return self._verified

    def on_start(self) -> None:
        """Learn which peers already hold the capability, then start the round timer."""
        self._tasks.spawn(self._recover(), "recover")
        self._schedule_tick(initial=True)
        if self._config.admission.flow_budget:
            self._on_flow_epoch(FlowEpochTick())

    def on_stop(self) -> None:
        """Abandon the work in flight: give its connections and sessions back."""
        self._abandon("stopping")

    def on_crash(self, exc: BaseException) -> None:
        """Same as :meth:`on_stop`: a dead incarnation must not keep loans or sessions."""
        self._abandon(f"crashed: {type(exc).__name__}")

    def _abandon(self, why: str) -> None:
        for timer in (self._tick_timer, self._epoch_timer):
            if timer is not None:
                timer.cancel()
        self._sessions.abandon(why)
        self._tasks.abandon(why)

    def _schedule_tick(self, *, initial: bool = False) -> None:
        if self._tick_timer is not None:
            # One pending tick at most, even when a SyncTick of a dead incarnation
            # (or one told by hand) arrives besides the one armed in on_start.
            self._tick_timer.cancel()
        interval = self._config.sync_interval
        delay = interval * (
            self._rng.uniform(0.05, 0.3) if initial else self._rng.uniform(0.9, 1.1)
        )
        self._tick_timer = self._scheduler.send_after(delay, self.address, SyncTick())

    def _ask(self, target: ActorAddress, msg: Any) -> Ask:
        return Ask(target, msg, self._config.ask_timeout)

    def _read_table(self) -> Generator[Step, Any, tuple[PeerInfo, ...]]:
        table = yield self._ask(self._infra.peer_manager, GetPeerTable())
        assert isinstance(table, PeerTableSnapshot)
        self._table.publish(table.peers)
        self._verified = sorted(
            (p.peer_id, p.address)
            for p in table.peers
            if p.address is not None and p.metadata.verified
        )
        return table.peers

    def _recover(self) -> Generator[Step, Any, None]:
        """After a (re)start: peers already holding the capability stay authorized."""
        for info in (yield from self._read_table()):
            if info.metadata.has_sync_capability:
                self._server.authorized.add(info.peer_id)

    # --- rounds ---------------------------------------------------------------------------

    @handles(SyncTick)
    def _on_tick(self, msg: SyncTick) -> None:
        self._stats["messages_handled"] += 1
        self._schedule_tick()
        if self._config.refuse_sync:
            return
        self._ticks += 1
        self._stats["rounds_started"] += 1
        self._tasks.spawn(self._round(), "round")

    def _round(self) -> Generator[Step, Any, None]:
        peers = yield from self._read_table()
        if peers:  # /health: rounds in a row that found peers but synced with none
            self._stats["ticks_without_success"] += 1
        sessions = self._sessions
        now = self._clock.now()
        for info in peers:
            meta = info.metadata
            if (
                meta.status is not PeerStatus.CONNECTED
                and meta.status is not PeerStatus.REMOVED
                and info.address is not None
                and (meta.backoff_until is None or meta.backoff_until <= now)
                and sessions.may_dial(info.peer_id, now)
            ):
                self._tasks.spawn(sessions.dial(info.peer_id), f"dial {info.peer_id}")
        selected = yield self._ask(
            self._infra.peer_manager, SelectSyncPeers(self._config.peers_per_round)
        )
        assert isinstance(selected, tuple)
        for peer in selected:
            if peer not in sessions.syncing:
                task = sessions.sync(peer, 0, None, self._clock.now())
                self._tasks.spawn(task, f"sync {peer}")
        if selected and (self._ticks - 1) % self._config.exchange_every == 0:
            peer = selected[self._rng.randrange(len(selected))]
            known = {p.peer_id for p in peers if p.address is not None}
            self._tasks.spawn(sessions.exchange(peer, known), f"exchange {peer}")

    @handles(FlowEpochTick)
    def _on_flow_epoch(self, msg: FlowEpochTick) -> None:
        """Rotate the peers' flow budgets at each epoch boundary (scheduler time)."""
        if self._epoch_timer is not None:
            self._epoch_timer.cancel()
        length = self._config.admission.flow_epoch
        epoch = self._server.rotate_flow_epoch()
        self._infra.rate_limiter.tell(RotateEpoch(epoch))
        delay = max(0.001, (epoch + 1) * length - self._clock.now())
        self._epoch_timer = self._scheduler.send_after(delay, self.address, FlowEpochTick())

    @handles(FlushPushes)
    def _on_flush(self, msg: FlushPushes) -> None:
        self._server.flush_pushes()

    @handles(RetrySync)
    def _on_retry(self, msg: RetrySync) -> None:
        self._stats["messages_handled"] += 1
        if self._config.refuse_sync or msg.peer_id in self._sessions.syncing:
            return
        task = self._sessions.sync(msg.peer_id, msg.attempt, msg.prev_delay, msg.started)
        self._tasks.spawn(task, f"retry {msg.peer_id}")

    # --- transport events -------------------------------------------------------------------

    @handles(TransportEventMessage)
    def _on_transport(self, msg: TransportEventMessage) -> None:
        self._stats["messages_handled"] += 1
        event = msg.event
        if isinstance(event, Inbound):
            self._server.serve(event)
        elif isinstance(event, Connected):
            self._connected(event.connection)
        elif isinstance(event, Disconnected):
            self._disconnected(event.connection)

    def _connected(self, conn: Connection) -> None:
        peer = conn.peer_id
        self._open.setdefault(peer, {})[conn.session_id] = conn
        if conn.peer_listen_address:
            self._table.note(peer, conn.peer_listen_address)
        self._tasks.spawn(self._mark_connected(peer, conn.peer_listen_address), f"up {peer}")
        if self._config.require_capability and self._config.token is not None and conn.initiator:
            # Our token goes to a peer we chose and TLS proved; an accepting side
            # presents only once the dialer proved its own token (_on_authorized).
            self._tasks.spawn(self._present_on(conn), f"present {peer}")

    def _on_authorized(self, conn: Connection) -> None:
        """A peer that dialed us proved its token: now present ours on its connection."""
        if (
            self._config.token is not None
            and not conn.initiator
            and conn.session_id not in self._sessions.presented
        ):
            self._tasks.spawn(self._present_on(conn), f"present {conn.peer_id}")

    def _present_on(self, conn: Connection) -> Generator[Step, Any, None]:
        try:
            yield from self._sessions.present(conn)
        except AuraError as exc:
            _log.info("event=present_failed peer=%s error=%r", conn.peer_id, str(exc))

    def _mark_connected(self, peer: DeviceId, address: str | None) -> Generator[Step, Any, None]:
        """The peer's own Hello address (verified by TLS) goes into the peer table."""
        manager = self._infra.peer_manager
        if self._config.require_capability and peer not in self._server.authorized:
            try:  # an identity not yet authorized takes no slot (AdmitPeer admits it)
                yield self._ask(manager, GetPeer(peer))
            except UnknownPeer:
                if peer not in self._server.authorized:
                    self._slotless.add(peer)
                return
        yield self._ask(manager, AddPeer(peer, address))
        yield self._ask(manager, SetPeerStatus(peer, PeerStatus.CONNECTED))
        yield self._ask(manager, UpdatePeerMetadata(peer, verified=True))

    def _disconnected(self, conn: Connection) -> None:
        peer = conn.peer_id
        self._sessions.presented.discard(conn.session_id)
        if (conn.closed_reason or "").startswith(_STREAM_FAULTS):
            self._report(peer, Offence.MALFORMED_FRAME, conn.remote_address)
        sessions = self._open.get(peer)
        if sessions is not None:
            sessions.pop(conn.session_id, None)
            if not sessions:
                del self._open[peer]
                if peer in self._slotless and peer not in self._server.authorized:
                    self._slotless.discard(peer)  # nothing to update in the table
                    return
                self._slotless.discard(peer)
                self._infra.peer_manager.tell(SetPeerStatus(peer, PeerStatus.DISCONNECTED))

    # --- local API ---------------------------------------------------------------------------

    @handles(AppendOps)
    def _on_append(self, msg: AppendOps) -> OpsAppended:
        self._stats["messages_handled"] += 1
        if not 1 <= len(msg.payloads) <= MAX_APPEND:
            raise InvalidArgument(
                f"payloads must hold 1..{MAX_APPEND} items, got {len(msg.payloads)}"
            )
        ids = journal_write(self._stats, lambda: self._journal.append_many(msg.payloads))
        self._own_ops += len(ids)
        self._bump_epoch()
        fanout = self._config.push_fanout
        if fanout and not self._config.refuse_sync:
            peers = [p for p in self._open if p not in self._slotless][:fanout]
            self._sessions.announce(ids, {p: next(iter(self._open[p].values())) for p in peers})
        return OpsAppended(len(ids), self._own_ops, len(self._journal))

    @handles(GetSyncStatus)
    def _on_status(self, msg: GetSyncStatus) -> SyncStatus:
        self._stats["messages_handled"] += 1
        return SyncStatus(
            counters=tuple((name, self._stats.get(name, 0)) for name in _STAT_NAMES),
            journal_ops=len(self._journal),
            own_ops=self._own_ops,
            digest=self._journal.digest().fingerprint,
            epoch=self._epoch,
            connected=len(self._open),
            authorized=len(self._server.authorized),
            active_sessions=len(self._sessions.held),
            answered=tuple(sorted(self._tasks_answered().items())),
            refused=tuple(sorted((str(p), n) for p, n in self._refused.items())),
        )

    def _tasks_answered(self) -> dict[str, int]:
        answered: dict[str, int] = self._stash[_ANSWERED_KEY]
        return answered


# --- the plug-in ------------------------------------------------------------------------------


def _start(ctx: ProtocolContext) -> AntiEntropyActor:
    cfg = ctx.config
    config = AntiEntropyConfig(
        sync_interval=cfg.sync_interval,
        peers_per_round=cfg.peers_per_round,
        batch_size=cfg.batch_size,
        request_timeout=cfg.request_timeout,
        require_capability=cfg.capabilities_required,
        refuse_sync=cfg.refuse_sync,
        token=ctx.token,
        admission=dataclasses.replace(
            cfg.defence, max_cost=min(cfg.defence.max_cost, cfg.rate_limit.max_cost)
        ),
    )
    infra = ctx.infra
    child = ctx.child
    return AntiEntropyActor(
        config,
        ctx.journal,
        InfraAddresses(infra["peer_manager"], infra["rate_limiter"], infra["pool"]),
        table=ctx.address_book,
        clock=child.clock,
        scheduler=child.scheduler,
        rng=child.rng,
        stash=child.stash,
        fault_injection=ctx.fault_injection,
        observer=ctx.observer,
        on_ban=ctx.transport.ban,
    )


def spec() -> ProtocolSpec:
    """Anti-entropy as a plug-in (built in, always on): the sync requests it serves."""
    return ProtocolSpec(
        "anti_entropy",
        _start,
        requests=(*SYNC_REQUESTS, PresentCapability),
    )
