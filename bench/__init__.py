"""The aura-sync benchmark suite: every hot path against the baseline a user would pick.

Run it with ``python -m bench`` (full), ``python -m bench --quick`` (under two
minutes on two cores) or ``aura-sync bench``.  Each figure is a ratio against a
baseline measured in the same run (raw pykka, msgpack, msgspec, ``limits``,
pyrate-limiter, tenacity, backoff, plain dicts), with absolute numbers
beside it.  Results go to ``bench/results/<mode>.json``, ``<mode>.md`` and
``<mode>_<group>.png``.

Public entry points:

- :func:`main` - the command line (``main(argv) -> exit status``).
- :func:`run_suite` - run groups programmatically, returns the results document.
- :func:`markdown_table` / :func:`latest_markdown` - every row as Markdown
  (``bench/results/<mode>.md``); the README's Performance table is written
  from ``quick.json`` by ``python -m bench.readme_table``.

Row groups (``--only``): ``actors``, ``codec``, ``rate_limit``, ``retry``,
``cores``, ``supervision``, ``node``, ``memory``; rows whose subject has not
landed in the package are recorded as "not available", never a crash.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from bench._harness import GROUPS, SIZES, latest_markdown, markdown_table, run_suite

__all__ = ["DEFAULT_OUT", "latest_markdown", "main", "markdown_table", "run_suite"]

DEFAULT_OUT = Path(__file__).parent / "results"
"""Where results are written unless ``--out`` says otherwise."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="aura-sync benchmarks: ratios against baselines measured in the same run.",
    )
    parser.add_argument(
        "--quick", action="store_true", help="short run (same as --size quick; < 2 min on 2 cores)"
    )
    parser.add_argument(
        "--size",
        choices=sorted(SIZES),
        default=None,
        help="run size: tiny (smoke test), quick, full (default: full)",
    )
    parser.add_argument(
        "--only",
        action="append",
        metavar="GROUP",
        help=f"run only these row groups (repeat or comma-separate): "
        f"{', '.join(g.key for g in GROUPS)}",
    )
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help=f"output directory (default {DEFAULT_OUT})"
    )
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    parser.add_argument(
        "--cpu", type=int, default=None, help="CPU to pin threaded rows to (default: the last)"
    )
    parser.add_argument("--list", action="store_true", help="list the row groups and exit")
    parser.add_argument("-q", "--quiet", action="store_true", help="print only the table")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark command line; returns the process exit status.

    ``argv`` excludes the program name (``None`` reads ``sys.argv[1:]``).
    Exit status 0 when every row ran (skipped "not available" rows included),
    1 when a row raised, 2 on bad arguments.
    """
    import sys

    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    if args.list:
        for g in GROUPS:
            print(f"{g.key:12s} {g.number}. {g.title}")
        return 0
    if args.quick and args.size not in (None, "quick"):
        print("--quick and --size disagree", file=sys.stderr)
        return 2
    size = "quick" if args.quick else (args.size or "full")
    log = None if args.quiet else (lambda m: print(m, file=sys.stderr, flush=True))
    try:
        doc = run_suite(
            size, only=args.only, out=args.out, plots=not args.no_plots, pin_cpu=args.cpu, log=log
        )
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(markdown_table(doc))
    if not args.quiet:
        print(f"results written to {args.out}", file=sys.stderr)
        if size == "quick" and not args.only:
            print(
                "the README's table comes from quick.json: run `python -m bench.readme_table`",
                file=sys.stderr,
            )
    errors = [r for g in doc["groups"] for r in g["rows"] if r["status"] == "error"]
    return 1 if errors else 0
