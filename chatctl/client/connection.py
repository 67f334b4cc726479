"""The one chatctl client library: `join`, `send` and the bot are all built on it.

A blocking socket, a reader thread, and typed events out. Usage::

    from chatctl.client import Client, Closed, Delivered
    from chatctl.protocol import Message

    with Client("127.0.0.1", 1060, nick="alice", rooms=["lobby"], reconnect=True) as client:
        client.connect()                      # ConnectFailed / Rejected / TimedOut
        out = client.say("lobby", "hello")    # returns at once
        ack = out.wait(5.0)                   # Ack(seq, recipients, ts) or Rejected / TimedOut
        for event in client.events():         # ends with Closed
            match event:
                case Message(): ...           # protocol events: Message, DirectMessage, Notice,
                case Delivered(): ...         #   Members, RoomList, Gap, HistoryEnd, Error;
                case Closed(): ...            # plus the client's own (events.py): Delivered,
                                              #   Refused, Disconnected, Reconnected, Closed

Events go to one queue (`next_event`), or, when `on_event` is given, to that callback, called
on the reader thread (keep it short; an interactive UI prints, a bot enqueues work).

This module runs the I/O: the reader thread, keepalive pings, reconnecting with exponential
backoff and jitter, pacing under the server's rate limit, and delivering events (one TCP
connection, its handshake and the pacer are link.py's). Every rule about what to send and what to deliver (rooms,
acknowledgements, the resume after a reconnect: exactly once, in order) is the sans-IO
`ClientSession`'s (session.py), which this module runs under one lock.

Several servers: give a list of addresses (chatctl.address.Address) instead of host and port,
`Client(parse_addresses("chat://h1:1060,tls://h2:1060", 1060), nick=...)`. Every connection,
the first and each reconnect's, goes round them in order from the one last connected to (so a
working server is kept, and a dead one's successor is tried next, wrapping around): a refused
connection, a timeout, a server that is not TLS (or is, to chat://), an overloaded one, moves
on to the next; a refusal that would be the same anywhere (a wrong password, an untrusted
certificate, an unsupported version, InsecureLink) stops at once. The backoff applies to whole
rounds. A tls:// address trusts `tls` (or, without it, the system's CAs), each judged for
its own HOST:PORT; a chat:// one is plaintext. The session resumes on whichever server answers
(a server that does not know the resume token starts a new session: `Reconnected.new_session`).

To log in, give `account` and `password`: every Hello carries them, a reconnect's too (a
password goes only over TLS or to a loopback address: link.InsecureLink otherwise).
`register(password)` makes the current nick an account in the chat, and logs in with it
from then on.

Requests (`who`, `list_rooms`, `history`, `change_nick`, `register`, `moderate`) are
answered by events; `sync()` waits until everything sent so far is answered, `wait_acked()`
until every message is acknowledged. `connect(retry_for=...)` also retries a first connection that fails.

Thread safety: every public method may be called from any thread.

At some 850 lines this module is still one thing: the Client class, its threads and locks,
plus the two small types of its API (Backoff, Outgoing) and what decides a failover
(moves_on, none_answered). What is not about threads lives
beside it: the rules in session.py, one TCP connection in link.py, the events in events.py.
"""

from __future__ import annotations

import getpass
import itertools
import os
import queue
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING

from chatctl.address import Address
from chatctl.client.events import AnyEvent, Closed, Delivered, Disconnected, Reconnected, Refused
from chatctl.client.link import RECV_SIZE, InsecureLink, Link, Pacer, open_link
from chatctl.client.session import ClientSession
from chatctl.errors import ChatctlError, ConnectFailed, Rejected, TimedOut, Untrusted
from chatctl.names import room_key
from chatctl.protocol import (
    UNACKED_MAX,
    Ack,
    Bye,
    ChangeNick,
    ConnectionClosed,
    Error,
    ErrorCode,
    Event,
    Hello,
    History,
    HistoryEnd,
    ListRooms,
    Moderate,
    Notice,
    Ping,
    Pong,
    ProtocolError,
    Say,
    State,
    Tell,
    TruncatedStream,
    Welcome,
    Who,
)

if TYPE_CHECKING:
    import ssl

    from chatctl.client.trust import ServerTrust

