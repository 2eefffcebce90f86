"""Chaos: a load generator asks all four infrastructure actors while crashes are injected at
random (seeded).  Every ask ends within its timeout with a reply or a typed error, no
acknowledged update is lost, the supervisor's restart counts match the injected crashes, and
no actor thread is left behind.

Crashes go to seeded-random targets one at a time (the injector waits for each restart to
finish, while the load keeps running), so that the expected restart count of every child is
exact.  Pool requests either fail at once or wait (deferred replies), so waiters are pending
when the pool crashes or is restarted as a sibling."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import pytest
from test_actors_support import (  # noqa: F401  (fixture)
    FakeConnector,
    actor_threads,
    no_leftover_threads,
    peer,
    wait_until,
)

from aura_sync.effects import ManualClock
from aura_sync.errors import AskTimeout, AuraError
from aura_sync.ids import DeviceId
from aura_sync.infrastructure.connections import PoolConfig
from aura_sync.infrastructure.peers import PeerDiscoveryConfig
from aura_sync.infrastructure.rate_limit import RateLimitConfig
from aura_sync.messages.cache import GetEpochFloor, InvalidateKeys, IsFresh
from aura_sync.messages.faults import InjectCrash
from aura_sync.messages.peers import AddPeer, GetPeerTable
from aura_sync.messages.pool import Acquire
from aura_sync.messages.rate_limit import CheckRateLimit
from aura_sync.messages.supervision import ChildStatus, EventKind, SupervisionEvent
from aura_sync.supervisors.infrastructure import (
    CACHE,
    CHILD_IDS,
    PEER_MANAGER,
    POOL,
    RATE_LIMITER,
    Infrastructure,
    InfrastructureConfig,
)

pytestmark = pytest.mark.usefixtures("no_leftover_threads")

SEED = 20240611
ASK_TIMEOUT = 3.0
CRASHES = 24
WORKERS = 3


@dataclass
class Ledger:
    """What the load generator saw (guarded by ``lock``)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    invalidations: list[tuple[str, int]] = field(default_factory=list)
    peers_added: list[DeviceId] = field(default_factory=list)
    outcomes: Counter[str] = field(default_factory=Counter)
    slowest: float = 0.0
    hung: list[str] = field(default_factory=list)


def load(infra: Infrastructure, ledger: Ledger, worker: int, stop: threading.Event) -> None:
    """Ask the four actors in a seeded random mix until ``stop``; record acknowledgements."""
    rng = random.Random(SEED + worker)
    n = 0
    while not stop.is_set():
        n += 1
        op = rng.randrange(5)
        started = time.monotonic()
        try:
            if op == 0:
                key, epoch = f"w{worker}-k{rng.randrange(20)}", n
                infra.cache.call(InvalidateKeys((key,), epoch), ASK_TIMEOUT)
                with ledger.lock:
                    ledger.invalidations.append((key, epoch))
            elif op == 1:
                pid = peer(1000 * (worker + 1) + n)
                infra.peers.call(AddPeer(pid), ASK_TIMEOUT)
                with ledger.lock:
                    ledger.peers_added.append(pid)
            elif op == 2:
                infra.rate_limiter.call(CheckRateLimit(peer(rng.randrange(8))))
            elif op == 3:
                # timeout 0: PoolExhausted at once; 5 (virtual, frozen): a deferred reply
                wait = rng.choice((0.0, 5.0))
                with infra.pool.call(Acquire(peer(rng.randrange(2)), wait), wait + ASK_TIMEOUT):
                    infra.cache.call(IsFresh("held", n), ASK_TIMEOUT)  # hold it a little
            else:
                infra.cache.call(IsFresh(f"w{worker}-k{rng.randrange(20)}", n), ASK_TIMEOUT)
            outcome = "ok"
        except AskTimeout as exc:
            outcome = "hung"
            with ledger.lock:
                ledger.hung.append(str(exc))
        except AuraError as exc:  # ActorCrashed, PoolExhausted, InvalidHandle...: typed, expected
            outcome = type(exc).__name__
        elapsed = time.monotonic() - started
        with ledger.lock:
            ledger.outcomes[outcome] += 1
            ledger.slowest = max(ledger.slowest, elapsed)


