"""The four targets behind one small interface: how to set a connection up, what a publish
looks like on the wire, and which bytes acknowledge it.

Only set-up goes through real parsers (the chatctl sans-IO Connection, a few RESP, NATS and
IRC replies). Once running, the subscriber side never parses frames: it finds payloads by their
MARK (see scan.py), which none of the four framings can produce.
"""

from __future__ import annotations

import contextlib
import enum
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from chatctl import protocol as p
from chatctl.bench.payload import HEADER_LEN, MIN_SIZE, parse_payload, payload_template
from chatctl.errors import ChatctlError


class Kind(enum.StrEnum):
    chatctl = "chatctl"
    redis = "redis"
    nats = "nats"
    irc = "irc"


class SetupFailed(ChatctlError):
    """The target refused a bench connection during set-up."""


class Setup:
    """A connection's set-up conversation: `first` is sent on connect, then `feed` takes what
    arrives and returns (bytes to send, finished)."""

    first: bytes = b""
    # What a chatctl server said during set-up, for a connection that may have to resume on
    # another node: its resume token, and the room's latest seq when it joined.
    token: str = ""
    head: int = 0
    # A resumption's: the seq it rejoined after, and the (publisher, seq) of the bench
    # payloads it read on the way, in order.
    after: int = 0
    replayed: Sequence[tuple[int, int]] = ()
    rest = b""  # received after the end of the set-up

    def feed(self, data: bytes) -> tuple[bytes, bool]:
        raise NotImplementedError


@dataclass(frozen=True, kw_only=True)
class Adapter:
    kind: Kind
    echo: bool  # does a client receive its own publishes
    separate_pub_conn: bool  # a subscribed connection cannot publish (Redis RESP2)
    ack: bytes  # one occurrence on the wire per acknowledged publish...
    ack_every: int  # ...covering this many publishes
    refused: bytes | None  # one occurrence per refused publish
    ping: bytes | None  # a server ping that must be answered with `pong`
    pong: bytes
    keepalive: bytes | None  # sent by every connection now and then
    farewell: bytes | None  # starts what a server sends when it closes a connection
    window: int  # publishes in flight (sent, not acknowledged), shared by the publishers
    # With TLS: the server first says this much in clear, up to and including these bytes
    # (NATS's INFO line), and the handshake follows; None: the handshake comes first.
    tls_after: bytes | None = None
    # The bytes that leave a room cleanly at the end of a run on a live server (a chatctl
    # room keeps its history; the others keep nothing); None: just close.
    goodbye: Callable[[str | None], bytes] | None = None
    # A server ping whose answer depends on what it says (IRC's PING :token, answered
    # PONG :token): a fresh PingAnswers per connection; None: `pong` answers every `ping`.
    answers: Callable[[], PingAnswers] | None = None
    # The longest line the server takes (IRC: 512 bytes with CRLF), and how much longer the
    # server makes a publish when it relays it (IRC: the sender's :nick!user@host prefix).
    max_line: int = 0
    relay_overhead: int = 0
    # Connections each worker sets up at once (0: the worker's default): at most what the
    # server's listen backlog takes, or connects beyond it wait out a SYN retransmission.
    connect_parallel: int = 0
    # Seconds of set-up deadline allowed per connection, beyond CONNECT_TIMEOUT.
    setup_per_conn: float = 0.001
    # A server that can resume a session on another node of its cluster (chatctl): the set-up
    # of such a resumption, taking (name, room, token, after, sub); None: it cannot.
    resume: Callable[[str, str | None, str, int, bool], Setup] | None = None

    def setup(self, *, name: str, room: str | None, sub: bool, pub: bool) -> Setup:
        return _SETUPS[self.kind](name, room, sub, pub)

    def farewell_text(self, data: bytes) -> str:
        """What the server said, from bytes that start with `farewell` ("" if cut short)."""
        if self.kind is Kind.chatctl:
            if len(data) < p.HEADER_SIZE:
                return ""
            _, kind, _, length = p.HEADER.unpack_from(data)
            body = data[p.HEADER_SIZE : p.HEADER_SIZE + length]
            if len(body) < length:
                return ""
            try:
                bye = p.decode_body(kind, body)
            except p.ProtocolError:
                return "a malformed Bye"
            assert isinstance(bye, p.Bye)
            return f"{bye.reason} (code {bye.code})"
        line, sep, _ = data.partition(b"\r\n")
        return line.decode("utf-8", "replace")[:200] if sep else ""

    def publisher(self, *, pub: int, room: str, size: int) -> Callable[[int, int], bytes]:
        """A function (seq, ts) -> the bytes of one publish."""
        return _PUBLISHERS[self.kind](pub, room, size)

    def max_size(self, room: str) -> int:
        """The largest --size whose publishes (and their relayed copies) fit the server's
        line limit; 0: no limit."""
        if not self.max_line:
            return 0
        # The publish of a MIN_SIZE payload, less that payload: the framing around it.
        framing = len(self.publisher(pub=0, room=room, size=MIN_SIZE)(0, 0)) - MIN_SIZE
        return self.max_line - framing - self.relay_overhead


