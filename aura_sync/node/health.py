"""The node's health and status snapshot: what ``/health`` and ``/metrics`` report.

:func:`take_snapshot` asks each actor with a short timeout (blocking: called
from the metrics server's thread, never from an actor); an actor that does
not answer makes the status ``degraded`` instead of failing the snapshot, and
a dead transport I/O loop makes it ``failed``.  ``reasons`` names each cause
of ``degraded``: ``unresponsive`` (an actor did not answer),
``journal_unwritable`` (the latest journal write failed),
``sync_stalled`` (``stalled_intervals`` rounds in a row found peers and no
session succeeded), ``connection_slots_exhausted`` / ``send_buffers_exhausted``
(the transport refused for want of them, or they are full) and
``shedding_inbound`` (admission denies more than ``shedding_above`` of the
recent peer requests).

Layer: runtime.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from aura_sync.actors.address import ActorAddress
from aura_sync.errors import AuraError
from aura_sync.infrastructure.connections import PoolStatistics
from aura_sync.infrastructure.peers import PeerTableSnapshot
from aura_sync.infrastructure.rate_limit import RateLimiterStatistics
from aura_sync.messages.peers import GetPeerTable, ListBans
from aura_sync.messages.pool import GetPoolStatistics
from aura_sync.messages.rate_limit import GetRateLimiterStatistics
from aura_sync.messages.supervision import ChildType
from aura_sync.messages.sync import GetSyncStatus
from aura_sync.node.metrics import ChildHealth, NodeSnapshot
from aura_sync.protocols.admission import AdmissionConfig
from aura_sync.supervisors import Supervisor
from aura_sync.transport.base import Transport

__all__ = ["SNAPSHOT_ASK", "SnapshotSources", "take_snapshot"]

SNAPSHOT_ASK: Final = 1.0
"""Seconds each ask of a snapshot may take."""


@dataclass(frozen=True, slots=True)
class SnapshotSources:
    """Where a snapshot's figures come from (``addresses`` by actor name, once started)."""

    status: str
    device_id: str
    listen_address: str
    uptime: float
    addresses: dict[str, ActorAddress]
    root: Supervisor | None
    nested: dict[str, Supervisor | None]
    transport: Transport | None
    refusals: int
    transport_failure: str | None
    observe: Callable[[str, float], None]
    """``observe(actor name, seconds)``: records how long an ask took."""
    now: Callable[[], float] = time.monotonic
    """The node's clock (the peer manager's ban deadlines are in its seconds)."""
    defence: AdmissionConfig = field(default_factory=AdmissionConfig)
    """The health thresholds (``stalled_intervals``, ``shedding_above``)."""


def take_snapshot(src: SnapshotSources) -> NodeSnapshot:
    """Everything ``/health`` and ``/metrics`` report (see the module docstring)."""
    status = src.status
    sync: dict[str, int] = {}
    journal: dict[str, Any] = {}
    peers: dict[str, int] = {}
    pool: dict[str, int] = {}
    rate: dict[str, int] = {}
    handled: dict[str, int] = {}
    children: list[ChildHealth] = []
    trust: dict[str, int] = {}
    bans: dict[str, dict[str, Any]] = {}
    degraded = False
    if status == "ok":
        ae = src.addresses["anti_entropy"]
        started = time.monotonic()
        try:
            st = ae.call(GetSyncStatus(), SNAPSHOT_ASK)
            sync = dict(st.counters)
            handled[ae.name] = sync.pop("messages_handled", 0)
            handled.update(st.answered)
            journal = {
                "ops": st.journal_ops,
                "own_ops": st.own_ops,
                "digest": st.digest.hex(),
                "epoch": st.epoch,
            }
            sync["connected_peers"] = st.connected
            sync["authorized_peers"] = st.authorized
            sync["active_sessions"] = st.active_sessions
        except AuraError:
            degraded = True
        finally:
            src.observe("anti_entropy", time.monotonic() - started)
        table = _ask_quiet(src, "peer_manager", GetPeerTable())
        if isinstance(table, PeerTableSnapshot):
            for info in table.peers:
                name = info.metadata.status.name
                peers[name] = peers.get(name, 0) + 1
                trust[str(info.peer_id)] = info.metadata.trust_level
            bans = _bans(src)
        else:
            degraded = True
        stats = _ask_quiet(src, "pool", GetPoolStatistics())
        if isinstance(stats, PoolStatistics):
            pool = {name: int(getattr(stats, name)) for name in stats.__dataclass_fields__}
        else:
            degraded = True
        limiter = _rate_limit_statistics(src.addresses["rate_limiter"])
        if limiter is None:
            degraded = True
        else:
            rate = limiter
        try:
            children = _children(src.root, src.nested) if src.root is not None else []
        except AuraError:
            degraded = True
    transport: dict[str, int] = {}
    if src.transport is not None:
        snap = src.transport.stats()
        transport = {name: int(getattr(snap, name)) for name in snap.__dataclass_fields__}
    transport["refused_connections"] = src.refusals
    reasons = ["unresponsive"] if degraded else []
    if status == "ok":
        reasons += _reasons(src, sync, peers)
    if status == "ok" and reasons:
        status = "degraded"
    if status in ("ok", "degraded") and src.transport_failure is not None:
        status = "failed"
    return NodeSnapshot(
        status=status,
        device_id=src.device_id,
        listen_address=src.listen_address,
        uptime=src.uptime,
        children=tuple(children),
        peers_by_status=peers,
        messages_handled=handled,
        rate_limit=rate,
        pool=pool,
        sync=sync,
        journal=journal,
        transport=transport,
        peer_trust=trust,
        bans=bans,
        reasons=tuple(reasons),
    )


