"""Node configuration: embedded defaults, an optional TOML file, command-line overrides.

Role
    :class:`NodeConfig` is everything one long-lived node needs: where its
    state lives, where it listens, whom it bootstraps from, the capability
    authority, how often and how wide it syncs, the optional metrics port,
    the log level, and the configurations of the four infrastructure
    concerns.  Every field has a default, so ``aura-sync node`` runs with no
    file and no flag at all.

Precedence
    defaults  <  TOML file (``--config PATH``)  <  command-line flags.
    :func:`load_config` merges the three and validates *every* value once:
    an unreadable file, a TOML syntax error, an unknown key, a value of the
    wrong type or out of range raises :class:`~aura_sync.errors.ConfigError`
    whose message names the key (``pool.max_total_connections``) and the
    value, and the node refuses to start.

File layout (every key optional)::

    data_dir = "/var/lib/aura-sync"
    listen = "127.0.0.1:7400"                      # host:port, port 0 = any
    bootstrap = ["<device-id>@127.0.0.1:7401"]     # a peer's DeviceId and address
    authority_public_key = "<64 hex digits>"       # enables Biscuit capabilities
    token_path = "/var/lib/aura-sync/token"        # this node's token (base64)
    allow_bearer_token = false                     # accept a token without a subject
    sync_interval = 2.0                            # seconds between sync rounds
    peers_per_round = 3
    batch_size = 128                               # ops per message, 1..128
    request_timeout = 5.0                          # seconds per network request
    shutdown_timeout = 5.0                         # seconds for a clean stop
    metrics_port = 9100                            # 0 = any free port; absent = no metrics
    metrics_listen = "127.0.0.1"                   # address the metrics port binds
    log_level = "info"
    log_format = "text"                            # "text" (key=value) or "json"
    protocols = ["gossip", "package.module:spec"]  # plug-ins besides anti-entropy

    [rate_limit]   # RateLimitConfig fields (NODE_RATE_LIMIT unless set; costs in work units)
    [defence]      # AdmissionConfig fields: inbound admission, AIMD reports, flow budgets
    [pool]         # PoolConfig fields
    [peers]        # PeerDiscoveryConfig fields (not root_public_key, not scoring)
    [scoring]      # ScoringConfig fields: trust deltas, bans, DEGRADED
    [transport]    # TransportConfig fields: timeouts, connection admission, backpressure
    [cache]
    max_keys = 1024
    [state]        # StateConfig fields: enabled, save_interval (peer table, spend, floors)
    [gossip]       # GossipConfig fields: mesh_degree, fanout, heartbeat, seen cache, ...

A bootstrap entry names the peer's :class:`~aura_sync.ids.DeviceId`
(``str(device_id)``, the UUID form) because every connection is mutually
authenticated: a node only dials a peer whose key it knows.

Layer: runtime.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
import math
import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from aura_sync.effects import check_seconds
from aura_sync.errors import CapabilityError, ConfigError, InvalidArgument, WrongType
from aura_sync.ids import DeviceId
from aura_sync.infrastructure.capabilities import (
    capability_token_subject,
    check_public_key,
    verify_capability_token,
)
from aura_sync.infrastructure.connections import PoolConfig
from aura_sync.infrastructure.peer_scoring import ScoringConfig
from aura_sync.infrastructure.peers import PeerDiscoveryConfig
from aura_sync.infrastructure.rate_limit import RateLimitConfig
from aura_sync.messages.gossip import GossipConfig
from aura_sync.messages.sync import MAX_OPS_BATCH
from aura_sync.protocols.admission import AdmissionConfig
from aura_sync.transport.config import TransportConfig

__all__ = [
    "DEFAULT_LISTEN",
    "NODE_RATE_LIMIT",
    "NODE_TRANSPORT",
    "BootstrapPeer",
    "NodeConfig",
    "StateConfig",
    "check_own_token",
    "default_data_dir",
    "load_config",
    "parse_bootstrap",
    "parse_listen_address",
]

DEFAULT_LISTEN: Final = "127.0.0.1:7400"
"""Where a node listens unless told otherwise."""

NODE_RATE_LIMIT: Final = RateLimitConfig(
    global_ops_per_second=25000.0,
    global_burst=25000,
    peer_ops_per_second=10000.0,
    peer_burst=20000,
    adaptive=True,
    adaptive_min_ops_per_second=1.0,
    adaptive_max_ops_per_second=25000.0,
    adaptive_increase=50.0,
    adaptive_decrease=0.8,
)
"""The node's limiter defaults, in work units of
:func:`~aura_sync.protocols.admission.request_cost` (about 0.03 ms of serving each):
one peer may take about 30 % of the serving actor's time (a burst of 0.6 s of
it: a fresh peer's pull of ~120k ops), all peers together 75 %; AIMD on."""

