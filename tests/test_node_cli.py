"""The node's command line: bad configuration, a corrupt journal, status, token and id."""

from __future__ import annotations

import base64
import http.server
import socket
import threading
from pathlib import Path

import pytest
from _node_helpers import make_node

from aura_sync.cli import main
from aura_sync.errors import JournalCorrupt
from aura_sync.identity import NodeIdentity
from aura_sync.infrastructure.capabilities import verify_capability_token
from aura_sync.node.config import load_config
from aura_sync.node.node import JOURNAL_FILE, Node


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["--batch-size", "500"], ["batch_size", "500"]),
        (["--sync-interval", "-2"], ["sync_interval", "-2"]),
        (["--listen", "no-port"], ["listen", "no-port"]),
        (["--bootstrap", "127.0.0.1:7400"], ["bootstrap", "127.0.0.1:7400"]),
        (["--metrics-port", "99999"], ["metrics_port", "99999"]),
        (["--log-level", "chatty"], ["log_level", "chatty"]),
    ],
)
def test_bad_flags_stop_the_node_naming_key_and_value(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], needles: list[str]
) -> None:
    code = main(["node", "--data-dir", str(tmp_path / "d"), *args])
    err = capsys.readouterr().err
    assert code == 2
    assert "configuration error" in err
    for needle in needles:
        assert needle in err, err
    assert not (tmp_path / "d").exists()  # nothing was started or created


