"""Health, Prometheus metrics and key=value logging of a node.

Role
    A node describes itself with one immutable :class:`NodeSnapshot`
    (status, uptime, supervised children and their restart counts, peers by
    status, messages handled per actor, rate-limit decisions, pool
    statistics, sync rounds, operations transferred, journal size and
    digest, transport counters).  This module turns snapshots into

    * ``GET /health``: JSON (HTTP 200 when the node is ``ok``, 503 otherwise);
    * ``GET /metrics``: Prometheus text format, produced by ``prometheus-client``
      from a *per-node* :class:`prometheus_client.CollectorRegistry` (never
      the process-global one, so several nodes can live in one process);
    * optionally ``POST /debug/<action>`` (only when the node runs with
      ``debug_endpoints``, i.e. under ``aura-sync demo``): fault injection
      and op writes, forwarded to a callback.

    :class:`MetricsServer` is a stdlib :class:`http.server.ThreadingHTTPServer`
    on its own daemon thread, bound to 127.0.0.1 only.  It calls the
    node's snapshot function on each request: that function runs on an
    HTTP thread (not an actor thread), so it may use blocking asks with
    timeouts.

Logging
    :class:`KeyValueFormatter` renders every record as one line of
    ``key=value`` fields (``ts=... level=INFO logger=aura_sync.node
    event=sync_round peer=... ops=3``); values with spaces or quotes are
    JSON-quoted; tracebacks are folded into one ``exc=`` field.  Messages
    that are already ``key=value`` (the project's convention:
    ``"event=... k=%s"``) are kept as they are; others become ``msg="..."``.
    :func:`kv` formats fields for a log call, :func:`configure_logging`
    installs the formatter.

Layer: runtime.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Final, TextIO
from urllib.parse import parse_qs, urlsplit

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from aura_sync.errors import AuraError, InvalidArgument, TransportError, WrongType

__all__ = [
    "CONTENT_TYPE_LATEST",
    "ChildHealth",
    "DebugAction",
    "KeyValueFormatter",
    "MetricsServer",
    "NodeSnapshot",
    "SnapshotCollector",
    "configure_logging",
    "kv",
    "make_registry",
]

CONTENT_TYPE_LATEST: Final = "text/plain; version=0.0.4; charset=utf-8"
"""Content type of the Prometheus text exposition format served at ``/metrics``."""

_PREFIX: Final = "aura_sync"
_MAX_BODY: Final = 64 * 1024
_CLIENT_TIMEOUT: Final = 10.0

DebugAction = Callable[[str, Mapping[str, str]], Mapping[str, Any]]
"""``(action, query parameters) -> JSON-able result``; raises AuraError for a bad request."""


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
        ):
            doc[key] = dict(getattr(self, key))
        return doc


# --- Prometheus ------------------------------------------------------------------------------

# (snapshot section, key) -> (metric suffix, help, kind, labels) for the flat sections.
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
_POOL_GAUGES: Final = ("idle", "in_use", "total")
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
        snap = self._source()
        yield from _families(snap)


def _families(snap: NodeSnapshot) -> Iterator[Metric]:
    info = GaugeMetricFamily(
        f"{_PREFIX}_node_info",
        "Constant 1, labelled with the node's identity.",
        labels=["device_id", "listen_address", "status"],
    )
    info.add_metric([snap.device_id, snap.listen_address, snap.status], 1.0)
    yield info
    up = GaugeMetricFamily(f"{_PREFIX}_up", "1 while the node is ok, 0 otherwise.")
    up.add_metric([], 1.0 if snap.status == "ok" else 0.0)
    yield up
    yield GaugeMetricFamily(
        f"{_PREFIX}_uptime_seconds", "Seconds since the node started.", value=snap.uptime
    )

    handled = CounterMetricFamily(
        f"{_PREFIX}_messages_handled", "Messages handled, per actor.", labels=["actor"]
    )
    for actor, count in sorted(snap.messages_handled.items()):
        handled.add_metric([actor], float(count))
    yield handled

    restarts = CounterMetricFamily(
        f"{_PREFIX}_actor_restarts", "Restarts of each supervised child.", labels=["child"]
    )
    for child in snap.children:
        restarts.add_metric([child.name], float(child.restarts))
    yield restarts

    decisions = CounterMetricFamily(
        f"{_PREFIX}_rate_limit_decisions",
        "Rate-limit decisions, by outcome (allowed or the limit that denied).",
        labels=["decision"],
    )
    for key, label in _RATE_DECISIONS.items():
        decisions.add_metric([label], float(snap.rate_limit.get(key, 0)))
    yield decisions

    for key in _POOL_COUNTERS:
        yield CounterMetricFamily(
            f"{_PREFIX}_pool_{key}",
            f"Connection pool: {key.replace('_', ' ')}.",
            value=float(snap.pool.get(key, 0)),
        )
    for key in _POOL_GAUGES:
        yield GaugeMetricFamily(
            f"{_PREFIX}_pool_connections_{key}",
            f"Connection pool: {key.replace('_', ' ')} connections now.",
            value=float(snap.pool.get(key, 0)),
        )

    peers = GaugeMetricFamily(f"{_PREFIX}_peers", "Tracked peers, by status.", labels=["status"])
    for status, count in sorted(snap.peers_by_status.items()):
        peers.add_metric([status], float(count))
    yield peers

    rounds = CounterMetricFamily(
        f"{_PREFIX}_sync_rounds", "Anti-entropy sync sessions, by outcome.", labels=["outcome"]
    )
    for key, label in _ROUND_OUTCOMES.items():
        rounds.add_metric([label], float(snap.sync.get(key, 0)))
    yield rounds
    yield CounterMetricFamily(
        f"{_PREFIX}_sync_ticks",
        "Sync rounds started (each syncs with up to peers_per_round peers).",
        value=float(snap.sync.get("rounds_started", 0)),
    )

    ops = CounterMetricFamily(
        f"{_PREFIX}_operations_transferred",
        "Journal operations transferred, by direction.",
        labels=["direction"],
    )
    for key, label in _OPS_DIRECTIONS.items():
        ops.add_metric([label], float(snap.sync.get(key, 0)))
    yield ops
    yield CounterMetricFamily(
        f"{_PREFIX}_sync_requests_refused",
        "Sync requests refused (peer without a valid capability, or sync refused).",
        value=float(snap.sync.get("requests_refused", 0)),
    )

    journal_ops = snap.journal.get("ops")
    if isinstance(journal_ops, int):
        yield GaugeMetricFamily(
            f"{_PREFIX}_journal_operations", "Operations held in the journal.", value=journal_ops
        )

    transport = CounterMetricFamily(
        f"{_PREFIX}_transport_events", "Transport counters, by kind.", labels=["kind"]
    )
    for key, count in sorted(snap.transport.items()):
        transport.add_metric([key], float(count))
    yield transport


def make_registry(source: Callable[[], NodeSnapshot]) -> CollectorRegistry:
    """A fresh per-node registry holding one :class:`SnapshotCollector` over ``source``."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(source))
    return registry


