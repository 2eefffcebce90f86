"""Node identity: key file handling, DeviceId derivation, certificate verification."""

from __future__ import annotations

import datetime
import os
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import NameOID

from aura_sync.errors import IdentityError, WrongType
from aura_sync.identity import (
    KEY_FILE_NAME,
    NodeIdentity,
    device_id_of_certificate,
    self_signed_certificate,
)
from aura_sync.ids import DeviceId


def _raw(key: ed25519.Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def test_key_file_created_with_mode_0600_and_reloaded(tmp_path: Path) -> None:
    data_dir = tmp_path / "node"
    first = NodeIdentity.load_or_create(data_dir)
    key_file = data_dir / KEY_FILE_NAME
    assert key_file.is_file()
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(data_dir.stat().st_mode) & 0o077 == 0
    # no temporary file left behind
    assert sorted(p.name for p in data_dir.iterdir()) == [KEY_FILE_NAME]
    again = NodeIdentity.load_or_create(data_dir)
    assert again.device_id == first.device_id
    assert again.public_key == first.public_key


def test_key_file_mode_0600_even_with_permissive_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        NodeIdentity.load_or_create(tmp_path)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / KEY_FILE_NAME).stat().st_mode) == 0o600


def test_device_id_is_derived_from_the_public_key() -> None:
    identity = NodeIdentity.generate()
    assert identity.device_id == DeviceId.from_public_key(_raw(identity.private_key))
    assert identity.device_id == device_id_of_certificate(identity.certificate)
    assert NodeIdentity.generate().device_id != identity.device_id


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_key_file_with_wider_permissions_is_refused(tmp_path: Path, mode: int) -> None:
    NodeIdentity.load_or_create(tmp_path)
    key_file = tmp_path / KEY_FILE_NAME
    key_file.chmod(mode)
    with pytest.raises(IdentityError, match=r"mode 0o6\d\d, wider than 0o600") as info:
        NodeIdentity.load_or_create(tmp_path)
    assert str(key_file) in str(info.value)
    assert stat.S_IMODE(key_file.stat().st_mode) == mode  # left alone, not "fixed"


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"garbage that is not a key\n",
        b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    ],
)
def test_corrupt_key_file_is_refused_not_replaced(tmp_path: Path, content: bytes) -> None:
    key_file = tmp_path / KEY_FILE_NAME
    key_file.write_bytes(content)
    key_file.chmod(0o600)
    with pytest.raises(IdentityError, match="corrupt") as info:
        NodeIdentity.load_or_create(tmp_path)
    assert str(key_file) in str(info.value)
    assert key_file.read_bytes() == content


def test_non_ed25519_key_file_is_refused(tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    key_file = tmp_path / KEY_FILE_NAME
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_file.chmod(0o600)
    with pytest.raises(IdentityError, match="not an Ed25519 private key"):
        NodeIdentity.load(key_file)


def test_key_path_that_is_a_directory_or_missing_is_refused(tmp_path: Path) -> None:
    (tmp_path / KEY_FILE_NAME).mkdir(mode=0o700)
    with pytest.raises(IdentityError, match=r"not a regular file|cannot open"):
        NodeIdentity.load_or_create(tmp_path)
    with pytest.raises(IdentityError, match="does not exist"):
        NodeIdentity.load(tmp_path / "nope.key")


def test_certificate_subject_text_is_never_trusted() -> None:
    victim = NodeIdentity.generate()
    impostor_key = ed25519.Ed25519PrivateKey.generate()
    forged = self_signed_certificate(impostor_key, common_name=str(victim.device_id))
    assert device_id_of_certificate(forged) == DeviceId.from_public_key(_raw(impostor_key))
    assert device_id_of_certificate(forged) != victim.device_id
    # an identity cannot be built from someone else's certificate
    with pytest.raises(IdentityError, match="another key"):
        NodeIdentity(victim.private_key, forged)


def test_non_ed25519_certificate_is_refused() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ecdsa")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    with pytest.raises(IdentityError, match="must be Ed25519"):
        device_id_of_certificate(cert)


def test_certificate_signed_by_another_key_is_refused() -> None:
    subject_key = ed25519.Ed25519PrivateKey.generate()
    signer = ed25519.Ed25519PrivateKey.generate()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(subject_key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(signer, None)
    )
    with pytest.raises(IdentityError, match="not self-signed"):
        device_id_of_certificate(cert)


def test_tampered_certificate_signature_is_refused() -> None:
    der = bytearray(NodeIdentity.generate().certificate.public_bytes(serialization.Encoding.DER))
    der[-1] ^= 0x01  # the signature is the last field of the certificate
    tampered = x509.load_der_x509_certificate(bytes(der))
    with pytest.raises(IdentityError, match="not self-signed"):
        device_id_of_certificate(tampered)


def test_argument_types_are_checked() -> None:
    with pytest.raises(WrongType, match="private_key"):
        NodeIdentity(b"not a key")  # type: ignore[arg-type]
    with pytest.raises(WrongType, match="cert"):
        device_id_of_certificate(b"not a cert")  # type: ignore[arg-type]
    with pytest.raises(WrongType, match="data_dir"):
        NodeIdentity.load_or_create(42)  # type: ignore[arg-type]
    identity = NodeIdentity.generate()
    signature = identity.sign(b"hello")
    identity.private_key.public_key().verify(signature, b"hello")
