"""Peer scoring from behaviour (after libp2p's gossipsub scoring and connection gater).

A successful session adds ``success_reward`` trust, each :class:`Offence` takes its
penalty (trust stays 0..100).  An offence leaving trust below ``ban_threshold`` bans
the peer for ``min(ban_base * ban_growth**(k - 1), ban_max)`` s, ``k`` its bans so far
(forgotten ``offence_memory`` s after the last); a ban's end restores ``probation_trust``.
A peer with ``degraded_min_syncs`` sessions and a success rate under ``degraded_below``
is DEGRADED for ``degraded_for`` s.  :class:`BanBook` keeps the offence records (at most
``max_records``, also of untracked identities).  Layer: cores (clock seconds).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final

from aura_sync._checks import check_clock_time, check_int
from aura_sync.effects import Clock, check_seconds
from aura_sync.errors import ConfigError, InvalidArgument
from aura_sync.ids import DeviceId
from aura_sync.messages._base import Message, message

__all__ = ["MAX_TRUST", "BanBook", "Offence", "PeerBan", "ScoringConfig", "ban_period"]

MAX_TRUST: Final = 100


class Offence(enum.Enum):
    """A misbehaviour that lowers a peer's trust."""

    REFUSED_OPS = "refused_ops"  # a batch of unsigned, mis-signed or invalid ops
    MALFORMED_FRAME = "malformed_frame"  # a frame the transport could not decode
    RATE_LIMITED = "rate_limited"  # a request over its rate limit or flow budget
    CAPABILITY = "capability"  # a token that failed the capability check
    INVALID_REQUEST = "invalid_request"  # a request out of the protocol's bounds


@dataclass(frozen=True, slots=True)
class ScoringConfig:
    """The trust deltas, ban rules and DEGRADED rule (trust points 0-100, seconds)."""

    success_reward: int = 2
    refused_ops_penalty: int = 15
    malformed_frame_penalty: int = 15
    rate_limited_penalty: int = 2
    capability_penalty: int = 20
    invalid_request_penalty: int = 5
    ban_threshold: int = 20
    probation_trust: int = 50
    ban_base: float = 60.0
    ban_growth: float = 2.0
    ban_max: float = 86400.0
    offence_memory: float = 86400.0
    degraded_below: float = 0.5
    degraded_min_syncs: int = 4
    degraded_for: float = 30.0
    max_records: int = 4096

    def __post_init__(self) -> None:
        try:
            for name in (
                "success_reward", "refused_ops_penalty", "malformed_frame_penalty",
                "rate_limited_penalty", "capability_penalty", "invalid_request_penalty",
                "ban_threshold", "probation_trust",
            ):  # fmt: skip
                check_int(getattr(self, name), name, minimum=0, maximum=MAX_TRUST)
            check_int(self.degraded_min_syncs, "degraded_min_syncs", minimum=1)
            check_int(self.max_records, "max_records", minimum=1)
            for name in ("ban_base", "ban_max", "offence_memory", "degraded_for"):
                object.__setattr__(
                    self, name, check_seconds(getattr(self, name), name, allow_zero=False)
                )
            growth = check_seconds(self.ban_growth, "ban_growth")
            if growth < 1.0:
                raise InvalidArgument(f"ban_growth must be >= 1.0, got {self.ban_growth!r}")
            object.__setattr__(self, "ban_growth", growth)
            rate = check_seconds(self.degraded_below, "degraded_below")
            if rate > 1.0:
                raise InvalidArgument(f"degraded_below must be in 0..1, got {rate!r}")
            object.__setattr__(self, "degraded_below", rate)
            if self.ban_max < self.ban_base:
                raise InvalidArgument(
                    f"ban_max ({self.ban_max}) must be >= ban_base ({self.ban_base})"
                )
        except InvalidArgument as exc:
            raise ConfigError(str(exc)) from None

    def penalty(self, offence: Offence) -> int:
        """Trust points ``offence`` costs."""
        return int(getattr(self, f"{offence.value}_penalty"))


def ban_period(bans: int, config: ScoringConfig) -> float:
    """Seconds of the ``bans``-th ban (>= 1): ``min(base * growth**(bans-1), max)``."""
    k = check_int(bans, "bans", minimum=1)
    try:
        return min(config.ban_base * config.ban_growth ** (k - 1), config.ban_max)
    except OverflowError:  # a huge count or growth: the cap
        return config.ban_max


@message(0x009B)
class PeerBan(Message):
    """A peer refused until ``until`` (clock seconds), its ``bans``-th ban; ``trust`` its
    trust when banned; ``address``: the host it connected from, if known."""

    peer_id: DeviceId
    until: float
    bans: int
    reason: str
    trust: int
    address: str | None = None


@dataclass(slots=True)
class _Record:
    trust: int  # of an identity the peer table does not track
    bans: int = 0
    last_ban: float | None = None
    ban: PeerBan | None = None