MAX_SETUP_REPLY = 64 * 1024
DEFAULT_REPLAY_LIMIT = 1000  # a chatctl server's, when its Welcome does not say


def _bounded(buf: bytes, who: str) -> bytes:
    """A set-up reply is a few lines: more means this is not the server we think it is."""
    if len(buf) > MAX_SETUP_REPLY:
        raise SetupFailed(f"{who}: no valid set-up reply in {MAX_SETUP_REPLY} bytes")
    return buf


def _escape(data: bytes) -> bytes:
    return data.replace(b"%", b"%%")


# chatctl -------------------------------------------------------------------------------------


class ChatctlSetup(Setup):
    def __init__(self, name: str, room: str | None, sub: bool, pub: bool) -> None:
        self.conn = p.Connection(p.Role.CLIENT)
        self.room = room
        self.first = self.conn.send(p.Hello(version=p.PROTOCOL_VERSION, nick=name))

    def feed(self, data: bytes) -> tuple[bytes, bool]:
        self.conn.receive_data(data)
        out = b""
        while True:
            event = _next_event(self.conn)
            if event is p.NEED_DATA:
                return out, False
            if isinstance(event, p.Welcome):
                self.token = event.token
                if self.room is None:
                    return out, True
                # Who is answered after the Join is done: its Members reply marks the end.
                out += self.conn.send(p.Join(room=self.room, history=0))
                out += self.conn.send(p.Who(room=self.room))
            elif isinstance(event, p.HistoryEnd) and event.room == self.room:
                self.head = event.head
            elif isinstance(event, p.Members) and event.room == self.room:
                return out, True
            else:
                _chatctl_refusal(event)


def _next_event(conn: p.Connection) -> p.Event | p.NeedData:
    try:
        return conn.next_event()
    except p.ProtocolError as exc:
        raise SetupFailed(f"chatctl server: {exc}") from None


def _chatctl_refusal(event: p.Event | p.NeedData) -> None:
    """Raise SetupFailed for an event that ends a chatctl set-up."""
    if isinstance(event, p.Error):
        raise SetupFailed(f"chatctl server refused: {event.message} ({event.code})")
    if isinstance(event, p.Bye):
        raise SetupFailed(f"chatctl server said bye: {event.reason} ({event.code})")
    if isinstance(event, p.ConnectionClosed):
        raise SetupFailed("chatctl server closed the connection during set-up")