NODE_TRANSPORT: Final = TransportConfig(
    connect_timeout=5.0, keepalive_interval=10.0, idle_timeout=30.0
)
"""The node's transport defaults (quicker keepalive than a bare transport's)."""

_log = logging.getLogger("aura_sync.node")

_LOG_LEVELS: Final = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_MAX_PEERS_PER_ROUND: Final = 64


def default_data_dir() -> Path:
    """``$AURA_SYNC_DATA``, else ``$XDG_DATA_HOME/aura-sync``, else ``~/.local/share/aura-sync``."""
    env = os.environ.get("AURA_SYNC_DATA")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".local" / "share"
    return base / "aura-sync"


@dataclass(frozen=True, slots=True)
class BootstrapPeer:
    """A peer to dial at start: its DeviceId (what TLS must prove) and "host:port"."""

    device_id: DeviceId
    address: str

    def __str__(self) -> str:
        return f"{self.device_id}@{self.address}"


def parse_listen_address(text: object, name: str = "listen") -> str:
    """Validate a "host:port" string (port 0..65535); return it.

    Raises :class:`~aura_sync.errors.ConfigError` naming ``name`` and the value.
    """
    if type(text) is not str:
        raise ConfigError(f"config key {name!r} must be a 'host:port' string, got {text!r}")
    host, sep, port_text = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not port_text.isdigit() or int(port_text) > 65535:
        raise ConfigError(
            f"config key {name!r} has invalid value {text!r}: expected 'host:port' "
            f"with a port in 0..65535"
        )
    if any(c.isspace() for c in text):
        raise ConfigError(f"config key {name!r} has invalid value {text!r}: contains spaces")
    return text


def parse_bootstrap(text: object, name: str = "bootstrap") -> BootstrapPeer:
    """Parse ``"<device-id>@host:port"`` into a :class:`BootstrapPeer`.

    Raises :class:`~aura_sync.errors.ConfigError` naming ``name`` and the value.
    """
    if type(text) is not str:
        raise ConfigError(
            f"config key {name!r} entries must be '<device-id>@host:port' strings, got {text!r}"
        )
    ident, sep, address = text.partition("@")
    if not sep:
        raise ConfigError(
            f"config key {name!r} has invalid value {text!r}: expected '<device-id>@host:port' "
            f"(the peer's DeviceId is needed to authenticate it)"
        )
    try:
        device_id = DeviceId.parse(ident)
    except InvalidArgument:
        raise ConfigError(
            f"config key {name!r} has invalid value {text!r}: {ident!r} is not a DeviceId"
        ) from None
    address = parse_listen_address(address, name)
    if address.endswith(":0"):
        raise ConfigError(
            f"config key {name!r} has invalid value {text!r}: port 0 cannot be dialed"
        )
    return BootstrapPeer(device_id, address)


@dataclass(frozen=True, slots=True)
class StateConfig:
    """The ``[state]`` section: ``enabled`` (save and restore at all) and
    ``save_interval`` (seconds between saves while running, > 0)."""

    enabled: bool = True
    save_interval: float = 10.0

    def __post_init__(self) -> None:
        if type(self.enabled) is not bool:
            raise WrongType(f"enabled must be a bool, got {self.enabled!r}")
        seconds = check_seconds(self.save_interval, "save_interval", allow_zero=False)
        object.__setattr__(self, "save_interval", seconds)


