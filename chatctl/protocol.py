"""The chatctl wire protocol, sans-IO.

Bytes go in with `Connection.receive_data`, typed events come out of `Connection.next_event`,
and `Connection.send(event)` returns the bytes to write. Nothing here touches a socket, a
thread or a clock, so the same code serves the server, every client and the tests.

Every frame is an 8-byte header followed by a body:

    offset 0  2 bytes  magic  b"CC"
    offset 2  1 byte   frame type
    offset 3  1 byte   flags (0 in protocol version 1)
    offset 4  4 bytes  body length, unsigned, big-endian

The body is a UTF-8 JSON object. docs/protocol.md is the full specification; this module is
its reference implementation and a test keeps the two in step.

About 750 lines, kept as one: the spec's frames, events, codec and state machine, which a
reader of docs/protocol.md wants side by side (h11 keeps its equivalent together too).
"""

# No `from __future__ import annotations` here: the codec reads the field types as real
# objects at import time, which is cheaper than resolving strings with get_type_hints.
import enum
import json
import re
import struct
from collections.abc import Callable
from typing import Annotated, Any, ClassVar, Literal, TypeAlias

import msgspec
from msgspec import field

PROTOCOL_VERSION = 1
# The default server address (docs/protocol.md): every command and config uses these two.
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 1060
MAGIC = b"CC"
HEADER = struct.Struct("!2sBBI")
HEADER_SIZE = HEADER.size  # 8
DEFAULT_MAX_FRAME_SIZE = 64 * 1024
MAX_FRAME_SIZE_CEILING = 4 * 1024 * 1024
MAX_INT = 2**63 - 1
# A client has at most this many room messages unacknowledged at once (docs/protocol.md
# §6.3): the server recognises resends among each sender's newest this many.
UNACKED_MAX = 4096
DEFAULT_MAX_TEXT = 8 * 1024  # UTF-8 bytes of message text; JSON escaping stays under 64 KiB


class Role(enum.Enum):
    CLIENT = "client"
    SERVER = "server"


class State(enum.Enum):
    """Session states, shared by both ends of one connection."""

    START = "start"  # nothing sent yet; the client must say Hello
    HANDSHAKE = "handshake"  # Hello sent, Welcome (or Bye) awaited
    READY = "ready"  # Welcome sent: the chat is open
    CLOSED = "closed"  # Bye sent or received, or the stream ended


class ErrorCode(enum.IntEnum):
    """Stable numeric codes carried by Error and Bye frames. Never renumber."""

    NORMAL = 0
    # 1xx: the peer broke the protocol; the connection ends.
    MALFORMED_FRAME = 100  # also: a required field missing, or a field of the wrong type
    FRAME_TOO_LARGE = 101
    UNKNOWN_FRAME_TYPE = 102
    UNEXPECTED_FRAME = 103
    UNSUPPORTED_VERSION = 104
    # 2xx: a request was refused; the connection stays open.
    INVALID_NICK = 200
    NICK_IN_USE = 201
    INVALID_ROOM = 202
    NOT_IN_ROOM = 203
    NO_SUCH_NICK = 204
    TEXT_TOO_LONG = 205
    EMPTY_TEXT = 206
    TOO_MANY_ROOMS = 207
    RATE_LIMITED = 208
    INVALID_REQUEST = 209
    NOT_PERMITTED = 210  # a private room, a ban, or a moderation right one lacks
    NICK_RESERVED = 211  # the nick is an account's, and this session is not logged in to it
    REGISTRATION_REFUSED = 212
    MSG_ID_REUSED = 213  # a msg_id this sender already used for another message
    UNAVAILABLE = 214  # the server cannot store messages now (its cluster's Redis is down)
    # 3xx: why the server is ending the connection.
    HANDSHAKE_TIMEOUT = 300
    IDLE_TIMEOUT = 301
    SLOW_CONSUMER = 302
    TOO_MANY_CONNECTIONS = 303
    SERVER_SHUTDOWN = 304
    REPLACED = 305
    FLOODING = 306
    SERVER_ERROR = 307
    AUTH_REQUIRED = 308  # the server admits logged-in accounts only
    LOGIN_FAILED = 309  # wrong account or password, too many failures, or an insecure link


class ProtocolError(Exception):
    """Base of the two protocol errors. `code` is what to put in the Bye frame."""

    def __init__(self, message: str, code: ErrorCode = ErrorCode.MALFORMED_FRAME) -> None:
        super().__init__(message)
        self.code = code


