"""The history stores against a plain in-memory model: random appends, flushes, trims, reads
(with and without a byte budget), resends, clean restarts and crashes (a crash loses exactly
the appends not yet flushed); for SQLite, the in-memory tails under a tiny byte budget."""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from chatctl.store import segments, sqlite
from chatctl.store.base import ReadResult, Store, StoredMessage
from chatctl.store.memory import MemoryStore
from chatctl.store.sqlite import TAIL_BYTES, SqliteStore, _tail_cost
from tests.store_files import check_only_live_bytes

ROOMS = st.sampled_from(["lobby", "dev", "ops"])
KEYS = st.sampled_from(["key-a", "key-b"])
# What makes texts differ in size, and in bytes per character.
PADDING = st.sampled_from(["", "é", "x" * 30, "ü" * 9, "🙂" * 4])
BUDGETS = st.none() | st.integers(0, 80)


def within(messages: list[StoredMessage], max_bytes: int | None) -> list[StoredMessage]:
    """The model of a byte budget: the longest prefix whose texts (UTF-8) fit in it, and
    never nothing when there is something."""
    if max_bytes is None:
        return messages
    totals = itertools.accumulate(len(m.text.encode()) for m in messages)
    return messages[: max(sum(1 for total in totals if total <= max_bytes), 1)]


@dataclass
class Model:
    """What a correct store holds. `log[room][i]` has seq i + 1; nothing is ever removed from
    it except by a crash. The count limit hides old messages at once; the age limit when
    trim() runs (`trimmed`: the first seq the last trim kept)."""

    retain_messages: int
    retain_age: float
    log: dict[str, list[StoredMessage]] = field(default_factory=dict)
    trimmed: dict[str, int] = field(default_factory=dict)
    durable: dict[str, int] = field(default_factory=dict)  # highest flushed seq

    def head(self, room: str) -> int:
        return len(self.log.get(room, ()))

    def first(self, room: str) -> int:
        by_count = self.head(room) - self.retain_messages + 1 if self.retain_messages else 1
        return max(self.trimmed.get(room, 1), by_count)

    def stored(self, room: str) -> list[StoredMessage]:
        return self.log.get(room, [])[self.first(room) - 1 :]

    def count(self) -> int:
        return sum(len(self.stored(room)) for room in self.log)

    def append(self, message: StoredMessage) -> None:
        self.log.setdefault(message.room, []).append(message)

    def flush(self) -> None:
        self.durable = {room: len(log) for room, log in self.log.items()}

    def crash(self, heads: dict[str, int]) -> list[StoredMessage]:
        """A crash keeps everything flushed; of the rest, the store may keep a prefix (it may
        commit early, e.g. to answer a read): `heads` says what it kept."""
        lost: list[StoredMessage] = []
        for room, log in list(self.log.items()):
            keep = heads.get(room, 0)
            assert self.durable.get(room, 0) <= keep <= len(log)
            lost += log[keep:]
            del log[keep:]
            if not log:
                del self.log[room]
                self.trimmed.pop(room, None)
        return lost

    def trim(self, now_ms: int) -> int:
        if not (self.retain_messages or self.retain_age):
            return 0
        self.flush()
        removed = 0
        for room, log in self.log.items():
            before = first = self.first(room)
            if self.retain_age:
                cutoff = now_ms - int(self.retain_age * 1000)
                while first <= len(log) and log[first - 1].ts < cutoff:
                    first += 1
            self.trimmed[room] = first
            removed += first - before
        return removed

    def read(self, room: str, after: int, limit: int, max_bytes: int | None) -> ReadResult:
        head = self.head(room)
        if after >= head:
            return ReadResult([])
        first = self.first(room)
        gap = (after + 1, first - 1) if after + 1 < first else None
        start = max(after + 1, first)
        found = self.log[room][start - 1 : start - 1 + max(limit, 0)]
        return ReadResult(within(found, max_bytes), gap)

    def latest(self, room: str, limit: int, max_bytes: int | None) -> list[StoredMessage]:
        stored = self.stored(room)
        newest_first = stored[::-1][: max(limit, 0)]
        return within(newest_first, max_bytes)[::-1]

    def find(self, sender_key: str, msg_id: str) -> StoredMessage | None:
        for room in self.log:
            for m in self.stored(room):
                if msg_id and (m.sender_key, m.msg_id) == (sender_key, msg_id):
                    return m
        return None


