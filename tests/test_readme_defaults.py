"""The README's "Running on an untrusted network" lists the knobs with the node's real defaults."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from aura_sync.node.config import NodeConfig

README = Path(__file__).resolve().parent.parent / "README.md"


def _section() -> str:
    text = README.read_text(encoding="utf-8")
    start = text.index("## Running on an untrusted network")
    return text[start : text.index("\n## ", start + 1)]


def test_every_knob_in_the_untrusted_network_section_has_its_real_default() -> None:
    blocks = re.findall(r"```toml\n(.*?)```", _section(), re.S)
    assert len(blocks) >= 3, "the section shows the transport, scoring and admission knobs"
    defaults = NodeConfig()
    checked = 0
    for block in blocks:
        for key, value in tomllib.loads(block).items():
            if isinstance(value, dict):
                for sub, sub_value in value.items():
                    real = getattr(getattr(defaults, key), sub)
                    assert sub_value == real, f"[{key}] {sub}: default {real!r}"
                    checked += 1
            else:
                assert value == getattr(defaults, key), f"{key} = {value!r}"
                checked += 1
    assert checked >= 40
