"""Anti-entropy journal sync: the protocol actor that keeps the nodes' journals equal.

Role
    :class:`AntiEntropyActor` owns the node's :class:`~aura_sync.protocols.journal.Journal`
    and does two jobs:

    * **serving**: it answers the sync requests peers send over the
      transport (:class:`~aura_sync.messages.sync.DigestRequest`,
      ``IdsRequest``, ``OpsRequest``, ``PushOps``, ``PeerExchangeRequest``,
      ``PresentCapability``), refusing every sync request of a peer that has
      not presented a valid capability token when capabilities are required
      (fail closed);
    * **syncing**: every ``sync_interval`` seconds (a scheduled
      :class:`SyncTick`, never a sleep) it runs a round.

A round
    1. dial the known peers that are not connected yet (discovery: bootstrap
       addresses and peer exchange), through the pool;
    2. ask the ``PeerManagerActor`` for the best ``peers_per_round`` peers
       (``SelectSyncPeers``: only CONNECTED, identity-verified peers with the
       sync capability, not in failure backoff);
    3. per peer: skip it if the ``CacheActor`` holds its digest as fresh for
       the current journal epoch (nothing changed on our side since we were
       last equal); ask the ``RateLimiterActor`` (a denial is retried after
       its exact ``retry_after``); open a session with the peer manager;
       take a connection from the ``PoolActor``; reconcile (below); release
       the connection; record the outcome and latency with the peer manager
       (``EndSyncSession``: feeds the score and the failure backoff); cache
       the agreed digest;
    4. a failed session is retried with the :class:`~aura_sync.infrastructure.retry.RetryPolicy`
       planner (``policy.plan``) and the :class:`~aura_sync.effects.Scheduler`
       (:class:`RetrySync`), and every network request inside a session is
       retried the same way on a timeout (all sync requests are idempotent);
    5. now and then, ask one peer for the addresses of its verified peers
       (peer exchange) and feed them to the peer manager.

Reconciliation (range-based set reconciliation over the op-id space)
    Compare the full-range digests; split the ranges whose digests differ
    (16 ways) until a range holds at most ``list_threshold`` ids on both
    sides; list the peer's ids in those ranges (paged); pull the ops we
    lack (``OpsRequest``) and push the ops it lacks (``PushOps``), both in
    batches of ``batch_size`` (128 at most).  Journals only grow and ops are
    content-addressed, so every step is idempotent and a partial session
    still makes progress.

Messages only, never blocking
    The actor talks to the infrastructure actors only with messages.  It
    never blocks: a round is a generator that *yields* what it waits for
    (an ask to an actor, a network request, a future); the actor sends it,
    and the answer comes back later as a message (:class:`_Resume`) that
    resumes the generator on the actor's thread.  The "ask and receive the
    reply as a message" primitive is :class:`_ResumeSlot`, a
    :class:`~aura_sync.actors.ReplySlot` that forwards the reply to this
    actor's mailbox; timeouts are scheduled messages that claim the slot
    first.  Network I/O happens on the transport's thread: requests return
    futures whose completion tells this actor.

Glue used by the node
    :class:`AddressBook` (DeviceId -> "host:port": bootstrap entries,
    Hello listen addresses, peer exchange), :class:`ConnectionRegistry`
    (transport session id -> live connection, so a pool loan, which carries
    only the session id, leads to its connection) and :class:`NodeConnector`
    (the pool core's connector: dials through the transport, non-blocking).

Layer: runtime (protocols).
"""

from __future__ import annotations

import itertools
import logging
import math
import threading
from collections.abc import Callable, Generator, Iterable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Final

from aura_sync._checks import check_bool, check_int, check_peer, check_u64
from aura_sync.actors._faults import FaultInjectionMixin, check_stash, resolve_effects
from aura_sync.actors._reply import ReplySlot
from aura_sync.actors.address import ActorAddress
from aura_sync.actors.base import AuraActor, LocalMessage, handles
from aura_sync.actors.pool import PoolLease
from aura_sync.effects import Clock, Rng, Scheduler, SystemRng, TimerHandle
from aura_sync.errors import (
    AskTimeout,
    AuraError,
    CapabilityError,
    ConnectionClosed,
    InvalidArgument,
    OpRefused,
    PeerUnavailable,
    RateLimited,
    RequestTimeout,
    TransportError,
    UnknownPeer,
    WrongType,
)
from aura_sync.ids import DeviceId
from aura_sync.infrastructure.peers import PeerStatus
from aura_sync.infrastructure.retry import Jitter, RetryPolicy
from aura_sync.messages import Ack, ErrorReply, Message
from aura_sync.messages._base import message
from aura_sync.messages.cache import GetValue, InvalidateKeys, PutValue
from aura_sync.messages.peers import (
    AddPeer,
    DiscoverPeers,
    EndSyncSession,
    GetPeerTable,
    PeerCandidate,
    PeerTableReply,
    RecordFailure,
    SelectedPeers,
    SelectSyncPeers,
    SetPeerStatus,
    StartSyncSession,
    UpdatePeerCapabilities,
    UpdatePeerMetadata,
)
from aura_sync.messages.pool import Acquire, CloseConnection, Release
from aura_sync.messages.rate_limit import CheckRateLimit, RateLimitDecision
from aura_sync.messages.sync import (
    FULL_RANGE,
    MAX_IDS_BATCH,
    MAX_OPS_BATCH,
    MAX_PEERS_PER_EXCHANGE,
    MAX_RANGES,
    DigestReply,
    DigestRequest,
    IdRange,
    IdsReply,
    IdsRequest,
    OpsReply,
    OpsRequest,
    PeerAddress,
    PeerExchange,
    PeerExchangeRequest,
    PresentCapability,
    PushAck,
    PushOps,
    RangeDigest,
)
from aura_sync.protocols.journal import Journal
from aura_sync.protocols.journal_chain import PullBuffer
from aura_sync.transport.base import Connected, Connection, Disconnected, Inbound, Transport

__all__ = [
    "AddressBook",
    "AntiEntropyActor",
    "AntiEntropyConfig",
    "AppendOps",
    "ConnectionRegistry",
    "GetSyncStatus",
    "NodeConnector",
    "OpsAppended",
    "RetrySync",
    "SyncStatus",
    "SyncTick",
    "TransportEventMessage",
]

_log = logging.getLogger("aura_sync.protocols.anti_entropy")

