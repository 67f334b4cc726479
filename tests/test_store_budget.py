"""What a read may cost and what the tails may hold (issue #11): `read` and `latest` stop at a
byte budget, SQLite reads about as many rows as it returns, and the SQLite store's in-memory
tails share one byte budget, the least recently appended to dropped first."""

from __future__ import annotations

import gc
import tempfile
import tracemalloc
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chatctl.store.base import Store, StoredMessage
from chatctl.store.memory import MemoryStore
from chatctl.store.segments import Place
from chatctl.store.sqlite import (
    TAIL_MESSAGE_COST,
    TAIL_ROOM_COST,
    SqliteStore,
)

ROOM = "lobby"
SHM = "/dev/shm" if Path("/dev/shm").is_dir() else None


def size(message: StoredMessage) -> int:
    return len(message.text.encode())


def message(room: str, seq: int, text: str, msg_id: str = "") -> StoredMessage:
    return StoredMessage(room=room, seq=seq, ts=seq, sender="ann", text=text, msg_id=msg_id)


def fill(store: Store, room: str, texts: list[str]) -> None:
    head = store.head(room)
    for i, text in enumerate(texts, head + 1):
        store.append(message(room, i, text))
    store.flush()


@contextmanager
def stores(kind: str, **options: Any) -> Iterator[Store]:
    if kind == "memory":
        yield MemoryStore()
        return
    with tempfile.TemporaryDirectory(dir=SHM) as directory:
        store = SqliteStore(directory, **options)
        try:
            yield store
        finally:
            store.close()


class CountingReads:
    """Counts the records the store reads from its segment files."""

    def __init__(self, store: SqliteStore) -> None:
        self.rows = 0
        segments = store._segments_or_closed()
        read = segments.read

        def counted(place: Place) -> bytes:
            self.rows += 1
            return read(place)

        segments.read = counted  # type: ignore[method-assign]


# -- the byte budget of a read -----------------------------------------------------------------

TEXTS = st.lists(st.text(st.characters(exclude_categories=["Cs"]), max_size=30), max_size=25)


@settings(max_examples=100, deadline=None)
@given(
    kind=st.sampled_from(["memory", "sqlite-tail", "sqlite-sql"]),
    texts=TEXTS,
    after=st.integers(0, 6),
    limit=st.integers(0, 30),
    max_bytes=st.integers(0, 80),
)
def test_property_a_read_stops_at_the_budget_but_never_returns_nothing(
    kind: str, texts: list[str], after: int, limit: int, max_bytes: int
) -> None:
    """`read` and `latest` return the longest run (oldest first for read, newest first for
    latest) whose texts fit in `max_bytes`, and at least one message when there is one."""
    tail = 256 if kind == "sqlite-tail" else 1
    with stores(kind.partition("-")[0], tail=tail) as store:
        fill(store, ROOM, texts)
        full = store.read(ROOM, after, limit).messages
        cut = store.read(ROOM, after, limit, max_bytes).messages
        assert cut == full[: len(cut)]
        assert bool(cut) == bool(full)
        assert len(cut) <= 1 or sum(map(size, cut)) <= max_bytes
        if len(cut) < len(full):
            assert sum(map(size, full[: len(cut) + 1])) > max_bytes

        newest = store.latest(ROOM, limit)
        kept = store.latest(ROOM, limit, max_bytes)
        assert kept == newest[len(newest) - len(kept) :]
        assert bool(kept) == bool(newest)
        assert len(kept) <= 1 or sum(map(size, kept)) <= max_bytes
        if len(kept) < len(newest):
            assert sum(map(size, newest[-len(kept) - 1 :])) > max_bytes


def test_sqlite_reads_about_as_many_records_as_the_budget_allows(tmp_path: Path) -> None:
    """1,000 messages of 1 KB, none of them in a tail, in records of at most 64 KiB of text:
    asking for all of them within 10 KB reads one record (and at most one more), not all."""
    store = SqliteStore(tmp_path, tail=1)
    try:
        fill(store, ROOM, [f"{i:04d}" + "x" * 996 for i in range(1000)])
        assert store.stored_rows() == 1000  # all indexed
        (records,) = store._connection().execute("SELECT count(*) FROM records").fetchone()
        assert records >= 1000 * 1000 // (64 * 1024 + 1000)
        rows = CountingReads(store)

        page = store.read(ROOM, 0, 1000, max_bytes=10_000)
        assert [m.seq for m in page.messages] == list(range(1, 11))
        assert 1 <= rows.rows <= 2

        rows.rows = 0
        newest = store.latest(ROOM, 1000, max_bytes=10_000)
        assert [m.seq for m in newest] == list(range(991, 1001))
        assert 1 <= rows.rows <= 2

        rows.rows = 0  # the counter sees what an unbudgeted read costs: every record
        assert len(store.read(ROOM, 0, 1000).messages) == 1000
        assert rows.rows == records
    finally:
        store.close()


