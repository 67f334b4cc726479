"""The one chatctl client library: `join`, `send` and the bot are all built on it.

A blocking socket, a reader thread, and typed events out. Usage::

    from chatctl.client.connection import Client, Closed, Delivered
    from chatctl.protocol import Message

    with Client("127.0.0.1", 1060, nick="alice", rooms=["lobby"], reconnect=True) as client:
        client.connect()                      # ConnectFailed / Rejected / TimedOut
        out = client.say("lobby", "hello")    # returns at once
        ack = out.wait(5.0)                   # Ack(seq, recipients, ts) or Rejected / TimedOut
        for event in client.events():         # ends with Closed
            match event:
                case Message(): ...           # protocol events: Message, DirectMessage, Notice,
                case Delivered(): ...         #   Members, RoomList, Gap, HistoryEnd, Error;
                case Closed(): ...            # plus the client's own: Delivered, Refused,
                                              #   Disconnected, Reconnected, Closed (always last)

Events go to one queue (`next_event`), or, when `on_event` is given, to that callback, called
on the reader thread (keep it short; an interactive UI prints, a bot enqueues work).

The library answers the server's Ping, tracks the last sequence number seen per room, and
with `reconnect=True` survives a dropped connection: it reconnects with exponential backoff
and jitter, presents its resume token, rejoins every room asking for what it missed
(`Join(room, after=last seq)`), and re-sends every message not yet acknowledged with the
same `msg_id` (the server recognises the duplicate). What the resume recovers is delivered
as the live stream would have (history=False), exactly once: the resume is paged (the server
bounds each replay), drops replays of what came live, and leaves out our own unacknowledged
messages, whose re-sends' Delivered stand for them.

Requests (`who`, `list_rooms`, `history`, `change_nick`) are answered by events; `sync()`
waits until everything sent so far is answered, `wait_acked()` until every message is
acknowledged. `connect(retry_for=...)` also retries a first connection that fails.

Thread safety: every public method may be called from any thread.
"""

from __future__ import annotations

import dataclasses
import getpass
import itertools
import os
import queue
import random
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from types import TracebackType

from chatctl.errors import ChatctlError, ConnectFailed, Rejected, TimedOut
from chatctl.protocol import (
    NEED_DATA,
    PROTOCOL_VERSION,
    Ack,
    Bye,
    ChangeNick,
    Connection,
    ConnectionClosed,
    Error,
    ErrorCode,
    Event,
    Gap,
    Hello,
    History,
    HistoryEnd,
    Join,
    ListRooms,
    Message,
    Notice,
    Part,
    Ping,
    Pong,
    ProtocolError,
    Role,
    Say,
    State,
    Tell,
    Welcome,
    Who,
)

_RECV_SIZE = 256 * 1024
_POLL = 0.5  # the reader wakes this often to check for silence

# Frames the server's rate limit does not count.
_UNMETERED = (Hello, Ping, Pong, Bye)
# Bye codes after which reconnecting is pointless or unwanted.
_FINAL_BYE = frozenset({ErrorCode.REPLACED, ErrorCode.UNSUPPORTED_VERSION, ErrorCode.INVALID_NICK})
# Refusals of a Hello that may pass on a later attempt.
_RETRYABLE_REFUSAL = frozenset(
    {ErrorCode.TOO_MANY_CONNECTIONS, ErrorCode.SERVER_SHUTDOWN, ErrorCode.SERVER_ERROR}
)


# ---------------------------------------------------------------------------------------------
# The client's own events, next to the protocol's


@dataclass(frozen=True, kw_only=True, slots=True)
class Delivered:
    """The server acknowledged our `request`. Render our own message from this: the server
    does not echo it back."""

    request: Say | Tell
    ack: Ack
    nick: str  # our nick when the ack arrived


@dataclass(frozen=True, kw_only=True, slots=True)
class Refused:
    """The server refused our `request` with `error`."""

    request: Say | Tell
    error: Error


@dataclass(frozen=True, kw_only=True, slots=True)
class Disconnected:
    """The connection dropped. With `retrying`, a reconnect is under way."""

    reason: str
    retrying: bool