class LocalProtocolError(ProtocolError):
    """This side misused the API: sent a frame the state does not allow, or an invalid one."""


class RemoteProtocolError(ProtocolError):
    """The peer sent bytes that are not a valid frame, or a frame it may not send now."""


class SpeaksTls(RemoteProtocolError):
    """The peer's first bytes are a TLS record (a handshake 0x16 or an alert 0x15, then
    version 3): it speaks TLS where plaintext chatctl was expected (docs/protocol.md,
    "Transport security")."""


def _bad_magic(start: bytes) -> RemoteProtocolError:
    if len(start) >= 2 and start[0] in (0x15, 0x16) and start[1] == 0x03:
        return SpeaksTls("this is TLS, not a plaintext chatctl stream")
    return RemoteProtocolError("bad magic: this is not a chatctl stream")


class TruncatedStream(RemoteProtocolError):
    """The stream ended inside a frame: the peer closed without finishing it (a server drops
    a reader that fell too far behind that way, with no Bye)."""


# ---------------------------------------------------------------------------------------------
# Events


# An integer field: JSON numbers from 0 to 2**63-1, no fraction, no exponent, not a bool.
UInt: TypeAlias = Annotated[int, msgspec.Meta(ge=0, le=MAX_INT)]


class Event(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Base of every frame event. Subclasses are frozen, keyword-only msgspec Structs: each
    says `frozen=True, kw_only=True` itself (msgspec, like dataclasses, applies kw_only to a
    class's own fields, and type checkers read frozen from the class itself), and inherits
    `omit_defaults` (a field whose value is its default stays off the wire)."""

    TYPE: ClassVar[int]


def _repr_hiding_password(self: Event) -> str:
    shown = ", ".join(
        f"{name}={getattr(self, name)!r}" for name in self.__struct_fields__ if name != "password"
    )
    return f"{type(self).__name__}({shown})"


def _rich_repr_hiding_password(self: Event) -> list[tuple[str, Any]]:
    return [(name, getattr(self, name)) for name in self.__struct_fields__ if name != "password"]


# Sent by the client ---------------------------------------------------------------------------


class Hello(Event, frozen=True, kw_only=True):
    """First frame of a client: the protocol version it speaks, the nick it wants, the
    resume token of an earlier session (empty when new), and to log in, an account and its
    password (sent only over TLS or loopback; never shown in a repr)."""

    TYPE: ClassVar[int] = 0x01
    version: UInt
    nick: str
    token: str = ""
    account: str = ""
    password: str = ""  # never in a repr

    __repr__ = _repr_hiding_password
    __rich_repr__ = _rich_repr_hiding_password


class Join(Event, frozen=True, kw_only=True):
    """Join a room, creating it if needed. `after` asks for every stored message with a higher
    sequence number (resume); otherwise `history` asks for that many recent messages (None:
    the server's default)."""

    TYPE: ClassVar[int] = 0x10
    room: str
    history: UInt | None = None
    after: UInt | None = None
    rid: str = ""  # request id: echoed by the replies to this request (§6.7)


class Part(Event, frozen=True, kw_only=True):
    TYPE: ClassVar[int] = 0x11
    room: str
    reason: str = ""
    rid: str = ""  # request id: echoed by the replies to this request (§6.7)


class Say(Event, frozen=True, kw_only=True):
    """A message to a room. `msg_id` is chosen by the client and echoed in the Ack; a resent
    `msg_id` is recognised as a duplicate. `action` marks a `/me` action."""

    TYPE: ClassVar[int] = 0x12
    msg_id: str
    room: str
    text: str
    action: bool = False
    rid: str = ""  # request id: echoed by the replies to this request (§6.7)


class Tell(Event, frozen=True, kw_only=True):
    """A direct message to one nick."""

    TYPE: ClassVar[int] = 0x13
    msg_id: str
    to: str
    text: str
    action: bool = False
    rid: str = ""  # request id: echoed by the replies to this request (§6.7)


class ChangeNick(Event, frozen=True, kw_only=True):
    TYPE: ClassVar[int] = 0x14
    nick: str
    rid: str = ""  # request id: echoed by the replies to this request (§6.7)


class Register(Event, frozen=True, kw_only=True):
    """Make the current nick an account with this password, and log this session in to it
    (servers with open registration; answered by a `registered` Notice or an Error 212)."""

    TYPE: ClassVar[int] = 0x18
    password: str  # never in a repr
    rid: str = ""  # request id: echoed by the replies to this request (§6.7)

    __repr__ = _repr_hiding_password
    __rich_repr__ = _rich_repr_hiding_password


MODERATE_ACTIONS = (
    "topic",  # text: the new topic ("" clears it)
    "private",  # invite-only from now on
    "public",
    "invite",  # target: an account, or a guest's nick
    "uninvite",
    "kick",  # target: a nick in the room; text: the reason
    "ban",  # target: an account or a nick; those in the room are kicked; text: the reason
    "unban",
    "op",  # target: an account, which may then moderate the room (owner only)
    "deop",
)


class Moderate(Event, frozen=True, kw_only=True):
    """A room owner's or operator's change to a room: `action` is one of MODERATE_ACTIONS.
    Answered by a Notice to the room's members (the actor included), or an Error."""

    TYPE: ClassVar[int] = 0x19
    room: str
    action: str
    target: str = ""
    text: str = ""
    rid: str = ""  # request id: echoed by the replies to this request (§6.7)


class Who(Event, frozen=True, kw_only=True):
    """Ask for the member list of a room; answered by Members."""

    TYPE: ClassVar[int] = 0x15
    room: str
    rid: str = ""  # request id: echoed by the replies to this request (§6.7)


class ListRooms(Event, frozen=True, kw_only=True):
    """Ask for the list of rooms; answered by RoomList."""

    TYPE: ClassVar[int] = 0x16
    rid: str = ""  # request id: echoed by the replies to this request (§6.7)


class History(Event, frozen=True, kw_only=True):
    """Ask for stored messages of a room: those after sequence number `after`, oldest first,
    or with `after` None the latest `limit`. Answered by Message frames marked history, a Gap
    where messages are no longer stored, and a HistoryEnd."""

    TYPE: ClassVar[int] = 0x17
    room: str
    after: UInt | None = None
    limit: UInt = 50
    rid: str = ""  # request id: echoed by the replies to this request (§6.7)


# Sent by either side ----------------------------------------------------------------------------


class Bye(Event, frozen=True, kw_only=True):
    """The sender is closing the connection and will send nothing more. From the server,
    `code` says why (ErrorCode); from the client it is a clean quit."""

    TYPE: ClassVar[int] = 0x02
    code: UInt = 0
    reason: str = ""


class Ping(Event, frozen=True, kw_only=True):
    TYPE: ClassVar[int] = 0x03
    token: UInt = 0


class Pong(Event, frozen=True, kw_only=True):
    TYPE: ClassVar[int] = 0x04
    token: UInt = 0


# Sent by the server ---------------------------------------------------------------------------


class Welcome(Event, frozen=True, kw_only=True):
    """The server accepted the Hello. `nick` is the nick assigned (it may differ from the one
    asked for), `token` resumes this session later, `limits` are the limits in force."""

    TYPE: ClassVar[int] = 0x81
    protocol: UInt
    server: str
    version: str
    nick: str
    token: str
    limits: dict[str, UInt] = field(default_factory=dict)
    account: str = ""  # the account this session is logged in to; empty for a guest


class Message(Event, frozen=True, kw_only=True):
    """A room message, stamped by the server: sender, per-room sequence number and time (Unix
    milliseconds). `history` marks a replay of a stored message."""

    TYPE: ClassVar[int] = 0x90
    room: str
    seq: UInt
    ts: UInt
    sender: str
    text: str
    action: bool = False
    history: bool = False


class DirectMessage(Event, frozen=True, kw_only=True):
    TYPE: ClassVar[int] = 0x91
    sender: str
    to: str
    ts: UInt
    text: str
    action: bool = False


class Notice(Event, frozen=True, kw_only=True):
    """A system notice: `kind` is one of NOTICE_KINDS. `room` is empty for a rename, which
    every member of a shared room receives once, and for `registered`. For a moderation
    notice `nick` is who acted and `target` whom it concerns; `reason` carries a topic."""

    TYPE: ClassVar[int] = 0x92
    kind: str
    nick: str
    ts: UInt
    room: str = ""
    new_nick: str = ""
    reason: str = ""
    target: str = ""
    rid: str = ""  # the rid of the request this answers, if it had one


NOTICE_KINDS = (
    "joined",
    "left",
    "renamed",
    "dropped",
    "registered",  # to the registrant alone: `nick` is now an account, and it is logged in
    "topic",
    "private",
    "public",
    "invited",  # also sent to the invitee, wherever it is
    "uninvited",
    "kicked",  # the kicked member hears it too, and is out of the room
    "banned",
    "unbanned",
    "op",
    "deop",
)


class Ack(Event, frozen=True, kw_only=True):
    """The server accepted the Say or Tell with this `msg_id`: it has sequence number `seq`
    in `room` (0 for a direct message) and reached `recipients` members besides the sender."""

    TYPE: ClassVar[int] = 0x93
    msg_id: str
    ts: UInt
    recipients: UInt
    room: str = ""
    seq: UInt = 0
    rid: str = ""  # the rid of the request this answers, if it had one


class Members(Event, frozen=True, kw_only=True):
    """A room's members, and its settings where it has any: its owner account, operators,
    topic, and whether it is private (invite-only)."""

    TYPE: ClassVar[int] = 0x94
    room: str
    nicks: list[str] = field(default_factory=list)
    topic: str = ""
    private: bool = False
    owner: str = ""
    ops: list[str] = field(default_factory=list)
    rid: str = ""  # the rid of the request this answers, if it had one


class RoomList(Event, frozen=True, kw_only=True):
    """Every room, with its number of members."""

    TYPE: ClassVar[int] = 0x95
    rooms: dict[str, UInt] = field(default_factory=dict)
    rid: str = ""  # the rid of the request this answers, if it had one


class Gap(Event, frozen=True, kw_only=True):
    """Messages `first`..`last` (inclusive) of `room` were asked for but are no longer stored."""

    TYPE: ClassVar[int] = 0x96
    room: str
    first: UInt
    last: UInt
    rid: str = ""  # the rid of the request this answers, if it had one


class HistoryEnd(Event, frozen=True, kw_only=True):
    """The end of a history replay. `head` is the room's latest sequence number."""

    TYPE: ClassVar[int] = 0x97
    room: str
    head: UInt
    rid: str = ""  # the rid of the request this answers, if it had one


class Error(Event, frozen=True, kw_only=True):
    """A request was refused; the connection stays open. `msg_id` names the refused Say or
    Tell, when it was one."""

    TYPE: ClassVar[int] = 0x9F
    code: UInt
    message: str
    msg_id: str = ""
    rid: str = ""  # the rid of the request this answers, if it had one


class ConnectionClosed(Event, frozen=True, kw_only=True):
    """Not a frame: `next_event` returns it once the peer's stream has ended cleanly."""


class _Sentinel(enum.Enum):
    NEED_DATA = "NEED_DATA"


NEED_DATA: Literal[_Sentinel.NEED_DATA] = _Sentinel.NEED_DATA
NeedData: TypeAlias = Literal[_Sentinel.NEED_DATA]

CLIENT_EVENTS: tuple[type[Event], ...] = (
    Hello,
    Join,
    Part,
    Say,
    Tell,
    ChangeNick,
    Who,
    ListRooms,
    History,
    Register,
    Moderate,
)
SERVER_EVENTS: tuple[type[Event], ...] = (
    Welcome,
    Message,
    DirectMessage,
    Notice,
    Ack,
    Members,
    RoomList,
    Gap,
    HistoryEnd,
    Error,
)
SHARED_EVENTS: tuple[type[Event], ...] = (Bye, Ping, Pong)
_PINGS: tuple[type[Event], ...] = (Ping, Pong)  # either side, once READY
FRAME_TYPES: dict[int, type[Event]] = {
    cls.TYPE: cls for cls in CLIENT_EVENTS + SERVER_EVENTS + SHARED_EVENTS
}

# ---------------------------------------------------------------------------------------------
# The session state machine: (state, who sends, frame class) -> next state. Anything absent is
# forbidden: LocalProtocolError when we would send it, RemoteProtocolError when we receive it.

_C, _S = Role.CLIENT, Role.SERVER
TRANSITIONS: dict[tuple[State, Role, type[Event]], State] = {
    (State.START, _C, Hello): State.HANDSHAKE,
    (State.START, _C, Bye): State.CLOSED,
    (State.START, _S, Bye): State.CLOSED,
    (State.HANDSHAKE, _S, Welcome): State.READY,
    (State.HANDSHAKE, _S, Bye): State.CLOSED,
    (State.HANDSHAKE, _C, Bye): State.CLOSED,
    # A client may pipeline its first requests after the Hello (docs/protocol.md §4.1); the
    # server handles them after its Welcome.
    **{(State.HANDSHAKE, _C, cls): State.HANDSHAKE for cls in (*CLIENT_EVENTS[1:], *_PINGS)},
    (State.READY, _C, Bye): State.CLOSED,
    (State.READY, _S, Bye): State.CLOSED,
    **{(State.READY, _C, cls): State.READY for cls in (*CLIENT_EVENTS[1:], *_PINGS)},
    **{(State.READY, _S, cls): State.READY for cls in (*SERVER_EVENTS[1:], *_PINGS)},
}
# The same table by (state, sender), as Connection looks it up once per frame: an Enum in a
# key is hashed in Python, a class in C.
_MOVES: dict[tuple[State, Role], dict[type[Event], State]] = {}
for (_state, _sender, _cls), _next in TRANSITIONS.items():
    _MOVES.setdefault((_state, _sender), {})[_cls] = _next


# ---------------------------------------------------------------------------------------------
# Body codec: every field is one of a few JSON shapes, checked strictly on the way in.
#
# msgspec does the work: one C call per frame parses the JSON, checks every field's type and
# range (UInt's Meta), fills in defaults and builds the event; unknown fields are skipped. The
# Python checks below (the codec before msgspec) run only once msgspec has refused something,
# to say which field is wrong in the same words as always; they never decide what is accepted.


def _is_str(v: object) -> bool:
    return type(v) is str


def _is_int(v: object) -> bool:
    # bool is an int subclass; IntEnum members (ErrorCode) are welcome on the way out.
    return isinstance(v, int) and type(v) is not bool and 0 <= v <= MAX_INT


def _is_bool(v: object) -> bool:
    return type(v) is bool


def _is_opt_int(v: object) -> bool:
    return v is None or _is_int(v)


def _is_str_list(v: object) -> bool:
    return type(v) is list and all(type(x) is str for x in v)


def _is_int_dict(v: object) -> bool:
    return type(v) is dict and all(_is_int(x) for x in v.values())


# Every field type an event may have, with its wording and its check.
_CHECKS: dict[object, tuple[str, Callable[[object], bool]]] = {
    str: ("a string", _is_str),
    UInt: ("an integer from 0 to 2**63-1", _is_int),
    bool: ("true or false", _is_bool),
    UInt | None: ("an integer or null", _is_opt_int),
    list[str]: ("a list of strings", _is_str_list),
    dict[str, UInt]: ("an object of integers", _is_int_dict),
}

_MISSING = object()


class _FieldSpec(msgspec.Struct, frozen=True):
    name: str
    what: str
    check: Callable[[object], bool]
    default: object  # _MISSING when required


def _specs(cls: type[Event]) -> tuple[_FieldSpec, ...]:
    out = []
    for f in msgspec.structs.fields(cls):
        what, check = _CHECKS[f.type]
        if f.default is not msgspec.NODEFAULT:
            default: object = f.default
        elif f.default_factory is not msgspec.NODEFAULT:
            default = f.default_factory()
        else:
            default = _MISSING
        out.append(_FieldSpec(f.name, what, check, default))
    return tuple(out)


_SPECS: dict[type[Event], tuple[_FieldSpec, ...]] = {
    cls: _specs(cls) for cls in FRAME_TYPES.values()
}
# One decoder per frame type, by type and by class: `decode(body)` is the event or raises.
_DECODERS: dict[int, Callable[[bytes], Event]] = {
    frame_type: msgspec.json.Decoder(cls).decode for frame_type, cls in FRAME_TYPES.items()
}
_decode_say: Callable[[bytes | bytearray], Say] = msgspec.json.Decoder(Say).decode
_unpack_header = HEADER.unpack_from
_CHECK_BY_CLASS: dict[type[Event], Callable[[bytes], Event]] = {
    cls: _DECODERS[cls.TYPE] for cls in FRAME_TYPES.values()
}
# msgspec writes what json.dumps(ensure_ascii=False, separators=(",", ":")) writes: non-ASCII
# as UTF-8, the same escapes for control characters, `"` and `\`, and none for DEL or
# U+2028/2029 (a property test holds `encode` to the old json codec's bytes). It leaves out
# a field whose value *is* its default object (or an empty list or dict for a factory):
# for "", 0, 50, False and None, of which CPython keeps a single copy, that is the old
# codec's "equal to the default and of its type" (ErrorCode.NORMAL is sent, as it was).
_encode_body = msgspec.json.Encoder().encode
_SURROGATE = re.compile("[\ud800-\udfff]")
_loads = json.JSONDecoder().decode


def _has_surrogate(value: object) -> bool:
    if type(value) is str:
        return _SURROGATE.search(value) is not None
    if type(value) is list:
        return any(_has_surrogate(x) for x in value)
    if type(value) is dict:
        return any(_has_surrogate(k) or _has_surrogate(v) for k, v in value.items())
    return False


def encode(event: Event) -> bytes:
    """The frame for `event`, header included. Fields equal to their default are left out.

    No state is checked: the server uses this to encode a message once for many recipients
    that are already in the READY state. Everyone else should call `Connection.send`.
    """
    check = _CHECK_BY_CLASS.get(type(event))
    if check is None:
        raise LocalProtocolError(f"{type(event).__name__} is not a frame")
    try:
        data = _encode_body(event)
        # What we send is what we would accept, and what the peer will read: a Struct checks
        # nothing when it is built, so a field of the wrong type or out of range fails here
        # (decoding back, at C speed), and so does one that msgspec would write as something
        # else (bytes as base64, a tuple as a list).
        back = check(data)
    except UnicodeEncodeError:
        raise LocalProtocolError(
            f"{type(event).__name__} has text that is not valid Unicode"
        ) from None
    except (msgspec.MsgspecError, TypeError, ValueError, OverflowError):
        raise _unsendable(event, None) from None
    if back != event:
        raise _unsendable(event, back)
    if len(data) > MAX_FRAME_SIZE_CEILING:
        raise LocalProtocolError(
            f"{type(event).__name__} body is {len(data)} bytes, over the ceiling"
        )
    return HEADER.pack(MAGIC, event.TYPE, 0, len(data)) + data


def _unsendable(event: Event, back: Event | None) -> LocalProtocolError:
    """Why `event` cannot be encoded (`back`: what its encoding decodes to, if anything):
    the first field, in field order, that fails its check or does not come back the same."""
    name = type(event).__name__
    for spec in _SPECS[type(event)]:
        value = getattr(event, spec.name)
        if value == spec.default and type(value) is type(spec.default):
            continue
        if not spec.check(value) or (back is not None and getattr(back, spec.name) != value):
            return LocalProtocolError(f"{name}.{spec.name} must be {spec.what}")
    return LocalProtocolError(f"{name} cannot be encoded")


# The server's two hot frames: the same bytes as `encode` (a property test holds them to it)
# without the check that decodes them back, which halves the cost. Callers pass values that
# are already valid (server-stamped numbers, decoded text). Built from the event by msgspec,
# these beat the f-strings of json's encode_basestring they replaced: 0.45 vs 0.70 µs for a
# Message, 0.37 vs 0.69 µs for an Ack (benchmarks/protocol_cost.py, medians).
_pack_header = HEADER.pack


def encode_message(
    room: str, seq: int, ts: int, sender: str, text: str, action: bool, history: bool = False
) -> bytes:
    """The frame of `Message(room=..., seq=..., ...)`, as `encode` would make it."""
    body = _encode_body(
        Message(room=room, seq=seq, ts=ts, sender=sender, text=text, action=action, history=history)
    )
    return _pack_header(MAGIC, Message.TYPE, 0, len(body)) + body


def encode_ack(
    msg_id: str, ts: int, recipients: int, room: str = "", seq: int = 0, rid: str = ""
) -> bytes:
    """The frame of `Ack(msg_id=..., ...)`, as `encode` would make it."""
    body = _encode_body(
        Ack(msg_id=msg_id, ts=ts, recipients=recipients, room=room, seq=seq, rid=rid)
    )
    return _pack_header(MAGIC, Ack.TYPE, 0, len(body)) + body


def decode_body(frame_type: int, body: bytes) -> Event:
    """The event for one frame body. Raises RemoteProtocolError for anything invalid."""
    decode = _DECODERS.get(frame_type)
    if decode is None:
        raise RemoteProtocolError(
            f"unknown frame type 0x{frame_type:02x}", ErrorCode.UNKNOWN_FRAME_TYPE
        )
    try:
        if not body.isascii():
            # msgspec checks the UTF-8 of the strings it decodes, not of the unknown fields
            # it skips; the whole body must be UTF-8.
            body.decode("utf-8")
        # JSON escapes cannot smuggle lone surrogates past msgspec: it refuses them.
        return decode(body)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise _refusal(FRAME_TYPES[frame_type], body, exc) from None


def _refusal(cls: type[Event], body: bytes, exc: Exception) -> RemoteProtocolError:
    """Why msgspec refused `body`, in the words of the codec before it: the first of invalid
    UTF-8, invalid JSON, not an object, a missing field or a field of the wrong type (in field
    order), or text that is not valid Unicode."""
    name = cls.__name__
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return RemoteProtocolError(f"{name} body is not valid UTF-8")
    try:
        obj = _loads(text)
    except (ValueError, RecursionError):
        return RemoteProtocolError(f"{name} body is not valid JSON")
    if type(obj) is not dict:
        return RemoteProtocolError(f"{name} body is not a JSON object")
    for spec in _SPECS[cls]:
        value = obj.get(spec.name, _MISSING)
        if value is _MISSING:
            if spec.default is _MISSING:
                return RemoteProtocolError(f"{name} lacks the field {spec.name!r}")
        elif not spec.check(value):
            return RemoteProtocolError(f"{name}.{spec.name} must be {spec.what}")
    if "\\u" in text and _has_surrogate(obj):
        return RemoteProtocolError(f"{name} has text that is not valid Unicode")
    # What Python's json module lets through and msgspec does not: NaN or Infinity, or a
    # repeated key whose first value is wrong (msgspec checks each value as it comes).
    if isinstance(exc, msgspec.ValidationError):
        return RemoteProtocolError(f"{name} body is invalid: {exc}")
    return RemoteProtocolError(f"{name} body is not valid JSON")


# ---------------------------------------------------------------------------------------------
# The connection


class Connection:
    """One end of one chatctl connection: a frame decoder, an encoder and the session state.

    `receive_data(b"")` signals that the peer closed its side of the stream.
    """

    def __init__(self, our_role: Role, *, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE) -> None:
        if not 0 < max_frame_size <= MAX_FRAME_SIZE_CEILING:
            raise LocalProtocolError(
                f"max_frame_size must be from 1 to {MAX_FRAME_SIZE_CEILING}, not {max_frame_size}"
            )
        self.our_role = our_role
        self.their_role = Role.SERVER if our_role is Role.CLIENT else Role.CLIENT
        self.max_frame_size = max_frame_size
        self.state = State.START
        # The moves open to each side from `_moves_state`, refreshed when the state changes.
        self._moves_state = State.START
        self._their_moves = _MOVES.get((State.START, self.their_role), {})
        self._our_moves = _MOVES.get((State.START, our_role), {})
        self._buf = bytearray()
        self._pos = 0
        self._eof = False
        self._error: RemoteProtocolError | None = None

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as events."""
        return len(self._buf) - self._pos

    def next_frame_type(self) -> int | None:
        """The type byte of the next frame received (complete or not), without decoding it;
        None while fewer than its first three bytes are here."""
        pos = self._pos
        return self._buf[pos + 2] if len(self._buf) - pos > 2 else None

    def receive_data(self, data: bytes) -> None:
        if self._eof and data:
            raise LocalProtocolError("data received after the end of the stream")
        if not data:
            self._eof = True
            return
        if self._error is not None:
            return  # the stream is already broken; buffering more would only cost memory
        if self._pos == len(self._buf):
            self._buf.clear()
            self._pos = 0
        elif self._pos > 65536:
            del self._buf[: self._pos]
            self._pos = 0
        self._buf += data

    def next_event(self) -> Event | NeedData:
        if self._error is not None:
            raise self._error
        try:
            return self._next_event()
        except RemoteProtocolError as exc:
            self._error = exc
            self._buf = bytearray()
            self._pos = 0
            raise

    def next_says(self, limit: int) -> list[Say]:
        """Up to `limit` Says without a rid from the head of what was received: what
        `next_event` would return for each, in a third less time (a server's bulk: one loop
        over the buffer, no state change to make). Stops before anything else, which
        `next_event` then returns or refuses: a frame of another type, a Say with a rid, a
        frame not whole yet or that `next_event` would refuse, a Say the state forbids."""
        if self._moves_state is not self.state:
            self._refresh_moves()
        if self._error is not None or self._their_moves.get(Say) is not self.state:
            return []
        buf, pos = self._buf, self._pos
        size = len(buf)
        max_frame = self.max_frame_size
        says: list[Say] = []
        while len(says) < limit and size - pos >= HEADER_SIZE:
            magic, frame_type, flags, length = _unpack_header(buf, pos)
            end = pos + HEADER_SIZE + length
            if (
                frame_type != Say.TYPE
                or magic != MAGIC
                or flags
                or length > max_frame
                or end > size
            ):
                break
            body = buf[pos + HEADER_SIZE : end]
            try:
                if not body.isascii():
                    body.decode("utf-8")  # as decode_body checks it
                say = _decode_say(body)
            except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
                break  # next_event says why
            if say.rid:
                break
            says.append(say)
            pos = end
        self._pos = pos
        return says

    def _next_event(self) -> Event | NeedData:
        buf, pos = self._buf, self._pos
        available = len(buf) - pos
        if available < HEADER_SIZE:
            if not self._eof:
                # Catch a wrong magic early: an HTTP request or other garbage fails at once.
                if available and not MAGIC.startswith(bytes(buf[pos : pos + 2])):
                    raise _bad_magic(bytes(buf[pos : pos + 2]))
                return NEED_DATA
            if available:
                raise TruncatedStream("the stream ended in the middle of a frame")
            if self.state is not State.CLOSED:
                self.state = State.CLOSED
                return ConnectionClosed()
            return NEED_DATA
        magic, frame_type, flags, length = HEADER.unpack_from(buf, pos)
        if magic != MAGIC:
            raise _bad_magic(magic)
        if flags:
            raise RemoteProtocolError(f"flags must be 0 in protocol version 1, not {flags}")
        if length > self.max_frame_size:
            raise RemoteProtocolError(
                f"frame body of {length} bytes is over the limit of {self.max_frame_size}",
                ErrorCode.FRAME_TOO_LARGE,
            )
        end = pos + HEADER_SIZE + length
        if len(buf) < end:
            if self._eof:
                raise TruncatedStream("the stream ended in the middle of a frame")
            return NEED_DATA
        if self.state is State.CLOSED:
            raise RemoteProtocolError(
                "frame received after the connection closed", ErrorCode.UNEXPECTED_FRAME
            )
        event = decode_body(frame_type, bytes(buf[pos + HEADER_SIZE : end]))
        self._pos = end
        self._transition(self.their_role, event, RemoteProtocolError)
        if type(event) is Welcome and self.our_role is Role.CLIENT:
            # Accept frames up to the size the server says it may send.
            announced = event.limits.get("max_frame", 0)
            self.max_frame_size = max(self.max_frame_size, min(announced, MAX_FRAME_SIZE_CEILING))
        return event

    def send(self, event: Event) -> bytes:
        """The bytes that carry `event`. Raises LocalProtocolError if it may not be sent now."""
        data = encode(event)
        self._transition(self.our_role, event, LocalProtocolError)
        return data

    def sent(self, event: Event) -> None:
        """`event` goes out in bytes the caller encoded itself (`encode(event)`, as the server
        does once for its Welcome and Bye): advance the state as `send` would, encoding
        nothing. Raises LocalProtocolError if it may not be sent now."""
        self._transition(self.our_role, event, LocalProtocolError)

    def _transition(self, sender: Role, event: Event, exc: type[ProtocolError]) -> None:
        if self.state is not self._moves_state:
            self._refresh_moves()
        moves = self._their_moves if sender is self.their_role else self._our_moves
        new_state = moves.get(type(event))
        if new_state is None:
            raise exc(
                f"{type(event).__name__} may not be sent by the {sender.value} in state {self.state.value}",
                ErrorCode.UNEXPECTED_FRAME,
            )
        self.state = new_state

    def _refresh_moves(self) -> None:
        """Look up the moves open to each side in the state the connection is now in."""
        state = self._moves_state = self.state
        self._their_moves = _MOVES.get((state, self.their_role), {})
        self._our_moves = _MOVES.get((state, self.our_role), {})


__all__ = [
    "CLIENT_EVENTS",
    "DEFAULT_MAX_FRAME_SIZE",
    "DEFAULT_MAX_TEXT",
    "FRAME_TYPES",
    "HEADER_SIZE",
    "MAX_FRAME_SIZE_CEILING",
    "MODERATE_ACTIONS",
    "NEED_DATA",
    "NOTICE_KINDS",
    "PROTOCOL_VERSION",
    "SERVER_EVENTS",
    "SHARED_EVENTS",
    "TRANSITIONS",
    "UNACKED_MAX",
    "Ack",
    "Bye",
    "ChangeNick",
    "Connection",
    "ConnectionClosed",
    "DirectMessage",
    "Error",
    "ErrorCode",
    "Event",
    "Gap",
    "Hello",
    "History",
    "HistoryEnd",
    "Join",
    "ListRooms",
    "LocalProtocolError",
    "Members",
    "Message",
    "Moderate",
    "NeedData",
    "Notice",
    "Part",
    "Ping",
    "Pong",
    "ProtocolError",
    "Register",
    "RemoteProtocolError",
    "Role",
    "RoomList",
    "Say",
    "SpeaksTls",
    "State",
    "Tell",
    "TruncatedStream",
    "Welcome",
    "Who",
    "decode_body",
    "encode",
    "encode_ack",
    "encode_message",
]