MAX_APPEND: Final = 1024
"""Most payloads in one :class:`AppendOps`."""

_STATS_KEY: Final = "aura_sync.anti_entropy.stats"
_EPOCH_KEY: Final = "aura_sync.anti_entropy.epoch"
_ANSWERED_KEY: Final = "aura_sync.anti_entropy.answered"
_TASK_IDS_KEY: Final = "aura_sync.anti_entropy.task_ids"
_REFUSED_KEY: Final = "aura_sync.anti_entropy.refused"
_SYNC_REQUESTS: Final = (DigestRequest, IdsRequest, OpsRequest, PushOps, PeerExchangeRequest)
_STAT_NAMES: Final = (
    "rounds_started",
    "rounds_succeeded",
    "rounds_failed",
    "rounds_skipped",
    "rate_limited",
    "retries",
    "request_retries",
    "ops_pulled",
    "ops_pushed",
    "ops_received",
    "ops_served",
    "requests_served",
    "requests_refused",
    "batches_refused",
    "peer_exchanges",
    "dials",
    "dial_failures",
    "messages_handled",
)


# --- the actor's own messages (tags 0xD4-0xDF) ---------------------------------------------


@message(0x00D4)
class SyncTick(Message):
    """Timer: time for the next sync round (scheduled every ``sync_interval`` seconds)."""


@message(0x00D5)
class RetrySync(Message):
    """Timer: retry the failed session with ``peer_id`` (``attempt`` is 0-based).

    ``prev_delay`` is the delay that was waited (seconds), ``started`` the
    clock time of the first attempt.
    """

    peer_id: DeviceId
    attempt: int
    prev_delay: float
    started: float

    def __post_init__(self) -> None:
        check_peer(self.peer_id)
        check_int(self.attempt, "attempt", minimum=1, maximum=1000)
        for name in ("prev_delay", "started"):
            value = getattr(self, name)
            if type(value) is not float or not math.isfinite(value) or value < 0:
                raise InvalidArgument(f"{name} must be finite float seconds >= 0, got {value!r}")


@message(0x00D6)
class AppendOps(Message):
    """Author new ops with these payloads (1..1024) in the local journal.

    Reply: :class:`OpsAppended`.
    """

    payloads: tuple[bytes, ...]

    def __post_init__(self) -> None:
        if type(self.payloads) is not tuple:
            raise WrongType(f"payloads must be a tuple, got {type(self.payloads).__name__}")
        if not 1 <= len(self.payloads) <= MAX_APPEND:
            raise InvalidArgument(
                f"payloads must hold 1..{MAX_APPEND} items, got {len(self.payloads)}"
            )
        for i, payload in enumerate(self.payloads):
            if type(payload) is not bytes:
                raise WrongType(f"payloads[{i}] must be bytes, got {type(payload).__name__}")


@message(0x00D7)
class OpsAppended(Message):
    """Answer to :class:`AppendOps`: ops added, own ops and all ops now held."""

    added: int
    own_ops: int
    total_ops: int

    def __post_init__(self) -> None:
        for name in ("added", "own_ops", "total_ops"):
            check_u64(getattr(self, name), name)


@message(0x00D8)
class GetSyncStatus(Message):
    """Ask for :class:`SyncStatus`."""


@message(0x00D9)
class SyncStatus(Message):
    """Counters and journal summary of the anti-entropy actor.

    ``counters`` holds ``(name, value)`` pairs (rounds, ops pulled/pushed/
    received/served, refusals, ...); ``digest`` is the journal's full-range
    fingerprint; ``authorized`` counts peers whose capability was verified;
    ``connected`` counts peers with an open connection; ``answered`` counts,
    per actor address, the asks of this actor that the actor answered (the
    messages it is known to have handled for the protocol); ``refused``
    counts, per peer (DeviceId text), the op batches refused from it.
    """

    counters: tuple[tuple[str, int], ...]
    journal_ops: int
    own_ops: int
    digest: bytes
    epoch: int
    connected: int
    authorized: int
    active_sessions: int
    answered: tuple[tuple[str, int], ...] = ()
    refused: tuple[tuple[str, int], ...] = ()

    def __post_init__(self) -> None:
        for field_name in ("counters", "answered", "refused"):
            if type(getattr(self, field_name)) is not tuple:
                raise WrongType(f"{field_name} must be a tuple of (name, value) pairs")
        for pair in self.counters + self.answered + self.refused:
            if type(pair) is not tuple or len(pair) != 2 or type(pair[0]) is not str:
                raise WrongType(f"counters entries must be (str, int), got {pair!r}")
            check_u64(pair[1], pair[0])
        for name in ("journal_ops", "own_ops", "epoch", "connected", "authorized"):
            check_u64(getattr(self, name), name)
        check_u64(self.active_sessions, "active_sessions")
        if type(self.digest) is not bytes:
            raise WrongType(f"digest must be bytes, got {type(self.digest).__name__}")

    def counter(self, name: str) -> int:
        """The value of counter ``name`` (0 if absent)."""
        return dict(self.counters).get(name, 0)


@dataclass(frozen=True, slots=True)
class TransportEventMessage(LocalMessage):
    """A transport event (Connected, Inbound, Disconnected) forwarded to the actor."""

    event: Connected | Inbound | Disconnected


@dataclass(frozen=True, slots=True)
class _Resume(LocalMessage):
    """What a suspended round was waiting for has arrived (reply, future or error)."""

    task: int
    step: int
    value: Any
    error: BaseException | None = None
    ask: _Ask | None = None


# --- glue: addresses, connections, connector -----------------------------------------------


