"""Effects: time, randomness and timers, injected into every core and actor.

Cores never read the system clock or the global random generator; they take a
:class:`Clock` and an :class:`Rng`.  Production code passes
:class:`SystemClock` and :class:`SystemRng`; tests pass :class:`ManualClock`
and :class:`SeededRng`, which makes every timing decision deterministic.

Timers
    ``Clock.call_at(deadline, callback)`` runs ``callback`` once the clock
    reaches ``deadline``.  :class:`SystemClock` runs due callbacks on one
    shared timer thread; :class:`ManualClock` runs them synchronously inside
    :meth:`ManualClock.advance`, in deadline order, with ``now()`` equal to
    each timer's deadline while it runs.  Callbacks must be quick and must not
    block (the usual callback is a ``tell`` into an actor's mailbox).

:class:`Scheduler` builds on timers to deliver a message to an actor at a
given time: the only way an actor waits.

Layer: effects.  Imports only values.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
import random
import threading
import time
from collections.abc import Callable, MutableSequence, Sequence
from typing import Any, Protocol, TypeVar, runtime_checkable

from aura_sync.errors import InvalidArgument, WrongType

__all__ = [
    "Clock",
    "ManualClock",
    "MessageTarget",
    "Rng",
    "Scheduler",
    "SeededRng",
    "SystemClock",
    "SystemRng",
    "TimerHandle",
    "check_seconds",
    "system_effects",
]

T = TypeVar("T")


def check_seconds(value: object, name: str, *, allow_zero: bool = True) -> float:
    """Return ``value`` as float seconds, or raise a clear error.

    Rejects non-numbers (and ``bool``), NaN, infinities and negative values
    (and zero when ``allow_zero`` is false).
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise WrongType(f"{name} must be a number of seconds, got {type(value).__name__} {value!r}")
    try:
        seconds = float(value)
    except OverflowError:  # an int too large for a float
        raise InvalidArgument(f"{name} must be a finite number of seconds, got {value!r}") from None
    if math.isnan(seconds) or math.isinf(seconds):
        raise InvalidArgument(f"{name} must be a finite number of seconds, got {value!r}")
    if seconds < 0 or (seconds == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise InvalidArgument(f"{name} must be {bound} seconds, got {value!r}")
    return seconds


class TimerHandle:
    """A pending timer; :meth:`cancel` prevents it from firing (idempotent)."""

    __slots__ = ("_callback", "cancelled", "deadline")

    def __init__(self, deadline: float, callback: Callable[[], None]) -> None:
        self.deadline = deadline
        self._callback: Callable[[], None] | None = callback
        self.cancelled = False

    def cancel(self) -> None:
        """Stop the timer from firing.  Safe to call more than once or after it fired."""
        self.cancelled = True
        self._callback = None

    def _fire(self) -> None:
        callback = self._callback
        self._callback = None
        if callback is not None and not self.cancelled:
            callback()


@runtime_checkable
class Clock(Protocol):
    """A monotonic clock in float seconds, with sleeping and timers."""

    def now(self) -> float:
        """Monotonic time in seconds (only differences are meaningful)."""
        ...

    def sleep(self, seconds: float) -> None:
        """Block the calling thread for ``seconds`` (never used inside an actor)."""
        ...

    async def sleep_async(self, seconds: float) -> None:
        """Suspend the calling coroutine for ``seconds``."""
        ...

    def call_at(self, deadline: float, callback: Callable[[], None]) -> TimerHandle:
        """Run ``callback`` once ``now() >= deadline``; returns a cancellable handle."""
        ...


class _TimerQueue:
    """A heap of timers ordered by (deadline, insertion order)."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, TimerHandle]] = []
        self._seq = itertools.count()

    def push(self, handle: TimerHandle) -> None:
        heapq.heappush(self._heap, (handle.deadline, next(self._seq), handle))

    def pop_due(self, now: float) -> TimerHandle | None:
        while self._heap:
            deadline, _, handle = self._heap[0]
            if handle.cancelled:
                heapq.heappop(self._heap)
                continue
            if deadline <= now:
                heapq.heappop(self._heap)
                return handle
            return None
        return None

    def next_deadline(self) -> float | None:
        while self._heap and self._heap[0][2].cancelled:
            heapq.heappop(self._heap)
        return self._heap[0][0] if self._heap else None

    def __len__(self) -> int:
        return sum(1 for _, _, h in self._heap if not h.cancelled)


class SystemClock:
    """The real monotonic clock (:func:`time.monotonic`).

    Timers run on one daemon thread per clock, started on first use.
    """

    def __init__(self) -> None:
        self._timers = _TimerQueue()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None

    def now(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        time.sleep(check_seconds(seconds, "seconds"))

    async def sleep_async(self, seconds: float) -> None:
        await asyncio.sleep(check_seconds(seconds, "seconds"))

    def call_at(self, deadline: float, callback: Callable[[], None]) -> TimerHandle:
        handle = TimerHandle(float(deadline), callback)
        with self._cond:
            self._timers.push(handle)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="aura-sync-timer", daemon=True
                )
                self._thread.start()
            # Wake the timer thread only if its wait must get shorter.
            if self._timers.next_deadline() == handle.deadline:
                self._cond.notify()
        return handle

    def _run(self) -> None:
        while True:
            with self._cond:
                handle = self._timers.pop_due(time.monotonic())
                if handle is None:
                    deadline = self._timers.next_deadline()
                    timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
                    self._cond.wait(timeout)
                    continue
            try:
                handle._fire()
            except Exception:  # a timer callback must never kill the timer thread
                import logging

                logging.getLogger(__name__).exception("timer callback failed")


class ManualClock:
    """A clock that moves only when told to; for deterministic tests.

    ``advance(dt)`` moves time forward and runs due timers in deadline order;
    ``sleep(d)`` is ``advance(d)`` (it returns at once); ``set(t)`` jumps to
    any time, backwards included, to test clock steps.  Thread-safe.
    """

    def __init__(self, start: float = 0.0) -> None:
        self._now = check_seconds(start, "start")
        self._lock = threading.RLock()
        self._timers = _TimerQueue()

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds`` and fire every timer that falls due."""
        dt = check_seconds(seconds, "seconds")
        with self._lock:
            target = self._now + dt
            while True:
                handle = self._timers.pop_due(target)
                if handle is None:
                    break
                self._now = max(self._now, handle.deadline)
                handle._fire()
            self._now = max(self._now, target)

    def set(self, t: float) -> None:
        """Jump to time ``t`` (may go backwards; fires due timers when going forward)."""
        if isinstance(t, bool) or not isinstance(t, int | float) or not math.isfinite(t):
            raise InvalidArgument(f"t must be a finite number of seconds, got {t!r}")
        with self._lock:
            if t >= self._now:
                self.advance(t - self._now)
            else:
                self._now = float(t)

    def sleep(self, seconds: float) -> None:
        self.advance(seconds)

    async def sleep_async(self, seconds: float) -> None:
        self.advance(seconds)
        await asyncio.sleep(0)

    def call_at(self, deadline: float, callback: Callable[[], None]) -> TimerHandle:
        handle = TimerHandle(float(deadline), callback)
        with self._lock:
            self._timers.push(handle)
        return handle

    def pending_timers(self) -> int:
        """How many timers are waiting to fire."""
        with self._lock:
            return len(self._timers)

    def next_deadline(self) -> float | None:
        """The deadline of the earliest pending timer, or None."""
        with self._lock:
            return self._timers.next_deadline()


@runtime_checkable
class Rng(Protocol):
    """A source of randomness (jitter, peer shuffles, simulated loss)."""

    def random(self) -> float:
        """A float in [0, 1)."""
        ...

    def uniform(self, a: float, b: float, /) -> float:
        """A float in [a, b]."""
        ...

    def randrange(self, stop: int, /) -> int:
        """An int in [0, stop)."""
        ...

    def shuffle(self, items: MutableSequence[Any], /) -> None:
        """Shuffle ``items`` in place."""
        ...

    def choice(self, items: Sequence[T], /) -> T:
        """One element of a non-empty sequence."""
        ...


class SeededRng(random.Random):
    """A reproducible :class:`Rng` (the standard Mersenne Twister, seeded)."""

    def __init__(self, seed: int = 0) -> None:
        if type(seed) is not int:
            raise WrongType(f"seed must be an int, got {type(seed).__name__} {seed!r}")
        super().__init__(seed)


class SystemRng(random.SystemRandom):
    """An :class:`Rng` backed by the operating system's entropy."""


class MessageTarget(Protocol):
    """Anything a message can be told to (an actor address or ref)."""

    def tell(self, message: Any) -> None: ...


class Scheduler:
    """Delivers a message to an actor at a given time; the only way an actor waits.

    Built on the clock's timers: under :class:`ManualClock` delivery happens
    inside ``advance()``, deterministically; under :class:`SystemClock` one
    timer thread delivers it.  Every scheduled delivery can be cancelled.
    """

    def __init__(self, clock: Clock) -> None:
        self.clock = clock

    def send_at(self, deadline: float, target: MessageTarget, message: Any) -> TimerHandle:
        """Tell ``message`` to ``target`` once the clock reaches ``deadline`` (seconds)."""
        if isinstance(deadline, bool) or not isinstance(deadline, int | float):
            raise WrongType(f"deadline must be seconds, got {type(deadline).__name__}")
        if not math.isfinite(deadline):
            raise InvalidArgument(f"deadline must be finite, got {deadline!r}")
        return self.clock.call_at(float(deadline), lambda: target.tell(message))

    def send_after(self, delay: float, target: MessageTarget, message: Any) -> TimerHandle:
        """Tell ``message`` to ``target`` after ``delay`` seconds (>= 0)."""
        delay = check_seconds(delay, "delay")
        return self.send_at(self.clock.now() + delay, target, message)

    def call_after(self, delay: float, callback: Callable[[], None]) -> TimerHandle:
        """Run ``callback`` (quick, non-blocking) after ``delay`` seconds."""
        delay = check_seconds(delay, "delay")
        return self.clock.call_at(self.clock.now() + delay, callback)


_system_lock = threading.Lock()
_system: tuple[SystemClock, Scheduler] | None = None


def system_effects() -> tuple[SystemClock, Scheduler]:
    """The process-wide :class:`SystemClock` and its :class:`Scheduler`.

    Everything that is not handed a clock uses this pair, so a process runs
    one timer thread however many actors, supervisors and nodes it hosts.
    """
    global _system
    with _system_lock:
        if _system is None:
            clock = SystemClock()
            _system = (clock, Scheduler(clock))
        return _system
