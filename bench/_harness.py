"""Measurement harness of the benchmark suite: timing, statistics, rows, output.

Every figure the suite reports is a *ratio against a baseline measured in the
same run*, with the absolute numbers beside it.  A measurement is one
warm-up repetition followed by at least five timed repetitions; the median and
the min-max of the repetitions are kept (and every sample, in the JSON).

Pieces:

- :class:`Size` - how long a repetition lasts and how big the problems are
  (``tiny`` for the smoke test, ``quick`` for ``--quick``, ``full``).
- :class:`Context` - handed to each row group's ``run(ctx)``: measuring
  helpers (:meth:`Context.throughput`, :meth:`Context.latency`,
  :meth:`Context.time_per_op`, :meth:`Context.bytes_per`), CPU pinning
  (:meth:`Context.affinity_modes`) and row recording
  (:meth:`Context.compare`, :meth:`Context.unavailable`).
- :class:`Stats` and :class:`Row` - the data model written to JSON.
- :func:`run_suite` - runs the row groups and writes JSON, Markdown and PNG
  plots (:mod:`bench.plots`); :func:`markdown_table` renders every row as Markdown
  (`bench/results/<mode>.md`); :mod:`bench.readme_table` writes the README's table.

Timing uses :func:`time.perf_counter_ns`; the garbage collector is disabled
during timed sections (for both sides of a comparison alike).  Threaded rows
run twice, pinned to one CPU with :func:`os.sched_setaffinity` and unpinned;
the original affinity is always restored.

Integration: ``bench/__main__.py`` (``python -m bench``) and the
``aura-sync bench`` command call :func:`bench.main`, which parses arguments
and calls :func:`run_suite`.  Row groups live in ``bench/rows_*.py``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import importlib
import importlib.metadata
import json
import math
import os
import platform
import statistics
import sys
import time
import traceback
import tracemalloc
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from bench.plots import write_plots

__all__ = [
    "GROUPS",
    "SIZES",
    "Context",
    "GroupSpec",
    "Row",
    "Size",
    "Stats",
    "Target",
    "latest_markdown",
    "machine_header",
    "markdown_table",
    "optional_module",
    "run_suite",
]

Unit = Literal["ops/s", "ns/op", "us/op", "bytes/item", "lost/sent"]
HIGHER_IS_BETTER: dict[str, bool] = {
    "ops/s": True,
    "ns/op": False,
    "us/op": False,
    "bytes/item": False,
    "lost/sent": False,
}


@dataclasses.dataclass(frozen=True)
class Size:
    """How much work one run does.

    ``target_s`` is the wall time of one timed repetition (seconds), ``reps``
    the number of timed repetitions (after one warm-up), ``scale`` scales
    problem sizes (peers, messages) relative to the full run.  The codec rows
    time ``max_codec_types`` message types (None: all) with repetitions of
    ``codec_target_s`` seconds (there are ~100 types, so the full run keeps
    them short).
    """

    name: str
    target_s: float
    reps: int
    scale: float
    max_codec_types: int | None
    codec_target_s: float


SIZES: dict[str, Size] = {
    "tiny": Size("tiny", 0.0015, reps=5, scale=0.01, max_codec_types=3, codec_target_s=0.0015),
    "quick": Size("quick", 0.05, reps=5, scale=0.1, max_codec_types=6, codec_target_s=0.05),
    "full": Size("full", 0.2, reps=7, scale=1.0, max_codec_types=None, codec_target_s=0.04),
}


@dataclasses.dataclass(frozen=True)
class GroupSpec:
    """One row group: ``key`` (for ``--only``), its number in the issue, a title.

    ``more`` names further modules (``bench.rows_<name>``) whose rows belong to the group.
    """

    key: str
    number: int
    title: str
    more: tuple[str, ...] = ()

    @property
    def modules(self) -> tuple[str, ...]:
        """The modules that implement the group (``bench.rows_<key>``, then ``more``)."""
        return tuple(f"bench.rows_{name}" for name in (self.key, *self.more))


GROUPS: tuple[GroupSpec, ...] = (
    GroupSpec("actors", 1, "Actor messaging"),
    GroupSpec("codec", 2, "Codec"),
    GroupSpec("rate_limit", 3, "Rate limiter core"),
    GroupSpec("retry", 4, "Retry success path"),
    GroupSpec("cores", 5, "Cache, peer selection, pool"),
    GroupSpec("supervision", 6, "Supervision"),
    GroupSpec("node", 7, "Node"),
    GroupSpec("memory", 8, "Memory"),
    GroupSpec("journal", 9, "Journal v2", more=("sync",)),
    GroupSpec("admission", 10, "Inbound admission"),
    GroupSpec("control", 11, "Control socket and CLI"),
)


@dataclasses.dataclass
class Stats:
    """One measured quantity over the timed repetitions.

    ``samples`` holds one value per repetition, in ``unit``; ``n`` is the
    number of operations per repetition; ``extra`` holds derived figures such
    as ``p50_us`` and ``p99_us`` for latency measurements.
    """

    label: str
    unit: str
    samples: list[float]
    n: int = 1
    extra: dict[str, float] = dataclasses.field(default_factory=dict)

    @property
    def median(self) -> float:
        """Median of the repetitions."""
        return float(statistics.median(self.samples))

    @property
    def min(self) -> float:
        """Smallest repetition."""
        return float(min(self.samples))

    @property
    def max(self) -> float:
        """Largest repetition."""
        return float(max(self.samples))

    def to_json(self) -> dict[str, Any]:
        """The JSON form (statistics plus every sample)."""
        return {
            "label": self.label,
            "unit": self.unit,
            "median": self.median,
            "min": self.min,
            "max": self.max,
            "reps": len(self.samples),
            "n_per_rep": self.n,
            "samples": list(self.samples),
            "extra": dict(self.extra),
        }


@dataclasses.dataclass(frozen=True)
class Target:
    """A goal on a row: ``subject >= value`` or ``subject <= value``.

    ``on`` names the subject: ``"ratio"`` (measured / baseline, the usual
    case), ``"median"`` or ``"max"`` (of the measured repetitions, in their
    unit) or a key of the
    measured ``extra`` figures such as ``"p99_us"`` (absolute goals like
    "p99 <= 2 ms" or "0 messages lost").
    """

    op: Literal[">=", "<="]
    value: float
    on: str = "ratio"

    def met(self, subject: float) -> bool:
        """Whether ``subject`` (the figure named by ``on``) satisfies the target."""
        return subject >= self.value if self.op == ">=" else subject <= self.value

    def subject(self, row: Row) -> float | None:
        """The figure of ``row`` this target is about (None if it is missing)."""
        if self.on == "ratio":
            return row.ratio
        if row.measured is None:
            return None
        if self.on in ("median", "max"):
            return row.measured.median if self.on == "median" else row.measured.max
        return row.measured.extra.get(self.on)

    def __str__(self) -> str:
        sign = "≥" if self.op == ">=" else "≤"
        if self.on == "ratio":
            return f"{sign} {self.value:g}x"
        return f"{self.on} {sign} {self.value:g}"


@dataclasses.dataclass
class Row:
    """One line of the results: a measurement against its baseline.

    ``ratio`` is ``measured.median / baseline.median`` in ``measured.unit``
    (so above 1 means faster for ``ops/s`` and slower for ``ns/op``).
    ``status`` is ``"ok"``, ``"unavailable"`` (the thing measured is not in
    the package yet, or a baseline library is missing; ``note`` says which)
    or ``"error"`` (the row raised; ``note`` holds the error).
    """

    group: str
    name: str
    status: Literal["ok", "unavailable", "error"]
    measured: Stats | None = None
    baseline: Stats | None = None
    target: Target | None = None
    pinned: bool | None = None
    note: str = ""

    @property
    def ratio(self) -> float | None:
        """``measured.median / baseline.median``, or None if either is missing."""
        if self.measured is None or self.baseline is None or self.baseline.median == 0:
            return None
        return self.measured.median / self.baseline.median

    @property
    def ratio_range(self) -> tuple[float, float] | None:
        """Conservative min-max of the ratio (worst and best pairing of repetitions)."""
        if self.ratio is None or self.measured is None or self.baseline is None:
            return None
        hi = self.measured.max / self.baseline.min if self.baseline.min else math.inf
        return (self.measured.min / self.baseline.max, hi)

    @property
    def met(self) -> bool | None:
        """Whether the target is met (None without a target or a ratio)."""
        if self.target is None:
            return None
        subject = self.target.subject(self)
        return None if subject is None else self.target.met(subject)

    def to_json(self) -> dict[str, Any]:
        """The JSON form of the row."""
        rr = self.ratio_range
        return {
            "group": self.group,
            "name": self.name,
            "status": self.status,
            "pinned": self.pinned,
            "measured": self.measured.to_json() if self.measured else None,
            "baseline": self.baseline.to_json() if self.baseline else None,
            "ratio": self.ratio,
            "ratio_min": rr[0] if rr else None,
            "ratio_max": rr[1] if rr else None,
            "higher_is_better": (
                HIGHER_IS_BETTER.get(self.measured.unit) if self.measured else None
            ),
            "target": (
                {"op": self.target.op, "value": self.target.value, "on": self.target.on}
                if self.target
                else None
            ),
            "met": self.met,
            "note": self.note,
        }


def optional_module(name: str, *attrs: str) -> tuple[Any, str]:
    """Import ``name`` if it exists and has ``attrs``; return ``(module, "")`` or ``(None, why)``.

    Used by row groups to skip cleanly what has not landed yet: a missing
    module, a module that fails to import, or one without the needed names.
    """
    try:
        module = importlib.import_module(name)
    except ModuleNotFoundError as exc:
        return None, f"not available yet: {exc.name} is not in this build"
    except Exception as exc:
        return None, f"not available: importing {name} failed ({type(exc).__name__}: {exc})"
    missing = [a for a in attrs if not hasattr(module, a)]
    if missing:
        return None, f"not available yet: {name} has no {', '.join(missing)}"
    return module, ""


# --- timing ---------------------------------------------------------------------------


@contextlib.contextmanager
def _gc_paused(pause: bool) -> Iterator[None]:
    was_enabled = gc.isenabled()
    if pause:
        gc.disable()
    try:
        yield
    finally:
        if pause and was_enabled:
            gc.enable()


def _timed(loop: Callable[[int], object], n: int, gc_off: bool) -> int:
    with _gc_paused(gc_off):
        t0 = time.perf_counter_ns()
        loop(n)
        return max(time.perf_counter_ns() - t0, 1)


def _percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100) of already sorted values."""
    if not sorted_values:
        return math.nan
    k = max(0, min(len(sorted_values) - 1, math.ceil(q / 100 * len(sorted_values)) - 1))
    return float(sorted_values[k])