class AddressBook:
    """Where peers listen: DeviceId -> "host:port" (thread-safe).

    An address learned from a verified connection (the peer's own Hello)
    wins over one heard from a third party (bootstrap list, peer exchange),
    which only fills in unknown peers.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._addresses: dict[DeviceId, tuple[str, bool]] = {}

    def learn(self, peer_id: DeviceId, address: str, *, verified: bool) -> bool:
        """Record ``address`` for ``peer_id``; returns True if it changed anything."""
        check_peer(peer_id)
        if type(address) is not str or not address:
            raise InvalidArgument(f"address must be a non-empty str, got {address!r}")
        with self._lock:
            known = self._addresses.get(peer_id)
            if known is not None:
                old_address, old_verified = known
                if old_verified and not verified:
                    return False  # hearsay never replaces what the peer said itself
                if old_address == address and old_verified == verified:
                    return False
            self._addresses[peer_id] = (address, verified)
            return True

    def get(self, peer_id: DeviceId) -> str | None:
        """The address of ``peer_id``, or None."""
        with self._lock:
            entry = self._addresses.get(peer_id)
        return None if entry is None else entry[0]

    def verified(self) -> list[tuple[DeviceId, str]]:
        """Peers whose address came from a verified connection, sorted by id."""
        with self._lock:
            return sorted((p, a) for p, (a, ok) in self._addresses.items() if ok)


class ConnectionRegistry:
    """Live connections by transport session id (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_session: dict[str, Connection] = {}

    def add(self, connection: Connection) -> None:
        """Register ``connection`` under its session id."""
        with self._lock:
            self._by_session[connection.session_id] = connection

    def get(self, session_id: str | None) -> Connection | None:
        """The connection with this session id, or None."""
        if session_id is None:
            return None
        with self._lock:
            return self._by_session.get(session_id)

    def discard(self, connection: Connection) -> None:
        """Forget ``connection`` (idempotent)."""
        with self._lock:
            if self._by_session.get(connection.session_id) is connection:
                del self._by_session[connection.session_id]

    def __len__(self) -> int:
        with self._lock:
            return len(self._by_session)


class NodeConnector:
    """The pool's connector: dials ``peer_id`` at its :class:`AddressBook` address.

    Non-blocking (the connection is returned while it connects).  Every
    connection it opens is registered in ``registry`` and reports its events
    to ``handler``.  Raises :class:`~aura_sync.errors.UnknownPeer` for a peer
    with no known address, and what :meth:`Transport.open` raises.
    """

    def __init__(
        self,
        transport: Transport,
        addresses: AddressBook,
        registry: ConnectionRegistry,
        handler: Callable[[Any], None],
    ) -> None:
        if not callable(handler):
            raise WrongType(f"handler must be callable, got {type(handler).__name__}")
        self._transport = transport
        self._addresses = addresses
        self._registry = registry
        self._handler = handler

    def connect(self, peer_id: DeviceId) -> Connection:
        """Open a connection to ``peer_id`` (see the class docstring)."""
        check_peer(peer_id)
        address = self._addresses.get(peer_id)
        if address is None:
            raise UnknownPeer(f"no known address for peer {peer_id}")
        conn = self._transport.open(peer_id, address, handler=self._handler)
        self._registry.add(conn)
        return conn


# --- configuration ---------------------------------------------------------------------------


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
        .with_retry_on((RequestTimeout,))
    )


