"""Biscuit capability tokens: minting, verification, and the peer manager failing closed."""

from __future__ import annotations

import biscuit_auth
import pytest

from aura_sync.effects import ManualClock
from aura_sync.errors import CapabilityError, ConfigError, InvalidArgument, WrongType
from aura_sync.ids import DeviceId
from aura_sync.infrastructure.capabilities import (
    MAX_TOKEN_SIZE,
    SYNC_REQUEST_DIGEST,
    AuthorityKeyPair,
    generate_authority_keypair,
    issue_capability_token,
    public_key_from_private,
    verify_capability_token,
)
from aura_sync.infrastructure.peers import PeerDiscoveryConfig, PeerManager, PeerStatus

ALICE = DeviceId.from_int(0xA11CE)
BOB = DeviceId.from_int(0xB0B)


@pytest.fixture(scope="module")
def authority() -> AuthorityKeyPair:
    return generate_authority_keypair()


@pytest.fixture(scope="module")
def other_authority() -> AuthorityKeyPair:
    return generate_authority_keypair()


def _manager(authority: AuthorityKeyPair | None) -> PeerManager:
    key = None if authority is None else authority.public_key
    manager = PeerManager(PeerDiscoveryConfig(root_public_key=key), clock=ManualClock())
    manager.add_peer(ALICE)
    manager.set_peer_status(ALICE, PeerStatus.CONNECTED)
    manager.update_peer_metadata(ALICE, verified=True, trust_level=90)
    return manager


def _append_block(token: bytes, root: bytes, code: str) -> bytes:
    """Attenuate ``token`` with a block of Datalog ``code`` (what any holder can do)."""
    ed25519 = biscuit_auth.Algorithm.Ed25519  # type: ignore[attr-defined]  # stubs lag the library
    public = biscuit_auth.PublicKey.from_bytes(root, ed25519)  # type: ignore[call-arg]
    biscuit = biscuit_auth.Biscuit.from_bytes(token, public)
    return bytes(biscuit.append(biscuit_auth.BlockBuilder(code)).to_bytes())


# --- key pairs ----------------------------------------------------------------------------


def test_generated_keypairs_are_distinct_and_consistent(authority: AuthorityKeyPair) -> None:
    other = generate_authority_keypair()
    assert len(authority.private_key) == 32 and len(authority.public_key) == 32
    assert authority.public_key != other.public_key
    assert public_key_from_private(authority.private_key) == authority.public_key


def test_keypair_repr_hides_private_key(authority: AuthorityKeyPair) -> None:
    assert authority.private_key.hex() not in repr(authority)
    assert repr(authority.private_key) not in repr(authority)


def test_keypair_rejects_mismatched_halves(
    authority: AuthorityKeyPair, other_authority: AuthorityKeyPair
) -> None:
    with pytest.raises(InvalidArgument, match=r"does not belong") as info:
        AuthorityKeyPair(authority.private_key, other_authority.public_key)
    message = str(info.value)
    assert other_authority.public_key.hex() in message  # the value is named ...
    assert authority.public_key.hex() in message
    assert authority.private_key.hex() not in message  # ... but never the secret


@pytest.mark.parametrize("bad", [b"", b"x" * 31, b"x" * 33])
def test_key_length_is_checked(bad: bytes) -> None:
    with pytest.raises(InvalidArgument, match=f"got {len(bad)}"):
        public_key_from_private(bad)
    with pytest.raises(ConfigError, match=r"root_public_key"):
        PeerDiscoveryConfig(root_public_key=bad)


def test_key_type_is_checked() -> None:
    with pytest.raises(WrongType, match=r"private_key.*str"):
        public_key_from_private("00" * 32)  # type: ignore[arg-type]


# --- minting ------------------------------------------------------------------------------


def test_issue_validates_rights(authority: AuthorityKeyPair) -> None:
    with pytest.raises(InvalidArgument, match=r"at least one"):
        issue_capability_token(authority.private_key, rights=())
    with pytest.raises(InvalidArgument, match=r"'bad right\)'"):
        issue_capability_token(authority.private_key, rights=("bad right)",))
    with pytest.raises(WrongType, match=r"rights must be an iterable of str"):
        issue_capability_token(authority.private_key, rights="sync:request_digest")
    with pytest.raises(WrongType, match=r"each right must be a str, got int 7"):
        issue_capability_token(authority.private_key, rights=(7,))  # type: ignore[arg-type]
    with pytest.raises(WrongType, match=r"subject"):
        issue_capability_token(authority.private_key, subject=b"x" * 16)  # type: ignore[arg-type]


