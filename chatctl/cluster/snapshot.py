"""Snapshots of a cluster's replicated state, so that the shared log can be trimmed. Sans-IO.

A snapshot at a log position (a stream id) holds everything applying the log up to there
made: each room's head and retained history, the resend-detection state (direct messages;
room messages' is their history), every session with its nick, account, node and rooms, the
registry (accounts, room settings), the nick-variant hints, and the node leases. A node that
loads it and applies the log after its position is in the state of a node that applied the
whole log (server/hubstate.py captures and restores it; tests/test_cluster_snapshot.py holds
it to that).

Who writes one, and when (`SnapshotPolicy`), is decided by the log itself, so that every node
decides alike and exactly one writes it, with no lock: every `every_entries` stream entries or
`every_bytes` bytes of payload since the last decision, the node that appended the stream
entry at which it falls due (it is alive: it just appended) writes the snapshot of the state
right after that entry. A writer that dies meanwhile costs one snapshot: the next one falls
due as many entries later, with another writer.

In Redis (server/replication.py sends the commands): `chatctl:snapshot`, a hash naming the
current snapshot (`id`, `chunks`, `bytes`); its encoding in `chatctl:snapshot:<id>`, a hash
of chunks of at most `CHUNK` bytes (one reply each, however big the history). The writer
pipelines the chunks (with an expiry, in case it dies mid-way) and then `COMMIT`, a script
that atomically checks they are all there, makes the snapshot current (never an older one
over a newer), deletes the previous one and trims the log below the previous one's position:
a node reading up to a snapshot behind has that snapshot's interval of slack before its next
entries are gone (it then notices, and loads the snapshot again: replication.py).
"""

from __future__ import annotations

import msgspec

from chatctl.store.base import StoredMessage

VERSION = 1
POINTER = b"chatctl:snapshot"
CHUNK = 1024 * 1024  # bytes of encoding per Redis value: one reply each when loading
WRITING_MS = 600_000  # chunks of a snapshot not committed yet expire after this
EVERY_BYTES = 64 * 1024 * 1024  # a snapshot at the latest after this much log payload


def chunks_key(position: bytes) -> bytes:
    """The key of the chunks of the snapshot at `position`."""
    return POINTER + b":" + position


# Atomically: the snapshot whose chunks are in KEYS[2], at ARGV[1], with ARGV[2] chunks of
# ARGV[3] bytes in all, becomes the current one unless one at a later position is (then it
# is dropped: a late writer); the previous one is deleted and the log (KEYS[3]) trimmed
# below its position. Returns 1 when committed, 0 when superseded, -1 when chunks are missing.
COMMIT = b"""
local function later(a, b)
  local am, as = string.match(a, '^(%d+)-(%d+)$')
  local bm, bs = string.match(b, '^(%d+)-(%d+)$')
  am, as, bm, bs = tonumber(am), tonumber(as), tonumber(bm), tonumber(bs)
  return am > bm or (am == bm and as > bs)
end
if redis.call('HLEN', KEYS[2]) ~= tonumber(ARGV[2]) then
  redis.call('DEL', KEYS[2])
  return -1
end
local current = redis.call('HGET', KEYS[1], 'id')
if current and not later(ARGV[1], current) then
  if current ~= ARGV[1] then redis.call('DEL', KEYS[2]) end
  return 0
end
redis.call('PERSIST', KEYS[2])
redis.call('HSET', KEYS[1], 'id', ARGV[1], 'chunks', ARGV[2], 'bytes', ARGV[3])
if current then
  redis.call('DEL', KEYS[1] .. ':' .. current)
  redis.call('XTRIM', KEYS[3], 'MINID', current)
end
return 1
"""


class SessionState(msgspec.Struct, array_like=True, frozen=True):
    key: str  # its sender key: how entries name it
    nick: str
    account: str
    node: str
    since: int
    rooms: list[str]  # in the order it joined them


