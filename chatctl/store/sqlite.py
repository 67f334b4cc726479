"""Durable history: message files (segments.py) indexed by SQLite (stdlib sqlite3, WAL mode)
in one data directory.

Writes: `append` only buffers. `flush` (once per loop turn, before any ack is written) makes
the batch durable with ONE `write()` of its records (a room's consecutive messages each) at the
end of the newest segment file: once that returns, the data is in the kernel's page cache and
survives a `kill -9` of the server, like a commit in WAL mode with synchronous=NORMAL, at a
fraction of the cost. The messages are never written again: SQLite gets, every `sync_rows`
messages (and on `trim`, at close), only where each record is and who sent what, in one
transaction, after an fdatasync of the segments it points into. At start-up the records
written after the last such transaction (the server was killed) are read back from the
files and indexed; a torn last record was never acknowledged (its write had not returned)
and is cut off. An OS crash or power cut may lose the last writes (no fsync per turn), as
with synchronous=NORMAL; synchronous="FULL" fdatasyncs every flush. docs/history.md explains
the choices.

Layout (schema 7): a record holds up to `CHUNK_MESSAGES` consecutive messages of a room (and
at most CHUNK_TEXT_BYTES of their text), encoded by msgspec; its row in `records` says where
it is. Every SQL row costs ~1.5-2 us to insert and as much to delete whatever its width, and
every byte written into SQLite is written again at the checkpoint and once more when deleted,
so messages live in files and SQL rows stay few and small (docs/history.md has the
measurements). Resends are found through `sent`: per sender (a hash of its key), room and
move into SQLite, the ids it sent and their seqs, one row however many there are. Schemas 5
and 6 kept the records in SQLite (`chunks`); opening one moves them into a segment once.

Reads: a room keeps a bounded in-memory tail, a contiguous run of its newest messages
(possibly empty), so joins and short resumes never touch SQL. Older reads go to the records
from the cursor on, decoding one at a time, and stop as soon as `max_bytes` of text is
spent: a history request reads about what it may send (at most one record more).

Memory. Per room with history, for ever (like its row in the rooms table; the hub caps the
rooms at `total_rooms`): its name and three dict entries (head, first visible, first kept),
~160 bytes with a 16-character name (tracemalloc). For all the tails together: at most
`tail_bytes` (TAIL_BYTES, 32 MiB, by default), counted as

    tail cost = TAIL_ROOM_COST (1024) per tail
              + per message: TAIL_MESSAGE_COST (384) + text chars * (1 if ASCII else 8)
                             + msg_id chars * 8

an upper bound of what a tail holds (tracemalloc measures 40-95% of it; `_message_cost` says
why 8). Past the budget, the tails of the rooms least recently appended to are dropped whole:
their reads go to SQL, and the next append starts a new tail. Beside those, the `_oldest_ts`
cache holds at most OLDEST_TS_MAX rooms, the messages not yet indexed (and their records'
places) at most `sync_rows` messages, the resend filter up to ~13 bytes per stored id (2.9 MB
at least; twice that while its successor is built), and SQLite's page cache 16 MiB. So 10,000
rooms cost ~2 MiB plus at most 32 MiB of tails, whatever is said in them.

Retention: the count limit takes effect at once (a read past it reports the gap, exactly as
MemoryStore does), the age limit when `trim` runs; either way records leave only in `trim`
(called from a timer), a whole record at a time once all of it is hidden, in bounded batches
so that one call never stalls the loop: their rows are deleted, then their bytes punched out
of the files, and a file with nothing alive is deleted. The `rooms` table keeps each room's
head so that sequence numbers continue after everything was trimmed or the server restarted.

Resends (`find`): a Bloom filter of every stored id says for certain when an id is new; a
"maybe" looks among the messages not yet indexed (their ids searched in C, or through a dict
once many "maybe"s come), then reads SQL: the sender's `sent` rows, newest first, until
RESEND_WINDOW of its ids were looked at (the protocol promises that window, docs/protocol.md),
each row's ids tested with one substring search before it is decoded.

The files are segments.py's, the resend filter idfilter.py's, and the journal of schemas 5
and 6 is read by journal.py; what stays here is one cohesive thing, the Store interface over
files and an SQL index.
"""

from __future__ import annotations

import bisect
import contextlib
import fcntl
import itertools
import marshal
import os
import sqlite3
import zlib
from collections import OrderedDict, deque
from collections.abc import Generator, Iterable, Iterator
from operator import attrgetter
from pathlib import Path
from typing import Literal

import msgspec

from chatctl.protocol import UNACKED_MAX
from chatctl.store import datadir
from chatctl.store.base import ReadResult, StoredMessage, sender_key_of, take
from chatctl.store.errors import StoreError
from chatctl.store.idfilter import IdFilter
from chatctl.store.journal import JOURNAL_NAME, MARSHALLED, TOKENS_JOURNAL_NAME, replay_journal
from chatctl.store.segments import ENCODER, MESSAGES, RECORD, Place, Segments, segment_name

# 1: resend index on (sender_key, msg_id); 2: on id_hash; 3: on key_hash; 4: sender_key holds
# sender_key_of(token), not the token; 5: chunks of messages and per-sender `sent` rows
# instead of a row per message (see _SCHEMA); 6: new chunks and `sent` ids in MessagePack
# (msgspec) instead of marshal, about 10x cheaper to write; 5's marshalled ones still read,
# so 5 becomes 6 without rewriting anything (the version keeps older servers out); 7: the
# chunks, now records, in segment files, indexed by `records` (5 and 6 are moved there).
SCHEMA_VERSION = 7
DB_NAME = "history.sqlite3"
LOCK_NAME = "lock"
# The in-memory tails: their budget, and what each costs against it (see the module's
# docstring): a deque with its first block and two dict entries; a message's tuple, its seq
# and ts, its slot in the deque, and the headers of its text and msg_id strings.
TAIL_BYTES = 32 * 1024 * 1024
TAIL_ROOM_COST = 1024
TAIL_MESSAGE_COST = 384
OLDEST_TS_MAX = 65_536
# A record: at most this many messages, and (after its first) this much text. A read decodes
# at most one record more than it returns.
CHUNK_MESSAGES = 256
CHUNK_TEXT_BYTES = 64 * 1024
# A resend is recognised among at least the sender's newest RESEND_WINDOW stored messages,
# as many as a client may have unacknowledged (docs/protocol.md §6.3): what `find` reads at
# most, when the filter says "maybe".
RESEND_WINDOW = UNACKED_MAX
# How many "maybe"s of the resend filter, between two indexings, search the flushed ids
# before a dict of them is built (see _not_indexed).
MAYBES_SEARCHED = 8
# Segments are deleted once nothing in them is alive, but one record of a quiet room keeps a
# whole segment (its dead bytes punched out): past COMPACT_ABOVE older segments with something
# alive, each trim moves up to COMPACT_RECORDS records (COMPACT_BYTES of them) out of those at
# most COMPACT_LIVE alive, sparsest first, into the newest. So the files stay few however the
# rooms' paces differ (at most COMPACT_ABOVE, or 1 / COMPACT_LIVE times the live history in
# segments), and a byte is copied at most about once more on average; a server that keeps
# everything, or whose rooms age alike, never moves anything.
COMPACT_ABOVE = 8
COMPACT_LIVE = 0.25
COMPACT_RECORDS = 1024
COMPACT_BYTES = 8 * 1024 * 1024