def test_bad_config_file_stops_the_node(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "node.toml"
    config.write_text('[pool]\nmax_total_connections = "lots"\n')
    assert main(["node", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "pool.max_total_connections" in err and "'lots'" in err
    assert main(["node", "--config", str(tmp_path / "missing.toml")]) == 2
    assert "missing.toml" in capsys.readouterr().err


def test_corrupt_journal_is_reported_at_start_and_left_alone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "d"
    data.mkdir(mode=0o700)
    journal = data / JOURNAL_FILE
    garbage = b"this is not a database" * 100
    journal.write_bytes(garbage)
    with pytest.raises(JournalCorrupt, match=JOURNAL_FILE):
        Node(load_config(None, {"data_dir": str(data), "listen": "127.0.0.1:0"})).start()
    code = main(["node", "--data-dir", str(data), "--listen", "127.0.0.1:0"])
    err = capsys.readouterr().err
    assert code == 3
    assert "cannot start" in err and JOURNAL_FILE in err
    assert journal.read_bytes() == garbage  # never silently rewritten


def test_listen_address_in_use_is_a_start_failure(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first = make_node(tmp_path / "a")
    try:
        code = main(["node", "--data-dir", str(tmp_path / "b"), "--listen", first.listen_address])
        assert code == 2
        err = capsys.readouterr().err
        assert first.listen_address in err and "cannot listen" in err
        assert "configuration error" not in err and "Traceback" not in err
        assert [line for line in err.splitlines() if "cannot listen" in line] == [
            f"aura-sync node: cannot listen on '{first.listen_address}' (config key listen): "
            "Address already in use"
        ]
    finally:
        first.stop()


def test_status_of_a_running_node(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    node = make_node(tmp_path / "a", metrics_port=0)
    try:
        node.append([b"x"])
        assert main(["status", node.metrics_address or ""]) == 0
        out = capsys.readouterr().out
        assert str(node.device_id) in out
        assert "root/infrastructure/pool" in out
        assert main(["status", "--json", node.metrics_address or ""]) == 0
        assert '"ops": 1' in capsys.readouterr().out
    finally:
        node.stop()
    assert main(["status", node.metrics_address or ""]) == 1
    assert "cannot reach" in capsys.readouterr().err


def test_token_keygen_issue_and_id(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key_file = tmp_path / "authority.key"
    assert main(["token", "keygen", "--out", str(key_file)]) == 0
    public = bytes.fromhex(capsys.readouterr().out.split("public_key = ")[1].strip())
    assert oct(key_file.stat().st_mode & 0o777) == "0o600"
    assert main(["id", "--data-dir", str(tmp_path / "n")]) == 0
    device = capsys.readouterr().out.strip()
    assert device == str(NodeIdentity.load_or_create(tmp_path / "n").device_id)
    token_file = tmp_path / "token"
    args = ["token", "issue", "--authority-key-file", str(key_file), "--subject", device]
    assert main([*args, "--out", str(token_file)]) == 0
    raw = base64.urlsafe_b64decode(token_file.read_text().strip() + "==")
    ident = NodeIdentity.load_or_create(tmp_path / "n").device_id
    assert verify_capability_token(raw, public, subject=ident) == ("sync:request_digest",)
    assert main(["token", "issue", "--authority-key", "zz"]) != 0
    assert main(["token", "issue"]) != 0


def test_help_on_every_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    for args in (["node"], ["demo"], ["status"], ["token"], ["token", "issue"], ["id"]):
        assert main([*args, "--help"]) == 0
        assert "Usage" in capsys.readouterr().out


def test_cli_errors_are_one_clear_line_not_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key_file = tmp_path / "authority.key"
    assert main(["token", "keygen", "--out", str(key_file)]) == 0
    before = key_file.read_bytes()
    capsys.readouterr()
    assert main(["token", "keygen", "--out", str(key_file)]) == 1
    assert "already exists" in capsys.readouterr().err
    assert key_file.read_bytes() == before  # an existing key is never overwritten

    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    assert main(["id", "--data-dir", str(blocker / "sub")]) == 1
    err = capsys.readouterr().err
    assert str(blocker / "sub") in err and "Traceback" not in err

    issue = ["token", "issue", "--authority-key-file", str(key_file)]
    assert main([*issue, "--subject", "bogus"]) == 2
    err = capsys.readouterr().err
    assert "--subject" in err and "bogus" in err
    assert main([*issue, "--out", str(blocker / "tok")]) == 1
    assert str(blocker / "tok") in capsys.readouterr().err
    token_file = tmp_path / "tok"
    assert main([*issue, "--out", str(token_file)]) == 0
    assert oct(token_file.stat().st_mode & 0o777) == "0o600"  # a token is a credential

    # the demo checks its log level before starting any node
    assert main(["demo", "--log-level", "chatty", "--no-live"]) == 2
    err = capsys.readouterr().err
    assert "--log-level" in err and "chatty" in err


def test_unwritable_ready_file_is_a_clear_start_failure(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    ready = blocker / "ready.json"
    args = ["node", "--data-dir", str(tmp_path / "d"), "--listen", "127.0.0.1:0"]
    assert main([*args, "--ready-file", str(ready)]) == 2
    err = capsys.readouterr().err
    assert str(ready) in err and "Traceback" not in err


def test_metrics_port_in_use_names_the_key_and_the_port(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        args = ["node", "--data-dir", str(tmp_path / "d"), "--listen", "127.0.0.1:0"]
        assert main([*args, "--metrics-port", str(port)]) == 2
    err = capsys.readouterr().err
    assert "metrics_port" in err and str(port) in err and "Traceback" not in err
    assert "cannot listen" in err and "configuration error" not in err
    assert len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize("body", [b"[]", b"not json", b'{"hello": 1}'])
def test_status_of_something_that_is_not_a_node(
    capsys: pytest.CaptureFixture[str], body: bytes
) -> None:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        assert main(["status", f"127.0.0.1:{server.server_address[1]}"]) == 1
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
    err = capsys.readouterr().err
    assert "not" in err and "health document" in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("addr", "hint"),
    [
        ("9100", "127.0.0.1:9100"),
        ("localhost", "localhost:9100"),
        ("127.0.0.1:99999", "127.0.0.1:9100"),
        ("node-a:9100/metrics", "node-a:9100"),
    ],
)
def test_status_checks_its_address_and_shows_the_form_it_wants(
    capsys: pytest.CaptureFixture[str], addr: str, hint: str
) -> None:
    assert main(["status", addr]) == 2  # a usage error: nothing was sent anywhere
    err = capsys.readouterr().err
    assert f"{addr!r} is not a metrics address: give HOST:PORT, e.g. {hint}" in err