def test_issue_rejects_rights_that_are_not_iterable(authority: AuthorityKeyPair) -> None:
    # used to escape as a bare TypeError from tuple()
    with pytest.raises(WrongType, match=r"rights must be an iterable of str, got int 5"):
        issue_capability_token(authority.private_key, rights=5)  # type: ignore[arg-type]


def test_issue_refuses_a_token_too_large_to_verify(authority: AuthorityKeyPair) -> None:
    # Minting used to succeed and hand out a token that every verifier refuses.
    rights = [f"r{i:0>120}" for i in range(200)]
    with pytest.raises(InvalidArgument, match=rf"token would be \d+ bytes.*{MAX_TOKEN_SIZE}"):
        issue_capability_token(authority.private_key, rights=rights)
    fits = rights[:100]
    token = issue_capability_token(authority.private_key, rights=fits)
    assert len(token) <= MAX_TOKEN_SIZE
    assert len(verify_capability_token(token, authority.public_key, required_right=fits[0])) == 100


def test_issued_token_grants_its_rights(authority: AuthorityKeyPair) -> None:
    token = issue_capability_token(
        authority.private_key, rights=("sync:request_digest", "sync:push", "sync:push")
    )
    assert verify_capability_token(token, authority.public_key) == (
        "sync:push",
        "sync:request_digest",
    )


# --- verification (function level) --------------------------------------------------------


def test_verify_rejects_foreign_authority(
    authority: AuthorityKeyPair, other_authority: AuthorityKeyPair
) -> None:
    token = issue_capability_token(other_authority.private_key)
    with pytest.raises(CapabilityError, match=r"not signed by the configured authority"):
        verify_capability_token(token, authority.public_key)


def test_verify_rejects_missing_right(authority: AuthorityKeyPair) -> None:
    token = issue_capability_token(authority.private_key, rights=("sync:push",))
    with pytest.raises(CapabilityError, match=r"sync:request_digest"):
        verify_capability_token(token, authority.public_key)


def test_verify_binds_subject(authority: AuthorityKeyPair) -> None:
    token = issue_capability_token(authority.private_key, subject=ALICE)
    assert SYNC_REQUEST_DIGEST in verify_capability_token(
        token, authority.public_key, subject=ALICE
    )
    with pytest.raises(CapabilityError, match=r"for this peer"):
        verify_capability_token(token, authority.public_key, subject=BOB)
    bearer = issue_capability_token(authority.private_key)
    assert verify_capability_token(bearer, authority.public_key, subject=BOB) == (
        SYNC_REQUEST_DIGEST,
    )


def test_attenuation_cannot_add_rights_or_rebind_subject(authority: AuthorityKeyPair) -> None:
    weak = issue_capability_token(authority.private_key, rights=("sync:push",))
    boosted = _append_block(weak, authority.public_key, 'right("sync:request_digest");')
    with pytest.raises(CapabilityError):
        verify_capability_token(boosted, authority.public_key)
    bound = issue_capability_token(authority.private_key, subject=ALICE)
    rebound = _append_block(bound, authority.public_key, f"subject(hex:{BOB.raw.hex()});")
    with pytest.raises(CapabilityError):
        verify_capability_token(rebound, authority.public_key, subject=BOB)


def test_attenuation_checks_are_enforced(authority: AuthorityKeyPair) -> None:
    token = issue_capability_token(authority.private_key)
    restricted = _append_block(token, authority.public_key, 'check if right("never");')
    with pytest.raises(CapabilityError, match=r"checks failed"):
        verify_capability_token(restricted, authority.public_key)
    # No time fact is supplied, so an expiry check fails closed.
    expiring = _append_block(
        token, authority.public_key, "check if time($t), $t < 2999-01-01T00:00:00Z;"
    )
    with pytest.raises(CapabilityError):
        verify_capability_token(expiring, authority.public_key)
    harmless = _append_block(token, authority.public_key, 'check if right("sync:request_digest");')
    assert verify_capability_token(harmless, authority.public_key) == (SYNC_REQUEST_DIGEST,)


