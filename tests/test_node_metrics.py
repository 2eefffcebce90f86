"""The metrics/health HTTP endpoint and the key=value log formatter (unit level)."""

from __future__ import annotations

import io
import json
import logging
import socket
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from aura_sync.errors import InvalidArgument
from aura_sync.node.metrics import (
    ChildHealth,
    KeyValueFormatter,
    MetricsServer,
    NodeSnapshot,
    configure_logging,
    kv,
)


class Source:
    def __init__(self) -> None:
        self.rounds = 0
        self.status = "ok"

    def __call__(self) -> NodeSnapshot:
        return NodeSnapshot(
            status=self.status,
            device_id="00000000-0000-0000-0000-000000000001",
            listen_address="127.0.0.1:1",
            uptime=1.5,
            children=(ChildHealth("root/infrastructure/pool", "running", 2),),
            peers_by_status={"CONNECTED": 3, "FAILED": 1},
            messages_handled={"pool": 10 + self.rounds},
            rate_limit={"allowed": 5, "peer_limit_hits": 1},
            pool={"connections_created": 4, "in_use": 1},
            sync={"rounds_succeeded": self.rounds, "ops_pulled": 2 * self.rounds},
            journal={"ops": 42, "digest": "ab"},
            transport={"malformed_frames": 0},
        )


@pytest.fixture
def server() -> Iterator[tuple[MetricsServer, Source]]:
    source = Source()
    srv = MetricsServer(source, 0)
    yield srv, source
    srv.close()


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def post(url: str) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=b"", method="POST")
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_metrics_parse_and_move(server: Any) -> None:
    srv, source = server
    base = f"http://{srv.address}"
    status, body = get(base + "/metrics")
    assert status == 200
    first = samples(body.decode())
    assert first[("aura_sync_sync_rounds_total", (("outcome", "succeeded"),))] == 0
    assert first[("aura_sync_peers", (("status", "CONNECTED"),))] == 3
    assert first[("aura_sync_actor_restarts_total", (("child", "root/infrastructure/pool"),))] == 2
    assert first[("aura_sync_rate_limit_decisions_total", (("decision", "peer_limit"),))] == 1
    assert first[("aura_sync_journal_operations", ())] == 42
    source.rounds = 3
    second = samples(get(base + "/metrics")[1].decode())
    assert second[("aura_sync_sync_rounds_total", (("outcome", "succeeded"),))] == 3
    assert second[("aura_sync_operations_transferred_total", (("direction", "pulled"),))] == 6
    assert second[("aura_sync_messages_handled_total", (("actor", "pool"),))] == 13


def test_health_json_and_status_code(server: Any) -> None:
    srv, source = server
    status, body = get(f"http://{srv.address}/health")
    doc = json.loads(body)
    assert status == 200
    assert doc["status"] == "ok"
    assert doc["children"] == [
        {"name": "root/infrastructure/pool", "status": "running", "restarts": 2}
    ]
    assert doc["restarts_total"] == 2
    assert doc["peers_by_status"]["CONNECTED"] == 3
    source.status = "failed"
    status, body = get(f"http://{srv.address}/health")
    assert status == 503
    assert json.loads(body)["status"] == "failed"
    assert get(f"http://{srv.address}/nope")[0] == 404


def test_nothing_but_get_is_served(server: Any) -> None:
    """Writes and fault injection go through the control socket, never over HTTP."""
    srv, _ = server
    for path in ("/debug/crash?target=pool", "/debug/write?count=5", "/metrics"):
        assert post(f"http://{srv.address}{path}")[0] == 501


def test_per_node_registries_are_independent() -> None:
    a, b = MetricsServer(Source(), 0), MetricsServer(Source(), 0)
    try:
        assert a.registry is not b.registry
        assert get(f"http://{a.address}/metrics")[0] == 200
        assert get(f"http://{b.address}/metrics")[0] == 200
    finally:
        a.close()
        b.close()


def test_bad_arguments() -> None:
    with pytest.raises(InvalidArgument, match="70000"):
        MetricsServer(Source(), 70000)


