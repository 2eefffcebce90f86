"""Biscuit capability tokens: minting and fail-closed verification.

A peer is asked for sync work only if it holds a `Biscuit
<https://www.biscuitsec.org/>`_ token signed by the network's authority key
whose authority block grants ``right("sync:request_digest")``
(:data:`SYNC_REQUEST_DIGEST`) and, optionally, binds it with
``subject(hex:...)`` to one :class:`DeviceId`.  Facts of attenuation blocks
are not trusted; checks they carry run, and no ``time`` fact is given (an
expiry fails closed).  Every verification problem, including an unexpected
error inside the Biscuit library, raises :class:`~aura_sync.errors.CapabilityError`;
only an argument of the wrong Python type raises :class:`~aura_sync.errors.WrongType`.
Every Biscuit detail lives here: the rest of the code sees ``bytes``.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

import biscuit_auth

from aura_sync.errors import CapabilityError, InvalidArgument, WrongType
from aura_sync.ids import DeviceId

__all__ = [
    "KEY_SIZE",
    "MAX_TOKEN_SIZE",
    "SYNC_REQUEST_DIGEST",
    "AuthorityKeyPair",
    "capability_token_subject",
    "check_public_key",
    "generate_authority_keypair",
    "issue_capability_token",
    "public_key_from_private",
    "verify_capability_token",
]

SYNC_REQUEST_DIGEST: Final = "sync:request_digest"
"""The right a peer needs before it is selected for sync (asked for digests)."""

KEY_SIZE: Final = 32
"""Size in bytes of a raw Ed25519 public or private key."""

MAX_TOKEN_SIZE: Final = 16 * 1024
"""Largest token accepted for verification, in bytes; larger ones fail closed."""

_RIGHT_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:/-]{0,127}")

_AUTHORIZER_TIME_LIMIT: Final = datetime.timedelta(milliseconds=200)
"""Datalog time limit per verification (the library's 1 ms fails spuriously under load)."""


def _build(
    builder: biscuit_auth.AuthorizerBuilder, biscuit: biscuit_auth.Biscuit
) -> biscuit_auth.Authorizer:
    """The authorizer of ``biscuit`` with :data:`_AUTHORIZER_TIME_LIMIT` (every reader's)."""
    limits = builder.limits()  # type: ignore[attr-defined]
    limits.max_time = _AUTHORIZER_TIME_LIMIT
    builder.set_limits(limits)  # type: ignore[attr-defined]
    return builder.build(biscuit)


# biscuit-python 0.4's bundled stubs predate the ``Algorithm`` argument of
# ``PublicKey.from_bytes``/``PrivateKey.from_bytes``; the ignores below are for that.
_ALGORITHM: Final = biscuit_auth.Algorithm.Ed25519  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class AuthorityKeyPair:
    """An authority's raw 32-byte Ed25519 keys: ``private_key`` signs tokens (left out of
    ``repr``), ``public_key`` is the verifiers' ``PeerDiscoveryConfig.root_public_key``."""

    private_key: bytes = field(repr=False)
    public_key: bytes

    def __post_init__(self) -> None:
        _check_key_bytes(self.private_key, "private_key")
        check_public_key(self.public_key, "public_key")
        derived = public_key_from_private(self.private_key)
        if derived != self.public_key:  # name the public halves only, never the secret
            raise InvalidArgument(
                f"public_key {self.public_key.hex()} does not belong to private_key "
                f"(whose public key is {derived.hex()})"
            )


def generate_authority_keypair() -> AuthorityKeyPair:
    """A fresh random authority key pair (uses the OS entropy source)."""
    kp = biscuit_auth.KeyPair()
    return AuthorityKeyPair(bytes(kp.private_key.to_bytes()), bytes(kp.public_key.to_bytes()))


def public_key_from_private(private_key: bytes) -> bytes:
    """The 32-byte public key of a 32-byte Ed25519 ``private_key``.

    Raises :class:`WrongType` for non-bytes, :class:`InvalidArgument` for a wrong length.
    """
    _check_key_bytes(private_key, "private_key")
    kp = biscuit_auth.KeyPair.from_private_key(_private_key(private_key))
    return bytes(kp.public_key.to_bytes())


def check_public_key(value: object, name: str = "root_public_key") -> bytes:
    """Return ``value`` if it is a usable raw 32-byte Ed25519 public key.

    Refuses non-canonical encodings, points off the curve and points of small
    order (signatures nobody made "verify" under them).  Raises
    :class:`WrongType` for non-bytes, :class:`InvalidArgument` naming ``name``
    and the key for a wrong length or a refused key.
    """
    key = _check_key_bytes(value, name)
    point = _decode_point(key)
    if point is None:
        raise InvalidArgument(
            f"{name} is not a canonical encoding of a point on Ed25519: {key.hex()}"
        )
    if _has_small_order(point):
        raise InvalidArgument(f"{name} is a point of small order (a weak key): {key.hex()}")
    try:
        _public_key(key)
    except Exception as exc:
        raise InvalidArgument(f"{name} is not a valid Ed25519 public key: {key.hex()}") from exc
    return key


def capability_token_subject(token: bytes, root_public_key: bytes) -> DeviceId | None:
    """The subject the authority (``root_public_key``) bound ``token`` to; None: a bearer token.

    Raises :class:`CapabilityError` (fail closed) for a malformed or foreign
    token or one naming several subjects, :class:`WrongType` for non-bytes.
    """
    root = _check_token(token, root_public_key)
    try:
        biscuit = biscuit_auth.Biscuit.from_bytes(token, _public_key(root))
        builder = biscuit_auth.AuthorizerBuilder()
        builder.add_code("allow if true;")
        authorizer = _build(builder, biscuit)
        authorizer.authorize()
        facts = authorizer.query(biscuit_auth.Rule("bound($s) <- subject($s)"))
        subjects = {fact.terms[0] for fact in facts if len(fact.terms) == 1}
    except BaseException as exc:
        raise _failure(exc, SYNC_REQUEST_DIGEST) from exc
    if not subjects:
        return None
    if len(subjects) > 1:
        raise CapabilityError(f"capability token names {len(subjects)} subjects")
    (term,) = subjects
    if type(term) is not bytes or len(term) != 16:
        raise CapabilityError(f"capability token has a malformed subject {term!r:.60}")
    return DeviceId(term)


def issue_capability_token(
    authority_private_key: bytes,
    rights: Iterable[str] = (SYNC_REQUEST_DIGEST,),
    subject: DeviceId | None = None,
) -> bytes:
    """Mint a Biscuit token signed by the authority that grants ``rights``.

    :param authority_private_key: the authority's 32-byte Ed25519 private key.
    :param rights: the rights granted, e.g. ``("sync:request_digest",)``; at
        least one; each 1-128 characters of letters, digits and ``_.:/-``.
    :param subject: the peer the token is for; verification for any other peer
        fails.  ``None`` mints a bearer token valid for whoever presents it.
    :returns: the serialized token.
    :raises WrongType: an argument of the wrong type.
    :raises InvalidArgument: a wrong key length, no rights, a malformed right,
        or rights too many for a token of at most :data:`MAX_TOKEN_SIZE` bytes.
    """
    _check_key_bytes(authority_private_key, "authority_private_key")
    given: object = rights
    if isinstance(given, str | bytes) or not isinstance(given, Iterable):
        raise WrongType(f"rights must be an iterable of str, got {type(given).__name__} {given!r}")
    rights_tuple = tuple(given)
    if not rights_tuple:
        raise InvalidArgument("rights must name at least one right, got ()")
    for right in rights_tuple:
        if type(right) is not str:
            raise WrongType(f"each right must be a str, got {type(right).__name__} {right!r}")
        if not _RIGHT_RE.fullmatch(right):
            raise InvalidArgument(
                f"right must be 1-128 characters of letters, digits and _.:/-, got {right!r}"
            )
    if subject is not None and type(subject) is not DeviceId:
        raise WrongType(f"subject must be a DeviceId or None, got {type(subject).__name__}")
    builder = biscuit_auth.BiscuitBuilder()
    for right in dict.fromkeys(rights_tuple):
        builder.add_code("right({r});", {"r": right})
    if subject is not None:
        builder.add_code("subject({s});", {"s": subject.raw})
    token = bytes(builder.build(_private_key(authority_private_key)).to_bytes())
    if len(token) > MAX_TOKEN_SIZE:
        # a token no verifier accepts is useless: refuse to mint it
        raise InvalidArgument(
            f"the token would be {len(token)} bytes, over MAX_TOKEN_SIZE={MAX_TOKEN_SIZE}: "
            f"too many or too long rights ({len(rights_tuple)} given)"
        )
    return token


def verify_capability_token(
    token: bytes,
    root_public_key: bytes,
    *,
    required_right: str = SYNC_REQUEST_DIGEST,
    subject: DeviceId | None = None,
) -> tuple[str, ...]:
    """Verify ``token`` and return the rights its authority block grants, sorted.

    :param token: the serialized Biscuit token (at most :data:`MAX_TOKEN_SIZE` bytes).
    :param root_public_key: the authority's 32-byte Ed25519 public key.
    :param required_right: the right the token must grant.
    :param subject: the peer presenting the token (a token bound to another is
        refused); ``None`` skips the subject check.
    :raises CapabilityError: the token is empty, too large, malformed, foreign,
        lacks ``required_right``, is bound to another subject or fails its own
        checks; any error of the Biscuit library becomes one (fail closed).
    :raises WrongType: ``token``/``root_public_key`` is not bytes, or
        ``subject`` is not a DeviceId.
    :raises InvalidArgument: ``root_public_key`` has the wrong size or
        ``required_right`` is malformed.
    """
    if type(required_right) is not str:
        raise WrongType(
            f"required_right must be a str, got {type(required_right).__name__} {required_right!r}"
        )
    if not _RIGHT_RE.fullmatch(required_right):
        raise InvalidArgument(f"required_right is malformed: {required_right!r}")
    if subject is not None and type(subject) is not DeviceId:
        raise WrongType(f"subject must be a DeviceId or None, got {type(subject).__name__}")
    root = _check_token(token, root_public_key)
    try:
        return _verify(token, root, required_right, subject)
    except CapabilityError:
        raise
    except BaseException as exc:
        raise _failure(exc, required_right) from exc


def _check_token(token: object, root_public_key: bytes) -> bytes:
    """Check a presented token's type and size; returns the checked root key."""
    if type(token) is not bytes:
        raise WrongType(f"token must be bytes, got {type(token).__name__}")
    root = check_public_key(root_public_key, "root_public_key")
    if len(token) > MAX_TOKEN_SIZE:
        raise CapabilityError(
            f"capability token of {len(token)} bytes is over the limit of {MAX_TOKEN_SIZE}"
        )
    if not token:
        raise CapabilityError("capability token is empty")
    return root


def _failure(exc: BaseException, required_right: str) -> CapabilityError:
    """The CapabilityError for a library failure (pyo3 panics are BaseExceptions too);
    interpreter control flow is re-raised."""
    if isinstance(exc, KeyboardInterrupt | SystemExit | GeneratorExit):
        raise exc
    return CapabilityError(_describe_failure(exc, required_right))


def _verify(
    token: bytes, root: bytes, required_right: str, subject: DeviceId | None
) -> tuple[str, ...]:
    biscuit = biscuit_auth.Biscuit.from_bytes(token, _public_key(root))
    builder = biscuit_auth.AuthorizerBuilder()
    if subject is not None:
        builder.add_code("reject if subject($s), $s != {peer};", {"peer": subject.raw})
    builder.add_code("allow if right({r});", {"r": required_right})
    authorizer = _build(builder, biscuit)
    authorizer.authorize()
    granted: set[str] = set()
    for fact in authorizer.query(biscuit_auth.Rule("granted($r) <- right($r)")):
        terms = fact.terms
        if len(terms) == 1 and type(terms[0]) is str:
            granted.add(terms[0])
    if required_right not in granted:  # defence in depth: the policy already demands it
        raise CapabilityError(f"capability token does not grant {required_right!r}")
    return tuple(sorted(granted))


def _describe_failure(exc: BaseException, required_right: str) -> str:
    if isinstance(exc, biscuit_auth.BiscuitValidationError):
        return (
            "capability token is malformed or not signed by the configured authority "
            f"({type(exc).__name__}: {exc})"
        )
    if isinstance(exc, biscuit_auth.AuthorizationError):
        return f"capability token does not authorize {required_right!r} for this peer: {exc}"
    return f"capability token could not be verified ({type(exc).__name__}: {exc})"


def _check_key_bytes(value: object, name: str) -> bytes:
    if type(value) is not bytes:
        raise WrongType(f"{name} must be {KEY_SIZE} raw bytes, got {type(value).__name__}")
    if len(value) != KEY_SIZE:
        raise InvalidArgument(f"{name} must be exactly {KEY_SIZE} bytes, got {len(value)}")
    return value


_P: Final = 2**255 - 19
_D: Final = (-121665 * pow(121666, _P - 2, _P)) % _P
_SQRT_M1: Final = pow(2, (_P - 1) // 4, _P)


def _decode_point(raw: bytes) -> tuple[int, int] | None:
    """RFC 8032 point decoding, strict: None for a non-canonical or off-curve encoding."""
    n = int.from_bytes(raw, "little")
    sign, y = n >> 255, n & ((1 << 255) - 1)
    if y >= _P:
        return None
    x2 = (y * y - 1) * pow(_D * y * y + 1, _P - 2, _P) % _P
    x = pow(x2, (_P + 3) // 8, _P)
    if (x * x - x2) % _P:
        x = x * _SQRT_M1 % _P
    if (x * x - x2) % _P:
        return None
    if x == 0 and sign:
        return None
    if x & 1 != sign:
        x = _P - x
    return x, y


def _has_small_order(point: tuple[int, int]) -> bool:
    """Whether ``8 * point`` is the identity (the curve's cofactor is 8)."""
    x, y = point
    for _ in range(3):  # doubling on -x^2 + y^2 = 1 + d x^2 y^2 (complete formula)
        dxy = _D * x * x * y * y % _P
        x, y = (
            2 * x * y * pow(1 + dxy, _P - 2, _P) % _P,
            (y * y + x * x) * pow(1 - dxy, _P - 2, _P) % _P,
        )
    return x == 0 and y == 1


def _private_key(raw: bytes) -> biscuit_auth.PrivateKey:
    try:
        return biscuit_auth.PrivateKey.from_bytes(raw, _ALGORITHM)  # type: ignore[call-arg]
    except Exception as exc:
        raise InvalidArgument("authority_private_key is not a valid Ed25519 private key") from exc


def _public_key(raw: bytes) -> biscuit_auth.PublicKey:
    return biscuit_auth.PublicKey.from_bytes(raw, _ALGORITHM)  # type: ignore[call-arg]
