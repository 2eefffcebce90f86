"""The node's own capability token and authority key, checked at start; who gets the token.

Also: the ``[transport]`` section of the node's TOML (admission and
backpressure knobs) and its defaults.
"""

from __future__ import annotations

import base64
import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _node_helpers import Cluster, cluster, wait_until

from aura_sync.errors import ConfigError
from aura_sync.identity import NodeIdentity
from aura_sync.ids import DeviceId
from aura_sync.infrastructure.capabilities import (
    capability_token_subject,
    check_public_key,
    generate_authority_keypair,
    issue_capability_token,
)
from aura_sync.messages.common import Ack
from aura_sync.messages.sync import PresentCapability
from aura_sync.node.config import NODE_TRANSPORT, load_config
from aura_sync.transport import Inbound, TcpTransport, TransportEvent
from aura_sync.transport.config import TransportConfig

WEAK_KEYS = {
    "all zeros (order 4)": "00" * 32,
    "identity (order 1)": "01" + "00" * 31,
    "order 2 (y = p - 1)": "ec" + "ff" * 30 + "7f",
    "order 8": "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",
    "order 8, other": "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
    "order 8, negated x": "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85",
    "non-canonical y = p": "ed" + "ff" * 30 + "7f",
    "non-canonical y = p + 1": "ee" + "ff" * 30 + "7f",
    "non-canonical -0": "01" + "00" * 30 + "80",
}


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[Cluster]:
    yield from cluster(tmp_path)


def _identity(tmp_path: Path, name: str) -> DeviceId:
    (tmp_path / name).mkdir(mode=0o700)
    return NodeIdentity.load_or_create(tmp_path / name).device_id


def _token_file(path: Path, token: bytes) -> str:
    path.write_text(base64.urlsafe_b64encode(token).decode() + "\n")
    return str(path)


@pytest.mark.parametrize("key", list(WEAK_KEYS.values()), ids=list(WEAK_KEYS))
def test_small_order_and_non_canonical_authority_keys_are_refused(key: str) -> None:
    with pytest.raises(ConfigError, match="authority_public_key"):
        load_config(None, {"authority_public_key": key, "token_path": "/nonexistent"})


def test_real_authority_keys_pass_the_key_check() -> None:
    for _ in range(50):
        key = generate_authority_keypair().public_key
        assert check_public_key(key) == key
    base_point = bytes.fromhex("58" + "66" * 31)
    assert check_public_key(base_point) == base_point


def test_token_subject_is_read_from_the_authority_block() -> None:
    authority = generate_authority_keypair()
    me = DeviceId.from_int(7)
    bound = issue_capability_token(authority.private_key, subject=me)
    assert capability_token_subject(bound, authority.public_key) == me
    assert (
        capability_token_subject(
            issue_capability_token(authority.private_key), authority.public_key
        )
        is None
    )


@pytest.mark.parametrize(
    ("kind", "needle"),
    [
        ("garbage", "does not verify against 'authority_public_key'"),
        ("foreign", "does not verify against 'authority_public_key'"),
        ("no right", "does not verify against 'authority_public_key'"),
        ("wrong subject", "is bound to 00000000-0000-0000-0000-000000000063, not to this node"),
        ("bearer", "bearer token"),
    ],
)
def test_a_bad_own_token_stops_the_start_with_a_clear_message(
    nodes: Cluster, tmp_path: Path, kind: str, needle: str
) -> None:
    authority = generate_authority_keypair()
    me = _identity(tmp_path, "n")
    token = {
        "garbage": b"\x01not a biscuit at all",
        "foreign": issue_capability_token(generate_authority_keypair().private_key, subject=me),
        "no right": issue_capability_token(authority.private_key, ("sync:push",), subject=me),
        "wrong subject": issue_capability_token(
            authority.private_key, subject=DeviceId.from_int(99)
        ),
        "bearer": issue_capability_token(authority.private_key),
    }[kind]
    path = _token_file(tmp_path / "tok", token)
    with pytest.raises(ConfigError, match="token_path") as info:
        nodes.add("n", authority_public_key=authority.public_key.hex(), token_path=path)
    assert needle in str(info.value)


