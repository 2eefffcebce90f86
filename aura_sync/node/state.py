"""The node's long-lived state across process restarts, in its own SQLite file.

:class:`StateStore` keeps, in ``<data_dir>/state.sqlite3`` (not the journal),
the last saved peer table (addresses, trust, scores, bans), the rate
limiter's spend (debts, adapted rates, flow budgets, epoch) and the cache
floors, each a codec-encoded core value with its SHA-256.  A file that is
not a state store, fails ``quick_check``, or holds a row whose digest or
encoding is wrong is refused with :class:`~aura_sync.errors.StateCorrupt`,
never rewritten.

:class:`StatePersister` saves every ``save_interval`` seconds on its own
thread (asks with timeouts; never on an actor's thread) and at stop, and
restores at start.  A monotonic clock does not survive a restart, so each
save records the clock and wall time of the save and every time is stored
relative to it; the time the node was down counts as no time (a wall clock
may step): debts, bans and backoffs resume where they were, never shorter.
A state saved by a tick, not by a clean stop, may miss the spend after it:
restored, the global bucket and every saved peer bucket start empty.
Restore merges with what the just-started actors already hold (bootstrap
peers, spend taken meanwhile): nothing is forgotten, spend adds up.

Layer: runtime.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from aura_sync.actors.address import ActorAddress
from aura_sync.effects import Clock
from aura_sync.errors import AuraError, DecodeError, StateCorrupt
from aura_sync.infrastructure.cache import CacheFloorSnapshot
from aura_sync.infrastructure.peer_values import PeerInfo, PeerStatus, PeerTableSnapshot
from aura_sync.infrastructure.rate_limit import (
    FlowBudget,
    PeerBucketState,
    RateLimitConfig,
    RateLimiterSnapshot,
)
from aura_sync.messages import codec
from aura_sync.messages._base import Message
from aura_sync.messages.cache import GetCacheSnapshot, RestoreCacheFloors
from aura_sync.messages.peers import GetPeerTable, RestorePeerTable
from aura_sync.messages.rate_limit import RestoreRateLimiter, SnapshotRateLimiter
from aura_sync.node.config import StateConfig

__all__ = ["STATE_FILE", "SavedState", "StatePersister", "StateStore"]

_log = logging.getLogger("aura_sync.node.state")

STATE_FILE: Final = "state.sqlite3"
"""Name of the state store inside the data directory."""

APPLICATION_ID: Final = 0x41555354  # "AUST"
SCHEMA_VERSION: Final = 1
_SQLITE_MAGIC: Final = b"SQLite format 3\x00"
_PARTS: Final[dict[str, type[Message]]] = {
    "peers": PeerTableSnapshot,
    "rate_limit": RateLimiterSnapshot,
    "cache": CacheFloorSnapshot,
}


@dataclass(frozen=True, slots=True)
class SavedState:
    """One save: the clock and wall time it was taken at, whether a clean stop wrote it,
    and the parts saved (``peers``, ``rate_limit``, ``cache``; a part may be missing)."""

    clock: float
    wall: float
    clean: bool
    peers: PeerTableSnapshot | None = None
    rate_limit: RateLimiterSnapshot | None = None
    cache: CacheFloorSnapshot | None = None


class StateStore:
    """The open state file (thread-safe: one lock around the connection)."""

    def __init__(self, path: Path, conn: sqlite3.Connection) -> None:
        self.path = path
        self._conn: sqlite3.Connection | None = conn
        self._lock = threading.Lock()

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> StateStore:
        """Open the store at ``path``, creating it (mode 0600) if absent.

        :raises StateCorrupt: the file is not a state store or is damaged.
        """
        path = Path(path)
        if not _check_header(path):
            _create(path)
        try:
            conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA synchronous = FULL")
            _check_schema(path, conn)
        except sqlite3.DatabaseError as exc:
            raise StateCorrupt(f"state store {str(path)!r} is damaged: {exc}") from None
        store = cls(path, conn)
        store.load()  # every row decodes, or the file is refused now
        return store

    def load(self) -> SavedState | None:
        """The last save, or None if nothing was saved yet.

        :raises StateCorrupt: a row fails its digest or does not decode.
        """
        where = f"state store {str(self.path)!r}"
        with self._lock:
            conn = self._live()
            try:
                head = conn.execute("SELECT clock, wall, clean FROM save").fetchall()
                rows = conn.execute("SELECT name, body, digest FROM part").fetchall()
            except sqlite3.DatabaseError as exc:
                raise StateCorrupt(f"{where} is damaged: {exc}") from None
        if not head:
            if rows:
                raise StateCorrupt(f"{where} holds parts but no save record")
            return None
        clock, wall, clean = head[0]
        if not all(type(v) is float for v in (clock, wall)) or clean not in (0, 1):
            raise StateCorrupt(f"{where}: a bad save record {head[0]!r}")
        parts: dict[str, Message] = {}
        for name, body, digest in rows:
            kind = _PARTS.get(name)
            if kind is None or type(body) is not bytes:
                raise StateCorrupt(f"{where}: an unknown or bad part {name!r}")
            if hashlib.sha256(body).digest() != digest:
                raise StateCorrupt(f"{where}: part {name!r} fails its SHA-256 check")
            try:
                value = codec.decode(body, max_size=len(body))
            except DecodeError as exc:
                raise StateCorrupt(f"{where}: part {name!r} does not decode: {exc}") from None
            if type(value) is not kind:
                raise StateCorrupt(f"{where}: part {name!r} holds a {type(value).__name__}")
            parts[name] = value
        return SavedState(clock, wall, bool(clean), **parts)  # type: ignore[arg-type]

    def save(self, state: SavedState) -> None:
        """Replace the saved state with ``state`` in one transaction (fsynced)."""
        rows = []
        for name in _PARTS:
            value = getattr(state, name)
            if value is not None:
                body = codec.encode(value, max_size=2**31)
                rows.append((name, body, hashlib.sha256(body).digest()))
        with self._lock:
            conn = self._live()
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute(
                    "INSERT OR REPLACE INTO save VALUES (1, ?, ?, ?)",
                    (state.clock, state.wall, int(state.clean)),
                )
                conn.execute("DELETE FROM part")
                conn.executemany("INSERT INTO part VALUES (?, ?, ?)", rows)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def _live(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StateCorrupt(f"state store {str(self.path)!r} is closed")
        return self._conn

    def close(self) -> None:
        """Close the file (idempotent)."""
        with self._lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()


def _create(path: Path) -> None:
    """A new, empty store at ``path``, built aside and renamed: never a partial file."""
    aside = path.with_name(path.name + ".new")
    aside.unlink(missing_ok=True)
    os.close(os.open(aside, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600))
    conn = sqlite3.connect(aside, isolation_level=None)
    try:
        conn.executescript(
            f"PRAGMA application_id = {APPLICATION_ID};"
            f"PRAGMA user_version = {SCHEMA_VERSION};"
            "CREATE TABLE save (id INTEGER PRIMARY KEY CHECK (id = 1), clock REAL NOT NULL,"
            " wall REAL NOT NULL, clean INTEGER NOT NULL);"
            "CREATE TABLE part (name TEXT PRIMARY KEY, body BLOB NOT NULL, digest BLOB NOT NULL);"
        )
    finally:
        conn.close()
    with open(aside, "rb") as stream:
        os.fsync(stream.fileno())
    os.replace(aside, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def _check_header(path: Path) -> bool:
    """True if ``path`` holds a whole SQLite header, False if absent; else StateCorrupt."""
    try:
        with open(path, "rb") as stream:
            head = stream.read(100)
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise StateCorrupt(f"state store {str(path)!r} cannot be read: {exc}") from None
    if len(head) < 100 or head[:16] != _SQLITE_MAGIC:
        raise StateCorrupt(
            f"state store {str(path)!r} is not a SQLite database ({len(head)} bytes, header "
            f"{head[:16]!r}); refusing to touch it (move it away to start without saved state)"
        )
    return True


def _check_schema(path: Path, conn: sqlite3.Connection) -> None:
    app_id = conn.execute("PRAGMA application_id").fetchone()[0]
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if app_id != APPLICATION_ID or version != SCHEMA_VERSION:
        raise StateCorrupt(
            f"state store {str(path)!r} is not an aura-sync state store of version "
            f"{SCHEMA_VERSION} (application_id {app_id:#x}, user_version {version})"
        )
    problems = [row[0] for row in conn.execute("PRAGMA quick_check")]
    if problems != ["ok"]:
        raise StateCorrupt(f"state store {str(path)!r} fails quick_check: {problems[:3]}")


# --- carrying the values across a restart ----------------------------------------------------


def carry_table(table: PeerTableSnapshot, delta: float) -> PeerTableSnapshot:
    """``table`` as a new process starts it: every clock time moved by ``delta`` seconds
    (into the new clock's base), no session open, no peer connected (CONNECTING, CONNECTED
    and DEGRADED become DISCONNECTED: the connections did not survive)."""

    def move(info: PeerInfo) -> PeerInfo:
        meta = info.metadata
        backoff = None if meta.backoff_until is None else meta.backoff_until + delta
        status = PeerStatus.DISCONNECTED if meta.status in _LIVE else meta.status
        return dataclasses.replace(
            info,
            metadata=dataclasses.replace(
                meta,
                status=status,
                discovered_at=meta.discovered_at + delta,
                last_seen=meta.last_seen + delta,
                last_status_change=meta.last_status_change + delta,
                backoff_until=backoff,
                active_sessions=0,
            ),
        )

    last = None if table.last_discovery is None else table.last_discovery + delta
    bans = tuple(dataclasses.replace(b, until=b.until + delta) for b in table.bans)
    return PeerTableSnapshot(tuple(move(p) for p in table.peers), last, bans)


_LIVE: Final = frozenset({PeerStatus.CONNECTING, PeerStatus.CONNECTED, PeerStatus.DEGRADED})


def merge_tables(
    saved: PeerTableSnapshot, current: PeerTableSnapshot, limit: int
) -> PeerTableSnapshot:
    """The saved table plus the peers only ``current`` knows (saved entries keep their
    trust and history), at most ``limit`` peers (``current``'s first, then the most
    trusted, most recently seen saved ones); bans of both; ``current``'s discovery time."""
    fresh = {p.peer_id: p for p in current.peers}
    old = [p for p in saved.peers if p.peer_id not in fresh]
    old.sort(key=lambda p: (-p.metadata.trust_level, -p.metadata.last_seen))
    kept = {p.peer_id for p in [*current.peers, *old][:limit]}
    merged = {**fresh, **{p.peer_id: p for p in saved.peers}}
    peers = tuple(merged[k] for k in sorted(merged) if k in kept)
    return PeerTableSnapshot(peers, current.last_discovery, (*saved.bans, *current.bans))