class ChatctlResume(Setup):
    """A connection whose node went away, on another node of the cluster: Hello with the
    session's resume token (so that its resent msg_ids are recognised), then Join the room
    again. A publisher joins without history. A subscriber joins with `after` (the seq of
    the last message it got), and parses what follows itself until it has it all: the
    Join's replay stops at the server's replay limit (its HistoryEnd's head says how far
    it should have gone), so it asks for the rest in History pages while the room's live
    messages, after that head, come in behind them. Their payloads are kept in `replayed`,
    in the order they must be verified in (the replay and pages, then the live ones); the
    set-up ends once the pages reach the head, at the end of a read that leaves less than a
    frame's start unparsed, and the live messages after it are the run's traffic again."""

    def __init__(self, name: str, room: str | None, token: str, after: int, sub: bool) -> None:
        self.conn = p.Connection(p.Role.CLIENT)
        self.room, self.after, self.sub = room, after, sub
        self.token = token
        self.page = DEFAULT_REPLAY_LIMIT
        self.head = -1  # the Join's HistoryEnd: the replay must reach it
        self.replayed: list[tuple[int, int]] = []  # (publisher, seq) of bench payloads
        self.live: list[tuple[int, int]] = []
        # The first and last live message's seq. A session that moved to this node while
        # still a member gets its room's live messages from the Welcome on, before the Join's
        # replay: the replay and pages fill in below the first one, and a replayed message
        # at or past it is a duplicate (as the client library does it, client/session.py).
        self.first_live = 0
        self.last_live = 0
        self.asked = after  # where the Join's replay, or the last page, began
        self.caught_up = False
        self.first = self.conn.send(p.Hello(version=p.PROTOCOL_VERSION, nick=name, token=token))

    def feed(self, data: bytes) -> tuple[bytes, bool]:
        self.conn.receive_data(data)
        room, out = self.room, b""
        while True:
            event = _next_event(self.conn)
            if event is p.NEED_DATA:
                rest = self.conn.buffered
                if self.caught_up and rest < min(HEADER_LEN, len(data) + 1):
                    # The start of a frame (too short to hold its seq or a payload) goes
                    # on to the worker's scan, as the tail of the read before.
                    self.rest = data[len(data) - rest :]
                    self.replayed += self.live
                    self.after = max(self.after, self.last_live)
                    return out, True
                return out, False
            if isinstance(event, p.Welcome):
                if room is None or not self.sub:
                    # What came behind the Welcome in this read goes on to the worker's scan.
                    rest = self.conn.buffered
                    self.rest = data[len(data) - rest :] if rest else b""
                    return (b"" if room is None else p.encode(p.Join(room=room, history=0))), True
                self.page = event.limits.get("replay_limit", DEFAULT_REPLAY_LIMIT) or 1
                out += p.encode(p.Join(room=room, after=self.after))
            elif room is None:
                continue
            elif isinstance(event, p.Message) and event.room == room:
                self._message(event)
            elif isinstance(event, p.Gap) and event.room == room:
                self.after = max(self.after, event.last)  # gone: they count as lost
            elif isinstance(event, p.HistoryEnd) and event.room == room:
                if self.head < 0:
                    self.head = event.head  # the Join's: the live messages follow it
                target = min(self.head, self.first_live - 1) if self.first_live else self.head
                if self.after >= target or self.after == self.asked:
                    self.caught_up = True  # (a page that brought nothing: the rest is lost)
                else:
                    self.asked = self.after
                    out += p.encode(p.History(room=room, after=self.after, limit=self.page))
            else:
                _chatctl_refusal(event)

    def _message(self, m: p.Message) -> None:
        if m.history:
            if m.seq <= self.after or m.seq > self.head >= 0 or 0 < self.first_live <= m.seq:
                return  # a page overlapping what the replay brought, or the live messages
            self.after = m.seq
            into = self.replayed
        else:
            self.first_live = self.first_live or m.seq
            self.last_live = m.seq
            into = self.live
        with contextlib.suppress(ValueError):
            pub, seq, _ = parse_payload(m.text.encode())
            into.append((pub, seq))


def _chatctl_publisher(pub: int, room: str, size: int) -> Callable[[int, int], bytes]:
    # Encode one real Say with placeholders of the right lengths, then turn it into a format:
    # the payload is printable ASCII, so the JSON around it does not change between messages.
    msg_id, text = "Q" * 8, "Z" * size
    frame = _escape(p.encode(p.Say(msg_id=msg_id, room=room, text=text)))
    head, _, rest = frame.partition(msg_id.encode())
    mid, _, tail = rest.partition(text.encode())
    template = head + b"%08x" + mid + payload_template(pub, size) + tail
    return lambda seq, ts: template % (seq, seq, ts)


def _chatctl_goodbye(room: str | None) -> bytes:
    """Part the room, then Bye: the room sees the bench client leave, not drop."""
    part = p.encode(p.Part(room=room, reason="bench run over")) if room else b""
    return part + p.encode(p.Bye(code=p.ErrorCode.NORMAL, reason="bench run over"))