_SCHEMA = """
-- A record: a run of consecutive messages of one room in a segment file (segments.py):
-- messages-<segment>.log, its header at byte pos, its body `length` bytes. ts_max lets the
-- age limit skip whole records.
CREATE TABLE IF NOT EXISTS records (
    room TEXT NOT NULL,
    first INTEGER NOT NULL,
    last INTEGER NOT NULL,
    ts_max INTEGER NOT NULL,
    segment INTEGER NOT NULL,
    pos INTEGER NOT NULL,
    length INTEGER NOT NULL,
    PRIMARY KEY (room, first)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS records_by_segment ON records (segment);
-- Where the records indexed so far end: the ones after it were written by a server that was
-- killed before it indexed them, and are read back at start-up.
CREATE TABLE IF NOT EXISTS indexed (
    one INTEGER PRIMARY KEY CHECK (one = 1),
    segment INTEGER NOT NULL,
    pos INTEGER NOT NULL
);
-- Records whose rows trim deleted and whose bytes it has not punched out of their files
-- yet: a kill in between leaves them here for the next start.
CREATE TABLE IF NOT EXISTS dead (
    segment INTEGER NOT NULL,
    pos INTEGER NOT NULL,
    length INTEGER NOT NULL,
    PRIMARY KEY (segment, pos)
) WITHOUT ROWID;
-- Resend detection: per sender (key_hash, a 32-bit hash of its key), room and indexing
-- (batch, increasing), the n ids it sent: a MessagePack array of two, its messages' msg_ids
-- ("" for none) and their seqs (schema 6: an array of [msg_id, seq] pairs; schema 5: marshal
-- of a list of (msg_id, seq) tuples; both rewritten when moved to 7). `last` is the seq of
-- the sender's last message in the row.
CREATE TABLE IF NOT EXISTS sent (
    key_hash INTEGER NOT NULL,
    batch INTEGER NOT NULL,
    room TEXT NOT NULL,
    sender_key TEXT NOT NULL,
    last INTEGER NOT NULL,
    n INTEGER NOT NULL,
    ids BLOB NOT NULL,
    PRIMARY KEY (key_hash, batch, room)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS sent_by_room ON sent (room, last);
-- One row per room: the head survives the trimming of every message; first is the lowest seq
-- the age limit left visible (a record may still hold older messages, hidden).
CREATE TABLE IF NOT EXISTS rooms (
    room TEXT PRIMARY KEY,
    head INTEGER NOT NULL,
    first INTEGER NOT NULL DEFAULT 1
) WITHOUT ROWID;
"""
# Schemas 5 and 6: the records as rows of SQLite, body a MessagePack array of StoredMessage
# arrays (or, by 5, marshal of a list of (seq, ts, sender, text, action, sender_key, msg_id)).
_LEGACY_CHUNKS = """
CREATE TABLE IF NOT EXISTS chunks (
    room TEXT NOT NULL,
    first INTEGER NOT NULL,
    last INTEGER NOT NULL,
    ts_max INTEGER NOT NULL,
    body BLOB NOT NULL,
    PRIMARY KEY (room, first)
) WITHOUT ROWID;
"""
_INSERT_CHUNK = (
    "INSERT OR IGNORE INTO chunks (room, first, last, ts_max, body) VALUES (?, ?, ?, ?, ?)"
)
_INSERT_RECORD = (
    "INSERT INTO records (room, first, last, ts_max, segment, pos, length)"
    " VALUES (?, ?, ?, ?, ?, ?, ?)"
)
_INSERT_SENT = (
    "INSERT OR IGNORE INTO sent (key_hash, batch, room, sender_key, last, n, ids)"
    " VALUES (?, ?, ?, ?, ?, ?, ?)"
)
_SET_INDEXED = "INSERT OR REPLACE INTO indexed (one, segment, pos) VALUES (1, ?, ?)"
_INSERT_ROOM = "INSERT OR IGNORE INTO rooms (room, head) VALUES (?, 0)"
_UPSERT_ROOM = "INSERT OR REPLACE INTO rooms (room, head, first) VALUES (?, ?, ?)"
_ROOM, _SEQ, _TS, _TEXT = (
    attrgetter("room"),
    attrgetter("seq"),
    attrgetter("ts"),
    attrgetter("text"),
)
_KEY, _ID = attrgetter("sender_key"), attrgetter("msg_id")
_IDS = msgspec.msgpack.Decoder(tuple[list[str], list[int]])
_OLD_IDS = msgspec.msgpack.Decoder(list[tuple[str, int]])
# Reads decode a record at a time; the record count of a read is what the tests watch.
# From the record that holds seq ?2 on (one primary-key seek; `last >= ?2` alone would walk
# every older record of the room first: records are many where each turn writes one).
_RECORDS_FROM = (
    "SELECT segment, pos, length FROM records WHERE room = ?1 AND last >= ?2 AND first >="
    " coalesce((SELECT max(first) FROM records WHERE room = ?1 AND first <= ?2), 0)"
    " ORDER BY first"
)
_RECORDS_NEWEST = "SELECT segment, pos, length FROM records WHERE room = ? ORDER BY first DESC"
_RECORD_AT = (
    "SELECT segment, pos, length FROM records WHERE room = ? AND first <= ?"
    " ORDER BY first DESC LIMIT 1"
)
_RECORDS_UNEXPIRED = (
    "SELECT segment, pos, length FROM records WHERE room = ? AND last >= ? AND ts_max >= ?"
    " ORDER BY first"
)


def _migrate(db: sqlite3.Connection, version: int) -> None:
    """Bring schema 1, 2, 3 or 4 to 5, in place. 1 and 2 differ from 3 only in the resend
    index; 3 stored resume tokens, 4 their hashes (sender_key_of); 5 keeps the same messages
    in chunks. secure_delete and a checkpoint leave no copy of a token in the file's free
    space or in the WAL."""
    db.create_function("sender_key_of", 1, sender_key_of, deterministic=True)
    db.executescript(f"BEGIN; {_SCHEMA} {_LEGACY_CHUNKS}")  # open until the COMMIT
    columns = "room, seq, ts, sender, text, action, sender_key, msg_id"
    if version < 4:
        columns = columns.replace(
            "sender_key,", "CASE sender_key WHEN '' THEN '' ELSE sender_key_of(sender_key) END,"
        )
    rows = db.execute(f"SELECT {columns} FROM messages ORDER BY room, seq")
    batch = 0
    while True:
        some = rows.fetchmany(CHUNK_MESSAGES * 64)
        if not some:
            break
        batch += 1
        messages = [
            StoredMessage(r[0], r[1], r[2], r[3], r[4], bool(r[5]), r[6], r[7]) for r in some
        ]
        db.executemany(
            _INSERT_CHUNK,
            [
                (room, part[0].seq, part[-1].seq, max(map(_TS, part)), ENCODER.encode(part))
                for room, part in _parts(messages)
            ],
        )
        sent = _sent_rows(messages, batch)
        db.executemany(_INSERT_SENT, sent)
        batch = max((row[1] for row in sent), default=batch)
    db.executemany(_INSERT_ROOM, db.execute("SELECT DISTINCT room FROM chunks").fetchall())
    db.execute("DROP TABLE messages")
    db.execute("PRAGMA user_version=5")  # whose chunks _open moves into a segment next
    db.execute("COMMIT")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def key_hash(sender_key: str) -> int:
    """Stable across processes (unlike hash()): it is stored."""
    return zlib.crc32(sender_key.encode("utf-8", "surrogatepass"))