def test_a_bearer_token_starts_only_when_allowed_and_warns_every_start(
    nodes: Cluster, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    authority = generate_authority_keypair()
    path = _token_file(tmp_path / "tok", issue_capability_token(authority.private_key))
    settings: dict[str, Any] = {
        "authority_public_key": authority.public_key.hex(),
        "token_path": path,
        "allow_bearer_token": True,
    }
    with caplog.at_level(logging.WARNING, logger="aura_sync.node"):
        nodes.add("n", **settings)  # it starts (add raises if it does not)
    assert sum("event=bearer_token" in r.getMessage() for r in caplog.records) == 1


def test_a_bound_token_starts(nodes: Cluster, tmp_path: Path) -> None:
    authority = generate_authority_keypair()
    me = _identity(tmp_path, "n")
    path = _token_file(tmp_path / "tok", issue_capability_token(authority.private_key, subject=me))
    node = nodes.add("n", authority_public_key=authority.public_key.hex(), token_path=path)
    assert node.device_id == me


class _Inbox:
    def __init__(self) -> None:
        self.tokens: list[bytes] = []
        self.seen = threading.Event()

    def __call__(self, event: TransportEvent) -> None:
        if isinstance(event, Inbound) and isinstance(event.message, PresentCapability):
            self.tokens.append(event.message.token)
            self.seen.set()
            if event.request_id is not None:
                event.respond(Ack())


def test_the_token_goes_only_to_a_peer_that_proved_its_own(nodes: Cluster, tmp_path: Path) -> None:
    authority = generate_authority_keypair()
    me = _identity(tmp_path, "n")
    path = _token_file(tmp_path / "tok", issue_capability_token(authority.private_key, subject=me))
    node = nodes.add("n", authority_public_key=authority.public_key.hex(), token_path=path)

    stranger = TcpTransport(NodeIdentity.generate())  # anonymous: holds no token
    try:
        inbox = _Inbox()
        stranger.connect(node.device_id, node.listen_address, handler=inbox)
        assert not inbox.seen.wait(1.5), "the node showed its token to an anonymous peer"
    finally:
        stranger.close()

    (tmp_path / "m").mkdir(mode=0o700)
    member_identity = NodeIdentity.load_or_create(tmp_path / "m")
    member_token = issue_capability_token(authority.private_key, subject=member_identity.device_id)
    member = TcpTransport(member_identity)
    try:
        inbox = _Inbox()
        conn = member.connect(node.device_id, node.listen_address, handler=inbox)
        conn.request(PresentCapability(member_token), 5).result(5)
        wait_until(inbox.seen.is_set, 5, "the node to present its token back")
        assert capability_token_subject(inbox.tokens[0], authority.public_key) == me
    finally:
        member.close()


def test_transport_section_keeps_node_defaults_for_keys_not_given(tmp_path: Path) -> None:
    file = tmp_path / "node.toml"
    file.write_text("[transport]\nmax_established = 100\nmax_handshaking_per_address = 4\n")
    cfg = load_config(file)
    assert cfg.transport.max_established == 100
    assert cfg.transport.max_handshaking_per_address == 4
    assert cfg.transport.keepalive_interval == NODE_TRANSPORT.keepalive_interval == 10.0
    assert load_config(None).transport == NODE_TRANSPORT
    assert load_config(None, {"transport.max_connections": 50}).transport.max_connections == 50
    with pytest.raises(ConfigError, match=r"transport\.max_conections"):
        load_config(None, {"transport.max_conections": 50})
    with pytest.raises(ConfigError, match=r"transport\.reserved_outbound"):
        load_config(None, {"transport.reserved_outbound": -1})
    defaults = TransportConfig()
    assert (defaults.max_handshaking, defaults.max_established, defaults.reserved_outbound) == (
        64,
        256,
        32,
    )


def test_the_node_transport_uses_the_configured_limits(nodes: Cluster) -> None:
    node = nodes.add("n", **{"transport.max_connections_per_peer": 3})
    transport = node.transport
    assert isinstance(transport, TcpTransport)
    assert transport.config.max_connections_per_peer == 3
    assert transport.admission_status().exhausted is None
