"""Row group 1, actor messaging: aura actors against a raw pykka ``ThreadingActor``.

Everything is measured in every run, pinned to one CPU and unpinned, with
all actors started at once and the repetitions interleaved (so a load change
on the machine hits every side alike).  Baselines:

- raw pykka ``tell`` throughput: a ``ThreadingActor`` whose ``on_receive``
  does nothing; ``n`` tells then one ask to drain the mailbox (ops/s);
- raw pykka ``ask`` round trip: ops/s and p50/p99 latency (µs);
- a ``queue.SimpleQueue`` round trip to an echo thread: the floor a mailbox
  and reply path could reach (reported against the pykka ask).

Aura rows (when :mod:`aura_sync.actors` has landed): ``tell`` and ``ask`` per
infrastructure actor against the raw pykka figures (targets: tell >= 0.9x,
ask >= 1.3x), and a two-hop chain (protocol-style actor -> rate limiter ->
reply) against the same chain of raw pykka actors.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import threading
import types
from collections.abc import Callable
from queue import SimpleQueue
from typing import Any

import pykka

from bench._harness import Context, Target, optional_module

TELL_TARGET = Target(">=", 0.9)
ASK_TARGET = Target(">=", 1.3)

RAW_TELL = "raw pykka tell"
RAW_ASK = "raw pykka ask"
RAW_CHAIN = "raw pykka two-hop ask"
QUEUE = "SimpleQueue round trip"
AURA_CHAIN = "aura forwarder -> RateLimiterActor"

_FLUSH = ("flush",)
_PING = ("ping", 1)


class _NullActor(pykka.ThreadingActor):
    """The baseline: a pykka actor that does nothing with a message."""

    def on_receive(self, message: Any) -> Any:
        return None


class _ForwardActor(pykka.ThreadingActor):
    """Raw pykka first hop: asks the next actor and replies with its answer."""

    def __init__(self, nxt: Any) -> None:
        super().__init__()
        self._next = nxt

    def on_receive(self, message: Any) -> Any:
        return self._next.ask(message)


def tell_loop(
    tell: Callable[[Any], object], drain: Callable[[], object], msg: Any
) -> Callable[[int], None]:
    """``n`` tells of ``msg`` then ``drain()`` (an ask that returns once all were handled)."""

    def loop(n: int) -> None:
        for _ in range(n):
            tell(msg)
        drain()

    return loop


def _simple_queue_pair() -> tuple[Callable[[], object], Callable[[], None]]:
    req: SimpleQueue[Any] = SimpleQueue()
    rep: SimpleQueue[Any] = SimpleQueue()
    stop = object()

    def echo() -> None:
        while True:
            m = req.get()
            if m is stop:
                return
            rep.put(m)

    thread = threading.Thread(target=echo, name="bench-echo", daemon=True)
    thread.start()
    put, get = req.put, rep.get

    def op() -> object:
        put(_PING)
        return get()

    def close() -> None:
        req.put(stop)
        thread.join(5)

    return op, close


def run(ctx: Context) -> None:
    """Every actor row, pinned to one CPU and unpinned (actors started inside each mode)."""
    for pinned, mode in ctx.affinity_modes():
        with mode():
            _mode_rows(ctx, pinned)


# --- aura actors --------------------------------------------------------------------------


@dataclasses.dataclass
class ActorCase:
    """One aura actor to measure: how to start it, set it up, and the message to send."""

    label: str
    factory: Callable[[], Any]
    message: Any
    setup: tuple[Any, ...] = ()


def _noop_case(actors: Any) -> ActorCase:
    """An AuraActor whose handler does nothing: the messaging machinery alone."""

    @dataclasses.dataclass(frozen=True)
    class Noop(actors.LocalMessage):  # type: ignore[misc]
        """A local (never encoded) message with no fields."""

    class NullAura(actors.AuraActor):  # type: ignore[misc]
        @actors.handles(Noop)  # type: ignore[untyped-decorator]
        def _noop(self, msg: Any) -> None:
            return None

    return ActorCase("AuraActor no-op", NullAura, Noop())


def actor_cases(actors: Any) -> tuple[list[ActorCase], list[str]]:
    """The aura actors present in this build (and notes on those that are not)."""
    from aura_sync.ids import DeviceId

    cases = [_noop_case(actors)]
    missing: list[str] = []
    peer = DeviceId.from_int(42)

    def add(label: str, needs: str, make: Callable[[], ActorCase]) -> None:
        if not hasattr(actors, needs):
            missing.append(f"{label}: aura_sync.actors has no {needs} yet")
            return
        try:
            cases.append(make())
        except Exception as exc:
            missing.append(f"{label}: cannot set up ({type(exc).__name__}: {exc})")

    def cache_case() -> ActorCase:
        from aura_sync.messages.cache import IsFresh

        return ActorCase("CacheActor IsFresh", actors.CacheActor, IsFresh("doc/1", 5))

    def peers_case() -> ActorCase:
        from aura_sync.messages.peers import AddPeer, IsPeerAvailable

        return ActorCase(
            "PeerManagerActor IsPeerAvailable",
            actors.PeerManagerActor,
            IsPeerAvailable(peer),
            setup=(AddPeer(peer),),
        )

    def rate_case() -> ActorCase:
        rl = importlib.import_module("aura_sync.infrastructure.rate_limit")
        check = importlib.import_module("aura_sync.messages.rate_limit").CheckRateLimit
        config = rl.RateLimitConfig(
            global_ops_per_second=10**9,
            global_burst=10**9,
            peer_ops_per_second=10**9,
            peer_burst=10**9,
        )
        return ActorCase(
            "RateLimiterActor CheckRateLimit",
            lambda: actors.RateLimiterActor(config),
            check(peer, 1),
        )

    def pool_case() -> ActorCase:
        from aura_sync.infrastructure.connections import PoolConfig
        from aura_sync.messages.pool import EvictExpired
        from bench.rows_cores import _FakeConnector

        return ActorCase(
            "PoolActor EvictExpired",
            lambda: actors.PoolActor(PoolConfig(), _FakeConnector()),
            EvictExpired(),
        )

    add("CacheActor", "CacheActor", cache_case)
    add("PeerManagerActor", "PeerManagerActor", peers_case)
    add("RateLimiterActor", "RateLimiterActor", rate_case)
    add("PoolActor", "PoolActor", pool_case)
    return cases, missing


def _bound_ask(address: Any, message: Any) -> Callable[[], object]:
    ask = address.ask

    def op() -> object:
        return ask(message, 10.0)

    return op


_API = {
    # public name -> submodules of aura_sync.actors that may define it
    "spawn": ("address",),
    "DEFERRED": ("base", "_reply"),
    "AuraActor": ("base",),
    "handles": ("base",),
    "LocalMessage": ("base", "_mailbox"),
    "CacheActor": ("cache",),
    "PeerManagerActor": ("peer_manager", "peers"),
    "RateLimiterActor": ("rate_limiter", "rate_limit"),
    "PoolActor": ("pool", "connections"),
}
_REQUIRED = ("spawn", "AuraActor", "handles", "LocalMessage")


def actors_api() -> tuple[Any, str]:
    """The aura actor API as a namespace, or ``(None, why)`` if it has not landed.

    Names come from :mod:`aura_sync.actors` or, before the package
    re-exports them, from its submodules.
    """
    pkg, why = optional_module("aura_sync.actors")
    if pkg is None:
        return None, why
    ns = types.SimpleNamespace()
    for name, where in _API.items():
        obj = getattr(pkg, name, None)
        for sub in where:
            if obj is not None:
                break
            mod, _ = optional_module(f"aura_sync.actors.{sub}", name)
            obj = getattr(mod, name, None) if mod is not None else None
        if obj is not None:
            setattr(ns, name, obj)
    missing = [n for n in _REQUIRED if not hasattr(ns, n)]
    if missing:
        return None, f"not available yet: aura_sync.actors has no {', '.join(missing)}"
    return ns, ""


def _aura_chain(
    actors: Any, cleanup: list[Callable[[], object]]
) -> tuple[Callable[[], object] | None, str]:
    """An ask through a protocol-style forwarder to the rate limiter, or ``(None, why)``.

    The forwarder answers nothing itself: it hands the rate-limit check, with
    the caller's reply slot, to the RateLimiterActor's mailbox and returns
    ``DEFERRED``; the limiter's answer goes straight back to the caller.
    It uses ``ActorAddress.ask_with`` (the public non-blocking ask between
    actors) with the caller's own slot; builds without it fall back to the
    private ``_put``.
    """
    if not hasattr(actors, "RateLimiterActor"):
        return None, "not available yet: aura_sync.actors has no RateLimiterActor"
    if not hasattr(actors, "DEFERRED"):
        return None, "not available: aura_sync.actors has no DEFERRED"
    try:
        rl = importlib.import_module("aura_sync.infrastructure.rate_limit")
        check = importlib.import_module("aura_sync.messages.rate_limit").CheckRateLimit
    except ImportError as exc:
        return None, f"not available yet: {exc}"
    from aura_sync.ids import DeviceId

    config = rl.RateLimitConfig(
        global_ops_per_second=10**9,
        global_burst=10**9,
        peer_ops_per_second=10**9,
        peer_burst=10**9,
    )
    limiter = actors.spawn(lambda: actors.RateLimiterActor(config))
    cleanup.append(limiter.stop)
    if hasattr(limiter, "ask_with"):  # the public non-blocking actor-to-actor ask
        ask_with = limiter.ask_with

        def put(item: tuple[Any, Any]) -> None:
            ask_with(item[0], item[1])
    elif hasattr(limiter, "_put"):
        put = limiter._put
    else:
        return None, "not available: no way for an actor to forward a reply slot"

    @dataclasses.dataclass(frozen=True)
    class Forward(actors.LocalMessage):  # type: ignore[misc]
        """Ask the next hop, on behalf of the caller."""

        message: Any

    deferred = actors.DEFERRED

    class Forwarder(actors.AuraActor):  # type: ignore[misc]
        @actors.handles(Forward)  # type: ignore[untyped-decorator]
        def _forward(self, msg: Any) -> Any:
            put((msg.message, self.current_reply()))
            return deferred

    first = actors.spawn(Forwarder)
    cleanup.append(first.stop)
    request = Forward(check(DeviceId.from_int(7), 1))
    reply = first.ask(request, 10.0)
    if type(reply).__name__ == "ErrorReply":
        return None, f"the chain answers with an error: {reply!r}"
    return _bound_ask(first, request), ""


def _mode_rows(ctx: Context, pinned: bool) -> None:
    """Start the raw baselines and the aura actors, time them interleaved, record rows."""
    actors, why = actors_api()
    cases, missing = actor_cases(actors) if actors is not None else ([], [])
    cleanup: list[Callable[[], object]] = []
    tells: dict[str, Callable[[int], None]] = {}
    asks: dict[str, Callable[[], object]] = {}
    try:
        raw = _NullActor.start()
        cleanup.append(raw.stop)
        tells[RAW_TELL] = tell_loop(raw.tell, lambda: raw.ask(_FLUSH), _PING)
        asks[RAW_ASK] = lambda: raw.ask(_PING)
        op, close = _simple_queue_pair()
        cleanup.append(close)
        asks[QUEUE] = op
        last = _NullActor.start()
        cleanup.append(last.stop)
        first = _ForwardActor.start(last)
        cleanup.append(first.stop)
        asks[RAW_CHAIN] = lambda: first.ask(_PING)
        for case in cases:
            address = actors.spawn(case.factory)
            cleanup.append(address.stop)
            for msg in case.setup:
                address.ask(msg, 10.0)
            reply = address.ask(case.message, 10.0)
            if type(reply).__name__ == "ErrorReply":
                raise RuntimeError(f"{case.label}: the benchmark message fails: {reply!r}")
            ask = _bound_ask(address, case.message)
            tells[case.label] = tell_loop(address.tell, ask, case.message)
            asks[case.label] = ask
        chain_why = why
        if actors is not None:
            chain_op, chain_why = _aura_chain(actors, cleanup)
            if chain_op is not None:
                asks[AURA_CHAIN] = chain_op
        tell_stats = ctx.interleaved(tells)
        ask_stats = ctx.interleaved_latency(asks)
    finally:
        for stop in reversed(cleanup):
            with contextlib.suppress(Exception):
                stop()
    raw_tell, raw_ask = tell_stats[RAW_TELL], ask_stats[RAW_ASK]
    ctx.compare("SimpleQueue round trip vs raw pykka ask", ask_stats[QUEUE], raw_ask, pinned=pinned)
    if actors is None:
        ctx.unavailable("aura actor tell vs raw pykka tell", why, baseline=raw_tell, pinned=pinned)
        ctx.unavailable("aura actor ask vs raw pykka ask", why, baseline=raw_ask, pinned=pinned)
    for note in missing:
        label, why_missing = note.split(": ", 1)
        ctx.unavailable(f"{label} tell/ask", why_missing, pinned=pinned)
    for case in cases:
        t, a = tell_stats[case.label], ask_stats[case.label]
        name = case.label
        ctx.compare(
            f"{name} tell vs raw pykka tell", t, raw_tell, target=TELL_TARGET, pinned=pinned
        )
        ctx.compare(f"{name} ask vs raw pykka ask", a, raw_ask, target=ASK_TARGET, pinned=pinned)
    chain_name = "two-hop chain (protocol -> rate limiter) vs raw pykka"
    if AURA_CHAIN in ask_stats:
        ctx.compare(
            chain_name,
            ask_stats[AURA_CHAIN],
            ask_stats[RAW_CHAIN],
            pinned=pinned,
            note="first hop forwards the caller's reply slot",
        )
    else:
        ctx.unavailable(chain_name, chain_why, baseline=ask_stats[RAW_CHAIN], pinned=pinned)
