"""A terminal chat over gossip: every line typed goes to everyone on the topic.

    python examples/chat.py --data-dir /tmp/alice --name alice
    python examples/chat.py --data-dir /tmp/bob --name bob --peer <alice's address line>

Each node prints ``address <device-id>@host:port`` (what the others pass to
``--peer``), then ``joined`` once a peer shares the topic; received lines are
printed as ``name: text``.  End with Ctrl-D (end of input).
"""

from __future__ import annotations

import argparse
import sys
import threading

from aura_sync.node.config import load_config
from aura_sync.node.node import Node


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="a terminal chat over aura-sync gossip")
    parser.add_argument("--data-dir", required=True, help="this node's state directory")
    parser.add_argument("--listen", default="127.0.0.1:0", help="host:port (0 = any port)")
    parser.add_argument("--peer", action="append", default=[], help="<device-id>@host:port")
    parser.add_argument("--name", help="shown before your lines (default: your id)")
    parser.add_argument("--topic", default="chat")
    args = parser.parse_args(argv)
    config = load_config(
        None,
        {
            "data_dir": args.data_dir,
            "listen": args.listen,
            "bootstrap": args.peer,
            "protocols": ["gossip"],
            "sync_interval": 0.5,
        },
    )
    with Node(config) as node:
        name = args.name or str(node.device_id)[:8]
        print(f"address {node.bootstrap_address}", flush=True)
        done = threading.Event()
        with node.gossip.subscribe(args.topic) as inbox:

            def show() -> None:  # a thread of its own: printing may block, actors must not
                joined = False
                while not done.is_set():
                    msg = inbox.get(timeout=0.2)
                    if msg is not None:
                        print(msg.payload.decode("utf-8", "replace"), flush=True)
                    if not joined and dict(node.gossip.stats().mesh).get(args.topic, 0):
                        joined = True
                        print("joined", flush=True)

            printer = threading.Thread(target=show, daemon=True)
            printer.start()
            for line in sys.stdin:
                text = line.rstrip("\n")
                if text:
                    node.gossip.publish(args.topic, f"{name}: {text}".encode())
            done.set()
            printer.join(2.0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