# --- HTTP ------------------------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, owner: MetricsServer, address: tuple[str, int]) -> None:
        self.owner = owner
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

    def do_POST(self) -> None:
        owner = self.server.owner
        parts = urlsplit(self.path)
        text = self.headers.get("Content-Length") or "0"
        length = int(text) if text.isdigit() else -1
        if length < 0:
            self.close_connection = True  # the body's end is unknown: do not read it
            self._json(HTTPStatus.BAD_REQUEST, {"error": f"bad Content-Length {text!r}"})
            return
        if length > _MAX_BODY:
            self.close_connection = True
            self._json(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, {"error": "body too large"})
            return
        if length:
            self.rfile.read(length)
        if owner.debug is None or not parts.path.startswith("/debug/"):
            self._json(HTTPStatus.NOT_FOUND, {"error": f"no such endpoint: {parts.path}"})
            return
        action = parts.path[len("/debug/") :]
        params = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        try:
            result = owner.debug(action, params)
        except AuraError as exc:
            self._json(HTTPStatus.BAD_REQUEST, {"error": f"{type(exc).__name__}: {exc}"})
            return
        except Exception as exc:
            _log.exception("event=debug_action_failed action=%s", action)
            self._json(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": f"{type(exc).__name__}: {exc}"})
            return
        self._json(HTTPStatus.OK, dict(result))


class MetricsServer:
    """The node's local HTTP endpoint (``/health``, ``/metrics``, optional ``/debug/*``).

    :param source: returns the current :class:`NodeSnapshot` (called per request).
    :param port: TCP port on 127.0.0.1 (0: any free port; see :attr:`port`).
    :param debug: handler of ``POST /debug/<action>``; None disables them (404).
    :raises TransportError: the port cannot be bound.
    :raises InvalidArgument, WrongType: bad port or non-callable source.
    """

    def __init__(
        self,
        source: Callable[[], NodeSnapshot],
        port: int = 0,
        *,
        host: str = "127.0.0.1",
        debug: DebugAction | None = None,
    ) -> None:
        if not callable(source):
            raise WrongType(f"source must be callable, got {type(source).__name__}")
        if type(port) is not int:
            raise WrongType(f"port must be an int, got {type(port).__name__} {port!r}")
        if not 0 <= port <= 65535:
            raise InvalidArgument(f"port must be in 0..65535, got {port}")
        if debug is not None and not callable(debug):
            raise WrongType(f"debug must be callable or None, got {type(debug).__name__}")
        self.source = source
        self.debug = debug
        self.registry = make_registry(source)
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
        """``"127.0.0.1:<port>"``."""
        return f"{self._host}:{self.port}"

    def close(self, timeout: float = 2.0) -> None:
        """Stop serving and join the server thread (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout)


# --- logging ---------------------------------------------------------------------------------

_log = logging.getLogger("aura_sync.node.metrics")
_BARE: Final = re.compile(r"^[A-Za-z0-9_.:/@\-+%,\[\]#]+$")
_KV_START: Final = re.compile(r"^[a-z_][a-z0-9_]*=")


def _value(value: object) -> str:
    text = (
        value if isinstance(value, str) else repr(value) if isinstance(value, float) else str(value)
    )
    if text and _BARE.match(text):
        return text
    return json.dumps(text)


def kv(**fields: object) -> str:
    """``key=value`` text for a log line; values with spaces or quotes are JSON-quoted."""
    return " ".join(f"{k}={_value(v)}" for k, v in fields.items())


class KeyValueFormatter(logging.Formatter):
    """One line per record: ``ts=... level=... logger=... <fields>`` (see the module docstring)."""

    def format(self, record: logging.LogRecord) -> str:
        """Render ``record`` as one key=value line."""
        message = record.getMessage().replace("\n", "\\n")
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        head = f"ts={ts}.{int(record.msecs):03d}Z level={record.levelname} logger={record.name}"
        body = message if _KV_START.match(message) else f"msg={json.dumps(message)}"
        line = f"{head} {body}"
        if record.exc_info:
            line += " exc=" + json.dumps(self.formatException(record.exc_info))
        return line


def configure_logging(level: str = "INFO", stream: TextIO | None = None) -> logging.Handler:
    """Install one key=value handler on the root logger at ``level``; return it.

    Calling it again replaces the handler it installed before (others are
    left alone).  ``level`` is a logging level name (any case).
    """
    if type(level) is not str or level.upper() not in logging.getLevelNamesMapping():
        raise InvalidArgument(f"level must be a logging level name, got {level!r}")
    handler = logging.StreamHandler(stream)
    handler.setFormatter(KeyValueFormatter())
    handler._aura_sync = True  # type: ignore[attr-defined]
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "_aura_sync", False):
            root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    return handler