# Frames the server's rate limit does not count.
_UNMETERED = (Hello, Ping, Pong, Bye)
# Bye codes after which reconnecting is pointless or unwanted.
_FINAL_BYE = frozenset(
    {
        ErrorCode.REPLACED,
        ErrorCode.UNSUPPORTED_VERSION,
        ErrorCode.INVALID_NICK,
        ErrorCode.AUTH_REQUIRED,
        ErrorCode.LOGIN_FAILED,
    }
)
# Bye codes that refuse the login: the application's error is Rejected, not a lost connection.
_LOGIN_BYE = frozenset({ErrorCode.AUTH_REQUIRED, ErrorCode.LOGIN_FAILED})
# Refusals of a Hello that may pass on a later attempt, or at another server.
_RETRYABLE_REFUSAL = frozenset(
    {ErrorCode.TOO_MANY_CONNECTIONS, ErrorCode.SERVER_SHUTDOWN, ErrorCode.SERVER_ERROR}
)


def moves_on(exc: ChatctlError) -> bool:
    """Whether a failed connection attempt may do better at the next address: no connection,
    no answer in time, not TLS (or TLS only: the server's MALFORMED_FRAME Bye to a plaintext
    Hello), a server too busy or shutting down. Not a refusal that would be the same
    anywhere: a login refused, an untrusted certificate, an unsupported version, a password
    that may not go in clear."""
    if isinstance(exc, Rejected):
        return exc.code in _RETRYABLE_REFUSAL or exc.code == ErrorCode.MALFORMED_FRAME
    return isinstance(exc, (ConnectFailed, TimedOut)) and not isinstance(exc, Untrusted)


def _retry_later(exc: ChatctlError) -> bool:
    """Whether a failed round may do better after a backoff: what moves on, but a server
    that refused us for good (a TLS port for a plaintext address, the one address given)."""
    if isinstance(exc, Rejected):
        return exc.code in _RETRYABLE_REFUSAL
    return moves_on(exc)


def none_answered(failures: Sequence[ChatctlError]) -> ChatctlError:
    """The error of a round in which every address failed: the one error when there was one
    address, else what each said, briefly, in one line. Its exit code is theirs when they all
    agree (all timed out: TimedOut), else ExitCode.CONNECT."""
    if len(failures) == 1:
        return failures[0]
    said = "; ".join(str(exc) for exc in failures)
    message = f"none of {len(failures)} servers answered: {said}"
    if all(isinstance(exc, TimedOut) for exc in failures):
        return TimedOut(message)
    return ConnectFailed(message)


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


