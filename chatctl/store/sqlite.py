"""Durable history: SQLite (stdlib sqlite3, WAL mode) in one data directory, fed through a
small append-only journal.

Writes: `append` only buffers. `flush` (once per loop turn, before any ack is written) makes
the batch durable with ONE `write()` of the batch to DIR/journal: once that returns, the data
is in the kernel's page cache and survives a `kill -9` of the server, exactly like a commit in
WAL mode with synchronous=NORMAL, at a fraction of the cost (a small SQLite commit writes ~10
page frames). Journaled rows go into SQLite in large transactions (every `sync_rows` rows, on
`trim`, before a read that needs SQL, at close) and the journal is then emptied; rows it still
holds at start-up (after a kill) are replayed with INSERT OR IGNORE, so a kill between the
SQLite commit and emptying the journal is harmless. A torn last journal line was never
acknowledged (its write had not returned) and is dropped. An OS crash or power cut may lose
the last writes (no fsync), as with synchronous=NORMAL; synchronous="FULL" fsyncs the journal
at every flush (about 3.6 ms on the development machine). docs/history.md explains the choice.

Reads: a room keeps a bounded in-memory tail, a contiguous run of its newest messages
(possibly empty), so joins and short resumes never touch SQL. Older reads go to the (room,
seq) primary key, row by row from the cursor, and stop as soon as `max_bytes` of text is
spent: a history request reads about what it may send, not `limit` rows.

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
cache holds at most OLDEST_TS_MAX rooms, the resend dict at most `sync_rows` messages, the
resend filter ~16 bits per stored id (512 KiB at least), and SQLite's page cache 16 MiB. So 10,000 rooms cost
~2 MiB plus at most 32 MiB of tails, whatever is said in them.

Retention: the count limit takes effect at once (a read past it reports the gap, exactly as
MemoryStore does), the age limit when `trim` runs; either way rows leave the database only in
`trim` (called from a timer), by primary-key range and in bounded batches so that one call
never stalls the loop. The `rooms` table keeps each room's head so that sequence numbers
continue after everything was trimmed or the server restarted.

The journal's format is in journal.py and the resend filter in idfilter.py; what stays here is
one cohesive thing, the SQLite side of the Store interface (about 700 lines).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
import zlib
from collections import OrderedDict, deque
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Literal

from chatctl.store import datadir
from chatctl.store.base import ReadResult, StoredMessage, sender_key_of, take
from chatctl.store.errors import StoreError
from chatctl.store.idfilter import IdFilter
from chatctl.store.journal import JOURNAL_NAME, Journal, Row

# 1: resend index on (sender_key, msg_id); 2: on id_hash; 3: on key_hash (see _SCHEMA);
# 4: sender_key holds sender_key_of(token), not the token.
SCHEMA_VERSION = 4
DB_NAME = "history.sqlite3"
LOCK_NAME = "lock"
# The in-memory tails: their budget, and what each costs against it (see the module's
# docstring): a deque with its first block and two dict entries; a message's tuple, its seq
# and ts, its slot in the deque, and the headers of its text and msg_id strings.
TAIL_BYTES = 32 * 1024 * 1024
TAIL_ROOM_COST = 1024
TAIL_MESSAGE_COST = 384
OLDEST_TS_MAX = 65_536

_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    room TEXT NOT NULL,
    seq INTEGER NOT NULL,
    ts INTEGER NOT NULL,
    sender TEXT NOT NULL,
    text TEXT NOT NULL,
    action INTEGER NOT NULL,
    sender_key TEXT NOT NULL,
    msg_id TEXT NOT NULL,
    key_hash INTEGER NOT NULL,
    PRIMARY KEY (room, seq)
) WITHOUT ROWID;
-- Resend detection, for messages with a client id. A 32-bit hash of the sender key keeps the
-- entries small; keeping msg_id itself keeps a sender's ids (usually a counter) side by side,
-- so inserts and trims touch a few hot pages, not random ones all over a large index.
CREATE INDEX IF NOT EXISTS messages_resend ON messages (key_hash, msg_id) WHERE msg_id != '';
-- One row per room: the head survives the trimming of every message.
CREATE TABLE IF NOT EXISTS rooms (room TEXT PRIMARY KEY, head INTEGER NOT NULL) WITHOUT ROWID;
"""
_COLUMNS = "room, seq, ts, sender, text, action, sender_key, msg_id"
_INSERT = (
    f"INSERT OR IGNORE INTO messages ({_COLUMNS}, key_hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def _migrate(db: sqlite3.Connection, version: int) -> None:
    """Bring schema 1, 2 or 3 to 4, in place. 1 and 2 differ from 3 only in the resend index:
    add and fill key_hash (the index itself is created with the schema). 4 replaces every
    stored resume token by its hash; secure_delete and a checkpoint leave no copy of a token
    in the file's free space or in the WAL."""
    db.create_function("key_hash", 1, key_hash, deterministic=True)
    db.create_function("sender_key_of", 1, sender_key_of, deterministic=True)
    steps = []
    if version == 1:
        steps.append("DROP INDEX IF EXISTS messages_dedupe;")
    elif version == 2:
        steps.append(
            "DROP INDEX IF EXISTS messages_resend; ALTER TABLE messages DROP COLUMN id_hash;"
        )
    if version < 3:
        steps.append("ALTER TABLE messages ADD COLUMN key_hash INTEGER NOT NULL DEFAULT 0;")
    steps.append(
        "UPDATE messages SET sender_key = sender_key_of(sender_key) WHERE sender_key != '';"
        " UPDATE messages SET key_hash = key_hash(sender_key) WHERE msg_id != '';"
    )
    db.execute("PRAGMA secure_delete=ON")
    db.executescript(f"BEGIN; {' '.join(steps)} COMMIT;")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.execute("PRAGMA secure_delete=OFF")


def _rehashed(row: Row) -> Row:
    room, seq, ts, sender, text, action, token, msg_id, _ = row
    key = sender_key_of(token) if token else ""
    return (room, seq, ts, sender, text, action, key, msg_id, key_hash(key) if msg_id else 0)


def key_hash(sender_key: str) -> int:
    """Stable across processes (unlike hash()): it is stored."""
    return zlib.crc32(sender_key.encode("utf-8", "surrogatepass"))


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


def _messages(
    rows: Iterable[tuple[str, int, int, str, str, int, str, str]],
) -> Iterator[StoredMessage]:
    """Messages of `rows`, in their order, sharing one string object for each room, sender
    and sender key among them (as messages from the hub do: a tail holds many)."""
    shared: dict[str, str] = {}
    share = shared.setdefault
    for room, seq, ts, sender, text, action, sender_key, msg_id in rows:
        if len(shared) > 4096:
            shared.clear()
        yield StoredMessage(
            share(room, room),
            seq,
            ts,
            share(sender, sender),
            text,
            bool(action),
            share(sender_key, sender_key),
            msg_id,
        )


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
        sync_rows: int = 2048,
        trim_batch: int = 20_000,
        filter_floor: int = 1 << 20,
        filter_chunk: int = 50_000,
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
        self._pending: list[Row] = []  # appended, not yet durable
        self._journaled: list[Row] = []  # durable in the journal, not yet in SQLite
        self._new_rooms: list[str] = []
        self._appended_since_trim = 0
        # Resend detection without SQL for the common case, a new id: the ids not yet in
        # SQLite answer from a dict, and a filter of every stored id says for certain when an
        # id is new; only a "maybe" (a real resend, or ~0.3%) asks SQL.
        self._recent_ids: dict[tuple[str, str], StoredMessage] = {}
        self._stored_ids = IdFilter(1 << 18)
        # The filter's successor while it is being built, and what its scan still has to read:
        # (room, seq reached, head when the scan began) per room.
        self._next_ids: IdFilter | None = None
        self._to_scan: list[tuple[str, int, int]] = []
        self._lock_fd = -1
        self._journal: Journal | None = None
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
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version in (1, 2, 3):
                _migrate(db, version)
            elif version not in (0, SCHEMA_VERSION):
                raise StoreError(
                    f"{path} has history schema version {version}; this chatctl reads {SCHEMA_VERSION}"
                )
            db.executescript(f"BEGIN; {_SCHEMA} PRAGMA user_version={SCHEMA_VERSION}; COMMIT;")
            self._replay_journal(db, tokens_in_clear=version in (1, 2, 3))
            self._load(db)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open history database {path}: {exc}") from None

    def _replay_journal(self, db: sqlite3.Connection, *, tokens_in_clear: bool) -> None:
        """Put what the journal holds (written before a kill) into SQLite, then empty it. A
        journal left by a schema-3 server holds tokens, not their hashes."""
        self._journal = Journal.open(self.directory / JOURNAL_NAME)
        rows, torn = self._journal.replay()
        if tokens_in_clear:
            rows = [_rehashed(row) for row in rows]
        if torn:
            self.notes.append(
                f"{self._journal.path}: dropped {torn} bytes of a write cut short at the end "
                "(a kill or crash during the write; it was never acknowledged)"
            )
        if rows:
            db.execute("BEGIN")
            db.executemany(_INSERT, rows)
            db.executemany(
                "INSERT OR IGNORE INTO rooms (room, head) VALUES (?, 0)",
                [(room,) for room in {row[0] for row in rows}],
            )
            db.execute("COMMIT")
        self._journal.empty()

    def _load(self, db: sqlite3.Connection) -> None:
        for room, head in db.execute("SELECT room, head FROM rooms").fetchall():
            low, high = db.execute(
                "SELECT min(seq), max(seq) FROM messages WHERE room = ?", (room,)
            ).fetchone()
            top = max(head, high or 0)
            self._heads[room] = top
            self._kept[room] = low if low is not None else top + 1
            self._first[room] = max(self._kept[room], self._count_floor(top))
        (count,) = db.execute("SELECT count(*) FROM messages WHERE msg_id != ''").fetchone()
        self._stored_ids = IdFilter(count + (1 << 18))
        add = self._stored_ids.add
        for key, msg_id in db.execute("SELECT sender_key, msg_id FROM messages WHERE msg_id != ''"):
            add(key, msg_id)

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
        key = message.sender_key
        msg_id = message.msg_id
        self._pending.append(
            (
                room,
                seq,
                message.ts,
                message.sender,
                text,
                int(message.action),
                key,
                msg_id,
                key_hash(key) if msg_id else 0,
            )
        )
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
            self._forget_below(room, seq - retain + 1)
        if msg_id:
            self._recent_ids[(key, msg_id)] = message
            self._stored_ids.add(key, msg_id)
            if self._next_ids is not None:
                self._next_ids.add(key, msg_id)

    def flush(self) -> None:
        if not self._pending:
            return
        # Nothing of this batch may be acknowledged if this raises: the server must stop.
        self._journal_or_closed().append(self._pending, fsync=self._fsync)
        self._journaled += self._pending
        self._appended_since_trim += len(self._pending)
        self._pending.clear()
        if len(self._journaled) >= self._sync_rows:
            self._sync()

    def _sync(self) -> None:
        """Move the journaled rows into SQLite (one transaction), then empty the journal."""
        if not self._journaled:
            return
        db = self._connection()
        try:
            db.execute("BEGIN")
            db.executemany(_INSERT, self._journaled)
            if self._new_rooms:
                db.executemany(
                    "INSERT OR IGNORE INTO rooms (room, head) VALUES (?, 0)",
                    [(room,) for room in self._new_rooms],
                )
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback(db)
            raise StoreError(f"cannot write history to {self.directory}: {exc}") from None
        self._journal_or_closed().empty()
        self._journaled.clear()
        self._new_rooms.clear()
        self._recent_ids.clear()

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
        found = self._select(
            f"SELECT {_COLUMNS} FROM messages WHERE room = ? AND seq >= ? ORDER BY seq LIMIT ?",
            (room, start, limit),
            max_bytes,
        )
        return ReadResult(found, gap)

    def latest(self, room: str, limit: int, max_bytes: int | None = None) -> list[StoredMessage]:
        head = self._heads.get(room, 0)
        stored = head - self._first.get(room, 1) + 1
        limit = min(limit, stored)
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
        found = self._select(
            f"SELECT {_COLUMNS} FROM messages WHERE room = ? ORDER BY seq DESC LIMIT ?",
            (room, limit),
            max_bytes,
        )
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
        self._new_tail(room, newest)
        self._tail_order.move_to_end(room, last=False)
        self._tail_last = "" if last == room else last
        self.tail_used += cost

    def _select(
        self, sql: str, parameters: tuple[str, int] | tuple[str, int, int], max_bytes: int | None
    ) -> list[StoredMessage]:
        """The messages `sql` selects, read row by row only as far as `take` needs them."""
        self.flush()  # the range may reach into rows not in SQLite yet
        self._sync()
        cursor = self._connection().execute(sql, parameters)
        try:
            return take(_messages(cursor), max_bytes)
        finally:
            cursor.close()

    def find(self, sender_key: str, msg_id: str) -> StoredMessage | None:
        if not msg_id:
            return None
        known = self._recent_ids.get((sender_key, msg_id))
        if known is not None:
            return known if known.seq >= self._first[known.room] else None
        if not self._stored_ids.may_contain(sender_key, msg_id):
            return None
        # Every row not in SQLite yet is in _recent_ids, so SQL alone is exact here.
        row = (
            self._connection()
            .execute(
                f"SELECT {_COLUMNS} FROM messages WHERE key_hash = ? AND msg_id = ?"
                " AND msg_id != '' AND sender_key = ? LIMIT 1",
                (key_hash(sender_key), msg_id, sender_key),
            )
            .fetchone()
        )
        if row is None:
            return None
        [found] = _messages((row,))
        return found if found.seq >= self._first[found.room] else None

    def trim(self, now_ms: int) -> int:
        """Apply retention; delete at most `trim_batch` rows more than were appended since the
        last call (so deletion keeps pace with any ingest rate while a backlog drains in
        bounded steps) and return how many were deleted."""
        if not (self.retain_messages or self.retain_age):
            return 0
        self.flush()
        self._sync()
        db = self._connection()
        cutoff = now_ms - int(self.retain_age * 1000) if self.retain_age else None
        budget = self._trim_batch + self._appended_since_trim
        self._appended_since_trim = 0
        removed = 0
        try:
            db.execute("BEGIN")
            for room, head in self._heads.items():
                first = self._first[room]
                if cutoff is not None and first <= head:
                    target = self._first_unexpired(db, room, first, head, cutoff)
                    if target > first:
                        self._forget_below(room, target)
                kept = self._kept[room]
                upto = min(self._first[room], kept + budget)
                if upto <= kept:
                    continue
                db.execute("DELETE FROM messages WHERE room = ? AND seq < ?", (room, upto))
                db.execute("INSERT OR REPLACE INTO rooms (room, head) VALUES (?, ?)", (room, head))
                self._kept[room] = upto
                removed += upto - kept
                budget -= upto - kept
                if budget <= 0:
                    break
            db.execute("COMMIT")
            self._refresh_ids(db)
        except sqlite3.Error as exc:
            self._rollback(db)
            raise StoreError(f"cannot trim history in {self.directory}: {exc}") from None
        return removed

    def _refresh_ids(self, db: sqlite3.Connection) -> None:
        """Retention never takes ids out of the resend filter, so a busy server's filter would
        grow for ever: once it has taken 4 times the stored rows, build a successor from the
        database, a chunk per trim() call, while new ids go into both; then swap. The scan
        stops at each room's head when it began: later ids went into the successor already."""
        if self._next_ids is None:
            stored = sum(head - self._kept[room] + 1 for room, head in self._heads.items())
            if self._stored_ids.count <= max(4 * stored, self._filter_floor):
                return
            # trim() has just moved every journaled row into SQLite: the scan sees them all.
            self._next_ids = IdFilter(stored + (1 << 18))
            self._to_scan = [(room, 0, head) for room, head in self._heads.items()]
        budget = self._filter_chunk
        add = self._next_ids.add
        while self._to_scan and budget > 0:
            room, after, until = self._to_scan.pop()
            rows = db.execute(
                "SELECT seq, sender_key, msg_id FROM messages"
                " WHERE room = ? AND seq > ? AND seq <= ? ORDER BY seq LIMIT ?",
                (room, after, until, budget),
            ).fetchall()
            for _, key, msg_id in rows:
                if msg_id:
                    add(key, msg_id)
            budget -= len(rows)
            if budget <= 0 and rows:
                self._to_scan.append((room, rows[-1][0], until))
        if not self._to_scan:
            self._stored_ids, self._next_ids = self._next_ids, None

    def close(self) -> None:
        if self._db is not None:
            try:
                self.flush()
                self._sync()
            finally:
                self._release()

    # -- beyond the interface ----------------------------------------------------------------

    def stored_rows(self) -> int:
        """Rows in the database file: the stored messages plus those retention has hidden
        but trim() has not deleted yet."""
        self.flush()
        self._sync()
        (count,) = self._connection().execute("SELECT count(*) FROM messages").fetchone()
        return int(count)

    def crash(self) -> None:
        """Drop every unflushed append and let go of the files, as a `kill -9` would (the
        journal keeps what was flushed but not yet in SQLite)."""
        self._pending.clear()
        self._release()

    # -- internals -----------------------------------------------------------------------

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
        row = db.execute(
            "SELECT seq, ts FROM messages WHERE room = ? AND seq >= ? AND ts >= ?"
            " ORDER BY seq LIMIT 1",
            (room, first, cutoff),
        ).fetchone()
        if row is None:
            return head + 1
        seq, ts = row
        if seq == first:
            if len(self._oldest_ts) >= OLDEST_TS_MAX:
                self._oldest_ts.clear()
            self._oldest_ts[room] = ts
        return int(seq)

    def _journal_or_closed(self) -> Journal:
        if self._journal is None:
            raise StoreError(f"the history store in {self.directory} is closed")
        return self._journal

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
        if self._journal is not None:
            self._journal.close()
            self._journal = None
        if self._lock_fd >= 0:
            os.close(self._lock_fd)  # closing drops the flock
            self._lock_fd = -1
