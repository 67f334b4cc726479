"""Real servers for tests, and a small blocking client that speaks the protocol.

- `running_server(**overrides)`: the server in this process, in a background thread, on port 0
  of 127.0.0.1 with in-memory history; yields (host, port) and stops it cleanly at exit.
  Keyword arguments override ServerConfig fields (rate=0, max_output=..., data=DIR, ...).
- `server_instance(**overrides)`: the same, yielding (Server, host, port), to look at the
  server's state or its log (`server.journal.stream` is an io.StringIO).
- `serve_process(*args)`: a real `python -m chatctl serve --port 0` subprocess; yields a
  ServeProcess with .host, .port, .proc and the log lines read so far; killed at exit.
- `run_chatctl(*args)`: a command run to completion, its output captured.
- `start_process(argv)` / `start_chatctl(*args)`: a subprocess with its stderr collected; `.stop()` ends it.
- `Client`: a blocking test client with a deadline on every wait (no sleeps).
- `free_port()`: a port of 127.0.0.1 free right now, for a server that must be told its port.

Every subprocess started here dies with the test process, even when that is killed outright
(SIGKILL, a CI timeout): no orphaned `chatctl serve` keeps a port and a core busy. Other test
files spawning subprocesses can pass `dies_with_parent()` as `preexec_fn` to get the same.
"""

from __future__ import annotations

import ctypes
import dataclasses
import io
import os
import re
import resource
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from chatctl.names import room_key
from chatctl.protocol import (
    NEED_DATA,
    PROTOCOL_VERSION,
    Ack,
    Bye,
    Connection,
    ConnectionClosed,
    Event,
    Hello,
    HistoryEnd,
    Join,
    Members,
    Notice,
    Register,
    Role,
    Say,
    Welcome,
)
from chatctl.server.config import ServerConfig
from chatctl.server.log import ServerLog, find_listening
from chatctl.server.loop import Server
from chatctl.store.base import Store
from chatctl.store.registry import Registry

E = TypeVar("E", bound=Event)
_PR_SET_PDEATHSIG = 1  # linux/prctl.h
# Looked up here, not in the child: between fork and exec only async-signal-safe work is wise.
_prctl = ctypes.CDLL(None, use_errno=True).prctl if sys.platform == "linux" else None


def dies_with_parent(*, nofile: int | None = None) -> Callable[[], None]:
    """A `preexec_fn` (for subprocess.Popen or pexpect.spawn) that makes the child die with
    SIGKILL when this process dies, however it dies: Linux's PR_SET_PDEATHSIG; elsewhere it
    does nothing (the context managers' cleanup still runs on a normal exit). The signal comes
    when the *thread* that started the child ends, so start long-lived children from the main
    thread. `nofile` also sets the child's RLIMIT_NOFILE (soft and hard)."""
    parent = os.getpid()

    def setup() -> None:
        if nofile is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))
        if _prctl is not None:
            _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
            if os.getppid() != parent:  # the parent died before the prctl took effect
                os._exit(1)

    return setup


