"""The ``aura-sync`` command line (click).

Subcommands (``--help`` works on each):

* ``node``: run one long-lived node (config from an optional TOML file and
  flags; SIGINT/SIGTERM stop it cleanly; exit code 0 after a clean stop,
  1 if its root supervisor gave up, 2 for a bad configuration, 3 for a
  corrupt journal or unusable identity);
* ``demo``: start a small cluster on loopback, inject faults, show it
  converge (exit code 0 only if every node holds the same journal);
* ``status ADDR``: a running node's ``/health`` (its metrics address);
* ``token keygen`` / ``token issue``: a capability authority key pair, and
  Biscuit tokens granting ``sync:request_digest``;
* ``id``: a data directory's DeviceId (what bootstrap addresses name);
* ``verify --data-dir D``: every check of a stopped node's journal (exit 0
  if all pass, 2 if the directory is unusable or in use, 3 if a check fails);
* ``bench``: the benchmark suite (source checkout only);
* ``append``, ``log``, ``peers``, ``children``, ``crash``, ``stop``: talk to a
  running node over its control socket (:mod:`aura_sync.cli_control`).

Heavy imports happen inside the commands, so ``--help`` stays fast.

Layer: runtime.
"""

from __future__ import annotations

import importlib
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

import click

from aura_sync import __version__, cli_control

__all__ = ["cli", "main"]

_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="aura-sync")
def cli() -> None:
    """aura-sync: supervised sync infrastructure for peer-to-peer nodes."""


@cli.command(context_settings={"ignore_unknown_options": True})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def bench(args: tuple[str, ...]) -> None:
    """Run the benchmark suite (source checkout or sdist only); ARGS go to `python -m bench`."""
    root = Path(__file__).resolve().parent.parent
    if not (root / "bench" / "__main__.py").exists():
        raise click.ClickException(
            "the benchmark suite is not installed with the package: run `python -m bench` "
            f"(or `aura-sync bench`) from a source checkout or an unpacked sdist "
            f"(no bench/ under {root})"
        )
    sys.path.insert(0, str(root))
    bench_main = importlib.import_module("bench").main
    raise SystemExit(bench_main(list(args)))


# --- node ------------------------------------------------------------------------------------


def _config_from_flags(config_path: Path | None, overrides: dict[str, object]) -> Any:
    from aura_sync.node.config import load_config

    return load_config(config_path, overrides)


