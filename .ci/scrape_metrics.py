"""Start one real node, print its ``/metrics`` exposition to stdout, stop it (for promtool).

Usage: ``python .ci/scrape_metrics.py`` (uses the ``aura-sync`` of the running
interpreter's environment; a temporary data directory; loopback ports only).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="aura-ci-") as tmp:
        ready = Path(tmp) / "ready.json"
        config = Path(tmp) / "node.toml"
        config.write_text('protocols = ["gossip"]\n')  # its families are checked too
        cmd = [
            str(Path(sys.executable).parent / "aura-sync"),
            "node",
            "--config",
            str(config),
            "--data-dir",
            f"{tmp}/node",
            "--listen",
            "127.0.0.1:0",
            "--metrics-port",
            "0",
            "--ready-file",
            str(ready),
            "--log-level",
            "WARNING",
        ]
        proc = subprocess.Popen(cmd)
        try:
            deadline = time.monotonic() + 60
            while not ready.exists():
                if proc.poll() is not None or time.monotonic() > deadline:
                    print(
                        f"scrape_metrics: the node did not start (exit {proc.poll()})",
                        file=sys.stderr,
                    )
                    return 1
                time.sleep(0.1)
            metrics = json.loads(ready.read_text())["metrics"]
            with urllib.request.urlopen(f"http://{metrics}/metrics", timeout=10) as resp:
                sys.stdout.write(resp.read().decode("utf-8"))
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
