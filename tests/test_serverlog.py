"""The server log: parseable listening line at every level, JSON Lines, no raw control codes."""

from __future__ import annotations

import io
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chatctl.server.log import ServerLog, find_listening


def test_listening_is_logged_even_when_quiet() -> None:
    for fmt in ("rich", "json"):
        out = io.StringIO()
        journal = ServerLog("error", fmt, out)
        journal.info("hello", "not shown")
        journal.listening("::1", 4242, "[::1]:4242")
        assert "listening on [::1]:4242" in out.getvalue()
        assert "not shown" not in out.getvalue()


def test_json_lines_carry_event_and_fields() -> None:
    out = io.StringIO()
    journal = ServerLog("debug", "json", out)
    journal.warning("slow_consumer", "too slow", peer="127.0.0.1:1", queued=5)
    record = json.loads(out.getvalue())
    assert record["event"] == "slow_consumer" and record["level"] == "warning"
    assert (record["peer"], record["queued"], record["msg"]) == ("127.0.0.1:1", 5, "too slow")


@given(st.text())
def test_property_rich_lines_never_carry_control_characters(text: str) -> None:
    out = io.StringIO()  # not a terminal: no colour codes either
    ServerLog("info", "rich", out).info("bye", f"quit: {text}")
    line = out.getvalue()
    assert line.endswith("\n") and line.count("\n") == 1
    assert not any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 for c in line[:-1])


def test_rich_log_shows_a_traceback_indented() -> None:
    out = io.StringIO()
    ServerLog("info", "rich", out).error(
        "internal_error", "boom", traceback="Traceback:\n  File x\nValueError: \x1b[2J"
    )
    lines = out.getvalue().splitlines()
    assert lines[0].endswith("boom")
    assert lines[1:] == ["    Traceback:", "      File x", "    ValueError: \\x1b[2J"]


@pytest.mark.parametrize(
    ("line", "address"),
    [
        ("08:52:12 INFO    listening on 127.0.0.1:17060", ("127.0.0.1", 17060)),
        ("08:52:12 INFO    listening on [::1]:5000", ("::1", 5000)),  # once read as port 1
        ('{"event": "listening", "msg": "listening on [::1]:5000", "port": 5000}', ("::1", 5000)),
        ("nothing here", None),
    ],
)
def test_find_listening_reads_ipv4_and_ipv6(line: str, address: tuple[str, int] | None) -> None:
    assert find_listening(line) == address