CHATCTL = Adapter(
    kind=Kind.chatctl,
    echo=False,
    separate_pub_conn=False,
    ack=p.HEADER.pack(p.MAGIC, p.Ack.TYPE, 0, 0)[:4],
    ack_every=1,
    refused=p.HEADER.pack(p.MAGIC, p.Error.TYPE, 0, 0)[:4],
    ping=None,  # our own keepalive pings keep the connection from going silent
    pong=b"",
    keepalive=p.encode(p.Ping(token=0)),
    farewell=p.HEADER.pack(p.MAGIC, p.Bye.TYPE, 0, 0)[:4],
    window=512,
    goodbye=_chatctl_goodbye,
    resume=ChatctlResume,
)


# Redis ---------------------------------------------------------------------------------------


def _resp(*args: bytes) -> bytes:
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)


class RedisSetup(Setup):
    def __init__(self, name: str, room: str | None, sub: bool, pub: bool) -> None:
        self.buf = b""
        self.sub = sub and room is not None
        self.first = _resp(b"SUBSCRIBE", room.encode()) if self.sub and room else _resp(b"PING")

    def feed(self, data: bytes) -> tuple[bytes, bool]:
        self.buf = _bounded(self.buf + data, "redis")
        if self.buf.startswith(b"-"):
            line = self.buf.split(b"\r\n")[0][1:].decode(errors="replace")
            raise SetupFailed(f"redis: {line}")
        if self.sub:
            # *3 $9 subscribe $N room :1
            return b"", self.buf.endswith(b"\r\n") and b"\r\n:" in self.buf
        return b"", self.buf.endswith(b"+PONG\r\n")


def _redis_publisher(pub: int, room: str, size: int) -> Callable[[int, int], bytes]:
    ch = room.encode()
    head = _escape(b"*3\r\n$7\r\nPUBLISH\r\n$%d\r\n%s\r\n$%d\r\n" % (len(ch), ch, size))
    template = head + payload_template(pub, size) + b"\r\n"
    return lambda seq, ts: template % (seq, ts)


REDIS = Adapter(
    kind=Kind.redis,
    echo=True,
    separate_pub_conn=True,
    ack=b"\n",  # the publishing connection receives one integer reply per PUBLISH
    ack_every=1,
    refused=None,
    ping=None,
    pong=b"",
    keepalive=None,
    farewell=b"-ERR",
    window=512,
)


# NATS ----------------------------------------------------------------------------------------

NATS_ACK_EVERY = 64
_NATS_CONNECT = {
    "verbose": False,
    "pedantic": False,
    "echo": False,  # like a chat room: no copy of one's own messages
    "lang": "python",
    "version": "chatctl-bench",
    "protocol": 1,
}


class NatsSetup(Setup):
    def __init__(self, name: str, room: str | None, sub: bool, pub: bool) -> None:
        self.buf = b""
        connect = dict(_NATS_CONNECT, name=name)
        self.first = b"CONNECT " + json.dumps(connect).encode() + b"\r\n"
        if sub and room is not None:
            self.first += b"SUB " + room.encode() + b" 1\r\n"
        self.first += b"PING\r\n"

    def feed(self, data: bytes) -> tuple[bytes, bool]:
        self.buf = _bounded(self.buf + data, "nats")
        at = self.buf.find(b"-ERR")
        if at >= 0:
            line = self.buf[at:].split(b"\r\n")[0].decode(errors="replace")
            raise SetupFailed(f"nats: {line}")
        return b"", b"PONG\r\n" in self.buf


def _nats_publisher(pub: int, room: str, size: int) -> Callable[[int, int], bytes]:
    head = _escape(b"PUB %s %d\r\n" % (room.encode(), size))
    template = head + payload_template(pub, size) + b"\r\n"
    # Core NATS has no per-message ack: a PING after every NATS_ACK_EVERY messages is answered
    # with a PONG once the server has processed them, which bounds what is in flight.
    with_ping = template + b"PING\r\n"
    last = NATS_ACK_EVERY - 1
    return lambda seq, ts: (with_ping if seq % NATS_ACK_EVERY == last else template) % (seq, ts)