@dataclass(frozen=True, slots=True)
class NodeConfig:
    """The validated configuration of one node (see the module docstring).

    :param data_dir: directory of the node's key, journal and state.
    :param listen: "host:port" to accept peers on (port 0: any free port).
    :param bootstrap: peers dialed at start.
    :param authority_public_key: 32-byte Ed25519 key of the Biscuit
        authority; when set, peers must present a token granting
        ``sync:request_digest`` (fail closed) and this node presents its own.
    :param token_path: file holding this node's token (base64 text); at
        start it must verify against the authority key and be bound to this
        node's DeviceId (its subject).
    :param allow_bearer_token: accept an own token without a subject (anyone
        who captures it can use it; a warning is logged at every start).
    :param sync_interval: seconds between sync rounds (> 0).
    :param peers_per_round: peers synced per round (1..64).
    :param batch_size: ops per pull/push message (1..128).
    :param request_timeout: seconds a network request may take (> 0).
    :param shutdown_timeout: seconds a clean stop may take (> 0).
    :param metrics_port: local HTTP port for ``/health`` and ``/metrics``
        (0: any free port; None: disabled).
    :param metrics_listen: the address the metrics port binds (default
        loopback; ``"0.0.0.0"`` or ``"::"`` for a Prometheus on another host).
    :param log_level: DEBUG, INFO, WARNING, ERROR or CRITICAL.
    :param log_format: ``"text"`` (key=value lines) or ``"json"`` (one object a line).
    :param protocols: protocol plug-ins started after anti-entropy, each
        ``"package.module:name"`` (a ``ProtocolSpec`` or a function returning
        one) or a built-in's name (``"gossip"``); resolved at start.
    :param rate_limit, pool, peers: configurations of the infrastructure concerns
        (``rate_limit``: :data:`NODE_RATE_LIMIT` unless set).
    :param scoring: how behaviour moves a peer's trust and bans it (``peers.scoring``).
    :param defence: inbound admission (every peer request charged at the rate
        limiter), AIMD outcome reports and per-peer flow budgets.
    :param transport: timeouts, connection admission and backpressure of the
        TCP transport (:data:`NODE_TRANSPORT` unless set).
    :param cache_max_keys: keys tracked by the epoch cache (>= 1).
    :param state: what survives a restart and how often it is saved (``[state]``).
    :param gossip: the settings of the built-in ``gossip`` protocol (``[gossip]``).
    :param fault_injection: actors honour ``InjectCrash`` (``aura-sync crash``
        through the control socket; the demo turns it on).
    :param refuse_sync: refuse every sync request and run no rounds (the
        demo's ``--force-divergence``).

    Construct it through :func:`load_config` (which validates every value
    and names the offending key); direct construction validates too.
    """

    data_dir: Path = field(default_factory=default_data_dir)
    listen: str = DEFAULT_LISTEN
    bootstrap: tuple[BootstrapPeer, ...] = ()
    authority_public_key: bytes | None = None
    token_path: Path | None = None
    allow_bearer_token: bool = False
    sync_interval: float = 2.0
    peers_per_round: int = 3
    batch_size: int = MAX_OPS_BATCH
    request_timeout: float = 5.0
    shutdown_timeout: float = 5.0
    metrics_port: int | None = None
    metrics_listen: str = "127.0.0.1"
    log_level: str = "INFO"
    log_format: str = "text"
    protocols: tuple[str, ...] = ()
    rate_limit: RateLimitConfig = field(default_factory=lambda: NODE_RATE_LIMIT)
    defence: AdmissionConfig = field(default_factory=AdmissionConfig)
    pool: PoolConfig = field(default_factory=PoolConfig)
    peers: PeerDiscoveryConfig = field(default_factory=PeerDiscoveryConfig)
    scoring: ScoringConfig = field(default_factory=ScoringConfig)
    transport: TransportConfig = field(default_factory=lambda: NODE_TRANSPORT)
    cache_max_keys: int = 1024
    state: StateConfig = field(default_factory=StateConfig)
    gossip: GossipConfig = field(default_factory=GossipConfig)
    fault_injection: bool = False
    refuse_sync: bool = False

    def __post_init__(self) -> None:
        for key, check in _TOP_LEVEL.items():
            value = getattr(self, key)
            object.__setattr__(self, key, check(key, value))
        for key, cls in (
            ("rate_limit", RateLimitConfig),
            ("defence", AdmissionConfig),
            ("pool", PoolConfig),
            ("transport", TransportConfig),
            ("state", StateConfig),
            ("gossip", GossipConfig),
        ):
            if not isinstance(getattr(self, key), cls):
                raise ConfigError(f"config key {key!r} must be a {cls.__name__}")
        if not isinstance(self.peers, PeerDiscoveryConfig):
            raise ConfigError("config key 'peers' must be a PeerDiscoveryConfig")
        if not isinstance(self.scoring, ScoringConfig):
            raise ConfigError("config key 'scoring' must be a ScoringConfig")
        if self.peers.scoring != self.scoring:
            object.__setattr__(self, "peers", dataclasses.replace(self.peers, scoring=self.scoring))
        if self.peers.root_public_key != self.authority_public_key:
            object.__setattr__(
                self,
                "peers",
                dataclasses.replace(self.peers, root_public_key=self.authority_public_key),
            )
        if self.peers.capability_filtering and self.authority_public_key is None:
            object.__setattr__(
                self, "peers", dataclasses.replace(self.peers, capability_filtering=False)
            )
        if self.authority_public_key is not None and self.token_path is None:
            raise ConfigError(
                "config key 'token_path' is required when 'authority_public_key' is set "
                "(peers refuse a node without a capability token)"
            )

    @property
    def capabilities_required(self) -> bool:
        """Whether peers must present a capability token (an authority key is set)."""
        return self.authority_public_key is not None

    def replace(self, **changes: Any) -> NodeConfig:
        """A copy with ``changes`` applied and validated."""
        return dataclasses.replace(self, **changes)