def free_port() -> int:
    """A TCP port of 127.0.0.1 that was free a moment ago (bound to port 0, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def server_instance(
    *, store: Store | None = None, registry: Registry | None = None, **overrides: Any
) -> Iterator[tuple[Server, str, int]]:
    """The real server, in-process in a background thread, on port 0 of 127.0.0.1 with
    in-memory history (or `store`). Keyword arguments override ServerConfig fields. Yields the Server (to
    look at its state), host and port; stops it cleanly at exit and re-raises its failure."""
    settings: dict[str, Any] = {
        "hosts": ("127.0.0.1",),
        "port": 0,
        "data": ":memory:",
        "log_level": "warning",
    }
    settings.update(overrides)
    config = ServerConfig(**settings)
    journal = ServerLog(config.log_level, config.log_format, io.StringIO())
    server = Server(config, journal=journal, store=store, registry=registry)
    host, port = server.bind()[0]
    failure: list[BaseException] = []

    def run() -> None:
        try:
            server.run()
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=run, name="chatctl-server", daemon=True)
    thread.start()
    opened = len(_open_clients)
    try:
        yield server, host, port
    finally:
        _close_clients_since(opened)
        server.stop()
        thread.join(timeout=15)
        if thread.is_alive():
            raise RuntimeError("the in-process server did not stop within 15 s")
    if failure:
        raise failure[0]


@contextmanager
def running_server(**overrides: Any) -> Iterator[tuple[str, int]]:
    """The real server in-process (see server_instance); yields (host, port)."""
    with server_instance(**overrides) as (_, host, port):
        yield host, port


@dataclasses.dataclass
class ServeProcess:
    proc: subprocess.Popen[str]
    host: str = ""
    port: int = 0
    lines: list[str] = dataclasses.field(default_factory=list)
    pump: threading.Thread | None = None  # collects stderr into .lines
    _cond: threading.Condition = dataclasses.field(default_factory=threading.Condition)
    _done: bool = False  # the log pipe has closed

    def stop(self, *, terminate_first: bool = False) -> None:
        """End the process (SIGTERM with a grace period first, if asked; else SIGKILL) and
        its log pump. Idempotent."""
        proc = self.proc
        if terminate_first and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
        if self.pump is not None:
            self.pump.join(timeout=10)
        if proc.stderr is not None:
            proc.stderr.close()

    def wait_for_line(self, pattern: str, timeout: float = 10.0) -> re.Match[str]:
        """The first log line (stderr) matching `pattern`, waiting up to `timeout`."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for line in self.lines:
                    found = regex.search(line)
                    if found:
                        return found
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and self._done):
                    raise AssertionError(
                        f"no log line matched {pattern!r}; log:\n" + "".join(self.lines)
                    )
                self._cond.wait(min(left, 0.5))

    def _pump(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self._cond:
                self.lines.append(line)
                self._cond.notify_all()
        with self._cond:
            self._done = True
            self._cond.notify_all()


def start_process(argv: list[str], *, nofile: int | None = None) -> ServeProcess:
    """Run `argv` with its stderr collected line by line into .lines by a pump thread (so a
    chatty process never blocks on a full pipe). The caller stops it (`ServeProcess.stop`);
    it dies with this process in any case (see `dies_with_parent`, which `nofile` goes to)."""
    proc = subprocess.Popen(
        argv,
        # Safe with threads here: the function only makes two system calls (see above).
        preexec_fn=dies_with_parent(nofile=nofile),  # noqa: PLW1509
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        encoding="utf-8",
        errors="replace",
    )
    handle = ServeProcess(proc)
    handle.pump = threading.Thread(target=handle._pump, daemon=True)
    handle.pump.start()
    return handle


def start_chatctl(*args: str, nofile: int | None = None) -> ServeProcess:
    """`python -m chatctl ARGS...`, as start_process runs it."""
    return start_process([sys.executable, "-m", "chatctl", *args], nofile=nofile)


def run_chatctl(
    *args: str,
    stdin: str | None = None,
    timeout: float = 60.0,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """`python -m chatctl ARGS...` to completion, with stdin (`None`: none at all), `env`
    added to the environment, and its output captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "chatctl", *args],
        env=None if env is None else {**os.environ, **env},
        input=stdin,
        stdin=None if stdin is not None else subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@contextmanager
def serve_process(
    *extra_args: str, timeout: float = 20.0, nofile: int | None = None
) -> Iterator[ServeProcess]:
    """`python -m chatctl serve --port 0 ...` in a subprocess (history in memory unless
    --data is given). Its stderr log is collected in .lines; it is killed at exit, and dies
    with this process. `nofile`: its RLIMIT_NOFILE."""
    args = ["serve", "--port", "0", *extra_args]
    if "--data" not in extra_args:
        args += ["--data", ":memory:"]
    handle = start_chatctl(*args, nofile=nofile)
    opened = len(_open_clients)
    try:
        address = find_listening(handle.wait_for_line("listening on ", timeout).string)
        assert address is not None
        handle.host, handle.port = address
        yield handle
    finally:
        _close_clients_since(opened)
        handle.stop()


# Clients opened inside a server context are closed when it ends, so tests need no cleanup.
_open_clients: list[Client] = []


def _close_clients_since(index: int) -> None:
    for client in _open_clients[index:]:
        client.close()
    del _open_clients[index:]


class Client:
    """A blocking protocol client for tests. Every wait has a deadline."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        timeout: float = 10.0,
        source: str | None = None,
        tls: ssl.SSLContext | None = None,
        rcvbuf: int | None = None,
    ) -> None:
        """`source`: the local address to connect from (127.0.0.2, say: another client
        address as the server counts them); `tls`: a client context, to speak TLS; `rcvbuf`:
        a small kernel receive buffer, to make the server's writes partial."""
        where = None if source is None else (source, 0)
        if rcvbuf is None:
            self.sock = socket.create_connection(
                (host, port), timeout=timeout, source_address=where
            )
        else:
            self.sock = socket.socket()
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            self.sock.settimeout(timeout)
            if where is not None:
                self.sock.bind(where)
            self.sock.connect((host, port))
        if tls is not None:
            self.sock = tls.wrap_socket(self.sock, server_hostname=host)
        _open_clients.append(self)
        self.conn = Connection(Role.CLIENT)
        self.timeout = timeout
        self.seen: list[Event] = []  # events passed over by wait_for
        self.nick = ""
        self.token = ""
        self._pending: list[Event] = []
        self._eof = False
        self._msg_ids = 0

    @classmethod
    def connect(
        cls,
        host: str,
        port: int,
        nick: str,
        *rooms: str,
        token: str = "",
        timeout: float = 10.0,
        source: str | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> Client:
        """Connected, welcomed, and in `rooms` (each join's replay consumed)."""
        client = cls(host, port, timeout=timeout, source=source, tls=tls)
        client.hello(nick, token=token)
        for room in rooms:
            client.join(room)
        return client

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    def send(self, event: Event) -> None:
        self.sock.sendall(self.conn.send(event))

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def next_msg_id(self) -> str:
        self._msg_ids += 1
        return f"m{self._msg_ids}"

    def recv(self, timeout: float | None = None) -> Event:
        """The next event; ConnectionClosed once the server closed the stream."""
        if self._pending:
            return self._pending.pop(0)
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            event = self.conn.next_event()
            if event is not NEED_DATA:
                return event
            if self._eof:  # after a Bye the protocol reports no ConnectionClosed; we do
                return ConnectionClosed()
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no event from the server in time")
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                raise TimeoutError("no event from the server in time") from None
            except ConnectionResetError:
                data = b""
            self._eof = not data
            self.conn.receive_data(data)

    def wait_for(
        self,
        kind: type[E],
        where: Callable[[E], bool] = lambda e: True,
        timeout: float | None = None,
    ) -> E:
        """The next event of type `kind` matching `where`; others are kept in .seen."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            event = self.recv(max(deadline - time.monotonic(), 0.001))
            if isinstance(event, kind) and where(event):
                return event
            if type(event) is ConnectionClosed:
                raise ConnectionError(f"closed while waiting for {kind.__name__}: {self.seen}")
            self.seen.append(event)

    def hello(
        self, nick: str, *, token: str = "", account: str = "", password: str = ""
    ) -> Welcome:
        self.send(
            Hello(
                version=PROTOCOL_VERSION,
                nick=nick,
                token=token,
                account=account,
                password=password,
            )
        )
        event = self.recv()
        if type(event) is not Welcome:
            raise AssertionError(f"expected Welcome, got {event}")
        self.nick, self.token = event.nick, event.token
        return event

    def join(self, room: str, **kwargs: Any) -> HistoryEnd:
        """Join; wait for the replay's end and the Members that close a join."""
        self.send(Join(room=room, **kwargs))
        name = room_key(room)  # as the server names the room in its answers
        end = self.wait_for(HistoryEnd, lambda e: e.room == name)
        self.wait_for(Members, lambda e: e.room == name)
        return end

    def say(self, room: str, text: str, *, action: bool = False, msg_id: str = "") -> Ack:
        msg_id = msg_id or self.next_msg_id()
        self.send(Say(msg_id=msg_id, room=room, text=text, action=action))
        return self.wait_for(Ack, lambda a: a.msg_id == msg_id)

    def bye(self) -> None:
        self.send(Bye())

    def wait_closed(self, timeout: float | None = None) -> Bye | None:
        """Read until the server closes the stream; the Bye it sent, if any."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        bye: Bye | None = None
        while True:
            event = self.recv(max(deadline - time.monotonic(), 0.001))
            if type(event) is Bye:
                bye = event
            elif type(event) is ConnectionClosed:
                return bye
            else:
                self.seen.append(event)


def register(addr: tuple[str, int], name: str, password: str) -> None:
    """Make `name` an account on the server at `addr` (open registration), as a guest does in
    the chat: connect as `name`, send Register, wait for its confirmation."""
    with Client(*addr) as raw:
        assert raw.hello(name).nick == name
        raw.send(Register(password=password))
        raw.wait_for(Notice, lambda n: n.kind == "registered")
        # Gone before this returns: a login right after must not find the nick still held.
        raw.bye()
        raw.wait_closed()