def test_chaos_no_hang_no_loss_exact_restart_counts() -> None:
    threads_before = set(actor_threads())
    clock = ManualClock()
    connector = FakeConnector()
    config = InfrastructureConfig(
        rate_limit=RateLimitConfig(max_tracked_peers=64),
        peers=PeerDiscoveryConfig(max_tracked_peers=1_000_000),
        pool=PoolConfig(max_total_connections=2, max_connections_per_peer=1),
        intensity=10 * CRASHES,  # the virtual clock never moves: the window never slides
        shutdown=2.0,
    )
    infra = Infrastructure.start(config, connector=connector, clock=clock, fault_injection=True)
    failed: Counter[str] = Counter()
    failed_lock = threading.Lock()

    def on_event(event: SupervisionEvent) -> None:
        if event.kind is EventKind.FAILED:
            with failed_lock:
                failed[event.child_id] += 1

    infra.supervisor.subscribe(on_event)
    crash = {
        CACHE: lambda reason: infra.cache.ask(InjectCrash(reason), ASK_TIMEOUT),
        RATE_LIMITER: lambda reason: infra.rate_limiter.ask(InjectCrash(reason), ASK_TIMEOUT),
        PEER_MANAGER: lambda reason: infra.peers.ask(InjectCrash(reason), ASK_TIMEOUT),
        POOL: lambda reason: infra.pool.ask(InjectCrash(reason), ASK_TIMEOUT),
    }
    ledger = Ledger()
    stop = threading.Event()
    workers = [
        threading.Thread(target=load, args=(infra, ledger, w, stop), name=f"chaos-load-{w}")
        for w in range(WORKERS)
    ]
    injected: Counter[str] = Counter()
    rng = random.Random(SEED)
    try:
        for thread in workers:
            thread.start()
        wait_until(lambda: sum(ledger.outcomes.values()) >= 50, what="the load to start")
        for _ in range(CRASHES):
            target = rng.choice(CHILD_IDS)
            crash[target](f"chaos #{sum(injected.values()) + 1}")
            injected[target] += 1
            # One crash at a time: wait until the supervisor has dealt with it.
            wait_until(
                lambda t=target: infra.supervisor.restart_count(t) == injected[t],
                what=f"the restart of {target}",
            )
            wait_until(
                lambda: all(
                    c.status is ChildStatus.RUNNING for c in infra.supervisor.which_children()
                ),
                what="every child running again",
            )
            done = sum(ledger.outcomes.values())
            wait_until(lambda d=done: sum(ledger.outcomes.values()) >= d + 10, what="more load")
    finally:
        stop.set()
        for thread in workers:
            thread.join(10.0)
    assert not any(t.is_alive() for t in workers)

    # Nothing hung: every ask ended with a reply or a typed error within its timeout.
    assert ledger.hung == []
    assert ledger.slowest < ASK_TIMEOUT
    assert ledger.outcomes["ok"] > 100
    # Restart counts (supervisor events) match the injected crashes, child by child.
    assert sum(injected.values()) == CRASHES
    for child_id in CHILD_IDS:
        assert infra.supervisor.restart_count(child_id) == injected[child_id]
    with failed_lock:
        assert dict(failed) == {k: v for k, v in injected.items() if v}
    assert infra.supervisor.events()[EventKind.GAVE_UP] == 0
    # No acknowledged update was lost.
    floors: dict[str, int] = {}
    for key, epoch in ledger.invalidations:
        floors[key] = max(floors.get(key, 0), epoch)
    for key, epoch in floors.items():
        assert infra.cache.call(GetEpochFloor(key)) >= epoch, key
    table = {info.peer_id for info in infra.peers.call(GetPeerTable(), ASK_TIMEOUT).peers}
    assert set(ledger.peers_added) <= table
    assert ledger.invalidations and ledger.peers_added

    infra.stop()
    assert connector.open_connections() == []
    wait_until(
        lambda: not (set(actor_threads()) - threads_before), what="no leftover actor threads"
    )
    assert not any(
        t.name.startswith("aura-actor:") for t in set(threading.enumerate()) - threads_before
    )
