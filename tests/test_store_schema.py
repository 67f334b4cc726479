"""The SQLite store's schema: an older version is migrated, a newer one refused."""

from __future__ import annotations

import marshal
import sqlite3
from pathlib import Path

import msgspec
import pytest

from chatctl.store.base import StoredMessage, sender_key_of
from chatctl.store.errors import StoreError
from chatctl.store.journal import JOURNAL_NAME
from chatctl.store.sqlite import DB_NAME, SCHEMA_VERSION, SqliteStore, key_hash
from tests.store_files import legacy_database, record, segment_files

VERSION_1 = """
CREATE TABLE messages (room TEXT NOT NULL, seq INTEGER NOT NULL, ts INTEGER NOT NULL,
    sender TEXT NOT NULL, text TEXT NOT NULL, action INTEGER NOT NULL,
    sender_key TEXT NOT NULL, msg_id TEXT NOT NULL, PRIMARY KEY (room, seq)) WITHOUT ROWID;
CREATE INDEX messages_dedupe ON messages (sender_key, msg_id) WHERE msg_id != '';
CREATE TABLE rooms (room TEXT PRIMARY KEY, head INTEGER NOT NULL) WITHOUT ROWID;
INSERT INTO messages VALUES ('lobby', 1, 10, 'ann', 'hi', 0, 'key', 'm1');
INSERT INTO messages VALUES ('lobby', 2, 11, 'ann', 'again', 1, 'key', '');
INSERT INTO rooms VALUES ('lobby', 0);
PRAGMA user_version = 1;
"""


VERSION_3 = (
    VERSION_1.replace("msg_id TEXT NOT NULL,", "msg_id TEXT NOT NULL, key_hash INTEGER NOT NULL,")
    .replace(
        "messages_dedupe ON messages (sender_key, msg_id)",
        "messages_resend ON messages (key_hash, msg_id)",
    )
    .replace("'m1');", "'m1', 7);")
    .replace("'');", "'', 0);")
    .replace("user_version = 1", "user_version = 3")
)

VERSION_2 = (
    VERSION_1.replace("msg_id TEXT NOT NULL,", "msg_id TEXT NOT NULL, id_hash INTEGER NOT NULL,")
    .replace(
        "messages_dedupe ON messages (sender_key, msg_id)", "messages_resend ON messages (id_hash)"
    )
    .replace("'m1');", "'m1', 7);")
    .replace("'');", "'', 0);")
    .replace("user_version = 1", "user_version = 2")
)


# Version 4: the same rows, with the token's hash where 3 had the token.
VERSION_4 = VERSION_3.replace("'key'", f"'{sender_key_of('key')}'").replace(
    "user_version = 3", "user_version = 4"
)


@pytest.mark.parametrize(
    "schema", [VERSION_1, VERSION_2, VERSION_3, VERSION_4], ids=["v1", "v2", "v3", "v4"]
)
def test_older_schemas_are_migrated_and_resends_still_found(tmp_path: Path, schema: str) -> None:
    db = sqlite3.connect(tmp_path / DB_NAME)
    db.executescript(schema)
    db.close()
    store = SqliteStore(tmp_path)
    assert store.head("lobby") == 2
    key = sender_key_of("key")  # the stored token became its hash
    assert store.find(key, "m1") == StoredMessage(
        room="lobby", seq=1, ts=10, sender="ann", text="hi", sender_key=key, msg_id="m1"
    )
    store.append(StoredMessage(room="lobby", seq=3, ts=12, sender="bo", text="x", msg_id="z"))
    store.close()
    again = SqliteStore(tmp_path)
    assert [m.seq for m in again.latest("lobby", 5)] == [1, 2, 3]
    assert again.find("", "z") is not None
    again.close()


def test_a_newer_schema_is_refused_in_one_line(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / DB_NAME)
    db.execute("PRAGMA user_version = 99")
    db.close()
    with pytest.raises(StoreError, match=r"schema version 99; this chatctl reads \d+$"):
        SqliteStore(tmp_path)