def _reasons(src: SnapshotSources, sync: dict[str, int], peers: dict[str, int]) -> list[str]:
    """The named reasons for "degraded" besides an actor that did not answer."""
    out = []
    if sync.get("journal_write_failing"):
        out.append("journal_unwritable")
    known = sum(n for status, n in peers.items() if status != "REMOVED")
    if known and sync.get("ticks_without_success", 0) >= src.defence.stalled_intervals:
        out.append("sync_stalled")
    accessor = getattr(src.transport, "admission_status", None)
    if callable(accessor):
        slots = accessor()
        if slots.exhausted is not None:
            kind = "send_buffers" if "buffer" in slots.exhausted else "connection_slots"
            out.append(f"{kind}_exhausted")
        elif slots.established >= slots.max_established:
            out.append("connection_slots_exhausted")
        elif slots.send_buffer_bytes >= slots.max_total_send_buffer:
            out.append("send_buffers_exhausted")
    if sync.get("shed_permille", 0) > 1000 * src.defence.shedding_above:
        out.append("shedding_inbound")
    return out


def _bans(src: SnapshotSources) -> dict[str, dict[str, Any]]:
    """The peer manager's bans in force, by peer (seconds left on the wall clock)."""
    found = _ask_quiet(src, "peer_manager", ListBans())
    if not isinstance(found, tuple):
        return {}
    now = src.now()
    return {
        str(b.peer_id): {
            "seconds_left": round(max(b.until - now, 0.0), 3),
            "bans": b.bans,
            "reason": b.reason,
            "address": b.address,
        }
        for b in found
    }


def _ask_quiet(src: SnapshotSources, name: str, msg: Any) -> Any:
    started = time.monotonic()
    try:
        return src.addresses[name].ask(msg, SNAPSHOT_ASK)
    except AuraError:
        return None
    finally:
        src.observe(name, time.monotonic() - started)


def _children(root: Supervisor, nested: dict[str, Supervisor | None]) -> list[ChildHealth]:
    out: list[ChildHealth] = []

    def walk(sup: Supervisor, prefix: str) -> None:
        for child in sup.which_children(SNAPSHOT_ASK):
            path = f"{prefix}/{child.id}"
            out.append(ChildHealth(path, child.status.value, child.restarts))
            inner = nested.get(child.id) if child.type is ChildType.SUPERVISOR else None
            if inner is not None and child.address is not None:
                walk(inner, path)

    walk(root, "root")
    return out


def _rate_limit_statistics(address: ActorAddress) -> dict[str, int] | None:
    """The rate limiter's decision counters (None if it did not answer in time)."""
    try:
        reply = address.ask(GetRateLimiterStatistics(), SNAPSHOT_ASK)
    except AuraError:
        return None
    if not isinstance(reply, RateLimiterStatistics):
        return None
    return {
        "allowed": reply.operations_allowed,
        "global_limit_hits": reply.global_limit_hits,
        "peer_limit_hits": reply.peer_limit_hits,
        "flow_budget_hits": reply.flow_budget_hits,
        "tracked_peers": reply.tracked_peers,
    }
