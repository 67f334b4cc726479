"""The cluster's shared log: what nodes append to the Redis stream, and how it reads back.

Every state change a node accepts goes into one stream (`STREAM`). A node appends what it
accepted in one loop turn as one stream entry with one field (`FIELD`): a MessagePack array of
entries, each an array whose first element names its kind. Every node reads the stream in
order and applies each entry, so all of them apply the same changes in the same order
(docs/cluster.md). Kinds so far:

- `SayEntry`: a room message, as its node checked it; the room's seq is given by applying it.
- `MarkEntry`: nothing to apply; its node learns from it that every proposal it made before
  it and has not seen in the log is lost (see server/replication.py). A node appends one as
  its beat when it has appended nothing else for a while: its lease (cluster/leases.py).
- `HelloEntry`, `EndEntry`: a session starts on a node (or moves to it: a resume), and ends.
  A session is named by its `key`, store.base.sender_key_of(its resume token), the same on
  every node; a session's `since` is the `p` of the HelloEntry that put it on its node.
- `JoinEntry`, `PartEntry`, `NickEntry`: a session's rooms and nick.
- `TellEntry`: a direct message; only the recipient's node delivers it.

Every entry names its `node` and that node's proposal number `p`; more kinds (accounts, room
settings) would be added the same way: a tagged array, checked here, applied by every hub.

Entries come from other processes: `read_entries` never raises on a bad one, it reports it,
and every node skips the same bad entry. Sans-IO.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import msgspec

from chatctl.cluster.resp import Reply
from chatctl.names import MSG_ID_MAX, nick_problem, normalise_room

STREAM = b"chatctl:log"
FIELD = b"e"
# Each stream entry names the one before it (PREV_FIELD), so that a reader notices entries
# it never read (trimmed, or deleted) instead of applying the log with a hole: a node appends
# with APPEND, which keeps the id of the latest entry in LAST ("0-0" before the first).
PREV_FIELD = b"p"
LAST = b"chatctl:log:last"
APPEND = b"""
local prev = redis.call('GET', KEYS[2]) or '0-0'
local id = redis.call('XADD', KEYS[1], '*', 'e', ARGV[1], 'p', prev)
redis.call('SET', KEYS[2], id)
return id
"""


class SayEntry(msgspec.Struct, array_like=True, frozen=True, tag="say"):
    node: str  # the node it was sent to
    p: int  # that node's proposal number: how the node finds its sender again
    ts: int  # Unix milliseconds, the node's clock when it took the Say
    room: str  # normalised
    nick: str
    sender_key: str  # store.base.sender_key_of(the sender's token): resends are recognised
    msg_id: str
    text: str
    action: bool


class MarkEntry(msgspec.Struct, array_like=True, frozen=True, tag="mark"):
    node: str
    p: int


class HelloEntry(msgspec.Struct, array_like=True, frozen=True, tag="hello"):
    node: str
    p: int
    ts: int
    key: str  # the session to resume (a valid token's sender key), or ""
    fresh: str  # the sender key of a new token: the session's if none is resumed
    nick: str  # asked for (a login's defaults to its account's name); checked
    account: str  # "" for a guest; the proposing node checked the password


class EndEntry(msgspec.Struct, array_like=True, frozen=True, tag="end"):
    node: str
    p: int
    ts: int
    key: str
    since: int  # the session's `since` on `node`: a later tenancy of it is not ended
    reason: str
    clean: bool  # a Bye (its rooms hear `left`) rather than a lost connection (`dropped`)


class JoinEntry(msgspec.Struct, array_like=True, frozen=True, tag="join"):
    node: str
    p: int
    ts: int
    key: str
    room: str  # normalised


class PartEntry(msgspec.Struct, array_like=True, frozen=True, tag="part"):
    node: str
    p: int
    ts: int
    key: str
    room: str  # normalised
    reason: str


class NickEntry(msgspec.Struct, array_like=True, frozen=True, tag="nick"):
    node: str
    p: int
    ts: int
    key: str
    nick: str  # checked


class TellEntry(msgspec.Struct, array_like=True, frozen=True, tag="tell"):
    node: str
    p: int
    ts: int
    key: str  # the sender's session
    nick: str  # the sender's
    to: str  # the recipient's nick, as sent
    msg_id: str
    text: str
    action: bool


Entry = SayEntry | MarkEntry | HelloEntry | EndEntry | JoinEntry | PartEntry | NickEntry | TellEntry

_encoder = msgspec.msgpack.Encoder()
_decoder: msgspec.msgpack.Decoder[list[Entry]] = msgspec.msgpack.Decoder(list[Entry])


def encode_entries(entries: list[Entry]) -> bytes:
    """The payload of one stream entry."""
    return _encoder.encode(entries)


class Read(NamedTuple):
    """One entry of an XREAD reply: its stream id, and its entries, or what is wrong with it
    (then there are none: every node skips the whole stream entry alike); the id of the
    entry before it ("" when it does not say), and its payload's size."""

    id: bytes
    entries: list[Entry]
    problem: str = ""
    prev: bytes = b""
    size: int = 0