class AccountState(msgspec.Struct, array_like=True, frozen=True):
    name: str
    password_hash: str
    created_ms: int


class RoomState(msgspec.Struct, array_like=True, frozen=True):
    room: str
    owner: str
    private: bool
    topic: str
    ops: list[str]
    invited: list[str]
    banned: list[str]


class Snapshot(msgspec.Struct, array_like=True):
    """The state after applying the log up to `position`. Lists keep the orders that applying
    later entries depends on (sessions: the order they are dropped in; direct messages: the
    order they are forgotten in)."""

    version: int
    position: str  # the stream id of the last entry applied
    clock: int  # leases (cluster/leases.py): the latest entry's time,
    last: list[tuple[str, int]]  # each live node's latest entry's time,
    gone: list[str]  # and the nodes found gone, oldest first
    heads: list[tuple[str, int]]  # every room with history: its head
    messages: list[StoredMessage]  # the retained history, room by room, oldest first
    sessions: list[SessionState]
    tells: list[tuple[str, str, int, int]]  # (sender key, msg_id, digest, ts), oldest first
    suffixes: list[tuple[str, int]]  # nick -> the next variant number to try
    accounts: list[AccountState]
    settings: list[RoomState]


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Snapshot)


def encode_snapshot(snapshot: Snapshot) -> list[bytes]:
    """The snapshot's encoding, in chunks of at most CHUNK bytes (at least one)."""
    data = _encoder.encode(snapshot)
    return [data[i : i + CHUNK] for i in range(0, len(data), CHUNK)] or [b""]


def decode_snapshot(chunks: list[bytes]) -> Snapshot | str:
    """The snapshot from its chunks, or what is wrong with it."""
    try:
        snapshot = _decoder.decode(b"".join(chunks))
    except msgspec.DecodeError as exc:
        return f"not a snapshot: {exc}"
    if snapshot.version != VERSION:
        return f"a snapshot of version {snapshot.version}, not {VERSION}"
    return snapshot


class Pointer(msgspec.Struct, frozen=True):
    """Which snapshot is current (the hash at POINTER)."""

    id: bytes
    chunks: int
    size: int


def read_pointer(reply: object) -> Pointer | str | None:
    """The reply to `HGETALL POINTER`: the current snapshot, None (there is none), or what is
    wrong with it."""
    if not isinstance(reply, list) or len(reply) % 2:
        return f"not a hash: {reply!r:.80}"
    if not reply:
        return None
    fields = dict(zip(reply[::2], reply[1::2], strict=True))
    try:
        position = fields[b"id"]
        chunks, size = int(fields[b"chunks"]), int(fields[b"bytes"])
    except (KeyError, TypeError, ValueError):
        return f"not a snapshot's pointer: {reply!r:.80}"
    if not isinstance(position, bytes) or not 0 < chunks <= size // CHUNK + 1:
        return f"not a snapshot's pointer: {reply!r:.80}"
    return Pointer(position, chunks, size)


class SnapshotPolicy:
    """When a snapshot falls due, decided from the log alone: every node feeds it the same
    stream entries in the same order (`due`), from the log's start or from a snapshot's
    position (both are due points: the counts start at 0 there)."""

    def __init__(self, every_entries: int, every_bytes: int = EVERY_BYTES) -> None:
        self.every_entries = every_entries
        self.every_bytes = every_bytes
        self.entries = 0
        self.bytes = 0

    def due(self, size: int) -> bool:
        """A stream entry of `size` bytes of payload was applied: whether a snapshot of the
        state now falls due (its appender writes it)."""
        self.entries += 1
        self.bytes += size
        if self.entries >= self.every_entries or self.bytes >= self.every_bytes:
            self.entries = self.bytes = 0
            return True
        return False

    def restart(self) -> None:
        """The state was loaded from a snapshot: counting starts again at its position."""
        self.entries = self.bytes = 0
