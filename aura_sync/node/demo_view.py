"""What ``aura-sync demo`` shows: the live table, the ``--no-live`` progress lines, the summary.

Everything fits 80 columns (16 nodes, millions of ops): instead of digests
cut to fit, each node gets a convergence mark (``same`` as the journal the
others converge on, ``behind``, ``differs`` or ``down``); a node that refuses
to sync is starred.

Layer: runtime.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from rich import box
from rich.console import Group
from rich.table import Table
from rich.text import Text

if TYPE_CHECKING:
    from aura_sync.node.demo import DemoResult

__all__ = ["NodeView", "count", "live_table", "progress_line", "summary_table", "sync_marks"]


class NodeView(Protocol):
    """What the display reads from one node of the demo."""

    name: str
    down: bool
    refuses_sync: bool

    @property
    def health(self) -> Mapping[str, Any] | None: ...

    @property
    def ops(self) -> int: ...

    @property
    def own_ops(self) -> int: ...

    @property
    def digest(self) -> str: ...

    @property
    def restarts(self) -> int: ...

    @property
    def connected(self) -> int: ...

    @property
    def tracked(self) -> int: ...


def sync_marks(states: Sequence[tuple[bool, int, str]], expected: int) -> list[str]:
    """One mark per ``(down, ops, digest)``: ``same``, ``behind``, ``differs`` or ``down``.

    The reference journal is the digest held by most of the nodes that have
    all ``expected`` ops; a node with all of them but another digest differs.
    """
    complete = Counter(digest for down, ops, digest in states if not down and ops == expected)
    reference = complete.most_common(1)[0][0] if complete else None
    marks = []
    for down, ops, digest in states:
        if down:
            marks.append("down")
        elif ops == expected and digest == reference:
            marks.append("same")
        elif ops >= expected:
            marks.append("differs")
        else:
            marks.append("behind")
    return marks


def _marks(nodes: Sequence[NodeView], expected: int) -> list[str]:
    return sync_marks([(n.down, n.ops, n.digest) for n in nodes], expected)


def _sync(n: NodeView) -> Mapping[str, Any]:
    h = n.health or {}
    sync = h.get("sync", {})
    return sync if isinstance(sync, Mapping) else {}


def count(n: int) -> str:
    """A count in at most 5 characters: exact below 100 000, then ``123k``, ``10.0M``."""
    if n < 100_000:
        return str(n)
    if n < 1_000_000:
        return f"{n // 1000}k"
    if n < 100_000_000:
        return f"{n // 100_000 / 10:.1f}M"
    return f"{n // 1_000_000}M"


def _table(title: str, caption: str | None = None) -> Table:
    return Table(
        title=title,
        caption=caption,
        box=box.SIMPLE_HEAD,
        padding=(0, 1),
        collapse_padding=True,
        pad_edge=False,
        expand=False,
    )


def _name(name: str, refuses: bool) -> str:
    return name + ("*" if refuses else "")


def _refusing_note(refusing: bool) -> str:
    return "* refuses to sync (--force-divergence)" if refusing else ""


def live_table(
    title: str, nodes: Sequence[NodeView], expected: int, events: Iterable[str]
) -> Group:
    """The live display: one row per node, then the latest events."""
    table = _table(title, _refusing_note(any(n.refuses_sync for n in nodes)) or None)
    table.add_column("node", no_wrap=True)
    for col in ("state", "peers", "rounds\nok/fail", "ops", "own", "pulled\n/pushed", "restarts"):
        table.add_column(col, justify="right", no_wrap=True)
    table.add_column("journal", no_wrap=True)
    for n, mark in zip(nodes, _marks(nodes, expected), strict=True):
        sync = _sync(n)
        table.add_row(
            _name(n.name, n.refuses_sync),
            "down" if n.down else str((n.health or {}).get("status", "starting")),
            f"{n.connected}/{n.tracked}",
            f"{count(sync.get('rounds_succeeded', 0))}/{count(sync.get('rounds_failed', 0))}",
            count(n.ops),
            count(n.own_ops),
            f"{count(sync.get('ops_pulled', 0))}/{count(sync.get('ops_pushed', 0))}",
            str(n.restarts),
            mark,
        )
    return Group(table, Text("\n".join(events) or " ", style="dim"))


def progress_line(stamp: str, phase: str, nodes: Sequence[NodeView], expected: int) -> str:
    """One ``--no-live`` progress line: ops per node and how many hold the same journal."""
    marks = _marks(nodes, expected)
    ops = " ".join("down" if n.down else str(n.ops) for n in nodes)
    return (
        f"{stamp}  {phase}: ops {ops} of {expected}; "
        f"{marks.count('same')}/{len(nodes)} nodes hold the same journal"
    )


def summary_table(result: DemoResult) -> Table:
    """The closing table: one row per node, then the verdict in the caption."""
    verdict = "CONVERGED" if result.ok else "FAILED"
    caption = (
        f"{verdict}: {result.expected_ops} ops on {len(result.nodes)} nodes; "
        + (
            f"converged {result.converge_time:.2f} s after the last write; "
            if result.converge_time is not None
            else "did not converge; "
        )
        + f"lost ops: {result.lost_ops}; total {result.elapsed:.1f} s"
    )
    refusing = _refusing_note(any(n.refuses_sync for n in result.nodes))
    table = _table("aura-sync demo summary", caption + (f"\n{refusing}" if refusing else ""))
    table.add_column("node", no_wrap=True)
    table.add_column("device id", no_wrap=True)
    for col in ("written", "own\nkept", "ops", "restarts", "rounds\nok/fail", "exit"):
        table.add_column(col, justify="right", no_wrap=True)
    table.add_column("journal", no_wrap=True)
    marks = sync_marks([(False, n.ops, n.digest) for n in result.nodes], result.expected_ops)
    for n, mark in zip(result.nodes, marks, strict=True):
        table.add_row(
            _name(n.name, n.refuses_sync),
            n.device_id[:8],
            count(n.written),
            count(n.own_ops),
            count(n.ops),
            str(n.restarts),
            f"{count(n.rounds_ok)}/{count(n.rounds_failed)}",
            "-" if n.exit_code is None else str(n.exit_code),
            mark,
        )
    return table
