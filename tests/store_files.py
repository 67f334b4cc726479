"""The SQLite store's files as a kill or an older server leaves them, built by hand (struct and
zlib, not the code under test), and the check that trimmed history is gone from them."""

from __future__ import annotations

import sqlite3
import struct
import zlib
from pathlib import Path

from chatctl.store.sqlite import DB_NAME

HEADER = struct.Struct("!II")  # a record's body length and CRC-32

# Schemas 5 and 6 as their servers created them: the records as rows of `chunks`.
SCHEMA_6 = """
CREATE TABLE chunks (
    room TEXT NOT NULL,
    first INTEGER NOT NULL,
    last INTEGER NOT NULL,
    ts_max INTEGER NOT NULL,
    body BLOB NOT NULL,
    PRIMARY KEY (room, first)
) WITHOUT ROWID;
CREATE TABLE sent (
    key_hash INTEGER NOT NULL,
    batch INTEGER NOT NULL,
    room TEXT NOT NULL,
    sender_key TEXT NOT NULL,
    last INTEGER NOT NULL,
    n INTEGER NOT NULL,
    ids BLOB NOT NULL,
    PRIMARY KEY (key_hash, batch, room)
) WITHOUT ROWID;
CREATE INDEX sent_by_room ON sent (room, last);
CREATE TABLE rooms (
    room TEXT PRIMARY KEY,
    head INTEGER NOT NULL,
    first INTEGER NOT NULL DEFAULT 1
) WITHOUT ROWID;
"""


def record(body: bytes) -> bytes:
    """A record of a segment file or of a legacy journal: length, CRC-32, body."""
    return HEADER.pack(len(body), zlib.crc32(body)) + body


def record_starts(path: Path) -> list[int]:
    """Where each whole record of the file at `path` starts."""
    data = path.read_bytes()
    starts = []
    at = 0
    while at + HEADER.size <= len(data):
        (size, _) = HEADER.unpack_from(data, at)
        if at + HEADER.size + size > len(data):
            break
        starts.append(at)
        at += HEADER.size + size
    return starts


def legacy_database(
    directory: Path,
    version: int,
    chunks: list[tuple[str, int, int, int, bytes]],
    sent: list[tuple[int, int, str, str, int, int, bytes]],
    rooms: list[tuple[str, int, int]],
) -> None:
    """A history database of schema 5 or 6 in `directory`, with these rows."""
    directory.mkdir(mode=0o700, exist_ok=True)
    db = sqlite3.connect(directory / DB_NAME)
    db.executescript(SCHEMA_6)
    db.executemany("INSERT INTO chunks VALUES (?, ?, ?, ?, ?)", chunks)
    db.executemany("INSERT INTO sent VALUES (?, ?, ?, ?, ?, ?, ?)", sent)
    db.executemany("INSERT INTO rooms VALUES (?, ?, ?)", rooms)
    db.execute(f"PRAGMA user_version = {version}")
    db.commit()
    db.close()


def segment_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.name.startswith("messages-"))


def check_only_live_bytes(directory: Path, live_places: list[tuple[int, int, int]]) -> None:
    """Trimmed history is gone from the files: given the (segment, pos, length) of every live
    record, every byte outside them is zero, and a segment file with no live record is gone
    (the newest may stay, empty)."""
    live: dict[str, list[tuple[int, int]]] = {}
    for segment, pos, length in live_places:
        live.setdefault(f"messages-{segment:06d}.log", []).append((pos, pos + HEADER.size + length))
    files = segment_files(directory)
    for path in files[:-1]:
        assert path.name in live, f"{path.name} holds nothing alive"
    for path in files:
        data = bytearray(path.read_bytes())
        for start, end in live.get(path.name, []):
            data[start:end] = bytes(end - start)
        assert not any(data), f"{path.name} keeps bytes of trimmed history"