def test_the_migration_leaves_no_token_in_the_files(tmp_path: Path) -> None:
    token = "tok3n-in-clear-0123456789"
    db = sqlite3.connect(tmp_path / DB_NAME)
    db.executescript(VERSION_3.replace("'key'", f"'{token}'"))
    db.close()
    SqliteStore(tmp_path).close()
    for path in tmp_path.iterdir():
        assert token.encode() not in path.read_bytes(), path.name
    assert SqliteStore(tmp_path).find(sender_key_of(token), "m1") is not None


def test_a_resend_is_found_within_the_senders_window_and_after_a_restart(tmp_path: Path) -> None:
    """`find` looks through the sender's newest `resend_window` stored messages (in SQL,
    across rooms, after a restart), and no further: the protocol's UNACKED_MAX."""
    store = SqliteStore(tmp_path, sync_rows=1, resend_window=5)
    for seq in range(1, 21):
        for room in ("lobby", "dev"):
            store.append(
                StoredMessage(room, seq, seq, "ann", f"t{seq}", False, "key", f"{room}-{seq}")
            )
            store.flush()  # sync_rows=1: each in SQLite, its own `sent` row
    store.close()
    again = SqliteStore(tmp_path, resend_window=5)
    assert again.find("key", "dev-20") == StoredMessage(
        "dev", 20, 20, "ann", "t20", False, "key", "dev-20"
    )
    assert again.find("key", "lobby-19") is not None  # within the newest five
    assert again.find("other", "lobby-19") is None  # another sender's id space
    assert again.find("key", "lobby-1") is None  # far outside the window
    again.close()
    wide = SqliteStore(tmp_path)  # the default window, 4,096, holds them all
    assert wide.find("key", "lobby-1") is not None
    wide.close()


def test_messages_the_age_limit_hid_stay_hidden_after_a_restart(tmp_path: Path) -> None:
    """A chunk holding a visible message stays whole after trim, the expired ones in it
    hidden: the visible floor is stored with the trim, so a restart (or a kill) does not
    show them again. Found by the stateful test."""
    store = SqliteStore(tmp_path, retain_messages=0, retain_age=0.05)
    store.append(StoredMessage("dev", 1, 1_000, "ann", "old"))
    store.append(StoredMessage("dev", 2, 1_051, "ann", "new"))
    assert store.trim(1_051) == 0  # one chunk, still holding seq 2: nothing deleted
    assert [m.seq for m in store.latest("dev", 5)] == [2]
    store.crash()
    again = SqliteStore(tmp_path, retain_messages=0, retain_age=0.05)
    assert [m.seq for m in again.latest("dev", 5)] == [2]
    assert again.read("dev", 0, 5).gap == (1, 1)
    again.close()


def schema_5_or_6(directory: Path, version: int) -> str:
    """A database of schema `version` (5: marshal, 6: MessagePack) holding lobby 1-2, and the
    journal its server, killed, left with lobby 3; the sender key."""
    key = sender_key_of("key")
    messages = [
        StoredMessage("lobby", 1, 10, "ann", "hi", False, key, "m1"),
        StoredMessage("lobby", 2, 11, "ann", "again", True, key, ""),
        StoredMessage("lobby", 3, 12, "bo", "late", False, key, "m3"),
    ]
    rows = [
        (m.seq, m.ts, m.sender, m.text, int(m.action), m.sender_key, m.msg_id) for m in messages
    ]
    if version == 5:
        chunk, ids = marshal.dumps(rows[:2]), marshal.dumps([("m1", 1)])
        journal = marshal.dumps([("lobby", *rows[2])])
    else:
        chunk, ids = msgspec.msgpack.encode(messages[:2]), msgspec.msgpack.encode([("m1", 1)])
        journal = msgspec.msgpack.encode(messages[2:])
    legacy_database(
        directory,
        version,
        chunks=[("lobby", 1, 2, 11, chunk)],
        sent=[(key_hash(key), 1, "lobby", key, 1, 1, ids)],
        rooms=[("lobby", 2, 1)],
    )
    (directory / JOURNAL_NAME).write_bytes(record(journal))
    return key


