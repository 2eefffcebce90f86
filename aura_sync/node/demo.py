"""``aura-sync demo``: a small cluster on loopback that converges through injected faults.

What it does
    1. Prepares one data directory per node (a temporary directory unless
       ``data_dir`` is given), creates each node's identity there (so the
       bootstrap address can name node 0's DeviceId) and, with capabilities
       on, a Biscuit authority whose tokens (one per node, bound to the
       node's DeviceId) every node must present to be synced with.
    2. Starts N ``aura-sync node`` processes on 127.0.0.1 with ephemeral
       ports, all bootstrapping from node 0; each reports its addresses in
       a ready file, serves ``/health`` on a local port and its control
       socket in its data directory (with fault injection on).
    3. Writes ``ops`` operations in waves, spread over the nodes
       (``AppendOps`` through the control socket, as ``aura-sync append``
       does); each write is acknowledged once committed to the node's
       SQLite journal.
    4. Midway: crashes an infrastructure actor in one node (``CrashActor``
       through the control socket, as ``aura-sync crash``: its supervisor restarts
       it) and kills another node outright (SIGKILL), then restarts that
       node from its data directory and checks it lost none of its own
       acknowledged operations.
    5. Waits until every node holds the same journal (equal digests and
       the expected number of ops), showing peers, rounds, operations and
       a convergence mark per node live (``rich.live``; or progress lines
       without it), then stops every node with SIGTERM and prints a
       summary table (:mod:`aura_sync.node.demo_view`).

    The result is success only if every node converged on the same
    journal, no acknowledged op was lost and every node stopped cleanly.
    ``force_divergence`` starts one node that refuses to sync, so the demo
    must fail: it detects that nothing moves any more after the last write
    (``stall`` seconds) and stops.  A hard ``timeout`` bounds the whole run.

Layer: runtime.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from rich.console import Console, Group
from rich.live import Live

from aura_sync._checks import check_int
from aura_sync.errors import AuraError, InvalidArgument, WrongType
from aura_sync.identity import NodeIdentity
from aura_sync.infrastructure.capabilities import (
    generate_authority_keypair,
    issue_capability_token,
)
from aura_sync.messages.sync import AppendOps
from aura_sync.node.control_client import ControlClient
from aura_sync.node.demo_view import live_table, progress_line, summary_table
from aura_sync.node.wire import CrashActor
from aura_sync.protocols.journal import JOURNAL_FILE_NAME

__all__ = ["DemoError", "DemoOptions", "DemoResult", "NodeOutcome", "run_demo", "summary_table"]

_POLL: Final = 0.15
_HTTP_TIMEOUT: Final = 2.0
_READY_TIMEOUT: Final = 20.0
_STOP_TIMEOUT: Final = 8.0
_PROGRESS_EVERY: Final = 2.0  # seconds between --no-live progress lines
_PROGRESS_PHASES: Final = ("writing", "faults", "converging")
_NODE_BOOT: Final = "import sys; from aura_sync.cli import main; sys.exit(main(sys.argv[1:]))"


class DemoError(AuraError):
    """The demo could not run (a node failed to start, the deadline passed, ...)."""


@dataclass(frozen=True, slots=True)
class DemoOptions:
    """What the demo does.

    :param nodes: number of node processes (2..16).
    :param ops: operations written in total, spread over the nodes (>= 0).
    :param data_dir: parent directory of the nodes' data directories
        (kept afterwards; the nodes' directories must not hold journals
        yet); None: a temporary directory, removed at the end.
    :param timeout: hard deadline of the whole demo, seconds (> 0).
    :param sync_interval: seconds between each node's sync rounds (> 0).
    :param force_divergence: one node refuses to sync; the demo must fail.
    :param faults: crash an actor in one node and kill/restart another.
    :param capabilities: require Biscuit capability tokens between nodes.
    :param waves: how many write waves (>= 1).
    :param stall: seconds without progress, after the last write, that
        count as divergence (> 0).
    :param live: show the live display (else one line per event and a
        progress line every 2 s, then the summary).
    :param log_level: the nodes' log level (their logs go to ``node.log``
        in each data directory).
    """

    nodes: int = 4
    ops: int = 1000
    data_dir: Path | None = None
    timeout: float = 60.0
    sync_interval: float = 0.25
    force_divergence: bool = False
    faults: bool = True
    capabilities: bool = True
    waves: int = 4
    stall: float = 4.0
    live: bool = True
    log_level: str = "INFO"

    def __post_init__(self) -> None:
        for name, low, high in (("nodes", 2, 16), ("ops", 0, 10_000_000), ("waves", 1, 1000)):
            check_int(getattr(self, name), name, minimum=low, maximum=high)
        for name in ("timeout", "sync_interval", "stall"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
                raise InvalidArgument(f"{name} must be a number of seconds > 0, got {value!r}")
        if self.data_dir is not None and not isinstance(self.data_dir, Path):
            raise WrongType(f"data_dir must be a Path or None, got {self.data_dir!r}")


@dataclass(slots=True)
class NodeOutcome:
    """What one node ended with (a row of the summary)."""

    name: str
    device_id: str
    written: int
    own_ops: int
    ops: int
    digest: str
    restarts: int
    rounds_ok: int
    rounds_failed: int
    exit_code: int | None
    refuses_sync: bool = False


@dataclass(slots=True)
class DemoResult:
    """The outcome of a demo run; :attr:`ok` decides the exit code."""

    converged: bool
    lost_ops: int
    clean_exit: bool
    elapsed: float
    converge_time: float | None
    expected_ops: int
    nodes: list[NodeOutcome] = field(default_factory=list)
    events: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def ok(self) -> bool:
        """Converged, nothing lost, every node stopped cleanly, no error."""
        return self.converged and self.lost_ops == 0 and self.clean_exit and self.error is None


# --- one node process ---------------------------------------------------------------------


class _NodeProc:
    """An ``aura-sync node`` child process and its HTTP control channel."""

    def __init__(self, index: int, data_dir: Path, device_id: str, args: list[str]) -> None:
        self.index = index
        self.name = f"node-{index}"
        self.data_dir = data_dir
        self.device_id = device_id
        self.args = args
        self.proc: subprocess.Popen[bytes] | None = None
        self.listen = ""
        self.metrics = ""
        self.written = 0
        self.health: dict[str, Any] | None = None
        self.down = False
        self.exit_code: int | None = None
        self.refuses_sync = "--refuse-sync" in args

    @property
    def ready_file(self) -> Path:
        return self.data_dir / "ready.json"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "node.log"

    def start(self, listen: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.ready_file.unlink()
        cmd = [
            sys.executable,
            "-c",
            _NODE_BOOT,
            "node",
            "--data-dir",
            str(self.data_dir),
            "--listen",
            listen,
            "--metrics-port",
            "0",
            "--ready-file",
            str(self.ready_file),
            "--fault-injection",
            *self.args,
        ]
        env = dict(os.environ)
        env["PYTHONUNBUFFERED"] = "1"
        with open(self.log_file, "ab") as log:
            self.proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env
            )
        self.down = False
        self.health = None

    def poll_ready(self) -> bool:
        """True once the ready file exists; raises DemoError if the process died."""
        proc = self.proc
        if proc is None:
            raise DemoError(f"{self.name} was never started")
        try:
            info = json.loads(self.ready_file.read_text(encoding="utf-8"))
        except (FileNotFoundError, json.JSONDecodeError):
            code = proc.poll()
            if code is not None:
                raise DemoError(
                    f"{self.name} exited with code {code} while starting:\n{self.log_tail()}"
                ) from None
            return False
        self.listen = str(info["listen"])
        self.metrics = str(info["metrics"])
        return True

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_file.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def request(self, method: str, path: str) -> dict[str, Any] | None:
        if not self.metrics or self.down:
            return None
        req = urllib.request.Request(
            f"http://{self.metrics}{path}", data=b"" if method == "POST" else None, method=method
        )
        try:
            with urllib.request.urlopen(req, timeout=_HTTP_TIMEOUT) as resp:
                doc: dict[str, Any] = json.loads(resp.read())
                return doc
        except urllib.error.HTTPError as exc:
            try:
                doc = json.loads(exc.read())
            except (json.JSONDecodeError, OSError):
                return None
            return doc
        except (OSError, json.JSONDecodeError):
            return None

    def append(self, count: int) -> int:
        """Write ``count`` ops through the control socket; how many were acknowledged."""
        stamp = time.time_ns()
        batches = (
            AppendOps(
                tuple(f"demo {stamp} {at + i}".encode() for i in range(min(1024, count - at)))
            )
            for at in range(0, count, 1024)
        )
        try:
            with ControlClient(self.data_dir) as client:
                return sum(r.added for r in client.pipeline("anti_entropy", batches, 10.0))
        except AuraError as exc:
            raise DemoError(
                f"{self.name} did not acknowledge a write of {count} ops: {exc}"
            ) from None

    def refresh(self) -> None:
        doc = self.request("GET", "/health")
        if doc is not None and "journal" in doc:
            self.health = doc

    def kill(self) -> None:
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait(_STOP_TIMEOUT)
        self.down = True

    def terminate(self) -> None:
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)

    def reap(self, deadline: float) -> int | None:
        proc = self.proc
        if proc is None:
            return None
        try:
            code = proc.wait(max(0.05, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(_STOP_TIMEOUT)
            code = None
        self.exit_code = code
        self.down = True
        return code

    # health accessors ----------------------------------------------------------------------

    def _get(self, section: str, key: str, default: Any = 0) -> Any:
        doc = self.health or {}
        value = doc.get(section, {})
        return value.get(key, default) if isinstance(value, dict) else default

    @property
    def ops(self) -> int:
        return int(self._get("journal", "ops"))

    @property
    def own_ops(self) -> int:
        return int(self._get("journal", "own_ops"))

    @property
    def digest(self) -> str:
        return str(self._get("journal", "digest", ""))

    @property
    def restarts(self) -> int:
        return int((self.health or {}).get("restarts_total", 0))

    @property
    def connected(self) -> int:
        return int(self._get("peers_by_status", "CONNECTED"))

    @property
    def tracked(self) -> int:
        peers = (self.health or {}).get("peers_by_status", {})
        return sum(int(v) for v in peers.values()) if isinstance(peers, dict) else 0


# --- the orchestrator ---------------------------------------------------------------------


class _Demo:
    def __init__(self, options: DemoOptions, console: Console, root: Path) -> None:
        self.o = options
        self.console = console
        self.root = root
        self.start = time.monotonic()
        self.deadline = self.start + options.timeout
        self.nodes: list[_NodeProc] = []
        self.events: deque[str] = deque(maxlen=8)
        self.all_events: list[str] = []
        self.phase = "starting"
        self.live: Live | None = None
        self.lost = 0
        self.last_write = self.start
        self.last_progress = self.start

    # -- display ----------------------------------------------------------------------------

    def stamp(self) -> str:
        return f"{time.monotonic() - self.start:5.1f}s"

    def event(self, text: str) -> None:
        line = f"{self.stamp()}  {text}"
        self.events.append(line)
        self.all_events.append(line)
        if not self.o.live:  # --no-live: progress as it happens, one line each
            self.console.print(line, highlight=False, markup=False)

    def render(self) -> Group:
        title = f"aura-sync demo: {self.phase}  ({time.monotonic() - self.start:4.1f} s)"
        return live_table(title, self.nodes, self.expected, self.events)

    @property
    def expected(self) -> int:
        """Ops acknowledged so far: what every node must end up holding."""
        return sum(n.written for n in self.nodes)

    def tick(self) -> None:
        """Refresh every live node's health and the display; enforce the deadline."""
        for n in self.nodes:
            if not n.down:
                n.refresh()
        now = time.monotonic()
        if self.live is not None:
            self.live.update(self.render())
        elif self.phase in _PROGRESS_PHASES and now - self.last_progress >= _PROGRESS_EVERY:
            self.last_progress = now
            line = progress_line(self.stamp(), self.phase, self.nodes, self.expected)
            self.console.print(line, highlight=False, markup=False)
        if now > self.deadline:
            raise DemoError(f"the demo's deadline of {self.o.timeout} s passed ({self.phase})")

    def pause(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while True:
            self.tick()
            left = end - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(_POLL, left))

    # -- phases -----------------------------------------------------------------------------

    def prepare(self) -> None:
        o = self.o
        for i in range(o.nodes):  # the verdict counts the ops this run writes: start empty
            journal = self.root / f"node-{i}" / JOURNAL_FILE_NAME
            if journal.exists():
                raise DemoError(
                    f"node-{i}'s data directory {str(journal.parent)!r} already holds a "
                    f"journal (an earlier demo run?); the demo needs empty data directories: "
                    f"give a new --data-dir or remove that one"
                )
        authority = generate_authority_keypair() if o.capabilities else None
        diverging = o.nodes - 1 if o.force_divergence else -1
        for i in range(o.nodes):
            data = self.root / f"node-{i}"
            data.mkdir(parents=True, exist_ok=True)
            os.chmod(data, 0o700)
            ident = NodeIdentity.load_or_create(data)
            args = [
                "--sync-interval",
                str(o.sync_interval),
                "--log-level",
                o.log_level,
                "--peers-per-round",
                "3",
            ]
            if authority is not None:
                token = issue_capability_token(authority.private_key, subject=ident.device_id)
                token_path = data / "token"
                token_path.write_text(base64.urlsafe_b64encode(token).decode() + "\n")
                args += ["--authority-key", authority.public_key.hex(), "--token", str(token_path)]
            if i == diverging:
                args.append("--refuse-sync")
            self.nodes.append(_NodeProc(i, data, str(ident.device_id), args))

    def wait_ready(self, nodes: list[_NodeProc]) -> None:
        limit = min(self.deadline, time.monotonic() + _READY_TIMEOUT)
        pending = list(nodes)
        while pending:
            pending = [n for n in pending if not n.poll_ready()]
            if not pending:
                break
            if time.monotonic() > limit:
                names = ", ".join(n.name for n in pending)
                raise DemoError(f"{names} did not become ready in time:\n{pending[0].log_tail()}")
            self.tick()
            time.sleep(0.03)

    def boot(self) -> None:
        """Start every node at once; node 0 gets a port picked in advance (the bootstrap)."""
        first = self.nodes[0]
        address = f"127.0.0.1:{_free_port()}"
        first.start(address)
        bootstrap = f"{first.device_id}@{address}"
        for n in self.nodes[1:]:
            n.args += ["--bootstrap", bootstrap]
            n.start("127.0.0.1:0")
        try:
            self.wait_ready([first])
        except DemoError:  # the port was taken meanwhile (unlikely): any port, then the others
            first.start("127.0.0.1:0")
            self.wait_ready([first])
            bootstrap = f"{first.device_id}@{first.listen}"
            for n in self.nodes[1:]:
                n.kill()
                n.args[-1] = bootstrap
                n.start("127.0.0.1:0")
        self.event(f"{first.name} listening on {first.listen} (bootstrap)")
        self.wait_ready(self.nodes[1:])
        self.event(f"{len(self.nodes)} nodes up, bootstrapping from {first.name}")

    def write_wave(self, wave: int) -> None:
        o = self.o
        live = [n for n in self.nodes if not n.down]
        per_wave = o.ops // o.waves + (1 if wave < o.ops % o.waves else 0)
        for k, n in enumerate(live):
            count = per_wave // len(live) + (1 if k < per_wave % len(live) else 0)
            if count > 0:
                n.written += n.append(count)
        self.last_write = time.monotonic()
        total = sum(n.written for n in self.nodes)
        self.event(f"write wave {wave + 1}/{o.waves}: {total} ops acknowledged so far")

    def crash_actor(self, node: _NodeProc, target: str) -> None:
        before = node.restarts
        try:
            with ControlClient(node.data_dir) as client:
                client.call("node", CrashActor(target), _HTTP_TIMEOUT)
        except AuraError as exc:
            raise DemoError(f"could not crash {target} in {node.name}: {exc}") from None
        self.event(f"crashed the {target} actor of {node.name} (InjectCrash)")
        limit = time.monotonic() + 5.0
        while node.restarts <= before and time.monotonic() < limit:
            self.pause(_POLL)
        if node.restarts > before:
            self.event(f"{node.name}: supervisor restarted {target} (restarts={node.restarts})")
        else:
            raise DemoError(f"{node.name} did not report restarting {target}")

    def kill_and_restart(self, node: _NodeProc) -> None:
        node.refresh()
        acked = node.written
        node.kill()
        self.event(f"killed {node.name} with SIGKILL ({acked} own ops acknowledged)")
        self.pause(max(0.5, 2 * self.o.sync_interval))
        node.start(node.listen)
        try:
            self.wait_ready([node])
        except DemoError:
            node.start("127.0.0.1:0")  # the old port was taken meanwhile: any port will do
            self.wait_ready([node])
        node.refresh()
        held = node.own_ops
        lost = max(0, acked - held)
        self.lost += lost
        self.event(
            f"restarted {node.name} from its data directory: {held}/{acked} own ops kept"
            + (f" ({lost} LOST)" if lost else "")
        )

    def converged(self) -> bool:
        expected = sum(n.written for n in self.nodes)
        digests = {n.digest for n in self.nodes}
        return (
            all(not n.down and n.health is not None for n in self.nodes)
            and len(digests) == 1
            and all(n.ops == expected for n in self.nodes)
        )

    def wait_converged(self) -> float | None:
        self.phase = "converging"
        last_state: tuple[Any, ...] = ()
        last_change = time.monotonic()
        while True:
            self.tick()
            if self.converged():
                return time.monotonic() - self.last_write
            state = tuple((n.ops, n.digest) for n in self.nodes)
            now = time.monotonic()
            if state != last_state:
                last_state, last_change = state, now
            elif now - last_change > self.o.stall:
                self.event(f"no progress for {self.o.stall} s: the journals diverge")
                return None
            time.sleep(_POLL)

    def stop_all(self) -> bool:
        self.phase = "stopping"
        for n in self.nodes:
            n.terminate()
        deadline = time.monotonic() + _STOP_TIMEOUT
        clean = True
        for n in self.nodes:
            code = n.reap(deadline)
            if code != 0:
                clean = False
                self.event(f"{n.name} exited with code {code}")
        if clean:
            self.event("every node stopped cleanly on SIGTERM (exit code 0)")
        return clean

    def kill_all(self) -> None:
        for n in self.nodes:
            with contextlib.suppress(Exception):
                n.kill()

    def run(self) -> DemoResult:
        o = self.o
        error: str | None = None
        converge_time: float | None = None
        clean = False
        try:
            self.prepare()
            self.boot()
            self.phase = "writing"
            crash_at = max(0, o.waves // 2 - 1)
            for wave in range(o.waves):
                self.write_wave(wave)
                self.pause(max(0.3, o.sync_interval * 2))
                if o.faults and wave == crash_at:
                    self.phase = "faults"
                    self.crash_actor(self.nodes[1 % len(self.nodes)], "pool")
                    victim = self.nodes[-1] if not o.force_divergence else self.nodes[-2]
                    if victim.index != 0:
                        self.kill_and_restart(victim)
                    self.phase = "writing"
            converge_time = self.wait_converged()
            for n in self.nodes:
                n.refresh()
            clean = self.stop_all()
        except DemoError as exc:
            error = str(exc)
            self.event(f"error: {exc}")
            self.kill_all()
        except BaseException:
            self.kill_all()
            raise
        outcomes = [
            NodeOutcome(
                name=n.name,
                device_id=n.device_id,
                written=n.written,
                own_ops=n.own_ops,
                ops=n.ops,
                digest=n.digest,
                restarts=n.restarts,
                rounds_ok=int(n._get("sync", "rounds_succeeded")),
                rounds_failed=int(n._get("sync", "rounds_failed")),
                exit_code=n.exit_code,
                refuses_sync=n.refuses_sync,
            )
            for n in self.nodes
        ]
        lost = self.lost + sum(max(0, n.written - n.own_ops) for n in outcomes)
        return DemoResult(
            converged=converge_time is not None,
            lost_ops=lost,
            clean_exit=clean,
            elapsed=time.monotonic() - self.start,
            converge_time=converge_time,
            expected_ops=sum(n.written for n in self.nodes),
            nodes=outcomes,
            events=list(self.all_events),
            error=error,
        )


def _free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def _workdir(data_dir: Path | None) -> Iterator[Path]:
    if data_dir is not None:
        data_dir.mkdir(parents=True, exist_ok=True)
        yield data_dir
        return
    with tempfile.TemporaryDirectory(prefix="aura-sync-demo-") as tmp:
        yield Path(tmp)


def run_demo(options: DemoOptions, console: Console | None = None) -> DemoResult:
    """Run the demo (see the module docstring); returns its :class:`DemoResult`.

    Never hangs: the whole run is bounded by ``options.timeout`` plus the
    nodes' stop timeout, and every node process is stopped (killed if it
    must be) before this returns.
    """
    if not isinstance(options, DemoOptions):
        raise WrongType(f"options must be DemoOptions, got {type(options).__name__}")
    console = console or Console()
    with _workdir(options.data_dir) as root:
        demo = _Demo(options, console, root)
        if options.live:
            with Live(
                demo.render(), console=console, refresh_per_second=8, transient=False
            ) as live:
                demo.live = live
                result = demo.run()
                live.update(demo.render())
        else:
            result = demo.run()
        if not result.ok and result.error:
            console.print(f"[red]error:[/red] {result.error}")
    return result