class BanBook:
    """Offence records and bans (see the module docstring).  Not thread-safe."""

    def __init__(self, config: ScoringConfig, clock: Clock, default_trust: int) -> None:
        self._config = config
        self._clock = clock
        self._default_trust = default_trust
        self._records: dict[DeviceId, _Record] = {}
        self._next_end = float("inf")  # the earliest end of a ban in force (expire is O(1) before)
        self._swept = -float("inf")  # bans that ended by then were already reported

    def untracked_trust(self, peer_id: DeviceId) -> int:
        """The trust of an identity outside the peer table (its record's, else the default)."""
        record = self._records.get(peer_id)
        return self._default_trust if record is None else record.trust

    def offend(
        self, peer_id: DeviceId, trust: int, offence: Offence, address: str | None
    ) -> tuple[int, PeerBan | None]:
        """Apply ``offence`` to a peer of ``trust``: its new trust and the ban it earned, if
        this offence banned it (an offence during a ban lowers trust, bans nothing new)."""
        config, now = self._config, self._clock.now()
        after = max(0, trust - config.penalty(offence))
        record = self._record(peer_id, now)
        record.trust = after
        if after >= config.ban_threshold or self._active(record, now) is not None:
            return after, None
        if record.last_ban is not None and now - record.last_ban >= config.offence_memory:
            record.bans = 0
        record.bans += 1
        record.last_ban = now
        until = now + ban_period(record.bans, config)
        record.ban = PeerBan(peer_id, until, record.bans, offence.value, after, address)
        self._next_end = min(self._next_end, until)
        return after, record.ban

    def ban_of(self, peer_id: DeviceId) -> PeerBan | None:
        """The peer's ban in force now, or None."""
        record = self._records.get(peer_id)
        return None if record is None else self._active(record, self._clock.now())

    def bans(self) -> tuple[PeerBan, ...]:
        """The bans in force now, by id."""
        now = self._clock.now()
        found = (self._active(r, now) for _, r in sorted(self._records.items()))
        return tuple(b for b in found if b is not None)

    def remembered(self) -> tuple[PeerBan, ...]:
        """Each peer's latest ban, in force or ended, while its count is remembered
        (``offence_memory`` after it began), by id: what a restart must keep."""
        now, memory = self._clock.now(), self._config.offence_memory
        return tuple(
            r.ban
            for _, r in sorted(self._records.items())
            if r.ban is not None and r.last_ban is not None and now - r.last_ban < memory
        )

    def expire(self) -> list[DeviceId]:
        """The peers whose ban ended since the last call (their record's trust is set to
        ``probation_trust``); the ended ban stays as the record's latest."""
        now = self._clock.now()
        if now < self._next_end:
            return []
        ended: list[DeviceId] = []
        self._next_end = float("inf")
        for peer_id, record in self._records.items():
            if record.ban is None or record.ban.until <= self._swept:
                continue
            if record.ban.until <= now:
                record.trust = max(record.trust, self._config.probation_trust)
                ended.append(peer_id)
            else:
                self._next_end = min(self._next_end, record.ban.until)
        self._swept = now
        return ended

    def restore(self, bans: tuple[PeerBan, ...]) -> None:
        """Put back saved bans, in force or ended (times in this clock's base): a ban never
        gets shorter, the ban count never lower; the offence memory restarts now."""
        now = self._clock.now()
        for i, ban in enumerate(bans):
            if type(ban) is not PeerBan:
                raise InvalidArgument(f"bans[{i}] must be a PeerBan, got {type(ban).__name__}")
            check_int(ban.bans, f"bans[{i}].bans", minimum=1)
            check_int(ban.trust, f"bans[{i}].trust", minimum=0, maximum=MAX_TRUST)
            check_clock_time(ban.until, f"bans[{i}].until")
            record = self._record(ban.peer_id, now)
            record.bans, record.last_ban = max(record.bans, ban.bans), now
            in_force = ban.until > now
            trust = ban.trust if in_force else max(ban.trust, self._config.probation_trust)
            record.trust = min(record.trust, trust)
            if record.ban is None or record.ban.until < ban.until:
                record.ban = ban
            if in_force:
                self._next_end = min(self._next_end, ban.until)

    def _active(self, record: _Record, now: float) -> PeerBan | None:
        ban = record.ban
        return ban if ban is not None and ban.until > now else None

    def _record(self, peer_id: DeviceId, now: float) -> _Record:
        record = self._records.get(peer_id)
        if record is not None:
            return record
        if len(self._records) >= self._config.max_records:
            # Drop the record that matters least: unbanned before banned, the oldest first.
            def rank(item: tuple[DeviceId, _Record]) -> tuple[bool, float]:
                r = item[1]
                active = self._active(r, now)
                last = r.last_ban if r.last_ban is not None else -1e300
                return (active is not None, active.until if active else last)

            del self._records[min(self._records.items(), key=rank)[0]]
        record = self._records[peer_id] = _Record(self._default_trust)
        return record