class StoreMachine(RuleBasedStateMachine):
    persistent = False

    def __init__(self) -> None:
        super().__init__()
        self.now = 1_000_000
        self.next_id = 0
        self.lost_ids: list[tuple[str, str]] = []
        self.model = Model(0, 0.0)
        self.store: Store = MemoryStore()

    def open(self) -> Store:
        raise NotImplementedError

    @initialize(retain_messages=st.sampled_from([0, 3, 7]), retain_age=st.sampled_from([0.0, 0.05]))
    def start(self, retain_messages: int, retain_age: float) -> None:
        self.model = Model(retain_messages, retain_age)
        self.store = self.open()

    @rule(
        room=ROOMS,
        key=KEYS,
        with_id=st.booleans(),
        action=st.booleans(),
        jitter=st.integers(-5, 0),
        padding=PADDING,
    )
    def append(
        self, room: str, key: str, with_id: bool, action: bool, jitter: int, padding: str
    ) -> None:
        msg_id = ""
        if with_id:
            self.next_id += 1
            msg_id = f"m{self.next_id}"
        self._append(room, key, msg_id, action, self.now + jitter, padding)

    @precondition(lambda self: bool(self.lost_ids))
    @rule(data=st.data(), room=ROOMS)
    def resend_lost(self, data: st.DataObject, room: str) -> None:
        """A sender that never saw the ack sends again: the store must not know the id."""
        key, msg_id = data.draw(st.sampled_from(self.lost_ids))
        assert self.store.find(key, msg_id) is None
        self.lost_ids.remove((key, msg_id))
        self._append(room, key, msg_id, False, self.now)

    def _append(
        self, room: str, key: str, msg_id: str, action: bool, ts: int, padding: str = ""
    ) -> None:
        assert self.store.head(room) == self.model.head(room)
        message = StoredMessage(
            room=room,
            seq=self.model.head(room) + 1,
            ts=ts,
            sender=key.upper(),
            text=f"text {room} {self.model.head(room) + 1}{padding}",
            action=action,
            sender_key=key,
            msg_id=msg_id,
        )
        self.store.append(message)
        self.model.append(message)

    @rule()
    def flush(self) -> None:
        self.store.flush()
        self.model.flush()

    @rule(ms=st.integers(0, 40))
    def tick(self, ms: int) -> None:
        self.now += ms

    @rule()
    def trim(self) -> None:
        removed = 0
        for _ in range(1000):  # a persistent store trims in bounded batches
            step = self.store.trim(self.now)
            if not step:
                break
            removed += step
        self.check_trimmed(removed, self.model.trim(self.now))

    def check_trimmed(self, removed: int, expired: int) -> None:
        """`removed`: what the store's trim() calls reported; `expired`: what aged out."""
        raise NotImplementedError

    @rule(room=ROOMS, data=st.data(), limit=st.integers(0, 9), max_bytes=BUDGETS)
    def read(self, room: str, data: st.DataObject, limit: int, max_bytes: int | None) -> None:
        after = data.draw(st.integers(0, self.model.head(room) + 2), label="after")
        expected = self.model.read(room, after, limit, max_bytes)
        assert self.store.read(room, after, limit, max_bytes) == expected
        if max_bytes is None:
            assert self.store.read(room, after, limit) == expected

    @rule(room=ROOMS, limit=st.integers(-1, 12), max_bytes=BUDGETS)
    def latest(self, room: str, limit: int, max_bytes: int | None) -> None:
        expected = self.model.latest(room, limit, max_bytes)
        assert self.store.latest(room, limit, max_bytes) == expected
        if max_bytes is None:
            assert self.store.latest(room, limit) == expected

    @rule(key=KEYS, data=st.data())
    def find(self, key: str, data: st.DataObject) -> None:
        msg_id = data.draw(st.sampled_from(["", *(f"m{i}" for i in range(self.next_id + 2))]))
        assert self.store.find(key, msg_id) == self.model.find(key, msg_id)

    @precondition(lambda self: self.persistent)
    @rule()
    def restart(self) -> None:
        self.store.close()
        self.model.flush()
        self.store = self.open()

    @precondition(lambda self: self.persistent)
    @rule()
    def crash(self) -> None:
        assert isinstance(self.store, SqliteStore)
        self.store.crash()
        self.store = self.open()
        kept = {room: self.store.head(room) for room in self.model.log}
        self.lost_ids += [(m.sender_key, m.msg_id) for m in self.model.crash(kept) if m.msg_id]

    @invariant()
    def heads(self) -> None:
        assert sorted(self.store.rooms()) == sorted(self.model.log)
        for room in ("lobby", "dev", "ops"):
            assert self.store.head(room) == self.model.head(room)

    @invariant()
    def tails(self) -> None:
        """SQLite's tails: each a run of the newest stored messages (possibly empty), their
        cost counted exactly and within the budget, kept in one order of appends."""
        store = self.store
        if not isinstance(store, SqliteStore):
            return
        assert set(store._tails) == set(store._tail_order)
        assert store.tail_used == sum(_tail_cost(tail) for tail in store._tails.values())
        assert store.tail_used <= store._tail_budget
        for room, tail in store._tails.items():
            stored = self.model.stored(room)
            assert list(tail) == (stored[len(stored) - len(tail) :] if tail else [])
        if store._tail_last in store._tails:
            assert next(reversed(store._tail_order)) == store._tail_last

    def teardown(self) -> None:
        self.store.close()


