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
- `AccountEntry`: an account made (by a session's Register, or the operator's `chatctl
  accounts add`), given a new password, or removed; `apply_account` is the one rule every
  node, and `chatctl accounts` against a cluster, applies to it. It carries the password's
  hash: the proposer derives it once, never every node.
- `ClaimEntry`, `ModerateEntry`: a room's settings: its owner (the account that creates it),
  and one change by its owner or an operator (server/moderation.py).

Every entry names its `node` and that node's proposal number `p`; a new kind is added the
same way: a tagged array, checked here, applied by every hub.

Entries come from other processes: `read_entries` never raises on a bad one, it reports it,
and every node skips the same bad entry. Sans-IO.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import msgspec

from chatctl.cluster.resp import Reply
from chatctl.names import MSG_ID_MAX, nick_problem, normalise_room, quote
from chatctl.protocol import MODERATE_ACTIONS
from chatctl.store.registry import REGISTERED_MAX, TOPIC_MAX, Registry

STREAM = b"chatctl:log"
FIELD = b"e"
# What every node must agree on (server/replication.py writes and checks it): "retain_messages=N
# node_lease_ms=N".
SETTINGS = b"chatctl:settings"
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


class AccountEntry(msgspec.Struct, array_like=True, frozen=True, tag="account"):
    node: str
    p: int
    ts: int
    action: str  # one of ACCOUNT_ACTIONS
    name: str  # the account's (a valid nick)
    password_hash: str  # passwords.hash_password's, made by the proposer; "" for "remove"
    key: str  # "register": the registering session's sender key; else ""


# "register": a session makes its nick an account (docs/protocol.md §6.6); the others are the
# operator's `chatctl accounts add|passwd|remove`.
ACCOUNT_ACTIONS = ("register", "add", "passwd", "remove")


class ClaimEntry(msgspec.Struct, array_like=True, frozen=True, tag="claim"):
    """`account` creates `room` (a Join or Say of it follows): it owns it if the room is
    still new when this is applied."""

    node: str
    p: int
    room: str  # normalised
    account: str


class ModerateEntry(msgspec.Struct, array_like=True, frozen=True, tag="moderate"):
    node: str
    p: int
    ts: int
    key: str  # the moderator's session
    nick: str  # the moderator's, for the notice
    account: str  # the moderator's: the settings say what it may do
    room: str  # normalised
    action: str  # one of protocol.MODERATE_ACTIONS
    target: str
    text: str


Entry = (
    SayEntry
    | MarkEntry
    | HelloEntry
    | EndEntry
    | JoinEntry
    | PartEntry
    | NickEntry
    | TellEntry
    | AccountEntry
    | ClaimEntry
    | ModerateEntry
)

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
        if (
            kind is SayEntry
            or kind is JoinEntry
            or kind is PartEntry
            or kind is ModerateEntry
            or kind is ClaimEntry
        ):
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
        elif kind is AccountEntry or kind is ClaimEntry or kind is ModerateEntry:
            problem = _problem(entry)
            if problem:
                return problem
    return entries


def _problem(entry: Entry) -> str:
    """What is wrong with an account, claim or moderation entry ("" if nothing)."""
    if type(entry) is AccountEntry:
        if entry.action not in ACCOUNT_ACTIONS:
            return f"an account action that is not one: {entry.action!r:.40}"
        if nick_problem(entry.name) is not None:
            return f"an account name that is not valid: {entry.name!r:.80}"
        if (entry.action == "remove") != (not entry.password_hash):
            return "an account entry with a password hash where none belongs, or without one"
        if (entry.action == "register") != bool(entry.key):
            return "a registration without its session, or another action with one"
    elif type(entry) is ClaimEntry:
        if nick_problem(entry.account) is not None:
            return "a room claimed by no valid account"
    elif type(entry) is ModerateEntry:
        if entry.action not in MODERATE_ACTIONS:
            return f"a moderation action that is not one: {entry.action!r:.40}"
        if nick_problem(entry.nick) is not None:
            return "a moderation by no valid nick"
        if len(entry.target) > 4 * TOPIC_MAX or len(entry.text) > 4 * TOPIC_MAX:
            return "a moderation's target or text too long"  # the rules refuse far less
    return ""


def apply_account(registry: Registry, entry: AccountEntry) -> str:
    """Apply `entry` to `registry` as every node applies it, in log order: why nothing changed,
    or "" when it did. Only the registry decides (not the session that registered), so that
    `chatctl accounts`, which holds no sessions, rebuilds the nodes' accounts exactly."""
    name, action = entry.name, entry.action
    if action in {"register", "add"}:
        existing = registry.account(name)
        if existing is not None:
            return f"account {quote(existing.name)} exists already"
        if action == "register" and registry.account_count() >= REGISTERED_MAX:
            return "this server takes no more registrations: ask its operator"
        registry.add_account(name, entry.password_hash, entry.ts)
        return ""
    if action == "passwd":
        done = registry.set_password(name, entry.password_hash)
    else:
        done = registry.remove_account(name)
    return "" if done else f"no account {quote(name)}"


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
