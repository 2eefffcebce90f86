"""Mutual TLS 1.3 with self-signed Ed25519 certificates whose key is the peer's identity.

Role
    Builds the pyOpenSSL contexts the TCP transport uses, and the verify
    callback that decides whether a peer's certificate proves the identity
    we expect (the libp2p TLS scheme, with the certificate key as the
    identity key):

    * both sides present their self-signed certificate and require the
      peer's (``VERIFY_PEER | VERIFY_FAIL_IF_NO_PEER_CERT``);
    * only TLS 1.3 is allowed (min and max protocol version), so the
      handshake always ends with a CertificateVerify signature by the
      certificate's key: OpenSSL checks that the peer holds the key;
    * the verify callback accepts exactly one certificate (depth 0), only
      with OpenSSL's "self-signed" verdict (chain errors are ignored for a
      self-signed certificate, nothing else is: an expired or not-yet-valid
      certificate is refused), only if its key is Ed25519 and it is signed
      by that key (:func:`~aura_sync.identity.device_id_of_certificate`),
      and -- on the dialing side -- only if the key hashes to the DeviceId
      the dialer expects.  The accepting side learns the dialer's DeviceId
      from the verified certificate.

    Ed25519 is among OpenSSL's default TLS 1.3 signature algorithms, so no
    signature-algorithm configuration is needed; nothing here implements
    cryptography or a handshake of its own.

Integration
    :mod:`aura_sync.transport.tcp` calls :func:`server_context` once,
    :func:`client_context` once, and :func:`attach_check` on each
    ``SSL.Connection`` before its handshake; after a failed handshake
    :class:`PeerCheck` says whether the peer was an impostor.  Tests build
    raw clients and servers from the same contexts.

Layer: runtime.
"""

from __future__ import annotations

import logging
from typing import Any, Final

from OpenSSL import SSL

from aura_sync.errors import IdentityError, WrongType
from aura_sync.identity import NodeIdentity, device_id_of_certificate
from aura_sync.ids import DeviceId

__all__ = ["PeerCheck", "attach_check", "client_context", "server_context"]

_log = logging.getLogger("aura_sync.transport.tls")

_X509_V_OK: Final = 0
_X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT: Final = 18
_ACCEPTED_VERDICTS: Final = frozenset({_X509_V_OK, _X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT})
_VERDICT_NAMES: Final = {
    7: "certificate signature failure",
    9: "certificate is not yet valid",
    10: "certificate has expired",
    19: "self-signed certificate in a chain",
    20: "unable to get local issuer certificate",
    21: "unable to verify the first certificate",
}


class PeerCheck:
    """Per-connection verification state, attached to an ``SSL.Connection`` as app data.

    ``expected``: the DeviceId the dialer wants (None when accepting).
    After the handshake, ``verified`` holds the proven id; after a refusal,
    ``failure`` says why and ``mismatch`` tells an impostor (valid
    certificate, wrong key) from other failures; ``presented`` is the id the
    certificate proved, if it got that far.
    """

    __slots__ = ("expected", "failure", "mismatch", "presented", "verified")

    def __init__(self, expected: DeviceId | None) -> None:
        if expected is not None and type(expected) is not DeviceId:
            raise WrongType(f"expected must be a DeviceId or None, got {type(expected).__name__}")
        self.expected = expected
        self.verified: DeviceId | None = None
        self.presented: DeviceId | None = None
        self.failure: str | None = None
        self.mismatch = False

    def _refuse(self, reason: str) -> bool:
        if self.failure is None:
            self.failure = reason
        return False


def _verify(conn: SSL.Connection, cert: Any, errnum: int, depth: int, ok: int) -> bool:
    """The pyOpenSSL verify callback (see the module docstring for the rules)."""
    check = conn.get_app_data()
    if not isinstance(check, PeerCheck):  # a connection we did not prepare: refuse
        return False
    try:
        if depth != 0:
            return check._refuse(
                f"peer sent a certificate chain (depth {depth}); exactly one self-signed "
                f"certificate is accepted"
            )
        if errnum not in _ACCEPTED_VERDICTS:
            name = _VERDICT_NAMES.get(errnum, "verification error")
            return check._refuse(
                f"peer certificate refused by OpenSSL: {name} (X509 error {errnum})"
            )
        try:
            device_id = device_id_of_certificate(cert.to_cryptography())
        except IdentityError as exc:
            return check._refuse(str(exc))
        check.presented = device_id
        if check.expected is not None and device_id != check.expected:
            check.mismatch = True
            return check._refuse(
                f"peer's certificate key proves DeviceId {device_id}, not the expected "
                f"{check.expected}"
            )
        check.verified = device_id
        return True
    except Exception as exc:  # never let an exception escape into OpenSSL
        _log.exception("event=verify_callback_error")
        return check._refuse(f"certificate check failed: {type(exc).__name__}: {exc}")


def _base_context(identity: NodeIdentity, method: int) -> SSL.Context:
    if not isinstance(identity, NodeIdentity):
        raise WrongType(f"identity must be a NodeIdentity, got {type(identity).__name__}")
    ctx = SSL.Context(method)
    ctx.set_min_proto_version(SSL.TLS1_3_VERSION)
    ctx.set_max_proto_version(SSL.TLS1_3_VERSION)
    ctx.set_options(SSL.OP_NO_TICKET | SSL.OP_NO_COMPRESSION | SSL.OP_IGNORE_UNEXPECTED_EOF)
    ctx.set_session_cache_mode(SSL.SESS_CACHE_OFF)
    ctx.use_privatekey(identity.private_key)
    ctx.use_certificate(identity.certificate)
    ctx.check_privatekey()
    ctx.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT, _verify)
    ctx.set_verify_depth(1)
    return ctx


def server_context(identity: NodeIdentity) -> SSL.Context:
    """The context for accepted connections: present ``identity``, require a client certificate."""
    return _base_context(identity, SSL.TLS_SERVER_METHOD)


def client_context(identity: NodeIdentity) -> SSL.Context:
    """The context for dialed connections: present ``identity``, verify the server's key."""
    return _base_context(identity, SSL.TLS_CLIENT_METHOD)


def attach_check(conn: SSL.Connection, expected: DeviceId | None) -> PeerCheck:
    """Prepare ``conn`` for verification (``expected``: the dialer's wanted DeviceId)."""
    check = PeerCheck(expected)
    conn.set_app_data(check)
    return check