def _by_room(
    messages: list[StoredMessage], one_room: bool = False
) -> Iterator[tuple[str, list[StoredMessage]]]:
    """`messages` (any rooms, each room's in seq order), room by room, each room's in order:
    the list itself when there is one room (the common case, no sort; `one_room`: the caller
    knows it)."""
    if one_room or len(set(map(_ROOM, messages))) == 1:
        yield messages[0].room, messages
        return
    for room, run in itertools.groupby(sorted(messages, key=_ROOM), _ROOM):  # a stable sort
        yield room, list(run)


def _parts(messages: list[StoredMessage]) -> list[tuple[str, list[StoredMessage]]]:
    """`messages` (any rooms, each room's in seq order) cut into records: runs of one room's
    consecutive messages, at most CHUNK_MESSAGES and CHUNK_TEXT_BYTES of text (past their
    first) each. On every flush: C (attrgetter, map, a stable sort, bisect) where it can."""
    parts = []
    for room, run in _by_room(messages):
        if len(run) <= CHUNK_MESSAGES and sum(map(len, map(_TEXT, run))) <= CHUNK_TEXT_BYTES:
            parts.append((room, run))
            continue
        start = 0
        while start < len(run):
            part = run[start : start + CHUNK_MESSAGES]
            # Up to and including the message that takes its text past CHUNK_TEXT_BYTES.
            sizes = list(itertools.accumulate(map(len, map(_TEXT, part))))
            part = part[: bisect.bisect_right(sizes, CHUNK_TEXT_BYTES) + 1]
            start += len(part)
            parts.append((room, part))
    return parts


def _sent_rows(
    messages: list[StoredMessage],
    batch: int,
    one_room: bool = False,
    all_ids: list[str] | None = None,
) -> list[tuple[int, int, str, str, int, int, bytes]]:
    """The `sent` rows of `messages` (any rooms, each room's in seq order): per room and
    sender, the (msg_id, seq) pairs of the messages that have an id. In batch `batch`, but a
    sender whose key_hash (a CRC-32) another sender's in the room shares takes the next one,
    as the primary key wants: the caller goes on after the highest batch used. `one_room`:
    the caller knows they are all in one room; `all_ids`: their msg_ids, if it has them."""
    sent = []
    taken: dict[tuple[int, str], int] = {}  # (key_hash, room): its rows so far
    for room, run in _by_room(messages, one_room):
        keys = list(map(_KEY, run))
        distinct = set(keys)
        for key in distinct:
            mine = (
                run if len(distinct) == 1 else list(itertools.compress(run, map(key.__eq__, keys)))
            )
            # Two flat lists: no tuple per message.
            ids = all_ids if mine is messages and all_ids is not None else list(map(_ID, mine))
            n = len(ids) - ids.count("")
            if n:
                # A room's seqs only grow: as many as their span, they are all of them.
                first, last = mine[0].seq, mine[-1].seq
                if last - first + 1 == len(mine):
                    seqs = list(range(first, last + 1))
                else:
                    seqs = list(map(_SEQ, mine))
                blob = ENCODER.encode((ids, seqs))
                hashed = key_hash(key)
                later = taken.get((hashed, room), 0)
                taken[hashed, room] = later + 1
                sent.append((hashed, batch + later, room, key, mine[-1].seq, n, blob))
    return sent


def _message_cost(message: StoredMessage) -> int:
    """What a message in a tail counts against the tails' budget: an upper bound of the
    memory it holds alone. A character of a CPython string takes 1 byte when every one is
    ASCII, else up to 8: up to 4 in the string and 4 in the UTF-8 copy the string keeps
    once sqlite3 has bound it. Room, sender and sender key are shared with other messages.
    SqliteStore.append inlines this."""
    text = message.text
    return (
        TAIL_MESSAGE_COST
        + (len(text) if text.isascii() else 8 * len(text))
        + 8 * len(message.msg_id)
    )


def _tail_cost(tail: deque[StoredMessage]) -> int:
    return TAIL_ROOM_COST + sum(map(_message_cost, tail))


def _chunk(room: str, body: bytes) -> list[StoredMessage]:
    """The messages of a record of `room`, first to last: decoded by msgspec in C, or written
    by schema 5 (marshalled tuples without the room). Its checksum was right; content that
    is not what this code writes is damage all the same (a StoreError, not a traceback)."""
    try:
        if body[:1] and body[0] in MARSHALLED:
            return [
                StoredMessage(room, r[0], r[1], r[2], r[3], bool(r[4]), r[5], r[6])
                for r in marshal.loads(body)
            ]
        return MESSAGES.decode(body)
    except (msgspec.DecodeError, ValueError, EOFError, TypeError, IndexError, KeyError) as exc:
        raise StoreError(f"a record of {room!r} in the history is damaged ({exc})") from None


def _ids(blob: bytes) -> tuple[list[str], list[int]]:
    """The msg_ids of a `sent` row ("" for a message without one) and their seqs."""
    return _IDS.decode(blob)


def _id_pairs(sender_key: str, blob: bytes) -> list[tuple[str, str]]:
    """A `sent` row's ids as the resend filter takes them: (sender_key, msg_id) pairs."""
    return list(zip(itertools.repeat(sender_key), filter(None, _ids(blob)[0])))


def _old_ids(blob: bytes) -> bytes:
    """A `sent` row's ids of schema 5 or 6 in the form of 7. The rows _migrate wrote (from 1
    to 4) are in 7's form already, and a kill may leave them under version 5: kept as they
    are (the two forms cannot be taken for each other: a pair holds a str and an int)."""
    if blob[0] in MARSHALLED:
        pairs: list[tuple[str, int]] = marshal.loads(blob)
    else:
        try:
            _IDS.decode(blob)
            return blob
        except msgspec.ValidationError:
            pairs = _OLD_IDS.decode(blob)
    return ENCODER.encode(([p[0] for p in pairs], [p[1] for p in pairs]))


def _messages(
    room: str, bodies: Iterable[bytes], start: int, *, newest_first: bool = False
) -> Iterator[StoredMessage]:
    """The messages of the records `bodies` of `room` from seq `start` on: in their order, or
    with `newest_first` (records newest first) newest first, ending at `start`."""
    for body in bodies:
        messages = _chunk(room, body)
        if newest_first:
            messages.reverse()
        for message in messages:
            if message.seq < start:
                if newest_first:
                    return
                continue
            yield message


def _shared(room: str, messages: list[StoredMessage]) -> list[StoredMessage]:
    """`messages` read from chunks, made to share one string object for the room and for
    each sender and sender key, as messages from the hub do: a tail holds many, and its
    budget counts them shared."""
    shared: dict[str, str] = {}
    share = shared.setdefault
    return [
        StoredMessage(
            room,
            m.seq,
            m.ts,
            share(m.sender, m.sender),
            m.text,
            m.action,
            share(m.sender_key, m.sender_key),
            m.msg_id,
        )
        for m in messages
    ]


