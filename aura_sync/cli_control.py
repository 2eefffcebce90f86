"""The ``aura-sync`` commands that talk to a running node over its control socket.

``append``, ``log``, ``peers``, ``children``, ``crash`` and ``stop`` connect
to ``<data_dir>/control.sock`` (:mod:`aura_sync.node.control`) and send the
same typed requests as in-process code.  Exit code 0 on success, 1 when the
node refuses or cannot be reached.

Layer: runtime.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import click

if TYPE_CHECKING:
    from aura_sync.node.control_client import ControlClient

__all__ = ["register"]

_DEPTH = 4
"""Append requests in flight at once (the node appends them one after the other)."""

_DATA_DIR = click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="The running node's data directory (default: the node's default).",
)
_TIMEOUT = click.option(
    "--timeout",
    default=10.0,
    show_default=True,
    type=click.FloatRange(0.1, 60.0),
    help="Seconds to wait for each answer of the node.",
)


def _client(data_dir: Path | None) -> ControlClient:
    from aura_sync.errors import ConfigError
    from aura_sync.node.control_client import ControlClient

    if data_dir is None:  # the configuration module is heavy: only when needed
        from aura_sync.node.config import default_data_dir

        data_dir = default_data_dir()
    try:
        return ControlClient(data_dir)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


def _run(data_dir: Path | None, action: Callable[[ControlClient], None]) -> None:
    from aura_sync.errors import AuraError

    with _client(data_dir) as client:
        try:
            action(client)
        except AuraError as exc:
            raise click.ClickException(f"the node refused: {exc}") from None
        except OSError as exc:
            raise click.ClickException(f"the control connection failed: {exc}") from None


_READ_SIZE = 1 << 20
_BATCH_BYTES = 2 << 20
"""Payload bytes in one ``AppendOps`` request, 5 bytes of framing per payload included
(half of ``MAX_CONTROL_FRAME``, which ``tests/test_cli_control.py`` checks)."""


class _LineTooLong(Exception):
    def __init__(self, number: int, size: int) -> None:
        super().__init__(number, size)
        self.number, self.size = number, size


def _cut(lines: list[bytes], count: int) -> int:
    """How many of ``lines`` go into the next request: at most ``count``, within the budget."""
    end = min(len(lines), count)
    if sum(map(len, lines[:end])) + 5 * end <= _BATCH_BYTES:
        return end
    total = 0
    for i in range(end):
        total += len(lines[i]) + 5
        if total > _BATCH_BYTES:
            return max(i, 1)
    return end


def _idle(fd: int | None) -> bool:
    """Whether nothing more can be read from ``fd`` right now (a pipe fed slowly)."""
    if fd is None:
        return False
    import select

    return not select.select([fd], [], [], 0)[0]


def _stdin_batches(stream: BinaryIO, count: int, limit: int) -> Iterator[tuple[bytes, ...]]:
    """Batches of stdin's lines (a trailing CR dropped), read up to 1 MiB at a time.

    Full batches go out as soon as they are read, a partial one when the
    input pauses or ends (a slow producer's lines are not held back).

    :raises _LineTooLong: a line over ``limit`` bytes (numbered from 1).
    """
    try:
        fd: int | None = stream.fileno()
    except (OSError, ValueError, AttributeError):
        fd = None  # an in-memory stream: nothing to wait for
    read = getattr(stream, "read1", stream.read)
    lines: list[bytes] = []
    rest, sent = b"", 0
    while True:
        chunk = read(_READ_SIZE)
        if chunk:
            parts = (rest + chunk).split(b"\n")
            rest = parts.pop()
        else:
            parts = [rest] if rest else []
        if b"\r" in chunk or b"\r" in rest:
            parts = [p.rstrip(b"\r") for p in parts]
        lines += parts
        flush = not chunk or _idle(fd)
        while len(lines) >= count or (flush and lines):
            end = _cut(lines, count)
            batch = lines[:end]
            if max(map(len, batch)) > limit:  # the lines before it go, then the error
                at = next(i for i, p in enumerate(batch) if len(p) > limit)
                if at:
                    yield tuple(batch[:at])
                raise _LineTooLong(sent + at + 1, len(batch[at]))
            yield tuple(batch)
            del lines[:end]
            sent += end
        if not chunk:
            return


def _batches(payloads: tuple[str, ...], count: int, limit: int) -> Iterator[tuple[bytes, ...]]:
    if payloads == ("-",):
        yield from _stdin_batches(sys.stdin.buffer, count, limit)
        return
    items = [p.encode("utf-8") for p in payloads]
    for i, item in enumerate(items):
        if len(item) > limit:  # nothing is sent: the whole command line is refused
            raise _LineTooLong(i + 1, len(item))
    while items:
        end = _cut(items, count)
        yield tuple(items[:end])
        del items[:end]


@click.command()
@_DATA_DIR
@_TIMEOUT
@click.argument("payloads", nargs=-1, required=True)
def append(data_dir: Path | None, timeout: float, payloads: tuple[str, ...]) -> None:
    """Append one op per PAYLOAD (UTF-8) to a running node; `-` reads one op per stdin line.

    Lines go to the node in batches, several requests in flight; the node
    appends each batch in one journal transaction.  Prints how many ops the
    node committed (after an error too, then exits 1).
    """
    from aura_sync.messages.sync import MAX_APPEND, MAX_OP_PAYLOAD, AppendOps, OpsAppended

    def go(client: ControlClient) -> None:
        added, last = 0, None
        requests = (AppendOps(b) for b in _batches(payloads, MAX_APPEND, MAX_OP_PAYLOAD))
        try:
            for last in client.pipeline("anti_entropy", requests, timeout, depth=_DEPTH):
                added += last.added
        except _LineTooLong as exc:
            click.echo(f"appended {added} ops")
            where = "line" if payloads == ("-",) else "PAYLOAD"
            raise click.ClickException(
                f"{where} {exc.number} has {exc.size} bytes, more than an op's "
                f"{MAX_OP_PAYLOAD}: it and the ones after it were not appended"
            ) from None
        except BaseException:
            click.echo(f"appended {added} ops")
            raise
        done: OpsAppended | None = last
        total = done.total_ops if done is not None else "?"
        click.echo(f"appended {added} ops (journal: {total} ops)")

    _run(data_dir, go)


def _entry_line(entry: Any, as_json: bool) -> str:
    import base64
    import json

    text = entry.payload.decode("utf-8", "backslashreplace")
    if not as_json:
        return f"{entry.cursor}\t{entry.author}\t{entry.seq}\t{text}"
    return json.dumps(
        {
            "cursor": entry.cursor,
            "id": entry.op_id.hex(),
            "author": str(entry.author),
            "seq": entry.seq,
            "payload": text,
            "payload_base64": base64.b64encode(entry.payload).decode("ascii"),
        }
    )


@click.command()
@_DATA_DIR
@click.option(
    "--after",
    default=0,
    show_default=True,
    type=click.IntRange(min=0),
    help="Show the ops after this cursor (the first column).",
)
@click.option("--follow", "-f", is_flag=True, help="Keep printing ops as they arrive.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def log(data_dir: Path | None, after: int, follow: bool, as_json: bool) -> None:
    """Print a running node's ops in local order: cursor, author, seq, payload (tab-separated)."""
    from aura_sync.node.wire import ReadOps

    def go(client: ControlClient) -> None:
        cursor = after
        while True:
            page = client.call("node", ReadOps(cursor, 1000, 5.0 if follow else 0.0), 10.0)
            for entry in page.entries:
                click.echo(_entry_line(entry, as_json))
            cursor = page.cursor
            if not page.entries and not follow:
                return
            sys.stdout.flush()

    _run(data_dir, go)


@click.command()
@_DATA_DIR
@_TIMEOUT
def peers(data_dir: Path | None, timeout: float) -> None:
    """List the peers a running node knows: id, address, status, trust, syncs ok/failed."""
    from aura_sync.messages.peers import GetPeerTable

    def go(client: ControlClient) -> None:
        table = client.call("peer_manager", GetPeerTable(), timeout)
        if not table.peers:
            click.echo("no peers")
        for info in table.peers:
            meta = info.metadata
            click.echo(
                f"{info.peer_id}\t{info.address or '-'}\t{meta.status.value}\t"
                f"trust={meta.trust_level}\tsyncs={meta.successful_syncs}/{meta.failed_syncs}"
            )

    _run(data_dir, go)


@click.command()
@_DATA_DIR
@_TIMEOUT
def children(data_dir: Path | None, timeout: float) -> None:
    """Show a running node's live supervision tree: path, status, restarts."""
    from aura_sync.node.wire import GetChildren

    def go(client: ControlClient) -> None:
        for row in client.call("node", GetChildren(), timeout):
            depth = row.path.count("/") - 1
            name = row.path.rsplit("/", 1)[1]
            click.echo(f"{'  ' * depth}{name}\t{row.status}\trestarts={row.restarts}")

    _run(data_dir, go)


@click.command()
@_DATA_DIR
@_TIMEOUT
@click.argument("actor")
def crash(data_dir: Path | None, timeout: float, actor: str) -> None:
    """Crash ACTOR of a running node on purpose (fault injection must be enabled)."""
    from aura_sync.node.wire import CrashActor

    def go(client: ControlClient) -> None:
        client.call("node", CrashActor(actor), timeout)
        click.echo(f"crashed {actor}")

    _run(data_dir, go)


@click.command()
@_DATA_DIR
@_TIMEOUT
def stop(data_dir: Path | None, timeout: float) -> None:
    """Stop a running node cleanly and wait until it has stopped."""
    import threading
    import time

    from aura_sync.errors import ConfigError
    from aura_sync.node.config import default_data_dir
    from aura_sync.node.wire import StopNode
    from aura_sync.protocols.journal_files import DataDirLock

    directory = data_dir or default_data_dir()

    def go(client: ControlClient) -> None:
        client.call("node", StopNode(), timeout)
        deadline = time.monotonic() + timeout
        tick = threading.Event()
        while True:  # the node releases its data directory lock once it has stopped
            try:
                DataDirLock(directory).release()
                break
            except (ConfigError, OSError):
                if time.monotonic() > deadline:
                    raise click.ClickException(
                        f"the node did not stop within {timeout} s"
                    ) from None
                tick.wait(0.05)
        click.echo("stopped")

    _run(directory, go)


def register(group: click.Group) -> None:
    """Add the control commands to the ``aura-sync`` group."""
    for command in (append, log, peers, children, crash, stop):
        group.add_command(command)
