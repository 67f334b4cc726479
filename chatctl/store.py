"""Message history behind one small interface, so the hub never knows where it is kept.

The hub assigns sequence numbers (head + 1) and calls `append`; the event loop calls `flush`
once per loop turn, before it writes any ack or delivery, so that nothing acknowledged can be
lost. `MemoryStore` keeps everything in this process (`--data :memory:`); the durable SQLite
store lives in sqlite_store.py and `open_store` picks between them.
"""

from __future__ import annotations

import os
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

MEMORY = ":memory:"  # `--data :memory:`: history lives and dies with the process


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredMessage:
    room: str
    seq: int
    ts: int  # Unix milliseconds, server clock
    sender: str
    text: str
    action: bool = False
    sender_key: str = ""  # the sender's session token: with msg_id, recognises a resend
    msg_id: str = ""


@dataclass(frozen=True, slots=True)
class ReadResult:
    messages: list[StoredMessage]
    # Sequence numbers asked for but no longer stored (trimmed): (first, last), inclusive.
    gap: tuple[int, int] | None = None


class Store(Protocol):
    def rooms(self) -> list[str]:
        """Every room with stored history."""

    def head(self, room: str) -> int:
        """The room's latest sequence number; 0 for a room never written."""

    def append(self, message: StoredMessage) -> None:
        """Add a message with seq == head(room) + 1. Durable only after `flush`."""

    def flush(self) -> None:
        """Make every appended message durable (one transaction for the whole batch)."""

    def read(self, room: str, after: int, limit: int) -> ReadResult:
        """Up to `limit` messages with seq > after, oldest first, and the gap before them."""

    def latest(self, room: str, limit: int) -> list[StoredMessage]:
        """The last `limit` messages of the room, oldest first."""

    def find(self, sender_key: str, msg_id: str) -> StoredMessage | None:
        """The message this sender already sent with this id, if it is still known."""

    def trim(self, now_ms: int) -> int:
        """Apply retention; return how many messages were removed."""

    def close(self) -> None:
        """Flush and release resources. Idempotent."""


class MemoryStore:
    """History in this process only: bounded per room, gone at exit."""

    def __init__(self, *, retain_messages: int = 100_000, retain_age: float = 0.0) -> None:
        self.retain_messages = retain_messages
        self.retain_age = retain_age
        self._rooms: dict[str, deque[StoredMessage]] = {}
        self._heads: dict[str, int] = {}
        self._by_id: dict[tuple[str, str], StoredMessage] = {}

    def rooms(self) -> list[str]:
        return list(self._heads)

    def head(self, room: str) -> int:
        return self._heads.get(room, 0)

    def append(self, message: StoredMessage) -> None:
        expected = self._heads.get(message.room, 0) + 1
        if message.seq != expected:
            raise ValueError(f"seq {message.seq} appended to {message.room!r}, expected {expected}")
        log = self._rooms.get(message.room)
        if log is None:
            log = self._rooms[message.room] = deque()
        log.append(message)
        self._heads[message.room] = message.seq
        if message.msg_id:
            self._by_id[(message.sender_key, message.msg_id)] = message
        if self.retain_messages and len(log) > self.retain_messages:
            self._forget(log.popleft())

    def flush(self) -> None:
        pass

    def read(self, room: str, after: int, limit: int) -> ReadResult:
        log = self._rooms.get(room)
        head = self._heads.get(room, 0)
        if not log or after >= head:
            gap = (after + 1, head) if after < head else None
            return ReadResult([], gap)
        first = log[0].seq
        gap = (after + 1, first - 1) if after + 1 < first else None
        start = max(after + 1 - first, 0)
        return ReadResult([log[i] for i in range(start, min(start + limit, len(log)))], gap)

    def latest(self, room: str, limit: int) -> list[StoredMessage]:
        log = self._rooms.get(room)
        if not log or limit <= 0:
            return []
        return [log[i] for i in range(max(len(log) - limit, 0), len(log))]

    def find(self, sender_key: str, msg_id: str) -> StoredMessage | None:
        return self._by_id.get((sender_key, msg_id))

    def trim(self, now_ms: int) -> int:
        if not self.retain_age:
            return 0
        cutoff = now_ms - int(self.retain_age * 1000)
        removed = 0
        for log in self._rooms.values():
            while log and log[0].ts < cutoff:
                self._forget(log.popleft())
                removed += 1
        return removed

    def close(self) -> None:
        pass

    def _forget(self, message: StoredMessage) -> None:
        if message.msg_id:
            self._by_id.pop((message.sender_key, message.msg_id), None)


def default_data_dir() -> Path:
    """$XDG_STATE_HOME/chatctl, or ~/.local/state/chatctl (the XDG base directory default)."""
    state = os.environ.get("XDG_STATE_HOME", "")
    # The spec says to ignore a relative value.
    base = Path(state) if os.path.isabs(state) else Path.home() / ".local" / "state"
    return base / "chatctl"


def open_store(data: str | None, *, retain_messages: int, retain_age: float) -> Store:
    """The store for `--data`: ':memory:' keeps nothing; a directory (default: the XDG state
    directory, created if needed) holds a durable SQLite store. Raises ChatctlError with a
    one-line message when the directory cannot be used."""
    if data == MEMORY:
        return MemoryStore(retain_messages=retain_messages, retain_age=retain_age)
    from chatctl.sqlite_store import SqliteStore

    directory = Path(data).expanduser() if data else default_data_dir()
    return SqliteStore(directory, retain_messages=retain_messages, retain_age=retain_age)