def test_key_value_formatter_one_line() -> None:
    stream = io.StringIO()
    handler = configure_logging("info", stream)
    try:
        log = logging.getLogger("aura_sync.test")
        log.info("event=round peer=%s ops=%d", "abc", 3)
        log.info("plain text\nwith newline")
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("event=failed %s", kv(reason="two words", n=1))
    finally:
        logging.getLogger().removeHandler(handler)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 3
    assert "level=INFO logger=aura_sync.test event=round peer=abc ops=3" in lines[0]
    assert 'event=log msg="plain text\\nwith newline"' in lines[1]
    assert 'event=failed reason="two words" n=1 exc_type=ValueError exc_message=boom' in lines[2]
    assert 'traceback="Traceback (most recent call last):\\n' in lines[2]
    assert (
        KeyValueFormatter()
        .format(logging.LogRecord("x", logging.WARNING, __file__, 1, "event=x", None, None))
        .endswith("level=WARNING logger=x event=x")
    )


@pytest.mark.parametrize("length", ["-1", "abc", "999999999"])
def test_a_post_with_any_content_length_gets_an_answer_and_the_server_keeps_serving(
    server: Any, length: str
) -> None:
    srv, _ = server
    host, port = srv.address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(
            f"POST /debug/crash HTTP/1.1\r\nHost: x\r\nContent-Length: {length}\r\n\r\n".encode()
        )
        reply = b""
        while chunk := sock.recv(4096):  # the server answers and closes; it does not wait
            reply += chunk
    status_line = reply.split(b"\r\n", 1)[0].split()
    assert status_line[1] == b"501"  # answered without reading a body it cannot bound
    assert get(f"http://{srv.address}/health")[0] == 200


# --- the exposition's conventions (what promtool check metrics and dashboards rely on) -------


def families(text: str) -> dict[str, Any]:
    return {f.name: f for f in text_string_to_metric_families(text)}


def test_exposition_follows_the_prometheus_conventions() -> None:
    from prometheus_client import generate_latest

    from aura_sync.infrastructure.peers import PeerStatus
    from aura_sync.node.metrics import NODE_STATUSES, NodeMetrics

    source = Source()
    metrics = NodeMetrics(source)
    text = generate_latest(metrics.registry).decode()
    fams = families(text)
    for name, fam in fams.items():
        if fam.type == "counter":  # the parser strips _total; the exposition has it
            assert f"{name}_total" in text, name
        if fam.type == "gauge":
            assert not name.endswith("_total"), name
    got = samples(text)
    # byte counts are counters of their own, not a label of the event counter
    assert got[("aura_sync_transport_sent_bytes_total", ())] == 0
    assert got[("aura_sync_transport_received_bytes_total", ())] == 0
    assert all("bytes" not in dict(labels).get("kind", "") for _, labels in got)
    # every status series exists, at 0 when no peer has it
    for status in PeerStatus:
        assert ("aura_sync_peers", (("status", status.name),)) in got
    assert got[("aura_sync_peers", (("status", "DISCONNECTED"),))] == 0
    assert got[("aura_sync_peers", (("status", "CONNECTED"),))] == 3
    assert {dict(lb)["status"] for n, lb in got if n == "aura_sync_node_status"} == set(
        NODE_STATUSES
    )
    assert got[("aura_sync_node_status", (("status", "ok"),))] == 1
    # the info metric's labels do not change when the status does
    info = [lb for n, lb in got if n == "aura_sync_node_info"]
    source.status = "degraded"
    after = samples(generate_latest(metrics.registry).decode())
    assert [lb for n, lb in after if n == "aura_sync_node_info"] == info
    assert after[("aura_sync_node_status", (("status", "degraded"),))] == 1
    assert after[("aura_sync_node_status", (("status", "ok"),))] == 0
    assert after[("aura_sync_up", ())] == 0
    # process and platform collectors
    assert "process_cpu_seconds" in fams and "python_info" in fams


