"""A node's identity: its Ed25519 key, its :class:`~aura_sync.ids.DeviceId` and its certificate.

Role
    Every node owns one Ed25519 key pair.  Its :class:`~aura_sync.ids.DeviceId`
    is derived from the raw public key (``DeviceId.from_public_key``: first
    16 bytes of its SHA-256), so nobody can claim an id without holding the
    matching private key.  The node presents a *self-signed* X.509
    certificate for that key in every TLS 1.3 handshake; the peer derives the
    id from the certificate's key (never from its subject text) with
    :func:`device_id_of_certificate` and compares it with the id it expected.
    This is the scheme of libp2p's TLS handshake, without its extension:
    the certificate key *is* the identity key.

Key file
    :meth:`NodeIdentity.load_or_create` keeps the key in
    ``<data_dir>/identity.key`` (PKCS#8 PEM, unencrypted).  It is created on
    first start with mode 0600 (written to a temporary file and hard-linked
    into place, so a crash never leaves a half-written key under the real
    name and an existing key is never overwritten).  A key file that is
    group- or world-accessible, not a regular file, not owned by the current
    user, unreadable, or not an Ed25519 private key is refused with an
    :class:`~aura_sync.errors.IdentityError` that names the path and the
    problem; it is never replaced silently.

Journal heads
    :func:`sign_head` / :func:`verify_head` sign and check the head of an
    author's op chain (see :mod:`aura_sync.protocols.journal`).

Integration
    :mod:`aura_sync.transport.tls` builds pyOpenSSL contexts from a
    :class:`NodeIdentity` and calls :func:`device_id_of_certificate` from its
    verify callback.  The certificate is regenerated at each start (it is
    cheap and carries no state besides the key).

Layer: runtime.  Imports values only (ids, errors) and ``cryptography``.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import stat
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.x509.oid import NameOID

from aura_sync.errors import IdentityError, WrongType
from aura_sync.ids import DeviceId

__all__ = [
    "HEAD_DOMAIN",
    "KEY_FILE_NAME",
    "NodeIdentity",
    "device_id_of_certificate",
    "self_signed_certificate",
    "sign_head",
    "verify_head",
]

KEY_FILE_NAME: Final = "identity.key"
"""Name of the key file inside a node's data directory."""

HEAD_DOMAIN: Final = b"aura-sync/head/v2\x00"
"""Domain tag of a signed journal head: the signature covers ``HEAD_DOMAIN + op_id``."""

_CERT_VALIDITY: Final = datetime.timedelta(days=3650)
_CLOCK_SKEW: Final = datetime.timedelta(hours=1)
_MAX_KEY_FILE_SIZE: Final = 64 * 1024


def self_signed_certificate(
    private_key: ed25519.Ed25519PrivateKey, common_name: str | None = None
) -> x509.Certificate:
    """A self-signed X.509 certificate for ``private_key``.

    ``common_name`` is informational only (default: the key's DeviceId in
    UUID form); verification never trusts it.  Valid from one hour ago (clock
    skew) for ten years.

    Raises :class:`~aura_sync.errors.WrongType` if ``private_key`` is not an
    Ed25519 private key or ``common_name`` is not a str.
    """
    if not isinstance(private_key, ed25519.Ed25519PrivateKey):
        raise WrongType(
            f"private_key must be an Ed25519PrivateKey, got {type(private_key).__name__}"
        )
    if common_name is not None and not isinstance(common_name, str):
        raise WrongType(
            f"common_name must be a str or None, got {type(common_name).__name__} {common_name!r}"
        )
    if common_name is None:
        common_name = str(DeviceId.from_public_key(_raw_public(private_key.public_key())))
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _CLOCK_SKEW)
        .not_valid_after(now + _CERT_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(private_key, algorithm=None)
    )


