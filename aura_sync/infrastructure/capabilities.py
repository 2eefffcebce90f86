"""Biscuit capability tokens: minting and fail-closed verification.

A peer is asked for sync work only if its Biscuit token, signed by the network's
authority key, grants ``right("sync:request_digest")`` in its authority block and,
if it names a ``subject``, names that peer's DeviceId.  Attenuation blocks' facts
are not trusted (their checks run; no ``time`` fact is given, so an expiry fails
closed).  Every verification problem, a Biscuit library error included, raises
:class:`~aura_sync.errors.CapabilityError`; a wrong Python type raises ``WrongType``.
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

SYNC_REQUEST_DIGEST: Final = "sync:request_digest"  # the right a peer needs to be synced with
KEY_SIZE: Final = 32  # bytes of a raw Ed25519 public or private key
MAX_TOKEN_SIZE: Final = 16 * 1024  # bytes; a larger token fails closed
_RIGHT_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:/-]{0,127}")
# Datalog time limit per verification (the library's 1 ms fails spuriously under load).
_AUTHORIZER_TIME_LIMIT: Final = datetime.timedelta(milliseconds=200)


def _query(token: bytes, root: bytes, policy: str, rule: str, **params: object) -> set[object]:
    """The single terms of ``rule``'s facts once ``token`` is authorized under ``policy``."""
    biscuit = biscuit_auth.Biscuit.from_bytes(token, _public_key(root))
    builder = biscuit_auth.AuthorizerBuilder()
    builder.add_code(policy, params)
    limits = builder.limits()  # type: ignore[attr-defined]
    limits.max_time = _AUTHORIZER_TIME_LIMIT
    builder.set_limits(limits)  # type: ignore[attr-defined]
    authorizer = builder.build(biscuit)
    authorizer.authorize()
    facts = authorizer.query(biscuit_auth.Rule(rule))
    return {fact.terms[0] for fact in facts if len(fact.terms) == 1}


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
    """The 32-byte public key of a 32-byte Ed25519 ``private_key``."""
    _check_key_bytes(private_key, "private_key")
    kp = biscuit_auth.KeyPair.from_private_key(_private_key(private_key))
    return bytes(kp.public_key.to_bytes())


def check_public_key(value: object, name: str = "root_public_key") -> bytes:
    """``value`` if it is a raw 32-byte Ed25519 public key, canonical, on the curve and not
    of small order (under which signatures nobody made verify); else WrongType /
    InvalidArgument naming ``name`` and the key."""
    key = _check_key_bytes(value, name)
    point = _decode_point(key)
    if point is None:
        raise InvalidArgument(f"{name} is not a canonical Ed25519 point: {key.hex()}")
    if _has_small_order(point):
        raise InvalidArgument(f"{name} is a point of small order (a weak key): {key.hex()}")
    try:
        _public_key(key)
    except Exception as exc:
        raise InvalidArgument(f"{name} is not a valid Ed25519 public key: {key.hex()}") from exc
    return key


def capability_token_subject(token: bytes, root_public_key: bytes) -> DeviceId | None:
    """The subject the authority bound ``token`` to (None: a bearer token); CapabilityError
    for a malformed or foreign token or several subjects."""
    root = _check_token(token, root_public_key)
    try:
        subjects = _query(token, root, "allow if true;", "bound($s) <- subject($s)")
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
    """A token signed by the authority (its 32-byte private key) granting ``rights`` (at
    least one, each 1-128 characters of letters, digits and ``_.:/-``), bound to
    ``subject`` (None: a bearer token).  WrongType for a wrong type; InvalidArgument
    for a bad key, no or malformed rights, or a token over :data:`MAX_TOKEN_SIZE`."""
    _check_key_bytes(authority_private_key, "authority_private_key")
    given: object = rights
    if isinstance(given, str | bytes) or not isinstance(given, Iterable):
        raise WrongType(f"rights must be an iterable of str, got {type(given).__name__} {given!r}")
    rights_tuple = tuple(given)
    if not rights_tuple:
        raise InvalidArgument("rights must name at least one right, got ()")
    for right in rights_tuple:
        _check_right(right, "each right")
    _check_subject(subject)
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
    """The rights, sorted, that ``token``'s authority block grants, once verified against
    the authority's ``root_public_key``: it must grant ``required_right`` and, if bound,
    be bound to ``subject`` (None skips that check).  CapabilityError (fail closed) for
    an empty, oversized, malformed or foreign token, a missing right, another subject
    or a failed check; WrongType for wrong types; InvalidArgument for a bad key or right."""
    _check_right(required_right, "required_right")
    _check_subject(subject)
    root = _check_token(token, root_public_key)
    policy = "allow if right({r});"
    if subject is not None:
        policy = "reject if subject($s), $s != {peer};\n" + policy
    peer = {} if subject is None else {"peer": subject.raw}
    try:
        terms = _query(token, root, policy, "granted($r) <- right($r)", r=required_right, **peer)
    except BaseException as exc:
        raise _failure(exc, required_right) from exc
    granted = {term for term in terms if type(term) is str}
    if required_right not in granted:  # defence in depth: the policy already demands it
        raise CapabilityError(f"capability token does not grant {required_right!r}")
    return tuple(sorted(granted))


def _check_right(right: object, name: str) -> None:
    if type(right) is not str:
        raise WrongType(f"{name} must be a str, got {type(right).__name__} {right!r}")
    if not _RIGHT_RE.fullmatch(right):
        raise InvalidArgument(
            f"{name} must be 1-128 characters of letters, digits and _.:/-, got {right!r}"
        )


def _check_subject(subject: object) -> None:
    if subject is not None and type(subject) is not DeviceId:
        raise WrongType(f"subject must be a DeviceId or None, got {type(subject).__name__}")


def _check_token(token: object, root_public_key: bytes) -> bytes:
    """Check a presented token's type and size; returns the checked root key."""
    if type(token) is not bytes:
        raise WrongType(f"token must be bytes, got {type(token).__name__}")
    root = check_public_key(root_public_key, "root_public_key")
    if len(token) > MAX_TOKEN_SIZE:
        raise CapabilityError(f"capability token of {len(token)} bytes is over {MAX_TOKEN_SIZE}")
    if not token:
        raise CapabilityError("capability token is empty")
    return root


def _failure(exc: BaseException, required_right: str) -> CapabilityError:
    """A library failure (pyo3 panics too) as a CapabilityError; control flow is re-raised."""
    if isinstance(exc, KeyboardInterrupt | SystemExit | GeneratorExit):
        raise exc
    what = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, biscuit_auth.BiscuitValidationError):
        why = f"is malformed or not signed by the configured authority ({what})"
    elif isinstance(exc, biscuit_auth.AuthorizationError):
        why = f"does not authorize {required_right!r} for this peer: {exc}"
    else:
        why = f"could not be verified ({what})"
    return CapabilityError(f"capability token {why}")


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