def test_histograms_exist_from_the_start_and_record() -> None:
    from prometheus_client import generate_latest

    from aura_sync.node.metrics import INFRASTRUCTURE_ACTORS, NodeMetrics

    metrics = NodeMetrics(Source(), process_metrics=False)
    got = samples(generate_latest(metrics.registry).decode())
    for actor in INFRASTRUCTURE_ACTORS:
        key = ("aura_sync_infrastructure_ask_duration_seconds_count", (("actor", actor),))
        assert got[key] == 0
    for outcome in ("succeeded", "failed"):
        assert got[("aura_sync_sync_session_duration_seconds_count", (("outcome", outcome),))] == 0
    assert got[("aura_sync_served_request_duration_seconds_count", ())] == 0
    assert "process_cpu_seconds_total" not in generate_latest(metrics.registry).decode()

    metrics.observe_sync_session(0.3, success=True)
    metrics.observe_sync_session(7.0, success=False)
    metrics.observe_served_request(0.002)
    metrics.observe_ask("pool", 0.0004)
    got = samples(generate_latest(metrics.registry).decode())
    ok = (("outcome", "succeeded"),)
    assert got[("aura_sync_sync_session_duration_seconds_count", ok)] == 1
    assert got[("aura_sync_sync_session_duration_seconds_sum", ok)] == pytest.approx(0.3)
    le = (("le", "0.25"), ("outcome", "succeeded"))
    assert got[("aura_sync_sync_session_duration_seconds_bucket", le)] == 0
    le = (("le", "0.5"), ("outcome", "succeeded"))
    assert got[("aura_sync_sync_session_duration_seconds_bucket", le)] == 1
    failed = (("outcome", "failed"),)
    assert got[("aura_sync_sync_session_duration_seconds_count", failed)] == 1
    assert got[("aura_sync_served_request_duration_seconds_count", ())] == 1
    pool = (("actor", "pool"),)
    assert got[("aura_sync_infrastructure_ask_duration_seconds_count", pool)] == 1
    bucket = (("actor", "pool"), ("le", "0.0005"))
    assert got[("aura_sync_infrastructure_ask_duration_seconds_bucket", bucket)] == 1


def test_server_binds_the_host_it_is_given_and_shares_the_node_metrics() -> None:
    from aura_sync.node.metrics import NodeMetrics

    metrics = NodeMetrics(Source(), process_metrics=False)
    srv = MetricsServer(Source(), 0, host="127.0.0.2", metrics=metrics)
    try:
        assert srv.address.startswith("127.0.0.2:")
        assert srv.registry is metrics.registry
        metrics.observe_ask("cache", 0.001)
        status, body = get(f"http://{srv.address}/metrics")
        assert status == 200
        key = ("aura_sync_infrastructure_ask_duration_seconds_count", (("actor", "cache"),))
        assert samples(body.decode())[key] == 1
    finally:
        srv.close()


def test_json_log_lines_carry_fields_and_a_structured_traceback() -> None:
    stream = io.StringIO()
    handler = configure_logging("debug", stream, fmt="json")
    try:
        log = logging.getLogger("aura_sync.test")
        log.info("event=round peer=%s ops=%d %s", "abc", 3, kv(note="two words"))
        log.warning("plain text")
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("event=failed")
    finally:
        logging.getLogger().removeHandler(handler)
    docs = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert len(docs) == 3
    first = docs[0]
    assert first["level"] == "INFO" and first["logger"] == "aura_sync.test"
    assert (first["event"], first["peer"], first["ops"], first["note"]) == (
        "round", "abc", "3", "two words"
    )  # fmt: skip
    assert docs[1]["event"] == "log" and docs[1]["msg"] == "plain text"
    assert docs[2]["event"] == "failed"
    assert (docs[2]["exc_type"], docs[2]["exc_message"]) == ("ValueError", "boom")
    assert docs[2]["traceback"][0] == "Traceback (most recent call last):"
    assert docs[2]["traceback"][-1] == "ValueError: boom"


def test_log_format_is_checked() -> None:
    with pytest.raises(InvalidArgument, match="xml"):
        configure_logging("info", io.StringIO(), fmt="xml")


def test_grafana_dashboard_queries_only_exported_metrics() -> None:
    import re
    from pathlib import Path

    from prometheus_client import generate_latest

    from aura_sync.node.metrics import NodeMetrics

    dashboard = Path(__file__).resolve().parent.parent / "docs" / "grafana-dashboard.json"
    doc = json.loads(dashboard.read_text())
    exprs = [t["expr"] for panel in doc["panels"] for t in panel["targets"]]
    names = {n for e in exprs for n in re.findall(r"\b((?:aura_sync|process)_[a-z_]+)", e)}
    exported = {s for s, _ in samples(generate_latest(NodeMetrics(Source()).registry).decode())}
    assert len(names) >= 10
    assert sorted(names - exported) == []