def _corruptions(token: bytes) -> list[bytes]:
    middle = len(token) // 2
    flipped = token[:middle] + bytes([token[middle] ^ 0x01]) + token[middle + 1 :]
    return [b"", b"garbage", b"\x00" * 64, token[:-1], token[: len(token) // 2], flipped]


def test_verify_rejects_garbage_and_tampering(authority: AuthorityKeyPair) -> None:
    token = issue_capability_token(authority.private_key)
    for bad in _corruptions(token):
        with pytest.raises(CapabilityError):
            verify_capability_token(bad, authority.public_key)


def test_verify_rejects_oversized_token(authority: AuthorityKeyPair) -> None:
    with pytest.raises(CapabilityError, match=str(MAX_TOKEN_SIZE)):
        verify_capability_token(b"\x00" * (MAX_TOKEN_SIZE + 1), authority.public_key)


def test_verify_argument_types(authority: AuthorityKeyPair) -> None:
    with pytest.raises(WrongType, match=r"token must be bytes, got str"):
        verify_capability_token("token", authority.public_key)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match=r"root_public_key must be exactly 32 bytes, got 3"):
        verify_capability_token(b"x", b"abc")
    with pytest.raises(InvalidArgument, match=r"required_right"):
        verify_capability_token(b"x", authority.public_key, required_right="no spaces")


def test_library_failure_fails_closed(
    authority: AuthorityKeyPair, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = issue_capability_token(authority.private_key)

    def explode(*args: object) -> object:
        raise RuntimeError("boom inside the library")

    monkeypatch.setattr(biscuit_auth.Biscuit, "from_bytes", explode)
    with pytest.raises(CapabilityError, match=r"RuntimeError: boom"):
        verify_capability_token(token, authority.public_key)


# --- the peer manager ---------------------------------------------------------------------


def test_valid_token_grants_sync_capability(authority: AuthorityKeyPair) -> None:
    manager = _manager(authority)
    assert manager.select_sync_peers(5) == []  # no capability yet
    token = issue_capability_token(authority.private_key, subject=ALICE)
    assert manager.update_peer_capabilities(ALICE, token) == (SYNC_REQUEST_DIGEST,)
    meta = manager.get_peer(ALICE).metadata
    assert meta.has_sync_capability and meta.capabilities == (SYNC_REQUEST_DIGEST,)
    assert manager.select_sync_peers(5) == [ALICE]
    assert manager.statistics().peers_with_sync_capability == 1


def _assert_fails_closed(manager: PeerManager, token: bytes, match: str = "") -> None:
    with pytest.raises(CapabilityError, match=match):
        manager.update_peer_capabilities(ALICE, token)
    meta = manager.get_peer(ALICE).metadata
    assert not meta.has_sync_capability
    assert meta.capabilities == ()
    assert manager.select_sync_peers(5) == []


@pytest.mark.parametrize("case", ["foreign", "missing_right", "other_subject", "garbage", "empty"])
def test_bad_token_revokes_capability(
    case: str, authority: AuthorityKeyPair, other_authority: AuthorityKeyPair
) -> None:
    manager = _manager(authority)
    manager.update_peer_capabilities(
        ALICE, issue_capability_token(authority.private_key, subject=ALICE)
    )
    assert manager.get_peer(ALICE).metadata.has_sync_capability
    token = {
        "foreign": issue_capability_token(other_authority.private_key, subject=ALICE),
        "missing_right": issue_capability_token(authority.private_key, rights=("sync:push",)),
        "other_subject": issue_capability_token(authority.private_key, subject=BOB),
        "garbage": b"\x01garbage\xff" * 3,
        "empty": b"",
    }[case]
    _assert_fails_closed(manager, token, match=str(ALICE))


def test_without_root_key_every_token_fails_closed(authority: AuthorityKeyPair) -> None:
    manager = _manager(None)
    manager.update_peer_metadata(ALICE, has_sync_capability=True)  # operator override
    _assert_fails_closed(
        manager, issue_capability_token(authority.private_key), match=r"no root_public_key"
    )


def test_wrong_token_type_is_rejected_without_change(authority: AuthorityKeyPair) -> None:
    manager = _manager(authority)
    manager.update_peer_capabilities(ALICE, issue_capability_token(authority.private_key))
    before = manager.get_peer(ALICE)
    with pytest.raises(WrongType, match=r"token must be bytes, got str"):
        manager.update_peer_capabilities(ALICE, "token")  # type: ignore[arg-type]
    assert manager.get_peer(ALICE) == before


def test_capability_filtering_off_selects_without_tokens(authority: AuthorityKeyPair) -> None:
    manager = PeerManager(
        PeerDiscoveryConfig(capability_filtering=False, root_public_key=authority.public_key),
        clock=ManualClock(),
    )
    manager.add_peer(ALICE)
    manager.set_peer_status(ALICE, PeerStatus.CONNECTED)
    manager.update_peer_metadata(ALICE, verified=True)
    assert manager.select_sync_peers(1) == [ALICE]
