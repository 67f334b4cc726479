"""The journal of schemas 5 and 6, read once at start-up when a server of those left one behind
(it was killed with messages journaled and not yet in SQLite); schema 7 writes every message
straight into its segment (segments.py) and has no journal.

A record is the body's length and CRC-32, then the batch's messages: a MessagePack array of
`StoredMessage` arrays (schema 6), or marshalled row tuples (schema 5 and before; the first
byte tells: a marshalled list starts with `[` or 0xdb, a MessagePack array with 0x90-0x9f,
0xdc or 0xdd). A record cut short at the end is a write that never returned, so it was never
acknowledged: it is dropped.
"""

from __future__ import annotations

import marshal
from pathlib import Path

import msgspec

from chatctl.store.base import StoredMessage
from chatctl.store.errors import StoreError
from chatctl.store.segments import MESSAGES, read_file, whole_records

JOURNAL_NAME = "journal"
# The journal of a schema-1 to 3 server (its sender keys are resume tokens) once the start that
# migrates its database has renamed it: the name keeps that fact after the version is gone.
TOKENS_JOURNAL_NAME = "journal-tokens"
# The first byte of a marshalled list (with or without marshal's reference flag).
MARSHALLED = (ord("["), ord("[") | 0x80)


def replay_journal(path: Path) -> tuple[list[StoredMessage], int]:
    """Every message of every whole record of the journal at `path`, in order, and how many
    bytes of a torn record at the end were dropped. A record whose checksum or content is
    wrong is a StoreError naming the file and the byte where it starts."""
    data = read_file(path)
    records, end = whole_records(data, path, 0)
    messages: list[StoredMessage] = []
    for pos, body in records:
        messages += _messages(body, path, pos)
    return messages, len(data) - end


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
