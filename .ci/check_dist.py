"""Check what the built wheel and sdist carry (run by ``.ci/run`` after ``python -m build``).

The wheel: the ``aura_sync`` package with ``py.typed`` and the licence, no tests.
The sdist: everything the whole test suite and the benchmarks need.
"""

from __future__ import annotations

import sys
import tarfile
import zipfile
from pathlib import Path

WHEEL_MUST = ("aura_sync/__init__.py", "aura_sync/py.typed", "aura_sync/node/metrics.py")
SDIST_MUST = (
    "LICENSE",
    "README.md",
    "CHANGELOG.md",
    "setup.cfg",
    "pyproject.toml",
    "MANIFEST.in",
    "ruff.toml",
    "tests/_actor_helpers.py",
    "tests/_node_helpers.py",
    "tests/_tls_helpers.py",
    "tests/test_readme.py",
    "bench/__main__.py",
    "bench/_harness.py",
    "bench/results/quick.json",
    "docs/conf.py",
    "docs/index.rst",
    "examples/chat.py",
)


def main(paths: list[str]) -> int:
    problems: list[str] = []
    for path in map(Path, paths):
        if path.suffix == ".whl":
            names = zipfile.ZipFile(path).namelist()
            problems += [f"{path.name}: missing {n}" for n in WHEEL_MUST if n not in names]
            if not any(
                n.endswith(".dist-info/licenses/LICENSE") or n.endswith("/LICENSE") for n in names
            ):
                problems.append(f"{path.name}: no LICENSE")
            problems += [
                f"{path.name}: ships {n}" for n in names if n.startswith(("tests/", "bench/"))
            ]
        else:
            with tarfile.open(path) as tar:
                names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
            problems += [f"{path.name}: missing {n}" for n in SDIST_MUST if n not in names]
            tests = [n for n in names if n.startswith("tests/test_")]
            print(f"check_dist: {path.name}: {len(names)} files, {len(tests)} test modules")
    for problem in problems:
        print(f"check_dist: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
