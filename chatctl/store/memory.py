"""History in this process only (`--data :memory:`): bounded per room, gone at exit.

Memory: per room with history, for ever, a head, and a log (a deque, ~600 bytes empty) until
retention empties it; per stored message a few hundred bytes plus its text and msg_id, at
most `retain_messages` of them per room. The hub caps the rooms at `total_rooms`.
"""

from __future__ import annotations

from collections import deque

from chatctl.store.base import ReadResult, StoredMessage, take


class MemoryStore:
    """History in this process only: bounded per room, gone at exit."""

    def __init__(self, *, retain_messages: int = 100_000, retain_age: float = 0.0) -> None:
        self.location = ":memory:"
        self.notes: list[str] = []
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
        room = message.room
        seq = message.seq
        expected = self._heads.get(room, 0) + 1
        if seq != expected:
            raise ValueError(f"seq {seq} appended to {room!r}, expected {expected}")
        log = self._rooms.get(room)
        if log is None:
            log = self._rooms[room] = deque()
        log.append(message)
        self._heads[room] = seq
        if message.msg_id:
            self._by_id[(message.sender_key, message.msg_id)] = message
        retain = self.retain_messages
        if retain and len(log) > retain:
            self._forget(log.popleft())

    def flush(self) -> None:
        pass

    def read(self, room: str, after: int, limit: int, max_bytes: int | None = None) -> ReadResult:
        log = self._rooms.get(room)
        head = self._heads.get(room, 0)
        if not log or after >= head:
            gap = (after + 1, head) if after < head else None
            return ReadResult([], gap)
        first = log[0].seq
        gap = (after + 1, first - 1) if after + 1 < first else None
        start = max(after + 1 - first, 0)
        span = range(start, min(start + limit, len(log)))
        return ReadResult(take((log[i] for i in span), max_bytes), gap)

    def latest(self, room: str, limit: int, max_bytes: int | None = None) -> list[StoredMessage]:
        log = self._rooms.get(room)
        if not log or limit <= 0:
            return []
        newest_first = (log[i] for i in range(len(log) - 1, max(len(log) - limit, 0) - 1, -1))
        found = take(newest_first, max_bytes)
        found.reverse()
        return found

    def find(self, sender_key: str, msg_id: str) -> StoredMessage | None:
        return self._by_id.get((sender_key, msg_id))

    def trim(self, now_ms: int) -> int:
        if not self.retain_age:
            return 0
        cutoff = now_ms - int(self.retain_age * 1000)
        removed = 0
        emptied = []
        for room, log in self._rooms.items():
            while log and log[0].ts < cutoff:
                self._forget(log.popleft())
                removed += 1
            if not log:
                emptied.append(room)
        for room in emptied:  # the head stays: sequence numbers go on
            del self._rooms[room]
        return removed

    def close(self) -> None:
        pass

    def export(self) -> tuple[list[tuple[str, int]], list[StoredMessage]]:
        """Every room's head, and every retained message, room by room, oldest first: a
        cluster's snapshot (cluster/snapshot.py)."""
        return list(self._heads.items()), [m for log in self._rooms.values() for m in log]

    def load(self, heads: list[tuple[str, int]], messages: list[StoredMessage]) -> None:
        """Replace everything by what `export` gave."""
        self._rooms.clear()
        self._by_id.clear()
        self._heads = dict(heads)
        for message in messages:
            log = self._rooms.get(message.room)
            if log is None:
                log = self._rooms[message.room] = deque()
            log.append(message)
            if message.msg_id:
                self._by_id[(message.sender_key, message.msg_id)] = message

    def _forget(self, message: StoredMessage) -> None:
        if message.msg_id:
            self._by_id.pop((message.sender_key, message.msg_id), None)