@dataclass(frozen=True, kw_only=True, slots=True)
class Reconnected:
    """Back after a drop; rooms rejoined, unacknowledged messages re-sent."""

    welcome: Welcome
    attempts: int


@dataclass(frozen=True, kw_only=True, slots=True)
class Closed:
    """The last event: the client is finished. `error` says why when it was not our choice."""

    reason: str
    error: ChatctlError | None = None


ClientEvent = Delivered | Refused | Disconnected | Reconnected | Closed
AnyEvent = Event | ClientEvent


@dataclass(frozen=True, kw_only=True)
class Backoff:
    """Exponential backoff with jitter: attempt n waits between half and all of
    min(cap, base * 2**n) seconds, so a crowd of clients does not reconnect in lockstep."""

    base: float = 0.1
    cap: float = 5.0
    max_attempts: int | None = None  # None: until close()

    def delay(self, attempt: int, rng: random.Random) -> float:
        ceiling = min(self.cap, self.base * 2.0 ** min(attempt, 32))
        return ceiling / 2 + rng.uniform(0.0, ceiling / 2)


class Outgoing:
    """A message on its way: `wait` for the server's Ack."""

    def __init__(self, request: Say | Tell) -> None:
        self.request = request
        self._done = threading.Event()
        self._ack: Ack | None = None
        self._error: ChatctlError | None = None

    @property
    def msg_id(self) -> str:
        return self.request.msg_id

    def done(self) -> bool:
        return self._done.is_set()

    def wait(self, timeout: float | None = None) -> Ack:
        """The Ack; raises Rejected (with the server's code), TimedOut, or ConnectFailed when
        the connection was lost for good first."""
        if not self._done.wait(timeout):
            raise TimedOut(f"no acknowledgement within {timeout:g} s")
        if self._error is not None:
            raise self._error
        assert self._ack is not None
        return self._ack

    def _resolve(self, ack: Ack | None, error: ChatctlError | None) -> None:
        if not self._done.is_set():
            self._ack, self._error = ack, error
            self._done.set()


def default_nick() -> str:
    """The login name, or "user" when there is none (a container without a passwd entry)."""
    try:
        return getpass.getuser() or "user"
    except (KeyError, OSError):
        return "user"


def room_name(name: str) -> str:
    """A room's canonical name, as the server stamps it on messages: "#Lobby" -> "lobby"."""
    return (name[1:] if name.startswith("#") else name).lower()


