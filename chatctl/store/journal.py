"""The SQLite store's append-only journal: what makes a loop turn's messages durable with ONE
`write()` before any ack leaves (sqlite.py explains why this beats a commit per turn).

A record is the body's length and CRC-32, then the batch's messages: a MessagePack array of
`StoredMessage` arrays, encoded and decoded (and type-checked) by msgspec in C, about 40 ns a
message where marshal took ~350. Servers before schema 6 wrote marshalled row tuples; replay
still reads them (the first byte tells: a marshalled list starts with `[` or 0xdb, a
MessagePack array with 0x90-0x9f, 0xdc or 0xdd). A record cut short at the end is a write that
never returned, so it was never acknowledged: replay drops it. The journal is transient and
read only by this code.
"""

from __future__ import annotations

import marshal
import os
import struct
import zlib
from pathlib import Path

import msgspec

from chatctl.store import datadir
from chatctl.store.base import StoredMessage
from chatctl.store.errors import StoreError

JOURNAL_NAME = "journal"
_RECORD = struct.Struct("!II")
ENCODER = msgspec.msgpack.Encoder()
MESSAGES = msgspec.msgpack.Decoder(list[StoredMessage])
# The first byte of a marshalled list (with or without marshal's reference flag).
MARSHALLED = (ord("["), ord("[") | 0x80)


class Journal:
    """One open journal file (O_APPEND: every write lands at the end)."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd = fd

    @classmethod
    def open(cls, path: Path) -> Journal:
        return cls(path, datadir.open_file(path, os.O_RDWR | os.O_APPEND))

    def replay(self) -> tuple[list[StoredMessage], int]:
        """Every message of every whole record, in order, and how many bytes of a torn record at
        the end were dropped. A record whose checksum or content is wrong is a StoreError
        naming the file and the byte where it starts."""
        try:
            with open(self._fd, "rb", closefd=False) as f:
                data = f.read()
        except OSError as exc:
            raise StoreError(f"cannot read {self.path}: {exc.strerror or exc}") from None
        messages: list[StoredMessage] = []
        pos = 0
        while pos + _RECORD.size <= len(data):
            size, crc = _RECORD.unpack_from(data, pos)
            body = data[pos + _RECORD.size : pos + _RECORD.size + size]
            if len(body) < size:
                break
            if zlib.crc32(body) != crc:
                raise StoreError(f"{self.path} is damaged at byte {pos} (checksum mismatch)")
            messages += _messages(body, self.path, pos)
            pos += _RECORD.size + size
        return messages, len(data) - pos

    def append(self, messages: list[StoredMessage], *, fsync: bool) -> None:
        """One record of `messages`, written before this returns (fdatasync'd with fsync)."""
        body = ENCODER.encode(messages)
        data = _RECORD.pack(len(body), zlib.crc32(body)) + body
        try:
            while data:
                data = data[os.write(self._fd, data) :]
            if fsync:
                os.fdatasync(self._fd)
        except OSError as exc:
            raise StoreError(
                f"cannot write history to {self.path}: {exc.strerror or exc}"
            ) from None

    def empty(self) -> None:
        try:
            os.ftruncate(self._fd, 0)  # O_APPEND: the next write starts at 0
        except OSError as exc:
            raise StoreError(f"cannot write history to {self.path}: {exc}") from None

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def _messages(body: bytes, path: Path, pos: int) -> list[StoredMessage]:
    """A record's messages, each checked for shape: a body with a valid checksum can still be
    garbage (written by something else, or by a bug), and must not reach SQLite."""
    if body[:1] and body[0] in MARSHALLED:
        return _old_rows(body, path, pos)
    try:
        return MESSAGES.decode(body)
    except msgspec.DecodeError as exc:
        raise StoreError(f"{path} is damaged at byte {pos} (unreadable record: {exc})") from None


# A row of the journals of schema 5 and before: room, seq, ts, sender, text, action,
# sender_key, msg_id (before schema 5 a ninth field, a hash of sender_key, dropped here).
_ROW_TYPES = (str, int, int, str, str, int, str, str)
_OLD_ROW_TYPES = (*_ROW_TYPES, int)


def _old_rows(body: bytes, path: Path, pos: int) -> list[StoredMessage]:
    try:
        rows = marshal.loads(body)
    except (ValueError, EOFError, TypeError):
        raise StoreError(f"{path} is damaged at byte {pos} (unreadable record)") from None
    if not isinstance(rows, list) or not all(
        type(row) is tuple
        and len(row) in (len(_ROW_TYPES), len(_OLD_ROW_TYPES))
        and all(type(v) is t for v, t in zip(row, _OLD_ROW_TYPES, strict=False))
        for row in rows
    ):
        raise StoreError(f"{path} is damaged at byte {pos} (a record of the wrong shape)")
    return [StoredMessage(r[0], r[1], r[2], r[3], r[4], bool(r[5]), r[6], r[7]) for r in rows]