# -- the tails' byte budget --------------------------------------------------------------------


def tail_seqs(store: SqliteStore) -> dict[str, list[int]]:
    return {room: [m.seq for m in tail] for room, tail in store._tails.items() if tail}


def test_tails_share_one_budget_and_the_least_recently_appended_go_first(
    tmp_path: Path,
) -> None:
    one = TAIL_ROOM_COST + 2 * (TAIL_MESSAGE_COST + 10)  # a tail of two 10-byte messages
    store = SqliteStore(tmp_path, tail=2, tail_bytes=3 * one)
    try:
        for room in ("a", "b", "c"):
            fill(store, room, ["0123456789"] * 2)
        assert tail_seqs(store) == {"a": [1, 2], "b": [1, 2], "c": [1, 2]}
        assert store.tail_used == 3 * one

        fill(store, "a", ["0123456789"])  # a is now the most recently appended to
        fill(store, "d", ["0123456789"])  # over the budget: b goes, not a
        assert tail_seqs(store) == {"a": [2, 3], "c": [1, 2], "d": [1]}
        assert store.tail_used <= 3 * one

        # b starts a new tail, with nothing before its newest message; c goes.
        fill(store, "b", ["0123456789"])
        assert tail_seqs(store) == {"a": [2, 3], "d": [1], "b": [3]}
        # Reads are the same with or without a tail.
        for room, head in (("a", 3), ("b", 3), ("c", 2), ("d", 1)):
            assert [m.seq for m in store.read(room, 0, 10).messages] == list(range(1, head + 1))
            assert [m.seq for m in store.latest(room, 10)] == list(range(1, head + 1))
    finally:
        store.close()


def test_latest_refills_tails_that_fit_first_in_line_to_go(tmp_path: Path) -> None:
    """After a restart the tails are empty: `latest` refills them from SQL while they fit in
    the budget, and those go before the tails of rooms appended to."""
    one = TAIL_ROOM_COST + 2 * (TAIL_MESSAGE_COST + 10)
    store = SqliteStore(tmp_path, tail=2, tail_bytes=3 * one)
    for room in ("a", "b"):
        fill(store, room, ["0123456789"] * 2)
    store.close()
    store = SqliteStore(tmp_path, tail=2, tail_bytes=3 * one)
    try:
        assert tail_seqs(store) == {}
        for room in ("a", "b"):
            assert [m.seq for m in store.latest(room, 2)] == [1, 2]
        assert tail_seqs(store) == {"a": [1, 2], "b": [1, 2]}
        fill(store, "c", ["0123456789"] * 2)
        fill(store, "d", ["0123456789"])  # over the budget: a refilled tail goes, not c
        assert set(tail_seqs(store)) == {"a", "c", "d"}
        assert [m.seq for m in store.latest("b", 2)] == [1, 2]  # read, but it does not fit
        assert set(tail_seqs(store)) == {"a", "c", "d"}
        assert store.tail_used <= 3 * one
    finally:
        store.close()


@pytest.mark.parametrize(
    ("text", "msg_id"),
    [
        ("x" * 100, "c1-000001"),
        ("y", ""),
        ("é" * 50, "c1-000001"),
        ("\U0001f600", "\U00010000" * 64),  # the most memory per character charged
    ],
    ids=["ascii", "tiny", "latin-1", "astral"],
)
def test_the_tail_cost_is_an_upper_bound_of_the_memory_it_frees(
    tmp_path: Path, text: str, msg_id: str
) -> None:
    """The module docstring's formula: what dropping every tail frees, measured by
    tracemalloc, is at most what the tails were charged (and not absurdly less)."""
    store = SqliteStore(tmp_path, tail=64, retain_messages=0)
    tracemalloc.start()  # it sees only what is freed of what it saw allocated
    try:
        for seq in range(1, 81):  # full tails; seq and ts past the small-int cache
            for r in range(50):
                store.append(
                    message(f"room-{r}", seq, text + str(seq), msg_id and msg_id + str(seq))
                )
        store.stored_rows()  # flushed and in SQLite: only the tails hold the messages
        gc.collect()
        before = tracemalloc.get_traced_memory()[0]
        charged = store.tail_used
        store._tail_budget = 0
        store._evict_tails()
        gc.collect()
        freed = before - tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
        store.close()
    assert store.tail_used == 0 and not store._tails
    assert 0.25 * charged < freed <= charged


def test_memory_store_lets_go_of_a_room_that_retention_emptied() -> None:
    store = MemoryStore(retain_age=1.0)
    fill(store, ROOM, ["a", "b"])
    assert store.trim(10_000) == 2
    assert ROOM not in store._rooms
    assert store.head(ROOM) == 2
    assert store.read(ROOM, 0, 10).gap == (1, 2)
    fill(store, ROOM, ["c"])
    assert [m.text for m in store.read(ROOM, 0, 10).messages] == ["c"]
