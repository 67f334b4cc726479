"""The SQLite store at start-up after a kill: records in the segment files that were never
indexed are read back, a torn last one cut off, a damaged one refused in one line; a journal
left by a schema-5 or 6 server is replayed, then deleted."""

from __future__ import annotations

import marshal
import sqlite3
from pathlib import Path

import msgspec
import pytest

from chatctl.store.base import StoredMessage
from chatctl.store.errors import StoreError
from chatctl.store.journal import JOURNAL_NAME
from chatctl.store.sqlite import DB_NAME, SqliteStore, key_hash
from tests.store_files import legacy_database, record, record_starts, segment_files

SEGMENT = "messages-000001.log"


def message(seq: int, room: str = "lobby") -> StoredMessage:
    return StoredMessage(room, seq, seq, "ann", f"m{seq}", False, "k", f"{room}-{seq}")


def flushed(directory: Path, count: int, *, sync_rows: int = 1000) -> SqliteStore:
    """A store with `count` messages flushed one at a time: each its own record, the ones
    past the last multiple of `sync_rows` not indexed yet."""
    store = SqliteStore(directory, sync_rows=sync_rows)
    for seq in range(1, count + 1):
        store.append(message(seq))
        store.flush()
    return store


def indexed(where: Path | SqliteStore) -> list[tuple[int, int]]:
    """The (first, last) of every record the database in `where` indexes (a closed store's
    directory, or an open store: it holds the database's lock)."""
    if isinstance(where, SqliteStore):
        db = where._connection()
        return db.execute("SELECT first, last FROM records ORDER BY first").fetchall()
    db = sqlite3.connect(where / DB_NAME)
    try:
        return db.execute("SELECT first, last FROM records ORDER BY first").fetchall()
    finally:
        db.close()


@pytest.mark.parametrize(
    "torn",
    [b"\0\0", b"\0\0\1\0abcd", b"\0\0\1\0abcd" + b"x" * 100, b"\xff\xff\xff\xff\0\0\0\0"],
    ids=["half-a-header", "header", "header-and-some", "absurd-length"],
)
def test_a_torn_last_record_is_cut_off_and_the_rest_kept(tmp_path: Path, torn: bytes) -> None:
    flushed(tmp_path, 3).crash()
    assert indexed(tmp_path) == []  # all three only in the segment
    segment = tmp_path / SEGMENT
    whole = segment.stat().st_size
    with segment.open("ab") as f:
        f.write(torn)  # killed in the middle of a write
    store = SqliteStore(tmp_path)
    assert store.notes == [
        f"{segment}: dropped {len(torn)} bytes of a write cut short at the end"
        " (a kill or crash during the write; it was never acknowledged)"
    ]
    assert segment.stat().st_size == whole
    assert indexed(store) == [(1, 1), (2, 2), (3, 3)]  # at start-up
    assert store.head("lobby") == 3
    assert store.read("lobby", 0, 10).messages == [message(1), message(2), message(3)]
    assert store.find("k", "lobby-2") == message(2)
    store.append(message(4))
    store.close()
    assert indexed(tmp_path) == [(1, 1), (2, 2), (3, 3), (4, 4)]
    again = SqliteStore(tmp_path)
    assert again.notes == []
    assert again.read("lobby", 0, 10).messages == [message(seq) for seq in range(1, 5)]
    again.close()


