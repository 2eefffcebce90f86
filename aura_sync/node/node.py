"""The long-lived node: identity, journal, transport and the supervision tree, assembled.

Tree (``root`` is REST_FOR_ONE: a restarted transport restarts what depends on it)::

    root
    |-- transport        TransportActor: owns the listener (re-listens on the same port)
    |-- infrastructure   ONE_FOR_ONE: cache, rate_limiter, peer_manager, pool
    `-- protocols        ONE_FOR_ONE: anti_entropy, then the plug-ins (``protocols``)

Start (:meth:`Node.start`): create the data directory (0700), load or create
the Ed25519 identity, read the capability token, open the SQLite journal
(a corrupt one raises :class:`~aura_sync.errors.JournalCorrupt`, never
rewritten), open the state store (``StateCorrupt`` likewise), build the
transport, start the tree, seed the peer manager with the bootstrap peers,
restore the saved peer table, spend and cache floors
(:mod:`~aura_sync.node.state`), and optionally serve ``/health`` and
``/metrics``.  Everything the node needs comes from its
:class:`~aura_sync.node.config.NodeConfig`; time, randomness and the
transport can be injected (tests use a ``ManualClock`` and a
``MemoryNetwork``).

Stop (:meth:`Node.stop`, also on SIGINT/SIGTERM in :func:`run_node`): the
state is saved a last time (a clean save), the
root supervisor stops its children in reverse order (the protocol actor
abandons its round, giving its connections and sessions back; the pool
closes every connection; the transport actor closes the listener), then
the transport's thread ends and the journal is checkpointed and closed
(the SQLite flush), all within ``shutdown_timeout``.  :func:`run_node`
returns exit code 1 if the root supervisor gave up (or the transport's I/O loop
died), else 0.

Event routing
    The transport calls its handlers on its own thread; they only ``tell``
    the protocol actor that declared the message's type
    (:class:`~aura_sync.protocols.plugin.EventRouter`), which buffers events
    that arrive before that actor is up.

Layer: runtime.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import Final

from aura_sync.actors.address import ActorAddress
from aura_sync.effects import Clock, Rng, Scheduler, SystemRng, system_effects
from aura_sync.errors import (
    AuraError,
    ConfigError,
    InvalidArgument,
    StartFailed,
    StateCorrupt,
    SupervisorError,
    SupervisorGaveUp,
    TransportError,
    WrongType,
)
from aura_sync.identity import NodeIdentity
from aura_sync.ids import DeviceId
from aura_sync.messages.faults import InjectCrash
from aura_sync.messages.gossip import GetGossipStats, GossipStats
from aura_sync.messages.peers import RecordFailure
from aura_sync.messages.sync import MAX_APPEND, AppendOps, GetSyncStatus, OpsAppended, SyncStatus
from aura_sync.node.app import ApplicationApi, check_payloads
from aura_sync.node.config import NodeConfig, check_own_token
from aura_sync.node.control import ControlServer
from aura_sync.node.health import SnapshotSources, take_snapshot
from aura_sync.node.metrics import MetricsServer, NodeMetrics, NodeSnapshot, configure_logging
from aura_sync.node.ports import listen_failure, probe_ports
from aura_sync.node.state import STATE_FILE, StatePersister, StateStore
from aura_sync.node.wiring import (
    EventRouter,
    TransportActor,
    build_tree,
    infra_addresses,
    protocol_specs,
)
from aura_sync.protocols.gossip import Gossip
from aura_sync.protocols.journal import Journal
from aura_sync.protocols.journal_files import DataDirLock
from aura_sync.protocols.plugin import ProtocolSpec
from aura_sync.supervisors import Supervisor
from aura_sync.transport.base import Refusal, Transport
from aura_sync.transport.tcp import TcpTransport

__all__ = ["JOURNAL_FILE", "Node", "TransportActor", "run_node"]

_log = logging.getLogger("aura_sync.node")

JOURNAL_FILE: Final = "journal.sqlite3"
"""Name of the journal database inside the data directory."""

_GOSSIP_STATS_TIMEOUT: Final = 2.0
_ACTORS: Final = ("cache", "rate_limiter", "peer_manager", "pool", "anti_entropy")

TransportFactory = Callable[[NodeIdentity], Transport]


# --- the node ------------------------------------------------------------------------------


class Node(ApplicationApi):
    """One aura-sync node (see the module docstring).

    The application API (``read``, ``subscribe``, ``append_async``, ``ops``,
    ``async with``) comes from :class:`~aura_sync.node.app.ApplicationApi`;
    the control socket (``control.sock`` in the data directory) from
    :class:`~aura_sync.node.control.ControlServer`.

    :param config: the validated :class:`NodeConfig`.
    :param transport_factory: builds the transport from the identity
        (default: :class:`~aura_sync.transport.TcpTransport` with mutual TLS).
    :param clock, rng: effects for the supervision tree and the actors
        (default: the system ones).
    :param fault_injection: let actors honour ``InjectCrash`` (default: on
        when ``config.fault_injection``).
    :param protocols: plug-in :class:`~aura_sync.protocols.plugin.ProtocolSpec`
        values started after anti-entropy (then those named by ``config.protocols``).
    """

    def __init__(
        self,
        config: NodeConfig,
        *,
        transport_factory: TransportFactory | None = None,
        clock: Clock | None = None,
        rng: Rng | None = None,
        fault_injection: bool | None = None,
        protocols: Sequence[ProtocolSpec] = (),
    ) -> None:
        if not isinstance(config, NodeConfig):
            raise WrongType(f"config must be a NodeConfig, got {type(config).__name__}")
        if transport_factory is not None and not callable(transport_factory):
            raise WrongType(f"transport_factory must be callable, got {transport_factory!r}")
        if fault_injection is not None and type(fault_injection) is not bool:
            raise WrongType(f"fault_injection must be a bool or None, got {fault_injection!r}")
        if isinstance(protocols, ProtocolSpec) or not all(
            isinstance(p, ProtocolSpec) for p in protocols
        ):
            raise WrongType(f"protocols must be a sequence of ProtocolSpec, got {protocols!r}")
        self.config = config
        self._extra_protocols = tuple(protocols)
        self._protocol_addresses: dict[str, ActorAddress] = {}
        self._transport_factory = transport_factory
        self._clock: Clock = clock or system_effects()[0]
        self._scheduler = Scheduler(self._clock)
        self._rng: Rng = rng or SystemRng()
        self._faults = config.fault_injection if fault_injection is None else fault_injection
        self._identity: NodeIdentity | None = None
        self._journal: Journal | None = None
        self._dir_lock: DataDirLock | None = None
        self._transport: Transport | None = None
        self._root: Supervisor | None = None
        self._infra: Supervisor | None = None
        self._protocols: Supervisor | None = None
        self._metrics: MetricsServer | None = None
        self._control: ControlServer | None = None
        self.metrics = NodeMetrics(self.snapshot, gossip=self._gossip_stats)
        """The node's histograms (``observe_*``) and registry, served at ``/metrics``."""
        self._router = EventRouter()
        self._listen_address = ""
        self._started_at = time.monotonic()
        self._state = "new"
        self._gave_up = threading.Event()
        self._stopped = threading.Event()
        self._refusals = 0
        self._lock = threading.Lock()
        self._peer_manager: ActorAddress | None = None
        self._pool: ActorAddress | None = None
        self._cache: ActorAddress | None = None
        self._rate_limiter: ActorAddress | None = None
        self._anti_entropy: ActorAddress | None = None
        self._store: StateStore | None = None
        self._persister: StatePersister | None = None

    # --- properties ----------------------------------------------------------------------

    @property
    def device_id(self) -> DeviceId:
        """This node's DeviceId (available once started)."""
        if self._identity is None:
            raise InvalidArgument("the node has not been started")
        return self._identity.device_id

    @property
    def listen_address(self) -> str:
        """Where the node accepts peers ("host:port", the port resolved)."""
        return self._listen_address

    @property
    def bootstrap_address(self) -> str:
        """``"<device-id>@host:port"``: what other nodes put in their bootstrap list."""
        return f"{self.device_id}@{self._listen_address}"

    @property
    def metrics_address(self) -> str | None:
        """``"127.0.0.1:<port>"`` of ``/health`` and ``/metrics``, or None."""
        return None if self._metrics is None else self._metrics.address

    @property
    def journal(self) -> Journal:
        """The journal (read it only for inspection; the protocol actor writes it)."""
        if self._journal is None:
            raise InvalidArgument("the node has not been started")
        return self._journal

    @property
    def transport(self) -> Transport:
        """The node's transport."""
        if self._transport is None:
            raise InvalidArgument("the node has not been started")
        return self._transport

    @property
    def root(self) -> Supervisor:
        """The root supervisor."""
        if self._root is None:
            raise InvalidArgument("the node has not been started")
        return self._root

    @property
    def gave_up(self) -> bool:
        """Whether the root supervisor gave up (the node is dead)."""
        return self._gave_up.is_set()

    @property
    def transport_failure(self) -> str | None:
        """Why the TCP transport's I/O loop died (the node is deaf: fatal), else None."""
        transport = self._transport
        return transport.failure if isinstance(transport, TcpTransport) else None

    @property
    def gossip(self) -> Gossip:
        """Publish and subscribe through the ``gossip`` plug-in (enable it with
        ``protocols = ["gossip"]`` or ``Node(..., protocols=[gossip.spec()])``)."""
        return Gossip(self.address_of("gossip"))

    def address_of(self, name: str) -> ActorAddress:
        """The stable address of ``cache``, ``rate_limiter``, ``peer_manager``, ``pool``,
        ``anti_entropy`` or another protocol (by its id)."""
        addresses = {
            "cache": self._cache,
            "rate_limiter": self._rate_limiter,
            "peer_manager": self._peer_manager,
            "pool": self._pool,
            "anti_entropy": self._anti_entropy,
            **self._protocol_addresses,
        }
        if name not in addresses:
            raise InvalidArgument(f"unknown actor {name!r}; known: {', '.join(addresses)}")
        address = addresses[name]
        if address is None:
            raise InvalidArgument("the node has not been started")
        return address

    # --- start ---------------------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> Node:
        """Start everything (see the module docstring); returns ``self``.

        :raises ConfigError: the data directory or token file is unusable, or the
            metrics port cannot be bound.
        :raises IdentityError: the key file is unsafe or corrupt.
        :raises JournalCorrupt: the journal database is corrupt or foreign.
        :raises StartFailed: a child of the tree failed to start (e.g. the
            listen address is taken); everything started is stopped again.
        """
        if self._state != "new":
            raise InvalidArgument(f"a node starts once; this one is {self._state}")
        self._state = "starting"
        cfg = self.config
        try:
            self._prepare_data_dir(cfg.data_dir)
            self._identity = NodeIdentity.load_or_create(cfg.data_dir)
            token = self._read_token()
            self._journal = Journal.open(cfg.data_dir / JOURNAL_FILE, identity=self._identity)
            if cfg.state.enabled:  # a corrupt state file stops the start before the tree
                self._store = StateStore.open(cfg.data_dir / STATE_FILE)
            self._transport = self._make_transport(self._identity)
            self._root = self._build_tree(token)
            self._root.start(timeout)
            self._resolve_addresses()
            self._start_state()
            self._control = ControlServer(self)
            if cfg.metrics_port is not None:
                try:
                    self._metrics = MetricsServer(
                        self.snapshot,
                        cfg.metrics_port,
                        host=cfg.metrics_listen,
                        metrics=self.metrics,
                    )
                except TransportError as exc:  # the port is taken or not ours to bind
                    raise TransportError(
                        f"{exc} (config keys metrics_listen={cfg.metrics_listen!r}, "
                        f"metrics_port={cfg.metrics_port})"
                    ) from None
        except BaseException:
            self._state = "failed"
            self._teardown(cfg.shutdown_timeout)
            raise
        self._started_at = time.monotonic()
        self._state = "ok"
        _log.info(
            "event=node_started device_id=%s listen=%s metrics=%s bootstrap=%d ops=%d",
            self._identity.device_id,
            self._listen_address,
            self.metrics_address,
            len(cfg.bootstrap),
            len(self._journal),
        )
        return self

    def _prepare_data_dir(self, path: Path) -> None:
        try:
            path.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise ConfigError(
                f"config key 'data_dir' has invalid value {str(path)!r}: cannot create it "
                f"({exc.strerror or exc})"
            ) from None
        if not path.is_dir():
            raise ConfigError(
                f"config key 'data_dir' has invalid value {str(path)!r}: not a directory"
            )
        self._dir_lock = DataDirLock(path)  # one process per data directory

    def _read_token(self) -> bytes | None:
        path = self.config.token_path
        if path is None:
            return None
        try:
            text = path.read_text(encoding="ascii").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(
                f"config key 'token_path' has invalid value {str(path)!r}: cannot read it ({exc})"
            ) from None
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        except (binascii.Error, ValueError):
            raise ConfigError(
                f"config key 'token_path' has invalid value {str(path)!r}: not base64 text"
            ) from None
        if not raw:
            raise ConfigError(f"config key 'token_path' has invalid value {str(path)!r}: empty")
        assert self._identity is not None
        return check_own_token(raw, self.config, self._identity.device_id)

    def _make_transport(self, identity: NodeIdentity) -> Transport:
        if self._transport_factory is not None:
            return self._transport_factory(identity)
        return TcpTransport(identity, self.config.transport, on_refused=self._on_refused)

    def _on_refused(self, refusal: Refusal) -> None:
        """Transport thread: a connection was refused (impostor, plaintext, over the limit)."""
        with self._lock:
            self._refusals += 1
        _log.warning(
            "event=connection_refused kind=%s remote=%s expected=%s presented=%s reason=%r",
            refusal.kind.value,
            refusal.remote_address,
            refusal.expected,
            refusal.presented,
            refusal.reason,
        )
        if refusal.expected is not None and self._peer_manager is not None:
            self._peer_manager.tell(RecordFailure(refusal.expected))

    def _build_tree(self, token: bytes | None) -> Supervisor:
        assert self._transport is not None and self._journal is not None

        def on_listening(address: str) -> None:
            self._listen_address = address

        self._router.set_routes(protocol_specs(self.config, self._extra_protocols))
        tree = build_tree(
            self.config,
            transport=self._transport,
            journal=self._journal,
            router=self._router,
            token=token,
            faults=self._faults,
            on_listening=on_listening,
            on_give_up=self._on_give_up,
            effects=(self._clock, self._scheduler, self._rng),
            observer=self.metrics,
        )
        self._infra, self._protocols = tree.infra, tree.protocols
        return tree.root

    def _resolve_addresses(self) -> None:
        assert self._infra is not None and self._protocols is not None
        found = infra_addresses(self._infra)
        self._cache = found["cache"]
        self._rate_limiter = found["rate_limiter"]
        self._peer_manager = found["peer_manager"]
        self._pool = found["pool"]
        self._anti_entropy = self._protocols.child_address("anti_entropy")
        self._protocol_addresses = {
            spec.id: self._protocols.child_address(spec.id) for spec in self._router.routes.specs
        }

    def _start_state(self) -> None:
        """Restore the saved state into the started actors, then save it periodically."""
        if self._store is None:
            return
        persister = StatePersister(
            self._store,
            peer_manager=self.address_of("peer_manager"),
            rate_limiter=self.address_of("rate_limiter"),
            cache=self.address_of("cache"),
            clock=self._clock,
            config=self.config.state,
            rate_limit=self.config.rate_limit,
            max_peers=self.config.peers.max_tracked_peers,
        )
        try:
            persister.restore()
        except (InvalidArgument, WrongType) as exc:  # decoded, but refused by a core
            raise StateCorrupt(f"state store {str(self._store.path)!r}: {exc}") from None
        self._persister = persister  # only now may a save replace the file
        persister.start()

    def save_state(self) -> None:
        """Save the peer table, spend and cache floors now (blocking; not for actors)."""
        if self._persister is None:
            raise InvalidArgument("the node is not running with a state store")
        self._persister.save()

    def _on_give_up(self, exc: SupervisorGaveUp) -> None:
        _log.error("event=root_gave_up reason=%r", str(exc))
        self._state = "failed"
        self._gave_up.set()

    # --- operations ----------------------------------------------------------------------

    def append(
        self, payloads: list[bytes] | tuple[bytes, ...], timeout: float = 10.0
    ) -> OpsAppended:
        """Author ops with these payloads (durable when this returns); blocking, not for actors.

        :raises AuraError: the actor refused (bad payload) or did not answer in time.
        """
        check_payloads(payloads, MAX_APPEND)
        return self.address_of("anti_entropy").call(AppendOps(tuple(payloads)), timeout)

    def sync_status(self, timeout: float = 5.0) -> SyncStatus:
        """The protocol actor's :class:`SyncStatus` (blocking ask)."""
        started = time.monotonic()
        try:
            return self.address_of("anti_entropy").call(GetSyncStatus(), timeout)
        finally:
            self.metrics.observe_ask("anti_entropy", time.monotonic() - started)

    def _journal_reader_path(self) -> Path:
        if self._journal is None:
            raise InvalidArgument("the node has not been started")
        return self.config.data_dir / JOURNAL_FILE

    @property
    def fault_injection(self) -> bool:
        """Whether actors honour ``InjectCrash`` (``aura-sync crash``)."""
        return self._faults

    def supervisors(self) -> dict[str, Supervisor | None]:
        """The supervisors of the tree by name (None before start)."""
        return {"root": self._root, "infrastructure": self._infra, "protocols": self._protocols}

    def inject_crash(self, target: str, reason: str = "injected by the demo") -> None:
        """Crash one actor on purpose (needs fault injection); its supervisor restarts it."""
        if target not in _ACTORS:
            raise InvalidArgument(f"target must be one of {', '.join(_ACTORS)}, got {target!r}")
        if not self._faults:
            raise InvalidArgument("fault injection is disabled on this node")
        self.address_of(target).tell(InjectCrash(reason))

    # --- observation ----------------------------------------------------------------------

    def snapshot(self) -> NodeSnapshot:
        """Everything ``/health`` and ``/metrics`` report (blocking asks with short timeouts)."""
        with self._lock:
            refusals = self._refusals
        started = self._state == "ok"
        return take_snapshot(
            SnapshotSources(
                status=self._state,
                device_id=str(self._identity.device_id) if self._identity else "",
                listen_address=self._listen_address,
                uptime=max(0.0, time.monotonic() - self._started_at),
                addresses={n: self.address_of(n) for n in _ACTORS} if started else {},
                root=self._root,
                nested={"infrastructure": self._infra, "protocols": self._protocols},
                transport=self._transport,
                refusals=refusals,
                transport_failure=self.transport_failure,
                observe=self.metrics.observe_ask,
                now=self._clock.now,
                defence=self.config.defence,
            )
        )

    def _gossip_stats(self) -> GossipStats | None:
        """The gossip actor's stats for ``/metrics`` (None: this node runs no gossip)."""
        address = self._protocol_addresses.get("gossip")
        if address is None:
            return None
        return address.call(GetGossipStats(), _GOSSIP_STATS_TIMEOUT)

    # --- stop ----------------------------------------------------------------------------

    def stop(self, timeout: float | None = None) -> None:
        """Stop cleanly within ``timeout`` seconds (default: ``shutdown_timeout``); idempotent."""
        if self._state in ("new", "stopped"):
            self._state = "stopped"
            return
        if self._stopped.is_set():
            return
        self._state = "stopping"
        budget = self.config.shutdown_timeout if timeout is None else timeout
        self._teardown(budget)
        self._state = "stopped"
        _log.info(
            "event=node_stopped device_id=%s", self._identity.device_id if self._identity else ""
        )

    def _teardown(self, budget: float) -> None:
        """Stop everything that was started; a failing step never skips the later ones."""
        deadline = time.monotonic() + budget
        self._router.detach()
        if self._control is not None:
            with contextlib.suppress(Exception):
                self._control.close(1.0)
        if self._persister is not None:  # the last, clean save, while the actors still run
            self._persister.close(max(0.1, deadline - time.monotonic()))
        elif self._store is not None:
            self._store.close()
        if self._metrics is not None:
            with contextlib.suppress(Exception):
                self._metrics.close(1.0)
        if self._root is not None:
            try:
                self._root.stop(max(0.1, deadline - time.monotonic()))
            except (SupervisorError, AuraError) as exc:
                _log.warning("event=stop_incomplete part=root error=%r", str(exc))
            except Exception:  # still close the sockets and the journal below
                _log.exception("event=stop_incomplete part=root")
        if self._transport is not None:
            try:
                if isinstance(self._transport, TcpTransport):
                    self._transport.close(max(0.1, deadline - time.monotonic()))
                else:
                    self._transport.close()
            except AuraError as exc:
                _log.warning("event=stop_incomplete part=transport error=%r", str(exc))
            except Exception:
                _log.exception("event=stop_incomplete part=transport")
        self._close_reader()
        if self._journal is not None:
            try:
                self._journal.close()
            except Exception:
                _log.exception("event=stop_incomplete part=journal")
        if self._dir_lock is not None:
            self._dir_lock.release()
        self._stopped.set()

    def wait_stopped(self, timeout: float | None = None) -> bool:
        """Block until :meth:`stop` completed (True) or ``timeout`` passed (False)."""
        return self._stopped.wait(timeout)

    def __enter__(self) -> Node:
        return self.start() if self._state == "new" else self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --- the process entry point ------------------------------------------------------------------


