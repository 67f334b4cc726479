"""Nothing acknowledged is lost: a `chatctl serve --data DIR` subprocess under load from
several pipelining senders is killed with SIGKILL at a random moment and restarted on the same
directory. Every sender then reconnects with its token and re-sends what it had not seen
acknowledged; history must hold each sender's messages exactly once, in its order, each
acknowledged one at the sequence number its ack named."""

from __future__ import annotations

import os
import random
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from chatctl.protocol import (
    NEED_DATA,
    PROTOCOL_VERSION,
    Ack,
    Connection,
    ConnectionClosed,
    Event,
    Hello,
    History,
    HistoryEnd,
    Join,
    Message,
    Role,
    Say,
    Welcome,
)
from tests.servers import run_chatctl, serve_process

ROOM = "lobby"
SENDERS = 4
WINDOW = 16  # Says in flight per sender
MAX_PER_SENDER = 5000  # bounds the load if the kill never comes


class Sender:
    """One pipelining sender on a raw socket: its own msg_ids n0, n1, ... and texts."""

    def __init__(self, nick: str) -> None:
        self.nick = nick
        self.token = ""
        self.sent = 0  # messages 0 .. sent-1 have been written to a socket
        self.acked: dict[int, int] = {}  # message number -> seq its ack named
        self.sock: socket.socket | None = None
        self.conn = Connection(Role.CLIENT)

    def text(self, k: int) -> str:
        return f"{self.nick} {k}"

    def connect(self, host: str, port: int) -> None:
        self.sock = socket.create_connection((host, port), timeout=10)
        self.conn = Connection(Role.CLIENT)
        self._write(Hello(version=PROTOCOL_VERSION, nick=self.nick, token=self.token))
        welcome = self._until(lambda e: type(e) is Welcome)
        assert isinstance(welcome, Welcome)
        self.token = welcome.token
        self._write(Join(room=ROOM, history=0))
        self._until(lambda e: type(e) is HistoryEnd)

    def send(self, numbers: list[int]) -> None:
        """Write Says for `numbers` at once, then read until each is acknowledged."""
        assert self.sock is not None
        self.sock.sendall(
            b"".join(
                self.conn.send(Say(msg_id=f"n{k}", room=ROOM, text=self.text(k))) for k in numbers
            )
        )
        self.sent = max(self.sent, numbers[-1] + 1)
        waiting = {f"n{k}" for k in numbers}

        def acked(event: Event) -> bool:
            if type(event) is Ack and event.msg_id in waiting:
                waiting.discard(event.msg_id)
                self.acked[int(event.msg_id[1:])] = event.seq
            return not waiting

        self._until(acked)

    def load(self, host: str, port: int, stop: threading.Event) -> None:
        """Send windows of messages until the server dies (or `stop`)."""
        try:
            self.connect(host, port)
            while not stop.is_set() and self.sent < MAX_PER_SENDER:
                self.send(list(range(self.sent, self.sent + WINDOW)))
        except (OSError, ConnectionError):
            pass  # the kill
        finally:
            self.close()

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()

    def _write(self, event: Event) -> None:
        assert self.sock is not None
        self.sock.sendall(self.conn.send(event))

    def _until(self, done: object) -> Event:
        assert self.sock is not None and callable(done)
        while True:
            event = self.conn.next_event()
            if event is NEED_DATA:
                data = self.sock.recv(262144)
                if not data:
                    raise ConnectionError("server closed the connection")
                self.conn.receive_data(data)
                continue
            if type(event) is ConnectionClosed:
                raise ConnectionError("server closed the connection")
            if done(event):
                return event


def _collect(event: Event, page: list[Message]) -> bool:
    if type(event) is Message and event.history:
        page.append(event)
    return type(event) is HistoryEnd


def read_history(host: str, port: int) -> list[Message]:
    """Every stored message of ROOM, oldest first, paging with History(after=...)."""
    reader = Sender("reader")
    reader.connect(host, port)
    messages: list[Message] = []
    try:
        while True:
            after = messages[-1].seq if messages else 0
            reader._write(History(room=ROOM, after=after, limit=1000))
            page: list[Message] = []
            end = reader._until(lambda e, page=page: _collect(e, page))
            assert isinstance(end, HistoryEnd)
            messages += page
            if not page or messages[-1].seq >= end.head:
                return messages
    finally:
        reader.close()


def test_kill_9_under_load_loses_no_acknowledged_message(tmp_path: Path) -> None:
    seed = int.from_bytes(os.urandom(4), "big")
    rng = random.Random(seed)
    kill_after = rng.randint(1, 3000)  # acknowledged messages before the SIGKILL
    data = str(tmp_path / "data")
    args = ("--data", data, "--rate", "0")
    senders = [Sender(f"s{i}") for i in range(SENDERS)]

    with serve_process(*args) as server:
        stop = threading.Event()
        threads = [
            threading.Thread(target=s.load, args=(server.host, server.port, stop), daemon=True)
            for s in senders
        ]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 30
        while sum(len(s.acked) for s in senders) < kill_after and time.monotonic() < deadline:
            if not any(t.is_alive() for t in threads):
                break
            time.sleep(0.001)  # polling a counter, not synchronising
        server.proc.kill()
        server.proc.wait(timeout=10)
        stop.set()
        for t in threads:
            t.join(timeout=15)
            assert not t.is_alive(), f"a sender hung (seed {seed})"
    acked_before = {s.nick: dict(s.acked) for s in senders}
    assert sum(map(len, acked_before.values())) >= min(kill_after, 1), f"seed {seed}"

    with serve_process(*args) as server:
        for s in senders:
            s.connect(server.host, server.port)
            missing = [k for k in range(s.sent) if k not in s.acked]
            if missing:
                s.send(missing)
            if s.acked:
                # Re-sending what was acknowledged gets the same answer again.
                last = max(s.acked)
                seq = s.acked[last]
                s.send([last])
                assert s.acked[last] == seq, f"seed {seed}"
        history = read_history(server.host, server.port)
        sent = {s.nick: s.sent for s in senders}
        head = history[-1].seq if history else 0
        fresh = senders[0]
        fresh.send([fresh.sent])
        assert fresh.acked[fresh.sent - 1] == head + 1, f"seed {seed}"
        for s in senders:
            s.close()

    assert [m.seq for m in history] == list(range(1, len(history) + 1)), f"seed {seed}"
    by_seq = {m.seq: m for m in history}
    for s in senders:
        mine = [m for m in history if m.sender == s.nick]
        # Exactly once, in the sender's order, nothing missing.
        assert [m.text for m in mine] == [s.text(k) for k in range(sent[s.nick])], f"seed {seed}"
        for k, seq in acked_before[s.nick].items():
            assert by_seq[seq].text == s.text(k), f"seed {seed}"


def serve_once(*args: str) -> subprocess.CompletedProcess[str]:
    return run_chatctl("serve", "--port", "0", *args, timeout=30)


@pytest.mark.parametrize("problem", ["a file", "garbage database", "in use"])
def test_unusable_data_directory_is_a_one_line_error(tmp_path: Path, problem: str) -> None:
    data = tmp_path / "data"
    if problem == "a file":
        data.write_text("not a directory")
    elif problem == "garbage database":
        data.mkdir()
        (data / "history.sqlite3").write_bytes(b"this is no database\n" * 512)
    if problem == "in use":
        with serve_process("--data", str(data)):
            result = serve_once("--data", str(data))
    else:
        result = serve_once("--data", str(data))
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert str(data) in lines[0]
    assert "Traceback" not in result.stderr
