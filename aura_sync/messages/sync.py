"""Wire messages of the transport and of the anti-entropy journal sync protocol.

Tags 0x00C0-0x00D3, 0x00DE, 0x00DF and 0x00E7 on the wire, 0x00D4-0x00D9 the
anti-entropy actor's own requests and timers, 0x00DA-0x00DD the tree messages of
:mod:`~aura_sync.messages.sync_tree` (re-exported here).  The transport handles
:class:`Hello`, :class:`Ping`/:class:`Pong` and :class:`Request`/:class:`Reply`
itself; every other frame rides inside a Request or Reply.  A journal is a set
of signed, content-addressed :class:`Op` s (see :func:`op_id`); peers compare
digests of :class:`IdRange` s, list the ranges that differ, and pull
(:class:`OpsRequest`) and push (:class:`PushOps`) at most :data:`MAX_OPS_BATCH`
ops per message; a peer that lacks the top of an author's chain pulls it by seq,
top first (:class:`HeadsRequest`, :class:`ChainRequest`).

The codec checks every decoded field's type.  The bounds of a peer's request or
reply are checked by its ``check()`` where it enters (the serving code for
requests, the session for replies); :class:`IdRange`, :class:`RangeDigest` and
the transport messages check themselves when built or decoded.

Layer: messages.
"""

from __future__ import annotations

from hashlib import sha256 as _sha256
from typing import Final

from aura_sync._checks import check_int, check_peer
from aura_sync.errors import InvalidArgument, WrongType
from aura_sync.ids import DeviceId
from aura_sync.messages._base import Message, message
from aura_sync.messages._base import Request as Call

__all__ = [
    "CHILD_PRINT_SIZE",
    "FULL_RANGE",
    "MAX_ADDRESS_LENGTH",
    "MAX_APPEND",
    "MAX_HEADS",
    "MAX_IDS_BATCH",
    "MAX_NODE_IDS",
    "MAX_OPS_BATCH",
    "MAX_OP_PAYLOAD",
    "MAX_PEERS_PER_EXCHANGE",
    "MAX_RANGES",
    "MAX_TOKEN_SIZE",
    "NO_PREV",
    "OP_ID_SIZE",
    "PROTOCOL_VERSION",
    "PUBLIC_KEY_SIZE",
    "SEQ_LIMIT",
    "SIGNATURE_SIZE",
    "TRANSPORT_MESSAGES",
    "TREE_DEPTH",
    "TREE_PARTS",
    "AppendOps",
    "ChainRequest",
    "ChildDigestsReply",
    "ChildDigestsRequest",
    "DigestReply",
    "DigestRequest",
    "GetSyncStatus",
    "HeadsReply",
    "HeadsRequest",
    "Hello",
    "IdRange",
    "IdsReply",
    "IdsRequest",
    "NodeIdsReply",
    "NodeIdsRequest",
    "Op",
    "OpsAppended",
    "OpsReply",
    "OpsRequest",
    "PeerAddress",
    "PeerExchange",
    "PeerExchangeRequest",
    "Ping",
    "Pong",
    "PresentCapability",
    "PushAck",
    "PushOps",
    "RangeDigest",
    "Reply",
    "Request",
    "RetrySync",
    "SyncStatus",
    "SyncTick",
    "fingerprint",
    "fingerprint_of",
    "op_id",
    "tree_range",
]

PROTOCOL_VERSION: Final = 2
"""The wire protocol version a node announces in :class:`Hello`; a peer announcing another
is closed at its Hello.  2: signed, chained ops (0.1.0 spoke 1, with unsigned ops)."""

OP_ID_SIZE: Final = 32
"""Size of an op id (a SHA-256 digest), in bytes."""

MAX_OP_PAYLOAD: Final = 4096
"""Largest op payload, in bytes (so a full batch of 128 ops fits in a 1 MiB frame)."""

MAX_OPS_BATCH: Final = 128
"""Most ops (or op ids requested) in one message."""

MAX_IDS_BATCH: Final = 1024
"""Most ids in one :class:`IdsReply` page."""

MAX_HEADS: Final = 1024
"""Most authors in one :class:`HeadsReply` page."""

MAX_RANGES: Final = 64
"""Most ranges in one :class:`DigestRequest`."""

MAX_PEERS_PER_EXCHANGE: Final = 64
"""Most peers in one :class:`PeerExchange`."""

MAX_ADDRESS_LENGTH: Final = 255
"""Longest transport address string, in characters."""

MAX_TOKEN_SIZE: Final = 16 * 1024
"""Largest serialized capability token, in bytes."""

