"""Row group 7, node: anti-entropy between nodes over loopback TCP.

Planned rows (issue 4): anti-entropy operations per second between two nodes
over loopback TCP, and the time for five nodes to converge on 10 000
operations.  They need :mod:`aura_sync.node`, which has not landed; until it
does, the group records clean "not available yet" rows.
"""

from __future__ import annotations

from bench._harness import Context, optional_module

ROWS = (
    "anti-entropy ops/s, 2 nodes over loopback TCP",
    "5 nodes converge on 10,000 operations",
)


def run(ctx: Context) -> None:
    """Record the node rows as not available until the node runtime exists."""
    node, why = optional_module("aura_sync.node")
    if node is not None:
        why = "not available yet: aura_sync.node exists, the multi-node benchmark is not written"
    for name in ROWS:
        ctx.unavailable(name, why)