def _empty(debt: float, burst: int, rate: float) -> float:
    return max(debt, burst / rate)


def merge_spend(
    saved: RateLimiterSnapshot,
    current: RateLimiterSnapshot,
    config: RateLimitConfig,
    *,
    clean: bool,
) -> RateLimiterSnapshot:
    """The spend to restore: the saved debts (from now: no credit for the time down) plus
    what ``current`` spent since the start; after an unclean stop the global bucket and
    every saved peer bucket are empty (the spend after the last save is unknown)."""

    def add(debt: float, rate: float, more: float, more_rate: float) -> float:
        more = more * more_rate / rate  # the same tokens in seconds at ``rate``
        return max(debt, 0.0) + max(more, 0.0) if debt > 0.0 or more > 0.0 else max(debt, more)

    glob = add(saved.global_debt, saved.global_ops_per_second,
               current.global_debt, current.global_ops_per_second)  # fmt: skip
    if not clean:
        glob = _empty(glob, config.global_burst, saved.global_ops_per_second)
    now = {p.key: p for p in current.peers}
    peers = []
    for state in saved.peers:
        extra = now.pop(state.key, None)
        debt, budget = state.debt, state.budget
        if extra is not None:
            debt = add(debt, state.ops_per_second, extra.debt, extra.ops_per_second)
            budget = _add_budget(budget, extra.budget)
        if not clean:
            debt = _empty(debt, config.peer_burst, state.ops_per_second)
        peers.append(PeerBucketState(state.key, debt, state.ops_per_second, budget))
    peers.extend(now.values())
    epoch = max(saved.epoch, current.epoch)
    return RateLimiterSnapshot(epoch, glob, saved.global_ops_per_second, tuple(peers))


