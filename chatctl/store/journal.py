"""The SQLite store's append-only journal: what makes a loop turn's messages durable with ONE
`write()` before any ack leaves (sqlite.py explains why this beats a commit per turn).

A record is the body's length and CRC-32, then the batch's rows, marshalled (about ten times
cheaper than JSON; the journal is transient and read only by this code). A record cut short
at the end is a write that never returned, so it was never acknowledged: replay drops it.
"""

from __future__ import annotations

import marshal
import os
import struct
import zlib
from pathlib import Path

from chatctl.store import datadir
from chatctl.store.errors import StoreError

JOURNAL_NAME = "journal"
# A stored row: room, seq, ts, sender, text, action, sender_key, msg_id. (Servers before
# schema 5 wrote a ninth field, a hash of sender_key; replay drops it.)
Row = tuple[str, int, int, str, str, int, str, str]
_RECORD = struct.Struct("!II")


class Journal:
    """One open journal file (O_APPEND: every write lands at the end)."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd = fd

    @classmethod
    def open(cls, path: Path) -> Journal:
        return cls(path, datadir.open_file(path, os.O_RDWR | os.O_APPEND))

    def replay(self) -> tuple[list[Row], int]:
        """Every row of every whole record, in order, and how many bytes of a torn record at
        the end were dropped. A record whose checksum or content is wrong is a StoreError
        naming the file and the byte where it starts."""
        try:
            with open(self._fd, "rb", closefd=False) as f:
                data = f.read()
        except OSError as exc:
            raise StoreError(f"cannot read {self.path}: {exc.strerror or exc}") from None
        rows: list[Row] = []
        pos = 0
        while pos + _RECORD.size <= len(data):
            size, crc = _RECORD.unpack_from(data, pos)
            body = data[pos + _RECORD.size : pos + _RECORD.size + size]
            if len(body) < size:
                break
            if zlib.crc32(body) != crc:
                raise StoreError(f"{self.path} is damaged at byte {pos} (checksum mismatch)")
            rows += _rows(body, self.path, pos)
            pos += _RECORD.size + size
        return rows, len(data) - pos

    def append(self, rows: list[Row], *, fsync: bool) -> None:
        """One record of `rows`, written before this returns (and fdatasync'd with fsync)."""
        body = marshal.dumps(rows)
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


_ROW_TYPES = (str, int, int, str, str, int, str, str)
_OLD_ROW_TYPES = (*_ROW_TYPES, int)


def _rows(body: bytes, path: Path, pos: int) -> list[Row]:
    """A record's rows, each checked for shape: a body with a valid checksum can still be
    garbage (written by something else, or by a bug), and must not reach SQLite."""
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
    return [row[:8] for row in rows]
