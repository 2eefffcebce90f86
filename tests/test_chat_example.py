"""examples/chat.py: two chat processes on loopback exchange lines over gossip."""

from __future__ import annotations

import queue
import subprocess
import sys
import threading
import time
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "chat.py"


class Chat:
    def __init__(self, data_dir: Path, name: str, *peers: str) -> None:
        argv = [sys.executable, str(EXAMPLE), "--data-dir", str(data_dir), "--name", name]
        for peer in peers:
            argv += ["--peer", peer]
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1
        )
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))

    def expect(self, prefix: str, timeout: float = 30.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no line starting with {prefix!r}") from None
            if line.startswith(prefix):
                return line

    def say(self, text: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()

    def close(self) -> int:
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            self.proc.stdin.close()
        try:
            return self.proc.wait(20.0)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise


def test_the_example_is_short() -> None:
    assert len(EXAMPLE.read_text(encoding="utf-8").splitlines()) < 100


def test_two_chats_on_loopback_talk(tmp_path: Path) -> None:
    alice = Chat(tmp_path / "alice", "alice")
    bob = None
    try:
        address = alice.expect("address ").removeprefix("address ")
        bob = Chat(tmp_path / "bob", "bob", address)
        bob.expect("address ")
        alice.expect("joined")
        bob.expect("joined")
        bob.say("hello alice")
        assert alice.expect("bob:") == "bob: hello alice"
        alice.say("hi bob")
        assert bob.expect("alice:") == "alice: hi bob"
        assert bob.close() == 0
        assert alice.close() == 0
    finally:
        for chat in (alice, bob):
            if chat is not None and chat.proc.poll() is None:
                chat.proc.kill()
