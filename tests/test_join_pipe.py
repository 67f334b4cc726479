"""`chatctl join` in a pipe, as a real subprocess against a real server."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from chatctl.client import AnyEvent, Client
from chatctl.errors import ExitCode
from chatctl.protocol import DirectMessage, Gap, HistoryEnd, Members, Message, Notice
from tests.clients import WAIT, JoinProcess, joined, wait_for
from tests.proxy import proxy_to
from tests.servers import free_port, run_chatctl, running_server, serve_process


def run_join(port: int, stdin: str, *args: str) -> subprocess.CompletedProcess[str]:
    return run_chatctl("join", "-p", str(port), *args, stdin=stdin)


def test_stdin_lines_are_sent_and_acked_before_exit(
    server: tuple[str, int], watcher: Client
) -> None:
    result = run_join(server[1], "one\n\ntwo\n/me waves\n", "-n", "piper", "--format", "json")
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    own = [r for r in records if r["type"] == "message" and r["own"]]
    assert [(r["text"], r["action"], r["seq"]) for r in own] == [
        ("one", False, 1),
        ("two", False, 2),
        ("waves", True, 3),
    ]
    assert all(r["recipients"] == 1 and r["nick"] == "piper" for r in own)
    got = [wait_for(watcher, Message) for _ in range(3)]
    assert [m.text for m in got] == ["one", "two", "waves"]
    wait_for(watcher, Notice, lambda n: n.kind == "left" and n.nick == "piper")


def test_count_exits_after_n_messages_in_text_format(
    server: tuple[str, int], watcher: Client
) -> None:
    join = JoinProcess(server[1], "-n", "reader", "--count", "2")
    try:
        wait_for(watcher, Notice, lambda n: n.kind == "joined" and n.nick == "reader")
        for text in ("first", "second", "third"):
            watcher.say("lobby", text)
        code, err = join.finish()
        assert code == 0, err
        join.expect("<watcher> first")
        join.expect("<watcher> second")
        assert not any("third" in line for line in join.seen)
    finally:
        join.kill()


def test_history_is_replayed_but_not_counted(server: tuple[str, int], watcher: Client) -> None:
    for i in range(3):
        watcher.say("lobby", f"old {i}")
    assert watcher.wait_acked(WAIT)
    join = JoinProcess(server[1], "--format", "json", "--history", "2", "--count", "1")
    try:
        join.expect('"history_end"')
        watcher.say("lobby", "new")
        records = join.records()
        assert [(r["text"], r["history"]) for r in records if r["type"] == "message"] == [
            ("old 1", True),
            ("old 2", True),
            ("new", False),
        ]
        assert join.proc.returncode == 0
    finally:
        join.kill()


def test_timeout_bounds_the_wait(server: tuple[str, int]) -> None:
    result = run_join(server[1], "", "--count", "5", "--timeout", "0.5")
    assert result.returncode == ExitCode.TIMEOUT
    assert "received 0 of 5 messages" in result.stderr
    assert "Traceback" not in result.stderr


def test_slash_commands_work_in_a_pipe(server: tuple[str, int], watcher: Client) -> None:
    lines = [
        "/join #Dev",
        "hello dev",
        "/who",
        "/rooms",
        "/msg watcher psst",
        "/nick piper2",
        "/bogus",
        "//not a command",
        "/quit gone",
        "never sent",
    ]
    result = run_join(server[1], "\n".join(lines) + "\n", "-n", "piper", "--format", "json")
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    by_type: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        by_type.setdefault(record["type"], []).append(record)
    own = [r for r in by_type["message"] if r["own"]]
    assert [(r["room"], r["text"]) for r in own] == [
        ("dev", "hello dev"),
        ("dev", "/not a command"),
    ]
    dev = {"room": "dev", "nicks": ["piper"], "type": "members", "topic": ""}
    assert dev | {"private": False, "owner": "", "ops": []} in by_type["members"]
    assert by_type["rooms"][0]["rooms"] == {"lobby": 2, "dev": 1}
    assert any("unknown command /bogus" in r["text"] for r in by_type["info"])
    assert wait_for(watcher, DirectMessage).text == "psst"
    renamed = wait_for(watcher, Notice, lambda n: n.kind == "renamed")
    assert (renamed.nick, renamed.new_nick) == ("piper", "piper2")
    left = wait_for(watcher, Notice, lambda n: n.kind == "left")
    assert (left.nick, left.reason) == ("piper2", "gone")
    assert "never sent" not in result.stdout


def test_hostile_text_cannot_drive_the_terminal(server: tuple[str, int], watcher: Client) -> None:
    join = JoinProcess(server[1], "--count", "1")
    try:
        wait_for(watcher, Notice, lambda n: n.kind == "joined" and n.nick != "watcher")
        watcher.say("lobby", "\x1b[2J\x1b]0;pwned\x07\u202eevil\nsecond line")
        code, err = join.finish()
        assert code == 0, err
        line = join.expect("<watcher>")
        assert "\x1b" not in line and "\x07" not in line and "\u202e" not in line
        assert "^[[2J" in line and line.count("\n") == 1  # shown, on one line
    finally:
        join.kill()


@pytest.mark.parametrize(
    ("stop", "says"),
    [("kill", "lost the connection"), ("terminate", "server code 304")],
    ids=["killed", "shut-down"],
)
def test_a_lost_connection_exits_4(stop: str, says: str) -> None:
    with serve_process() as server:
        join = JoinProcess(server.port, "--format", "json", stdin=True)  # open: it stays
        try:
            join.expect('"history_end"')
            getattr(server.proc, stop)()  # SIGKILL, or SIGTERM: a graceful shutdown
            code, err = join.finish()
            assert code == ExitCode.CONNECT
            assert says in err and "Traceback" not in err
            assert len(err.strip().splitlines()) == 1
        finally:
            join.kill()


def test_reconnect_flag_survives_a_server_restart(tmp_path: Path) -> None:
    data = str(tmp_path / "data")
    with serve_process("--data", data) as first:
        port = first.port
        join = JoinProcess(port, "--format", "json", "--reconnect", "--count", "1", "-r", "dev")
        try:
            join.expect('"history_end"')
            first.proc.kill()
            join.expect('"disconnected"')
            with serve_process("--port", str(port), "--data", data):
                join.expect('"reconnected"', timeout=3 * WAIT)  # a loaded CI is slow
                with Client("127.0.0.1", port, nick="later") as later:
                    later.connect()
                    later.say("dev", "after the restart").wait(WAIT)
                records = join.records()
                assert join.proc.returncode == 0
                texts = [r["text"] for r in records if r["type"] == "message"]
                assert texts == ["after the restart"]
        finally:
            join.kill()


def test_answers_to_the_last_requests_are_printed_before_exit(server: tuple[str, int]) -> None:
    # The end of stdin comes right after the request: join must still wait for the answer.
    result = run_join(server[1], "/rooms\n", "--format", "json", "--history", "0")
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert {"type": "rooms", "rooms": {"lobby": 1}} in records


def test_reconnect_also_waits_for_a_server_that_is_not_up_yet(tmp_path: Path) -> None:
    port = free_port()  # released for the server to take
    join = JoinProcess(port, "--format", "json", "--reconnect", "--count", "1", "--history", "0")
    try:
        with serve_process("--port", str(port)):
            with Client("127.0.0.1", port, nick="first", rooms=["lobby"]) as first:
                first.connect()
                # The joiner is in the room: listed on our join, or joining after us.
                deadline = time.monotonic() + 3 * WAIT
                while time.monotonic() < deadline:
                    event = first.next_event(0.1)
                    if (isinstance(event, Members) and len(event.nicks) > 1) or (
                        isinstance(event, Notice)
                        and event.kind == "joined"
                        and event.nick != "first"
                    ):
                        break
                else:
                    raise AssertionError("the joiner never came into #lobby")
                first.say("lobby", "you made it").wait(WAIT)
            records = join.records(3 * WAIT)
            assert join.proc.returncode == 0
            assert [r["text"] for r in records if r["type"] == "message"] == ["you made it"]
    finally:
        join.kill()


def test_without_a_server_reconnect_gives_up_at_the_timeout() -> None:
    with socket.socket() as reserved:
        reserved.bind(("127.0.0.1", 0))  # bound, never listening
        port = reserved.getsockname()[1]
        result = run_chatctl("join", "-p", str(port), "--reconnect", "--timeout", "0.5")
    assert result.returncode == ExitCode.CONNECT
    assert "could not connect" in result.stderr and "Traceback" not in result.stderr


def test_a_long_input_is_paced_to_the_server_rate_limit() -> None:
    # 60 lines against a burst of 40: sent at the announced rate, none refused.
    with running_server(rate=100.0, burst=40) as addr:
        lines = "".join(f"line {i}\n" for i in range(60))
        result = run_join(addr[1], lines, "--format", "json", "--history", "0")
    assert result.returncode == 0, result.stderr + result.stdout
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert not [r for r in records if r["type"] == "error"]
    own = [r["text"] for r in records if r["type"] == "message" and r["own"]]
    assert own == [f"line {i}" for i in range(60)]


def test_a_resume_over_trimmed_history_says_what_was_missed() -> None:
    # Retention keeps 3 messages; while the joiner is cut off, 10 are sent: on its return the
    # server can replay only the last 3 and says so with a Gap, which join prints plainly.
    with (
        running_server(retain_messages=3) as addr,
        proxy_to(addr) as proxy,
        joined(addr, "bob", "lobby") as bob,
    ):
        join = JoinProcess(proxy.port, "-n", "al", "--reconnect", "--history", "0", stdin=True)
        try:
            wait_for(bob, Notice, lambda n: n.kind == "joined" and n.nick == "al")
            bob.say("lobby", "m1")
            join.expect("<bob> m1")
            proxy.blocked.set()
            proxy.cut()
            join.expect("connection lost")
            for i in range(2, 12):
                bob.say("lobby", f"m{i}")
            assert bob.wait_acked(WAIT)
            deadline = time.monotonic() + 3 * WAIT  # retention runs off the hot path
            while time.monotonic() < deadline:
                bob.history("lobby", after=0, limit=20)
                seen: list[AnyEvent] = []
                wait_for(bob, HistoryEnd, seen=seen)
                if any(isinstance(e, Gap) for e in seen):
                    break
            else:
                raise AssertionError("the server never trimmed #lobby's history")
            proxy.blocked.clear()
            join.expect("reconnected")
            bob.say("lobby", "live")
            join.expect("<bob> live")
            assert join.proc.stdin is not None
            join.proc.stdin.close()  # end of input: it leaves
            code, err = join.finish()
            assert code == 0, err
            out = "".join(join.seen)
            # "live" may itself be stored before the rejoin, so the last 3 end at 11 or 12.
            gap = re.search("#lobby: missed messages 2\u2013(\\d+) \\(no longer stored\\)", out)
            assert gap is not None, out
            last_gone = int(gap.group(1))
            assert last_gone in (8, 9)
            shown = [i for i in range(2, 12) if f"<bob> m{i}\n" in out]
            assert shown == list(range(last_gone + 1, 12))
            assert out.count("<bob> live") == 1
        finally:
            join.kill()


def test_timestamp_format_applies_to_text_output_and_is_checked(
    server: tuple[str, int], watcher: Client
) -> None:
    result = run_join(server[1], "hello\n", "-n", "piper", "--timestamp-format", "[%H:%M]")
    assert result.returncode == 0, result.stderr
    assert re.search(r"^\[\d\d:\d\d\] #lobby <piper> hello$", result.stdout, re.MULTILINE)
    bare = run_join(server[1], "again\n", "-n", "piper", "--timestamp-format", "")
    assert re.search(r"^#lobby <piper> again$", bare.stdout, re.MULTILINE), bare.stdout
    bad = run_join(server[1], "", "--timestamp-format", " %H")
    assert bad.returncode == ExitCode.USAGE
    assert "--timestamp-format ' %H': the timestamp may not start or end" in bad.stderr