def device_id_of_certificate(cert: x509.Certificate) -> DeviceId:
    """The :class:`DeviceId` proven by a self-signed peer certificate.

    Checks that the certificate's key is Ed25519 and that the certificate is
    signed by that same key (self-signed), then derives the id from the raw
    public key.  The subject text is ignored.  (Proof that the peer *holds*
    the key comes from the TLS handshake's CertificateVerify, which OpenSSL
    checks; validity dates are checked by OpenSSL too.)

    Raises :class:`~aura_sync.errors.WrongType` for a non-certificate and
    :class:`~aura_sync.errors.IdentityError` for a non-Ed25519 key or a bad
    self-signature.
    """
    if not isinstance(cert, x509.Certificate):
        raise WrongType(f"cert must be an x509.Certificate, got {type(cert).__name__}")
    key = cert.public_key()
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise IdentityError(
            f"peer certificate key must be Ed25519, got {type(key).__name__} "
            f"(subject {cert.subject.rfc4514_string()!r})"
        )
    try:
        key.verify(cert.signature, cert.tbs_certificate_bytes)
    except InvalidSignature:
        raise IdentityError(
            f"peer certificate is not self-signed by its own Ed25519 key "
            f"(subject {cert.subject.rfc4514_string()!r})"
        ) from None
    return DeviceId.from_public_key(_raw_public(key))