NO_PREV: Final = bytes(32)
"""The ``prev`` of an author's first op (seq 0)."""

SEQ_LIMIT: Final = 2**63
"""Sequence numbers are in ``0 .. SEQ_LIMIT - 1`` (SQLite INTEGER is signed 64-bit)."""

PUBLIC_KEY_SIZE: Final = 32
"""Size of a raw Ed25519 public key."""

SIGNATURE_SIZE: Final = 64
"""Size of an Ed25519 signature."""

MAX_APPEND: Final = 8192
"""Most payloads in one :class:`AppendOps` (one journal transaction: 8192 appends ~25 %
faster than 1024, measured; the control socket's frame bounds a request's bytes)."""

_U64_MAX: Final = 2**64 - 1
_OP_DOMAIN: Final = b"aura-sync/op/v2\x00"
_RANGE_DOMAIN: Final = b"aura-sync/range/v2\x00"
_ID_SPACE: Final = 2 ** (8 * OP_ID_SIZE)


def _check_id(value: object, name: str) -> bytes:
    if type(value) is not bytes:
        raise WrongType(f"{name} must be bytes, got {type(value).__name__} {value!r}")
    if len(value) != OP_ID_SIZE:
        raise InvalidArgument(f"{name} must be {OP_ID_SIZE} bytes, got {len(value)}: {value!r}")
    return value


def _check_tuple(
    value: object, name: str, low: int, high: int, item_type: type | None = None
) -> tuple[object, ...]:
    if type(value) is not tuple:
        raise WrongType(f"{name} must be a tuple, got {type(value).__name__}")
    if not low <= len(value) <= high:
        raise InvalidArgument(f"{name} must hold {low}..{high} items, got {len(value)}")
    if item_type is not None:
        for i, item in enumerate(value):
            if type(item) is not item_type:
                raise WrongType(
                    f"{name}[{i}] must be a {item_type.__name__}, got {type(item).__name__}"
                )
    return value


def _check_ids(value: object, name: str, low: int, high: int, *, ordered: bool) -> None:
    items = _check_tuple(value, name, low, high)
    for i, item in enumerate(items):
        _check_id(item, f"{name}[{i}]")
    ids: tuple[bytes, ...] = value  # type: ignore[assignment]
    bad = next((i for i in range(1, len(ids)) if ids[i - 1] >= ids[i]), 0) if ordered else 0
    if bad:
        raise InvalidArgument(
            f"{name} must be strictly ascending; {name}[{bad}] = {ids[bad].hex()} "
            f"is not above {ids[bad - 1].hex()}"
        )
    if not ordered and len(set(ids)) != len(ids):
        i = next(i for i, key in enumerate(ids) if key in ids[:i])
        raise InvalidArgument(f"{name} holds duplicate ids: {name}[{i}] repeats {ids[i].hex()}")


def _check_address(value: object, name: str, *, allow_empty: bool) -> str:
    if type(value) is not str:
        raise WrongType(f"{name} must be a str, got {type(value).__name__} {value!r}")
    if len(value) > MAX_ADDRESS_LENGTH:
        raise InvalidArgument(
            f"{name} must be at most {MAX_ADDRESS_LENGTH} characters, got {len(value)}"
        )
    if not value and not allow_empty:
        raise InvalidArgument(f"{name} must not be empty")
    if not value.isprintable() or any(c.isspace() for c in value):
        raise InvalidArgument(f"{name} must be printable without spaces, got {value!r}")
    return value


def op_id(author: DeviceId, seq: int, payload: bytes, prev: bytes = NO_PREV) -> bytes:
    """The content address of an op: SHA-256 over a domain tag, the author's 16 bytes,
    ``seq`` (8 bytes big-endian), ``prev`` (the author's op ``seq - 1``, or
    :data:`NO_PREV`) and the payload: it commits to the author's whole chain."""
    check_peer(author, "author")
    check_int(seq, "seq", minimum=0, maximum=SEQ_LIMIT - 1)
    if type(payload) is not bytes:
        raise WrongType(f"payload must be bytes, got {type(payload).__name__}")
    _check_id(prev, "prev")
    return _op_id(author.raw, seq, prev, payload)


def _op_id(author: bytes, seq: int, prev: bytes, payload: bytes) -> bytes:
    return _sha256(b"".join((_OP_DOMAIN, author, seq.to_bytes(8, "big"), prev, payload))).digest()