class MemoryStoreMachine(StoreMachine):
    def check_trimmed(self, removed: int, expired: int) -> None:
        assert removed == expired

    def open(self) -> Store:
        return MemoryStore(
            retain_messages=self.model.retain_messages, retain_age=self.model.retain_age
        )


class SqliteStoreMachine(StoreMachine):
    persistent = True
    sync_rows = 3  # rows journaled before they go into SQLite
    tail_bytes = 4000  # room for a tail or two: tails are dropped and rebuilt all the time

    def __init__(self) -> None:
        # tmpfs when there is one: this test checks semantics; fsync speed is not its business.
        shm = "/dev/shm" if os.path.isdir("/dev/shm") else None
        self.directory = tempfile.mkdtemp(prefix="chatctl-store-", dir=shm)
        super().__init__()

    def open(self) -> Store:
        # Tiny tail, journal batch, trim batch and filter limits so that every path (SQL
        # reads, SQL resend lookups, journal replay after a crash, partial trims, the resend
        # filter's replacement) runs within a few steps.
        return SqliteStore(
            self.directory,
            retain_messages=self.model.retain_messages,
            retain_age=self.model.retain_age,
            tail=3,
            tail_bytes=self.tail_bytes,
            sync_rows=self.sync_rows,
            trim_batch=2,
            filter_floor=4,  # rebuild the resend filter early and often, in chunks of 2
            filter_chunk=2,
        )

    def check_trimmed(self, removed: int, expired: int) -> None:
        """Rows leave the database only in trim(): afterwards no chunk and no resend row is
        wholly hidden (a chunk holding a visible message stays whole; trim flushes first;
        without retention it is a no-op)."""
        del expired
        if not (self.model.retain_messages or self.model.retain_age):
            assert removed == 0
            return
        store = self.store
        assert isinstance(store, SqliteStore)
        assert store.stored_rows() >= self.model.count()
        db = store._connection()
        for room, last in db.execute(
            "SELECT room, last FROM records UNION ALL SELECT room, last FROM sent"
        ):
            assert last >= self.model.first(room)
        # Trimmed history is gone from the files.
        places = db.execute("SELECT segment, pos, length FROM records").fetchall()
        check_only_live_bytes(Path(self.directory), places)

    def teardown(self) -> None:
        try:
            super().teardown()
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)


class SqliteStoreNoJournalMachine(SqliteStoreMachine):
    sync_rows = 1  # every flush goes straight into SQLite
    tail_bytes = TAIL_BYTES  # the default: no tail is ever dropped


class SqliteStoreSmallSegmentsMachine(SqliteStoreMachine):
    """Segments of 256 bytes, and every trim moves whatever is alive out of the older ones:
    rolls, deletions and moves (and kills in between) at most steps."""

    def __init__(self) -> None:
        self._patches: list[Any] = [
            mock.patch.object(segments, "SEGMENT_BYTES", 256),
            mock.patch.object(sqlite, "COMPACT_ABOVE", 0),
            mock.patch.object(sqlite, "COMPACT_LIVE", 1.0),
        ]
        for patch in self._patches:
            patch.start()
        super().__init__()

    def teardown(self) -> None:
        try:
            super().teardown()
        finally:
            for patch in self._patches:
                patch.stop()


TestMemoryStoreStateful = MemoryStoreMachine.TestCase
TestSqliteStoreStateful = SqliteStoreMachine.TestCase
TestSqliteStoreNoJournalStateful = SqliteStoreNoJournalMachine.TestCase
TestSqliteStoreSmallSegmentsStateful = SqliteStoreSmallSegmentsMachine.TestCase