def test_syncing_nodes_record_session_served_and_ask_durations(tmp_path: Any) -> None:
    from _node_helpers import make_node, wait_until
    from prometheus_client import generate_latest

    a = make_node(tmp_path / "a")
    b = make_node(tmp_path / "b", bootstrap=[a.bootstrap_address])
    try:
        a.append([b"one", b"two"])
        wait_until(lambda: len(b.journal) == 2, 30.0, "b to pull a's ops")

        def count(node: Any, name: str, labels: tuple[tuple[str, str], ...] = ()) -> float:
            return samples(generate_latest(node.metrics.registry).decode()).get((name, labels), 0)

        ok = (("outcome", "succeeded"),)
        wait_until(
            lambda: count(b, "aura_sync_sync_session_duration_seconds_count", ok) >= 1,
            10.0,
            "a recorded session",
        )
        wait_until(
            lambda: count(a, "aura_sync_served_request_duration_seconds_count") >= 1,
            10.0,
            "a served request",
        )
        a.snapshot()  # the node's own asks to its actors
        pool = (("actor", "pool"),)
        assert count(a, "aura_sync_infrastructure_ask_duration_seconds_count", pool) >= 1
    finally:
        b.stop()
        a.stop()


# --- gossip -----------------------------------------------------------------------------------


def _gossip_stats(**counters: int) -> Any:
    from aura_sync.messages.gossip import GossipStats

    return GossipStats(tuple(counters.items()), (("chat", 2),), seen=7, cached=3)


def test_gossip_families_follow_the_conventions_and_keep_the_last_answer() -> None:
    from prometheus_client import generate_latest

    from aura_sync.errors import AskTimeout
    from aura_sync.node.metrics import NodeMetrics

    answers: list[Any] = [_gossip_stats(published=2, duplicates=5, rate_limited=1, iwant_sent=4)]

    def source() -> Any:
        answer = answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer

    metrics = NodeMetrics(Source(), process_metrics=False, gossip=source)
    text = generate_latest(metrics.registry).decode()
    for name, fam in families(text).items():
        if name.startswith("aura_sync_gossip") and fam.type == "counter":
            assert f"{name}_total" in text, name
    got = samples(text)
    assert got[("aura_sync_gossip_published_total", ())] == 2
    assert got[("aura_sync_gossip_duplicates_total", ())] == 5
    assert got[("aura_sync_gossip_delivered_total", ())] == 0  # absent counters export 0
    assert got[("aura_sync_gossip_refused_total", (("reason", "rate_limited"),))] == 1
    assert got[("aura_sync_gossip_refused_total", (("reason", "invalid"),))] == 0
    assert got[("aura_sync_gossip_repair_messages_total", (("kind", "iwant"),))] == 4
    assert got[("aura_sync_gossip_seen_cache_ids", ())] == 7
    assert got[("aura_sync_gossip_cached_messages", ())] == 3
    answers[0] = AskTimeout("the gossip actor is restarting")
    assert samples(generate_latest(metrics.registry).decode()) == got  # the last answer
    answers[0] = None  # no gossip on this node: no gossip series at all
    plain = NodeMetrics(Source(), process_metrics=False, gossip=source)
    assert "aura_sync_gossip" not in generate_latest(plain.registry).decode()


def test_the_metrics_reference_lists_every_exported_family() -> None:
    """docs/metrics.md names each aura_sync_* family a node exports, and no other."""
    import re
    from pathlib import Path

    from prometheus_client import generate_latest

    from aura_sync.node.metrics import NodeMetrics

    metrics = NodeMetrics(Source(), process_metrics=False, gossip=_gossip_stats)
    exported = set()
    for name, fam in families(generate_latest(metrics.registry).decode()).items():
        if fam.type == "counter":
            exported.add(f"{name}_total")
        elif not name.endswith("_created"):  # prometheus-client's creation time of a series
            exported.add(name)
    doc = (Path(__file__).parent.parent / "docs" / "metrics.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"^\| `(aura_sync_[a-z_]+)` \|", doc, flags=re.MULTILINE))
    assert exported == documented
