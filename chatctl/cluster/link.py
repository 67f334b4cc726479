"""One connection to Redis, non-blocking, on the server's selector.

A `RedisLink` queues commands (`call`), sends everything queued in one `send` when the loop
says so (`flush`, once per loop turn), reads and dispatches replies when its socket is ready
(`ready`), and reconnects after a failure with an exponential backoff (`tick`, at `wake_at`).
Its `state` is DOWN, CONNECTING or READY; only READY takes commands. A command's callback
always gets exactly one value: its reply, a `RedisError` reply, or `Unavailable` when the
connection was lost before the reply came (`sent` says whether it may have run); callbacks
run in the order of their commands, whatever the outcome.

No call here blocks but the name lookup, done once when the link is made (before the loop
starts). The codec is resp.py; this module only moves its bytes.
"""

from __future__ import annotations

import enum
import errno
import selectors
import socket
import time
from collections.abc import Callable

from chatctl.cluster.resp import Pipeline, RedisError, Reply, RespProtocolError, command
from chatctl.errors import ChatctlError
from chatctl.redis_url import RedisUrl

OnReply = Callable[[Reply], None]
READ_CHUNK = 256 * 1024
READS_PER_TURN = 16  # a link's fair share of a loop turn: 4 MiB of replies
CONNECT_TIMEOUT = 3.0
# A command in flight this long without any reply means a Redis that is stuck or gone
# without a word (a cable pulled, SIGSTOP): longer than any BLOCK this package asks for.
REPLY_TIMEOUT = 10.0
BACKOFF_FIRST = 0.05
BACKOFF_CAP = 2.0


class LinkState(enum.Enum):
    DOWN = "down"  # not connected; reconnects at `wake_at` (never, once closed)
    CONNECTING = "connecting"
    READY = "ready"


class Unavailable(RedisError):
    """The connection was lost before this command's reply came: it never left (`sent`
    False, it did not run), or it had left and may have run (`sent` True)."""

    def __init__(self, message: str, *, sent: bool) -> None:
        super().__init__(message)
        self.sent = sent


class Backoff:
    """Waits between attempts: BACKOFF_FIRST, doubling up to BACKOFF_CAP; `reset` on success.
    No jitter: a node has one link of each kind, there is no crowd to spread."""

    def __init__(self, first: float = BACKOFF_FIRST, cap: float = BACKOFF_CAP) -> None:
        self.first = first
        self.cap = cap
        self._next = first

    def next(self) -> float:
        delay = self._next
        self._next = min(self._next * 2, self.cap)
        return delay

    def reset(self) -> None:
        self._next = self.first


