"""`chatctl send` as a real subprocess: receipts, and every exit code provoked for real."""

from __future__ import annotations

import json
import os
import pty
import socket
import subprocess
import sys
import threading

import pytest

from chatctl.client.connection import Client
from chatctl.errors import ExitCode
from chatctl.protocol import DirectMessage, ErrorCode, Message
from tests.clients import WAIT, joined, wait_for
from tests.servers import run_chatctl, running_server, serve_process


def send(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return run_chatctl("send", *args, stdin=stdin)


def assert_one_line_error(result: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_delivered_prints_a_receipt(server: tuple[str, int], watcher: Client) -> None:
    result = send("-p", str(server[1]), "-n", "sender", "hello there")
    assert result.returncode == ExitCode.OK, result.stderr
    assert result.stdout == "delivered to #lobby seq 1, reached 1 member\n"
    message = wait_for(watcher, Message)
    assert (message.sender, message.text, message.seq) == ("sender", "hello there", 1)


def test_message_from_stdin_with_a_json_receipt(server: tuple[str, int], watcher: Client) -> None:
    result = send("-p", str(server[1]), "--json", "-", stdin="two\nlines\n")
    assert result.returncode == ExitCode.OK, result.stderr
    receipt = json.loads(result.stdout)
    assert receipt["room"] == "lobby" and receipt["seq"] == 1 and receipt["recipients"] == 1
    assert receipt["to"] is None and receipt["msg_id"]
    assert wait_for(watcher, Message).text == "two\nlines"


def test_absent_message_reads_stdin_and_count_repeats(
    server: tuple[str, int], watcher: Client
) -> None:
    result = send("-p", str(server[1]), "--count", "3", "--me", stdin="waves")
    assert result.returncode == ExitCode.OK, result.stderr
    assert [line.split(" seq ")[1].split(",")[0] for line in result.stdout.splitlines()] == [
        "1",
        "2",
        "3",
    ]
    messages = [wait_for(watcher, Message) for _ in range(3)]
    assert all(m.action and m.text == "waves" for m in messages)


def test_direct_message(server: tuple[str, int], watcher: Client) -> None:
    result = send("-p", str(server[1]), "--to", "WATCHER", "psst")
    assert result.returncode == ExitCode.OK, result.stderr
    assert result.stdout == "delivered to @WATCHER, reached 1 member\n"
    assert wait_for(watcher, DirectMessage).text == "psst"


def test_exit_3_when_nobody_received_it(server: tuple[str, int]) -> None:
    result = send("-p", str(server[1]), "--room", "empty", "--require-recipient", "anyone?")
    assert result.returncode == ExitCode.NO_RECIPIENT
    assert "reached 0 members" in result.stdout  # the receipt is still printed
    assert_one_line_error(result)


def test_exit_4_when_it_cannot_connect() -> None:
    with socket.socket() as reserved:
        reserved.bind(("127.0.0.1", 0))  # bound, never listening: the connect is refused
        result = send("-p", str(reserved.getsockname()[1]), "hi")
    assert result.returncode == ExitCode.CONNECT
    assert "could not connect" in result.stderr
    assert_one_line_error(result)


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["--to", "nobody", "hi"], ErrorCode.NO_SUCH_NICK),
        (["--room", "no spaces", "hi"], ErrorCode.INVALID_ROOM),
        (["   "], ErrorCode.EMPTY_TEXT),
        (["-n", "bad nick", "hi"], ErrorCode.INVALID_NICK),
    ],
)
def test_exit_5_when_rejected_with_the_server_code(
    server: tuple[str, int], args: list[str], code: int
) -> None:
    result = send("-p", str(server[1]), *args)
    assert result.returncode == ExitCode.REJECTED
    assert f"server error {code}" in result.stderr
    assert_one_line_error(result)


def test_exit_6_when_the_server_never_answers() -> None:
    with socket.create_server(("127.0.0.1", 0)) as mute:  # accepts (backlog), never answers
        result = send("-p", str(mute.getsockname()[1]), "--connect-timeout", "0.5", "hi")
    assert result.returncode == ExitCode.TIMEOUT
    assert "did not answer" in result.stderr
    assert_one_line_error(result)


def test_send_stays_light(server: tuple[str, int]) -> None:
    # Start-up time is the point of `send`: no terminal UI or rich text on its path.
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "chatctl", "send", "-p", str(server[1]), "x"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == ExitCode.OK
    imported = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines()}
    assert not {m for m in imported if m.split(".")[0] in ("prompt_toolkit", "rich")}


