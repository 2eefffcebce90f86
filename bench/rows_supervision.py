"""Row group 6, supervision: crash-to-serving latency and messages lost across restarts.

Rows (issue 4; need :mod:`aura_sync.supervisors` and :mod:`aura_sync.actors`):

- crash-to-serving latency p50/p99 (target p99 <= 2 ms): a supervised actor
  is crashed by a poison message, and the time until the same address
  answers an ask again is measured; baseline: stopping and starting a raw
  pykka actor by hand (what a user without a supervisor does);
- messages lost across restarts (must be 0): messages told to the child
  while it restarts, counted on the other side.

Until the supervisor lands the group records clean "not available yet" rows.
"""

from __future__ import annotations

from bench._harness import Context, optional_module

ROWS = (
    "crash-to-serving latency vs raw pykka stop+start",
    "messages lost across restarts",
)


def run(ctx: Context) -> None:
    """Record the supervision rows (not available until the supervisor lands)."""
    sup, why = optional_module("aura_sync.supervisors", "Supervisor", "ChildSpec")
    if sup is not None:
        why = "aura_sync.supervisors landed; rows not wired yet"
    for name in ROWS:
        ctx.unavailable(name, why)