# Room names already found normalised: the check costs a regular expression, and a log
# holds the same few names over and over.
_good_rooms: dict[str, None] = {}


def decode_entries(payload: bytes) -> list[Entry] | str:
    """The entries of one stream entry's payload, or what is wrong with it."""
    try:
        entries = _decoder.decode(payload)
    except msgspec.DecodeError as exc:
        return f"not a list of entries: {exc}"
    for entry in entries:
        kind = type(entry)
        if kind is SayEntry or kind is JoinEntry or kind is PartEntry:
            room = entry.room  # type: ignore[union-attr]
            if room not in _good_rooms:
                if normalise_room(room) != room:
                    return f"a room name that is not normalised: {room!r:.80}"
                if len(_good_rooms) >= 4096:
                    _good_rooms.clear()
                _good_rooms[room] = None
        if kind is SayEntry or kind is TellEntry:
            if not 0 < len(entry.msg_id) <= MSG_ID_MAX or not entry.text:  # type: ignore[union-attr]
                return "an empty text, or a msg_id empty or too long"
        elif kind is HelloEntry or kind is NickEntry:
            problem = nick_problem(entry.nick)  # type: ignore[union-attr]
            if problem is not None:
                return f"a nick that is not valid: {problem}"
            if kind is HelloEntry and not entry.fresh:  # type: ignore[union-attr]
                return "a hello without a session key"
    return entries


def read_entries(reply: Reply) -> list[Read]:
    """The entries of a reply to `XREAD ... STREAMS STREAM id` (nil: none). Raises ValueError
    when the reply is not shaped as XREAD's: the peer is not behaving as Redis."""
    if reply is None:
        return []
    shaped: Any = reply  # checked as it is taken apart: a wrong shape is a TypeError
    try:
        [[name, items]] = shaped
        if name != STREAM:
            raise ValueError(f"another stream: {name!r:.80}")
        out: list[Read] = []
        for stream_id, fields in items:
            if type(stream_id) is not bytes:
                raise ValueError(f"a stream id that is not a string: {stream_id!r:.80}")
            prev = b""
            shaped_ok = len(fields) == 2
            if len(fields) == 4 and fields[2] == PREV_FIELD and type(fields[3]) is bytes:
                prev, shaped_ok = fields[3], True
            if not shaped_ok or fields[0] != FIELD or type(fields[1]) is not bytes:
                out.append(Read(stream_id, [], f"unexpected fields: {fields!r:.80}", prev))
                continue
            payload = fields[1]
            decoded = decode_entries(payload)
            if isinstance(decoded, str):
                out.append(Read(stream_id, [], decoded, prev, len(payload)))
            else:
                out.append(Read(stream_id, decoded, "", prev, len(payload)))
        return out
    except (TypeError, ValueError) as exc:
        raise ValueError(f"not an XREAD reply for {STREAM!r}: {exc}; {reply!r:.200}") from None
