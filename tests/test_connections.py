"""Unit tests of the connection pool core (fake connector, ManualClock), its values
as messages and the pool requests."""

from __future__ import annotations

import dataclasses

import msgpack
import pytest

from aura_sync.effects import ManualClock
from aura_sync.errors import (
    ConfigError,
    ConnectFailed,
    DecodeError,
    InvalidArgument,
    InvalidHandle,
    PoolExhausted,
    WrongType,
)
from aura_sync.ids import DeviceId
from aura_sync.infrastructure.connections import (
    ConnectionMetadata,
    ConnectionPool,
    ConnectionState,
    PoolConfig,
    PoolStatistics,
)
from aura_sync.messages import Message, codec
from aura_sync.messages import pool as msgs

PEER_A = DeviceId.from_int(1)
PEER_B = DeviceId.from_int(2)
PEER_C = DeviceId.from_int(3)


class FakeConnection:
    """A connection whose health the test controls; counts its closes."""

    def __init__(self, peer_id: DeviceId, number: int) -> None:
        self.peer_id = peer_id
        self.session_id = f"session-{number}"
        self.healthy = True
        self.closes = 0
        self.health_checks = 0
        self.raise_on_check = False

    def is_healthy(self) -> bool:
        self.health_checks += 1
        if self.raise_on_check:
            raise OSError("socket gone")
        return self.healthy and self.closes == 0

    def close(self) -> None:
        self.closes += 1


class FakeConnector:
    """Opens FakeConnections; can be told to fail."""

    def __init__(self) -> None:
        self.made: list[FakeConnection] = []
        self.fail: Exception | None = None

    def connect(self, peer_id: DeviceId) -> FakeConnection:
        if self.fail is not None:
            raise self.fail
        conn = FakeConnection(peer_id, len(self.made) + 1)
        self.made.append(conn)
        return conn


def make_pool(**config: object) -> tuple[ConnectionPool, FakeConnector, ManualClock]:
    connector = FakeConnector()
    clock = ManualClock()
    pool = ConnectionPool(PoolConfig(**config), connector, clock=clock)  # type: ignore[arg-type]
    return pool, connector, clock


# --- reference behaviours of the Rust module ------------------------------------------


def test_acquire_release_acquire_reuses_one_connection() -> None:
    pool, connector, _ = make_pool()
    first = pool.acquire(PEER_A)
    pool.release(PEER_A, first)
    second = pool.acquire(PEER_A)
    assert len(connector.made) == 1
    assert second.connection is connector.made[0]
    assert second.connection_id == first.connection_id
    assert second.handle_id != first.handle_id
    assert second.reused and not first.reused
    stats = pool.statistics()
    assert (stats.connections_created, stats.connections_reused, stats.connections_released) == (
        1,
        1,
        1,
    )
    assert (stats.idle, stats.in_use, stats.total) == (0, 1, 1)


def test_pool_of_two_raises_pool_exhausted_on_third_acquire_and_counts_it() -> None:
    pool, connector, _ = make_pool(max_total_connections=2)
    pool.acquire(PEER_A)
    pool.acquire(PEER_B)
    with pytest.raises(PoolExhausted, match="max_total_connections=2"):
        pool.acquire(PEER_C)
    stats = pool.statistics()
    assert stats.connection_limit_hits == 1
    assert stats.total == 2
    assert len(connector.made) == 2


def test_idle_connection_past_idle_timeout_is_evicted() -> None:
    pool, connector, clock = make_pool(idle_timeout=300)
    pool.release(PEER_A, pool.acquire(PEER_A))
    clock.advance(299.5)
    assert pool.evict_expired() == 0
    clock.advance(0.5)
    assert pool.evict_expired() == 1
    assert connector.made[0].closes == 1
    stats = pool.statistics()
    assert (stats.connections_evicted, stats.connections_closed, stats.total) == (1, 1, 0)
    assert pool.connections() == ()


# --- limits --------------------------------------------------------------------------


def test_per_peer_limit() -> None:
    pool, _, _ = make_pool(max_connections_per_peer=2)
    pool.acquire(PEER_A)
    pool.acquire(PEER_A)
    with pytest.raises(PoolExhausted, match="max_connections_per_peer=2"):
        pool.acquire(PEER_A)
    pool.acquire(PEER_B)  # other peers are unaffected
    assert pool.statistics().connection_limit_hits == 1
    assert len(pool.get_connection_metadata(PEER_A)) == 2