def run_node(config: NodeConfig, *, ready_file: Path | None = None) -> int:
    """Run a node in this process until SIGINT/SIGTERM or until its root supervisor gives up.

    Installs logging at ``config.log_level`` in ``config.log_format``; writes
    ``ready_file`` (JSON: device_id, listen, metrics, pid) once the node is up.
    Returns the exit code: 0 after a clean stop, 1 if the root supervisor gave
    up or the transport's I/O loop died.
    Raises what :meth:`Node.start` raises; a port that cannot be bound
    (peers or metrics) is a :class:`~aura_sync.errors.TransportError`.
    """
    log_handler = configure_logging(config.log_level, fmt=config.log_format)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if stop.is_set():  # a second signal: the operator does not want to wait
            _log.warning("event=signal signal=%s action=exit_now", name)
            os._exit(130)
        _log.info("event=signal signal=%s action=stop", name)
        stop.set()

    probe_ports(config)
    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    node = Node(config)
    try:
        try:
            node.start()
        except StartFailed as exc:
            reason = listen_failure(str(exc))
            if reason is not None:  # the peer port is taken: not a configuration error
                raise TransportError(f"{reason} (config key listen={config.listen!r})") from exc
            raise
        if ready_file is not None:
            _write_ready(node, ready_file)
        while not stop.is_set() and not node.gave_up and node.transport_failure is None:
            if node.wait_stopped(0):  # stopped through the control socket
                break
            stop.wait(0.2)
        if node.transport_failure is not None:
            _log.error("event=transport_failed reason=%r", node.transport_failure)
        code = 1 if node.gave_up or node.transport_failure is not None else 0
        started = time.monotonic()
        node.stop()
        _log.info(
            "event=shutdown_complete seconds=%.3f exit_code=%d", time.monotonic() - started, code
        )
        return code
    finally:
        node.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        logging.getLogger().removeHandler(log_handler)


def _write_ready(node: Node, path: Path) -> None:
    doc = {
        "device_id": str(node.device_id),
        "listen": node.listen_address,
        "metrics": node.metrics_address,
        "pid": os.getpid(),
    }
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(json.dumps(doc), encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        raise ConfigError(
            f"cannot write the ready file {str(path)!r}: {exc.strerror or exc}"
        ) from None