class Client:
    """A chatctl client. See the module docstring."""

    def __init__(
        self,
        host: str | Address | Sequence[Address],
        port: int | None = None,
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
        tls: ssl.SSLContext | ServerTrust | None = None,
        account: str = "",
        password: str = "",
    ) -> None:
        if isinstance(host, str):
            if port is None:
                raise TypeError("Client(host, port): the port is missing")
            host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
            addresses: tuple[Address, ...] = (Address(host, port, tls is not None),)
        else:
            if port is not None:
                raise TypeError("Client(addresses): each address names its port")
            addresses = (host,) if isinstance(host, Address) else tuple(host)
            if not addresses:
                raise ValueError("Client(addresses): no address given")
        # The servers, tried in order from the one last connected to (index _current).
        self.addresses = addresses
        self._current = 0
        # What a tls:// address trusts: a context its CAs (trust.client_context), a
        # ServerTrust also certificates met before (trust on first use, trust.py); None: the
        # system's CAs (made when first needed).
        self.tls = tls
        self.connect_timeout = connect_timeout
        self.reconnect = reconnect
        self.backoff = backoff or Backoff()
        self.keepalive = keepalive
        self._session = ClientSession(
            nick, rooms=rooms, history=history, account=account, password=password
        )
        self._waiters: dict[str, Outgoing] = {}  # the session's pending messages, by msg_id
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
        self._pacer = Pacer()
        # _lock guards the session and the link, and orders writes to the socket (so a session
        # decision and the frames it makes go out together). Events are emitted outside it:
        # an application that blocks must not block writers.
        self._lock = threading.RLock()
        self._acked = threading.Condition(self._lock)  # notified as messages are answered
        self._link: Link | None = None
        self._stop = threading.Event()
        self._reader: threading.Thread | None = None
        self._finished = threading.Event()
        self._abandoned = False  # under _lock: no answer can come to a message any more

    # -- state ---------------------------------------------------------------------------------

    @property
    def nick(self) -> str:
        """The nick asked for, then the one the server assigned (renames included)."""
        return self._session.nick

    @nick.setter
    def nick(self, nick: str) -> None:
        with self._lock:
            self._session.nick = nick

    @property
    def token(self) -> str:
        """The resume token of the last Welcome ("" before one)."""
        return self._session.token

    @token.setter
    def token(self, token: str) -> None:
        with self._lock:
            self._session.token = token

    @property
    def account(self) -> str:
        """The account logged in to (or asked for, before the Welcome); "" for a guest."""
        return self._session.account

    @property
    def welcome(self) -> Welcome | None:
        return self._session.welcome

    @property
    def address(self) -> Address:
        """The server connected to, or last connected to (the first one before that)."""
        return self.addresses[self._current]

    @property
    def host(self) -> str:
        return self.address.host

    @property
    def port(self) -> int:
        return self.address.port

    @property
    def addr(self) -> str:
        """HOST:PORT of `address`."""
        return self.address.hostport

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
        with self._lock:
            return self._session.rooms

    @property
    def limits(self) -> dict[str, int]:
        return self._session.limits

    def joining(self, room: str) -> bool:
        """Whether a join of `room` waits for the server's answer."""
        with self._lock:
            return self._session.joining(room)

    def last_seq(self, room: str) -> int | None:
        """The highest sequence number seen (received or acknowledged) in `room`."""
        with self._lock:
            return self._session.last_seq(room)

    # -- life cycle ----------------------------------------------------------------------------

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
        with self._lock:
            self._adopt(link, welcome)
        self._reader = threading.Thread(target=self._run, name="chatctl-reader", daemon=True)
        self._reader.start()
        return welcome

    def close(self, reason: str = "", timeout: float = 2.0) -> None:
        """Say Bye (so the rooms see us leave), close the socket and stop the reader."""
        self._stop.set()
        with self._lock:
            link = self._link
            if link is not None and not link.dead:
                try:
                    self._write(Bye(code=ErrorCode.NORMAL, reason=reason))
                    link.half_close()
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
        if reader is None:  # never connected: messages queued for the Welcome fail now
            self._abandon(ConnectFailed("the connection was closed"))
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
        """Join `room`; it is in `rooms` (and remembered across reconnects) once the server
        has confirmed it: `wait_joined`. History replays with history=True."""
        self._pace()
        with self._lock:
            self._write_all(self._session.join(room, history=history))

    def wait_joined(self, room: str, timeout: float | None = None) -> bool | None:
        """Wait for the answer to a `join`: True when we are in `room`, False when the join
        was refused (the server's Error event says why) or the client is closed, None when
        no answer came within `timeout`."""
        return self._wait_answer(room, self._session.joining, timeout)

    def part(self, room: str, reason: str = "") -> None:
        """Leave `room`: it leaves `rooms` at once; the server's answer is our Notice
        (kind "left"), or an Error (NOT_IN_ROOM): `wait_parted`."""
        self._pace()
        with self._lock:
            self._write_all(self._session.part(room, reason))

    def wait_parted(self, room: str, timeout: float | None = None) -> bool | None:
        """Wait for the answer to a `part`: True once the server has answered it (or the
        client is closed), None when no answer came within `timeout`."""
        answered = self._wait_answer(room, self._session.parting, timeout)
        return None if answered is None else True

    def _wait_answer(
        self, room: str, waiting: Callable[[str], bool], timeout: float | None
    ) -> bool | None:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._acked:
            while waiting(room):
                if self._abandoned or self._finished.is_set():
                    return False
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return None
                self._acked.wait(left)
            return room_key(room) in self._session.rooms

    def change_nick(self, nick: str) -> None:
        """Ask for a new nick; the Notice(kind="renamed") that follows updates `self.nick`."""
        self._request(ChangeNick(nick=nick))

    def register(self, password: str) -> None:
        """Make the current nick an account with `password` (servers with open
        registration). A Notice(kind="registered") confirms it, and the client logs in with
        it from then on; an Error (REGISTRATION_REFUSED) says why not."""
        self._no_accounts()
        self._pace()
        with self._lock:
            link = self._link
            if link is None or link.dead:
                raise ConnectFailed(f"not connected to {self.addr}")
            if not link.secure:
                raise InsecureLink(
                    f"not sending a password to {self.addr} in clear: connect with "
                    f"tls://{self.addr} to register"
                )
            self._write_all(self._session.register(password))

    def moderate(self, room: str, action: str, *, target: str = "", text: str = "") -> None:
        """A room owner's or operator's change (`action` one of protocol.MODERATE_ACTIONS):
        a Notice to the room answers it, or an Error."""
        self._no_accounts()
        self._request(Moderate(room=room, action=action, target=target, text=text))

    def _no_accounts(self) -> None:
        """Register and Moderate go only to a server that announced accounts (an older one
        would end the connection over an unknown frame type): docs/protocol.md §9."""
        if self._session.welcome is not None and not self._session.limits.get("accounts", 0):
            raise ChatctlError(f"{self.addr} has no accounts: nothing to register or moderate")

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
        with self._lock:
            return self._session.unacked

    def wait_acked(self, timeout: float | None = None) -> bool:
        """Wait until every message sent so far is acknowledged or refused."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._acked:
            while self._session.unacked:
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
        self._pace()
        with self._lock:
            # The protocol allows UNACKED_MAX messages unacknowledged (so that the server
            # recognises every resend): past that, wait for answers.
            while (
                self._session.unacked >= UNACKED_MAX
                and not self._abandoned
                and not self._stop.is_set()
            ):
                self._acked.wait(0.5)
            # Checked under the lock that _abandon() takes: no message slips in after the
            # last waiters were failed, to wait for an answer that cannot come.
            if self._abandoned:
                out._resolve(None, ConnectFailed("the connection is closed"))
                return out
            # While disconnected it waits in the session and goes out after the reconnect.
            frames = self._session.send_message(request)
            self._waiters[request.msg_id] = out
            self._write_all(frames)
        return out

    def _request(self, event: Event) -> None:
        if not isinstance(event, _UNMETERED):
            self._pace()
        with self._lock:
            if not self.connected:
                raise ConnectFailed(f"not connected to {self.addr}")
            self._write(event)

    def _write_all(self, frames: Iterable[Event]) -> None:
        for frame in frames:
            self._write(frame)

    def _write(self, event: Event) -> None:
        """Encode and send under _lock. A dead socket is left for the reader to notice."""
        with self._lock:
            link = self._link
            if link is None or link.dead:
                return
            if not isinstance(event, _UNMETERED):
                self._pacer.spend()
            try:
                link.send(event)
            except ProtocolError as exc:
                if link.conn.state is State.CLOSED:
                    return  # the server said Bye; the reader is about to see the end
                raise ChatctlError(f"cannot send that: {exc}") from None

    # -- connecting ----------------------------------------------------------------------------

    def _trust(self, address: Address) -> ssl.SSLContext | ServerTrust | None:
        """What a connection to `address` trusts: None for plaintext."""
        if not address.tls:
            return None
        if self.tls is None:
            from chatctl.client.trust import ServerTrust, client_context

            self.tls = ServerTrust(client_context())
        return self.tls

    def _open(self) -> tuple[Link, Welcome]:
        """One round: each address in turn, from the current one, until one welcomes us.
        Raises at once an error that another address would not cure (`moves_on`), else,
        when none answered, what each said (`none_answered`)."""
        with self._lock:
            hello = self._session.hello()
        count = len(self.addresses)
        failures: list[ChatctlError] = []
        for step in range(count):
            if step and self._stop.is_set():
                break
            index = (self._current + step) % count
            address = self.addresses[index]
            try:
                link, welcome = open_link(
                    address.host, address.port, hello, self.connect_timeout, self._trust(address)
                )
            except ChatctlError as exc:
                if not moves_on(exc):
                    raise
                failures.append(exc)
                continue
            self._current = index
            return link, welcome
        raise none_answered(failures)

    def _adopt(self, link: Link, welcome: Welcome) -> None:
        """Make `link` the connection (under _lock) and send what the session starts it with:
        the rooms joined, or on a reconnect the resume."""
        self._link = link
        self._pacer.reset(welcome.limits)
        self._write_all(self._session.welcomed(welcome))

    def _open_retrying(
        self, deadline: float | None, *, wait_first: bool
    ) -> tuple[Link, Welcome, int]:
        """_open() with backoff until it works: (link, welcome, attempts). An attempt is a
        round of every address; the backoff is between rounds. Raises the last error once
        stopped, out of attempts, past `deadline`, or refused for good (`_retry_later`)."""
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
            except InsecureLink:
                raise  # the same next time
            except ChatctlError as exc:
                error = exc
                if not _retry_later(exc):  # refused for good, or the same certificate again
                    break
        raise error

    def _reconnect(self) -> bool:
        """Retry until connected (True), or stopped or out of attempts (False, Closed sent)."""
        old = self._link
        try:
            link, welcome, attempts = self._open_retrying(None, wait_first=True)
        except ChatctlError as exc:
            return self._give_up(old, exc)
        with self._lock:
            # close() sets _stop, then takes _lock: checked here, a close() cannot slip in
            # between and leave the new connection open behind it.
            if self._stop.is_set():
                link.close()
                return self._give_up(old, ConnectFailed("closed"))
            if old is not None:
                old.close()
            token = self._session.token  # the one the Hello presented
            self._adopt(link, welcome)
        self._emit(
            Reconnected(
                welcome=welcome,
                attempts=attempts,
                address=self.address,
                new_session=bool(token) and welcome.token != token,
            )
        )
        return True

    def _give_up(self, old: Link | None, exc: ChatctlError) -> bool:
        if old is not None:
            old.close()
        stopped = self._stop.is_set()
        error = None if stopped else exc
        self._abandon(error or ConnectFailed("the connection was closed"))
        self._finish(Closed(reason="closed" if stopped else str(exc), error=error))
        return False

    # -- the reader thread -----------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while True:
                link = self._link
                assert link is not None
                reason = self._read_until_lost(link)
                with self._lock:
                    self._session.connection_lost()
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
        self._abandon(error or ConnectFailed("the connection was closed"))
        self._finish(Closed(reason="closed" if clean else reason, error=error))

    def _loss_error(self, reason: str) -> ChatctlError:
        # A session the server ends (shutdown, idle, slow consumer...) is a lost connection,
        # not a refused request: ExitCode.CONNECT, with the server's code for the curious.
        link = self._link
        if link is not None and link.bye is not None and link.bye.code in _LOGIN_BYE:
            return Rejected(f"{self.addr} ended the session: {reason}", link.bye.code)
        if link is not None and link.bye is not None and link.bye.code != ErrorCode.NORMAL:
            return ConnectFailed(
                f"{self.addr} ended the session: {reason} (server code {link.bye.code})"
            )
        return ConnectFailed(f"lost the connection to {self.addr}: {reason}")

    def _abandon(self, error: ChatctlError) -> None:
        """Fail every message still waiting for an answer: none will come."""
        with self._acked:
            self._abandoned = True
            self._session.abandon()
            waiters = list(self._waiters.values())
            self._waiters.clear()
            self._acked.notify_all()
        for out in waiters:
            out._resolve(None, error)

    def _read_until_lost(self, link: Link) -> str:
        """Deliver events until the connection ends; return why it ended."""
        heard = time.monotonic()
        pinged = eof = False
        while True:
            events, broken = link.drain()
            for event in events:
                if isinstance(event, ConnectionClosed):
                    eof = True
                    break
                self._handle(link, event)
            if isinstance(broken, TruncatedStream):
                # The stream ended inside a frame: the connection was cut (a server drops a
                # slow consumer after whole frames and a Bye, but aborts one that does not
                # read even those within its close grace).
                link.dead = True
                return "the server closed the connection in the middle of a frame"
            if broken is not None:
                link.dead = True
                return f"protocol error from the server: {broken}"
            if eof:  # after a Bye the protocol reports no ConnectionClosed: EOF is the end
                link.dead = True
                if link.bye is not None:
                    return link.bye.reason or f"the server said goodbye (code {link.bye.code})"
                return "the server closed the connection"
            if link.dead:
                return "the connection broke"
            try:
                data = link.recv(RECV_SIZE)
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
            link.receive(data)

    def _handle(self, link: Link, event: Event) -> None:
        if isinstance(event, Pong):  # ours: a sync() or a keepalive
            done = self._syncs.get(event.token)
            if done is not None:
                done.set()
                return
        if isinstance(event, Bye):
            link.bye = event
            return
        with self._acked:
            actions = self._session.receive(event)
            self._write_all(actions.send)
            for answer in actions.emit:
                if isinstance(answer, Delivered):
                    self._answered(answer.request, answer.ack, None)
                elif isinstance(answer, Refused):
                    error = answer.error
                    self._answered(answer.request, None, Rejected(error.message, error.code))
        for answer in actions.emit:
            self._emit(answer)
        if isinstance(event, (Notice, HistoryEnd, Error)):
            # A join or part may have been answered: its waiters wake after the events that
            # answer it were emitted, so that an application shows them first.
            with self._acked:
                self._acked.notify_all()

    def _answered(self, request: Say | Tell, ack: Ack | None, error: ChatctlError | None) -> None:
        """Resolve the message's Outgoing (under _lock) before its event is emitted."""
        out = self._waiters.pop(request.msg_id, None)
        if out is not None:
            out._resolve(ack, error)
        self._acked.notify_all()


__all__ = ["Backoff", "Client", "Outgoing", "default_nick", "moves_on", "none_answered"]