@cli.command()
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="TOML configuration file (every key optional; flags override it).",
)
@click.option(
    "--data-dir", type=click.Path(file_okay=False, path_type=Path), help="State directory."
)
@click.option("--listen", metavar="HOST:PORT", help="Where to accept peers (port 0: any).")
@click.option(
    "--bootstrap",
    multiple=True,
    metavar="DEVICE_ID@HOST:PORT",
    help="A peer to dial at start (repeatable).",
)
@click.option(
    "--authority-key", metavar="HEX", help="Capability authority public key (enables tokens)."
)
@click.option(
    "--token",
    "token_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="This node's capability token file (base64).",
)
@click.option("--sync-interval", type=float, help="Seconds between sync rounds.")
@click.option("--peers-per-round", type=int, help="Peers synced per round.")
@click.option("--batch-size", type=int, help="Ops per pull/push message (1..128).")
@click.option("--metrics-port", type=int, help="/health and /metrics port (0: any).")
@click.option(
    "--metrics-listen", metavar="HOST", help="Address the metrics port binds (default 127.0.0.1)."
)
@click.option("--log-level", help="DEBUG, INFO, WARNING, ERROR or CRITICAL.")
@click.option("--log-format", help="text (key=value lines, the default) or json.")
@click.option(
    "--ready-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the node's addresses as JSON here once it is up.",
)
@click.option(
    "--fault-injection",
    is_flag=True,
    default=None,
    help="Let `aura-sync crash ACTOR` crash this node's actors (tests, demos).",
)
@click.option("--refuse-sync", is_flag=True, default=None, hidden=True)
def node(
    *,
    config_path: Path | None,
    data_dir: Path | None,
    listen: str | None,
    bootstrap: tuple[str, ...],
    authority_key: str | None,
    token_path: Path | None,
    sync_interval: float | None,
    peers_per_round: int | None,
    batch_size: int | None,
    metrics_port: int | None,
    metrics_listen: str | None,
    log_level: str | None,
    log_format: str | None,
    ready_file: Path | None,
    fault_injection: bool | None,
    refuse_sync: bool | None,
) -> None:
    """Run one long-lived node until SIGINT/SIGTERM.

    Exit code: 0 after a clean stop, 1 if the root supervisor gave up,
    2 for a bad configuration or a start failure (an address it cannot
    listen on), 3 for a corrupt journal, state store or identity.  A start failure is
    reported as one line on stderr.
    """
    from aura_sync.errors import (
        ConfigError,
        IdentityError,
        JournalCorrupt,
        StartFailed,
        StateCorrupt,
        TransportError,
    )
    from aura_sync.node.node import run_node

    overrides: dict[str, object] = {
        "data_dir": data_dir,
        "listen": listen,
        "bootstrap": list(bootstrap) if bootstrap else None,
        "authority_public_key": authority_key,
        "token_path": token_path,
        "sync_interval": sync_interval,
        "peers_per_round": peers_per_round,
        "batch_size": batch_size,
        "metrics_port": metrics_port,
        "metrics_listen": metrics_listen,
        "log_level": log_level,
        "log_format": log_format,
        "fault_injection": fault_injection,
        "refuse_sync": refuse_sync,
    }
    try:
        config = _config_from_flags(config_path, overrides)
    except ConfigError as exc:
        click.echo(f"aura-sync node: configuration error: {exc}", err=True)
        raise SystemExit(2) from None
    try:
        code = run_node(config, ready_file=ready_file)
    except ConfigError as exc:
        click.echo(f"aura-sync node: configuration error: {exc}", err=True)
        raise SystemExit(2) from None
    except TransportError as exc:  # "cannot listen on ..."
        click.echo(f"aura-sync node: {_one_line(exc)}", err=True)
        raise SystemExit(2) from None
    except StartFailed as exc:
        click.echo(f"aura-sync node: cannot start: {_one_line(exc)}", err=True)
        raise SystemExit(2) from None
    except (JournalCorrupt, StateCorrupt, IdentityError) as exc:
        click.echo(f"aura-sync node: cannot start: {_one_line(exc)}", err=True)
        raise SystemExit(3) from None
    raise SystemExit(code)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


# --- demo ------------------------------------------------------------------------------------