# --- value checkers (key, value) -> normalized value; raise ConfigError ------------------


def _bad(key: str, value: object, why: str) -> ConfigError:
    return ConfigError(f"config key {key!r} has invalid value {value!r}: {why}")


def _path(key: str, value: object) -> Path:
    if isinstance(value, Path):
        return value.expanduser()
    if type(value) is not str or not value or "\x00" in value:
        raise _bad(key, value, "expected a non-empty path string")
    return Path(value).expanduser()


def _optional_path(key: str, value: object) -> Path | None:
    return None if value is None else _path(key, value)


def _positive_seconds(key: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _bad(key, value, "expected a number of seconds")
    seconds = float(value)
    if not math.isfinite(seconds) or seconds <= 0:
        raise _bad(key, value, "expected a finite number of seconds > 0")
    return seconds


def _int_in(low: int, high: int) -> Callable[[str, object], int]:
    def check(key: str, value: object) -> int:
        if type(value) is not int:
            raise _bad(key, value, f"expected an integer in {low}..{high}")
        if not low <= value <= high:
            raise _bad(key, value, f"expected an integer in {low}..{high}")
        return value

    return check


def _port(key: str, value: object) -> int | None:
    if value is None:
        return None
    return _int_in(0, 65535)(key, value)


def _bool(key: str, value: object) -> bool:
    if type(value) is not bool:
        raise _bad(key, value, "expected true or false")
    return value


def _log_level(key: str, value: object) -> str:
    if type(value) is not str or value.upper() not in _LOG_LEVELS:
        raise _bad(key, value, f"expected one of {', '.join(_LOG_LEVELS)} (any case)")
    return value.upper()


def _host(key: str, value: object) -> str:
    if type(value) is not str or not value or any(c in value for c in " /@[]"):
        raise _bad(key, value, "expected a host name or IP address (no port)")
    if ":" in value:  # only an IPv6 address may hold colons
        try:
            ipaddress.IPv6Address(value)
        except ValueError:
            raise _bad(key, value, "expected a host name or IP address (no port)") from None
    return value


def _log_format(key: str, value: object) -> str:
    if type(value) is not str or value.lower() not in ("text", "json"):
        raise _bad(key, value, "expected 'text' or 'json'")
    return value.lower()


def _authority_key(key: str, value: object) -> bytes | None:
    if value is None:
        return None
    if type(value) is str:
        try:
            raw = bytes.fromhex(value.strip())
        except ValueError:
            raise _bad(
                key, value, "expected 64 hex digits (a 32-byte Ed25519 public key)"
            ) from None
    elif type(value) is bytes:
        raw = value
    else:
        raise _bad(key, value, "expected 64 hex digits (a 32-byte Ed25519 public key)")
    try:
        return check_public_key(raw, key)
    except (InvalidArgument, WrongType) as exc:
        raise _bad(key, value, str(exc)) from None


def _bootstrap(key: str, value: object) -> tuple[BootstrapPeer, ...]:
    if isinstance(value, str | bytes) or not isinstance(value, list | tuple):
        raise _bad(key, value, "expected a list of '<device-id>@host:port' strings")
    out: list[BootstrapPeer] = []
    for item in value:
        peer = item if isinstance(item, BootstrapPeer) else parse_bootstrap(item, key)
        if peer not in out:
            out.append(peer)
    return tuple(out)


def _listen(key: str, value: object) -> str:
    return parse_listen_address(value, key)


BUILTIN_PROTOCOLS: Final = {"gossip": "aura_sync.protocols.gossip:spec"}
"""Short names of the built-in plug-ins accepted in ``protocols``."""


def _protocols(key: str, value: object) -> tuple[str, ...]:
    if isinstance(value, str | bytes) or not isinstance(value, list | tuple):
        raise _bad(key, value, "expected a list of 'package.module:name' strings")
    out: list[str] = []
    for item in value:
        ref = BUILTIN_PROTOCOLS.get(item, item) if type(item) is str else item
        module, sep, attr = ref.partition(":") if type(ref) is str else ("", "", "")
        if not (
            sep
            and all(p.isidentifier() for p in module.split("."))
            and all(p.isidentifier() for p in attr.split("."))
        ):
            raise _bad(
                key,
                value,
                f"{item!r} is neither 'package.module:name' nor a built-in "
                f"({', '.join(sorted(BUILTIN_PROTOCOLS))})",
            )
        if ref not in out:
            out.append(ref)
    return tuple(out)


_TOP_LEVEL: Final[dict[str, Callable[[str, Any], Any]]] = {
    "data_dir": _path,
    "listen": _listen,
    "bootstrap": _bootstrap,
    "authority_public_key": _authority_key,
    "token_path": _optional_path,
    "allow_bearer_token": _bool,
    "sync_interval": _positive_seconds,
    "peers_per_round": _int_in(1, _MAX_PEERS_PER_ROUND),
    "batch_size": _int_in(1, MAX_OPS_BATCH),
    "request_timeout": _positive_seconds,
    "shutdown_timeout": _positive_seconds,
    "metrics_port": _port,
    "metrics_listen": _host,
    "log_level": _log_level,
    "log_format": _log_format,
    "protocols": _protocols,
    "cache_max_keys": _int_in(1, 2**31 - 1),
    "fault_injection": _bool,
    "refuse_sync": _bool,
}

_SECTIONS: Final[dict[str, type]] = {
    "rate_limit": RateLimitConfig,
    "defence": AdmissionConfig,
    "pool": PoolConfig,
    "peers": PeerDiscoveryConfig,
    "scoring": ScoringConfig,
    "transport": TransportConfig,
    "state": StateConfig,
    "gossip": GossipConfig,
}
_FORBIDDEN_SECTION_KEYS: Final = {
    ("peers", "root_public_key"): "set the top-level 'authority_public_key' instead",
    ("peers", "scoring"): "set the keys of the [scoring] section instead",
}


def _build_section(section: str, cls: type, table: object) -> Any:
    """Build ``cls`` from a TOML table, naming ``section.key`` and the value on any error."""
    if not isinstance(table, Mapping):
        raise ConfigError(f"config key {section!r} must be a table, got {table!r}")
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    bases: dict[type, Any] = {TransportConfig: NODE_TRANSPORT, RateLimitConfig: NODE_RATE_LIMIT}
    base = bases.get(cls) or cls()
    for key, value in table.items():
        dotted = f"{section}.{key}"
        if key not in names or (section, key) in _FORBIDDEN_SECTION_KEYS:
            hint = _FORBIDDEN_SECTION_KEYS.get((section, key))
            known = ", ".join(
                sorted(names - {k for s, k in _FORBIDDEN_SECTION_KEYS if s == section})
            )
            raise ConfigError(
                f"unknown config key {dotted!r} (value {value!r}); "
                + (hint if hint else f"known keys: {known}")
            )
    try:
        return dataclasses.replace(base, **dict(table))
    except (InvalidArgument, WrongType, TypeError, ValueError) as exc:
        for key, value in table.items():  # one field at a time, so the error names the key
            try:
                dataclasses.replace(base, **{key: value})
            except (InvalidArgument, WrongType, TypeError, ValueError) as one:
                dotted = f"{section}.{key}"
                raise ConfigError(
                    f"config key {dotted!r} has invalid value {value!r}: {one}"
                ) from None
        shown = ", ".join(f"{k}={v!r}" for k, v in table.items())
        raise ConfigError(f"config section {section!r} ({shown}) is invalid: {exc}") from None


def _read_file(path: Path) -> dict[str, Any]:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read config file {str(path)!r}: {exc.strerror or exc}") from None
    try:
        return tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {str(path)!r} is not UTF-8 text: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {str(path)!r} is not valid TOML: {exc}") from None


def load_config(
    path: str | os.PathLike[str] | None = None, overrides: Mapping[str, object] | None = None
) -> NodeConfig:
    """Merge defaults, the TOML file at ``path`` (optional) and ``overrides``; validate all.

    ``overrides`` maps top-level keys (``"listen"``, ``"metrics_port"``, ...)
    or dotted section keys (``"pool.max_total_connections"``) to values; a
    value of ``None`` means "not given" and is skipped, except for keys whose
    None is meaningful only when given explicitly in the file.

    :returns: the validated :class:`NodeConfig`.
    :raises ConfigError: unreadable file, bad TOML, unknown key, or a value of
        the wrong type or out of range; the message names the key and value.
    """
    raw: dict[str, Any] = {}
    if path is not None:
        raw = _read_file(Path(path).expanduser())
    merged: dict[str, Any] = {}
    sections: dict[str, dict[str, Any]] = {}
    for key, value in raw.items():
        if key in _SECTIONS:
            if not isinstance(value, Mapping):
                raise ConfigError(f"config key {key!r} must be a table, got {value!r}")
            sections[key] = dict(value)
        elif key == "cache":
            if not isinstance(value, Mapping):
                raise ConfigError(f"config key 'cache' must be a table, got {value!r}")
            for sub, sub_value in value.items():
                if sub != "max_keys":
                    raise ConfigError(
                        f"unknown config key 'cache.{sub}' (value {sub_value!r}); "
                        "known keys: max_keys"
                    )
                merged["cache_max_keys"] = sub_value
        elif key in _TOP_LEVEL and key != "cache_max_keys":
            merged[key] = value
        else:
            known = sorted([*(k for k in _TOP_LEVEL if k != "cache_max_keys"), *_SECTIONS, "cache"])
            raise ConfigError(
                f"unknown config key {key!r} (value {value!r}); known keys: {', '.join(known)}"
            )
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        section, dot, sub = key.partition(".")
        if dot and section in _SECTIONS:
            sections.setdefault(section, {})[sub] = value
        elif key == "cache.max_keys":
            merged["cache_max_keys"] = value
        elif key in _TOP_LEVEL:
            merged[key] = value
        else:
            raise ConfigError(f"unknown config key {key!r} (value {value!r})")
    for key, value in list(merged.items()):
        merged[key] = _TOP_LEVEL[key](key, value)
    for section, table in sections.items():
        merged[section] = _build_section(section, _SECTIONS[section], table)
    try:
        return NodeConfig(**merged)
    except ConfigError:
        raise
    except (InvalidArgument, WrongType, TypeError) as exc:
        raise ConfigError(f"invalid configuration: {exc}") from None


def check_own_token(token: bytes, config: NodeConfig, device_id: DeviceId) -> bytes:
    """Check this node's own capability token at start; return it.

    With an authority key configured, the token must verify against it and be
    bound to ``device_id`` (a token presented to a peer cannot then be
    replayed by that peer); a bearer token (no subject) passes only with
    ``allow_bearer_token``, with a warning.  Without an authority key the
    token is never presented and is returned unchecked.

    :raises ConfigError: naming ``token_path`` and what is wrong (garbage, a
        foreign authority, another subject, a bearer token not allowed).
    """
    key = config.authority_public_key
    if key is None:
        return token
    where = f"config key 'token_path' has invalid value {str(config.token_path)!r}"
    try:
        verify_capability_token(token, key)
        subject = capability_token_subject(token, key)
    except CapabilityError as exc:
        raise ConfigError(
            f"{where}: the token does not verify against 'authority_public_key' {key.hex()}: {exc}"
        ) from None
    if subject is None:
        if not config.allow_bearer_token:
            raise ConfigError(
                f"{where}: it is a bearer token (no subject): any peer it is shown to could "
                f"use it; issue one with --subject {device_id} or set allow_bearer_token = true"
            )
        _log.warning(
            "event=bearer_token token_path=%s: this node's token has no subject; a peer that "
            "captures it can use it (allow_bearer_token = true)",
            config.token_path,
        )
    elif subject != device_id:
        raise ConfigError(
            f"{where}: the token is bound to {subject}, not to this node ({device_id})"
        )
    return token