@dataclass(frozen=True, slots=True)
class AntiEntropyConfig:
    """Settings of the anti-entropy actor.

    :param sync_interval: seconds between rounds (> 0); each wait is
        jittered by +-10 % so nodes do not sync in lockstep.
    :param peers_per_round: peers synced per round (1..64).
    :param batch_size: ops per pull/push message (1..128).
    :param request_timeout: seconds one network request may take (> 0).
    :param ask_timeout: seconds one ask to an infrastructure actor may take (> 0).
    :param require_capability: refuse sync requests of peers that have not
        presented a valid capability token, and present ours.
    :param refuse_sync: refuse every sync request and run no rounds.
    :param list_threshold: a differing range with at most this many ids
        (each side) is listed instead of split (1..1024).
    :param max_cached_skips: rounds in a row a peer may be skipped on a
        fresh cached digest (0 disables the cache).
    :param exchange_every: run peer exchange every this many rounds (>= 1).
    :param max_dials: most dials in flight at once (>= 1).
    :param retry: planner for failed sessions.
    :param request_retry: planner for timed-out requests inside a session.
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
    retry: RetryPolicy = field(default_factory=_default_retry)
    request_retry: RetryPolicy = field(default_factory=_default_request_retry)

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
        for name in ("require_capability", "refuse_sync"):
            check_bool(getattr(self, name), name)
        for name in ("retry", "request_retry"):
            if not isinstance(getattr(self, name), RetryPolicy):
                raise WrongType(f"{name} must be a RetryPolicy, got {getattr(self, name)!r}")


# --- asks whose reply comes back as a message ------------------------------------------------


class _ResumeSlot(ReplySlot):
    """A reply slot that forwards the reply to an actor's mailbox as a :class:`_Resume`.

    Once its task is abandoned (the incarnation stopped or crashed) the slot
    is ``orphaned``: a reply that still comes gives back what it obtained
    (:func:`_give_back`) instead of resuming a task that no longer exists.
    Once the ask has ``timed_out``, a reply that comes after all is given
    back the same way (the pool gives back its own loans: it sees the refusal).
    """

    __slots__ = ("_ask", "_owner", "_step", "_task", "orphaned", "timed_out")

    def __init__(self, owner: ActorAddress, task: int, step: int, ask: _Ask) -> None:
        super().__init__()
        self._owner = owner
        self._task = task
        self._step = step
        self._ask = ask
        self.orphaned = False
        self.timed_out = False

    def set(self, reply: Any) -> bool:
        if super().set(reply):
            return True
        if self.timed_out and not isinstance(reply, PoolLease):
            _give_back(self._ask, reply)  # e.g. a session opened after we stopped waiting
        return False

    def _deliver(self, reply: Any) -> None:
        if self.orphaned:
            _give_back(self._ask, reply)
        else:
            self._owner.tell(_Resume(self._task, self._step, reply, ask=self._ask))


# Things a round generator yields; the actor performs them and resumes it.


@dataclass(frozen=True, slots=True)
class _Ask:
    target: ActorAddress
    message: Any
    timeout: float


@dataclass(frozen=True, slots=True)
class _Request:
    connection: Connection
    message: Message
    timeout: float


@dataclass(frozen=True, slots=True)
class _Await:
    future: Future[Any]
    timeout: float


@dataclass(frozen=True, slots=True)
class _Sleep:
    delay: float


_Wait = _Ask | _Request | _Await | _Sleep
_Round = Generator[_Wait, Any, None]


@dataclass(slots=True)
class _Task:
    gen: _Round
    label: str
    step: int = 0
    timer: TimerHandle | None = None
    asked: str | None = None
    slot: _ResumeSlot | None = None


@dataclass(slots=True)
class _Session:
    """A sync session in progress with one peer (for cleanup on stop or crash)."""

    peer: DeviceId
    handle: int | None = None
    started: bool = False


# --- the actor -------------------------------------------------------------------------------


class AntiEntropyActor(FaultInjectionMixin, AuraActor):
    """The anti-entropy journal sync protocol actor (see the module docstring).

    :param config: :class:`AntiEntropyConfig`.
    :param journal: the node's journal (owned by the node, used only here).
    :param peer_manager, rate_limiter, pool, cache: addresses of the
        infrastructure actors (stable across their restarts).
    :param connections: the registry the pool's connector fills.
    :param addresses: the node's :class:`AddressBook`.
    :param token: this node's capability token (presented to peers when
        ``config.require_capability``), or None.
    :param clock, scheduler, rng: effects.
    :param stash: the dict that survives restarts (counters, journal epoch).
    :param fault_injection: honour :class:`~aura_sync.messages.faults.InjectCrash`.

    Messages (reply): :class:`SyncTick`, :class:`RetrySync` (told);
    :class:`AppendOps` (:class:`OpsAppended`); :class:`GetSyncStatus`
    (:class:`SyncStatus`); :class:`TransportEventMessage` (told by the
    transport's handler).
    """

    def __init__(
        self,
        config: AntiEntropyConfig,
        *,
        journal: Journal,
        peer_manager: ActorAddress,
        rate_limiter: ActorAddress,
        pool: ActorAddress,
        cache: ActorAddress,
        connections: ConnectionRegistry,
        addresses: AddressBook,
        token: bytes | None = None,
        clock: Clock | None = None,
        scheduler: Scheduler | None = None,
        rng: Rng | None = None,
        stash: dict[str, Any] | None = None,
        fault_injection: bool = False,
    ) -> None:
        super().__init__()
        self._init_faults(fault_injection)
        if not isinstance(config, AntiEntropyConfig):
            raise WrongType(f"config must be an AntiEntropyConfig, got {type(config).__name__}")
        if not isinstance(journal, Journal):
            raise WrongType(f"journal must be a Journal, got {type(journal).__name__}")
        for name, value in (
            ("peer_manager", peer_manager),
            ("rate_limiter", rate_limiter),
            ("pool", pool),
            ("cache", cache),
        ):
            if not isinstance(value, ActorAddress):
                raise WrongType(f"{name} must be an ActorAddress, got {type(value).__name__}")
        if token is not None and type(token) is not bytes:
            raise WrongType(f"token must be bytes or None, got {type(token).__name__}")
        if config.require_capability and not config.refuse_sync and token is None:
            raise InvalidArgument("require_capability needs this node's token, got None")
        self._config = config
        self._journal = journal
        self._peer_manager = peer_manager
        self._rate_limiter = rate_limiter
        self._pool = pool
        self._cache = cache
        self._connections = connections
        self._addresses = addresses
        self._token = token
        self._clock, self._scheduler = resolve_effects(clock, scheduler)
        self._rng: Rng = rng or SystemRng()
        stash = check_stash(stash)
        self._stash = stash
        stats = stash.get(_STATS_KEY)
        if not isinstance(stats, dict):
            stats = dict.fromkeys(_STAT_NAMES, 0)
            stash[_STATS_KEY] = stats
        self._stats: dict[str, int] = stats
        answered = stash.get(_ANSWERED_KEY)
        if not isinstance(answered, dict):
            answered = {}
            stash[_ANSWERED_KEY] = answered
        self._answered: dict[str, int] = answered
        self._tasks: dict[int, _Task] = {}
        # Unique across incarnations: a reply to a task of a dead incarnation must
        # never resume a task of this one that happens to have the same number.
        task_ids = stash.get(_TASK_IDS_KEY)
        if not isinstance(task_ids, itertools.count):
            task_ids = itertools.count(1)
            stash[_TASK_IDS_KEY] = task_ids
        self._task_ids: itertools.count[int] = task_ids
        self._sessions: dict[int, _Session] = {}
        self._authorized: set[DeviceId] = set()
        self._open: dict[DeviceId, set[str]] = {}
        self._presented: set[str] = set()
        self._dialing: set[DeviceId] = set()
        # peer -> (failed dial attempts, clock time of the next attempt, last delay)
        self._dial_plan: dict[DeviceId, tuple[int, float, float | None]] = {}
        self._syncing: set[DeviceId] = set()
        self._cached: set[str] = set()
        self._skips: dict[DeviceId, int] = {}
        self._cache_dirty = False
        self._ticks = 0
        self._tick_timer: TimerHandle | None = None
        self._own_ops = journal.own_ops
        refused = stash.get(_REFUSED_KEY)
        if not isinstance(refused, dict):
            refused = {}
            stash[_REFUSED_KEY] = refused
        self._refused: dict[DeviceId, int] = refused

    # --- lifecycle ------------------------------------------------------------------------

    @property
    def _epoch(self) -> int:
        value: int = self._stash.get(_EPOCH_KEY, 0)
        return value

    def _bump_epoch(self) -> None:
        self._stash[_EPOCH_KEY] = self._epoch + 1
        self._cache_dirty = True

    def on_start(self) -> None:
        """Learn which peers already hold the capability, then start the round timer."""
        self._spawn(self._recover(), "recover")
        self._schedule_tick(initial=True)

    def on_stop(self) -> None:
        """Abandon the rounds in flight: give their connections and sessions back."""
        self._abandon("stopping")

    def on_crash(self, exc: BaseException) -> None:
        """Same as :meth:`on_stop`: a dead incarnation must not keep loans or sessions."""
        self._abandon(f"crashed: {type(exc).__name__}")

    def _abandon(self, why: str) -> None:
        if self._tick_timer is not None:
            self._tick_timer.cancel()
        sessions = list(self._sessions.values())
        self._sessions.clear()
        for session in sessions:
            if session.handle is not None:
                self._pool.tell(CloseConnection(session.handle))
            if session.started:
                self._peer_manager.tell(EndSyncSession(session.peer, False, 0.0))
        if sessions:
            _log.info("event=sessions_abandoned count=%d reason=%r", len(sessions), why)
        tasks = list(self._tasks.values())
        self._tasks.clear()
        for task in tasks:
            if task.timer is not None:
                task.timer.cancel()
            if task.slot is not None:
                task.slot.orphaned = True  # a late reply gives back what it obtained
            task.gen.close()

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

    # --- task machinery (generators suspended on asks and requests) ----------------------

    def _spawn(self, gen: _Round, label: str) -> None:
        task_id = next(self._task_ids)
        self._tasks[task_id] = _Task(gen, label)
        self._step(task_id, None, None)

    def _step(self, task_id: int, value: Any, error: BaseException | None) -> None:
        task = self._tasks.get(task_id)
        if task is None:
            return
        while True:
            try:
                wait = task.gen.send(value) if error is None else task.gen.throw(error)
            except StopIteration:
                self._tasks.pop(task_id, None)
                return
            except AuraError as exc:
                self._tasks.pop(task_id, None)
                _log.info("event=task_failed task=%s error=%r", task.label, str(exc))
                return
            except BaseException:
                self._tasks.pop(task_id, None)
                raise
            task.step += 1
            value, error = None, None
            try:
                self._perform(task_id, task, wait)
            except AuraError as exc:  # could not even start: resume with the error at once
                error = exc
                continue
            return

    def _perform(self, task_id: int, task: _Task, wait: _Wait) -> None:
        step = task.step
        owner = self.address
        if isinstance(wait, _Ask):
            slot = _ResumeSlot(owner, task_id, step, wait)
            task.slot = slot

            def expire() -> None:
                slot.timed_out = True
                slot.set(
                    ErrorReply(
                        "AskTimeout",
                        f"no reply from {wait.target} to {type(wait.message).__name__} "
                        f"within {wait.timeout} s",
                    )
                )

            task.timer = self._scheduler.call_after(wait.timeout, expire)
            task.asked = wait.target.name
            wait.target.ask_with(wait.message, slot)
        elif isinstance(wait, _Request):
            future = wait.connection.request(wait.message, wait.timeout)
            future.add_done_callback(lambda f: owner.tell(_Resume(task_id, step, f)))
        elif isinstance(wait, _Await):
            fut = wait.future
            done = threading.Lock()

            def finish(value: Any) -> None:
                if done.acquire(False):
                    owner.tell(_Resume(task_id, step, value))

            task.timer = self._scheduler.call_after(
                wait.timeout,
                lambda: finish(AskTimeout(f"not done within {wait.timeout} s")),
            )
            fut.add_done_callback(finish)
        else:
            task.timer = self._scheduler.call_after(
                wait.delay, lambda: owner.tell(_Resume(task_id, step, None))
            )

    @handles(_Resume)
    def _on_resume(self, msg: _Resume) -> None:
        task = self._tasks.get(msg.task)
        if task is None or task.step != msg.step:
            # A late answer for an abandoned or timed-out wait: nobody will use it.
            if msg.ask is not None:
                _give_back(msg.ask, msg.value)
            return
        task.slot = None
        if task.timer is not None:
            task.timer.cancel()
            task.timer = None
        value: Any = msg.value
        error: BaseException | None = msg.error
        if task.asked is not None:
            if not (isinstance(value, ErrorReply) and value.error_type == "AskTimeout"):
                self._answered[task.asked] = self._answered.get(task.asked, 0) + 1
            task.asked = None
        if isinstance(value, Future):
            error = value.exception()
            value = value.result() if error is None else None
        elif isinstance(value, BaseException):
            value, error = None, value
        if isinstance(value, ErrorReply):
            error = value.to_exception()
            value = None
        self._step(msg.task, value, error)

    def _ask(self, target: ActorAddress, msg: Any) -> _Ask:
        return _Ask(target, msg, self._config.ask_timeout)

    def _request(self, conn: Connection, msg: Message) -> Generator[_Wait, Any, Any]:
        """One network request, retried on timeouts with the request retry planner."""
        policy = self._config.request_retry
        attempt = 0
        prev: float | None = None
        start = self._clock.now()
        while True:
            try:
                reply = yield _Request(conn, msg, self._config.request_timeout)
            except RequestTimeout as exc:
                decision = policy.plan(
                    attempt, exc, prev, max(0.0, self._clock.now() - start), self._rng
                )
                if not decision.should_retry:
                    raise
                self._stats["request_retries"] += 1
                prev = decision.delay
                attempt += 1
                yield _Sleep(decision.delay)
                continue
            policy.record_success()
            return reply

    # --- rounds ---------------------------------------------------------------------------

    @handles(SyncTick)
    def _on_tick(self, msg: SyncTick) -> None:
        self._stats["messages_handled"] += 1
        self._schedule_tick()
        if self._config.refuse_sync:
            return
        self._ticks += 1
        self._stats["rounds_started"] += 1
        if self._cache_dirty and self._cached:
            self._cache.tell(InvalidateKeys(tuple(sorted(self._cached)), self._epoch))
            self._cached.clear()
        self._cache_dirty = False
        self._spawn(self._round(), "round")

    def _round(self) -> _Round:
        table = yield self._ask(self._peer_manager, GetPeerTable())
        assert isinstance(table, PeerTableReply)
        now = self._clock.now()
        for info in table.peers:
            meta = info.metadata
            peer = info.peer_id
            if info.address is not None:
                self._addresses.learn(peer, info.address, verified=False)
            if (
                meta.status is not PeerStatus.CONNECTED
                and meta.status is not PeerStatus.REMOVED
                and peer not in self._dialing
                and (meta.backoff_until is None or meta.backoff_until <= now)
                and self._dial_plan.get(peer, (0, 0.0, None))[1] <= now
                and self._addresses.get(peer) is not None
                and len(self._dialing) < self._config.max_dials
            ):
                self._dialing.add(peer)
                self._spawn(self._dial(peer), f"dial {peer}")
        selected = yield self._ask(
            self._peer_manager, SelectSyncPeers(self._config.peers_per_round)
        )
        assert isinstance(selected, SelectedPeers)
        for peer in selected.peers:
            if peer not in self._syncing:
                self._syncing.add(peer)
                self._spawn(self._sync_peer(peer, 0, None, self._clock.now()), f"sync {peer}")
        if selected.peers and (self._ticks - 1) % self._config.exchange_every == 0:
            peer = selected.peers[self._rng.randrange(len(selected.peers))]
            self._spawn(self._exchange(peer), f"exchange {peer}")

    def _dial(self, peer: DeviceId) -> _Round:
        """Connect to a known peer through the pool; on success it becomes CONNECTED."""
        self._stats["dials"] += 1
        session = _Session(peer)
        sid = id(session)
        self._sessions[sid] = session
        try:
            try:
                acquired = yield self._ask(self._pool, Acquire(peer, 0.0))
                assert isinstance(acquired, PoolLease)
                session.handle = acquired.handle_id
                conn = self._connections.get(acquired.session_id)
                if conn is None:
                    raise ConnectionClosed(f"the pool lent a connection to {peer} that is gone")
                yield _Await(conn.ready, self._config.request_timeout * 2)
                yield from self._present(conn)
            except AuraError as exc:
                self._stats["dial_failures"] += 1
                if session.handle is not None:
                    self._pool.tell(CloseConnection(session.handle))
                    session.handle = None
                attempt, _, prev = self._dial_plan.get(peer, (0, 0.0, None))
                plan = self._config.retry.plan(attempt, exc, prev, 0.0, self._rng)
                if plan.should_retry:
                    self._stats["retries"] += 1
                    self._dial_plan[peer] = (
                        attempt + 1,
                        self._clock.now() + plan.delay,
                        plan.delay,
                    )
                else:  # the retry policy gave up: the peer manager's failure backoff takes over
                    self._dial_plan.pop(peer, None)
                    self._peer_manager.tell(RecordFailure(peer))
                _log.info(
                    "event=dial_failed peer=%s attempt=%d retry_in=%s error=%r",
                    peer,
                    attempt,
                    f"{plan.delay:.3f}" if plan.should_retry else "backoff",
                    str(exc),
                )
                return
            self._dial_plan.pop(peer, None)
            self._pool.tell(Release(peer, session.handle))
            session.handle = None
        finally:
            self._sessions.pop(sid, None)
            self._dialing.discard(peer)

    def _present(self, conn: Connection) -> Generator[_Wait, Any, None]:
        """Present our capability token once per connection (when capabilities are on)."""
        if not self._config.require_capability or self._token is None:
            return
        if conn.session_id in self._presented:
            return
        reply = yield from self._request(conn, PresentCapability(self._token))
        if not isinstance(reply, Ack):
            raise CapabilityError(f"peer {conn.peer_id} answered our token with {reply!r:.80}")
        self._presented.add(conn.session_id)

    def _sync_peer(
        self, peer: DeviceId, attempt: int, prev_delay: float | None, started: float
    ) -> _Round:
        """One sync session with ``peer`` (attempt ``attempt``, 0-based)."""
        session = _Session(peer)
        sid = id(session)
        self._sessions[sid] = session
        error: AuraError | None = None
        t0 = self._clock.now()
        try:
            key = f"aura-sync/digest/{peer}"
            if attempt == 0 and self._config.max_cached_skips > 0:
                cached = yield self._ask(self._cache, GetValue(key, self._epoch))
                skips = self._skips.get(peer, 0)
                if (
                    isinstance(cached, bytes)  # a miss is answered Ack
                    and cached == self._journal.digest().fingerprint
                    and skips < self._config.max_cached_skips
                ):
                    self._skips[peer] = skips + 1
                    self._stats["rounds_skipped"] += 1
                    return
            self._skips[peer] = 0
            conn: Connection | None = None
            try:
                decision = yield self._ask(self._rate_limiter, CheckRateLimit(peer, 1))
                _raise_if_denied(decision)
                yield self._ask(self._peer_manager, StartSyncSession(peer))
                session.started = True
                acquired = yield self._ask(self._pool, Acquire(peer))
                assert isinstance(acquired, PoolLease)
                session.handle = acquired.handle_id
                conn = self._connections.get(acquired.session_id)
                if conn is None:
                    raise ConnectionClosed(f"the pool lent a connection to {peer} that is gone")
                yield from self._present(conn)
                agreed = yield from self._reconcile(conn)
            except AuraError as exc:
                error = exc
                if isinstance(exc, OpRefused):
                    self._count_refusal(peer, exc)
                if isinstance(exc, CapabilityError) and conn is not None:
                    self._presented.discard(conn.session_id)  # present again next time
            else:
                agreed_at = self._epoch
                if agreed is not None:
                    self._cache.tell(PutValue(key, agreed, agreed_at))
                    self._cached.add(key)
            if session.handle is not None:
                broken = isinstance(error, TransportError)
                self._pool.tell(
                    CloseConnection(session.handle) if broken else Release(peer, session.handle)
                )
                session.handle = None
            if session.started:
                latency = max(0.0, self._clock.now() - t0)
                self._peer_manager.tell(EndSyncSession(peer, error is None, latency))
                session.started = False
            _log.debug(
                "event=sync_session peer=%s attempt=%d ok=%s seconds=%.4f error=%r",
                peer,
                attempt,
                error is None,
                self._clock.now() - t0,
                None if error is None else str(error),
            )
            if error is None:
                self._stats["rounds_succeeded"] += 1
                self._config.retry.record_success()
                return
            if isinstance(error, RateLimited):
                self._stats["rate_limited"] += 1
            elif not isinstance(error, PeerUnavailable):
                self._stats["rounds_failed"] += 1
            _log.info("event=sync_failed peer=%s attempt=%d error=%r", peer, attempt, str(error))
            plan = self._config.retry.plan(
                attempt, error, prev_delay, max(0.0, self._clock.now() - started), self._rng
            )
            if plan.should_retry:
                self._stats["retries"] += 1
                self._scheduler.send_after(
                    plan.delay,
                    self.address,
                    RetrySync(peer, attempt + 1, float(plan.delay), float(max(0.0, started))),
                )
        finally:
            self._sessions.pop(sid, None)
            self._syncing.discard(peer)

    @handles(RetrySync)
    def _on_retry(self, msg: RetrySync) -> None:
        self._stats["messages_handled"] += 1
        if self._config.refuse_sync or msg.peer_id in self._syncing:
            return
        self._syncing.add(msg.peer_id)
        self._spawn(
            self._sync_peer(msg.peer_id, msg.attempt, msg.prev_delay, msg.started),
            f"retry {msg.peer_id}",
        )

    def _reconcile(self, conn: Connection) -> Generator[_Wait, Any, bytes | None]:
        """Make both journals hold the union; returns the agreed full fingerprint, if any."""
        journal = self._journal
        cfg = self._config
        reply = yield from self._request(conn, DigestRequest((FULL_RANGE,)))
        remote = _digests(reply, 1)[0]
        if remote.fingerprint == journal.digest().fingerprint:
            return remote.fingerprint
        pull: list[bytes] = []
        push: list[bytes] = []
        pending = [(FULL_RANGE, remote)]
        while pending:
            split: list[IdRange] = []
            for id_range, theirs in pending:
                ours = journal.digest(id_range)
                if ours.fingerprint == theirs.fingerprint:
                    continue
                if theirs.count == 0:
                    push.extend(journal.not_in((), id_range))
                elif max(ours.count, theirs.count) <= cfg.list_threshold or ours.count == 0:
                    ids = yield from self._list_ids(conn, id_range)
                    pull.extend(journal.missing(ids))
                    push.extend(journal.not_in(ids, id_range))
                else:
                    split.extend(id_range.split(16))
            pending = []
            for chunk in _chunks(split, MAX_RANGES):
                reply = yield from self._request(conn, DigestRequest(tuple(chunk)))
                pending.extend(zip(chunk, _digests(reply, len(chunk)), strict=True))
        buffer = PullBuffer(journal)
        for batch in _chunks(pull, cfg.batch_size):
            reply = yield from self._request(conn, OpsRequest(tuple(batch)))
            if not isinstance(reply, OpsReply):
                raise InvalidArgument(f"peer answered OpsRequest with {type(reply).__name__}")
            wanted = set(batch)
            added = buffer.take([op for op in reply.ops if op.op_id in wanted])
            if added:
                self._stats["ops_pulled"] += added
                self._bump_epoch()
        added = buffer.flush()
        if added:
            self._stats["ops_pulled"] += added
            self._bump_epoch()
        for batch in _chunks(journal.push_order(push), cfg.batch_size):
            ops = journal.get_many(batch)
            if not ops:
                continue
            reply = yield from self._request(conn, PushOps(tuple(ops)))
            if not isinstance(reply, PushAck):
                raise InvalidArgument(f"peer answered PushOps with {type(reply).__name__}")
            self._stats["ops_pushed"] += reply.added
        final = yield from self._request(conn, DigestRequest((FULL_RANGE,)))
        theirs_now = _digests(final, 1)[0].fingerprint
        return theirs_now if theirs_now == journal.digest().fingerprint else None

    def _list_ids(self, conn: Connection, id_range: IdRange) -> Generator[_Wait, Any, list[bytes]]:
        out: list[bytes] = []
        current = id_range
        while True:
            reply = yield from self._request(conn, IdsRequest(current, MAX_IDS_BATCH))
            if not isinstance(reply, IdsReply):
                raise InvalidArgument(f"peer answered IdsRequest with {type(reply).__name__}")
            out.extend(reply.ids)
            if reply.next_lo is None:
                return out
            current = IdRange(reply.next_lo, id_range.hi)

    def _exchange(self, peer: DeviceId) -> _Round:
        """Ask ``peer`` for the addresses of its verified peers; track the new ones."""
        session = _Session(peer)  # so that a stop or crash meanwhile gives the loan back
        sid = id(session)
        self._sessions[sid] = session
        try:
            acquired = yield self._ask(self._pool, Acquire(peer, 0.0))
            assert isinstance(acquired, PoolLease)
            handle = acquired.handle_id
            session.handle = handle
            error: AuraError | None = None
            try:
                conn = self._connections.get(acquired.session_id)
                if conn is None:
                    raise ConnectionClosed(f"the pool lent a connection to {peer} that is gone")
                reply = yield from self._request(conn, PeerExchangeRequest())
            except AuraError as exc:
                error = exc
                reply = None
            self._pool.tell(
                CloseConnection(handle)
                if isinstance(error, TransportError)
                else Release(peer, handle)
            )
            session.handle = None
        finally:
            self._sessions.pop(sid, None)
        if not isinstance(reply, PeerExchange):
            return
        self._stats["peer_exchanges"] += 1
        me = self._journal.author
        candidates = []
        for entry in reply.peers:
            if entry.device_id == me:
                continue
            self._addresses.learn(entry.device_id, entry.address, verified=False)
            candidates.append(PeerCandidate(entry.device_id, entry.address))
        if candidates:
            yield self._ask(self._peer_manager, DiscoverPeers(tuple(candidates)))

    def _recover(self) -> _Round:
        """After a (re)start: peers already holding the capability stay authorized."""
        table = yield self._ask(self._peer_manager, GetPeerTable())
        if isinstance(table, PeerTableReply):
            for info in table.peers:
                if info.metadata.has_sync_capability:
                    self._authorized.add(info.peer_id)

    # --- serving ----------------------------------------------------------------------------

    @handles(TransportEventMessage)
    def _on_transport(self, msg: TransportEventMessage) -> None:
        self._stats["messages_handled"] += 1
        event = msg.event
        if isinstance(event, Inbound):
            self._serve(event)
        elif isinstance(event, Connected):
            self._connected(event.connection)
        elif isinstance(event, Disconnected):
            self._disconnected(event.connection)

    def _connected(self, conn: Connection) -> None:
        peer = conn.peer_id
        self._connections.add(conn)
        self._open.setdefault(peer, set()).add(conn.session_id)
        address = conn.peer_listen_address
        if address:
            self._addresses.learn(peer, address, verified=True)
        self._spawn(self._mark_connected(peer, address), f"connected {peer}")
        if self._config.require_capability and self._token is not None and conn.initiator:
            # Our token goes to a peer we chose and TLS proved; an accepting side
            # presents only once the dialer proved its own token (_verify_token).
            self._spawn(self._present_on(conn), f"present {peer}")

    def _present_on(self, conn: Connection) -> _Round:
        try:
            yield from self._present(conn)
        except AuraError as exc:
            _log.info("event=present_failed peer=%s error=%r", conn.peer_id, str(exc))

    def _mark_connected(self, peer: DeviceId, address: str | None) -> _Round:
        yield self._ask(self._peer_manager, AddPeer(peer, address))
        yield self._ask(self._peer_manager, SetPeerStatus(peer, PeerStatus.CONNECTED))
        yield self._ask(self._peer_manager, UpdatePeerMetadata(peer, verified=True))

    def _disconnected(self, conn: Connection) -> None:
        peer = conn.peer_id
        self._connections.discard(conn)
        self._presented.discard(conn.session_id)
        sessions = self._open.get(peer)
        if sessions is not None:
            sessions.discard(conn.session_id)
            if not sessions:
                del self._open[peer]
                self._peer_manager.tell(SetPeerStatus(peer, PeerStatus.DISCONNECTED))

    def _serve(self, event: Inbound) -> None:
        request = event.message
        peer = event.connection.peer_id
        if event.request_id is None:
            _log.debug(
                "event=one_way_message_ignored peer=%s type=%s", peer, type(request).__name__
            )
            return
        if isinstance(request, PresentCapability):
            self._spawn(self._verify_token(event, peer, request.token), f"token {peer}")
            return
        if not isinstance(request, _SYNC_REQUESTS):
            _respond(
                event,
                ErrorReply("UnhandledMessage", f"not a sync request: {type(request).__name__}"),
            )
            return
        if self._config.refuse_sync:
            self._stats["requests_refused"] += 1
            _respond(event, ErrorReply("PeerUnavailable", "this node refuses to sync"))
            return
        if self._config.require_capability and peer not in self._authorized:
            self._stats["requests_refused"] += 1
            _respond(
                event,
                ErrorReply(
                    "CapabilityError",
                    f"peer {peer} has not presented a valid capability token "
                    f"granting sync:request_digest",
                ),
            )
            return
        try:
            reply = self._answer(request, peer)
        except AuraError as exc:
            reply = ErrorReply.from_exception(exc)
        self._stats["requests_served"] += 1
        _respond(event, reply)

    def _answer(self, request: Message, peer: DeviceId) -> Message:
        journal = self._journal
        if isinstance(request, DigestRequest):
            return DigestReply(journal.digests(request.ranges))
        if isinstance(request, IdsRequest):
            ids, next_lo = journal.list_ids(request.id_range, request.limit)
            return IdsReply(ids, next_lo)
        if isinstance(request, OpsRequest):
            ops = journal.get_many(request.ids)
            found = {op.op_id for op in ops}
            self._stats["ops_served"] += len(ops)
            return OpsReply(tuple(ops), tuple(i for i in request.ids if i not in found))
        if isinstance(request, PushOps):
            try:
                added = journal.add_many(request.ops)
            except OpRefused as exc:
                self._count_refusal(peer, exc)
                raise
            if added:
                self._stats["ops_received"] += added
                self._bump_epoch()
            return PushAck(added, len(request.ops) - added)
        if isinstance(request, PeerExchangeRequest):
            entries = [PeerAddress(p, a) for p, a in self._addresses.verified() if p != peer][
                : min(request.max_peers, MAX_PEERS_PER_EXCHANGE)
            ]
            return PeerExchange(tuple(entries))
        raise InvalidArgument(f"not a sync request: {type(request).__name__}")

    def _count_refusal(self, peer: DeviceId, exc: OpRefused) -> None:
        self._stats["batches_refused"] += 1
        self._refused[peer] = self._refused.get(peer, 0) + 1
        _log.warning("event=ops_refused peer=%s error=%r", peer, str(exc))

    def _verify_token(self, event: Inbound, peer: DeviceId, token: bytes) -> _Round:
        if not self._config.require_capability:
            _respond(event, Ack())
            return
        try:
            yield self._ask(self._peer_manager, AddPeer(peer, event.connection.peer_listen_address))
            yield self._ask(self._peer_manager, UpdatePeerCapabilities(peer, token))
        except AuraError as exc:
            self._authorized.discard(peer)
            self._stats["requests_refused"] += 1
            _log.warning("event=capability_refused peer=%s error=%r", peer, str(exc))
            _respond(event, ErrorReply.from_exception(exc))
            return
        self._authorized.add(peer)
        _respond(event, Ack())
        conn = event.connection
        if (
            self._token is not None
            and not conn.initiator
            and conn.session_id not in self._presented
        ):
            self._spawn(self._present_on(conn), f"present {peer}")

    # --- local API ---------------------------------------------------------------------------

    @handles(AppendOps)
    def _on_append(self, msg: AppendOps) -> OpsAppended:
        self._stats["messages_handled"] += 1
        ids = self._journal.append_many(msg.payloads)
        self._own_ops += len(ids)
        self._bump_epoch()
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
            authorized=len(self._authorized),
            active_sessions=len(self._sessions),
            answered=tuple(sorted(self._answered.items())),
            refused=tuple(sorted((str(p), n) for p, n in self._refused.items())),
        )


# --- helpers ---------------------------------------------------------------------------------


def _raise_if_denied(decision: Any) -> None:
    """Turn a denial into :class:`RateLimited` carrying the limiter's exact ``retry_after``."""
    if not isinstance(decision, RateLimitDecision):
        raise InvalidArgument(
            f"the rate limiter answered CheckRateLimit with {type(decision).__name__}"
        )
    decision.raise_if_denied()


def _give_back(ask: _Ask, reply: Any) -> None:
    """Undo what an ask obtained for a task that is gone (nobody will ever use it).

    A lent connection is released and an opened sync session is ended (as a
    failure), so a crash or stop of this actor never leaks a pool loan or a
    peer's session count.
    """
    undo: Message | None = None
    if isinstance(reply, PoolLease):
        undo = Release(reply.peer_id, reply.handle_id)
    elif isinstance(ask.message, StartSyncSession) and isinstance(reply, Ack):
        undo = EndSyncSession(ask.message.peer_id, False, 0.0)
    if undo is not None:
        _log.info("event=orphaned_reply_given_back undo=%s", type(undo).__name__)
        ask.target.tell(undo)


def _respond(event: Inbound, reply: Message) -> None:
    try:
        event.respond(reply)
    except TransportError as exc:
        _log.debug("event=respond_failed peer=%s error=%r", event.connection.peer_id, str(exc))
    except AuraError as exc:
        # The reply cannot be sent at all (it encodes over the frame limit): tell the
        # peer so at once, rather than let it wait out its request timeout and retry.
        _log.warning("event=reply_unsendable peer=%s error=%r", event.connection.peer_id, str(exc))
        try:
            event.respond(ErrorReply.from_exception(exc))
        except AuraError as again:
            _log.debug(
                "event=respond_failed peer=%s error=%r", event.connection.peer_id, str(again)
            )


def _digests(reply: Any, expected: int) -> tuple[RangeDigest, ...]:
    if not isinstance(reply, DigestReply):
        raise InvalidArgument(f"peer answered DigestRequest with {type(reply).__name__}")
    if len(reply.digests) != expected:
        raise InvalidArgument(f"peer answered {expected} ranges with {len(reply.digests)} digests")
    return reply.digests


def _chunks(items: list[Any], size: int) -> Iterable[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