class Context:
    """What a row group gets: the size, measuring helpers, pinning and the rows.

    Row groups call the measuring helpers, then :meth:`compare` to record a
    row (measured vs baseline) or :meth:`unavailable` to record a clean skip.
    """

    def __init__(self, size: Size, *, pin_cpu: int | None = None) -> None:
        self.size = size
        self.target_s = size.target_s
        self.rows: list[Row] = []
        self.group = ""
        self.profiles: dict[str, str] = {}
        self._orig_affinity: set[int] | None = None
        if hasattr(os, "sched_getaffinity"):
            self._orig_affinity = set(os.sched_getaffinity(0))
        if pin_cpu is None and self._orig_affinity:
            pin_cpu = max(self._orig_affinity)
        self.pin_cpu = pin_cpu

    # -- sizes ------------------------------------------------------------------
    def scaled(self, full: int, minimum: int = 1) -> int:
        """``full`` scaled by the run's size, at least ``minimum``."""
        return max(minimum, int(full * self.size.scale))

    @contextlib.contextmanager
    def rep_time(self, seconds: float) -> Iterator[None]:
        """Use repetitions of ``seconds`` (instead of ``size.target_s``) inside the block."""
        before = self.target_s
        self.target_s = seconds
        try:
            yield
        finally:
            self.target_s = before

    # -- pinning ----------------------------------------------------------------
    @contextlib.contextmanager
    def pinned(self) -> Iterator[None]:
        """Pin this thread (and the threads it starts) to one CPU; restore on exit."""
        if self._orig_affinity is None or self.pin_cpu is None:
            yield
            return
        before = set(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {self.pin_cpu})
        try:
            yield
        finally:
            os.sched_setaffinity(0, before)

    def affinity_modes(
        self,
    ) -> list[tuple[bool, Callable[[], contextlib.AbstractContextManager[None]]]]:
        """``[(True, pinned), (False, unpinned)]``: run a threaded row under each.

        Start the actors/threads *inside* the context: threads inherit the
        affinity of the thread that starts them.  Without affinity support
        only the unpinned mode is returned.
        """
        modes: list[tuple[bool, Callable[[], contextlib.AbstractContextManager[None]]]] = []
        if self._orig_affinity is not None and self.pin_cpu is not None:
            modes.append((True, self.pinned))
        modes.append((False, contextlib.nullcontext))
        return modes

    # -- measuring ---------------------------------------------------------------
    def calibrate(self, loop: Callable[[int], object], *, gc_off: bool = True) -> int:
        """Operations per repetition so that ``loop(n)`` takes about ``target_s`` seconds."""
        target_ns = self.target_s * 1e9
        n = 1
        while True:
            dt = _timed(loop, n, gc_off)
            if dt >= target_ns * 0.2 or n >= 50_000_000:
                break
            grow = target_ns * 0.3 / dt
            n = int(n * min(max(grow, 2.0), 100.0))
        return max(1, int(n * target_ns / dt))

    def throughput(
        self,
        label: str,
        loop: Callable[[int], object],
        *,
        n: int | None = None,
        gc_off: bool = True,
        ops_per_call: int = 1,
    ) -> Stats:
        """Operations per second of ``loop(n)``, which must do ``n`` operations.

        ``n`` is calibrated to the repetition time unless given.  One warm-up
        repetition, then ``size.reps`` timed ones.  ``ops_per_call`` multiplies
        the count when each of the ``n`` calls does several operations.
        """
        if n is None:
            n = self.calibrate(loop, gc_off=gc_off)
        _timed(loop, n, gc_off)  # warm-up
        samples = [n * ops_per_call * 1e9 / _timed(loop, n, gc_off) for _ in range(self.size.reps)]
        return Stats(label, "ops/s", samples, n=n * ops_per_call)

    def interleaved(
        self,
        loops: Mapping[str, Callable[[int], object]],
        *,
        unit: Literal["ops/s", "ns/op"] = "ops/s",
        gc_off: bool = True,
    ) -> dict[str, Stats]:
        """Measure several loops with their repetitions interleaved (A B C A B C ...).

        Each ``loops[label](n)`` does ``n`` operations; ``n`` is calibrated
        per loop.  Interleaving makes a comparison fair when the machine's
        load drifts during the run (other processes on a shared box): every
        side sees the same conditions.  Returns label -> :class:`Stats`.
        """
        sizes = {label: self.calibrate(loop, gc_off=gc_off) for label, loop in loops.items()}
        for label, loop in loops.items():
            _timed(loop, sizes[label], gc_off)  # warm-up
        samples: dict[str, list[float]] = {label: [] for label in loops}
        for _ in range(self.size.reps):
            for label, loop in loops.items():
                n = sizes[label]
                dt = _timed(loop, n, gc_off)
                samples[label].append(n * 1e9 / dt if unit == "ops/s" else dt / n)
        return {label: Stats(label, unit, samples[label], n=sizes[label]) for label in loops}

    def time_per_op(
        self,
        label: str,
        loop: Callable[[int], object],
        *,
        n: int | None = None,
        gc_off: bool = True,
    ) -> Stats:
        """Nanoseconds per operation of ``loop(n)`` (same protocol as :meth:`throughput`)."""
        if n is None:
            n = self.calibrate(loop, gc_off=gc_off)
        _timed(loop, n, gc_off)
        samples = [_timed(loop, n, gc_off) / n for _ in range(self.size.reps)]
        return Stats(label, "ns/op", samples, n=n)

    def latency(
        self,
        label: str,
        op: Callable[[], object],
        *,
        n: int | None = None,
        gc_off: bool = True,
        unit: Literal["ops/s", "us/op"] = "ops/s",
    ) -> Stats:
        """Time every call of ``op``: per-repetition ops/s (or µs/op) plus p50/p99 in µs.

        The percentiles are over every timed call of every repetition.
        """

        def loop(k: int) -> None:
            for _ in range(k):
                op()

        if n is None:
            n = self.calibrate(loop, gc_off=gc_off)
        clock = time.perf_counter_ns
        all_ns: list[int] = []
        samples: list[float] = []
        for rep in range(self.size.reps + 1):
            times = [0] * n
            with _gc_paused(gc_off):
                start = clock()
                for i in range(n):
                    t0 = clock()
                    op()
                    times[i] = clock() - t0
                total = max(clock() - start, 1)
            if rep == 0:
                continue  # warm-up
            all_ns.extend(times)
            samples.append(n * 1e9 / total if unit == "ops/s" else total / n / 1e3)
        all_ns.sort()
        extra = {
            "p50_us": _percentile(all_ns, 50) / 1e3,
            "p99_us": _percentile(all_ns, 99) / 1e3,
            "max_us": all_ns[-1] / 1e3,
            "calls": float(len(all_ns)),
        }
        return Stats(label, unit, samples, n=n, extra=extra)

    def interleaved_latency(
        self, ops: Mapping[str, Callable[[], object]], *, gc_off: bool = True
    ) -> dict[str, Stats]:
        """:meth:`latency` for several operations, repetitions interleaved (A B C A B C ...).

        Returns label -> :class:`Stats` in ops/s with ``p50_us``/``p99_us``
        over every timed call.
        """
        clock = time.perf_counter_ns

        def as_loop(op: Callable[[], object]) -> Callable[[int], None]:
            def loop(k: int) -> None:
                for _ in range(k):
                    op()

            return loop

        sizes = {label: self.calibrate(as_loop(op), gc_off=gc_off) for label, op in ops.items()}
        per_call: dict[str, list[int]] = {label: [] for label in ops}
        samples: dict[str, list[float]] = {label: [] for label in ops}
        for rep in range(self.size.reps + 1):
            for label, op in ops.items():
                n = sizes[label]
                times = [0] * n
                with _gc_paused(gc_off):
                    start = clock()
                    for i in range(n):
                        t0 = clock()
                        op()
                        times[i] = clock() - t0
                    total = max(clock() - start, 1)
                if rep == 0:
                    continue  # warm-up
                per_call[label].extend(times)
                samples[label].append(n * 1e9 / total)
        out: dict[str, Stats] = {}
        for label in ops:
            all_ns = sorted(per_call[label])
            extra = {
                "p50_us": _percentile(all_ns, 50) / 1e3,
                "p99_us": _percentile(all_ns, 99) / 1e3,
                "max_us": all_ns[-1] / 1e3,
                "calls": float(len(all_ns)),
            }
            out[label] = Stats(label, "ops/s", samples[label], n=sizes[label], extra=extra)
        return out

    def bytes_per(self, label: str, build: Callable[[int], object], n: int) -> Stats:
        """Bytes allocated per item by ``build(n)`` (kept alive while measured), via tracemalloc.

        ``build(n)`` creates ``n`` items and returns whatever keeps them
        alive; the traced memory growth divided by ``n`` is one sample.
        """
        started = not tracemalloc.is_tracing()
        if started:
            tracemalloc.start()
        samples: list[float] = []
        gc.collect()
        gc.freeze()  # existing objects out of the way: the collections below stay cheap
        try:
            for rep in range(self.size.reps + 1):
                gc.collect()
                before = tracemalloc.get_traced_memory()[0]
                keep = build(n)
                gc.collect()
                after = tracemalloc.get_traced_memory()[0]
                del keep
                if rep:
                    samples.append((after - before) / n)
        finally:
            gc.unfreeze()
            if started:
                tracemalloc.stop()
        return Stats(label, "bytes/item", samples, n=n)

    # -- recording --------------------------------------------------------------
    def compare(
        self,
        name: str,
        measured: Stats,
        baseline: Stats,
        *,
        target: Target | None = None,
        pinned: bool | None = None,
        note: str = "",
    ) -> Row:
        """Record a row: ``measured`` against ``baseline`` (same unit)."""
        if measured.unit != baseline.unit:
            raise ValueError(f"unit mismatch in {name!r}: {measured.unit} vs {baseline.unit}")
        row = Row(self.group, name, "ok", measured, baseline, target, pinned, note)
        self.rows.append(row)
        return row

    def unavailable(
        self, name: str, why: str, *, baseline: Stats | None = None, pinned: bool | None = None
    ) -> Row:
        """Record a clean skip (with the baseline figures if they were measured)."""
        row = Row(self.group, name, "unavailable", None, baseline, None, pinned, why)
        self.rows.append(row)
        return row

    def error(self, name: str, exc: BaseException) -> Row:
        """Record a row that raised (the run goes on)."""
        tb = traceback.extract_tb(exc.__traceback__)
        where = f" at {tb[-1].filename.rsplit('/', 1)[-1]}:{tb[-1].lineno}" if tb else ""
        row = Row(self.group, name, "error", note=f"{type(exc).__name__}: {exc}{where}")
        self.rows.append(row)
        return row