def test_full_pool_reclaims_another_peers_idle_connection() -> None:
    pool, connector, _ = make_pool(max_total_connections=2)
    pool.release(PEER_A, pool.acquire(PEER_A))  # idle
    pool.acquire(PEER_B)  # in use
    handle = pool.acquire(PEER_C)
    assert handle.peer_id == PEER_C
    assert connector.made[0].closes == 1  # A's idle connection made room
    stats = pool.statistics()
    assert (stats.connections_evicted, stats.total, stats.connection_limit_hits) == (1, 2, 0)


def test_per_peer_limit_never_reclaims_other_peers_connections() -> None:
    pool, connector, _ = make_pool(max_total_connections=2, max_connections_per_peer=1)
    pool.release(PEER_B, pool.acquire(PEER_B))
    pool.acquire(PEER_A)
    with pytest.raises(PoolExhausted):
        pool.acquire(PEER_A)
    assert connector.made[0].closes == 0


def test_can_acquire_predicts_limits_without_counting() -> None:
    pool, _, _ = make_pool(max_total_connections=2, max_connections_per_peer=1)
    assert pool.can_acquire(PEER_A)
    handle = pool.acquire(PEER_A)
    assert not pool.can_acquire(PEER_A)
    pool.release(PEER_A, handle)
    assert pool.can_acquire(PEER_A)
    pool.acquire(PEER_B)
    assert pool.can_acquire(PEER_C)  # by reclaiming A's idle connection
    assert pool.statistics().connection_limit_hits == 0


# --- health and expiry --------------------------------------------------------------


def test_broken_idle_connection_is_never_handed_out() -> None:
    pool, connector, _ = make_pool()
    pool.release(PEER_A, pool.acquire(PEER_A))
    connector.made[0].healthy = False
    handle = pool.acquire(PEER_A)
    assert handle.connection is connector.made[1]
    assert connector.made[0].closes == 1
    assert pool.statistics().broken == 1


def test_health_check_that_raises_counts_as_broken() -> None:
    pool, connector, _ = make_pool()
    pool.release(PEER_A, pool.acquire(PEER_A))
    connector.made[0].raise_on_check = True
    assert pool.acquire(PEER_A).connection is connector.made[1]
    assert pool.statistics().broken == 1


def test_unhealthy_connection_is_closed_on_release() -> None:
    pool, connector, _ = make_pool()
    handle = pool.acquire(PEER_A)
    connector.made[0].healthy = False
    pool.release(PEER_A, handle)
    stats = pool.statistics()
    assert (stats.broken, stats.total, stats.connections_released) == (1, 0, 1)
    assert connector.made[0].closes == 1


def test_connection_past_max_lifetime_is_closed_on_release_and_not_reused() -> None:
    pool, connector, clock = make_pool(max_lifetime=100, idle_timeout=1000)
    handle = pool.acquire(PEER_A)
    clock.advance(100)
    pool.release(PEER_A, handle)
    assert connector.made[0].closes == 1
    assert pool.statistics().connections_evicted == 1
    pool.release(PEER_A, pool.acquire(PEER_A))
    clock.advance(99.9)
    third = pool.acquire(PEER_A)
    assert third.connection is connector.made[1]
    clock.advance(0.1)
    pool.release(PEER_A, third)
    assert pool.statistics().total == 0


def test_idle_connection_past_max_lifetime_is_evicted_and_not_reused() -> None:
    pool, connector, clock = make_pool(max_lifetime=100, idle_timeout=1000)
    handle = pool.acquire(PEER_A)
    clock.advance(90)
    pool.release(PEER_A, handle)
    clock.advance(10)
    second = pool.acquire(PEER_A)  # the old one is expired: closed, not reused
    assert second.connection is connector.made[1]
    assert connector.made[0].closes == 1
    assert pool.statistics().connections_evicted == 1


def test_expired_idle_connection_is_not_reused() -> None:
    pool, connector, clock = make_pool(idle_timeout=5)
    pool.release(PEER_A, pool.acquire(PEER_A))
    clock.advance(5)
    assert pool.acquire(PEER_A).connection is connector.made[1]
    assert connector.made[0].closes == 1


def test_idle_connections_are_reused_most_recent_first() -> None:
    pool, connector, clock = make_pool()
    first = pool.acquire(PEER_A)
    second = pool.acquire(PEER_A)
    pool.release(PEER_A, first)
    clock.advance(1)
    pool.release(PEER_A, second)
    assert pool.acquire(PEER_A).connection is connector.made[1]


