"""The history interface: what the hub and the server need of a store, whatever keeps it.

The hub assigns sequence numbers (head + 1) and calls `append`; the event loop calls `flush`
once per loop turn, before it writes any ack or delivery, so that nothing acknowledged can be
lost. Implementations: memory.py (`--data :memory:`), sqlite.py (a data directory); url.py
opens the one a `--data` value names.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

import msgspec


def sender_key_of(token: str) -> str:
    """What a store keeps to recognise a sender's resends: a hash of its resume token, never
    the token itself (whoever reads the store must not be able to resume a session)."""
    return hashlib.blake2b(token.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


class StoredMessage(msgspec.Struct, frozen=True, gc=False, array_like=True):
    """One message as stored. One is built for every message on the hot path and the history
    in memory holds up to hundreds of thousands: a msgspec Struct is built in C (about a
    third of a named tuple's time), and with gc=False (its fields are strings, ints and a
    bool: it can never be in a reference cycle) the garbage collector never scans it.
    Build it positionally: keywords cost more. The SQLite store writes lists of them to its
    segment files with msgspec, each as an array (`array_like`: no field names)."""

    room: str
    seq: int
    ts: int  # Unix milliseconds, server clock
    sender: str
    text: str
    action: bool = False
    sender_key: str = ""  # sender_key_of(the sender's resume token): with msg_id, a resend
    msg_id: str = ""


@dataclass(frozen=True, slots=True)
class ReadResult:
    messages: list[StoredMessage]
    # Sequence numbers asked for but no longer stored (trimmed): (first, last), inclusive.
    gap: tuple[int, int] | None = None


def text_size(message: StoredMessage) -> int:
    """What a message counts against a read's `max_bytes`: its text in UTF-8 bytes (never
    more than the Message frame that carries it, which escapes but never shrinks it)."""
    text = message.text
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


def take(messages: Iterable[StoredMessage], max_bytes: int | None) -> list[StoredMessage]:
    """The leading `messages` whose texts fit in `max_bytes` together, and always the first
    one (a reader pages on from the last message it got, so a page is never empty). Stops
    consuming `messages` at the first one that does not fit: a lazy source (an SQL cursor)
    is read at most one message past the budget."""
    if max_bytes is None:
        return list(messages)
    out: list[StoredMessage] = []
    spent = 0
    for message in messages:
        spent += text_size(message)
        if spent > max_bytes and out:
            break
        out.append(message)
    return out


class Store(Protocol):
    # Where the history lives, for the server's banner: ":memory:", a directory, a URL.
    location: str
    # What opening it found and repaired (a torn journal write, say), for the server's log.
    notes: list[str]

    def rooms(self) -> list[str]:
        """Every room with stored history."""

    def head(self, room: str) -> int:
        """The room's latest sequence number; 0 for a room never written."""

    def append(self, message: StoredMessage) -> None:
        """Add a message with seq == head(room) + 1. Durable only after `flush`."""

    def flush(self) -> None:
        """Make every appended message durable (one transaction for the whole batch)."""

    def read(self, room: str, after: int, limit: int, max_bytes: int | None = None) -> ReadResult:
        """Up to `limit` messages with seq > after, oldest first, and the gap before them;
        with `max_bytes`, only as many as `take` keeps (texts within the budget, at least
        one): the store must not read many more than that."""

    def latest(self, room: str, limit: int, max_bytes: int | None = None) -> list[StoredMessage]:
        """The last `limit` messages of the room, oldest first; with `max_bytes`, only the
        newest of them that `take` keeps (counting from the newest back)."""

    def find(self, sender_key: str, msg_id: str) -> StoredMessage | None:
        """The message this sender already sent with this id, if it is still known."""

    def trim(self, now_ms: int) -> int:
        """Apply retention; return how many messages were removed."""

    def close(self) -> None:
        """Flush and release resources. Idempotent."""
