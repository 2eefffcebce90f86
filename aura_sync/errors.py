"""The exception hierarchy of aura-sync.

Every exception raised on purpose by the library derives from
:class:`AuraError`, so ``except AuraError`` catches all expected failures and
nothing else.  Argument errors also derive from :class:`ValueError` (or
:class:`TypeError`) so code written against the standard conventions keeps
working.  Every message names the argument or object and the offending value.

Layer: values (imports nothing from the rest of the package).
"""

from __future__ import annotations

__all__ = [
    "AcquireTimeout",
    "ActorCrashed",
    "ActorError",
    "ActorStopped",
    "AlreadyPresent",
    "AskTimeout",
    "AuraError",
    "CapabilityError",
    "ConfigError",
    "ConnectFailed",
    "ConnectionClosed",
    "DataDirLocked",
    "DecodeError",
    "DiscoveryError",
    "HandshakeFailed",
    "IdentityError",
    "InvalidArgument",
    "InvalidHandle",
    "InvalidTransition",
    "JournalCorrupt",
    "NotFound",
    "OpRefused",
    "PeerError",
    "PeerIdentityMismatch",
    "PeerTableFull",
    "PeerUnavailable",
    "PoolError",
    "PoolExhausted",
    "RateLimited",
    "RequestTimeout",
    "RetryExhausted",
    "RunningChild",
    "SessionLimitReached",
    "StartFailed",
    "StateCorrupt",
    "SupervisorError",
    "SupervisorGaveUp",
    "SupervisorStopped",
    "TransportError",
    "UnhandledMessage",
    "UnknownPeer",
    "WrongType",
]


class AuraError(Exception):
    """Base class of every error aura-sync raises on purpose."""


class InvalidArgument(AuraError, ValueError):
    """An argument has the right type but a value outside its allowed range."""


class WrongType(AuraError, TypeError):
    """An argument has the wrong type."""


class ConfigError(InvalidArgument):
    """A configuration value is missing, unreadable or out of range."""


class DecodeError(AuraError, ValueError):
    """Bytes could not be decoded into a valid message.

    Raised by :func:`aura_sync.messages.codec.decode` for every kind of
    malformed input: bad msgpack, unknown tag, wrong arity, wrong field type,
    value out of range, or a frame over the size limit.
    """


# --- retry -----------------------------------------------------------------


class RetryExhausted(AuraError):
    """Every allowed attempt failed (or the timeout or retry budget ran out).

    ``attempts`` is the number of calls made; ``last_error`` is the final
    failure, also chained as ``__cause__``.
    """

    def __init__(self, message: str, attempts: int, last_error: BaseException | None) -> None:
        super().__init__(message)
        self.attempts = attempts
        self.last_error = last_error


class RateLimited(AuraError):
    """An operation was refused by a rate limit; retry after ``retry_after`` seconds.

    The retry machinery honours ``retry_after``: it waits at least that long
    before the next attempt.
    """

    def __init__(self, retry_after: float, reason: str = "rate limited") -> None:
        super().__init__(f"{reason}: retry after {retry_after:.6f} s")
        self.retry_after = retry_after
        self.reason = reason


# --- connection pool -----------------------------------------------------------


class PoolError(AuraError):
    """Base class of connection-pool errors."""


class PoolExhausted(PoolError):
    """No connection can be handed out without breaking a pool limit."""


class AcquireTimeout(PoolError, TimeoutError):
    """A queued acquire was not satisfied within ``acquire_timeout`` seconds."""


class InvalidHandle(PoolError, ValueError):
    """A connection handle was released twice, or does not belong to this pool."""


class ConnectFailed(PoolError):
    """The pool's connector could not open a connection; the cause is chained.

    A transport failure is an expected error (a typed reply), not a crash.
    """


# --- peers -----------------------------------------------------------------


class PeerError(AuraError):
    """Base class of peer-management errors."""


