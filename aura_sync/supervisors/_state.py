"""What outlives a supervisor incarnation (:class:`Persistent`), and the start request.

:class:`Persistent` holds each child's stable address, stash and incarnation
counter, the subscribers and counters; a nested supervisor keeps it in its
parent's ``ChildContext.stash``, so grandchildren keep their addresses and state
when the supervisor in between restarts.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aura_sync.actors._mailbox import LocalMessage
from aura_sync.actors.address import ActorAddress
from aura_sync.messages import Request
from aura_sync.messages.supervision import ChildStatus, ChildType, EventKind, SupervisionEvent
from aura_sync.supervisors.spec import ChildSpec

__all__ = ["ChildInfo"]

STASH_KEY = "aura_sync.supervisor"
"""Key under which a nested supervisor keeps its :class:`Persistent` in its own stash."""


@dataclass(frozen=True, slots=True)
class ChildInfo:
    """One row of ``which_children``: ``address`` None while terminated, ``restarts``
    counts the automatic restarts."""

    id: str
    address: ActorAddress | None
    type: ChildType
    status: ChildStatus
    restarts: int


@dataclass(slots=True, eq=False)
class Slot:
    """A child's identity across restarts: address, stash, incarnation counter."""

    address: ActorAddress
    stash: dict[str, Any] = field(default_factory=dict)
    incarnation: int = 0


class Persistent:
    """Per-supervisor state that survives the supervisor's own restarts (thread-safe)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.slots: dict[str, Slot] = {}
        self.subscribers: list[Callable[[SupervisionEvent], None]] = []
        self.counts: dict[EventKind, int] = dict.fromkeys(EventKind, 0)
        self.restarts: dict[str, int] = {}
        self.incarnation = 0
        # Restart-group tokens and task ids: a BackoffElapsed or Resume of a dead
        # incarnation must never match a group or task of the next one.
        self.tokens = itertools.count(1)
        self.task_ids = itertools.count(1)

    def record(self, event: SupervisionEvent) -> list[Callable[[SupervisionEvent], None]]:
        """Count ``event``; return the subscribers to notify."""
        with self.lock:
            self.counts[event.kind] += 1
            return list(self.subscribers)

    def count_restart(self, child_id: str) -> None:
        """Count one automatic restart (attempt) of ``child_id``."""
        with self.lock:
            self.restarts[child_id] = self.restarts.get(child_id, 0) + 1


@dataclass(frozen=True, slots=True)
class StartChildRequest(LocalMessage, Request[ActorAddress]):
    """Add and start ``spec`` (a callable inside: in-process only, never encoded)."""

    spec: ChildSpec
