"""Every ```python block of each tutorial in docs/tutorials runs, in order, as one test."""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parent.parent / "docs" / "tutorials"
TUTORIALS = sorted(DOCS.glob("*.md"))


def blocks(path: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(encoding="utf-8"), re.S)


def test_tutorials_exist() -> None:
    assert len(TUTORIALS) >= 3


@pytest.mark.parametrize("path", TUTORIALS, ids=[p.stem for p in TUTORIALS])
def test_tutorial_blocks_run_in_order(path: Path) -> None:
    name = f"tutorial_{path.stem.replace('-', '_')}"
    module = types.ModuleType(name)
    sys.modules[name] = module  # dataclasses and pickling find the module, as in a script
    try:
        for index, block in enumerate(blocks(path), 1):
            code = compile(block, f"{path.name} block {index}", "exec", dont_inherit=True)
            exec(code, module.__dict__)
    finally:
        del sys.modules[name]
