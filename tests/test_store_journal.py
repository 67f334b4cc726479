"""The SQLite store's journal at start-up: what a kill can leave behind."""

from __future__ import annotations

from pathlib import Path

import pytest

from chatctl.store.base import StoredMessage
from chatctl.store.errors import StoreError
from chatctl.store.journal import JOURNAL_NAME
from chatctl.store.sqlite import SqliteStore


def message(seq: int) -> StoredMessage:
    return StoredMessage(
        room="lobby",
        seq=seq,
        ts=seq,
        sender="ann",
        text=f"m{seq}",
        sender_key="k",
        msg_id=f"i{seq}",
    )


def journaled(directory: Path, count: int) -> SqliteStore:
    """A store with `count` messages flushed to the journal and none in SQLite yet."""
    store = SqliteStore(directory, sync_rows=1000)
    for seq in range(1, count + 1):
        store.append(message(seq))
        store.flush()
    assert (directory / JOURNAL_NAME).stat().st_size > 0
    return store


def test_a_torn_last_write_is_dropped_and_the_rest_kept(tmp_path: Path) -> None:
    journaled(tmp_path, 3).crash()
    with (tmp_path / JOURNAL_NAME).open("ab") as f:
        f.write(b"\0\0\1\0abcd" + b"x" * 100)  # killed in the middle of a 256-byte write
    store = SqliteStore(tmp_path)
    assert store.head("lobby") == 3
    assert store.read("lobby", 0, 10).messages == [message(1), message(2), message(3)]
    assert store.find("k", "i2") == message(2)
    store.append(message(4))
    store.close()
    assert SqliteStore(tmp_path).latest("lobby", 1) == [message(4)]


def test_replay_after_a_kill_between_commit_and_emptying_is_harmless(tmp_path: Path) -> None:
    store = journaled(tmp_path, 5)
    leftover = (tmp_path / JOURNAL_NAME).read_bytes()
    store.close()  # commits to SQLite and empties the journal...
    (tmp_path / JOURNAL_NAME).write_bytes(leftover)  # ...as if the kill came just before that
    again = SqliteStore(tmp_path)
    assert again.head("lobby") == 5
    assert again.stored_rows() == 5
    assert (tmp_path / JOURNAL_NAME).stat().st_size == 0


def test_a_damaged_journal_is_a_one_line_error(tmp_path: Path) -> None:
    journaled(tmp_path, 2).crash()
    journal = tmp_path / JOURNAL_NAME
    data = bytearray(journal.read_bytes())
    data[12] ^= 0xFF  # a flipped byte in the first record's body
    journal.write_bytes(data)
    with pytest.raises(StoreError, match=r"journal is damaged at byte 0 \(checksum mismatch\)$"):
        SqliteStore(tmp_path)