class UnknownPeer(PeerError, LookupError):
    """The peer is not tracked by the peer manager."""


class InvalidTransition(PeerError, ValueError):
    """A peer status change that the status machine does not allow."""


class SessionLimitReached(PeerError):
    """The peer already has ``max_concurrent_sessions`` active sessions."""


class CapabilityError(PeerError):
    """A capability token is missing, malformed, or does not grant what is needed."""


class PeerUnavailable(PeerError):
    """The peer cannot take a sync session now (not CONNECTED, or in failure backoff)."""


class PeerTableFull(PeerError):
    """The peer table is at ``max_tracked_peers`` and no dead peer can be evicted."""


class DiscoveryError(PeerError):
    """The discovery effect failed or returned malformed candidates; the cause is chained."""


# --- actors ----------------------------------------------------------------


class ActorError(AuraError):
    """Base class of errors raised by the actor layer."""


class ActorCrashed(ActorError):
    """The actor crashed while handling this message; it is being restarted.

    Only the message that caused the crash gets this error; messages queued
    behind it are delivered to the restarted actor.
    """


class ActorStopped(ActorError):
    """The actor (or supervisor) is stopped and no longer accepts messages."""


class AskTimeout(ActorError, TimeoutError):
    """No reply arrived within the ask timeout."""


class UnhandledMessage(ActorError, TypeError):
    """The actor has no handler for this message type."""


# --- supervision -----------------------------------------------------------------


class SupervisorError(AuraError):
    """Base class of supervisor errors (OTP's ``{error, Reason}`` replies)."""


class AlreadyPresent(SupervisorError):
    """A child with this id already exists (OTP ``already_present``/``already_started``)."""


class NotFound(SupervisorError, LookupError):
    """No child with this id (OTP ``not_found``)."""


class RunningChild(SupervisorError):
    """The operation needs a stopped child but the child is running (OTP ``running``)."""


class StartFailed(SupervisorError):
    """A child failed to start."""


class SupervisorStopped(SupervisorError, ActorStopped):
    """The supervisor is stopped; its API no longer accepts calls."""


class SupervisorGaveUp(SupervisorError):
    """Restart intensity was exceeded: the supervisor stopped its children and gave up."""


# --- runtime: identity, transport, journal ------------------------------------------


class IdentityError(AuraError):
    """A key file, a certificate or a peer's proof of identity is invalid.

    Raised for a key file with permissions wider than 0600, unreadable or
    corrupt key material, a certificate whose key is not Ed25519 or whose
    self-signature does not verify.
    """


class TransportError(AuraError):
    """Base class of transport failures (connect, handshake, closed connection)."""


class ConnectionClosed(TransportError):
    """The connection (or the whole transport) is closed; nothing more can be sent."""


class HandshakeFailed(TransportError):
    """A connection could not be established: refused, timed out, or the TLS handshake failed."""


class PeerIdentityMismatch(HandshakeFailed, IdentityError):
    """The peer could not prove the key behind the ``DeviceId`` it was expected to have."""


class RequestTimeout(TransportError, TimeoutError):
    """No reply to a request arrived within its timeout (seconds)."""


class JournalUnwritable(AuraError):
    """The journal's database refused a write (read-only, disk full, I/O error)."""


class JournalCorrupt(AuraError):
    """The journal database is not an aura-sync journal or fails its integrity checks.

    It is reported, never silently rewritten: the operator decides what to do.
    """


class StateCorrupt(AuraError):
    """The node's state store (peer table, spend, cache floors) is foreign or damaged.

    Refused like a corrupt journal, never rewritten: move it away to start without it.
    """


class OpRefused(InvalidArgument):
    """An op (or its batch) was refused: unsigned, mis-signed, unlinked or not its author's.

    Nothing of the batch was stored.
    """


class DataDirLocked(ConfigError):
    """Another process holds the data directory's lock (one process per data directory)."""