def test_health_check_closes_broken_idle_connections() -> None:
    pool, connector, clock = make_pool(health_check_interval=60)
    held = pool.acquire(PEER_A)
    pool.release(PEER_B, pool.acquire(PEER_B))
    pool.release(PEER_C, pool.acquire(PEER_C))
    connector.made[1].healthy = False
    connector.made[0].healthy = False  # in use: left alone
    assert not pool.health_check_due()
    clock.advance(60)
    assert pool.health_check_due()
    assert pool.health_check() == 1
    assert not pool.health_check_due()
    assert [m.peer_id for m in pool.connections()] == [PEER_A, PEER_C]
    assert connector.made[0].closes == 0
    assert held.connection is connector.made[0]


def test_disabled_health_checks_do_not_call_is_healthy() -> None:
    pool, connector, _ = make_pool(health_checks_enabled=False)
    pool.release(PEER_A, pool.acquire(PEER_A))
    pool.release(PEER_A, pool.acquire(PEER_A))
    assert connector.made[0].health_checks == 0


# --- handles --------------------------------------------------------------------------


def test_handle_is_a_context_manager_that_releases_once() -> None:
    pool, connector, _ = make_pool()
    with pool.acquire(PEER_A) as handle:
        assert handle.connection is connector.made[0]
        assert pool.statistics().in_use == 1
    assert handle.released
    assert pool.statistics().idle == 1
    with pytest.raises(InvalidHandle, match="already released"):
        pool.release(PEER_A, handle)
    with pytest.raises(InvalidHandle):
        _ = handle.connection
    with pool.acquire(PEER_A) as again:
        again.release()  # explicit release inside the block: exit does not release again
    assert pool.statistics().connections_released == 2


def test_context_manager_releases_on_exception() -> None:
    pool, _, _ = make_pool()
    with pytest.raises(RuntimeError), pool.acquire(PEER_A):
        raise RuntimeError("sync failed")
    assert pool.statistics().idle == 1


def test_double_release_and_foreign_handles_are_invalid_and_change_nothing() -> None:
    pool, _, _ = make_pool()
    other, _, _ = make_pool()
    handle = pool.acquire(PEER_A)
    foreign = other.acquire(PEER_A)
    before = pool.statistics()
    with pytest.raises(InvalidHandle, match="another pool"):
        pool.release(PEER_A, foreign)
    with pytest.raises(InvalidHandle, match="not peer_id"):
        pool.release(PEER_B, handle)
    assert pool.statistics() == before
    pool.release(PEER_A, handle)
    after = pool.statistics()
    with pytest.raises(InvalidHandle, match=f"handle {handle.handle_id} was already released"):
        pool.release(PEER_A, handle)
    assert pool.statistics() == after


def test_close_discards_a_connection() -> None:
    pool, connector, _ = make_pool()
    handle = pool.acquire(PEER_A)
    pool.close(handle)
    assert connector.made[0].closes == 1
    stats = pool.statistics()
    assert (stats.total, stats.connections_closed, stats.connections_released) == (0, 1, 0)
    with pytest.raises(InvalidHandle):
        pool.release(PEER_A, handle)
    with pytest.raises(InvalidHandle):
        pool.close(handle)


def test_close_all_closes_idle_and_in_use_and_later_release_is_harmless() -> None:
    pool, connector, _ = make_pool()
    held = pool.acquire(PEER_A)
    pool.release(PEER_B, pool.acquire(PEER_B))
    assert pool.close_all() == 2
    assert [c.closes for c in connector.made] == [1, 1]
    assert pool.connections() == ()
    with pytest.raises(InvalidHandle, match="closed by the pool"):
        _ = held.connection
    pool.release(PEER_A, held)  # harmless
    assert [c.closes for c in connector.made] == [1, 1]
    with pytest.raises(InvalidHandle):
        pool.release(PEER_A, held)
    stats = pool.statistics()
    assert (stats.total, stats.connections_closed, stats.connections_released) == (0, 2, 1)
    pool.acquire(PEER_A)  # still usable
    assert pool.statistics().total == 1


# --- connector failures ------------------------------------------------------------


def test_connector_failure_is_a_clear_error_and_changes_nothing() -> None:
    pool, connector, _ = make_pool(max_total_connections=1)
    pool.release(PEER_B, pool.acquire(PEER_B))  # idle: would be reclaimed for A
    before = pool.statistics()
    connector.fail = ConnectionRefusedError("refused")
    with pytest.raises(ConnectFailed, match="ConnectionRefusedError: refused") as info:
        pool.acquire(PEER_A)
    assert isinstance(info.value.__cause__, ConnectionRefusedError)
    assert pool.statistics() == before
    assert connector.made[0].closes == 0  # B's idle connection was not sacrificed


