"""NodeConfig: defaults, TOML file, overrides, and errors that name the key and the value."""

from __future__ import annotations

from pathlib import Path

import pytest

from aura_sync.errors import ConfigError
from aura_sync.ids import DeviceId
from aura_sync.infrastructure.capabilities import generate_authority_keypair
from aura_sync.node.config import BootstrapPeer, NodeConfig, load_config, parse_bootstrap

PEER = DeviceId.from_int(7)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "node.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_need_no_file_and_no_flag() -> None:
    cfg = load_config()
    assert cfg.listen == "127.0.0.1:7400"
    assert cfg.batch_size == 128
    assert cfg.metrics_port is None
    assert cfg.bootstrap == ()
    assert cfg.pool.max_total_connections == 100
    assert cfg.rate_limit.peer_burst == 20000  # NODE_RATE_LIMIT
    assert cfg.rate_limit.adaptive and cfg.defence.enabled
    assert cfg.cache_max_keys == 1024
    assert not cfg.capabilities_required
    assert not cfg.peers.capability_filtering


def test_file_then_overrides(tmp_path: Path) -> None:
    key = generate_authority_keypair()
    path = write(
        tmp_path,
        f"""
data_dir = "{tmp_path / "data"}"
listen = "127.0.0.1:0"
bootstrap = ["{PEER}@127.0.0.1:7401"]
authority_public_key = "{key.public_key.hex()}"
token_path = "{tmp_path / "token"}"
sync_interval = 1
peers_per_round = 5
metrics_port = 0
log_level = "debug"

[pool]
max_total_connections = 7

[rate_limit]
peer_burst = 50

[peers]
min_trust_level = 10

[cache]
max_keys = 64

[gossip]
mesh_degree = 8
fanout = 3
heartbeat = 2
seen_max = 50000
seen_ttl = 300.0
max_payload = 16384
""",
    )
    cfg = load_config(path, {"peers_per_round": 2, "pool.acquire_timeout": 1.5, "listen": None})
    assert cfg.data_dir == tmp_path / "data"
    assert cfg.listen == "127.0.0.1:0"
    assert cfg.bootstrap == (BootstrapPeer(PEER, "127.0.0.1:7401"),)
    assert cfg.authority_public_key == key.public_key
    assert cfg.peers.root_public_key == key.public_key
    assert cfg.peers.capability_filtering
    assert cfg.peers.min_trust_level == 10
    assert cfg.sync_interval == 1.0
    assert cfg.peers_per_round == 2  # the flag wins over the file
    assert cfg.pool.max_total_connections == 7
    assert cfg.pool.acquire_timeout == 1.5
    assert cfg.rate_limit.peer_burst == 50
    assert cfg.cache_max_keys == 64
    assert cfg.log_level == "DEBUG"
    assert (cfg.gossip.mesh_degree, cfg.gossip.fanout, cfg.gossip.heartbeat) == (8, 3, 2.0)
    assert (cfg.gossip.seen_max, cfg.gossip.seen_ttl) == (50_000, 300.0)
    assert cfg.gossip.max_payload == 16384 and cfg.gossip.cache_max == 1000  # the default


