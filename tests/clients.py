"""The client library (`chatctl.client.connection.Client`) in tests: waits with a deadline,
never a sleep.

- `WAIT`: the seconds a test waits for anything that should come at once (generous: a loaded
  CI machine is slow, and a passing test never waits that long).
- `wait_for(client, kind, where)`: the next event of `kind` the client reports that matches
  `where`; fails after `timeout`, or at once if the client closes.
- `joined(addr, nick, *rooms, **options)`: a connected client, each room's join replay consumed.

The raw protocol client of tests/servers.py has its own `Client.wait_for`.
"""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from chatctl.client import AnyEvent, Client, Closed
from chatctl.names import room_key
from chatctl.protocol import HistoryEnd

E = TypeVar("E")
WAIT = 10.0


def wait_for(
    client: Client,
    kind: type[E],
    where: Callable[[E], bool] = lambda e: True,
    timeout: float = WAIT,
    seen: list[AnyEvent] | None = None,
) -> E:
    """The next event of `kind` matching `where`; the ones passed over go to `seen`."""
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        event = client.next_event(left)
        if isinstance(event, kind) and where(event):
            return event
        if event is not None and seen is not None:
            seen.append(event)
        if isinstance(event, Closed) and kind is not Closed:
            raise AssertionError(f"closed while waiting for {kind.__name__}: {event}")
    raise AssertionError(f"no {kind.__name__} within {timeout} s")


def joined(addr: tuple[str, int], nick: str, *rooms: str, **options: object) -> Client:
    """`nick` connected to `addr` (Client `options`), each of `rooms` joined and its replay
    consumed."""
    client = Client(addr[0], addr[1], nick=nick, rooms=rooms, **options)  # type: ignore[arg-type]
    client.connect()
    for room in map(room_key, rooms):
        wait_for(client, HistoryEnd, lambda e, r=room: e.room == r)  # type: ignore[misc]
    return client


class JoinProcess:
    """A `chatctl join` subprocess whose stdout lines are read on a thread."""

    def __init__(
        self, port: int, *args: str, stdin: bool = False, env: dict[str, str] | None = None
    ) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "chatctl", "join", "-p", str(port), *args],
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        self.pump = threading.Thread(target=self._pump, daemon=True)
        self.pump.start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:  # ends at EOF, when the process has exited
            self.lines.put(line)

    def send(self, line: str) -> None:
        """One line to its stdin (made with stdin=True)."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def expect(self, text: str, timeout: float = WAIT) -> str:
        """The first stdout line containing `text`."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                break
            self.seen.append(line)
            if text in line:
                return line
        raise AssertionError(f"no line with {text!r}; got {self.seen}")

    def records(self, timeout: float = WAIT) -> list[dict[str, Any]]:
        """Every JSON line after the process exits."""
        self.proc.wait(timeout)
        self.pump.join(timeout)  # every line the process wrote is queued
        out = list(self.seen)
        while not self.lines.empty():
            out.append(self.lines.get())
        return [json.loads(line) for line in out]

    def finish(self, timeout: float = WAIT, *, close_stdin: bool = False) -> tuple[int, str]:
        """Its exit code and stderr, once it exits (after its stdin is closed, if asked)."""
        if close_stdin and self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            while not self.lines.empty():
                self.seen.append(self.lines.get())
            raise AssertionError(f"join did not exit; its output: {self.seen}") from None
        assert self.proc.stderr is not None
        return code, self.proc.stderr.read()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(WAIT)
        self.pump.join(WAIT)  # before closing the stream it reads
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()
