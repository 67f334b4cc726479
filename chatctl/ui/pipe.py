"""`chatctl join` in a pipe: stdin lines are sent, events are printed one per line.

Slash commands work as on a terminal. At the end of stdin it waits until its own messages are
acknowledged, then exits 0; `--count N` exits after N messages received (replayed history
does not count); `--timeout` bounds the whole session. A lost connection exits with
ExitCode.CONNECT unless `--reconnect` was given. SIGTERM is a clean quit, as the bot's: it
says Bye (the rooms see it leave) and exits 0. Output formats: text, or JSON Lines
(schema in docs/join.md).
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from types import FrameType
from typing import TextIO

from chatctl.client import AnyEvent, Client, Closed, Refused
from chatctl.errors import ChatctlError, ExitCode, TimedOut
from chatctl.protocol import DirectMessage, Message
from chatctl.ui.commands import Chat, Outcome
from chatctl.ui.render import (
    DEFAULT_TIMESTAMP,
    TextRenderer,
    colour_depth,
    event_record,
    json_line,
)

_TICK = 0.1  # how often the main loop looks at stdin's state and the deadline
_SYNC_WAIT = 5.0  # for the answers to the last requests, when no --timeout bounds it


class _Input:
    """Reads stdin on a thread; each line goes through the shared command executor."""

    def __init__(self, chat: Chat, stream: TextIO, show: Callable[[Outcome], None]) -> None:
        self.chat = chat
        self.stream = stream
        self.show = show
        self.eof = threading.Event()
        self.quit: str | None = None
        self.thread = threading.Thread(target=self._run, name="chatctl-stdin", daemon=True)

    def _run(self) -> None:
        try:
            for raw in self.stream:
                line = raw.rstrip("\r\n")
                if not line:
                    continue
                outcome = self.chat.run_line(line)
                self.show(outcome)
                if outcome.quit:
                    self.quit = outcome.quit_reason
                    break
        except (UnicodeDecodeError, OSError, ValueError) as exc:
            self.show(Outcome(info=[f"stopped reading stdin: {exc}"]))
        finally:
            self.eof.set()


class PipeSession:
    def __init__(
        self,
        client: Client,
        *,
        fmt: str,
        count: int | None,
        timeout: float | None,
        stdin: TextIO,
        stdout: TextIO,
        timestamp: str = DEFAULT_TIMESTAMP,
    ) -> None:
        self.client = client
        self.fmt = fmt
        self.count = count
        self.timeout = timeout
        self.stdin = stdin
        self.stdout = stdout
        self.received = 0
        self.refused = 0
        self._outcomes: queue.SimpleQueue[Outcome] = queue.SimpleQueue()
        self.terminated = threading.Event()  # SIGTERM: quit cleanly
        self._out_lock = threading.Lock()
        colour = stdout.isatty() and "NO_COLOR" not in os.environ
        self.text = TextRenderer(
            lambda: client.nick,
            colour=colour,
            single_line=True,
            timestamp=timestamp,
            depth=colour_depth(),
        )

    # -- output --------------------------------------------------------------------------------

    def _write(self, line: str) -> None:
        with self._out_lock:
            self.stdout.write(line + "\n")
            self.stdout.flush()

    def show_event(self, event: AnyEvent) -> None:
        if self.fmt == "json":
            record = event_record(event)
            if record is not None:
                self._write(json_line(record))
        else:
            line = self.text.render(event)
            if line is not None:
                self._write(line)

    def show_outcome(self, outcome: Outcome) -> None:
        for info in outcome.info:
            if self.fmt == "json":
                self._write(json_line({"type": "info", "text": info}))
            else:
                self._write(self.text.system(info))

    # -- the session ---------------------------------------------------------------------------

    def _count(self, event: AnyEvent) -> None:
        if (isinstance(event, Message) and not event.history) or isinstance(event, DirectMessage):
            self.received += 1
        elif isinstance(event, Refused):
            self.refused += 1

    def _post_outcome(self, outcome: Outcome) -> None:
        """From the stdin thread: shown by the main loop once the events queued before it
        are printed (a /part's "now in #x" after the server's `left` notice)."""
        self._outcomes.put(outcome)

    def _show_outcomes(self) -> None:
        while True:
            try:
                outcome = self._outcomes.get_nowait()
            except queue.Empty:
                return
            self.show_outcome(outcome)

    def run(self, first_room: str | None, deadline: float | None) -> int:
        client = self.client
        reader = _Input(Chat(client, first_room), self.stdin, self._post_outcome)
        reader.thread.start()
        while True:
            event = client.next_event(0)
            if event is None:
                self._show_outcomes()  # nothing queued before them is left to print
                event = client.next_event(_TICK)
            if event is not None:
                self._count(event)
                self.show_event(event)
                if isinstance(event, Closed):
                    self._show_outcomes()
                    if event.error is not None:
                        raise event.error
                    return self._status()
                if self.count is not None and self.received >= self.count:
                    return self._finish()
                continue
            if self.terminated.is_set():
                return self._finish()  # Bye: the rooms see us leave
            if reader.quit is not None:
                client.wait_acked(self._left(deadline))
                return self._finish(reader.quit, sync_wait=self._sync_wait(deadline))
            if reader.eof.is_set() and self.count is None and client.unacked() == 0:
                return self._finish(sync_wait=self._sync_wait(deadline))
            if deadline is not None and time.monotonic() >= deadline:
                return self._expired()

    @staticmethod
    def _sync_wait(deadline: float | None) -> float:
        return _SYNC_WAIT if deadline is None else max(0.0, deadline - time.monotonic())

    @staticmethod
    def _left(deadline: float | None) -> float | None:
        return None if deadline is None else max(0.0, deadline - time.monotonic())

    def _status(self) -> int:
        return int(ExitCode.REJECTED) if self.refused else 0

    def _finish(self, reason: str = "", *, sync_wait: float = 0.0) -> int:
        """Leave cleanly, after printing the answers to the last requests (`/who` just before
        the end of stdin, say): a sync round trip makes sure they have all arrived."""
        if sync_wait > 0:
            try:
                self.client.sync(sync_wait)
            except ChatctlError:
                pass  # disconnected: nothing more will come anyway
        self.client.close(reason)
        while (event := self.client.next_event(0)) is not None:
            if not isinstance(event, Closed):
                self._count(event)
                self.show_event(event)
        self._show_outcomes()
        return self._status()

    def _expired(self) -> int:
        waited = f"{self.timeout:g} s"
        if self.count is not None:
            self._finish()
            raise TimedOut(f"received {self.received} of {self.count} messages in {waited}")
        if self.client.unacked():
            n = self.client.unacked()
            self._finish()
            raise TimedOut(f"{n} message(s) not acknowledged in {waited}")
        return self._finish()


@contextlib.contextmanager
def _quit_on_sigterm(terminated: threading.Event) -> Iterator[None]:
    """While inside, SIGTERM sets `terminated` (the main loop then quits cleanly, exit 0)
    instead of killing the process (exit 143) with the rooms seeing it dropped."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(_signum: int, _frame: FrameType | None) -> None:
        terminated.set()

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_pipe(
    client: Client,
    *,
    fmt: str,
    count: int | None,
    timeout: float | None,
    stdin: TextIO | None = None,
    stdout: TextIO | None = None,
    timestamp: str = DEFAULT_TIMESTAMP,
) -> int:
    session = PipeSession(
        client,
        fmt=fmt,
        count=count,
        timeout=timeout,
        stdin=stdin or sys.stdin,
        stdout=stdout or sys.stdout,
        timestamp=timestamp,
    )
    try:
        deadline = None if timeout is None else time.monotonic() + timeout
        # With --reconnect, a server that is not up yet is waited for too (within --timeout).
        client.connect(retry_for=session._left(deadline) if client.reconnect else 0)
        with _quit_on_sigterm(session.terminated):
            return session.run(client.rooms[0] if client.rooms else None, deadline)
    except BrokenPipeError:
        # The reader of our output went away (`| head`): not an error, and no noise at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        client.close()
        return 0
    except (ChatctlError, KeyboardInterrupt):
        client.close()  # says Bye: the rooms see us leave, even on Ctrl-C
        raise
