"""Defects found reviewing schema 7 of the SQLite store, each shown by the files a real store
leaves behind (no mocks: a write is made to fail with RLIMIT_FSIZE, as a full disk would)."""

from __future__ import annotations

import marshal
import resource
import signal
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from chatctl.store.base import StoredMessage, sender_key_of
from chatctl.store.errors import StoreError
from chatctl.store.journal import JOURNAL_NAME
from chatctl.store.sqlite import DB_NAME, SqliteStore
from tests.store_files import record
from tests.test_store_schema import VERSION_3, VERSION_4

SEGMENT = "messages-000001.log"


def message(seq: int, room: str = "lobby", key: str = "k") -> StoredMessage:
    return StoredMessage(room, seq, seq, "ann", f"{seq:>100}", False, key, f"{room}-{seq}")


@contextmanager
def files_capped_at(size: int) -> Iterator[None]:
    """No file of this process may grow past `size` bytes: a write past it is cut short, the
    next one fails (EFBIG), like a disk that fills up in the middle of a write."""
    old = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (size, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, old)


def test_a_write_that_failed_half_way_leaves_the_segment_as_it_was(tmp_path: Path) -> None:
    """The server's flush fails (disk full) after part of the batch went into the file; the
    server then closes the store, which flushes again. Nothing of the first attempt may stay
    in the file under the second, or the index points at the wrong bytes."""
    store = SqliteStore(tmp_path, sync_rows=100_000)
    for seq in range(1, 4):
        store.append(message(seq))
        store.flush()
    size = (tmp_path / SEGMENT).stat().st_size
    for seq in range(4, 51):
        store.append(message(seq))
    with files_capped_at(size + 100), pytest.raises(StoreError, match="File too large"):
        store.flush()
    assert (tmp_path / SEGMENT).stat().st_size == size  # the failed write was cut off
    store.close()  # as the server's `finally` does: what it still holds is written now
    again = SqliteStore(tmp_path)
    try:
        assert again.read("lobby", 0, 100).messages == [message(seq) for seq in range(1, 51)]
        assert again.notes == []
    finally:
        again.close()


# Two sender keys (sender_key_of's form) with the same CRC-32, the `sent` table's key_hash.
ALIKE = ("e5e0298325159fc4a6404caa78488e2f", "227a7243944d20459868db7c47571641")


def test_senders_whose_key_hashes_collide_keep_their_resends(tmp_path: Path) -> None:
    """Two senders in one room and one indexing whose keys hash alike: each keeps its `sent`
    row, so a resend of either is recognised once indexed (else it is stored twice)."""
    store = SqliteStore(tmp_path, sync_rows=4)
    for seq, key in enumerate([ALIKE[0], ALIKE[1], ALIKE[0], ALIKE[1]], start=1):
        store.append(message(seq, key=key))
    store.flush()  # four messages: indexed now
    try:
        for seq, key in enumerate([ALIKE[0], ALIKE[1], ALIKE[0], ALIKE[1]], start=1):
            assert store.find(key, f"lobby-{seq}") == message(seq, key=key)
    finally:
        store.close()
    again = SqliteStore(tmp_path)
    try:
        assert again.find(ALIKE[1], "lobby-4") == message(4, key=ALIKE[1])
    finally:
        again.close()


def sql_steps(store: SqliteStore, room: str, after: int) -> int:
    """How many SQLite VM instructions (in thousands) a read of 10 messages after `after`
    runs."""
    db = store._connection()
    steps = 0

    def count() -> int:
        nonlocal steps
        steps += 1
        return 0

    db.set_progress_handler(count, 1000)
    try:
        assert [m.seq for m in store.read(room, after, 10).messages] == list(
            range(after + 1, after + 11)
        )
    finally:
        db.set_progress_handler(None, 1000)
    return steps


def test_a_read_seeks_to_its_record_instead_of_scanning_the_room_from_its_start(
    tmp_path: Path,
) -> None:
    """At a low rate every message is a record of its own: a resume just older than the tail
    must not cost SQLite a walk over every record of the room before it (it did: ~9 ms at
    100,000 records, in the loop)."""
    store = SqliteStore(tmp_path, tail=1, sync_rows=100_000)
    count = 20_000
    for seq in range(1, count + 1):
        store.append(message(seq))
        store.flush()
    store.close()
    store = SqliteStore(tmp_path, tail=1)
    try:
        early = sql_steps(store, "lobby", 100)
        late = sql_steps(store, "lobby", count - 100)
        assert late <= 2 * early + 2, (early, late)
    finally:
        store.close()


def start_after_a_start_cut_short(directory: Path) -> SqliteStore:
    """Open the old database in `directory` twice: the first start ends after the migration
    to schema 5 committed, before the move into segments (a directory where the move's
    leftovers are deleted: one line, as a kill there would leave it), the second finishes."""
    (directory / SEGMENT).mkdir()
    with pytest.raises(StoreError, match="Is a directory"):
        SqliteStore(directory)
    (directory / SEGMENT).rmdir()
    return SqliteStore(directory)


def test_an_upgrade_from_schema_4_cut_short_after_its_move_to_5_opens_next_time(
    tmp_path: Path,
) -> None:
    """Schemas 1 to 4 are migrated to 5 (committed), then moved into segments: a start that
    ends in between (a kill; here a segment name it cannot delete, one line) leaves a
    version-5 database whose `sent` rows _migrate wrote in 7's form. The next start must
    open it (it died on a msgspec traceback, every time)."""
    db = sqlite3.connect(tmp_path / DB_NAME)
    db.executescript(VERSION_4)
    db.close()
    store = start_after_a_start_cut_short(tmp_path)
    try:
        assert [m.seq for m in store.read("lobby", 0, 10).messages] == [1, 2]
        assert store.find(sender_key_of("key"), "m1") is not None
    finally:
        store.close()


def test_a_schema_3_journal_is_hashed_even_when_its_first_start_was_cut_short(
    tmp_path: Path,
) -> None:
    """A schema-3 server's journal holds resume tokens in clear. The start that migrates its
    database commits schema 5 long before the journal is taken in: when that start ends early
    (a kill; here a segment name it cannot delete, one line), the next one must still hash the
    journal's tokens, not store them."""
    token = "tok3n-in-clear-0123456789"
    db = sqlite3.connect(tmp_path / DB_NAME)
    db.executescript(VERSION_3.replace("'key'", f"'{token}'"))
    db.close()
    row = ("lobby", 3, 12, "bo", "late", 0, token, "m3", 0)
    (tmp_path / JOURNAL_NAME).write_bytes(record(marshal.dumps([row])))
    store = start_after_a_start_cut_short(tmp_path)
    try:
        assert store.head("lobby") == 3
        assert store.find(sender_key_of(token), "m3") is not None
        assert store.find(token, "m3") is None
    finally:
        store.close()
    for path in tmp_path.iterdir():
        assert token.encode() not in path.read_bytes(), path.name
