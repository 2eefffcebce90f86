"""The ``aura-sync`` command line.

Subcommands are added as the runtime grows; ``--help`` works on each.

Layer: runtime.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import click

from aura_sync import __version__

__all__ = ["main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="aura-sync")
def cli() -> None:
    """aura-sync: supervised sync infrastructure for peer-to-peer nodes."""


@cli.command(context_settings={"ignore_unknown_options": True})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def bench(args: tuple[str, ...]) -> None:
    """Run the benchmark suite (from a source checkout); ARGS go to `python -m bench`."""
    root = Path(__file__).resolve().parent.parent
    if not (root / "bench" / "__main__.py").exists():
        raise click.ClickException(
            f"the benchmarks live in the source tree; no bench/ found under {root}"
        )
    sys.path.insert(0, str(root))
    bench_main = importlib.import_module("bench").main
    raise SystemExit(bench_main(list(args)))


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``aura-sync`` console script; returns the exit code."""
    try:
        cli.main(args=argv, prog_name="aura-sync", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return 130
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except SystemExit as exc:
        return int(exc.code or 0) if not isinstance(exc.code, str) else 1
    return 0