def test_connector_failure_after_dropping_an_expired_idle_connection() -> None:
    # The one change a failed acquire makes: an expired idle connection of the
    # same peer met on the way is closed and counted (it could never be handed out).
    pool, connector, clock = make_pool(idle_timeout=5.0)
    pool.release(PEER_A, pool.acquire(PEER_A))
    clock.advance(5.0)
    connector.fail = ConnectionRefusedError("refused")
    with pytest.raises(ConnectFailed):
        pool.acquire(PEER_A)
    stats = pool.statistics()
    assert (stats.total, stats.connections_created, stats.connections_evicted) == (0, 1, 1)
    assert connector.made[0].closes == 1


def test_connector_returning_a_non_connection_is_rejected() -> None:
    class BadConnector:
        def connect(self, peer_id: DeviceId) -> object:
            return "not a connection"

    pool = ConnectionPool(PoolConfig(), BadConnector(), clock=ManualClock())  # type: ignore[arg-type]
    with pytest.raises(WrongType, match="not a connection"):
        pool.acquire(PEER_A)
    assert pool.statistics().total == 0


# --- metadata and statistics -------------------------------------------------------


def test_connection_metadata_snapshot() -> None:
    pool, _, clock = make_pool()
    clock.advance(10)
    handle = pool.acquire(PEER_A)
    clock.advance(5)
    pool.release(PEER_A, handle)
    clock.advance(1)
    pool.acquire(PEER_A)
    pool.release(PEER_B, pool.acquire(PEER_B))
    first, second = pool.connections()
    assert first == ConnectionMetadata(
        connection_id=1,
        peer_id=PEER_A,
        session_id="session-1",
        established_at=10.0,
        last_used=16.0,
        reuse_count=1,
        state=ConnectionState.IN_USE,
        healthy=True,
    )
    assert second.state is ConnectionState.IDLE
    with pytest.raises(dataclasses.FrozenInstanceError):
        first.reuse_count = 5  # type: ignore[misc]


def test_waits_and_timeouts_are_counted_for_the_actor() -> None:
    pool, _, _ = make_pool()
    pool.record_wait()
    pool.record_wait()
    pool.record_timeout()
    stats = pool.statistics()
    assert (stats.waits, stats.timeouts) == (2, 1)


# --- validation -----------------------------------------------------------------------


def test_pool_config_defaults() -> None:
    cfg = PoolConfig()
    assert (cfg.max_total_connections, cfg.max_connections_per_peer) == (100, 10)
    assert (cfg.idle_timeout, cfg.max_lifetime, cfg.acquire_timeout) == (300.0, 1800.0, 10.0)
    assert cfg.health_checks_enabled is True
    assert cfg.health_check_interval == 60.0
    assert type(PoolConfig(idle_timeout=5).idle_timeout) is float


@pytest.mark.parametrize(
    ("kwargs", "exc", "words"),
    [
        ({"max_total_connections": 0}, ConfigError, ["max_total_connections", "0"]),
        ({"max_connections_per_peer": -1}, ConfigError, ["max_connections_per_peer", "-1"]),
        ({"max_total_connections": 2.5}, WrongType, ["max_total_connections", "2.5"]),
        ({"idle_timeout": 0}, ConfigError, ["idle_timeout", "0"]),
        ({"idle_timeout": float("nan")}, ConfigError, ["idle_timeout", "nan"]),
        ({"max_lifetime": -5}, ConfigError, ["max_lifetime", "-5"]),
        ({"acquire_timeout": -0.1}, ConfigError, ["acquire_timeout", "-0.1"]),
        ({"acquire_timeout": "10"}, WrongType, ["acquire_timeout", "'10'"]),
        ({"health_check_interval": float("inf")}, ConfigError, ["health_check_interval", "inf"]),
        ({"health_checks_enabled": 1}, WrongType, ["health_checks_enabled", "1"]),
    ],
)
def test_bad_pool_config_names_field_and_value(
    kwargs: dict[str, object], exc: type[Exception], words: list[str]
) -> None:
    with pytest.raises(exc) as info:
        PoolConfig(**kwargs)  # type: ignore[arg-type]
    for word in words:
        assert word in str(info.value)
    assert issubclass(ConfigError, InvalidArgument)


def test_acquire_timeout_zero_is_allowed() -> None:
    assert PoolConfig(acquire_timeout=0).acquire_timeout == 0.0


