"""`edge-app dashboard` refuses unsafe or impossible settings with a clear error (exit 2)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from edge_app.cli import main


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run(tmp_path: Path, *args: str) -> int:
    db = str(tmp_path / "h.sqlite3")
    return main(["dashboard", "--db", db, "--broker", f"mqtt://127.0.0.1:{closed_port()}", *args])


def test_network_bind_without_token_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("EDGE_DASHBOARD_TOKEN", raising=False)
    assert run(tmp_path, "--bind", "0.0.0.0:0") == 2
    assert "--token" in capsys.readouterr().err


def test_unreachable_broker_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(tmp_path, "--bind", "127.0.0.1:0") == 2
    assert "broker" in capsys.readouterr().err.lower()


def test_bad_arguments(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(tmp_path, "--bind", "nowhere") == 2
    assert run(tmp_path, "--bind", "127.0.0.1:0", "--discovery-prefix", "home/#") == 2
    junk = tmp_path / "junk.sqlite3"
    junk.write_bytes(b"not a database" * 64)
    assert main(["dashboard", "--db", str(junk), "--bind", "127.0.0.1:0"]) == 2
    err = capsys.readouterr().err
    assert "HOST:PORT" in err and "discovery prefix" in err and "history" in err


@pytest.mark.parametrize("days", ["0", "-1", "nan"])
def test_history_must_be_kept_for_some_time(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], days: str
) -> None:
    """A non-positive age would delete the whole history at every prune."""
    assert run(tmp_path, "--bind", "127.0.0.1:0", "--history-days", days) == 2
    assert "--history-days" in capsys.readouterr().err
