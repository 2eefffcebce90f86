"""The demo's display: convergence marks, and tables that fit 80 columns uncut."""

from __future__ import annotations

import io
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console

from aura_sync.node.demo import DemoResult, NodeOutcome
from aura_sync.node.demo_view import count, live_table, progress_line, summary_table, sync_marks


@dataclass
class FakeNode:
    name: str
    ops: int
    digest: str
    down: bool = False
    refuses_sync: bool = False
    own_ops: int = 250_000
    restarts: int = 12
    connected: int = 15
    tracked: int = 15
    health: Mapping[str, Any] | None = field(
        default_factory=lambda: {
            "status": "degraded",
            "sync": {
                "rounds_succeeded": 12345, "rounds_failed": 678,
                "ops_pulled": 999_999, "ops_pushed": 999_999,
            },
        }
    )  # fmt: skip


def render(renderable: Any) -> list[str]:
    out = io.StringIO()
    Console(file=out, width=80, force_terminal=False).print(renderable)
    return out.getvalue().splitlines()


def test_marks_name_the_journal_most_complete_nodes_share() -> None:
    states = [(False, 10, "a"), (False, 10, "a"), (False, 10, "b"), (False, 7, "c"), (True, 0, "")]
    assert sync_marks(states, 10) == ["same", "same", "differs", "behind", "down"]
    assert sync_marks([(False, 3, "x"), (False, 4, "y")], 5) == ["behind", "behind"]
    assert sync_marks([], 0) == []


def test_live_table_fits_80_columns_uncut_with_16_nodes_and_large_numbers() -> None:
    nodes = [FakeNode(f"node-{i}", 1_000_000, "d" * 64) for i in range(16)]
    nodes[3] = FakeNode("node-3", 999_000, "e" * 64, refuses_sync=True)
    nodes[5] = FakeNode("node-5", 0, "", down=True)
    lines = render(live_table("aura-sync demo: converging (12.3 s)", nodes, 1_000_000, ["e1"]))
    assert max(map(len, lines)) <= 80
    rows = [line for line in lines if line.lstrip().startswith("node-")]
    assert len(rows) == 16
    assert all("…" not in row for row in rows), "\n".join(lines)
    assert rows[0].split()[-1] == "same" and rows[5].split()[-1] == "down"
    assert rows[3].split()[0] == "node-3*" and rows[3].split()[-1] == "behind"
    assert any("refuses to sync" in line for line in lines)
    assert "999k/999k" in rows[0] and "12345/678" in rows[0] and " 1.0M " in rows[0]


def test_summary_fits_80_columns_and_marks_each_node() -> None:
    nodes = [
        NodeOutcome(f"node-{i}", "8948582b-944f-4008-1fad-8eb12bbf26b5", 250_000, 250_000,
                    1_000_000, "d" * 64 if i else "f" * 64, 3, 12345, 678, 0)
        for i in range(16)
    ]  # fmt: skip
    result = DemoResult(False, 0, True, 42.0, None, 1_000_000, nodes)
    lines = render(summary_table(result))
    rows = [line for line in lines if line.lstrip().startswith("node-")]
    assert max(map(len, lines)) <= 80 and all("…" not in row for row in rows), "\n".join(lines)
    assert rows[0].split()[-1] == "differs" and rows[1].split()[-1] == "same"
    assert any("FAILED" in line for line in lines)


def test_progress_line_counts_nodes_in_sync() -> None:
    nodes = [
        FakeNode("node-0", 5, "a"),
        FakeNode("node-1", 3, "b"),
        FakeNode("node-2", 0, "", down=True),
    ]
    line = progress_line(" 3.0s", "converging", nodes, 5)
    assert line == " 3.0s  converging: ops 5 3 down of 5; 1/3 nodes hold the same journal"


def test_counts_stay_within_five_characters() -> None:
    cases = {0: "0", 99_999: "99999", 100_000: "100k", 999_999: "999k", 1_000_000: "1.0M",
             10_000_000: "10.0M", 99_999_999: "99.9M", 123_456_789: "123M"}  # fmt: skip
    assert {n: count(n) for n in cases} == cases