class SqliteStore:
    """History in `directory`/history.sqlite3. One server per directory (a lock file says so)."""

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        retain_messages: int = 100_000,
        retain_age: float = 0.0,
        synchronous: Literal["NORMAL", "FULL"] = "NORMAL",
        tail: int = 256,
        tail_bytes: int = TAIL_BYTES,
        sync_rows: int = 8192,
        trim_batch: int = 20_000,
        filter_floor: int = 1 << 20,
        filter_chunk: int = 32_768,
        resend_window: int = RESEND_WINDOW,
    ) -> None:
        self.directory = Path(directory)
        self.location = str(self.directory.resolve())
        self.retain_messages = retain_messages
        self.retain_age = retain_age
        self._tail_size = max(tail, 1)
        self._tail_budget = tail_bytes
        self._sync_rows = max(sync_rows, 1)
        self._fsync = synchronous == "FULL"
        self._trim_batch = max(trim_batch, 1)
        self._filter_floor = filter_floor
        self._filter_chunk = max(filter_chunk, 1)
        self._resend_window = max(resend_window, 1)
        self._heads: dict[str, int] = {}
        # The lowest sequence number readers may see (head + 1 when none), and the lowest
        # that may still have a row: rows in between wait for trim() to delete them.
        self._first: dict[str, int] = {}
        self._kept: dict[str, int] = {}
        # Contiguous newest messages of a room (possibly empty, never with a hole; no entry
        # means an empty tail); the rooms with an entry, least recently appended to first
        # (kept apart: a plain dict looks up faster); the cost of all tails (_tail_cost);
        # and the room appended to last (when it has a tail, it is last in _tail_order).
        self._tails: dict[str, deque[StoredMessage]] = {}
        self._tail_order: OrderedDict[str, None] = OrderedDict()
        self.tail_used = 0
        self._tail_last = ""
        # ts of the message at _first, when known: lets trim skip rooms with nothing expired.
        self._oldest_ts: dict[str, int] = {}
        self._pending: list[StoredMessage] = []  # appended, not yet durable
        # How many runs of one room _pending holds (the room of the last append), and their
        # text in characters: one room with little text is cut into records without a look
        # at each message (flush), the common case of a busy room.
        self._pending_runs = 0
        self._pending_room: str | None = None
        self._pending_text = 0
        # Durable in a segment, not yet indexed in SQLite: the messages, and per room the
        # places of their records (first, last, ts_max, (segment, pos, length)).
        self._journaled: list[StoredMessage] = []
        self._journaled_room: str | None = None  # their one room (None: none, or several)
        self._unindexed: dict[str, list[tuple[int, int, int, Place]]] = {}
        # Per segment, how many of its records are alive, and their bytes (headers included).
        self._live: dict[int, int] = {}
        self._live_bytes: dict[int, int] = {}
        self._new_rooms: list[str] = []
        self._appended_since_trim = 0
        self._batch = 0  # the last `sent.batch` written
        # Resend detection without SQL for the common case, a new id: a filter of every
        # stored id says for certain when an id is new; a "maybe" (a real resend, or ~0.02%)
        # looks in the messages not yet indexed (through dicts built only then, and kept
        # until those move on), then in SQL.
        # The msg_ids of _journaled, in order: a few "maybe"s look through them (in C);
        # a burst of them (a client resending after a reconnect) builds the dict instead.
        self._journaled_ids: list[str] = []
        self._maybes = 0
        self._recent: dict[tuple[str, str], StoredMessage] = {}  # of _journaled[:_indexed]
        self._indexed = 0
        self._stored_ids = IdFilter(1)  # replaced by _load
        # The filter's successor while it is being built, and where its scan of `sent` is
        # (the primary key of the last row read; None: not started).
        self._next_ids: IdFilter | None = None
        self._scan_from: tuple[int, int, str] | None = None
        self._lock_fd = -1
        self._segments: Segments | None = None
        self.notes: list[str] = []  # what opening repaired, for the server's log
        self._db: sqlite3.Connection | None = None
        try:
            self._open(synchronous)
        except BaseException:
            self._release()
            raise

    # -- opening -------------------------------------------------------------------------

    def _open(self, synchronous: str) -> None:
        where = str(self.directory)
        datadir.prepare(self.directory)
        self._lock_fd = datadir.open_file(self.directory / LOCK_NAME, os.O_RDWR)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise StoreError(
                f"data directory {where} is in use by another chatctl server"
            ) from None
        path = self.directory / DB_NAME
        # Created here, 0600 and not through a link: SQLite gives its -wal and -shm files the
        # database file's mode.
        os.close(datadir.open_file(path, os.O_RDWR))
        try:
            db = self._db = sqlite3.connect(path, isolation_level=None)
            # The flock makes this process the file's only user, so it can hold SQLite's lock
            # for good: set before WAL mode, no shared-memory index and no lock calls per
            # transaction (about a third off each small commit). Checkpoints (two fsyncs
            # each) every ~40 MB of WAL instead of every 4 MB.
            db.execute("PRAGMA locking_mode=EXCLUSIVE")
            mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StoreError(f"{path}: cannot switch the database to WAL mode")
            db.execute(f"PRAGMA synchronous={synchronous}")
            db.execute("PRAGMA wal_autocheckpoint=10000")
            db.execute("PRAGMA cache_size=-16384")  # KiB: the hot pages of big rooms stay in
            # Trimmed history is overwritten, not only unlinked from the tree, whatever the
            # build's default (Debian's is on, SQLite's off): retention means gone from the
            # file. It costs ~0.2 us a message at full speed (the freed pages are written).
            db.execute("PRAGMA secure_delete=ON")
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, 1, 2, 3, 4, 5, 6, SCHEMA_VERSION):
                raise StoreError(
                    f"{path} has history schema version {version}; this chatctl reads {SCHEMA_VERSION}"
                )
            if version in (1, 2, 3) and (self.directory / JOURNAL_NAME).exists():
                # Its keys are tokens: said by its name before the migration commits (a start
                # cut short after that would find a version that no longer says it).
                os.rename(self.directory / JOURNAL_NAME, self.directory / TOKENS_JOURNAL_NAME)
                datadir.sync_directory(self.directory)
            if version in (1, 2, 3, 4):
                _migrate(db, version)
            if version != SCHEMA_VERSION:
                # Segment files beside an older database are what a move into segments
                # interrupted by a kill wrote: it starts over.
                for name in os.listdir(self.directory):
                    if name.startswith("messages-") and name.endswith(".log"):
                        os.unlink(self.directory / name)
            self._segments = Segments(self.directory, fsync=self._fsync)
            if version != SCHEMA_VERSION:
                self._into_segments(db, old_ids=version in (5, 6))
            db.executescript(f"BEGIN; {_SCHEMA} COMMIT;")  # what a newer 7 added (an index)
            if "first" not in {row[1] for row in db.execute("PRAGMA table_info(rooms)")}:
                # The rooms table of schemas 1 to 4 (CREATE IF NOT EXISTS kept it).
                db.execute("ALTER TABLE rooms ADD COLUMN first INTEGER NOT NULL DEFAULT 1")
            self._load(db)
            self._recover()
            self._replay_journal(TOKENS_JOURNAL_NAME, tokens_in_clear=True)
            self._replay_journal(JOURNAL_NAME, tokens_in_clear=False)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open history database {path}: {exc}") from None
        except OSError as exc:
            raise StoreError(f"cannot open history in {where}: {exc.strerror or exc}") from None

    def _into_segments(self, db: sqlite3.Connection, *, old_ids: bool) -> None:
        """Create schema 7, moving the chunks of schema 5 or 6 (if any) into a segment file as
        they are, and (`old_ids`) rewriting the `sent` ids of 5 or 6 in the form of 7: one
        transaction, after an fdatasync of the file (so a kill anywhere leaves either the
        old layout, and segment files that the next start deletes, or the new)."""
        segments = self._segments_or_closed()
        db.executescript(f"BEGIN; {_SCHEMA}")
        if db.execute("SELECT 1 FROM sqlite_master WHERE name = 'chunks'").fetchone():
            rows = db.execute(
                "SELECT room, first, last, ts_max, body FROM chunks ORDER BY room, first"
            )
            while some := rows.fetchmany(1024):
                places = segments.append([body for *_, body in some])
                db.executemany(
                    _INSERT_RECORD,
                    [(*row[:4], *place) for row, place in zip(some, places, strict=True)],
                )
            segments.sync()
            db.execute("DROP TABLE chunks")
        if old_ids:
            db.executemany(
                "UPDATE sent SET ids = ? WHERE key_hash = ? AND batch = ? AND room = ?",
                [
                    (_old_ids(blob), *where)
                    for *where, blob in db.execute("SELECT key_hash, batch, room, ids FROM sent")
                ],
            )
        db.execute(_SET_INDEXED, (segments.current, segments.size(segments.current)))
        db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        db.execute("COMMIT")

    def _recover(self) -> None:
        """Index the records written after the last indexing (the server was killed before
        it came): read back from the segment files, a torn last one cut off."""
        segments = self._segments_or_closed()
        where = self._connection().execute("SELECT segment, pos FROM indexed").fetchone()
        if where and where[0] in segments.numbers and segments.size(where[0]) < where[1]:
            raise StoreError(
                f"{self.directory / segment_name(where[0])} is damaged (shorter than the"
                f" {where[1]} bytes indexed)"
            )
        found, note = segments.scan(*where) if where else segments.scan(1, 0)
        if note:
            self.notes.append(note)
        leftovers = []
        for place, messages in found:
            room = messages[0].room
            head = self._heads.get(room, 0)
            if messages[-1].seq <= head and all(m.room == room for m in messages):
                leftovers.append(place)  # a copy by a _compact that a kill cut short
                continue
            if list(map(_SEQ, messages)) != list(range(head + 1, head + 1 + len(messages))) or any(
                m.room != room for m in messages
            ):
                raise StoreError(
                    f"{self.directory / segment_name(place[0])} is damaged at byte {place[1]}"
                    f" (a record of {room!r} from seq {messages[0].seq} that does not run on"
                    f" from {head})"
                )
            if room not in self._heads:
                self._new_rooms.append(room)
                self._first[room] = self._kept[room] = 1
            self._heads[room] = messages[-1].seq
            self._first[room] = max(self._first[room], self._count_floor(messages[-1].seq))
            self._index_later(room, messages, place)
            self._journaled += messages
            self._journaled_room = None  # not known: _sent_rows looks
            self._journaled_ids += map(_ID, messages)
            self._stored_ids.add_many([(m.sender_key, m.msg_id) for m in messages if m.msg_id])
        segments.release(leftovers)
        self._sync()

    def _replay_journal(self, name: str, *, tokens_in_clear: bool) -> None:
        """Take in what the journal of schema 5 or 6 holds (written before a kill: newer than
        every chunk), then delete it. A journal left by a schema-1 to 3 server holds tokens, not
        their hashes: the start that migrates its database renames it TOKENS_JOURNAL_NAME."""
        path = self.directory / name
        if not path.exists():
            return
        messages, torn = replay_journal(path)
        if tokens_in_clear:
            messages = [
                msgspec.structs.replace(m, sender_key=sender_key_of(m.sender_key))
                if m.sender_key
                else m
                for m in messages
            ]
        if torn:
            self.notes.append(
                f"{path}: dropped {torn} bytes of a write cut short at the end "
                "(a kill or crash during the write; it was never acknowledged)"
            )
        for message in messages:
            head = self._heads.get(message.room, 0)
            if message.seq == head + 1:
                self.append(message)
            elif message.seq > head:
                raise StoreError(
                    f"{path} is damaged (seq {message.seq} of {message.room!r} after {head})"
                )
        self.flush()
        self._sync()
        try:
            os.unlink(path)
        except OSError as exc:
            raise StoreError(f"cannot remove {path}: {exc.strerror or exc}") from None

    def _load(self, db: sqlite3.Connection) -> None:
        for room, head, visible in db.execute("SELECT room, head, first FROM rooms").fetchall():
            low, high = db.execute(
                "SELECT min(first), max(last) FROM records WHERE room = ?", (room,)
            ).fetchone()
            top = max(head, high or 0)
            self._heads[room] = top
            self._kept[room] = low if low is not None else top + 1
            self._first[room] = max(self._kept[room], self._count_floor(top), visible)
        counts = db.execute(
            "SELECT segment, count(*), sum(length) FROM records GROUP BY segment"
        ).fetchall()
        self._live = {number: n for number, n, _ in counts}
        self._live_bytes = {number: size + n * RECORD.size for number, n, size in counts}
        segments = self._segments_or_closed()
        # What a trim that a kill cut short left: bytes not punched yet, files not deleted
        # (those at or past where indexing stopped may hold records to read back).
        segments.release(db.execute("SELECT segment, pos, length FROM dead").fetchall())
        db.execute("DELETE FROM dead")
        indexed, pos = db.execute("SELECT segment, pos FROM indexed").fetchone() or (0, 0)
        for number in segments.numbers[:-1]:
            if number not in self._live and (
                number < indexed or (number == indexed and segments.size(number) <= pos)
            ):
                segments.remove(number)
        (count,) = db.execute("SELECT coalesce(sum(n), 0) FROM sent").fetchone()
        self._stored_ids = IdFilter(self._filter_capacity(count))
        for key, blob in db.execute("SELECT sender_key, ids FROM sent"):  # row by row: the
            # ids of a whole database at once would take ~10 times the filter's memory
            self._stored_ids.add_many(_id_pairs(key, blob))
        (batch,) = db.execute("SELECT max(batch) FROM sent").fetchone()
        self._batch = batch or 0

    # -- the Store interface ---------------------------------------------------------------

    def rooms(self) -> list[str]:
        return list(self._heads)

    def head(self, room: str) -> int:
        return self._heads.get(room, 0)

    def append(self, message: StoredMessage) -> None:
        # The path of every message: the row, _count_floor and _message_cost are inlined.
        room = message.room
        seq = message.seq
        head = self._heads.get(room)
        if seq != (head or 0) + 1:
            raise ValueError(f"seq {seq} appended to {room!r}, expected {(head or 0) + 1}")
        if head is None:
            self._new_rooms.append(room)
            self._first[room] = self._kept[room] = 1
        self._heads[room] = seq
        text = message.text
        msg_id = message.msg_id
        self._pending.append(message)
        if room != self._pending_room:
            self._pending_room = room
            self._pending_runs += 1
        self._pending_text += len(text)
        # The tail, its cost counted and its place in the order of appends kept.
        cost = (len(text) if text.isascii() else 8 * len(text)) + 8 * len(msg_id)
        tail = self._tails.get(room)
        if tail is None:
            tail = self._new_tail(room)
            cost += TAIL_ROOM_COST
        elif room != self._tail_last:
            self._tail_order.move_to_end(room)
            self._tail_last = room
        if len(tail) == self._tail_size:
            old = tail[0]  # pushed out by this append
            text = old.text
            cost -= (len(text) if text.isascii() else 8 * len(text)) + 8 * len(old.msg_id)
        else:
            cost += TAIL_MESSAGE_COST
        tail.append(message)
        self.tail_used += cost
        if self.tail_used > self._tail_budget:
            self._evict_tails()
        retain = self.retain_messages
        if retain and seq - retain >= self._first[room]:
            # _forget_below, inlined for the common case: the tail is far above the limit.
            first = self._first[room] = seq - retain + 1
            if room in self._oldest_ts:
                del self._oldest_ts[room]
            if tail[0].seq < first:
                self._forget_below(room, first)
        if msg_id:
            pair = (message.sender_key, msg_id)
            self._stored_ids.add(pair)  # abloom's, in C (counted in flush)
            if self._next_ids is not None:
                self._next_ids.add(pair)

    def flush(self) -> None:
        pending = self._pending
        if not pending:
            return
        # Nothing of this batch may be acknowledged if this raises: the server must stop.
        one_room = self._pending_room if self._pending_runs == 1 else None
        if one_room is not None and self._pending_text <= CHUNK_TEXT_BYTES:
            # As _parts would cut them, without a look at each message.
            parts = [
                (one_room, pending[i : i + CHUNK_MESSAGES])
                for i in range(0, len(pending), CHUNK_MESSAGES)
            ]
        else:
            parts = _parts(pending)
        places = self._segments_or_closed().append([ENCODER.encode(part) for _, part in parts])
        for (room, part), place in zip(parts, places, strict=True):
            self._index_later(room, part, place)
        self._stored_ids.added(len(pending))
        if self._next_ids is not None:
            self._next_ids.added(len(pending))
        if self._journaled and one_room != self._journaled_room:
            one_room = None
        self._journaled_room = one_room
        self._journaled += pending
        self._journaled_ids += map(_ID, pending)
        self._appended_since_trim += len(pending)
        self._clear_pending()
        if len(self._journaled) >= self._sync_rows:
            self._sync()
            # Under load the filter fills faster than trim() (every few seconds) could
            # rebuild it: each indexing moves a rebuild on, by a chunk (see there).
            try:
                self._refresh_ids(self._connection())
            except sqlite3.Error as exc:
                raise StoreError(f"cannot read history in {self.directory}: {exc}") from None

    def _index_later(self, room: str, part: list[StoredMessage], place: Place) -> None:
        """Note the record `part` of `room`, written at `place`, for the next _sync."""
        entry = (part[0].seq, part[-1].seq, max(map(_TS, part)), place)
        entries = self._unindexed.get(room)
        if entries is None:
            self._unindexed[room] = [entry]
        else:
            entries.append(entry)
        self._live[place[0]] = self._live.get(place[0], 0) + 1
        self._live_bytes[place[0]] = self._live_bytes.get(place[0], 0) + place[2] + RECORD.size

    def _sync(self) -> None:
        """Index the records written since the last call, and their `sent` ids, in one
        transaction, once the segments they are in are on disk."""
        if not self._unindexed:
            return
        segments = self._segments_or_closed()
        segments.sync()  # before the index: a power cut must not leave a row without its record
        db = self._connection()
        rows = [
            (room, first, last, ts_max, *place)
            for room, entries in self._unindexed.items()
            for first, last, ts_max, place in entries
        ]
        try:
            db.execute("BEGIN")
            db.executemany(_INSERT_RECORD, rows)
            sent = _sent_rows(
                self._journaled,
                self._batch + 1,
                self._journaled_room is not None,
                self._journaled_ids,
            )
            db.executemany(_INSERT_SENT, sent)
            if self._new_rooms:
                db.executemany(_INSERT_ROOM, [(room,) for room in self._new_rooms])
            db.execute(_SET_INDEXED, (segments.current, segments.size(segments.current)))
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback(db)
            raise StoreError(f"cannot write history to {self.directory}: {exc}") from None
        self._batch = max((row[1] for row in sent), default=self._batch + 1)
        self._unindexed.clear()
        self._journaled.clear()
        self._journaled_room = None
        self._new_rooms.clear()
        self._journaled_ids.clear()
        self._maybes = 0
        self._recent.clear()
        self._indexed = 0

    def read(self, room: str, after: int, limit: int, max_bytes: int | None = None) -> ReadResult:
        head = self._heads.get(room, 0)
        if after >= head:
            return ReadResult([])
        first = self._first[room]
        gap = (after + 1, first - 1) if after + 1 < first else None
        start = max(after + 1, first)
        if limit <= 0 or start > head:
            return ReadResult([], gap)
        tail = self._tails.get(room)
        if tail and start >= tail[0].seq:
            i = start - tail[0].seq
            span = range(i, min(i + limit, len(tail)))
            return ReadResult(take((tail[j] for j in span), max_bytes), gap)
        bodies = self._bodies(room, start)
        try:
            messages = _messages(room, bodies, start)
            found = take((m for m, _ in zip(messages, range(limit), strict=False)), max_bytes)
        finally:
            bodies.close()
        return ReadResult(found, gap)

    def latest(self, room: str, limit: int, max_bytes: int | None = None) -> list[StoredMessage]:
        head = self._heads.get(room, 0)
        first = self._first.get(room, 1)
        limit = min(limit, head - first + 1)
        if limit <= 0:
            return []
        tail = self._tails.get(room)
        have = len(tail) if tail else 0
        if tail:
            newest_first = (tail[j] for j in range(have - 1, max(have - limit, 0) - 1, -1))
            found = take(newest_first, max_bytes)
            if have >= limit or len(found) < have:  # the tail held enough, or the budget ended
                found.reverse()
                return found
        bodies = self._bodies(room, first, newest_first=True)
        try:
            newest = _messages(room, bodies, first, newest_first=True)
            found = take((m for m, _ in zip(newest, range(limit), strict=False)), max_bytes)
        finally:
            bodies.close()
        found.reverse()
        if len(found) > have:
            self._refill_tail(room, found[-self._tail_size :])
        return found

    def _refill_tail(self, room: str, newest: list[StoredMessage]) -> None:
        """Warm the tail after a restart or an eviction with `newest`, the room's newest
        messages, without a hole: if they fit in the budget as it is (a read must not push
        out the tail of a room being written to), first in line to be dropped (the room
        was not appended to)."""
        tail = self._tails.get(room)
        cost = TAIL_ROOM_COST + sum(map(_message_cost, newest))
        if self.tail_used - (_tail_cost(tail) if tail else 0) + cost > self._tail_budget:
            return
        self._drop_tail(room)
        last = self._tail_last
        self._new_tail(room, _shared(room, newest))
        self._tail_order.move_to_end(room, last=False)
        self._tail_last = "" if last == room else last
        self.tail_used += cost

    def _bodies(
        self, room: str, start: int, *, newest_first: bool = False
    ) -> Generator[bytes, None, None]:
        """The bodies of the records of `room` that reach `start` or beyond, in seq order
        (or, with `newest_first`, all of them newest first), read one at a time: the indexed
        ones through SQL, then the newer ones not indexed yet. Flushes first (a read may
        reach the messages of this turn). Close it when done: it holds an SQL cursor."""
        self.flush()
        segments = self._segments_or_closed()
        recent = [place for _, last, _, place in self._unindexed.get(room, ()) if last >= start]
        if newest_first:
            for place in reversed(recent):
                yield segments.read(place)
        cursor = self._connection().execute(
            _RECORDS_NEWEST if newest_first else _RECORDS_FROM,
            (room,) if newest_first else (room, start),
        )
        try:
            for place in cursor:
                yield segments.read(place)
        finally:
            cursor.close()
        if not newest_first:
            for place in recent:
                yield segments.read(place)

    def find(self, sender_key: str, msg_id: str) -> StoredMessage | None:
        if not msg_id:
            return None
        pair = (sender_key, msg_id)
        for layer in self._stored_ids.layers:  # IdFilter.may_contain, inlined: every Say asks
            if pair in layer:
                break
        else:
            return None
        known = self._not_indexed(sender_key, msg_id)
        if known is not None:
            return known if known.seq >= self._first[known.room] else None
        # Every message not indexed yet was looked at, so SQL alone is exact here: the
        # sender's rows, newest first, within the window. One substring search tells
        # whether a row can hold the id: it is in the row's list as MessagePack encodes it
        # alone, its length in front (so "c12" is not found inside "c123").
        needle = ENCODER.encode(msg_id)
        seen = 0
        rows = self._connection().execute(
            "SELECT room, sender_key, last, n, ids FROM sent WHERE key_hash = ?"
            " ORDER BY batch DESC",
            (key_hash(sender_key),),
        )
        try:
            for room, key, last, n, blob in rows:
                if key != sender_key or last < self._first[room]:
                    continue
                if needle in blob:
                    for candidate, seq in zip(*_ids(blob), strict=True):
                        if candidate == msg_id and seq >= self._first[room]:
                            return self._message_at(room, seq)
                seen += n
                if seen >= self._resend_window:
                    break
        finally:
            rows.close()
        return None

    def _not_indexed(self, sender_key: str, msg_id: str) -> StoredMessage | None:
        """The message `msg_id` of `sender_key` among those not indexed yet: this turn's
        (few: looked through) and the flushed ones: the first few times since the last
        indexing (the filter's false "maybe"s, ~1 in 5,000 new ids) by a search of their ids
        in C, then (a resend burst) through a dict, extended to the ones flushed since the
        last look and dropped when they are indexed."""
        for message in reversed(self._pending):
            if message.msg_id == msg_id and message.sender_key == sender_key:
                return message
        if self._maybes < MAYBES_SEARCHED:
            self._maybes += 1
            newest_first = self._journaled_ids[::-1]  # the newest copy wins, as in the dict
            at = 0
            while True:
                try:
                    at = newest_first.index(msg_id, at)  # a loop in C
                except ValueError:
                    return None
                message = self._journaled[len(newest_first) - 1 - at]
                if message.sender_key == sender_key:
                    return message
                at += 1
        recent = self._recent
        if self._indexed < len(self._journaled):
            new = self._journaled[self._indexed :]
            recent.update(zip(zip(map(_KEY, new), map(_ID, new), strict=False), new, strict=False))
            self._indexed = len(self._journaled)
        return recent.get((sender_key, msg_id))

    def _message_at(self, room: str, seq: int) -> StoredMessage | None:
        """The indexed message `seq` of `room` (find looked through the others first)."""
        place = self._connection().execute(_RECORD_AT, (room, seq)).fetchone()
        if place is None:
            return None
        for message in _chunk(room, self._segments_or_closed().read(place)):
            if message.seq == seq:
                return message
        return None

    def trim(self, now_ms: int) -> int:
        """Apply retention; delete at most `trim_batch` messages more than were appended since
        the last call (so deletion keeps pace with any ingest rate while a backlog drains in
        bounded steps) and return how many were deleted. Records go whole: one whose newest
        message is still visible stays, its older messages hidden. Their rows go first, in
        one transaction; then their bytes are punched out of the files, and files with
        nothing alive left are deleted (a kill in between leaves bytes no row points to,
        and files that the next start deletes)."""
        if not (self.retain_messages or self.retain_age):
            return 0
        self.flush()
        self._sync()
        db = self._connection()
        cutoff = now_ms - int(self.retain_age * 1000) if self.retain_age else None
        budget = self._trim_batch + self._appended_since_trim
        self._appended_since_trim = 0
        removed = 0
        dead: list[Place] = []
        try:
            db.execute("BEGIN")
            for room, head in self._heads.items():
                first = self._first[room]
                if cutoff is not None and first <= head:
                    target = self._first_unexpired(db, room, first, head, cutoff)
                    if target > first:
                        self._forget_below(room, target)
                        # Durable with the trim: a record may keep the hidden ones.
                        db.execute(_UPSERT_ROOM, (room, head, target))
                kept = self._kept[room]
                # Records go whole: the budget may be passed by less than one.
                upto = min(self._first[room], kept + budget + CHUNK_MESSAGES)
                if upto <= kept:
                    continue
                dead += db.execute(
                    "DELETE FROM records WHERE room = ? AND first < ? AND last < ?"
                    " RETURNING segment, pos, length",
                    (room, upto, upto),
                ).fetchall()
                db.execute("DELETE FROM sent WHERE room = ? AND last < ?", (room, upto))
                db.execute(_UPSERT_ROOM, (room, head, self._first[room]))
                (low,) = db.execute(
                    "SELECT min(first) FROM records WHERE room = ?", (room,)
                ).fetchone()
                now_kept = low if low is not None else head + 1
                if now_kept <= kept:
                    continue
                self._kept[room] = now_kept
                removed += now_kept - kept
                budget -= now_kept - kept
                if budget <= 0:
                    break
            db.executemany("INSERT OR IGNORE INTO dead VALUES (?, ?, ?)", dead)
            db.execute("COMMIT")
            self._refresh_ids(db)
            if dead:
                self._release_records(db, dead)
                db.execute("DELETE FROM dead")
            self._compact(db)
        except sqlite3.Error as exc:
            self._rollback(db)
            raise StoreError(f"cannot trim history in {self.directory}: {exc}") from None
        return removed

    def _compact(self, db: sqlite3.Connection) -> None:
        """Move records out of the older segments with the fewest alive, of as many of them
        as are too many (see COMPACT_ABOVE), into the newest, within a budget. Everything is
        indexed (trim syncs first): the copies are written and fdatasync'd, their rows point
        to them and the index's end moves past them in one transaction, and then the
        originals are punched out like trimmed ones. A kill before the commit leaves copies
        after the index's end that the next start finds already stored, and punches out."""
        segments = self._segments_or_closed()
        older = [n for n in segments.numbers[:-1] if n in self._live]
        if len(older) <= COMPACT_ABOVE:
            return
        sparse = sorted(
            (n for n in older if self._live_bytes[n] <= COMPACT_LIVE * segments.size(n)),
            key=self._live_bytes.__getitem__,
        )
        rows: list[tuple[str, int, int, int, int]] = []
        total = 0
        for victim in sparse:
            for row in db.execute(
                "SELECT room, first, segment, pos, length FROM records WHERE segment = ?"
                " ORDER BY pos LIMIT ?",
                (victim, COMPACT_RECORDS - len(rows)),
            ).fetchall():
                total += row[4]
                if total > COMPACT_BYTES and rows:
                    break
                rows.append(row)
            if total > COMPACT_BYTES or len(rows) >= COMPACT_RECORDS:
                break
        if not rows:
            return
        old = [row[2:] for row in rows]
        places = segments.append([segments.read(place) for place in old])
        segments.sync()
        db.execute("BEGIN")
        db.executemany(
            "UPDATE records SET segment = ?, pos = ? WHERE room = ? AND first = ?",
            [(place[0], place[1], row[0], row[1]) for row, place in zip(rows, places, strict=True)],
        )
        db.executemany("INSERT OR IGNORE INTO dead VALUES (?, ?, ?)", old)
        db.execute(_SET_INDEXED, (segments.current, segments.size(segments.current)))
        db.execute("COMMIT")
        current = segments.current
        self._live[current] = self._live.get(current, 0) + len(places)
        self._live_bytes[current] = self._live_bytes.get(current, 0) + sum(
            RECORD.size + place[2] for place in places
        )
        self._release_records(db, old)
        db.execute("DELETE FROM dead")

    def _release_records(self, db: sqlite3.Connection, dead: list[Place]) -> None:
        """Punch the records at `dead` (their rows deleted, everything indexed) out of their
        segments, and delete the segments that hold nothing alive any more: the newest one
        after starting another, which the index then points to."""
        segments = self._segments_or_closed()
        segments.release(dead)
        live = self._live
        for number, _, length in dead:
            live[number] -= 1
            self._live_bytes[number] -= RECORD.size + length
        for number in {number for number, _, _ in dead}:
            if not live[number]:
                del live[number], self._live_bytes[number]
                if number == segments.current:
                    segments.roll()
                    db.execute(_SET_INDEXED, (segments.current, 0))
                segments.remove(number)

    def _filter_capacity(self, stored: int) -> int:
        """A resend filter's first layer: room for as many ids as it may take before it is
        replaced (see _refresh_ids), so that it rarely needs a second layer, which every
        lookup would also ask (a cache miss more a message): 4 times the stored ids, and
        what comes in while its successor is built (a chunk of the stored ones scanned for
        every sync_rows new ones: at most stored / 4 at the defaults; room for twice that)."""
        return max(4 * stored, self._filter_floor) + stored // 2 + (1 << 16)

    def _refresh_ids(self, db: sqlite3.Connection) -> None:
        """Retention never takes ids out of the resend filter, so a busy server's filter would
        grow for ever: once it has taken 4 times the stored messages, build a successor from
        `sent` in key order, about `filter_chunk` ids per call (whole rows: a row holds at
        most a move's worth), while new ids go into both; then swap. Rows written during the
        scan went into the successor already. Called after every indexing, so that a rebuild
        keeps ahead of the new ids at any load (trim() alone, every few seconds, fell behind
        a server at full speed: lookups then ask more layers), and by trim(). Everything
        flushed is indexed when it is called: the scan sees every stored id."""
        if self._next_ids is None:
            stored = sum(head - self._kept[room] + 1 for room, head in self._heads.items())
            if self._stored_ids.count <= max(4 * stored, self._filter_floor):
                return
            # Everything journaled was just indexed (trim, or the sync in flush): the scan sees it.
            self._next_ids = IdFilter(self._filter_capacity(stored))
            self._scan_from = (-1, 0, "")
        assert self._scan_from is not None
        add_many = self._next_ids.add_many
        rows = db.execute(
            "SELECT key_hash, batch, room, sender_key, n, ids FROM sent"
            " WHERE (key_hash, batch, room) > (?, ?, ?) ORDER BY key_hash, batch, room",
            self._scan_from,
        )
        budget = self._filter_chunk
        try:
            for hashed, batch, room, key, n, blob in rows:
                add_many(_id_pairs(key, blob))
                self._scan_from = (hashed, batch, room)
                budget -= n
                if budget <= 0:
                    return
        finally:
            rows.close()
        self._stored_ids, self._next_ids, self._scan_from = self._next_ids, None, None

    def close(self) -> None:
        if self._db is not None:
            try:
                self.flush()
                self._sync()
            finally:
                self._release()

    # -- beyond the interface ----------------------------------------------------------------

    def stored_rows(self) -> int:
        """Messages in the segment files: the stored ones plus those retention has hidden
        but trim() has not deleted yet (at most a record's worth per room, once it has run)."""
        self.flush()
        self._sync()
        segments = self._segments_or_closed()
        return sum(
            len(_chunk("", segments.read(place)))
            for place in self._connection().execute("SELECT segment, pos, length FROM records")
        )

    def crash(self) -> None:
        """Drop every unflushed append and let go of the files, as a `kill -9` would (the
        segments keep what was flushed but not yet indexed)."""
        self._clear_pending()
        self._release()

    # -- internals -----------------------------------------------------------------------

    def _clear_pending(self) -> None:
        self._pending.clear()
        self._pending_runs = self._pending_text = 0
        self._pending_room = None

    def _count_floor(self, head: int) -> int:
        """The lowest seq the count limit keeps when the room's head is `head`."""
        return head - self.retain_messages + 1 if self.retain_messages else 1

    def _forget_below(self, room: str, first: int) -> None:
        self._first[room] = first
        self._oldest_ts.pop(room, None)
        tail = self._tails.get(room)
        while tail and tail[0].seq < first:
            self.tail_used -= _message_cost(tail.popleft())

    def _new_tail(
        self, room: str, messages: list[StoredMessage] | None = None
    ) -> deque[StoredMessage]:
        """A tail for `room` (which has none), last in the order of appends."""
        tail = self._tails[room] = deque(messages or (), maxlen=self._tail_size)
        self._tail_order[room] = None
        self._tail_last = room
        return tail

    def _evict_tails(self) -> None:
        """Drop whole tails, least recently appended to first, until they fit the budget."""
        order = self._tail_order
        while self.tail_used > self._tail_budget and order:
            room, _ = order.popitem(last=False)
            self.tail_used -= _tail_cost(self._tails.pop(room))

    def _drop_tail(self, room: str) -> None:
        tail = self._tails.pop(room, None)
        if tail is not None:
            del self._tail_order[room]
            self.tail_used -= _tail_cost(tail)

    def _first_unexpired(
        self, db: sqlite3.Connection, room: str, first: int, head: int, cutoff: int
    ) -> int:
        """The lowest seq at or after which nothing is expired: the prefix of messages older
        than `cutoff` ends there (a clock step backwards cannot punch a hole in the middle)."""
        oldest = self._oldest_ts.get(room)
        if oldest is not None and oldest >= cutoff:
            return first
        places = db.execute(_RECORDS_UNEXPIRED, (room, first, cutoff))
        segments = self._segments_or_closed()
        try:
            for place in places:
                for message in _chunk(room, segments.read(place)):
                    seq, ts = message.seq, message.ts
                    if seq >= first and ts >= cutoff:
                        if seq == first:
                            if len(self._oldest_ts) >= OLDEST_TS_MAX:
                                self._oldest_ts.clear()
                            self._oldest_ts[room] = ts
                        return int(seq)
        finally:
            places.close()
        return head + 1

    def _segments_or_closed(self) -> Segments:
        if self._segments is None:
            raise StoreError(f"the history store in {self.directory} is closed")
        return self._segments

    def _connection(self) -> sqlite3.Connection:
        if self._db is None:
            raise StoreError(f"the history store in {self.directory} is closed")
        return self._db

    @staticmethod
    def _rollback(db: sqlite3.Connection) -> None:
        with contextlib.suppress(sqlite3.Error):
            if db.in_transaction:
                db.execute("ROLLBACK")

    def _release(self) -> None:
        if self._db is not None:
            with contextlib.suppress(sqlite3.Error):
                self._db.close()
            self._db = None
        if self._segments is not None:
            self._segments.close()
            self._segments = None
        if self._lock_fd >= 0:
            os.close(self._lock_fd)  # closing drops the flock
            self._lock_fd = -1