def test_a_server_that_is_not_chatctl_is_a_clear_connect_error() -> None:
    with socket.create_server(("127.0.0.1", 0)) as impostor:

        def answer() -> None:
            conn, _ = impostor.accept()
            with conn:
                conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                conn.recv(4096)  # until the client gives up

        thread = threading.Thread(target=answer, daemon=True)
        thread.start()
        result = send("-p", str(impostor.getsockname()[1]), "hi")
        thread.join(WAIT)
    assert result.returncode == ExitCode.CONNECT
    assert "does not speak the chatctl protocol" in result.stderr
    assert_one_line_error(result)


def test_count_beyond_the_burst_is_paced_not_refused() -> None:
    with running_server(rate=100.0, burst=40) as addr:
        result = send("-p", str(addr[1]), "--count", "40", "--json", "again")
    assert result.returncode == ExitCode.OK, result.stderr
    assert [json.loads(line)["seq"] for line in result.stdout.splitlines()] == list(range(1, 41))


def test_nothing_to_send_is_a_usage_error() -> None:
    result = send("-p", "1", stdin="")
    assert result.returncode == ExitCode.USAGE
    assert "no message" in result.stderr
    assert_one_line_error(result)


def test_room_and_to_together_is_a_usage_error() -> None:
    result = send("-p", "1", "--room", "dev", "--to", "bob", "hi")
    assert result.returncode == ExitCode.USAGE
    assert "not both" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_bracketed_ipv6_host_is_understood() -> None:
    with serve_process("--host", "::1") as server:
        result = send("[::1]", "-p", str(server.port), "hi")
    assert result.returncode == ExitCode.OK, result.stderr


def test_a_taken_nick_is_named_in_the_receipt(server: tuple[str, int], watcher: Client) -> None:
    with joined(server, "carol", "lobby"):
        text = send("-p", str(server[1]), "-n", "carol", "hi")
        record = send("-p", str(server[1]), "-n", "carol", "--json", "hi")
    assert text.returncode == ExitCode.OK, text.stderr
    assert text.stdout.strip().endswith("; sent as carol2: carol is taken")
    assert record.returncode == ExitCode.OK, record.stderr
    receipt = json.loads(record.stdout)
    assert (receipt["nick"], receipt["nick_asked"]) == ("carol2", "carol")
    assert wait_for(watcher, Message).sender == "carol2"


def test_require_nick_sends_nothing_under_another_nick(
    server: tuple[str, int], watcher: Client
) -> None:
    with joined(server, "carol", "lobby"):
        result = send("-p", str(server[1]), "-n", "carol", "--require-nick", "hi")
        assert result.returncode == ExitCode.NICK_TAKEN
        assert "carol2" in result.stderr and "--require-nick" in result.stderr
        assert_one_line_error(result)
        assert result.stdout == ""
        ok = run_chatctl(
            "send", "-p", str(server[1]), "-n", "dave", "ok", env={"CHATCTL_REQUIRE_NICK": "1"}
        )
    assert ok.returncode == ExitCode.OK, ok.stderr
    assert "sent as" not in ok.stdout
    message = wait_for(watcher, Message)  # only dave's: carol2 sent nothing
    assert (message.sender, message.text) == ("dave", "ok")


def test_no_message_on_a_terminal_is_a_usage_error(server: tuple[str, int]) -> None:
    leader, follower = pty.openpty()
    try:
        result = subprocess.run(
            [sys.executable, "-m", "chatctl", "send", "-p", str(server[1])],
            stdin=follower,
            capture_output=True,
            text=True,
            timeout=WAIT,
            check=False,
        )
    finally:
        os.close(leader)
        os.close(follower)
    assert result.returncode == ExitCode.USAGE
    assert "give MESSAGE as an argument, or pipe it on stdin" in result.stderr
    assert_one_line_error(result)


def test_send_help_does_not_promise_to_ask_for_a_nick() -> None:
    result = run_chatctl("send", "--help")
    assert result.returncode == 0
    assert "join asks" not in result.stdout and "--require-nick" in result.stdout


@pytest.mark.parametrize(
    ("piped", "stored"),
    [("one line\n", "one line"), ("crlf\r\n", "crlf"), ("two\nlines\n\n", "two\nlines\n")],
)
def test_one_final_newline_is_not_part_of_the_message(
    server: tuple[str, int], watcher: Client, piped: str, stored: str
) -> None:
    result = send("-p", str(server[1]), stdin=piped)
    assert result.returncode == ExitCode.OK, result.stderr
    assert wait_for(watcher, Message).text == stored
