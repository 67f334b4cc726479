"""The SQLite store's message files: where every message is written once, at the flush that
makes it durable, and read from until retention drops it.

A segment file, DIR/messages-NNNNNN.log, is a run of records, each a length and a CRC-32 and
then a MessagePack array of `StoredMessage` arrays, all of one room, consecutive (msgspec
encodes and decodes them in C). A loop turn's records are ONE `write()` at the end of the
newest segment: once it returns the batch is in the kernel's page cache, which outlives the
process, so a `kill -9` loses nothing that was acknowledged. A new segment starts once the
newest holds SEGMENT_BYTES.

Why files and not SQLite blobs: a message written into SQLite costs its B-tree, a WAL frame,
a copy at the checkpoint and the zeroing of its pages when retention deletes it, about 1.5 us
of C for ~200 bytes, where appending to a file costs a fraction of that (docs/history.md has
the figures). SQLite keeps the small things: where each record is, who sent what, the rooms.

Retention deletes a record's index row first and then punches its bytes out of the file
(fallocate(PUNCH_HOLE), or zeros where the file system cannot): trimmed history is gone from
the files, and its disk space is free. A segment none of whose records is alive is deleted.

The store (sqlite.py) decides what goes where; this module only knows files and records.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import re
import struct
import zlib
from collections import OrderedDict
from collections.abc import Iterable
from pathlib import Path

import msgspec

from chatctl.store import datadir
from chatctl.store.base import StoredMessage
from chatctl.store.errors import StoreError

SEGMENT_BYTES = 64 * 1024 * 1024
_NAME = re.compile(r"messages-(\d{6,})\.log")
RECORD = struct.Struct("!II")  # the body's length and CRC-32
ENCODER = msgspec.msgpack.Encoder()
MESSAGES = msgspec.msgpack.Decoder(list[StoredMessage])
OPEN_READERS = 16  # segments kept open for reading, least recently read closed first

# A record's place: segment number, offset of its header, length of its body.
Place = tuple[int, int, int]


def segment_name(number: int) -> str:
    return f"messages-{number:06d}.log"


def frame(body: bytes) -> bytes:
    return RECORD.pack(len(body), zlib.crc32(body)) + body


def read_file(path: Path, start: int = 0) -> bytes:
    """The bytes of `path` (a file of the data directory, never through a link) from `start`."""
    try:
        with open(datadir.open_file(path, os.O_RDONLY), "rb") as f:
            f.seek(start)
            return f.read()
    except OSError as exc:
        raise StoreError(f"cannot read {path}: {exc.strerror or exc}") from None


def whole_records(data: bytes, path: Path, start: int) -> tuple[list[tuple[int, bytes]], int]:
    """The whole records at the head of `data`, read from byte `start` of `path`: each one's
    offset in `data` and its body, checksum checked (a mismatch is a StoreError naming the
    file and the byte); and where they end (before a record cut short or zeros, if any)."""
    found = []
    at = 0
    while at + RECORD.size <= len(data):
        size, crc = RECORD.unpack_from(data, at)
        end = at + RECORD.size + size
        if end > len(data) or not size:  # cut short; or zeros (never written: no record is
            break  # empty), what a power cut can leave where the file grew before its data
        body = data[at + RECORD.size : end]
        if zlib.crc32(body) != crc:
            raise StoreError(f"{path} is damaged at byte {start + at} (checksum mismatch)")
        found.append((at, body))
        at = end
    return found, at


class Segments:
    """The segment files of one data directory: append records, read one back, punch the
    dead ones out, delete empty files."""

    def __init__(self, directory: Path, *, fsync: bool) -> None:
        self.directory = directory
        self._fsync = fsync
        self.numbers = sorted(
            int(m.group(1)) for name in os.listdir(directory) if (m := _NAME.fullmatch(name))
        )
        self.current = self.numbers[-1] if self.numbers else 1
        self._fd = -1
        self._size = 0
        self._dirty: set[int] = set()  # segments written since the last sync()
        self._broken = ""  # why no append may follow (a failed one could not be cut off)
        self._readers: OrderedDict[int, int] = OrderedDict()
        self._open_current()

    def _path(self, number: int) -> Path:
        return self.directory / segment_name(number)

    def _open_current(self) -> None:
        self._fd = datadir.open_file(self._path(self.current), os.O_RDWR | os.O_APPEND)
        if self.current not in self.numbers:
            self.numbers.append(self.current)
        self._size = os.fstat(self._fd).st_size

    def size(self, number: int) -> int:
        if number == self.current:
            return self._size
        try:
            return os.stat(self._path(number)).st_size
        except OSError as exc:
            raise StoreError(f"cannot read {self._path(number)}: {exc.strerror or exc}") from None

    def append(self, bodies: list[bytes]) -> list[Place]:
        """Write the records `bodies` at the end of the newest segment with one `write()`
        (fdatasync'd when the store is FULL), and say where each went."""
        if self._broken:
            raise StoreError(self._broken)
        if self._size >= SEGMENT_BYTES:
            self.roll()
        places = []
        pos = self._size
        for body in bodies:
            places.append((self.current, pos, len(body)))
            pos += RECORD.size + len(body)
        data = b"".join(map(frame, bodies)) if len(bodies) > 1 else frame(bodies[0])
        try:
            written = os.write(self._fd, data)
            if written < len(data):  # a file system that writes in parts: the rest
                view = memoryview(data)[written:]
                while view:
                    view = view[os.write(self._fd, view) :]
            if self._fsync:
                os.fdatasync(self._fd)
        except OSError as exc:
            self._cut_back()
            raise StoreError(
                f"cannot write history to {self._path(self.current)}: {exc.strerror or exc}"
            ) from None
        self._size = pos
        self._dirty.add(self.current)
        return places

    def _cut_back(self) -> None:
        """After a failed append: cut off what it wrote (nothing of it was acknowledged), so
        that the places of the next append, and the index, match the file; if that fails
        too, no append may follow."""
        try:
            os.ftruncate(self._fd, self._size)
        except OSError as exc:
            self._broken = f"cannot write history to {self._path(self.current)}: {exc}"

    def roll(self) -> None:
        """Start the next segment: appends go there from now on."""
        os.close(self._fd)
        self._fd = -1
        self.current += 1
        self._open_current()

    def sync(self) -> None:
        """fdatasync every segment written since the last call: before the index that points
        into them is committed, so that no power cut leaves an index row without its record."""
        for number in sorted(self._dirty):
            try:
                if number == self.current:
                    os.fdatasync(self._fd)
                else:
                    fd = datadir.open_file(self._path(number), os.O_RDONLY)
                    try:
                        os.fdatasync(fd)
                    finally:
                        os.close(fd)
            except OSError as exc:
                raise StoreError(
                    f"cannot write history to {self._path(number)}: {exc.strerror or exc}"
                ) from None
        self._dirty.clear()

    def read(self, place: Place) -> bytes:
        """The body of the record at `place`, its checksum checked."""
        number, pos, length = place
        fd = self._reader(number)
        try:
            data = os.pread(fd, RECORD.size + length, pos)
        except OSError as exc:
            raise StoreError(f"cannot read {self._path(number)}: {exc.strerror or exc}") from None
        if len(data) == RECORD.size + length:
            size, crc = RECORD.unpack_from(data)
            body = data[RECORD.size :]
            if size == length and zlib.crc32(body) == crc:
                return body
        raise StoreError(f"{self._path(number)} is damaged at byte {pos} (a record of history)")

    def _reader(self, number: int) -> int:
        if number == self.current:
            return self._fd
        fd = self._readers.get(number)
        if fd is not None:
            self._readers.move_to_end(number)
            return fd
        if len(self._readers) >= OPEN_READERS:
            os.close(self._readers.popitem(last=False)[1])
        fd = self._readers[number] = datadir.open_file(self._path(number), os.O_RDONLY)
        return fd

    def scan(self, number: int, pos: int) -> tuple[list[tuple[Place, list[StoredMessage]]], str]:
        """Every whole record from `pos` in segment `number` to the end of the newest
        segment, with its messages, for the start-up after a kill; a record cut short at the
        very end (a write that never returned, so never acknowledged) is cut off the file,
        and the second value says so (else ""). A bad record anywhere else is a StoreError."""
        found: list[tuple[Place, list[StoredMessage]]] = []
        note = ""
        for n in [n for n in self.numbers if n >= number]:
            path = self._path(n)
            start = pos if n == number else 0
            data = read_file(path, start)
            records, at = whole_records(data, path, start)
            for offset, body in records:
                try:
                    messages = MESSAGES.decode(body)
                except msgspec.DecodeError as exc:
                    raise StoreError(
                        f"{path} is damaged at byte {start + offset} (unreadable record: {exc})"
                    ) from None
                if messages:
                    found.append(((n, start + offset, len(body)), messages))
            if at < len(data):
                if n != self.numbers[-1]:
                    raise StoreError(f"{path} is damaged at byte {start + at} (a record cut short)")
                self._truncate(start + at)
                note = (
                    f"{path}: dropped {len(data) - at} bytes of a write cut short at the end "
                    "(a kill or crash during the write; it was never acknowledged)"
                )
        return found, note

    def _truncate(self, size: int) -> None:
        try:
            os.ftruncate(self._fd, size)
        except OSError as exc:
            raise StoreError(f"cannot write {self._path(self.current)}: {exc}") from None
        self._size = size

    def release(self, places: Iterable[Place]) -> None:
        """Punch the records at `places` (index rows already deleted) out of their files (of
        those that still exist)."""
        spans: dict[int, list[tuple[int, int]]] = {}
        for number, pos, length in places:
            if number not in self.numbers:
                continue
            spans.setdefault(number, []).append((pos, pos + RECORD.size + length))
        for number, ranges in spans.items():
            ranges.sort()
            merged = [ranges[0]]
            for start, end in ranges[1:]:
                if start <= merged[-1][1]:
                    merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
                else:
                    merged.append((start, end))
            fd = datadir.open_file(self._path(number), os.O_WRONLY)
            try:
                for start, end in merged:
                    _punch(fd, start, end - start)
            except OSError as exc:
                raise StoreError(
                    f"cannot trim history in {self._path(number)}: {exc.strerror or exc}"
                ) from None
            finally:
                os.close(fd)

    def remove(self, number: int) -> None:
        """Delete segment `number`, which holds no live record and is not the newest (to
        delete that one, `roll` first and move the index to the new one: the index says where
        records end, so the file appended to never shrinks under it)."""
        assert number != self.current, "roll before removing the newest segment"
        fd = self._readers.pop(number, None)
        if fd is not None:
            os.close(fd)
        self._dirty.discard(number)
        try:
            os.unlink(self._path(number))
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise StoreError(f"cannot trim history in {self.directory}: {exc}") from None
        self.numbers.remove(number)

    def close(self) -> None:
        for fd in self._readers.values():
            os.close(fd)
        self._readers.clear()
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


_FALLOC_FL_KEEP_SIZE = 0x01
_FALLOC_FL_PUNCH_HOLE = 0x02
_libc_name = ctypes.util.find_library("c")
_libc = ctypes.CDLL(_libc_name, use_errno=True) if _libc_name else None
_fallocate = getattr(_libc, "fallocate", None)
if _fallocate is not None:
    _fallocate.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64)
    _fallocate.restype = ctypes.c_int
_ZEROS = bytes(1 << 16)


def _punch(fd: int, start: int, length: int) -> None:
    """Make bytes start..start+length of `fd` zeros: a hole (the blocks are freed) where the
    file system can, else written over."""
    if _fallocate is not None:
        mode = _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE
        if _fallocate(fd, mode, start, length) == 0:
            return
        code = ctypes.get_errno()
        if code not in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
            raise OSError(code, os.strerror(code))
    end = start + length
    while start < end:
        start += os.pwrite(fd, _ZEROS[: min(len(_ZEROS), end - start)], start)