@cli.command()
@click.option(
    "--nodes",
    default=4,
    show_default=True,
    type=click.IntRange(2, 16),
    help="Number of node processes to start.",
)
@click.option(
    "--ops",
    default=1000,
    show_default=True,
    type=click.IntRange(0, 10_000_000),
    help="Operations written in total, spread over the nodes in waves.",
)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Keep the nodes' data here, in a new or empty directory (default: a temporary "
    "directory, removed afterwards).",
)
@click.option(
    "--timeout",
    default=90.0,
    show_default=True,
    type=click.FloatRange(min=1.0),
    help="Hard deadline of the whole demo, seconds.",
)
@click.option(
    "--sync-interval",
    default=0.25,
    show_default=True,
    type=click.FloatRange(min=0.01),
    help="Seconds between each node's sync rounds.",
)
@click.option(
    "--faults/--no-faults",
    default=True,
    show_default=True,
    help="Midway, crash one node's pool actor and SIGKILL then restart another node.",
)
@click.option(
    "--capabilities/--no-capabilities",
    default=True,
    show_default=True,
    help="Require Biscuit capability tokens between nodes.",
)
@click.option(
    "--force-divergence",
    is_flag=True,
    help="Make one node refuse to sync: the demo must then exit non-zero.",
)
@click.option(
    "--no-live", is_flag=True, help="No live display: print progress lines, then the summary."
)
@click.option(
    "--log-level",
    default="INFO",
    show_default=True,
    type=click.Choice(_LOG_LEVELS, case_sensitive=False),
    help="The nodes' log level (their logs go to node.log in each data directory).",
)
def demo(
    *,
    nodes: int,
    ops: int,
    data_dir: Path | None,
    timeout: float,
    sync_interval: float,
    faults: bool,
    capabilities: bool,
    force_divergence: bool,
    no_live: bool,
    log_level: str,
) -> None:
    """Run NODES nodes on loopback, write OPS ops, inject faults, show them converge.

    Exits 0 only if every node ends with the same journal and lost nothing.
    """
    from rich.console import Console

    from aura_sync.node.demo import DemoOptions, run_demo
    from aura_sync.node.demo_view import summary_table

    console = Console()
    if not console.is_terminal:
        console = Console(width=max(console.width, 120))
    options = DemoOptions(
        nodes=nodes,
        ops=ops,
        data_dir=data_dir,
        timeout=timeout,
        sync_interval=sync_interval,
        force_divergence=force_divergence,
        faults=faults,
        capabilities=capabilities,
        live=not no_live,
        log_level=log_level.upper(),
    )
    result = run_demo(options, console)
    console.print(summary_table(result))
    if not no_live:  # --no-live printed each event as it happened
        for line in result.events:
            console.print(f"  {line}", highlight=False)
    raise SystemExit(0 if result.ok else 1)


# --- status ----------------------------------------------------------------------------------


@cli.command()
@click.argument("addr", metavar="ADDR")
@click.option("--json", "as_json", is_flag=True, help="Print the raw /health JSON.")
@click.option(
    "--timeout",
    default=3.0,
    show_default=True,
    type=click.FloatRange(min=0.1),
    help="Seconds to wait for the node's answer.",
)
def status(addr: str, as_json: bool, timeout: float) -> None:
    """Show a node's health; ADDR is its metrics address (HOST:PORT).

    Exit code 0 if the node is ok, 1 if it is not or cannot be reached.
    """
    import json
    import urllib.error
    import urllib.request

    url = _status_url(addr)
    try:
        with urllib.request.urlopen(url.rstrip("/") + "/health", timeout=timeout) as resp:
            body = resp.read()
    except urllib.error.HTTPError as exc:
        body = exc.read()
    except (OSError, ValueError) as exc:
        click.echo(f"aura-sync status: cannot reach {addr}: {exc}", err=True)
        raise SystemExit(1) from None
    try:
        doc = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        doc = None
    if not isinstance(doc, dict) or "status" not in doc:
        click.echo(
            f"aura-sync status: {addr} did not answer with an aura-sync health document "
            f"(is it a node's metrics address?)",
            err=True,
        )
        raise SystemExit(1)
    if as_json:
        click.echo(json.dumps(doc, indent=2, sort_keys=True))
    else:
        _print_health(doc)
    raise SystemExit(0 if doc.get("status") == "ok" else 1)


def _status_url(addr: str) -> str:
    """``http://HOST:PORT`` for ADDR, or a usage error that shows the form wanted."""
    from urllib.parse import urlsplit

    text = addr.strip()
    if text.startswith(("http://", "https://")):
        return text
    try:
        parts = urlsplit(f"http://{text}")
        port = parts.port
    except ValueError:
        port, parts = None, None
    if text.isdigit():
        hint = f"127.0.0.1:{text}"
    else:
        plain = parts is not None and parts.hostname and not any(c.isspace() for c in text)
        host = parts.hostname if plain and parts is not None else "127.0.0.1"
        hint = f"{host}:9100"
    if parts is None or not parts.hostname or port is None or parts.path or text.isdigit():
        raise click.UsageError(
            f"{addr!r} is not a metrics address: give HOST:PORT, e.g. {hint} "
            "(a node's --metrics-port)"
        )
    return f"http://{text}"


