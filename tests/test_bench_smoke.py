"""Smoke test of the benchmark suite: every row group runs at tiny size and is well formed.

Asserts the shape of the results (keys, positive figures, ratio =
measured / baseline, targets evaluated, files written), never a speed.
Rows whose subject has not landed (or whose baseline library is missing)
must be clean "unavailable" rows with a note; no row may be an error.
"""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path
from typing import Any

import pytest

if importlib.util.find_spec("bench") is None:  # an editable install made before bench/ existed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import latest_markdown, main, markdown_table, run_suite
from bench._harness import GROUPS, SIZES, Context, Target

ROW_KEYS = {
    "group",
    "name",
    "status",
    "pinned",
    "measured",
    "baseline",
    "ratio",
    "ratio_min",
    "ratio_max",
    "higher_is_better",
    "target",
    "met",
    "note",
}
STATS_KEYS = {"label", "unit", "median", "min", "max", "reps", "n_per_rep", "samples", "extra"}
UNITS = {"ops/s", "ns/op", "us/op", "bytes/item", "lost/sent"}


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    out = tmp_path_factory.mktemp("bench")
    doc = run_suite("tiny", out=out, plots=True)
    return doc, out


def _check_stats(stats: dict[str, Any]) -> None:
    assert set(stats) == STATS_KEYS
    assert stats["unit"] in UNITS
    assert stats["reps"] == len(stats["samples"]) >= 5
    assert stats["n_per_rep"] >= 1
    for value in stats["samples"]:
        assert math.isfinite(value)
        if stats["unit"] == "lost/sent":
            assert 0 <= value <= 1
        elif stats["unit"] != "bytes/item":  # tracemalloc growth may be ~0 for tiny items
            assert value > 0
    assert stats["min"] <= stats["median"] <= stats["max"]
    extra = stats["extra"]
    if "p50_us" in extra:
        assert 0 < extra["p50_us"] <= extra["p99_us"] <= extra["max_us"]


def test_header_describes_the_machine(results: tuple[dict[str, Any], Path]) -> None:
    doc, _ = results
    h = doc["header"]
    assert h["mode"] == "tiny"
    assert h["reps"] >= 5 and h["warmup"] == 1
    assert h["cpu_model"] and h["cpu_count"] >= 1
    assert h["python"].count(".") == 2
    assert h["packages"]["pykka"] and h["packages"]["msgpack"]
    assert [g["key"] for g in doc["groups"]] == [g.key for g in GROUPS]


@pytest.mark.parametrize("group", [g.key for g in GROUPS])
def test_group_rows_are_well_formed(results: tuple[dict[str, Any], Path], group: str) -> None:
    doc, _ = results
    (g,) = [g for g in doc["groups"] if g["key"] == group]
    assert g["rows"], f"group {group} recorded no rows"
    for row in g["rows"]:
        assert set(row) == ROW_KEYS
        assert row["group"] == group and row["name"]
        assert row["status"] in ("ok", "unavailable"), f"{row['name']}: {row['note']}"
        if row["status"] == "unavailable":
            assert row["note"], "a skipped row must say why"
            assert row["measured"] is None and row["ratio"] is None
            if row["baseline"] is not None:
                _check_stats(row["baseline"])
            continue
        _check_stats(row["measured"])
        _check_stats(row["baseline"])
        assert row["measured"]["unit"] == row["baseline"]["unit"]
        if row["baseline"]["median"] == 0:
            assert row["ratio"] is None
        else:
            assert row["ratio"] == pytest.approx(
                row["measured"]["median"] / row["baseline"]["median"], rel=1e-12
            )
            assert row["ratio_min"] <= row["ratio"] <= row["ratio_max"]
        if row["target"] is not None:
            t = row["target"]
            target = Target(t["op"], t["value"], t["on"])
            if t["on"] == "ratio":
                subject = row["ratio"]
            elif t["on"] in ("median", "max"):
                subject = row["measured"][t["on"]]
            else:
                subject = row["measured"]["extra"][t["on"]]
            assert row["met"] is target.met(subject)
        else:
            assert row["met"] is None


def test_threaded_rows_run_pinned_and_unpinned(results: tuple[dict[str, Any], Path]) -> None:
    doc, _ = results
    (actors,) = [g for g in doc["groups"] if g["key"] == "actors"]
    modes = {row["pinned"] for row in actors["rows"]}
    assert False in modes
    if hasattr(__import__("os"), "sched_setaffinity"):
        assert True in modes


def test_outputs_written(results: tuple[dict[str, Any], Path]) -> None:
    doc, out = results
    saved = json.loads((out / "tiny.json").read_text())
    assert saved["header"]["mode"] == "tiny"
    assert len(saved["groups"]) == len(GROUPS)
    md = (out / "tiny.md").read_text()
    assert md == markdown_table(doc) == latest_markdown(out, mode="tiny")
    for g in GROUPS:
        assert f"{g.number}. {g.title}" in md
    pngs = sorted(p.name for p in out.glob("tiny_*.png"))
    assert pngs, "no plots written"
    for p in out.glob("tiny_*.png"):
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_affinity_is_restored() -> None:
    import os

    if not hasattr(os, "sched_getaffinity"):
        pytest.skip("no CPU affinity on this platform")
    before = os.sched_getaffinity(0)
    ctx = Context(SIZES["tiny"])
    with ctx.pinned():
        assert len(os.sched_getaffinity(0)) == 1
    assert os.sched_getaffinity(0) == before


def test_cli_arguments(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--list"]) == 0
    assert "rate_limit" in capsys.readouterr().out
    assert main(["--only", "no_such_group", "--size", "tiny", "--out", str(tmp_path)]) == 2
    assert main(["--bogus"]) == 2
    assert main(["--quick", "--size", "full"]) == 2
    assert not list(tmp_path.iterdir())
    rc = main(
        ["--size", "tiny", "--only", "node,retry", "--out", str(tmp_path), "--no-plots", "-q"]
    )
    assert rc == 0
    doc = json.loads((tmp_path / "tiny.json").read_text())
    assert [g["key"] for g in doc["groups"]] == ["retry", "node"]
    assert not list(tmp_path.glob("*.png"))
