"""What `chatctl serve` starts with: safe connection limits, a banner that shows every limit in
force, and (for the test helpers) subprocesses that never outlive the test run."""

from __future__ import annotations

import json
import os
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chatctl.protocol import ErrorCode
from chatctl.server.config import ServerConfig
from chatctl.server.loop import FD_RESERVE, connection_ceiling
from tests.servers import Client, serve_process

ROOT = Path(__file__).resolve().parent.parent
LIMITS = {
    "hosts",
    "max_frame",
    "max_text",
    "max_output",
    "max_rooms",
    "rate",
    "burst",
    "ping_interval",
    "idle_timeout",
    "handshake_timeout",
    "join_history",
    "replay_limit",
    "max_connections",
    "max_per_ip",
    "open_files",
    "data",
    "retain_messages",
    "retain_age",
    "trim_interval",
}


def test_one_address_cannot_take_every_connection_by_default() -> None:
    defaults = ServerConfig()
    assert defaults.max_per_ip <= 1000 < defaults.max_connections


@given(st.integers(1, 10**6), st.integers(1, 10**6))
def test_property_connection_ceiling_leaves_descriptors_for_the_server(
    requested: int, fd_limit: int
) -> None:
    ceiling = connection_ceiling(requested, fd_limit)
    assert 1 <= ceiling <= requested
    assert ceiling <= max(fd_limit - FD_RESERVE, 1)
    if fd_limit - FD_RESERVE >= requested:
        assert ceiling == requested


def test_json_banner_shows_every_limit_in_force(tmp_path: Path) -> None:
    data = tmp_path / "sub" / ".." / "history"
    with serve_process(
        "--log-format", "json", "--data", str(data), "--retain-age", "3600", "--rate", "2.5"
    ) as server:
        line = server.wait_for_line(r'"event": "start"').string
    start = json.loads(line)
    limits = start["limits"]
    assert set(limits) >= LIMITS, LIMITS - set(limits)
    assert limits["data"] == str((tmp_path / "history").resolve())
    assert (limits["retain_age"], limits["rate"]) == (3600, 2.5)
    assert limits["max_per_ip"] == ServerConfig.max_per_ip
    assert limits["max_connections"] <= limits["open_files"] - FD_RESERVE
    assert limits["handshake_timeout"] == ServerConfig.handshake_timeout


def test_rich_banner_shows_every_limit_in_force() -> None:
    with serve_process("--max-per-ip", "7", "--handshake-timeout", "2.5") as server:
        server.wait_for_line(r"listening on")
        text = "".join(server.lines)
    for key in LIMITS:
        assert f" {key} " in text, key
    assert re.search(r" data +:memory: ", text)
    assert re.search(r" max_per_ip +7 ", text)
    assert re.search(r" handshake_timeout +2\.5 ", text)


def test_max_connections_is_bounded_by_the_descriptor_limit() -> None:
    """With few descriptors the server refuses politely, with a Bye, instead of running out of
    descriptors at accept (where nobody would get an answer)."""
    nofile = FD_RESERVE + 40
    with serve_process("--max-per-ip", "100000", nofile=nofile) as server:
        accepted = [Client.connect(server.host, server.port, f"c{i}") for i in range(40)]
        extra = Client(server.host, server.port)
        bye = extra.wait_closed()
        assert bye is not None and bye.code == ErrorCode.TOO_MANY_CONNECTIONS
        assert "maximum of 40 connections" in bye.reason
        assert accepted[0].say("lobby", "still here").recipients == 0


def _gone(pid: int) -> bool:
    """Dead: no such process, or a zombie nobody has reaped yet."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


CHILD = """
import sys
from tests.servers import serve_process
with serve_process() as server:
    print(server.proc.pid, flush=True)
    sys.stdin.read()
"""


@pytest.mark.skipif(sys.platform != "linux", reason="PR_SET_PDEATHSIG is Linux's")
def test_a_spawned_server_dies_with_the_test_process() -> None:
    """A test run killed outright (SIGKILL, a CI timeout) leaves no `chatctl serve` behind."""
    parent = subprocess.Popen(
        [sys.executable, "-c", CHILD],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    server_pid = 0
    try:
        assert parent.stdout is not None
        # Its server's pid, waited for with a deadline: a readline alone could block forever.
        ready, _, _ = select.select([parent.stdout], [], [], 30)
        assert ready, "the parent never reported its server's pid"
        server_pid = int(parent.stdout.readline())
        assert not _gone(server_pid)
        parent.kill()
        parent.wait(timeout=10)
        deadline = time.monotonic() + 10
        while not _gone(server_pid):
            assert time.monotonic() < deadline, "the server outlived its parent"
            time.sleep(0.02)  # polling for the condition, with a deadline
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait(timeout=10)
        if server_pid and not _gone(server_pid):
            os.kill(server_pid, signal.SIGKILL)
        for stream in (parent.stdin, parent.stdout):
            if stream is not None:
                stream.close()


def test_memory_history_starts_again_at_one_after_a_restart() -> None:
    """Documented (serve --help, docs/architecture.md): `--data :memory:` keeps nothing, not
    even the sequence numbers."""
    for _ in range(2):
        with serve_process() as server:
            client = Client.connect(server.host, server.port, "alice", "lobby")
            assert [client.say("lobby", f"m{i}").seq for i in range(2)] == [1, 2]