@pytest.mark.parametrize("sync_rows", [1, 3, 1000], ids=["all", "some", "none"])
def test_records_not_indexed_before_a_kill_are_read_back_once(
    tmp_path: Path, sync_rows: int
) -> None:
    """A kill after flushes that were never indexed, or some of them: everything flushed is
    there after the restart, resends are recognised, nothing is there twice (not after a
    second restart either)."""
    store = flushed(tmp_path, 7, sync_rows=sync_rows)
    store.append(message(8))  # never flushed: lost with the kill
    store.crash()
    assert len(indexed(tmp_path)) == 7 // sync_rows * sync_rows
    for _ in range(2):
        again = SqliteStore(tmp_path, sync_rows=sync_rows)
        assert again.notes == []
        assert indexed(again) == [(seq, seq) for seq in range(1, 8)]
        assert again.head("lobby") == 7
        assert again.read("lobby", 0, 20).messages == [message(seq) for seq in range(1, 8)]
        assert again.latest("lobby", 3) == [message(5), message(6), message(7)]
        for seq in (1, 4, 7):
            assert again.find("k", f"lobby-{seq}") == message(seq)
        assert again.find("k", "lobby-8") is None
        assert again.stored_rows() == 7
        again.close()
        assert indexed(tmp_path) == [(seq, seq) for seq in range(1, 8)]


def test_records_of_several_rooms_after_a_kill_keep_each_rooms_order(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path, sync_rows=1000)
    for seq in range(1, 6):
        for room in ("lobby", "dev"):
            store.append(message(seq, room))
        store.flush()  # one write, a record of each room
    store.crash()
    again = SqliteStore(tmp_path)
    for room in ("lobby", "dev"):
        assert again.read(room, 0, 10).messages == [message(seq, room) for seq in range(1, 6)]
        assert again.find("k", f"{room}-3") == message(3, room)
    again.close()


def test_a_bad_checksum_before_the_last_record_is_a_one_line_error(tmp_path: Path) -> None:
    flushed(tmp_path, 3).crash()
    segment = tmp_path / SEGMENT
    second = record_starts(segment)[1]
    data = bytearray(segment.read_bytes())
    data[second + 12] ^= 0xFF  # a flipped byte in the second record's body
    segment.write_bytes(data)
    with pytest.raises(StoreError) as caught:
        SqliteStore(tmp_path)
    assert str(caught.value) == f"{segment} is damaged at byte {second} (checksum mismatch)"
    assert segment.read_bytes() == data  # refused, not repaired


def test_a_damaged_indexed_record_is_an_error_when_read(tmp_path: Path) -> None:
    """Indexed records are not read at start-up; the one a read reaches is checked."""
    flushed(tmp_path, 3, sync_rows=1).close()
    segment = tmp_path / SEGMENT
    second = record_starts(segment)[1]
    data = bytearray(segment.read_bytes())
    data[second + 12] ^= 0xFF
    segment.write_bytes(data)
    store = SqliteStore(tmp_path, tail=1)
    assert store.read("lobby", 2, 5).messages == [message(3)]
    with pytest.raises(StoreError) as caught:
        store.read("lobby", 0, 5)
    assert str(caught.value) == f"{segment} is damaged at byte {second} (a record of history)"
    store.close()


@pytest.mark.parametrize("seqs", [(1, 3), (1, 1), (1, 2, 2)], ids=["gap", "twice", "repeat"])
def test_a_record_whose_seqs_do_not_run_on_is_refused(tmp_path: Path, seqs: list[int]) -> None:
    SqliteStore(tmp_path).close()
    segment = tmp_path / SEGMENT
    body = msgspec.msgpack.encode([message(seq) for seq in seqs])
    segment.write_bytes(record(body))
    with pytest.raises(StoreError, match=rf"^{segment} is damaged at byte 0 "):
        SqliteStore(tmp_path).close()


# -- the journal of schemas 5 and 6 ---------------------------------------------------------