NATS = Adapter(
    kind=Kind.nats,
    echo=False,
    separate_pub_conn=False,
    ack=b"PONG\r\n",
    ack_every=NATS_ACK_EVERY,
    refused=None,
    ping=b"PING\r\n",
    pong=b"PONG\r\n",
    keepalive=None,
    farewell=b"-ERR",
    window=NATS_ACK_EVERY * 8,
    tls_after=b"\r\n",  # INFO {...}\r\n, then the client starts TLS
)

# IRC -----------------------------------------------------------------------------------------

IRC_MAX_LINE = 512  # RFC 1459/2812: a message is at most 512 bytes, CRLF included
# What a server puts in front of a relayed PRIVMSG, ":nick!~user@host ", allowed for when
# checking --size: a bench nick and user of up to 20 bytes each and a host of up to 40.
IRC_RELAY_OVERHEAD = 1 + 20 + 2 + 20 + 1 + 40 + 1
IRC_ACK_EVERY = 16
IRC_ACK_TOKEN = b"chatctl-bench"
MAX_IRC_LINE_BUFFER = 8 * 1024  # an unfinished set-up line longer than this is not IRC
MAX_IRC_SETUP = 1024 * 1024  # MOTD and NAMES of a big channel fit many times over
# Error numerics that do not refuse anything: 422 ERR_NOMOTD (miniircd, without --motd).
IRC_HARMLESS = {b"422"}


def irc_channel(room: str) -> bytes:
    return b"#" + room.encode()


def irc_split(line: bytes) -> tuple[bytes, bytes, list[bytes]]:
    """(prefix, COMMAND, params) of one IRC line without its CRLF (RFC 2812 2.3.1)."""
    prefix = b""
    if line.startswith(b":"):
        prefix, _, line = line[1:].partition(b" ")
    head, sep, trailing = line.partition(b" :")
    words = head.split()
    command = words[0].upper() if words else b""
    params = words[1:] + ([trailing] if sep else [])
    return prefix, command, params


class IrcSetup(Setup):
    """Register (NICK, USER, wait for 001), then JOIN the channel and wait for the end of its
    NAMES (366). Answers any PING on the way; any error numeric or ERROR fails the set-up."""

    def __init__(self, name: str, room: str | None, sub: bool, pub: bool) -> None:
        self.nick = name.encode()
        self.channel = irc_channel(room) if room is not None else None
        self.buf = b""
        self.seen = 0
        self.first = b"NICK %s\r\nUSER %s 0 * :bench\r\n" % (self.nick, self.nick)

    def feed(self, data: bytes) -> tuple[bytes, bool]:
        self.seen += len(data)
        if self.seen > MAX_IRC_SETUP:
            raise SetupFailed(f"irc: no end of set-up in {MAX_IRC_SETUP} bytes")
        *lines, self.buf = (self.buf + data).split(b"\n")
        if len(self.buf) > MAX_IRC_LINE_BUFFER:
            raise SetupFailed(f"irc: a line of over {MAX_IRC_LINE_BUFFER} bytes")
        out = b""
        for raw in lines:
            _, command, params = irc_split(raw.rstrip(b"\r"))
            if command == b"PING":
                out += b"PONG :%s\r\n" % (params[-1] if params else b"")
            elif command == b"ERROR":
                text = (params[-1] if params else b"").decode(errors="replace")
                raise SetupFailed(f"irc server closed the connection: {text}")
            elif command == b"001":
                if self.channel is None:
                    return out, True
                out += b"JOIN %s\r\n" % self.channel
            elif command == b"366" and len(params) >= 2 and self._is_ours(params[1]):
                return out, True
            elif len(command) == 3 and command[:1] in b"45" and command not in IRC_HARMLESS:
                text = b" ".join(params[1:]).decode(errors="replace")
                raise SetupFailed(f"irc server refused: {command.decode()} {text}")
        return out, False

    def _is_ours(self, channel: bytes) -> bool:
        return self.channel is not None and channel.lower() == self.channel.lower()