def _format_addr(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class _Link:
    """One TCP connection and its protocol state."""

    def __init__(self, sock: socket.socket, conn: Connection) -> None:
        self.sock = sock
        self.conn = conn
        self.bye: Bye | None = None
        self.dead = False

    def shutdown(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def close(self) -> None:
        self.shutdown()
        self.sock.close()


class _Pacer:
    """The server's token bucket (Welcome.limits rate and burst), mirrored with margins, so
    that a fast sender waits instead of being refused with RATE_LIMITED: 90 % of the rate,
    and half the burst left unused, so that the server's bucket still has room when it reads
    a backlog of our frames at once after a stall (burst / 2 / rate seconds of it: 2 s with
    the defaults)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.rate = 0.0  # tokens a second; 0: no limit
        self.cap = 0.0
        self.tokens = 0.0
        self.at = 0.0

    def reset(self, limits: dict[str, int]) -> None:
        """A new connection starts with a full bucket on the server too."""
        with self._lock:
            self.rate = 0.9 * limits.get("rate", 0)
            self.cap = max(1.0, limits.get("burst", 1) / 2)
            self.tokens, self.at = self.cap, time.monotonic()

    def _refill(self) -> None:
        now = time.monotonic()
        self.tokens = min(self.cap, self.tokens + (now - self.at) * self.rate)
        self.at = now

    def wait_time(self) -> float:
        with self._lock:
            if self.rate <= 0:
                return 0.0
            self._refill()
            return 0.0 if self.tokens >= 1 else (1 - self.tokens) / self.rate

    def spend(self) -> None:
        with self._lock:
            if self.rate > 0:
                self._refill()
                self.tokens -= 1


class _CatchUp:
    """A room's resume: replayed pages (Message(history=True), maybe a Gap, HistoryEnd) fill
    in from `cursor`, while live messages already flow from `live_min` on. A page can stop
    short of HistoryEnd.head (the server's replay limit), so the next one is asked for until
    the hole up to the live stream is filled. Replays of what came live are dropped."""

    def __init__(self, cursor: int) -> None:
        self.cursor = cursor  # everything up to here has been delivered, in order
        self.live_min: int | None = None
        self.live_max = 0
        self.progressed = False

    def live(self, seq: int) -> None:
        if self.live_min is None or seq < self.live_min:
            self.live_min = seq
        self.live_max = max(self.live_max, seq)

    def replayed(self, seq: int) -> bool:
        """Take a replayed message; False when it is a duplicate."""
        if seq <= self.cursor or (self.live_min is not None and seq >= self.live_min):
            return False
        self.cursor, self.progressed = seq, True
        return True

    def gap(self, gap: Gap) -> None:
        if gap.last > self.cursor:
            self.cursor, self.progressed = gap.last, True

    def more(self, head: int) -> bool:
        """After a page: is there a hole left to ask for? (Never loops without progress.)"""
        target = head if self.live_min is None else min(head, self.live_min - 1)
        more = self.cursor < target and self.progressed
        self.progressed = False
        return more


class Client:
    """A chatctl client. See the module docstring."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        nick: str,
        rooms: Iterable[str] = (),
        history: int | None = None,
        connect_timeout: float = 5.0,
        reconnect: bool = False,
        backoff: Backoff | None = None,
        keepalive: float = 30.0,
        on_event: Callable[[AnyEvent], None] | None = None,
        max_backlog: int = 10_000,
    ) -> None:
        self.host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
        self.port = port
        self.nick = nick
        self.token = ""
        self.welcome: Welcome | None = None
        self.connect_timeout = connect_timeout
        self.reconnect = reconnect
        self.backoff = backoff or Backoff()
        self.keepalive = keepalive
        self._history = history
        self._rooms: dict[str, None] = dict.fromkeys(map(room_name, rooms))  # ordered set
        self._last_seq: dict[str, int] = {}
        self._catchup: dict[str, _CatchUp] = {}  # rooms being resumed after a reconnect
        # Rooms parted since the connection was made: the Part may have been lost with it, and
        # a server that kept our session (resume token) would keep us in them.
        self._parted: dict[str, None] = {}
        self._quiet_parts: dict[str, None] = {}  # re-sent Parts whose answers are not news
        self._pending: dict[str, Outgoing] = {}
        self._ids = itertools.count(1)
        self._sync_tokens = itertools.count(1 << 40)  # apart from keepalive ping tokens
        self._syncs: dict[int, threading.Event] = {}
        self._id_prefix = os.urandom(6).hex()
        self.on_event = on_event  # may also be set before connect()
        self._queue: queue.SimpleQueue[AnyEvent] = queue.SimpleQueue()
        # Events waiting for next_event() at most: past it the reader stops reading, so a stuck
        # application makes the server see a slow consumer instead of this process growing.
        self.max_backlog = max_backlog
        self._rng = random.Random()
        self._pacer = _Pacer()
        # _wlock orders writes to the socket and guards the link and pending sends; _lock guards
        # the Connection state machine shared by reader and writers. Take _wlock first.
        self._wlock = threading.RLock()
        self._lock = threading.Lock()
        self._acked = threading.Condition(threading.Lock())
        self._link: _Link | None = None
        self._stop = threading.Event()
        self._reader: threading.Thread | None = None
        self._finished = threading.Event()

    # -- life cycle ----------------------------------------------------------------------------

    @property
    def addr(self) -> str:
        return _format_addr(self.host, self.port)

    @property
    def connected(self) -> bool:
        link = self._link
        return link is not None and not link.dead

    @property
    def running(self) -> bool:
        """True until the Closed event has been emitted."""
        return not self._finished.is_set()

    @property
    def rooms(self) -> tuple[str, ...]:
        return tuple(self._rooms)

    @property
    def limits(self) -> dict[str, int]:
        return dict(self.welcome.limits) if self.welcome else {}

    def last_seq(self, room: str) -> int | None:
        """The highest sequence number seen (received or acknowledged) in `room`."""
        return self._last_seq.get(room_name(room))

    def connect(self, *, retry_for: float | None = 0.0) -> Welcome:
        """Connect, say Hello, join the rooms given, and start the reader thread.

        A failed first attempt raises at once, or with `retry_for` is retried with backoff
        for that many seconds (None: until close(); for a daemon started before its server)."""
        if self._reader is not None:
            raise ChatctlError("already connected")
        if retry_for == 0:
            link, welcome = self._open()
        else:
            deadline = None if retry_for is None else time.monotonic() + retry_for
            link, welcome, _ = self._open_retrying(deadline, wait_first=False)
        with self._wlock:
            self._adopt(welcome)
            self._link = link
            for room in self._rooms:
                self._write(Join(room=room, history=self._history))
        self._reader = threading.Thread(target=self._run, name="chatctl-reader", daemon=True)
        self._reader.start()
        return welcome

    def close(self, reason: str = "", timeout: float = 2.0) -> None:
        """Say Bye (so the rooms see us leave), close the socket and stop the reader."""
        self._stop.set()
        with self._wlock:
            link = self._link
            if link is not None and not link.dead:
                try:
                    self._write(Bye(code=ErrorCode.NORMAL, reason=reason))
                    link.sock.shutdown(socket.SHUT_WR)
                except (OSError, ProtocolError):
                    link.shutdown()
        reader = self._reader
        if reader is not None and reader is not threading.current_thread():
            reader.join(timeout)
            if reader.is_alive() and link is not None:
                link.shutdown()  # the server did not close its side in time
                reader.join(timeout)
        if link is not None:
            link.close()
        if reader is None:
            self._finish(Closed(reason="closed"))

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- requests ------------------------------------------------------------------------------

    def new_msg_id(self) -> str:
        return f"{self._id_prefix}-{next(self._ids)}"

    def say(self, room: str, text: str, *, action: bool = False) -> Outgoing:
        """Send `text` to `room`. Queued while reconnecting; `wait()` on the result."""
        return self._send_message(
            Say(msg_id=self.new_msg_id(), room=room, text=text, action=action)
        )

    def tell(self, nick: str, text: str, *, action: bool = False) -> Outgoing:
        """Send a direct message to `nick`."""
        return self._send_message(Tell(msg_id=self.new_msg_id(), to=nick, text=text, action=action))

    def join(self, room: str, *, history: int | None = None) -> None:
        """Join `room` (remembered across reconnects). History replays with history=True."""
        room = room_name(room)
        self._pace()
        with self._wlock:
            self._rooms[room] = None
            self._parted.pop(room, None)
            self._write_if_connected(Join(room=room, history=history))

    def part(self, room: str, reason: str = "") -> None:
        room = room_name(room)
        self._pace()
        with self._wlock:
            self._rooms.pop(room, None)
            self._last_seq.pop(room, None)
            self._parted[room] = None
            self._write_if_connected(Part(room=room, reason=reason))

    def change_nick(self, nick: str) -> None:
        """Ask for a new nick; the Notice(kind="renamed") that follows updates `self.nick`."""
        self._request(ChangeNick(nick=nick))

    def who(self, room: str) -> None:
        """Ask for the members of `room`; a Members event answers."""
        self._request(Who(room=room))

    def list_rooms(self) -> None:
        """Ask for every room; a RoomList event answers."""
        self._request(ListRooms())

    def history(self, room: str, *, limit: int = 50, after: int | None = None) -> None:
        """Ask for stored messages: Message(history=True)..., maybe a Gap, then HistoryEnd."""
        self._request(History(room=room, limit=limit, after=after))

    def sync(self, timeout: float | None = None) -> bool:
        """Wait until the server has answered everything sent before: a Ping/Pong round trip
        (the server answers in order). The answers are queued, or passed to on_event, before
        this returns True. False after `timeout`."""
        token = next(self._sync_tokens)
        done = threading.Event()
        self._syncs[token] = done
        try:
            self._request(Ping(token=token))
            return done.wait(timeout)
        finally:
            self._syncs.pop(token, None)

    def unacked(self) -> int:
        with self._acked:
            return len(self._pending)

    def wait_acked(self, timeout: float | None = None) -> bool:
        """Wait until every message sent so far is acknowledged or refused."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._acked:
            while self._pending:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._acked.wait(left)
        return True

    # -- events ----------------------------------------------------------------------------------

    def next_event(self, timeout: float | None = None) -> AnyEvent | None:
        """The next event, or None after `timeout` seconds without one."""
        try:
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            return None

    def events(self, poll: float = 0.5) -> Iterator[AnyEvent]:
        """Every event, up to and including Closed."""
        while True:
            event = self.next_event(poll)
            if event is None:
                continue
            yield event
            if isinstance(event, Closed):
                return

    def _emit(self, event: AnyEvent) -> None:
        if self.on_event is not None:
            self.on_event(event)
            return
        if threading.current_thread() is self._reader:
            # Only the reader waits (nobody else may block on the application); it rechecks
            # a few times a second, and gives up waiting once the client is closed.
            while self._queue.qsize() >= self.max_backlog and not self._stop.wait(0.05):
                pass
        self._queue.put(event)

    def _finish(self, event: Closed) -> None:
        if not self._finished.is_set():
            self._finished.set()
            self._emit(event)

    # -- writing -------------------------------------------------------------------------------

    def _pace(self) -> None:
        """Wait (outside every lock) until the server's rate limit lets one more frame in."""
        while (wait := self._pacer.wait_time()) > 0:
            if self._stop.wait(wait):
                return

    def _send_message(self, request: Say | Tell) -> Outgoing:
        out = Outgoing(request)
        if self._finished.is_set():
            out._resolve(None, ConnectFailed("the connection is closed"))
            return out
        self._pace()
        with self._wlock:
            with self._acked:
                self._pending[request.msg_id] = out
            try:
                # While disconnected it waits in _pending and goes out after the reconnect.
                self._write_if_connected(request)
            except ChatctlError:
                with self._acked:
                    self._pending.pop(request.msg_id, None)
                    self._acked.notify_all()
                raise
        return out

    def _request(self, event: Event) -> None:
        if not isinstance(event, _UNMETERED):
            self._pace()
        with self._wlock:
            if not self.connected:
                raise ConnectFailed(f"not connected to {self.addr}")
            self._write(event)

    def _write_if_connected(self, event: Event) -> None:
        if self.connected:
            self._write(event)

    def _write(self, event: Event) -> None:
        """Encode and send under _wlock. A dead socket is left for the reader to notice."""
        with self._wlock:
            link = self._link
            if link is None or link.dead:
                return
            if not isinstance(event, _UNMETERED):
                self._pacer.spend()
            try:
                with self._lock:
                    data = link.conn.send(event)
            except ProtocolError as exc:
                if link.conn.state is State.CLOSED:
                    return  # the server said Bye; the reader is about to see the end
                raise ChatctlError(f"cannot send that: {exc}") from None
            try:
                link.sock.sendall(data)
            except OSError:
                link.dead = True
                link.shutdown()  # wakes the reader, which reconnects or closes

    # -- connecting ----------------------------------------------------------------------------

    def _open(self) -> tuple[_Link, Welcome]:
        """A TCP connection and a completed handshake, or ConnectFailed/Rejected/TimedOut."""
        deadline = time.monotonic() + self.connect_timeout
        try:
            sock = socket.create_connection((self.host, self.port), timeout=self.connect_timeout)
        except TimeoutError:
            raise ConnectFailed(
                f"could not connect to {self.addr}: no answer in {self.connect_timeout:g} s"
            ) from None
        except OSError as exc:
            raise ConnectFailed(
                f"could not connect to {self.addr}: {exc.strerror or exc}"
            ) from None
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        link = _Link(sock, Connection(Role.CLIENT))
        try:
            welcome = self._handshake(link, deadline)
        except BaseException:
            link.close()
            raise
        sock.settimeout(_POLL)
        return link, welcome

    def _handshake(self, link: _Link, deadline: float) -> Welcome:
        conn = link.conn
        try:
            link.sock.sendall(
                conn.send(Hello(version=PROTOCOL_VERSION, nick=self.nick, token=self.token))
            )
            while True:
                event = conn.next_event()
                if event is NEED_DATA:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise TimeoutError
                    link.sock.settimeout(left)
                    conn.receive_data(link.sock.recv(_RECV_SIZE))
                    continue
                if isinstance(event, Welcome):
                    return event
                if isinstance(event, Bye):
                    raise Rejected(event.reason or "the server refused the connection", event.code)
                raise ConnectFailed(f"{self.addr} closed the connection during the handshake")
        except TimeoutError:
            raise TimedOut(
                f"{self.addr} did not answer the handshake within {self.connect_timeout:g} s"
            ) from None
        except ProtocolError as exc:
            raise ConnectFailed(f"{self.addr} does not speak the chatctl protocol: {exc}") from None
        except OSError as exc:
            raise ConnectFailed(
                f"connection to {self.addr} failed: {exc.strerror or exc}"
            ) from None

    def _adopt(self, welcome: Welcome) -> None:
        self.welcome = welcome
        self.nick = welcome.nick
        self.token = welcome.token
        self._pacer.reset(welcome.limits)

    # -- the reader thread -----------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while True:
                link = self._link
                assert link is not None
                reason = self._read_until_lost(link)
                final = self._stop.is_set() or not self.reconnect
                if link.bye is not None and link.bye.code in _FINAL_BYE:
                    final = True
                if final:
                    break
                self._emit(Disconnected(reason=reason, retrying=True))
                if not self._reconnect():
                    return
            self._lost_for_good(reason)
        except Exception as exc:  # a bug must not leave waiters hanging forever
            self._lost_for_good(f"client error: {exc!r}")

    def _lost_for_good(self, reason: str) -> None:
        link = self._link
        if link is not None:
            link.dead = True
            link.close()
        clean = self._stop.is_set() and (link is None or link.bye is None or link.bye.code == 0)
        error = None if clean else self._loss_error(reason)
        self._fail_pending(error or ConnectFailed("the connection was closed"))
        self._finish(Closed(reason="closed" if clean else reason, error=error))

    def _loss_error(self, reason: str) -> ChatctlError:
        # A session the server ends (shutdown, idle, slow consumer...) is a lost connection,
        # not a refused request: ExitCode.CONNECT, with the server's code for the curious.
        link = self._link
        if link is not None and link.bye is not None and link.bye.code != ErrorCode.NORMAL:
            return ConnectFailed(
                f"{self.addr} ended the session: {reason} (server code {link.bye.code})"
            )
        return ConnectFailed(f"lost the connection to {self.addr}: {reason}")

    def _fail_pending(self, error: ChatctlError) -> None:
        with self._acked:
            pending = list(self._pending.values())
            self._pending.clear()
            self._acked.notify_all()
        for out in pending:
            out._resolve(None, error)

    def _read_until_lost(self, link: _Link) -> str:
        """Deliver events until the connection ends; return why it ended."""
        heard = time.monotonic()
        pinged = eof = False
        while True:
            try:
                with self._lock:
                    events = self._drain(link.conn)
            except ProtocolError as exc:
                link.dead = True
                if "middle of a frame" in str(exc):
                    # A server drops a reader that fell too far behind mid-frame, with no Bye.
                    return "the server closed the connection in the middle of a frame"
                return f"protocol error from the server: {exc}"
            for event in events:
                if isinstance(event, ConnectionClosed):
                    eof = True
                    break
                self._handle(link, event)
            if eof:  # after a Bye the protocol reports no ConnectionClosed: EOF is the end
                link.dead = True
                if link.bye is not None:
                    return link.bye.reason or f"the server said goodbye (code {link.bye.code})"
                return "the server closed the connection"
            if link.dead:
                return "the connection broke"
            try:
                data = link.sock.recv(_RECV_SIZE)
            except TimeoutError:
                silent = time.monotonic() - heard
                if silent > 2 * self.keepalive:
                    link.dead = True
                    return f"the server was silent for {silent:.0f} s"
                if silent > self.keepalive and not pinged:
                    pinged = True
                    self._write(Ping(token=int(time.monotonic())))
                continue
            except OSError as exc:
                link.dead = True
                return f"the connection broke: {exc.strerror or exc}"
            heard, pinged, eof = time.monotonic(), False, not data
            with self._lock:
                link.conn.receive_data(data)

    @staticmethod
    def _drain(conn: Connection) -> list[Event]:
        events: list[Event] = []
        while (event := conn.next_event()) is not NEED_DATA:
            events.append(event)
            if isinstance(event, ConnectionClosed):
                break
        return events

    def _handle(self, link: _Link, event: Event) -> None:
        if isinstance(event, Ping):
            self._write(Pong(token=event.token))
            return
        if isinstance(event, Pong):
            done = self._syncs.get(event.token)
            if done is not None:
                done.set()
            return
        if isinstance(event, Bye):
            link.bye = event
            return
        if isinstance(event, Ack):
            self._on_ack(event)
            return
        if isinstance(event, Error) and event.msg_id:
            if self._on_refused(event):
                return
        elif isinstance(event, Error) and event.code == ErrorCode.NOT_IN_ROOM and self._quiet_parts:
            # Answers come in request order: this is the oldest re-sent Part's, and it only
            # says the server had already forgotten us there.
            del self._quiet_parts[next(iter(self._quiet_parts))]
            return
        elif isinstance(event, Message):
            message = self._on_message(event)
            if message is None:
                return
            event = message
        elif isinstance(event, Gap):
            catchup = self._catchup.get(event.room)
            if catchup is not None:
                catchup.gap(event)
        elif isinstance(event, HistoryEnd):
            if not self._on_history_end(event):
                return
        elif isinstance(event, Notice) and event.nick.casefold() == self.nick.casefold():
            if event.kind == "renamed":
                self.nick = event.new_nick
            elif event.kind == "left" and event.room in self._quiet_parts:
                del self._quiet_parts[event.room]
        self._emit(event)

    def _seen(self, room: str, seq: int) -> None:
        catchup = self._catchup.get(room)
        if catchup is not None:
            catchup.live(seq)
        elif room and seq > self._last_seq.get(room, 0):
            self._last_seq[room] = seq

    def _on_message(self, message: Message) -> Message | None:
        """Track sequence numbers; the message to deliver, or None to leave it out."""
        catchup = self._catchup.get(message.room)
        if catchup is None or not message.history:
            self._seen(message.room, message.seq)
            return message
        if not catchup.replayed(message.seq):
            return None  # a duplicate of what came live
        self._last_seq[message.room] = catchup.cursor  # a reconnect now resumes from here
        if message.sender.casefold() == self.nick.casefold():
            return None  # ours, unacknowledged when we dropped: its Delivered stands for it
        # Missed while away, not old history: the stream simply continues.
        return dataclasses.replace(message, history=False)

    def _on_history_end(self, end: HistoryEnd) -> bool:
        """Finish a resume, or ask for the next page of it (False: not the end yet)."""
        catchup = self._catchup.get(end.room)
        if catchup is None:
            self._seen(end.room, end.head)
            return True
        if end.head < catchup.cursor:
            # The server lost the room's history (a `--data :memory:` restart): its numbering
            # starts again, so resume from its head next time, not from our old cursor.
            del self._catchup[end.room]
            self._last_seq[end.room] = max(end.head, catchup.live_max)
            return True
        if catchup.more(end.head):
            page = self.limits.get("replay_limit", 1000)
            self._write(History(room=end.room, after=catchup.cursor, limit=page))
            return False
        del self._catchup[end.room]
        self._seen(end.room, max(end.head, catchup.live_max))
        return True

    def _on_ack(self, ack: Ack) -> None:
        catchup = self._catchup.get(ack.room)
        if catchup is not None:
            # A re-sent message may have been stored before the drop: its seq says nothing
            # about where the live stream starts.
            catchup.live_max = max(catchup.live_max, ack.seq)
        elif ack.seq:
            self._seen(ack.room, ack.seq)
        with self._acked:
            out = self._pending.pop(ack.msg_id, None)
            self._acked.notify_all()
        if out is None:
            return  # a second ack of a duplicate: it was delivered once already
        out._resolve(ack, None)
        self._emit(Delivered(request=out.request, ack=ack, nick=self.nick))

    def _on_refused(self, error: Error) -> bool:
        with self._acked:
            out = self._pending.pop(error.msg_id, None)
            self._acked.notify_all()
        if out is None:
            return False
        out._resolve(None, Rejected(error.message, error.code))
        self._emit(Refused(request=out.request, error=error))
        return True

    def _open_retrying(
        self, deadline: float | None, *, wait_first: bool
    ) -> tuple[_Link, Welcome, int]:
        """_open() with backoff until it works: (link, welcome, attempts). Raises the last
        error once stopped, out of attempts, past `deadline`, or refused for good."""
        attempt = 0
        error: ChatctlError = ConnectFailed("not connected")
        while self.backoff.max_attempts is None or attempt < self.backoff.max_attempts:
            if attempt or wait_first:
                delay = self.backoff.delay(max(0, attempt - (not wait_first)), self._rng)
                if deadline is not None and time.monotonic() + delay > deadline:
                    break
                if self._stop.wait(delay):
                    break
            attempt += 1
            try:
                link, welcome = self._open()
                return link, welcome, attempt
            except Rejected as exc:
                error = exc
                if exc.code not in _RETRYABLE_REFUSAL:
                    break
            except ChatctlError as exc:
                error = exc
        raise error

    def _reconnect(self) -> bool:
        """Retry until connected (True), or stopped or out of attempts (False, Closed sent)."""
        old = self._link
        try:
            link, welcome, attempts = self._open_retrying(None, wait_first=True)
        except ChatctlError as exc:
            return self._give_up(old, exc)
        with self._wlock:
            # close() sets _stop, then takes _wlock: checked here, a close() cannot slip in
            # between and leave the new connection open behind it.
            if self._stop.is_set():
                link.close()
                return self._give_up(old, ConnectFailed("closed"))
            if old is not None:
                old.close()
            self._adopt(welcome)
            self._link = link
            self._resume()
        self._emit(Reconnected(welcome=welcome, attempts=attempts))
        return True

    def _give_up(self, old: _Link | None, exc: ChatctlError) -> bool:
        if old is not None:
            old.close()
        stopped = self._stop.is_set()
        error = None if stopped else exc
        self._fail_pending(error or ConnectFailed("the connection was closed"))
        self._finish(Closed(reason="closed" if stopped else str(exc), error=error))
        return False

    def _resume(self) -> None:
        """Rejoin every room for what was missed, leave again the rooms parted around the
        drop, then re-send what was never acknowledged."""
        for room in self._parted:
            self._quiet_parts[room] = None
            self._write(Part(room=room))
        self._parted.clear()
        for room in self._rooms:
            after = self._last_seq.get(room)
            if after is None:
                self._write(Join(room=room, history=self._history))
            else:
                self._catchup[room] = _CatchUp(cursor=after)
                self._write(Join(room=room, after=after))
        with self._acked:
            pending = list(self._pending.values())
        for out in pending:
            self._write(out.request)


__all__ = [
    "AnyEvent",
    "Backoff",
    "Client",
    "ClientEvent",
    "Closed",
    "Delivered",
    "Disconnected",
    "Outgoing",
    "Reconnected",
    "Refused",
    "default_nick",
    "room_name",
]