@pytest.mark.parametrize(
    ("text", "needles"),
    [
        ("batch_size = 500", ["batch_size", "500"]),
        ('batch_size = "big"', ["batch_size", "'big'"]),
        ("sync_interval = -1", ["sync_interval", "-1"]),
        ("sync_interval = nan", ["sync_interval", "nan"]),
        ('listen = "nowhere"', ["listen", "'nowhere'"]),
        ("metrics_port = 70000", ["metrics_port", "70000"]),
        ('log_level = "loud"', ["log_level", "'loud'"]),
        ('bootstrap = ["127.0.0.1:7401"]', ["bootstrap", "'127.0.0.1:7401'"]),
        ('bootstrap = ["not-an-id@127.0.0.1:1"]', ["bootstrap", "not-an-id"]),
        ('authority_public_key = "zz"', ["authority_public_key", "'zz'"]),
        ('authority_public_key = "abcd"', ["authority_public_key", "'abcd'"]),
        ('colour = "blue"', ["colour", "'blue'"]),
        ("[pool]\nmax_total_connections = -3", ["pool.max_total_connections", "-3"]),
        ('[pool]\nacquire_timeout = "soon"', ["pool.acquire_timeout", "'soon'"]),
        ("[pool]\nspeed = 3", ["pool.speed", "3"]),
        ("[rate_limit]\npeer_burst = 0", ["rate_limit.peer_burst", "0"]),
        ('[peers]\nroot_public_key = "00"', ["peers.root_public_key", "authority_public_key"]),
        ("[cache]\nmax_keys = 0", ["cache_max_keys", "0"]),
        ("[cache]\nsize = 3", ["cache.size", "3"]),
        ("pool = 3", ["pool", "3"]),
        ("[gossip]\nmesh_degree = 0", ["gossip.mesh_degree", "0"]),
        ("[gossip]\nfanout = 65", ["gossip.fanout", "65"]),
        ('[gossip]\nheartbeat = "fast"', ["gossip.heartbeat", "'fast'"]),
        ("[gossip]\nseen_ttl = 3.0", ["gossip.seen_ttl", "3.0", "history x heartbeat"]),
        ("[gossip]\nmax_payload = 70000", ["gossip.max_payload", "70000"]),
        ("[gossip]\nseen_max = 1", ["gossip.seen_max", "1"]),
        ("[gossip]\nmesh = 3", ["gossip.mesh", "known keys", "mesh_degree"]),
        ("gossip = 3", ["gossip", "3"]),
    ],
)
def test_bad_values_name_key_and_value(tmp_path: Path, text: str, needles: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    for needle in needles:
        assert needle in str(info.value), (needle, str(info.value))


def test_bad_override_names_key_and_value() -> None:
    with pytest.raises(ConfigError, match=r"peers_per_round.*0"):
        load_config(None, {"peers_per_round": 0})
    with pytest.raises(ConfigError, match=r"pool\.max_lifetime.*-1"):
        load_config(None, {"pool.max_lifetime": -1})
    with pytest.raises(ConfigError, match=r"nonsense"):
        load_config(None, {"nonsense": 1})


def test_unreadable_and_invalid_files(tmp_path: Path) -> None:
    missing = tmp_path / "absent.toml"
    with pytest.raises(ConfigError, match=r"absent\.toml"):
        load_config(missing)
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(write(tmp_path, "listen = = 3"))
    binary = tmp_path / "bin.toml"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ConfigError, match="UTF-8"):
        load_config(binary)


def test_authority_key_requires_a_token_path() -> None:
    key = generate_authority_keypair()
    with pytest.raises(ConfigError, match="token_path"):
        load_config(None, {"authority_public_key": key.public_key.hex()})


def test_parse_bootstrap_round_trip() -> None:
    peer = parse_bootstrap(f"{PEER}@localhost:9000")
    assert str(peer) == f"{PEER}@localhost:9000"
    with pytest.raises(ConfigError, match="port 0"):
        parse_bootstrap(f"{PEER}@localhost:0")


def test_direct_construction_validates() -> None:
    with pytest.raises(ConfigError, match="peers_per_round"):
        NodeConfig(peers_per_round=0)
    cfg = NodeConfig(data_dir=Path("/tmp/x"))
    assert cfg.replace(batch_size=1).batch_size == 1


def test_metrics_listen_and_log_format(tmp_path: Path) -> None:
    default = load_config(None, {})
    assert (default.metrics_listen, default.log_format) == ("127.0.0.1", "text")
    file = tmp_path / "node.toml"
    file.write_text('metrics_listen = "0.0.0.0"\nlog_format = "JSON"\n')
    config = load_config(file)
    assert (config.metrics_listen, config.log_format) == ("0.0.0.0", "json")
    for key, bad in (("metrics_listen", "127.0.0.1:9100"), ("metrics_listen", ""),
                     ("log_format", "xml"), ("log_format", 1)):  # fmt: skip
        with pytest.raises(ConfigError, match=key):
            load_config(None, {key: bad})