def test_bad_pool_arguments() -> None:
    clock = ManualClock()
    with pytest.raises(WrongType, match="config"):
        ConnectionPool({}, FakeConnector(), clock=clock)  # type: ignore[arg-type]
    with pytest.raises(WrongType, match="connector"):
        ConnectionPool(PoolConfig(), object(), clock=clock)  # type: ignore[arg-type]
    with pytest.raises(WrongType, match="clock"):
        ConnectionPool(PoolConfig(), FakeConnector(), clock=5)  # type: ignore[arg-type]
    pool, _, _ = make_pool()
    with pytest.raises(WrongType, match=r"peer_id.*b'x'"):
        pool.acquire(b"x")  # type: ignore[arg-type]
    handle = pool.acquire(PEER_A)
    with pytest.raises(WrongType, match="handle"):
        pool.release(PEER_A, handle.handle_id)  # type: ignore[arg-type]
    with pytest.raises(WrongType, match="peer_id"):
        pool.release("peer", handle)  # type: ignore[arg-type]
    assert pool.statistics().in_use == 1


# --- messages: the core's values are the replies -------------------------------------


def test_core_values_round_trip_as_messages() -> None:
    pool, _, _ = make_pool()
    pool.release(PEER_B, pool.acquire(PEER_B))
    pool.acquire(PEER_A)
    values: list[Message] = [pool.statistics(), *pool.connections()]
    for value in values:
        decoded = codec.decode(codec.encode(value))
        assert decoded == value and type(decoded) is type(value)
    assert {m.state for m in pool.connections()} == {ConnectionState.IDLE, ConnectionState.IN_USE}


def test_pool_requests_round_trip_and_sit_in_the_pool_range() -> None:
    samples: list[Message] = [
        msgs.Acquire(PEER_A),
        msgs.Acquire(PEER_A, 2.5),
        msgs.Release(PEER_A, 7),
        msgs.CloseConnection(7),
        msgs.GetConnectionMetadata(PEER_B),
        *(getattr(msgs, n)() for n in ("EvictExpired", "HealthCheck", "CloseAll")),
        *(getattr(msgs, n)() for n in ("GetPoolStatistics", "ListConnections")),
        msgs.TotalConnections(),
        msgs.PeerCount(),
    ]
    for msg in samples:
        assert codec.decode(codec.encode(msg)) == msg
    declared = [c for c in vars(msgs).values() if getattr(c, "__module__", "") == msgs.__name__]
    assert len(declared) == 11
    for cls in declared:
        assert 0x60 <= cls.TAG <= 0x7F
    assert 0x60 <= ConnectionMetadata.TAG <= 0x7F and 0x60 <= PoolStatistics.TAG <= 0x7F
    wire = list(codec.to_wire(msgs.Release(PEER_A, 7)))
    wire[-1] = "7"
    with pytest.raises(DecodeError, match="handle_id"):  # the codec checks field types
        codec.decode(msgpack.packb(wire))


# --- the Rust names --------------------------------------------------------------------


def test_total_connections_peer_count_and_connection_metadata() -> None:
    pool, _, clock = make_pool()
    assert (pool.total_connections(), pool.peer_count()) == (0, 0)
    assert pool.get_connection_metadata(PEER_A) == ()
    first = pool.acquire(PEER_A)
    clock.advance(2)
    pool.acquire(PEER_A)
    pool.release(PEER_B, pool.acquire(PEER_B))
    assert (pool.total_connections(), pool.peer_count()) == (3, 2)
    mine = pool.get_connection_metadata(PEER_A)
    assert [m.connection_id for m in mine] == [1, 2]
    assert [m.established_at for m in mine] == [0.0, 2.0]
    assert all(m.peer_id == PEER_A and m.state is ConnectionState.IN_USE for m in mine)
    assert [m.state for m in pool.get_connection_metadata(PEER_B)] == [ConnectionState.IDLE]
    pool.close(first)
    assert (pool.total_connections(), pool.peer_count()) == (2, 2)
    pool.close_all()
    assert (pool.total_connections(), pool.peer_count()) == (0, 0)
    with pytest.raises(WrongType, match="peer_id"):
        pool.get_connection_metadata(b"\x01" * 16)  # type: ignore[arg-type]


def test_reclaimed_idle_connection_is_forgotten_by_its_peer() -> None:
    # regression (found by the stateful test): the reclaimed connection stayed in
    # its peer's idle set, and that peer's next acquire failed with a KeyError
    pool, connector, _ = make_pool(max_total_connections=3)
    b_first = pool.acquire(PEER_B)
    pool.acquire(PEER_A)
    pool.acquire(PEER_B)
    pool.release(PEER_B, b_first)
    pool.acquire(PEER_A)  # reclaims B's idle connection
    assert connector.made[0].closes == 1
    with pytest.raises(PoolExhausted, match="none idle"):
        pool.acquire(PEER_B)
    assert len(pool.get_connection_metadata(PEER_B)) == 1
