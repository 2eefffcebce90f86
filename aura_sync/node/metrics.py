"""Health and Prometheus metrics of a node.

Role
    A node describes itself with one immutable :class:`NodeSnapshot`
    (status, uptime, supervised children and their restart counts, peers by
    status, messages handled per actor, rate-limit decisions, pool
    statistics, sync rounds, operations transferred, journal size and
    digest, transport counters).  Things that take time are recorded as
    they happen into the histograms of :class:`NodeMetrics`; a node that runs
    the gossip protocol adds its counters and cache sizes
    (:class:`GossipCollector`).  This module
    serves both:

    * ``GET /health``: JSON (HTTP 200 when the node is ``ok``, 503 otherwise);
    * ``GET /metrics``: Prometheus text format from a *per-node*
      :class:`prometheus_client.CollectorRegistry` (never the process-global
      one, so several nodes can live in one process), with the process and
      platform collectors.

    Nothing else is served: writes and fault injection go through the
    control socket (:mod:`aura_sync.node.control`).

Guarantees
    The exposition passes ``promtool check metrics``; every labelled series
    of a fixed label set (peer statuses, node statuses, decisions, outcomes)
    is present, at 0 when nothing was counted; info metrics carry only labels
    that never change while the node runs.  ``docs/metrics.md`` lists every
    metric.

    :class:`MetricsServer` is a stdlib :class:`http.server.ThreadingHTTPServer`
    on its own daemon thread, bound to loopback unless told otherwise.  It
    calls the node's snapshot function on each request, on an HTTP thread
    (not an actor thread), so that function may use blocking asks with
    timeouts.

Logging lives in :mod:`aura_sync.node.logs` (re-exported here).

Layer: runtime.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Final
from urllib.parse import urlsplit

from prometheus_client import (
    CollectorRegistry,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from aura_sync import __version__
from aura_sync.errors import AuraError, InvalidArgument, TransportError, WrongType
from aura_sync.infrastructure.peers import PeerStatus
from aura_sync.messages.gossip import GossipStats
from aura_sync.node.logs import JsonFormatter, KeyValueFormatter, configure_logging, kv

__all__ = [
    "CONTENT_TYPE_LATEST",
    "NODE_STATUSES",
    "ChildHealth",
    "GossipCollector",
    "JsonFormatter",
    "KeyValueFormatter",
    "MetricsServer",
    "NodeMetrics",
    "NodeSnapshot",
    "SnapshotCollector",
    "configure_logging",
    "kv",
    "make_registry",
]

CONTENT_TYPE_LATEST: Final = "text/plain; version=0.0.4; charset=utf-8"
"""Content type of the Prometheus text exposition format served at ``/metrics``."""

NODE_STATUSES: Final = ("starting", "ok", "degraded", "stopping", "failed")
"""Every value of :attr:`NodeSnapshot.status` (one ``aura_sync_node_status`` series each)."""

_PREFIX: Final = "aura_sync"
_log = logging.getLogger("aura_sync.node.metrics")
_CLIENT_TIMEOUT: Final = 10.0

# --- the snapshot ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ChildHealth:
    """One supervised child: its path (``"root/infrastructure/pool"``), status, restarts."""

    name: str
    status: str
    restarts: int


@dataclass(frozen=True, slots=True)
class NodeSnapshot:
    """Everything ``/health`` and ``/metrics`` report about a node, at one instant.

    :param status: ``"starting"``, ``"ok"``, ``"degraded"`` (a part did not
        answer), ``"stopping"`` or ``"failed"`` (the root supervisor gave up).
    :param device_id: the node's DeviceId (UUID form).
    :param listen_address: where it accepts peers ("host:port").
    :param uptime: seconds since the node started.
    :param children: every supervised child with its restart count.
    :param peers_by_status: peer count per :class:`~aura_sync.infrastructure.peers.PeerStatus` name.
    :param messages_handled: messages handled per actor name.
    :param rate_limit: rate-limit decision counters (``allowed``,
        ``global_limit_hits``, ``peer_limit_hits``, ``flow_budget_hits``).
    :param pool: pool statistics (``connections_created``, ..., ``idle``, ``in_use``).
    :param sync: sync counters (``rounds_started``, ``rounds_succeeded``,
        ``rounds_failed``, ``rounds_skipped``, ``ops_pulled``, ``ops_pushed``,
        ``ops_served``, ``ops_received``, ``requests_refused``, ...).
    :param journal: ``ops`` (count), ``own_ops``, ``digest`` (hex fingerprint of
        the whole journal).
    :param transport: transport counters (frames, malformed frames, ...).
    :param peer_trust: each tracked peer's trust (0-100), by DeviceId.
    :param bans: the bans in force, by DeviceId: ``seconds_left``, ``bans`` (its count),
        ``reason`` (the offence) and ``address`` (the host refused at accept, or None).
    :param reasons: why the status is ``"degraded"`` (see :mod:`aura_sync.node.health`).
    """

    status: str
    device_id: str
    listen_address: str
    uptime: float
    children: tuple[ChildHealth, ...] = ()
    peers_by_status: Mapping[str, int] = field(default_factory=dict)
    messages_handled: Mapping[str, int] = field(default_factory=dict)
    rate_limit: Mapping[str, int] = field(default_factory=dict)
    pool: Mapping[str, int] = field(default_factory=dict)
    sync: Mapping[str, int] = field(default_factory=dict)
    journal: Mapping[str, Any] = field(default_factory=dict)
    transport: Mapping[str, int] = field(default_factory=dict)
    peer_trust: Mapping[str, int] = field(default_factory=dict)
    bans: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    reasons: tuple[str, ...] = ()

    @property
    def restarts_total(self) -> int:
        """Restarts summed over every child."""
        return sum(c.restarts for c in self.children)

    def to_json(self) -> dict[str, Any]:
        """The ``/health`` document (plain JSON types)."""
        doc = asdict(self)
        doc["children"] = [asdict(c) for c in self.children]
        doc["restarts_total"] = self.restarts_total
        for key in (
            "peers_by_status",
            "messages_handled",
            "rate_limit",
            "pool",
            "sync",
            "journal",
            "transport",
            "peer_trust",
        ):
            doc[key] = dict(getattr(self, key))
        doc["bans"] = {peer: dict(ban) for peer, ban in self.bans.items()}
        return doc


# --- Prometheus ------------------------------------------------------------------------------

_POOL_COUNTERS: Final = (
    "connections_created",
    "connections_reused",
    "connections_released",
    "connections_closed",
    "connections_evicted",
    "connection_limit_hits",
    "waits",
    "timeouts",
    "broken",
)
_POOL_STATES: Final = ("idle", "in_use")
_RATE_DECISIONS: Final = {
    "allowed": "allowed",
    "global_limit_hits": "global_limit",
    "peer_limit_hits": "peer_limit",
    "flow_budget_hits": "flow_budget",
}
_ROUND_OUTCOMES: Final = {
    "rounds_succeeded": "succeeded",
    "rounds_failed": "failed",
    "rounds_skipped": "skipped",
}
_OPS_DIRECTIONS: Final = {
    "ops_pulled": "pulled",
    "ops_pushed": "pushed",
    "ops_received": "received",
    "ops_served": "served",
}
_SYNC_GAUGES: Final = {
    "connected_peers": "Peers connected to this node now.",
    "authorized_peers": "Connected peers holding a valid capability now.",
    "active_sessions": "Sync sessions in progress now.",
}
_BYTES_PREFIX: Final = "bytes_"

SESSION_OUTCOMES: Final = ("succeeded", "failed")
"""Label values of ``aura_sync_sync_session_duration_seconds``."""
INFRASTRUCTURE_ACTORS: Final = ("cache", "rate_limiter", "peer_manager", "pool", "anti_entropy")
"""Actors whose ask latency the node records (one series each, present from the start)."""

_SESSION_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_SERVED_BUCKETS: Final = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
_ASK_BUCKETS: Final = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0, 5.0,
)  # fmt: skip


class SnapshotCollector(Collector):
    """A prometheus-client collector that renders the node's current :class:`NodeSnapshot`.

    ``source`` is called once per scrape (on the HTTP thread).
    """

    def __init__(self, source: Callable[[], NodeSnapshot]) -> None:
        if not callable(source):
            raise WrongType(f"source must be callable, got {type(source).__name__}")
        self._source = source

    def describe(self) -> list[Metric]:
        """No up-front description: metrics are produced at scrape time only."""
        return []

    def collect(self) -> Iterator[Metric]:
        """Yield every metric family of one snapshot."""
        yield from _families(self._source())


def _counter(name: str, doc: str, label: str, values: Mapping[str, float]) -> Metric:
    family = CounterMetricFamily(f"{_PREFIX}_{name}", doc, labels=[label])
    for key, value in values.items():
        family.add_metric([key], float(value))
    return family


def _gauge(name: str, doc: str, label: str, values: Mapping[str, float]) -> Metric:
    family = GaugeMetricFamily(f"{_PREFIX}_{name}", doc, labels=[label])
    for key, value in values.items():
        family.add_metric([key], float(value))
    return family


def _families(snap: NodeSnapshot) -> Iterator[Metric]:
    info = GaugeMetricFamily(
        f"{_PREFIX}_node_info",
        "Constant 1, labelled with the node's identity and version (fixed while it runs).",
        labels=["device_id", "listen_address", "version"],
    )
    info.add_metric([snap.device_id, snap.listen_address, __version__], 1.0)
    yield info
    yield _gauge(
        "node_status",
        "1 for the node's current status, 0 for the others.",
        "status",
        {s: 1.0 if snap.status == s else 0.0 for s in NODE_STATUSES},
    )
    up = GaugeMetricFamily(f"{_PREFIX}_up", "1 while the node is ok, 0 otherwise.")
    up.add_metric([], 1.0 if snap.status == "ok" else 0.0)
    yield up
    yield GaugeMetricFamily(
        f"{_PREFIX}_uptime_seconds", "Seconds since the node started.", value=snap.uptime
    )
    yield _counter(
        "messages_handled",
        "Messages handled, per actor.",
        "actor",
        dict(sorted(snap.messages_handled.items())),
    )
    yield _counter(
        "actor_restarts",
        "Restarts of each supervised child.",
        "child",
        {c.name: c.restarts for c in snap.children},
    )
    yield _counter(
        "rate_limit_decisions",
        "Rate-limit decisions, by outcome (allowed or the limit that denied).",
        "decision",
        {label: snap.rate_limit.get(key, 0) for key, label in _RATE_DECISIONS.items()},
    )
    for key in _POOL_COUNTERS:
        yield CounterMetricFamily(
            f"{_PREFIX}_pool_{key}",
            f"Connection pool: {key.replace('_', ' ')}.",
            value=float(snap.pool.get(key, 0)),
        )
    yield _gauge(
        "pool_connections",
        "Open pooled connections now, by state (their sum is the pool's size).",
        "state",
        {state: snap.pool.get(state, 0) for state in _POOL_STATES},
    )
    yield _gauge(
        "peers",
        "Tracked peers, by status (every status, 0 when none).",
        "status",
        {s.name: snap.peers_by_status.get(s.name, 0) for s in PeerStatus},
    )
    yield _counter(
        "sync_rounds",
        "Anti-entropy sync sessions, by outcome.",
        "outcome",
        {label: snap.sync.get(key, 0) for key, label in _ROUND_OUTCOMES.items()},
    )
    yield CounterMetricFamily(
        f"{_PREFIX}_sync_ticks",
        "Sync rounds started (each syncs with up to peers_per_round peers).",
        value=float(snap.sync.get("rounds_started", 0)),
    )
    yield _counter(
        "operations_transferred",
        "Journal operations transferred, by direction.",
        "direction",
        {label: snap.sync.get(key, 0) for key, label in _OPS_DIRECTIONS.items()},
    )
    yield CounterMetricFamily(
        f"{_PREFIX}_sync_requests_refused",
        "Sync requests refused (peer without a valid capability, or sync refused).",
        value=float(snap.sync.get("requests_refused", 0)),
    )
    yield CounterMetricFamily(
        f"{_PREFIX}_sync_requests_rate_limited",
        "Peer requests denied by inbound admission (rate or flow budget) with a retry_after.",
        value=float(snap.sync.get("requests_rate_limited", 0)),
    )
    for key, doc in _SYNC_GAUGES.items():
        yield GaugeMetricFamily(f"{_PREFIX}_sync_{key}", doc, value=float(snap.sync.get(key, 0)))
    journal_ops = snap.journal.get("ops")
    yield GaugeMetricFamily(
        f"{_PREFIX}_journal_operations",
        "Operations held in the journal.",
        value=float(journal_ops) if isinstance(journal_ops, int) else 0.0,
    )
    events = {k: v for k, v in snap.transport.items() if not k.startswith(_BYTES_PREFIX)}
    yield _counter(
        "transport_events", "Transport events, by kind.", "kind", dict(sorted(events.items()))
    )
    for key in ("sent", "received"):
        yield CounterMetricFamily(
            f"{_PREFIX}_transport_{key}_bytes",
            f"Bytes {key} on peer connections (frames, after TLS decryption).",
            value=float(snap.transport.get(_BYTES_PREFIX + key, 0)),
        )


# --- gossip ------------------------------------------------------------------------------

_GOSSIP_COUNTERS: Final = {
    "published": "Gossip messages published by this node.",
    "received": "Gossip messages received from peers (before de-duplication).",
    "delivered": "Gossip messages handed to this node's subscribers (one per subscriber).",
    "duplicates": "Gossip messages dropped because their id was in the seen-cache.",
    "forwarded": "Gossip messages sent to mesh peers (one per peer).",
    "send_failures": "Gossip sends to a peer that failed (the connection was gone).",
    "sink_errors": "Gossip subscriber callbacks that raised.",
}
_GOSSIP_REFUSED: Final = {"invalid": "invalid", "rate_limited": "rate_limited"}
_GOSSIP_REPAIR: Final = {"ihave_sent": "ihave", "iwant_sent": "iwant", "iwant_served": "served"}


class GossipCollector(Collector):
    """Renders the gossip actor's :class:`~aura_sync.messages.gossip.GossipStats`.

    ``source`` returns the current stats, or None when the node runs no gossip
    (then nothing is exported).  A scrape during which the actor does not
    answer (``source`` raises :class:`AuraError`) shows the last stats it gave.
    """

    def __init__(self, source: Callable[[], GossipStats | None]) -> None:
        self._source = source
        self._last: GossipStats | None = None

    def describe(self) -> list[Metric]:
        """No up-front description: metrics are produced at scrape time only."""
        return []

    def collect(self) -> Iterator[Metric]:
        """Yield the gossip families (none without gossip)."""
        try:
            self._last = self._source() or None
        except AuraError as exc:
            _log.debug("event=gossip_stats_unavailable error=%r", str(exc))
        stats = self._last
        if stats is None:
            return
        counters = dict(stats.counters)
        for key, doc in _GOSSIP_COUNTERS.items():
            yield CounterMetricFamily(
                f"{_PREFIX}_gossip_{key}", doc, value=float(counters.get(key, 0))
            )
        yield _counter(
            "gossip_refused",
            "Gossip messages from peers dropped before use: out of bounds or over "
            "max_payload (invalid), or denied by inbound admission (rate_limited).",
            "reason",
            {label: counters.get(key, 0) for key, label in _GOSSIP_REFUSED.items()},
        )
        yield _counter(
            "gossip_repair_messages",
            "Repair traffic: IHave offers sent, IWant asks sent, messages served for IWant.",
            "kind",
            {label: counters.get(key, 0) for key, label in _GOSSIP_REPAIR.items()},
        )
        yield GaugeMetricFamily(
            f"{_PREFIX}_gossip_seen_cache_ids",
            "Message ids in the seen-cache now (bounded by seen_max).",
            value=float(stats.seen),
        )
        yield GaugeMetricFamily(
            f"{_PREFIX}_gossip_cached_messages",
            "Recent messages kept to answer IWant now (bounded by cache_max).",
            value=float(stats.cached),
        )


class NodeMetrics:
    """One node's metrics: its registry, the snapshot collector and the histograms.

    The histograms are recorded as things happen (from any thread; the
    prometheus-client metrics are thread-safe); every fixed label value is
    created up front so each series is exported at 0 from the first scrape.

    :param source: returns the current :class:`NodeSnapshot` (called per scrape).
    :param process_metrics: also export the ``process_*`` and ``python_*``
        collectors (CPU, memory, file descriptors, GC, interpreter version).
    :param gossip: returns the gossip actor's stats, or None without gossip
        (see :class:`GossipCollector`); None: no gossip metrics.
    """

    def __init__(
        self,
        source: Callable[[], NodeSnapshot],
        *,
        process_metrics: bool = True,
        gossip: Callable[[], GossipStats | None] | None = None,
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(SnapshotCollector(source))
        if gossip is not None:
            self.registry.register(GossipCollector(gossip))
        if process_metrics:
            ProcessCollector(registry=self.registry)
            PlatformCollector(registry=self.registry)
            GCCollector(registry=self.registry)
        self._sessions = self._histogram(
            "sync_session_duration_seconds",
            "Duration of one anti-entropy session with a peer, by outcome.",
            _SESSION_BUCKETS,
            ("outcome", SESSION_OUTCOMES),
        )
        self._served = self._histogram(
            "served_request_duration_seconds",
            "Time to serve one request from a peer (admission, journal read, reply).",
            _SERVED_BUCKETS,
        )
        self._asks = self._histogram(
            "infrastructure_ask_duration_seconds",
            "Latency of the node's asks to its actors (request to reply), by actor.",
            _ASK_BUCKETS,
            ("actor", INFRASTRUCTURE_ACTORS),
        )

    def _histogram(
        self,
        name: str,
        doc: str,
        buckets: tuple[float, ...],
        label: tuple[str, tuple[str, ...]] | None = None,
    ) -> Histogram:
        labels = [label[0]] if label else []
        family = Histogram(
            f"{_PREFIX}_{name}", doc, labels, registry=self.registry, buckets=buckets
        )
        for value in label[1] if label else ():
            family.labels(value)  # exported at 0 from the first scrape
        return family

    def observe_sync_session(self, seconds: float, *, success: bool) -> None:
        """Record one sync session of ``seconds`` that succeeded or failed."""
        self._sessions.labels("succeeded" if success else "failed").observe(max(0.0, seconds))

    def observe_served_request(self, seconds: float) -> None:
        """Record one request served to a peer, taking ``seconds``."""
        self._served.observe(max(0.0, seconds))

    def observe_ask(self, actor: str, seconds: float) -> None:
        """Record one ask of the actor named ``actor`` answered after ``seconds``."""
        self._asks.labels(actor).observe(max(0.0, seconds))


def make_registry(source: Callable[[], NodeSnapshot]) -> CollectorRegistry:
    """A fresh per-node registry over ``source`` (the registry of a new :class:`NodeMetrics`)."""
    return NodeMetrics(source).registry


# --- HTTP ------------------------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, owner: MetricsServer, address: tuple[str, int]) -> None:
        self.owner = owner
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _RequestHandler)


class _RequestHandler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    server_version = "aura-sync"
    timeout = _CLIENT_TIMEOUT  # a silent or stalled client cannot hold a thread forever

    def log_message(self, format: str, *args: Any) -> None:
        _log.debug("event=http_request client=%s request=%s", self.client_address[0], format % args)

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, doc: Mapping[str, Any]) -> None:
        body = json.dumps(doc, sort_keys=True, default=str).encode("utf-8") + b"\n"
        self._send(status, body, "application/json")

    def do_GET(self) -> None:
        owner = self.server.owner
        path = urlsplit(self.path).path
        try:
            if path == "/health":
                snap = owner.source()
                status = HTTPStatus.OK if snap.status == "ok" else HTTPStatus.SERVICE_UNAVAILABLE
                self._json(status, snap.to_json())
            elif path == "/metrics":
                self._send(HTTPStatus.OK, generate_latest(owner.registry), CONTENT_TYPE_LATEST)
            else:
                self._json(HTTPStatus.NOT_FOUND, {"error": f"no such endpoint: {path}"})
        except Exception as exc:
            _log.exception("event=http_error path=%s", path)
            self._json(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": f"{type(exc).__name__}: {exc}"})

    do_HEAD = do_GET


class MetricsServer:
    """The node's local HTTP endpoint (``/health``, ``/metrics``).

    :param source: returns the current :class:`NodeSnapshot` (called per request).
    :param port: TCP port (0: any free port; see :attr:`port`).
    :param host: the address to bind: loopback by default; ``"0.0.0.0"`` or
        ``"::"`` lets a Prometheus on another host scrape it.
    :param metrics: the node's :class:`NodeMetrics` (default: a new one over ``source``).
    :raises TransportError: the port cannot be bound.
    :raises InvalidArgument, WrongType: bad port or non-callable source.
    """

    def __init__(
        self,
        source: Callable[[], NodeSnapshot],
        port: int = 0,
        *,
        host: str = "127.0.0.1",
        metrics: NodeMetrics | None = None,
    ) -> None:
        if not callable(source):
            raise WrongType(f"source must be callable, got {type(source).__name__}")
        if type(port) is not int:
            raise WrongType(f"port must be an int, got {type(port).__name__} {port!r}")
        if not 0 <= port <= 65535:
            raise InvalidArgument(f"port must be in 0..65535, got {port}")
        self.source = source
        if type(host) is not str or not host:
            raise WrongType(f"host must be a non-empty string, got {host!r}")
        self.metrics = metrics if metrics is not None else NodeMetrics(source)
        self.registry = self.metrics.registry
        self._host = host
        try:
            self._server = _Server(self, (host, port))
        except OSError as exc:
            raise TransportError(f"cannot serve metrics on {host}:{port}: {exc}") from exc
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.2},
            name=f"aura-sync-metrics-{self.port}",
            daemon=True,
        )
        self._thread.start()
        self._closed = False

    @property
    def port(self) -> int:
        """The bound port."""
        return int(self._server.server_address[1])

    @property
    def address(self) -> str:
        """``"host:port"`` as bound (``"[::1]:port"`` for an IPv6 host)."""
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"{host}:{self.port}"

    def close(self, timeout: float = 2.0) -> None:
        """Stop serving and join the server thread (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout)
