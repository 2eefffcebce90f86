"""The README's performance table is what ``bench/readme_table.py`` writes from the results JSON.

Also checks the plots' "higher is better" normalisation the table shares.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import sys
from pathlib import Path

if importlib.util.find_spec("bench") is None:  # an editable install made before bench/ existed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.plots import advantage
from bench.readme_table import BEGIN, END, main, readme_table, render_readme

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "quick.json"


def test_the_readme_table_is_generated_from_the_checked_in_results() -> None:
    assert main(["--check"]) == 0, "run `python -m bench.readme_table` and commit README.md"


def test_a_changed_result_changes_the_table_and_check_fails(tmp_path: Path) -> None:
    doc = json.loads(RESULTS.read_text())
    row = next(r for g in doc["groups"] for r in g["rows"] if r.get("target") and r["met"])
    changed = copy.deepcopy(doc)
    target_row = next(
        r for g in changed["groups"] for r in g["rows"] if r["name"] == row["name"]
        and r["pinned"] == row["pinned"]
    )  # fmt: skip
    target_row["met"] = False
    assert readme_table(changed) != readme_table(doc)
    results = tmp_path / "quick.json"
    results.write_text(json.dumps(changed))
    readme = tmp_path / "README.md"
    readme.write_text((ROOT / "README.md").read_text())
    assert main(["--check", "--results", str(results), "--readme", str(readme)]) == 1
    assert main(["--results", str(results), "--readme", str(readme)]) == 0
    assert main(["--check", "--results", str(results), "--readme", str(readme)]) == 0
    text = readme.read_text()
    assert text.count(BEGIN) == 1 and text.count(END) == 1
    assert "**missed**" in text.split(BEGIN)[1]


def test_render_keeps_the_text_around_the_block() -> None:
    readme = f"intro\n{BEGIN}\nold\n{END}\noutro\n"
    assert render_readme(readme, "new") == f"intro\n{BEGIN}\nnew\n{END}\noutro\n"


def test_every_row_is_shown_so_that_higher_is_better() -> None:
    faster = {"ratio": 2.0, "ratio_min": 1.5, "ratio_max": 3.0, "higher_is_better": True}
    assert advantage(faster) == (2.0, 1.5, 3.0)
    slower_time = {"ratio": 2.0, "ratio_min": 1.0, "ratio_max": 4.0, "higher_is_better": False}
    assert advantage(slower_time) == (0.5, 0.25, 1.0)  # twice the time: half as good
    assert advantage({"ratio": 0.0, "ratio_min": 0.0, "ratio_max": 0.0}) is None