def schema_of(directory: Path) -> tuple[int, list[str]]:
    db = sqlite3.connect(directory / DB_NAME)
    try:
        (version,) = db.execute("PRAGMA user_version").fetchone()
        tables = [
            row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        ]
    finally:
        db.close()
    return version, sorted(tables)


@pytest.mark.parametrize("version", [5, 6])
def test_a_schema_5_or_6_database_and_journal_are_moved_into_a_segment(
    tmp_path: Path, version: int
) -> None:
    """Schemas 5 and 6 kept their records in SQLite (`chunks`; 5 marshalled them, its `sent`
    ids and its journal records): opening moves the records into a segment file once, replays
    the journal and deletes it, and an older server is kept out by the version."""
    key = schema_5_or_6(tmp_path, version)
    store = SqliteStore(tmp_path)
    assert not (tmp_path / JOURNAL_NAME).exists()
    assert store.head("lobby") == 3
    assert store.find(key, "m1") == StoredMessage("lobby", 1, 10, "ann", "hi", False, key, "m1")
    assert store.find(key, "m3") == StoredMessage("lobby", 3, 12, "bo", "late", False, key, "m3")
    store.append(StoredMessage("lobby", 4, 13, "cy", "new", True, "", "m4"))
    store.close()
    assert SCHEMA_VERSION == 7
    assert schema_of(tmp_path) == (SCHEMA_VERSION, ["dead", "indexed", "records", "rooms", "sent"])
    expected = [(1, "hi", False), (2, "again", True), (3, "late", False), (4, "new", True)]
    for _ in range(2):  # the second open reads what the first left, unchanged
        again = SqliteStore(tmp_path)
        assert [(m.seq, m.text, m.action) for m in again.read("lobby", 0, 10).messages] == expected
        assert again.find("", "m4") is not None and again.find(key, "m1") is not None
        assert again.stored_rows() == 4
        again.close()
        assert schema_of(tmp_path)[0] == SCHEMA_VERSION
        assert [p.name for p in segment_files(tmp_path)] == ["messages-000001.log"]


@pytest.mark.parametrize("leftover", ["garbage", "half-moved"])
def test_a_move_into_segments_cut_short_by_a_kill_is_redone(tmp_path: Path, leftover: str) -> None:
    """A kill during the move from schema 6 leaves the database as it was and segment files
    beside it: they are deleted and the move starts over, nothing lost or doubled."""
    key = schema_5_or_6(tmp_path, 6)
    db = sqlite3.connect(tmp_path / DB_NAME)
    (chunk,) = db.execute("SELECT body FROM chunks").fetchone()
    db.close()
    journal = (tmp_path / JOURNAL_NAME).read_bytes()  # one record: lobby 3
    if leftover == "garbage":
        (tmp_path / "messages-000001.log").write_bytes(b"\x00\x01garbage" * 50)
        (tmp_path / "messages-000002.log").write_bytes(record(b"\xc1"))
    else:  # the chunk written, and half of it again
        (tmp_path / "messages-000001.log").write_bytes(record(chunk) + record(chunk)[:9])
    store = SqliteStore(tmp_path)
    assert store.notes == []
    assert [m.seq for m in store.read("lobby", 0, 10).messages] == [1, 2, 3]
    assert store.find(key, "m1") is not None
    assert store.stored_rows() == 3
    store.close()
    assert schema_of(tmp_path) == (SCHEMA_VERSION, ["dead", "indexed", "records", "rooms", "sent"])
    assert [p.name for p in segment_files(tmp_path)] == ["messages-000001.log"]
    # The chunk moved once, then the journal's record: nothing of the leftovers.
    assert (tmp_path / "messages-000001.log").read_bytes() == record(chunk) + journal
    again = SqliteStore(tmp_path)
    assert [m.seq for m in again.read("lobby", 0, 10).messages] == [1, 2, 3]
    assert again.stored_rows() == 3
    again.close()
