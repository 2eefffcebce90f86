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


# --- docs/configuration.md lists every key the loader accepts, with its real default ---------

CONFIG_DOC = DOCS.parent / "configuration.md"


def documented_keys() -> dict[str, dict[str, str]]:
    """``{section: {key: default cell}}`` from the tables of docs/configuration.md."""
    out: dict[str, dict[str, str]] = {}
    section = ""
    for line in CONFIG_DOC.read_text(encoding="utf-8").splitlines():
        heading = re.match(r"^## `\[(\w+)\]`", line)
        if heading:
            section = heading.group(1)
        elif line.startswith("## "):
            section = ""
        row = re.match(r"^\| `([a-z_]+)` \| ([^|]+) \|", line)
        if row:
            out.setdefault(section, {})[row.group(1)] = row.group(2).strip()
    return out


def _default(cell: str) -> object:
    import tomllib

    if cell == "(none)":
        return None
    return tomllib.loads(f"v = {cell.strip('`')}")["v"]


def test_configuration_reference_lists_every_key_with_its_default() -> None:
    import dataclasses

    from aura_sync.node import config as cfg

    defaults = cfg.NodeConfig()
    documented = documented_keys()
    hidden = {"refuse_sync", "cache_max_keys"}  # demo-only; [cache] max_keys
    top = {k for k in cfg._TOP_LEVEL if k not in hidden}
    assert set(documented[""]) == top
    for key in top:
        want = getattr(defaults, key)
        got = _default(documented[""][key])
        if key == "data_dir":
            assert got == "~/.local/share/aura-sync"
        elif key in ("bootstrap", "protocols"):
            assert got == list(want)
        else:
            assert got == want, key
    assert _default(documented["cache"]["max_keys"]) == defaults.cache_max_keys
    for section in cfg._SECTIONS:
        fields = {
            f.name for f in dataclasses.fields(getattr(defaults, section)) if f.init
        } - {key for s, key in cfg._FORBIDDEN_SECTION_KEYS if s == section}
        assert set(documented[section]) == fields, section
        # a section's defaults are its class's, but the node's own transport and limiter ones
        node_own = section in ("transport", "rate_limit")
        base = getattr(defaults, section) if node_own else cfg._SECTIONS[section]()
        for key in fields:
            want = getattr(base, key)
            assert _default(documented[section][key]) == want, f"{section}.{key}"
