"""Every ```python block of the README runs, in order, as a test."""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)


def test_readme_has_examples() -> None:
    assert BLOCKS, "the README's API tour must contain runnable python blocks"


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_block_runs(index: int) -> None:
    # Run each block as its own module, as a user's script would be (no
    # __future__ flags inherited from this file; dataclasses can find the module).
    name = f"readme_block_{index + 1}"
    module = types.ModuleType(name)
    sys.modules[name] = module
    try:
        code = compile(BLOCKS[index], f"README.md block {index + 1}", "exec", dont_inherit=True)
        exec(code, module.__dict__)
    finally:
        del sys.modules[name]