def _add_budget(saved: FlowBudget | None, current: FlowBudget | None) -> FlowBudget | None:
    if saved is None or current is None:
        return saved or current
    if saved.epoch != current.epoch:
        return saved if saved.epoch > current.epoch else current
    return FlowBudget(min(saved.limit, current.limit), saved.spent + current.spent, saved.epoch)


class StatePersister:
    """Saves the node's state at a bounded rate and at :meth:`close`; restores it at start.

    Runs on its own thread and the caller's; every ask has ``timeout``.
    """

    def __init__(
        self,
        store: StateStore,
        *,
        peer_manager: ActorAddress,
        rate_limiter: ActorAddress,
        cache: ActorAddress,
        clock: Clock,
        config: StateConfig,
        rate_limit: RateLimitConfig,
        max_peers: int,
        timeout: float = 5.0,
    ) -> None:
        self._store = store
        self._peers, self._limiter, self._cache = peer_manager, rate_limiter, cache
        self._clock = clock
        self._config = config
        self._rate_limit = rate_limit
        self._max_peers = max_peers
        self._timeout = timeout
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._save_lock = threading.Lock()
        self.saves = 0
        """Saves written so far (ticks and the final one)."""

    def restore(self) -> SavedState | None:
        """Load the last save and merge it into the running actors; what was loaded."""
        saved = self._store.load()
        if saved is None:
            return None
        t = self._timeout
        delta = self._clock.now() - saved.clock
        if saved.peers is not None:
            current = self._peers.call(GetPeerTable(), t)
            merged = merge_tables(carry_table(saved.peers, delta), current, self._max_peers)
            self._peers.call(RestorePeerTable(merged), t)
        if saved.rate_limit is not None:
            current_spend = self._limiter.call(SnapshotRateLimiter(), t)
            spend = merge_spend(
                saved.rate_limit, current_spend, self._rate_limit, clean=saved.clean
            )
            self._limiter.call(RestoreRateLimiter(spend), t)
        if saved.cache is not None:
            self._cache.call(RestoreCacheFloors(saved.cache), t)
        _log.info(
            "event=state_restored peers=%d clean=%s saved_wall=%.3f",
            0 if saved.peers is None else len(saved.peers.peers),
            saved.clean,
            saved.wall,
        )
        return saved

    def save(self, *, clean: bool = False) -> SavedState:
        """Take the three snapshots and write them (one save at a time)."""
        t = self._timeout
        with self._save_lock:
            state = SavedState(
                clock=self._clock.now(),
                wall=time.time(),
                clean=clean,
                peers=self._peers.call(GetPeerTable(), t),
                rate_limit=self._limiter.call(SnapshotRateLimiter(), t),
                cache=self._cache.call(GetCacheSnapshot(), t),
            )
            self._store.save(state)
            self.saves += 1
        return state

    def start(self) -> None:
        """Save once now (so that a crash always finds a save, marked unclean), then start
        the save thread (a save every ``save_interval`` seconds)."""
        self.save()
        self._thread = threading.Thread(target=self._run, name="aura-state", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._config.save_interval):
            try:
                self.save()
            except (AuraError, sqlite3.Error) as exc:
                _log.warning("event=state_save_failed error=%r", str(exc))

    def close(self, timeout: float) -> None:
        """Stop the thread, save once more (a clean save) and close the store."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        try:
            self.save(clean=True)
        except (AuraError, sqlite3.Error) as exc:
            _log.warning("event=state_save_failed at=stop error=%r", str(exc))
        finally:
            self._store.close()
