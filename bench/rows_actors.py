"""Row group 1, actor messaging: aura actors against a raw pykka ``ThreadingActor``.

Baselines, measured in every run, pinned to one CPU and unpinned:

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

import threading
from collections.abc import Callable
from queue import SimpleQueue
from typing import Any

import pykka

from bench._harness import Context, Stats, Target, optional_module

TELL_TARGET = Target(">=", 0.9)
ASK_TARGET = Target(">=", 1.3)

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


def measure_raw(ctx: Context) -> dict[str, Stats]:
    """The raw pykka tell/ask and SimpleQueue round trip, in the current affinity."""
    out: dict[str, Stats] = {}
    ref = _NullActor.start()
    try:
        out["tell"] = ctx.throughput(
            "raw pykka tell", tell_loop(ref.tell, lambda: ref.ask(_FLUSH), _PING)
        )
        out["ask"] = ctx.latency("raw pykka ask", lambda: ref.ask(_PING))
    finally:
        ref.stop()
    op, close = _simple_queue_pair()
    try:
        out["queue"] = ctx.latency("SimpleQueue round trip", op)
    finally:
        close()
    last = _NullActor.start()
    first = _ForwardActor.start(last)
    try:
        out["chain"] = ctx.latency("raw pykka two-hop ask", lambda: first.ask(_PING))
    finally:
        first.stop()
        last.stop()
    return out


def run(ctx: Context) -> None:
    """Record the raw baselines and, when aura actors exist, the aura rows."""
    for pinned, mode in ctx.affinity_modes():
        with mode():
            raw = measure_raw(ctx)
            ctx.compare(
                "SimpleQueue round trip vs raw pykka ask", raw["queue"], raw["ask"], pinned=pinned
            )
            _aura_rows(ctx, raw, pinned)


def _aura_rows(ctx: Context, raw: dict[str, Stats], pinned: bool) -> None:
    actors, why = optional_module("aura_sync.actors", "RateLimiterActor")
    if actors is None:
        ctx.unavailable(
            "aura actor tell vs raw pykka tell", why, baseline=raw["tell"], pinned=pinned
        )
        ctx.unavailable("aura actor ask vs raw pykka ask", why, baseline=raw["ask"], pinned=pinned)
        ctx.unavailable(
            "two-hop chain (protocol -> rate limiter) vs raw pykka",
            why,
            baseline=raw["chain"],
            pinned=pinned,
        )
        return
    ctx.unavailable("aura actor rows", "aura_sync.actors landed; rows not wired yet", pinned=pinned)