def resolve(url: RedisUrl) -> tuple[socket.AddressFamily, tuple[str, int]]:
    """The address to connect to (the first the resolver gives). Blocking: call it before the
    loop runs. Raises ChatctlError when the name does not resolve."""
    try:
        infos = socket.getaddrinfo(url.host, url.port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise ChatctlError(f"cannot resolve the Redis host {url.host!r}: {exc}") from None
    family, _, _, _, sockaddr = infos[0]
    return family, (str(sockaddr[0]), int(sockaddr[1]))


class RedisLink:
    """One connection to Redis on `selector` (registered with itself as the key's data: the
    loop calls `ready(mask)`). `on_up()` runs when a connection is ready (the database is
    selected), `on_down(reason)` when one is lost; neither runs for `close()`."""

    def __init__(
        self,
        name: str,
        url: RedisUrl,
        selector: selectors.BaseSelector,
        *,
        on_up: Callable[[], None],
        on_down: Callable[[str], None],
        clock: Callable[[], float] = time.monotonic,
        reply_timeout: float = REPLY_TIMEOUT,
    ) -> None:
        self.name = name
        self.url = url
        self._family, self._addr = resolve(url)
        self._sel = selector
        self._on_up = on_up
        self._on_down = on_down
        self._clock = clock
        self.reply_timeout = reply_timeout
        self.state = LinkState.DOWN
        self.error = "not connected yet"  # why it is down
        self.backoff = Backoff()
        self._pipeline: Pipeline[OnReply] = Pipeline()
        self._sock: socket.socket | None = None
        self._out = b""  # bytes of commands in flight that the kernel has not taken yet
        self._writing = False  # registered for EVENT_WRITE
        self._retry_at: float | None = None
        self._deadline = 0.0  # CONNECTING: give up then; READY: when a reply is overdue
        self._closed = False

    # -- what the engine sees ----------------------------------------------------------------

    @property
    def ready_for_commands(self) -> bool:
        return self.state is LinkState.READY

    @property
    def in_flight(self) -> int:
        return self._pipeline.in_flight

    @property
    def wake_at(self) -> float | None:
        """When `tick` has something to do: a reconnect, a connect or reply deadline."""
        if self.state is LinkState.DOWN:
            return self._retry_at
        if self.state is LinkState.CONNECTING or self._pipeline.in_flight:
            return self._deadline
        return None

    def call(self, *args: bytes | str | int, on_reply: OnReply) -> None:
        """Queue a command; `on_reply` gets its outcome. Refused at once (Unavailable, not
        sent) unless the link is READY."""
        self.call_encoded(command(*args), on_reply)

    def call_encoded(self, data: bytes, on_reply: OnReply) -> None:
        """`call` for a command already encoded (resp.command, resp.command_ending_with)."""
        if self.state is not LinkState.READY:
            on_reply(Unavailable(f"Redis is unavailable: {self.error}", sent=False))
            return
        self._pipeline.send(data, on_reply)

    # -- driven by the loop ------------------------------------------------------------------

    def connect(self) -> None:
        """Start connecting (DOWN -> CONNECTING), without blocking."""
        if self._closed or self.state is not LinkState.DOWN:
            return
        self._retry_at = None
        sock = socket.socket(self._family, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        code = sock.connect_ex(self._addr)
        self._sock = sock
        self.state = LinkState.CONNECTING
        self._deadline = self._clock() + CONNECT_TIMEOUT
        if code not in (0, errno.EINPROGRESS, errno.EWOULDBLOCK):
            self._down(f"cannot connect to {self.url}: {errno.errorcode.get(code, code)}")
            return
        self._sel.register(sock, selectors.EVENT_WRITE, self)
        self._writing = True

    def tick(self, now: float) -> None:
        """Reconnect when the backoff is over; give up a connection whose connect or reply
        is overdue."""
        if self.state is LinkState.DOWN:
            if self._retry_at is not None and now >= self._retry_at:
                self.connect()
        elif self.state is LinkState.CONNECTING:
            if now >= self._deadline:
                self._down(f"no connection to {self.url} within {CONNECT_TIMEOUT:g} s")
        elif self._pipeline.in_flight and now >= self._deadline:
            self._down(f"no reply from {self.url} within {self.reply_timeout:g} s")

    def ready(self, mask: int) -> None:
        """The selector says the socket is readable (replies) or writable (connected, or
        room for the rest of a send)."""
        if self.state is LinkState.CONNECTING:
            if mask & selectors.EVENT_WRITE:
                self._connected()
            return
        if self.state is not LinkState.READY:
            return
        if mask & selectors.EVENT_READ:
            self._read()
        if mask & selectors.EVENT_WRITE and self.state is LinkState.READY:
            self.flush()

    def flush(self) -> None:
        """One `send` of everything queued (and of what an earlier send left)."""
        if self.state is not LinkState.READY:
            return
        pipeline = self._pipeline
        if pipeline.queued:
            if not pipeline.in_flight:
                self._deadline = self._clock() + self.reply_timeout
            fresh = pipeline.data_to_send()
            self._out = self._out + fresh if self._out else fresh
        if not self._out:
            return
        sock = self._sock
        assert sock is not None
        try:
            sent = sock.send(self._out)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError as exc:
            self._down(f"connection to {self.url} lost: {exc.strerror or exc}")
            return
        self._out = self._out[sent:]
        want = selectors.EVENT_READ | (selectors.EVENT_WRITE if self._out else 0)
        if bool(self._out) != self._writing:
            self._writing = bool(self._out)
            self._sel.modify(sock, want, self)

    def close(self) -> None:
        """Close for good: no callback runs, no reconnect."""
        self._closed = True
        self._drop_socket()
        self._pipeline.reset()
        self.state = LinkState.DOWN
        self.error = "closed"
        self._retry_at = None

    # -- inside ------------------------------------------------------------------------------

    def _connected(self) -> None:
        sock = self._sock
        assert sock is not None
        code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if code:
            self._down(f"cannot connect to {self.url}: {errno.errorcode.get(code, code)}")
            return
        self.state = LinkState.READY
        self._writing = False
        self._sel.modify(sock, selectors.EVENT_READ, self)
        if self.url.db:
            self._pipeline.send(command("SELECT", self.url.db), self._selected)
        else:
            self._up()

    def _selected(self, reply: Reply) -> None:
        if isinstance(reply, Unavailable):
            return  # the link went down meanwhile, and said so
        if reply != b"OK":
            self._down(f"SELECT {self.url.db} failed: {reply!r}")
            return
        self._up()

    def _up(self) -> None:
        self.backoff.reset()
        self.error = ""
        self._on_up()

    def _read(self) -> None:
        sock = self._sock
        assert sock is not None
        pipeline = self._pipeline
        for _ in range(READS_PER_TURN):
            try:
                data = sock.recv(READ_CHUNK)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self._down(f"connection to {self.url} lost: {exc.strerror or exc}")
                return
            if not data:
                self._down(f"{self.url} closed the connection")
                return
            try:
                replies = pipeline.receive(data)
            except RespProtocolError as exc:
                self._down(f"{self.url}: {exc}")
                return
            if replies:
                self._deadline = self._clock() + self.reply_timeout
            for on_reply, reply in replies:
                on_reply(reply)
                if self.state is not LinkState.READY:
                    return  # a callback closed it
            if len(data) < READ_CHUNK:
                return

    def _down(self, reason: str) -> None:
        self._drop_socket()
        self.state = LinkState.DOWN
        self.error = reason
        self._retry_at = self._clock() + self.backoff.next()
        unsent, unknown = self._pipeline.reset()
        self._on_down(reason)
        for on_reply in unknown:  # in the order the commands were given: these came first
            on_reply(Unavailable(reason, sent=True))
        for on_reply in unsent:
            on_reply(Unavailable(reason, sent=False))

    def _drop_socket(self) -> None:
        sock, self._sock = self._sock, None
        self._out = b""
        self._writing = False
        if sock is None:
            return
        try:
            self._sel.unregister(sock)
        except (KeyError, ValueError):
            pass
        sock.close()