@message(0x00C0)
class Hello(Message):
    """First frame each way once TLS is up: ``listen_address`` is where the sender accepts
    connections ("" if none); its identity is proven by the TLS certificate."""

    protocol_version: int
    listen_address: str

    def __post_init__(self) -> None:
        check_int(self.protocol_version, "protocol_version", minimum=1, maximum=0xFFFF)
        _check_address(self.listen_address, "listen_address", allow_empty=True)


@message(0x00C1)
class Ping(Message):
    """Keepalive probe; the transport answers with :class:`Pong` carrying the same nonce."""

    nonce: int

    def __post_init__(self) -> None:
        check_int(self.nonce, "nonce", minimum=0, maximum=_U64_MAX)


@message(0x00C2)
class Pong(Message):
    """Answer to :class:`Ping` (same nonce)."""

    nonce: int

    def __post_init__(self) -> None:
        check_int(self.nonce, "nonce", minimum=0, maximum=_U64_MAX)


@message(0x00C3)
class Request(Message):
    """A request expecting one :class:`Reply` with the same ``request_id`` (1..2**64-1);
    ``body`` is the encoded request (decoded by the transport, no transport message)."""

    request_id: int
    body: bytes

    def __post_init__(self) -> None:
        _check_envelope(self.request_id, self.body)


@message(0x00C4)
class Reply(Message):
    """The answer to the :class:`Request` with the same ``request_id`` (``body``: encoded reply)."""

    request_id: int
    body: bytes

    def __post_init__(self) -> None:
        _check_envelope(self.request_id, self.body)


def _check_envelope(request_id: int, body: object) -> None:
    check_int(request_id, "request_id", minimum=1, maximum=_U64_MAX)
    if type(body) is not bytes:
        raise WrongType(f"body must be bytes (an encoded message), got {type(body).__name__}")
    if not body:
        raise InvalidArgument("body must not be empty")


TRANSPORT_MESSAGES: Final[tuple[type[Message], ...]] = (Hello, Ping, Pong, Request, Reply)
"""Messages the transport handles itself; never carried inside a Request or Reply."""


@message(0x00C5)
class Op(Message):
    """``payload`` written by ``author`` as its ``seq``-th op; ``prev`` is the id of its op
    ``seq - 1`` (a hash chain), ``key`` its Ed25519 public key (hashing to ``author``),
    ``sig`` empty or its signature of :attr:`op_id` (a signed head covers the chain
    below it).  A peer's ops are checked by the journal that receives them."""

    author: DeviceId
    seq: int
    payload: bytes
    prev: bytes = NO_PREV
    key: bytes = b""
    sig: bytes = b""

    @property
    def op_id(self) -> bytes:
        """The op's content address (see :func:`op_id`)."""
        return _op_id(self.author.raw, self.seq, self.prev, self.payload)