def _print_health(doc: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    journal = doc.get("journal", {})
    console.print(
        f"node {doc.get('device_id')} at {doc.get('listen_address')}: "
        f"[bold]{doc.get('status')}[/bold], up {float(doc.get('uptime', 0)):.1f} s, "
        f"{journal.get('ops', '?')} ops (digest {str(journal.get('digest', ''))[:16]})"
    )
    children = Table(title="supervised children")
    children.add_column("child")
    children.add_column("status")
    children.add_column("restarts", justify="right")
    for child in doc.get("children", []):
        children.add_row(child["name"], child["status"], str(child["restarts"]))
    console.print(children)
    peers = doc.get("peers_by_status", {})
    console.print("peers: " + (", ".join(f"{k}={v}" for k, v in sorted(peers.items())) or "none"))
    trust = doc.get("peer_trust", {})
    if trust:
        console.print("trust: " + ", ".join(f"{p[:8]}={t}" for p, t in sorted(trust.items())))
    bans = doc.get("bans", {})
    console.print(f"bans: {len(bans) or 'none'}")
    for peer, ban in sorted(bans.items()):
        console.print(
            f"  {peer} banned {float(ban.get('seconds_left', 0)):.0f} s more "
            f"(ban {ban.get('bans')}, {ban.get('reason')}, address {ban.get('address') or '?'})"
        )
    sync = doc.get("sync", {})
    console.print("sync: " + ", ".join(f"{k}={v}" for k, v in sorted(sync.items())))


# --- token / id ------------------------------------------------------------------------------


@cli.group()
def token() -> None:
    """Capability tokens (Biscuit) granting sync:request_digest."""


@token.command("keygen")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the private key (hex) to this file, mode 0600, instead of printing it.",
)
def token_keygen(out: Path | None) -> None:
    """Create an authority key pair; prints the public key (for nodes' authority_public_key)."""
    from aura_sync.infrastructure.capabilities import generate_authority_keypair

    pair = generate_authority_keypair()
    if out is not None:
        try:
            fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            raise click.ClickException(
                f"{out} already exists: refusing to overwrite a key (choose another --out)"
            ) from None
        except OSError as exc:
            raise click.FileError(str(out), hint=exc.strerror or str(exc)) from None
        with os.fdopen(fd, "w") as fh:
            fh.write(pair.private_key.hex() + "\n")
        click.echo(f"private key written to {out}")
    else:
        click.echo(f"private_key = {pair.private_key.hex()}")
    click.echo(f"public_key = {pair.public_key.hex()}")


@token.command("issue")
@click.option(
    "--authority-key-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="File holding the authority private key (hex).",
)
@click.option("--authority-key", "authority_hex", metavar="HEX", help="Authority private key.")
@click.option(
    "--subject",
    metavar="DEVICE_ID",
    help="Bind the token to this node (see `aura-sync id`); default: a bearer token.",
)
@click.option(
    "--right",
    "rights",
    multiple=True,
    default=("sync:request_digest",),
    show_default=True,
    help="A right to grant (repeatable).",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the token (base64) here instead of printing it.",
)
def token_issue(
    authority_key_file: Path | None,
    authority_hex: str | None,
    subject: str | None,
    rights: tuple[str, ...],
    out: Path | None,
) -> None:
    """Mint a Biscuit token signed by the authority key (base64 text, for a node's token file)."""
    import base64

    from aura_sync.errors import AuraError
    from aura_sync.ids import DeviceId
    from aura_sync.infrastructure.capabilities import issue_capability_token

    if (authority_key_file is None) == (authority_hex is None):
        raise click.UsageError("give exactly one of --authority-key-file and --authority-key")
    text = authority_hex if authority_hex is not None else _read_text(authority_key_file)
    try:
        private = bytes.fromhex(text.strip())
    except ValueError:
        raise click.BadParameter(
            "the authority key must be hex", param_hint="authority key"
        ) from None
    try:
        device = DeviceId.parse(subject) if subject is not None else None
    except AuraError as exc:
        raise click.BadParameter(str(exc), param_hint="'--subject'") from None
    try:
        raw = issue_capability_token(private, rights, device)
    except AuraError as exc:
        raise click.ClickException(str(exc)) from None
    encoded = base64.urlsafe_b64encode(raw).decode("ascii")
    if out is not None:
        try:  # a token is a credential: readable by its owner only
            fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        except OSError as exc:
            raise click.FileError(str(out), hint=exc.strerror or str(exc)) from None
        with os.fdopen(fd, "w", encoding="ascii") as fh:
            fh.write(encoded + "\n")
        click.echo(f"token written to {out}")
    else:
        click.echo(encoded)