class PingAnswers:
    """Answers a server's `PING token` with `PONG token`, fed a connection's receive segments
    (see scan.py: each is the carried tail of the previous read, then `fresh` new bytes).

    The worker calls `feed` only for a segment holding a new occurrence of `PING ` (found for
    the whole round at once) or while a PING line begun earlier is still unfinished, so the
    cost per message is nothing. A PING counts when the pattern ends among the new bytes; its
    token runs to the end of the line, which may come reads later.
    """

    __slots__ = ("partial",)
    PATTERN = b"PING "
    MAX = IRC_MAX_LINE

    def __init__(self) -> None:
        self.partial: bytes | None = None  # the arguments of a PING whose line has not ended

    def feed(self, segment: bytes, fresh: int) -> bytes:
        out = []
        at = 0
        if self.partial is not None:
            end = segment.find(b"\n", fresh)
            if end < 0:
                self.partial = (self.partial + segment[fresh:])[: self.MAX]
                return b""
            out.append(self._pong(self.partial + segment[fresh:end]))
            self.partial = None
            at = end + 1
        pattern = self.PATTERN
        while (found := segment.find(pattern, at)) >= 0:
            start = found + len(pattern)
            if start <= fresh:  # seen whole by an earlier read
                at = found + 1
                continue
            end = segment.find(b"\n", start)
            if end < 0:
                self.partial = segment[start:][: self.MAX]
                break
            out.append(self._pong(segment[start:end]))
            at = end + 1
        return b"".join(out)

    @staticmethod
    def _pong(args: bytes) -> bytes:
        return b"PONG " + args.rstrip(b"\r") + b"\r\n"


def _irc_publisher(pub: int, room: str, size: int) -> Callable[[int, int], bytes]:
    head = _escape(b"PRIVMSG %s :" % irc_channel(room))
    template = head + payload_template(pub, size) + b"\r\n"
    # IRC has no acknowledgement of a PRIVMSG: a PING after every IRC_ACK_EVERY messages is
    # answered (PONG) once the server has handled the messages before it, as with NATS.
    with_ping = template + b"PING :" + IRC_ACK_TOKEN + b"\r\n"
    last = IRC_ACK_EVERY - 1
    return lambda seq, ts: (with_ping if seq % IRC_ACK_EVERY == last else template) % (seq, ts)


def _irc_goodbye(room: str | None) -> bytes:
    return b"QUIT :bench run over\r\n"


IRC = Adapter(
    kind=Kind.irc,
    echo=False,  # a server does not send a PRIVMSG back to its sender
    separate_pub_conn=False,
    # ":server PONG server :chatctl-bench": the token cannot come from a payload, a nick
    # or a channel of the run (payloads are hex digits and dots).
    ack=b" :" + IRC_ACK_TOKEN + b"\r\n",
    ack_every=IRC_ACK_EVERY,
    refused=None,
    ping=PingAnswers.PATTERN,
    pong=b"",
    keepalive=None,  # the server pings; PingAnswers answers
    farewell=b"ERROR :",
    # Small: ngircd closes a client whose unsent output reaches 32 KiB (not configurable),
    # so a subscriber's share of what is in flight must stay well below it.
    window=IRC_ACK_EVERY * 8,
    goodbye=_irc_goodbye,
    answers=PingAnswers,
    max_line=IRC_MAX_LINE,
    relay_overhead=IRC_RELAY_OVERHEAD,
    # ngircd listens with a backlog of 10: two workers with 4 each stay below it.
    connect_parallel=4,
    # Each JOIN is announced to every member already there: set-up grows as N squared.
    setup_per_conn=0.01,
)

_SETUPS: dict[Kind, Callable[[str, str | None, bool, bool], Setup]] = {
    Kind.chatctl: ChatctlSetup,
    Kind.redis: RedisSetup,
    Kind.nats: NatsSetup,
    Kind.irc: IrcSetup,
}
_PUBLISHERS: dict[Kind, Callable[[int, str, int], Callable[[int, int], bytes]]] = {
    Kind.chatctl: _chatctl_publisher,
    Kind.redis: _redis_publisher,
    Kind.nats: _nats_publisher,
    Kind.irc: _irc_publisher,
}
ADAPTERS: dict[Kind, Adapter] = {
    Kind.chatctl: CHATCTL,
    Kind.redis: REDIS,
    Kind.nats: NATS,
    Kind.irc: IRC,
}