def schema_6_with_a_journal(directory: Path) -> list[StoredMessage]:
    """A schema-6 database holding lobby 1-2 in a chunk, and the journal its server, killed,
    left behind: lobby 3 in a schema-6 (MessagePack) record, then lobby 4 and dev 1 in a
    schema-5 (marshal) record, as a server upgraded from 5 could have left it. Returns
    every message."""
    history = [message(1), message(2), message(3), message(4), message(1, "dev")]
    legacy_database(
        directory,
        6,
        chunks=[("lobby", 1, 2, 2, msgspec.msgpack.encode(history[:2]))],
        sent=[
            (
                key_hash("k"),
                1,
                "lobby",
                "k",
                2,
                2,
                msgspec.msgpack.encode([("lobby-1", 1), ("lobby-2", 2)]),
            )
        ],
        rooms=[("lobby", 2, 1)],
    )
    rows = [tuple(msgspec.structs.astuple(m)) for m in history[3:]]
    rows = [(*row[:5], int(row[5]), *row[6:]) for row in rows]
    journal = record(msgspec.msgpack.encode(history[2:3])) + record(marshal.dumps(rows))
    (directory / JOURNAL_NAME).write_bytes(journal)
    return history


def test_a_legacy_journal_is_replayed_into_a_segment_and_deleted(tmp_path: Path) -> None:
    history = schema_6_with_a_journal(tmp_path)
    store = SqliteStore(tmp_path)
    assert not (tmp_path / JOURNAL_NAME).exists()
    assert store.notes == []
    assert store.read("lobby", 0, 10).messages == history[:4]
    assert store.read("dev", 0, 10).messages == history[4:]
    for m in history:
        assert store.find("k", m.msg_id) == m
    store.close()
    again = SqliteStore(tmp_path)
    assert again.read("lobby", 0, 10).messages == history[:4]
    assert again.stored_rows() == 5
    again.close()
    assert [p.name for p in segment_files(tmp_path)] == [SEGMENT]


def test_a_legacy_journal_replayed_twice_is_harmless(tmp_path: Path) -> None:
    """A kill after the replay was indexed but before the journal was deleted: the next
    start replays it again, and takes in nothing twice."""
    history = schema_6_with_a_journal(tmp_path)
    journal = (tmp_path / JOURNAL_NAME).read_bytes()
    SqliteStore(tmp_path).close()
    (tmp_path / JOURNAL_NAME).write_bytes(journal)
    again = SqliteStore(tmp_path)
    assert not (tmp_path / JOURNAL_NAME).exists()
    assert again.read("lobby", 0, 10).messages == history[:4]
    assert again.stored_rows() == 5
    again.close()


def test_a_torn_legacy_journal_keeps_its_whole_records(tmp_path: Path) -> None:
    history = schema_6_with_a_journal(tmp_path)
    torn = record(msgspec.msgpack.encode([message(5)]))[:-1]
    with (tmp_path / JOURNAL_NAME).open("ab") as f:
        f.write(torn)
    store = SqliteStore(tmp_path)
    assert store.notes == [
        f"{tmp_path / JOURNAL_NAME}: dropped {len(torn)} bytes of a write cut short at the end"
        " (a kill or crash during the write; it was never acknowledged)"
    ]
    assert store.read("lobby", 0, 10).messages == history[:4]
    store.close()


def test_a_damaged_legacy_journal_is_a_one_line_error(tmp_path: Path) -> None:
    schema_6_with_a_journal(tmp_path)
    journal = tmp_path / JOURNAL_NAME
    data = bytearray(journal.read_bytes())
    second = record_starts(journal)[1]
    data[second + 12] ^= 0xFF
    journal.write_bytes(data)
    with pytest.raises(StoreError) as caught:
        SqliteStore(tmp_path)
    assert str(caught.value) == f"{journal} is damaged at byte {second} (checksum mismatch)"
    assert journal.read_bytes() == data


def test_a_legacy_journal_whose_seqs_skip_is_a_store_error(tmp_path: Path) -> None:
    schema_6_with_a_journal(tmp_path)
    (tmp_path / JOURNAL_NAME).write_bytes(record(msgspec.msgpack.encode([message(9)])))
    with pytest.raises(StoreError, match=r"journal is damaged \(seq 9 of 'lobby' after 2\)$"):
        SqliteStore(tmp_path).close()
