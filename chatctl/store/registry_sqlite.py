"""The Registry (registry.py) in SQLite: DIR/accounts.sqlite3 beside the history.

Unlike history.sqlite3, this file has two kinds of users at once: the running server (reads an
account at each login, writes rooms' settings) and the operator's `chatctl accounts ...` in
another process. So no flock and no exclusive locking mode: plain WAL, where readers never
wait for a writer and a writer waits at most `busy_timeout_ms` for another (the server passes
a small value, so a slow operator command cannot stall its loop for long). Writes are rare and
must survive a power cut: synchronous=FULL. Every method is one statement (autocommit) or one
transaction, so another process sees a write as soon as the method returns.

Tables: `meta` holds the secret (created once; `INSERT OR IGNORE` then read back, so two
processes opening a new file agree on it); `accounts` is keyed by the casefolded name
(registry.account_key); `rooms` stores the lists of a room's settings as sorted JSON arrays.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

from chatctl.store import datadir
from chatctl.store.errors import StoreError
from chatctl.store.registry import Account, RoomSettings, account_key

SCHEMA_VERSION = 1
DB_NAME = "accounts.sqlite3"
SECRET_BYTES = 32

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL)",
    "CREATE TABLE IF NOT EXISTS accounts ("
    " key TEXT PRIMARY KEY,"  # account_key(name)
    " name TEXT NOT NULL,"
    " password_hash TEXT NOT NULL,"
    " created_ms INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS rooms ("
    " room TEXT PRIMARY KEY,"
    " owner TEXT NOT NULL,"
    " private INTEGER NOT NULL,"
    " topic TEXT NOT NULL,"
    " ops TEXT NOT NULL,"  # JSON arrays of identities, sorted
    " invited TEXT NOT NULL,"
    " banned TEXT NOT NULL)",
)
_ROOM_COLUMNS = "room, owner, private, topic, ops, invited, banned"


def _list(identities: frozenset[str]) -> str:
    return json.dumps(sorted(identities), ensure_ascii=False)


def _set(text: str) -> frozenset[str]:
    return frozenset(json.loads(text))


class SqliteRegistry:
    """Accounts and rooms' settings in `directory`/accounts.sqlite3, shared by processes."""

    def __init__(self, directory: str | os.PathLike[str], *, busy_timeout_ms: int = 2000) -> None:
        self.directory = Path(directory)
        path = self.directory / DB_NAME
        self.location = str(path)
        self._db: sqlite3.Connection | None = None
        datadir.prepare(self.directory)
        # Created here, 0600 and not through a link: SQLite gives its -wal and -shm files the
        # database file's mode.
        os.close(datadir.open_file(path, os.O_RDWR))
        with self._failing("open"):
            self._db = sqlite3.connect(
                path, isolation_level=None, timeout=max(busy_timeout_ms, 0) / 1000
            )
            try:
                self._secret = self._open(self._db)
            except BaseException:
                self.close()
                raise

    def _open(self, db: sqlite3.Connection) -> bytes:
        """Set the connection up; create the schema and the secret if new. The secret."""
        mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise StoreError(f"{self.location}: cannot switch the database to WAL mode")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("BEGIN IMMEDIATE")  # two processes opening a new file: one at a time
        try:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, SCHEMA_VERSION):
                raise StoreError(
                    f"{self.location} has accounts schema version {version}; "
                    f"this chatctl reads {SCHEMA_VERSION}"
                )
            for statement in _SCHEMA:
                db.execute(statement)
            db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            db.execute(
                "INSERT OR IGNORE INTO meta (key, value) VALUES ('secret', ?)",
                (os.urandom(SECRET_BYTES),),
            )
            (secret,) = db.execute("SELECT value FROM meta WHERE key = 'secret'").fetchone()
            db.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            raise
        if not isinstance(secret, bytes) or len(secret) != SECRET_BYTES:
            raise StoreError(f"{self.location}: the stored secret is not {SECRET_BYTES} bytes")
        return secret

    @contextlib.contextmanager
    def _failing(self, what: str) -> Iterator[None]:
        """sqlite3's errors as a one-line StoreError naming the file and what failed."""
        try:
            yield
        except (sqlite3.Error, UnicodeError) as exc:
            detail = " ".join(str(exc).split())
            raise StoreError(f"cannot {what} accounts database {self.location}: {detail}") from None

    def _connection(self) -> sqlite3.Connection:
        if self._db is None:
            raise StoreError(f"the accounts database {self.location} is closed")
        return self._db

    # -- the Registry interface ----------------------------------------------------------------

    def secret(self) -> bytes:
        return self._secret

    def account(self, name: str) -> Account | None:
        with self._failing("read"):
            row = (
                self._connection()
                .execute(
                    "SELECT name, password_hash, created_ms FROM accounts WHERE key = ?",
                    (account_key(name),),
                )
                .fetchone()
            )
        return None if row is None else Account(*row)

    def accounts(self) -> list[Account]:
        with self._failing("read"):
            rows = (
                self._connection()
                .execute("SELECT name, password_hash, created_ms FROM accounts ORDER BY key")
                .fetchall()
            )
        return [Account(*row) for row in rows]

    def account_count(self) -> int:
        with self._failing("read"):
            (count,) = self._connection().execute("SELECT count(*) FROM accounts").fetchone()
        return int(count)

    def add_account(self, name: str, password_hash: str, now_ms: int) -> bool:
        with self._failing("write"):
            cursor = self._connection().execute(
                "INSERT OR IGNORE INTO accounts (key, name, password_hash, created_ms)"
                " VALUES (?, ?, ?, ?)",
                (account_key(name), name, password_hash, now_ms),
            )
        return cursor.rowcount == 1

    def set_password(self, name: str, password_hash: str) -> bool:
        with self._failing("write"):
            cursor = self._connection().execute(
                "UPDATE accounts SET password_hash = ? WHERE key = ?",
                (password_hash, account_key(name)),
            )
        return cursor.rowcount == 1

    def remove_account(self, name: str) -> bool:
        with self._failing("write"):
            cursor = self._connection().execute(
                "DELETE FROM accounts WHERE key = ?", (account_key(name),)
            )
        return cursor.rowcount == 1

    def room_settings(self) -> list[RoomSettings]:
        with self._failing("read"):
            rows = (
                self._connection()
                .execute(f"SELECT {_ROOM_COLUMNS} FROM rooms ORDER BY room")
                .fetchall()
            )
        try:
            return [
                RoomSettings(
                    room, owner, bool(private), topic, _set(ops), _set(invited), _set(banned)
                )
                for room, owner, private, topic, ops, invited, banned in rows
            ]
        except (ValueError, TypeError) as exc:
            raise StoreError(f"{self.location}: a room's settings are damaged: {exc}") from None

    def save_room(self, settings: RoomSettings) -> None:
        s = settings
        with self._failing("write"):
            self._connection().execute(
                f"INSERT OR REPLACE INTO rooms ({_ROOM_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    s.room,
                    s.owner,
                    int(s.private),
                    s.topic,
                    _list(s.ops),
                    _list(s.invited),
                    _list(s.banned),
                ),
            )

    def forget_room(self, room: str) -> None:
        with self._failing("write"):
            self._connection().execute("DELETE FROM rooms WHERE room = ?", (room,))

    def close(self) -> None:
        if self._db is not None:
            with contextlib.suppress(sqlite3.Error):
                self._db.close()
            self._db = None