def _read_text(path: Path | None) -> str:
    assert path is not None
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise click.FileError(str(path), hint=str(exc)) from None


@cli.command("id")
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="The node's data directory (default: the node's default).",
)
def id_command(data_dir: Path | None) -> None:
    """Print the DeviceId of a data directory (creating its key on first use)."""
    from aura_sync.errors import IdentityError
    from aura_sync.identity import NodeIdentity
    from aura_sync.node.config import default_data_dir

    directory = data_dir or default_data_dir()
    try:  # creates the directory (0700) and the key on first use
        click.echo(str(NodeIdentity.load_or_create(directory).device_id))
    except IdentityError as exc:
        raise click.ClickException(str(exc)) from None


@cli.command("verify")
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="The node's data directory (default: the node's default).",
)
@click.option(
    "--wait",
    default=10.0,
    show_default=True,
    type=click.FloatRange(min=0.0),
    help="Seconds to wait for a stopping node to release the directory.",
)
def verify_command(data_dir: Path | None, wait: float) -> None:
    """Run every check on a data directory's journal and report (the node must be stopped).

    Checks: the file (0-byte, truncated, foreign, schema version), the
    high-water mark, PRAGMA integrity_check, every op's id, chain link and
    signature, and the fingerprint aggregates.  Exit code 0 if all pass,
    2 if the directory is unusable or still in use after ``--wait`` s, 3 if a check fails.
    """
    from aura_sync.errors import ConfigError, DataDirLocked, IdentityError, JournalCorrupt
    from aura_sync.identity import KEY_FILE_NAME, NodeIdentity
    from aura_sync.node.config import default_data_dir
    from aura_sync.protocols.journal import JOURNAL_FILE_NAME, Journal
    from aura_sync.protocols.journal_files import DataDirLock

    directory = data_dir or default_data_dir()
    path = directory / JOURNAL_FILE_NAME
    if not path.exists():
        click.echo(f"aura-sync verify: no journal {str(path)!r}", err=True)
        raise SystemExit(2)
    pause = threading.Event()  # never set: a timed wait, not a sleep
    deadline = time.monotonic() + wait  # a node just told to stop may still be closing
    while True:
        try:
            lock = DataDirLock(directory)
            break
        except DataDirLocked as exc:
            if time.monotonic() >= deadline:
                click.echo(f"aura-sync verify: {exc}", err=True)
                raise SystemExit(2) from None
            pause.wait(0.1)
        except (ConfigError, OSError) as exc:
            click.echo(f"aura-sync verify: {exc}", err=True)
            raise SystemExit(2) from None
    try:
        identity = NodeIdentity.load(directory / KEY_FILE_NAME)
        with Journal.open(path, identity=identity, full_check=True) as journal:
            click.echo(f"open: ok ({len(journal)} ops, {journal.own_ops} own)")
            report = journal.verify()
    except (JournalCorrupt, IdentityError) as exc:
        click.echo(f"open: FAILED: {exc}")
        raise SystemExit(3) from None
    finally:
        lock.release()
    for name, ok, detail in report:
        click.echo(f"{name}: {'ok' if ok else 'FAILED'} ({detail})")
    raise SystemExit(0 if all(ok for _, ok, _ in report) else 3)


cli_control.register(cli)


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