@message(0x00C6)
class IdRange(Message):
    """The 32-byte ids ``x`` with ``lo <= x < hi`` (``hi`` None: to the end; ``lo < hi``)."""

    lo: bytes
    hi: bytes | None = None

    def __post_init__(self) -> None:
        _check_id(self.lo, "lo")
        if self.hi is not None:
            _check_id(self.hi, "hi")
            if self.hi <= self.lo:
                raise InvalidArgument(f"hi must be above lo, got lo={self.lo!r} hi={self.hi!r}")

    def contains(self, item: bytes) -> bool:
        """Whether the 32-byte id ``item`` lies in this range (else WrongType/InvalidArgument)."""
        _check_id(item, "item")
        return item >= self.lo and (self.hi is None or item < self.hi)

    def split(self, parts: int) -> tuple[IdRange, ...]:
        """Cut the range into ``parts`` (2..256) contiguous, non-empty, near-equal ranges
        (fewer if it holds fewer ids)."""
        check_int(parts, "parts", minimum=2, maximum=256)
        lo = int.from_bytes(self.lo, "big")
        hi = _ID_SPACE if self.hi is None else int.from_bytes(self.hi, "big")
        parts = min(parts, hi - lo)
        bounds = [lo + (hi - lo) * i // parts for i in range(parts)] + [hi]
        out = []
        for i in range(parts):
            a, b = bounds[i], bounds[i + 1]
            out.append(
                IdRange(
                    a.to_bytes(OP_ID_SIZE, "big"),
                    None if b == _ID_SPACE else b.to_bytes(OP_ID_SIZE, "big"),
                )
            )
        return tuple(out)


FULL_RANGE: Final = IdRange(bytes(OP_ID_SIZE), None)
"""The whole id space."""


@message(0x00C7)
class RangeDigest(Message):
    """Summary of the ids a journal holds in ``id_range``: their count and fingerprint."""

    id_range: IdRange
    count: int
    fingerprint: bytes

    def __post_init__(self) -> None:  # id_range's type: the codec's and mypy's
        check_int(self.count, "count", minimum=0, maximum=_U64_MAX)
        _check_id(self.fingerprint, "fingerprint")


@message(0x00C8)
class DigestRequest(Message):
    """Ask for the :class:`RangeDigest` of each range (1..:data:`MAX_RANGES`)."""

    ranges: tuple[IdRange, ...] = (FULL_RANGE,)

    def check(self) -> None:
        _check_tuple(self.ranges, "ranges", 1, MAX_RANGES, IdRange)


@message(0x00C9)
class DigestReply(Message):
    """One :class:`RangeDigest` per requested range, in request order."""

    digests: tuple[RangeDigest, ...]

    def check(self) -> None:
        _check_tuple(self.digests, "digests", 0, MAX_RANGES, RangeDigest)


@message(0x00CA)
class IdsRequest(Message):
    """List the ids held in ``id_range``, ascending, at most ``limit`` (1..1024) of them."""

    id_range: IdRange
    limit: int = MAX_IDS_BATCH

    def check(self) -> None:
        if type(self.id_range) is not IdRange:
            raise WrongType(f"id_range must be an IdRange, got {type(self.id_range).__name__}")
        check_int(self.limit, "limit", minimum=1, maximum=MAX_IDS_BATCH)


@message(0x00CB)
class IdsReply(Message):
    """A page of ids (strictly ascending); ``next_lo`` is where the next page starts, or None."""

    ids: tuple[bytes, ...]
    next_lo: bytes | None = None

    def check(self) -> None:
        _check_ids(self.ids, "ids", 0, MAX_IDS_BATCH, ordered=True)
        if self.next_lo is not None:
            _check_id(self.next_lo, "next_lo")
            if self.ids and self.next_lo <= self.ids[-1]:
                raise InvalidArgument(
                    f"next_lo must be above the last listed id {self.ids[-1].hex()}, "
                    f"got {self.next_lo.hex()}"
                )


@message(0x00CC)
class OpsRequest(Message):
    """Ask for the ops with these ids (1..128 distinct ids)."""

    ids: tuple[bytes, ...]

    def check(self) -> None:
        _check_ids(self.ids, "ids", 1, MAX_OPS_BATCH, ordered=False)


@message(0x00CD)
class OpsReply(Message):
    """The requested ops that the peer holds (<= 128) and the ids it does not have."""

    ops: tuple[Op, ...]
    missing: tuple[bytes, ...] = ()

    def check(self) -> None:
        _check_tuple(self.ops, "ops", 0, MAX_OPS_BATCH, Op)
        _check_ids(self.missing, "missing", 0, MAX_OPS_BATCH, ordered=False)


@message(0x00CE)
class PushOps(Message):
    """Ops the sender believes the receiver lacks (1..128)."""

    ops: tuple[Op, ...]

    def check(self) -> None:
        _check_tuple(self.ops, "ops", 1, MAX_OPS_BATCH, Op)


@message(0x00CF)
class PushAck(Message):
    """Answer to :class:`PushOps`: how many ops were new and how many already known."""

    added: int
    known: int

    def check(self) -> None:
        check_int(self.added, "added", minimum=0, maximum=MAX_OPS_BATCH)
        check_int(self.known, "known", minimum=0, maximum=MAX_OPS_BATCH)


@message(0x00DE)
class ChainRequest(Message):
    """Ask for ``author``'s held ops with ``lo <= seq <= hi`` (at most 128 seqs), top first;
    answered with an :class:`OpsReply`."""

    author: DeviceId
    lo: int
    hi: int

    def check(self) -> None:
        check_peer(self.author, "author")
        check_int(self.hi, "hi", minimum=0, maximum=SEQ_LIMIT - 1)
        check_int(self.lo, "lo", minimum=max(0, self.hi - MAX_OPS_BATCH + 1), maximum=self.hi)


@message(0x00DF)
class HeadsRequest(Message):
    """Ask for a page of the authors held (ascending, after the raw id ``after``), each with
    its top seq."""

    after: bytes = b""

    def check(self) -> None:
        if len(self.after) > DeviceId.SIZE:
            raise InvalidArgument(f"after must be at most {DeviceId.SIZE} bytes: {self.after!r}")


@message(0x00E7)
class HeadsReply(Message):
    """Up to 1024 authors (ascending) and their top seqs; ``more``: a next page follows."""

    authors: tuple[DeviceId, ...]
    tops: tuple[int, ...]
    more: bool = False

    def check(self) -> None:
        _check_tuple(self.authors, "authors", 0, MAX_HEADS, DeviceId)
        _check_tuple(self.tops, "tops", len(self.authors), len(self.authors), int)
        for i, top in enumerate(self.tops):
            check_int(top, f"tops[{i}]", minimum=0, maximum=SEQ_LIMIT - 1)
        if any(a.raw >= b.raw for a, b in zip(self.authors, self.authors[1:], strict=False)):
            raise InvalidArgument("authors must be strictly ascending")


@message(0x00D0)
class PeerAddress(Message):
    """Where a verified peer listens: its DeviceId and transport address ("host:port")."""

    device_id: DeviceId
    address: str

    def check(self) -> None:
        check_peer(self.device_id, "device_id")
        _check_address(self.address, "address", allow_empty=False)


@message(0x00D1)
class PeerExchange(Message):
    """Addresses of peers the sender has verified (at most 64, distinct DeviceIds)."""

    peers: tuple[PeerAddress, ...]

    def check(self) -> None:
        _check_tuple(self.peers, "peers", 0, MAX_PEERS_PER_EXCHANGE, PeerAddress)
        for i, peer in enumerate(self.peers):
            peer.check()
            if any(p.device_id == peer.device_id for p in self.peers[:i]):
                raise InvalidArgument(f"peers[{i}] has the same device_id twice: {peer.device_id}")


@message(0x00D2)
class PeerExchangeRequest(Message):
    """Ask a peer for up to ``max_peers`` (1..64) verified peer addresses."""

    max_peers: int = MAX_PEERS_PER_EXCHANGE

    def check(self) -> None:
        check_int(self.max_peers, "max_peers", minimum=1, maximum=MAX_PEERS_PER_EXCHANGE)


@message(0x00D3)
class PresentCapability(Message):
    """A serialized Biscuit token (1..16 KiB) presented to be granted capabilities."""

    token: bytes

    def check(self) -> None:
        if type(self.token) is not bytes:
            raise WrongType(f"token must be bytes, got {type(self.token).__name__}")
        if not 1 <= len(self.token) <= MAX_TOKEN_SIZE:
            raise InvalidArgument(f"token must be 1..{MAX_TOKEN_SIZE} bytes, got {len(self.token)}")


@message(0x00D4)
class SyncTick(Message):
    """Timer: time for the next sync round (scheduled every ``sync_interval`` seconds)."""


@message(0x00D5)
class RetrySync(Message):
    """Timer: retry the failed session with ``peer_id`` (``attempt`` 0-based, after waiting
    ``prev_delay`` s; ``started``: clock time of the first attempt)."""

    peer_id: DeviceId
    attempt: int
    prev_delay: float
    started: float


@message(0x00D7)
class OpsAppended(Message):
    """Answer to :class:`AppendOps`: ops added, own ops and all ops now held."""

    added: int
    own_ops: int
    total_ops: int


@message(0x00D6)
class AppendOps(Call[OpsAppended]):
    """Author new ops with these payloads (1..MAX_APPEND) in the local journal."""

    payloads: tuple[bytes, ...]


@message(0x00D9)
class SyncStatus(Message):
    """The anti-entropy actor's ``(name, value)`` counters and journal summary: ``digest``
    the full-range fingerprint, peers ``connected`` and ``authorized`` (capability
    verified), ``answered`` asks per actor address, ``refused`` op batches per peer."""

    counters: tuple[tuple[str, int], ...]
    journal_ops: int
    own_ops: int
    digest: bytes
    epoch: int
    connected: int
    authorized: int
    active_sessions: int
    answered: tuple[tuple[str, int], ...] = ()
    refused: tuple[tuple[str, int], ...] = ()

    def counter(self, name: str) -> int:
        """The value of counter ``name`` (0 if absent)."""
        return dict(self.counters).get(name, 0)


@message(0x00D8)
class GetSyncStatus(Call[SyncStatus]):
    """Ask for the anti-entropy actor's :class:`SyncStatus`."""


# Fingerprints and the reconciliation tree's messages live in their own module.
from aura_sync.messages.sync_tree import (  # noqa: E402
    CHILD_PRINT_SIZE,
    MAX_NODE_IDS,
    TREE_DEPTH,
    TREE_PARTS,
    ChildDigestsReply,
    ChildDigestsRequest,
    NodeIdsReply,
    NodeIdsRequest,
    fingerprint,
    fingerprint_of,
    tree_range,
)
