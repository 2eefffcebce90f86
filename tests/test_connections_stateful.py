"""Stateful property test of the connection pool (hypothesis RuleBasedStateMachine).

Random acquires, releases (plain and through ``with``), closes, double
releases, health flips, connector failures, clock advances, evictions,
health checks and close_all; after every step:

* never more than ``max_connections_per_peer`` per peer or
  ``max_total_connections`` overall;
* idle + in_use == total == len(connections()) and created - closed == total;
* every open connection is open on the transport, every forgotten one was
  closed exactly once;
* a handle is released at most once (a second release raises InvalidHandle);
* a broken or expired connection is never handed out.
"""

from __future__ import annotations

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from aura_sync.effects import ManualClock
from aura_sync.errors import ConnectFailed, InvalidHandle, PoolExhausted
from aura_sync.ids import DeviceId
from aura_sync.infrastructure.connections import (
    ConnectionHandle,
    ConnectionPool,
    ConnectionState,
    PoolConfig,
)

PEERS = [DeviceId.from_int(i) for i in range(1, 4)]
CONFIG = PoolConfig(
    max_total_connections=3,
    max_connections_per_peer=2,
    idle_timeout=10.0,
    max_lifetime=25.0,
    health_check_interval=5.0,
)


class FakeConnection:
    def __init__(self, peer_id: DeviceId, created_at: float) -> None:
        self.peer_id = peer_id
        self.created_at = created_at
        self.released_at: float | None = None
        self.healthy = True
        self.closes = 0

    def is_healthy(self) -> bool:
        return self.healthy and self.closes == 0

    def close(self) -> None:
        self.closes += 1


class FakeConnector:
    def __init__(self, clock: ManualClock) -> None:
        self.clock = clock
        self.made: list[FakeConnection] = []
        self.fail = False

    def connect(self, peer_id: DeviceId) -> FakeConnection:
        if self.fail:
            raise ConnectionRefusedError(f"{peer_id} refused")
        conn = FakeConnection(peer_id, self.clock.now())
        self.made.append(conn)
        return conn


class PoolMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.clock = ManualClock()
        self.connector = FakeConnector(self.clock)
        self.pool = ConnectionPool(CONFIG, self.connector, clock=self.clock)
        self.held: list[ConnectionHandle] = []
        self.retired: list[ConnectionHandle] = []

    # --- helpers ---

    def _check_handed_out(self, handle: ConnectionHandle, peer: DeviceId) -> None:
        conn = handle.connection
        assert isinstance(conn, FakeConnection)
        now = self.clock.now()
        assert handle.peer_id == peer == conn.peer_id
        assert conn.healthy and conn.closes == 0, "broken connection handed out"
        assert now - conn.created_at < CONFIG.max_lifetime, "too old connection handed out"
        if handle.reused:
            assert conn.released_at is not None
            assert now - conn.released_at < CONFIG.idle_timeout, "idle-expired connection reused"
        assert all(h.connection_id != handle.connection_id for h in self.held if not h.released)
        self.held.append(handle)

    def _closed_by_pool(self, handle: ConnectionHandle) -> bool:
        """A held (never released) handle whose connection the pool no longer has."""
        return handle.connection_id not in {m.connection_id for m in self.pool.connections()}

    def _retire(self, handle: ConnectionHandle) -> None:
        self.held.remove(handle)
        self.retired.append(handle)

    # --- rules ---

    @rule(peer=st.sampled_from(PEERS))
    def acquire(self, peer: DeviceId) -> None:
        try:
            handle = self.pool.acquire(peer)
        except PoolExhausted:
            stats = self.pool.statistics()
            peer_open = len(self.pool.get_connection_metadata(peer))
            peer_full = peer_open >= CONFIG.max_connections_per_peer
            pool_full = stats.total >= CONFIG.max_total_connections and stats.idle == 0
            assert peer_full or pool_full, "PoolExhausted while a connection could be opened"
            return
        self._check_handed_out(handle, peer)

    @rule(peer=st.sampled_from(PEERS))
    def acquire_with_failing_connector(self, peer: DeviceId) -> None:
        before_ids = {m.connection_id for m in self.pool.connections()}
        created = self.pool.statistics().connections_created
        self.connector.fail = True
        try:
            handle = self.pool.acquire(peer)
        except (ConnectFailed, PoolExhausted):
            after_ids = {m.connection_id for m in self.pool.connections()}
            assert after_ids <= before_ids
            assert self.pool.statistics().connections_created == created
            return
        finally:
            self.connector.fail = False
        assert handle.reused  # only an idle connection can be handed out
        self._check_handed_out(handle, peer)

    @precondition(lambda self: bool(self.held))
    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        handle = data.draw(st.sampled_from(self.held))
        conn = None if self._closed_by_pool(handle) else handle.connection
        self.pool.release(handle.peer_id, handle)
        if isinstance(conn, FakeConnection):
            conn.released_at = self.clock.now()
            too_old = self.clock.now() - conn.created_at >= CONFIG.max_lifetime
            pooled = handle.connection_id in {m.connection_id for m in self.pool.connections()}
            assert pooled == (conn.healthy and not too_old), "bad connection pooled on release"
        self._retire(handle)

    @precondition(lambda self: bool(self.held))
    @rule(data=st.data())
    def use_in_with_block(self, data: st.DataObject) -> None:
        handle = data.draw(st.sampled_from(self.held))
        conn = None if self._closed_by_pool(handle) else handle.connection
        with handle:
            pass
        if isinstance(conn, FakeConnection):
            conn.released_at = self.clock.now()
        self._retire(handle)

    @precondition(lambda self: bool(self.held))
    @rule(data=st.data())
    def close(self, data: st.DataObject) -> None:
        handle = data.draw(st.sampled_from(self.held))
        self.pool.close(handle)
        self._retire(handle)

    @precondition(lambda self: bool(self.retired))
    @rule(data=st.data())
    def release_again(self, data: st.DataObject) -> None:
        handle = data.draw(st.sampled_from(self.retired))
        before = self.pool.statistics()
        try:
            self.pool.release(handle.peer_id, handle)
        except InvalidHandle:
            pass
        else:
            raise AssertionError("a handle was released twice")
        assert self.pool.statistics() == before

    @precondition(lambda self: bool(self.connector.made))
    @rule(data=st.data())
    def flip_health(self, data: st.DataObject) -> None:
        conn = data.draw(st.sampled_from(self.connector.made))
        conn.healthy = not conn.healthy

    @rule(seconds=st.sampled_from([0.0, 1.0, 4.0, 9.5, 10.0, 12.0, 26.0]))
    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @rule()
    def evict_expired(self) -> None:
        now = self.clock.now()
        expired = {
            m.connection_id
            for m in self.pool.connections()
            if m.state is ConnectionState.IDLE
            and (
                now - m.last_used >= CONFIG.idle_timeout
                or now - m.established_at >= CONFIG.max_lifetime
            )
        }
        assert self.pool.evict_expired() == len(expired)
        assert not expired & {m.connection_id for m in self.pool.connections()}

    @rule()
    def health_check(self) -> None:
        self.pool.health_check()
        for meta in self.pool.connections():
            if meta.state is ConnectionState.IDLE:
                assert meta.healthy

    @precondition(lambda self: self.pool.statistics().total > 2)
    @rule()
    def close_all(self) -> None:
        total = self.pool.statistics().total
        assert self.pool.close_all() == total
        assert all(self._closed_by_pool(h) for h in self.held)
        for handle in self.held:
            with pytest.raises(InvalidHandle, match="closed by the pool"):
                _ = handle.connection

    # --- invariants ---

    @invariant()
    def limits_hold(self) -> None:
        per_peer: dict[DeviceId, int] = {}
        for meta in self.pool.connections():
            per_peer[meta.peer_id] = per_peer.get(meta.peer_id, 0) + 1
        assert all(n <= CONFIG.max_connections_per_peer for n in per_peer.values())
        assert self.pool.total_connections() <= CONFIG.max_total_connections
        assert self.pool.peer_count() == len(per_peer)
        for peer in PEERS:
            assert len(self.pool.get_connection_metadata(peer)) == per_peer.get(peer, 0)

    @invariant()
    def counts_agree(self) -> None:
        stats = self.pool.statistics()
        metas = self.pool.connections()
        assert stats.idle + stats.in_use == stats.total == len(metas)
        assert stats.connections_created - stats.connections_closed == stats.total
        assert stats.idle == sum(m.state is ConnectionState.IDLE for m in metas)
        live = [h for h in self.held if not self._closed_by_pool(h)]
        assert stats.in_use == len(live)
        assert {h.connection_id for h in live} == {
            m.connection_id for m in metas if m.state is ConnectionState.IN_USE
        }
        assert not any(h.released for h in self.held)

    @invariant()
    def transport_state_matches(self) -> None:
        open_ids = {m.connection_id for m in self.pool.connections()}
        assert len(open_ids) == self.pool.total_connections()
        # connection ids are given out in creation order, starting at 1
        for number, conn in enumerate(self.connector.made, start=1):
            if number in open_ids:
                assert conn.closes == 0
            else:
                assert conn.closes == 1, "a forgotten connection was not closed exactly once"


PoolMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)
TestPool = PoolMachine.TestCase