def _raw_public(key: ed25519.Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


class NodeIdentity:
    """A node's Ed25519 key pair, its :class:`DeviceId` and its self-signed certificate.

    Build one with :meth:`load_or_create` (a node's data directory),
    :meth:`load` (an existing key file) or :meth:`generate` (an ephemeral
    identity, for tests and tools).  Immutable once built.
    """

    __slots__ = ("_certificate", "_device_id", "_private_key", "_public_raw")

    def __init__(
        self,
        private_key: ed25519.Ed25519PrivateKey,
        certificate: x509.Certificate | None = None,
    ) -> None:
        """Wrap ``private_key``; build a self-signed certificate unless one is given.

        A given ``certificate`` must carry this key's public key (its subject
        text may say anything: it is never trusted).

        Raises :class:`~aura_sync.errors.WrongType` for wrong types and
        :class:`~aura_sync.errors.IdentityError` if ``certificate`` is for
        another key or not self-signed.
        """
        if not isinstance(private_key, ed25519.Ed25519PrivateKey):
            raise WrongType(
                f"private_key must be an Ed25519PrivateKey, got {type(private_key).__name__}"
            )
        public_raw = _raw_public(private_key.public_key())
        device_id = DeviceId.from_public_key(public_raw)
        if certificate is None:
            certificate = self_signed_certificate(private_key)
        elif device_id_of_certificate(certificate) != device_id:
            raise IdentityError(
                f"certificate is for another key (DeviceId "
                f"{device_id_of_certificate(certificate)}), not for {device_id}"
            )
        self._private_key = private_key
        self._public_raw = public_raw
        self._device_id = device_id
        self._certificate = certificate

    # --- construction ----------------------------------------------------------------

    @classmethod
    def generate(cls) -> NodeIdentity:
        """A new random identity that lives only in memory."""
        return cls(ed25519.Ed25519PrivateKey.generate())

    @classmethod
    def load_or_create(cls, data_dir: str | os.PathLike[str]) -> NodeIdentity:
        """The identity kept in ``data_dir`` (created there, mode 0600, on first start).

        ``data_dir`` is created (mode 0700) if missing.  Raises
        :class:`~aura_sync.errors.IdentityError` if an existing key file is
        unsafe or corrupt (see the module docstring), or if the directory
        cannot be used.
        """
        if not isinstance(data_dir, str | os.PathLike):
            raise WrongType(f"data_dir must be a path, got {type(data_dir).__name__} {data_dir!r}")
        directory = Path(data_dir)
        try:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise IdentityError(f"cannot create data directory {str(directory)!r}: {exc}") from exc
        path = directory / KEY_FILE_NAME
        if not os.path.lexists(path):
            identity = cls.generate()
            if identity._write_new_key_file(path):
                return identity
            # Lost a race with another process creating the key: load theirs.
        return cls.load(path)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> NodeIdentity:
        """Load the identity from an existing key file.

        Raises :class:`~aura_sync.errors.IdentityError` if the file is
        missing, not a regular file, not owned by the current user,
        accessible by group or others (mode wider than 0600), unreadable, not
        PEM, or not an Ed25519 private key.
        """
        if not isinstance(path, str | os.PathLike):
            raise WrongType(f"path must be a path, got {type(path).__name__} {path!r}")
        name = os.fspath(path)
        try:
            fd = os.open(name, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except FileNotFoundError:
            raise IdentityError(f"key file {name!r} does not exist") from None
        except OSError as exc:
            raise IdentityError(f"cannot open key file {name!r}: {exc}") from exc
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise IdentityError(f"key file {name!r} is not a regular file")
            mode = stat.S_IMODE(info.st_mode)
            if mode & 0o077:
                raise IdentityError(
                    f"key file {name!r} has mode {mode:#o}, wider than 0o600: refusing to use "
                    f"a private key that other users can read (chmod 600 it if it is yours)"
                )
            if hasattr(os, "getuid") and info.st_uid != os.getuid():
                raise IdentityError(
                    f"key file {name!r} is owned by uid {info.st_uid}, not by the current "
                    f"user (uid {os.getuid()})"
                )
            if info.st_size > _MAX_KEY_FILE_SIZE:
                raise IdentityError(
                    f"key file {name!r} is {info.st_size} bytes: too large to be a key (corrupt)"
                )
            with os.fdopen(fd, "rb", closefd=False) as stream:
                data = stream.read(_MAX_KEY_FILE_SIZE + 1)
        except OSError as exc:
            raise IdentityError(f"cannot read key file {name!r}: {exc}") from exc
        finally:
            os.close(fd)
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError) as exc:
            raise IdentityError(
                f"key file {name!r} is corrupt (not an unencrypted PEM private key): {exc}"
            ) from None
        if not isinstance(key, ed25519.Ed25519PrivateKey):
            raise IdentityError(
                f"key file {name!r} holds a {type(key).__name__}, not an Ed25519 private key"
            )
        return cls(key)

    def _write_new_key_file(self, path: Path) -> bool:
        """Write the key to ``path`` (mode 0600) unless it exists; False if it already did."""
        pem = self._private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                os.fchmod(fd, 0o600)  # in case the umask was stricter than needed (or odd)
                view = memoryview(pem)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
            try:
                os.link(tmp, path)  # atomic, and never overwrites an existing key
            except FileExistsError:
                return False
            _fsync_dir(path.parent)
            return True
        except OSError as exc:
            raise IdentityError(f"cannot write key file {str(path)!r}: {exc}") from exc
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)

    # --- accessors ---------------------------------------------------------------------

    @property
    def device_id(self) -> DeviceId:
        """This node's id, derived from its public key."""
        return self._device_id

    @property
    def public_key(self) -> bytes:
        """The raw 32-byte Ed25519 public key."""
        return self._public_raw

    @property
    def private_key(self) -> ed25519.Ed25519PrivateKey:
        """The Ed25519 private key (for the TLS context; never sent anywhere)."""
        return self._private_key

    @property
    def certificate(self) -> x509.Certificate:
        """The self-signed certificate presented in TLS handshakes."""
        return self._certificate

    def sign(self, data: bytes) -> bytes:
        """An Ed25519 signature (64 bytes) of ``data`` by this node's key."""
        if not isinstance(data, bytes | bytearray | memoryview):
            raise WrongType(f"data must be bytes, got {type(data).__name__}")
        return self._private_key.sign(bytes(data))

    def __repr__(self) -> str:
        return f"NodeIdentity(device_id={self._device_id})"


def sign_head(identity: NodeIdentity, op_id: bytes) -> bytes:
    """``identity``'s signature of the journal head ``op_id`` (see :data:`HEAD_DOMAIN`)."""
    return identity.private_key.sign(HEAD_DOMAIN + op_id)


_public_keys: dict[bytes, ed25519.Ed25519PublicKey] = {}
_MAX_CACHED_KEYS: Final = 4096


def verify_head(public_key: bytes, signature: bytes, op_id: bytes) -> bool:
    """Whether ``signature`` is the holder of ``public_key``'s signature of head ``op_id``.

    ``public_key`` is 32 raw bytes; a malformed key or signature is False.
    Parsed keys are cached (at most 4096), so only the Ed25519 verify is paid per call.
    """
    key = _public_keys.get(public_key)
    if key is None:
        try:
            key = ed25519.Ed25519PublicKey.from_public_bytes(public_key)
        except ValueError:
            return False
        if len(_public_keys) >= _MAX_CACHED_KEYS:
            _public_keys.clear()
        _public_keys[public_key] = key
    try:
        key.verify(signature, HEAD_DOMAIN + op_id)
    except InvalidSignature:
        return False
    return True


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)
