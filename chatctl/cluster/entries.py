"""The cluster's shared log: what nodes append to the Redis stream, and how it reads back.

Every state change a node accepts goes into one stream (`STREAM`) as one entry with one field
(`FIELD`): a MessagePack array whose first element names its kind. Every node reads the
stream in order and applies each entry, so all of them apply the same changes in the same
order (docs/cluster.md). Kinds so far:

- `SayEntry`: a room message, as its node checked it; the room's seq is given by applying it.
- `MarkEntry`: nothing to apply; its node learns from it that every proposal it made before
  it and has not seen in the log is lost (see server/replication.py).

Entries come from other processes: `read_entries` never raises on a bad one, it reports it,
and every node skips the same bad entry. Sans-IO.
"""

from __future__ import annotations

from typing import NamedTuple

import msgspec

from chatctl.cluster.resp import Reply
from chatctl.names import MSG_ID_MAX, normalise_room

STREAM = b"chatctl:log"
FIELD = b"e"


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


Entry = SayEntry | MarkEntry

_encoder = msgspec.msgpack.Encoder()
_decoder: msgspec.msgpack.Decoder[Entry] = msgspec.msgpack.Decoder(Entry)


def encode_entry(entry: Entry) -> bytes:
    return _encoder.encode(entry)


class Read(NamedTuple):
    """One entry of an XREAD reply: its stream id, and the entry or what is wrong with it."""

    id: bytes
    entry: Entry | None
    problem: str = ""


def decode_entry(payload: bytes) -> Entry | str:
    """The entry, or what is wrong with it."""
    try:
        entry: Entry = _decoder.decode(payload)
    except msgspec.DecodeError as exc:
        return f"not an entry: {exc}"
    if type(entry) is SayEntry:
        if normalise_room(entry.room) != entry.room:
            return f"a room name that is not normalised: {entry.room!r:.80}"
        if not 0 < len(entry.msg_id) <= MSG_ID_MAX or not entry.text:
            return "an empty text, or a msg_id empty or too long"
    return entry


def read_entries(reply: Reply) -> list[Read]:
    """The entries of a reply to `XREAD ... STREAMS STREAM id` (nil: none). Raises ValueError
    when the reply is not shaped as XREAD's: the peer is not behaving as Redis."""
    if reply is None:
        return []
    if not (isinstance(reply, list) and len(reply) == 1 and isinstance(reply[0], list)):
        raise ValueError(f"not an XREAD reply: {reply!r:.200}")
    stream = reply[0]
    if len(stream) != 2 or stream[0] != STREAM or not isinstance(stream[1], list):
        raise ValueError(f"not an XREAD reply for {STREAM!r}: {reply!r:.200}")
    out: list[Read] = []
    for item in stream[1]:
        if not (isinstance(item, list) and len(item) == 2 and isinstance(item[0], bytes)):
            raise ValueError(f"not a stream entry: {item!r:.200}")
        stream_id, fields = item[0], item[1]
        assert isinstance(stream_id, bytes)
        if not (isinstance(fields, list) and len(fields) == 2 and fields[0] == FIELD):
            out.append(Read(stream_id, None, f"unexpected fields: {fields!r:.80}"))
            continue
        payload = fields[1]
        decoded = decode_entry(payload) if isinstance(payload, bytes) else "not bytes"
        if isinstance(decoded, str):
            out.append(Read(stream_id, None, decoded))
        else:
            out.append(Read(stream_id, decoded))
    return out