# --- header -------------------------------------------------------------------------

_PACKAGES = (
    "aura-sync",
    "pykka",
    "msgpack",
    "msgspec",
    "limits",
    "pyrate-limiter",
    "tenacity",
    "backoff",
    "matplotlib",
)


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def machine_header(size: Size, pin_cpu: int | None) -> dict[str, Any]:
    """The run's header: machine, Python, platform, package versions, mode, date."""
    versions: dict[str, str | None] = {}
    for pkg in _PACKAGES:
        try:
            versions[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            versions[pkg] = None
    affinity = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return {
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(affinity) if affinity is not None else os.cpu_count(),
        "pinned_cpu": pin_cpu,
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "packages": versions,
        "mode": size.name,
        "reps": size.reps,
        "warmup": 1,
        "rep_target_s": size.target_s,
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


# --- running -----------------------------------------------------------------------


def _select(only: Sequence[str] | None) -> list[GroupSpec]:
    if not only:
        return list(GROUPS)
    keys = {g.key for g in GROUPS}
    wanted: list[str] = []
    for item in only:
        wanted.extend(k.strip() for k in item.split(",") if k.strip())
    unknown = [k for k in wanted if k not in keys]
    if unknown:
        raise ValueError(
            f"unknown row group(s) {', '.join(unknown)}; known: {', '.join(g.key for g in GROUPS)}"
        )
    return [g for g in GROUPS if g.key in wanted]


def run_suite(
    size: Size | str = "quick",
    *,
    only: Sequence[str] | None = None,
    out: Path | str | None = None,
    plots: bool = True,
    pin_cpu: int | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run the selected row groups and (if ``out``) write JSON, Markdown and plots.

    Returns the results document (what the JSON file holds).  A group that
    fails to import or raises is recorded as an ``error`` row; the run goes on.
    Files written: ``<out>/<mode>.json``, ``<out>/<mode>.md`` and
    ``<out>/<mode>_<group>.png``.
    """
    if isinstance(size, str):
        if size not in SIZES:
            raise ValueError(f"unknown size {size!r}; known: {', '.join(SIZES)}")
        size = SIZES[size]
    groups = _select(only)
    ctx = Context(size, pin_cpu=pin_cpu)
    say = log or (lambda _msg: None)
    header = machine_header(size, ctx.pin_cpu)
    doc_groups: list[dict[str, Any]] = []
    t_start = time.perf_counter()
    for spec in groups:
        ctx.group = spec.key
        first = len(ctx.rows)
        t0 = time.perf_counter()
        say(f"[{spec.number}] {spec.title} ...")
        for name in spec.modules:
            try:
                importlib.import_module(name).run(ctx)
            except Exception as exc:
                ctx.error(f"{spec.title} (group, {name})", exc)
        elapsed = time.perf_counter() - t0
        rows = ctx.rows[first:]
        say(f"    {len(rows)} rows in {elapsed:.1f} s")
        doc_groups.append(
            {
                "key": spec.key,
                "number": spec.number,
                "title": spec.title,
                "elapsed_s": elapsed,
                "rows": [r.to_json() for r in rows],
            }
        )
    header["elapsed_s"] = time.perf_counter() - t_start
    doc: dict[str, Any] = {"header": header, "groups": doc_groups, "profiles": ctx.profiles}
    if out is not None:
        write_outputs(doc, Path(out), plots=plots)
    return doc


def write_outputs(doc: dict[str, Any], out: Path, *, plots: bool = True) -> list[Path]:
    """Write ``<mode>.json``, ``<mode>.md`` and (if ``plots``) one PNG per group."""
    out.mkdir(parents=True, exist_ok=True)
    mode = doc["header"]["mode"]
    written = []
    json_path = out / f"{mode}.json"
    json_path.write_text(json.dumps(doc, indent=1, allow_nan=True) + "\n", encoding="utf-8")
    written.append(json_path)
    md_path = out / f"{mode}.md"
    md_path.write_text(markdown_table(doc), encoding="utf-8")
    written.append(md_path)
    for key, text in doc.get("profiles", {}).items():
        prof_path = out / f"{mode}_{key}_profile.txt"
        prof_path.write_text(text, encoding="utf-8")
        written.append(prof_path)
    if plots:
        written.extend(write_plots(doc, out))
    return written


# --- markdown -------------------------------------------------------------------------


def _fmt_num(value: float) -> str:
    if value is None or not math.isfinite(value):
        return "n/a"
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= limit:
            return f"{value / limit:.3g}{suffix}"
    return f"{value:.3g}"


def _scale_time(ns: float) -> tuple[float, str]:
    """A divisor and unit that make a nanosecond figure readable."""
    for div, unit in ((1e9, "s"), (1e6, "ms"), (1e3, "µs")):
        if abs(ns) >= div:
            return div, unit
    return 1.0, "ns"


def _fmt_stats(stats: dict[str, Any] | None) -> str:
    if not stats:
        return "—"
    unit = stats["unit"]
    med, lo, hi = stats["median"], stats["min"], stats["max"]
    if unit in ("ns/op", "us/op"):
        mult = 1.0 if unit == "ns/op" else 1e3
        div, tunit = _scale_time(med * mult)
        f = mult / div
        text = f"{_g3(med * f)} {tunit}/op ({_g3(lo * f)}-{_g3(hi * f)})"
    else:
        text = f"{_fmt_num(med)} {unit} ({_fmt_num(lo)}-{_fmt_num(hi)})"
    extra = stats.get("extra") or {}
    if "p50_us" in extra:
        text += f"; p50 {_fmt_us(extra['p50_us'])}, p99 {_fmt_us(extra['p99_us'])}"
    return f"{stats['label']}: {text}"


def _fmt_us(us: float) -> str:
    div, unit = _scale_time(us * 1e3)
    return f"{_g3(us * 1e3 / div)} {unit}"


def _g3(x: float) -> str:
    """Three significant digits, never in exponent form for values below 1e6."""
    return f"{x:.0f}" if 1000 <= abs(x) < 1e6 else f"{x:.3g}"


def _fmt_ratio(row: dict[str, Any]) -> str:
    ratio = row["ratio"]
    if ratio is None:
        return "—"
    text = f"**{ratio:.3g}x** ({row['ratio_min']:.3g}-{row['ratio_max']:.3g})"
    higher = row.get("higher_is_better")
    if higher is not None and ratio > 0:
        gain = ratio if higher else 1 / ratio
        unit = (row.get("measured") or {}).get("unit")
        if unit == "bytes/item":
            word = "less memory" if gain >= 1 else "more memory"
        else:
            word = "faster" if gain >= 1 else "slower"
        text += f": {max(gain, 1 / gain):.3g}x {word}"
    return text


def _fmt_target(row: dict[str, Any]) -> str:
    target = row.get("target")
    if not target:
        return ""
    sign = "≥" if target["op"] == ">=" else "≤"
    mark = {True: "met", False: "**missed**", None: ""}[row["met"]]
    on = target.get("on", "ratio")
    goal = f"{sign} {target['value']:g}x" if on == "ratio" else f"{on} {sign} {target['value']:g}"
    return f"{goal} {mark}".strip()


def markdown_table(doc: dict[str, Any]) -> str:
    """The results as Markdown: a header paragraph and one table per row group.

    This is what the README's Performance section shows; it is also written
    to ``bench/results/<mode>.md``.
    """
    h = doc["header"]
    pkgs = ", ".join(f"{k} {v}" for k, v in h["packages"].items() if v)
    lines = [
        f"Machine: {h['cpu_model']}, {h['cpu_count']} CPUs ({h['cpus_usable']} usable), "
        f"Python {h['python']} ({h['python_implementation']}), {h['platform']}.  ",
        f"Mode `{h['mode']}`: 1 warm-up + {h['reps']} repetitions of ~{h['rep_target_s']:g} s "
        f"each; figures are median (min-max); ratio = measured / baseline from the same run; "
        f"pinned rows run on CPU {h['pinned_cpu']} only.  ",
        f"Run {h['date_utc']}, {h.get('elapsed_s', 0):.0f} s.  Packages: {pkgs}.",
        "",
    ]
    for group in doc["groups"]:
        lines.append(f"**{group['number']}. {group['title']}**")
        lines.append("")
        lines.append("| row | CPU | measured | baseline | ratio | target |")
        lines.append("|---|---|---|---|---|---|")
        for row in group["rows"]:
            cpu = {True: "pinned", False: "unpinned", None: ""}[row["pinned"]]
            if row["status"] != "ok":
                status = "skipped" if row["status"] == "unavailable" else "ERROR"
                base = _fmt_stats(row["baseline"])
                lines.append(f"| {row['name']} | {cpu} | {status}: {row['note']} | {base} | — | |")
                continue
            name = row["name"] + (f" ({row['note']})" if row["note"] else "")
            lines.append(
                f"| {name} | {cpu} | {_fmt_stats(row['measured'])} | "
                f"{_fmt_stats(row['baseline'])} | {_fmt_ratio(row)} | {_fmt_target(row)} |"
            )
        lines.append("")
    return "\n".join(lines)


def latest_markdown(results_dir: Path | str | None = None, mode: str = "quick") -> str:
    """The Markdown table of the latest ``<mode>`` results saved in ``results_dir``.

    ``results_dir`` defaults to ``bench/results`` next to this file.  For the
    README's Performance section.
    """
    base = Path(results_dir) if results_dir is not None else Path(__file__).parent / "results"
    doc = json.loads((base / f"{mode}.json").read_text(encoding="utf-8"))
    return markdown_table(doc)


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)
