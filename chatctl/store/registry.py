"""Who owns what: accounts, and the settings of rooms (owner, operators, privacy, topic,
invitations, bans). Beside the history store, behind its own interface, because it has other
writers and readers: the operator's `chatctl accounts` edits accounts while the server runs,
and the server reads an account at each login, not once at start-up.

Implementations: MemoryRegistry here (`--data :memory:`: accounts exist only through in-chat
registration, and die with the process), SqliteRegistry in registry_sqlite.py (a data
directory's accounts.sqlite3); url.py opens the one a `--data` value names.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Protocol

# Bounds on what one room's settings may hold (a hostile owner could otherwise grow them).
TOPIC_MAX = 300
LIST_MAX = 1000  # entries in each of ops, invited and banned
# Accounts past which in-chat registration stops (the operator's `chatctl accounts add` does
# not): what anonymous clients can make the server store is bounded.
REGISTERED_MAX = 100_000


def account_key(name: str) -> str:
    """Accounts are looked up case-insensitively, as nicks are (an account reserves its nick)."""
    return name.casefold()


@dataclass(frozen=True, slots=True)
class Account:
    name: str  # as registered; also the nick it reserves
    password_hash: str  # passwords.hash_password's string
    created_ms: int = 0


@dataclass(frozen=True, slots=True)
class RoomSettings:
    """A room's settings. `ops`, `invited` and `banned` hold identities: an account name, or
    a guest's nick, casefolded (account_key)."""

    room: str
    owner: str = ""  # the owner account's name; "" for a room nobody owns
    private: bool = False
    topic: str = ""
    ops: frozenset[str] = frozenset()
    invited: frozenset[str] = frozenset()
    banned: frozenset[str] = frozenset()

    def replace(self, **changes: object) -> RoomSettings:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]


class Registry(Protocol):
    # Where it lives, for the server's banner.
    location: str

    def secret(self) -> bytes:
        """A random 32-byte key, created once and kept: the server signs resume tokens with
        it (a token names the account it belongs to)."""

    def account(self, name: str) -> Account | None:
        """The account called `name` (any case), or None."""

    def accounts(self) -> list[Account]:
        """Every account, by name."""

    def account_count(self) -> int:
        """How many accounts there are."""

    def add_account(self, name: str, password_hash: str, now_ms: int) -> bool:
        """Create an account; False when one of that name (any case) exists."""

    def set_password(self, name: str, password_hash: str) -> bool:
        """False when there is no such account."""

    def remove_account(self, name: str) -> bool:
        """False when there is no such account."""

    def room_settings(self) -> list[RoomSettings]:
        """Every room with settings (the server loads them all at start-up)."""

    def save_room(self, settings: RoomSettings) -> None:
        """Store a room's settings (replacing any), durably before it returns."""

    def forget_room(self, room: str) -> None:
        """Drop a room's settings, if any (a cluster node loading a snapshot that has none)."""

    def close(self) -> None:
        """Idempotent."""


class MemoryRegistry:
    """Everything in dicts, for `--data :memory:` and tests."""

    def __init__(self) -> None:
        self.location = ":memory:"
        self._secret = os.urandom(32)
        self._accounts: dict[str, Account] = {}
        self._rooms: dict[str, RoomSettings] = {}

    def secret(self) -> bytes:
        return self._secret

    def account(self, name: str) -> Account | None:
        return self._accounts.get(account_key(name))

    def accounts(self) -> list[Account]:
        return sorted(self._accounts.values(), key=lambda a: account_key(a.name))

    def account_count(self) -> int:
        return len(self._accounts)

    def add_account(self, name: str, password_hash: str, now_ms: int) -> bool:
        key = account_key(name)
        if key in self._accounts:
            return False
        self._accounts[key] = Account(name, password_hash, now_ms)
        return True

    def set_password(self, name: str, password_hash: str) -> bool:
        old = self._accounts.get(account_key(name))
        if old is None:
            return False
        self._accounts[account_key(name)] = dataclasses.replace(old, password_hash=password_hash)
        return True

    def remove_account(self, name: str) -> bool:
        return self._accounts.pop(account_key(name), None) is not None

    def room_settings(self) -> list[RoomSettings]:
        return list(self._rooms.values())

    def save_room(self, settings: RoomSettings) -> None:
        self._rooms[settings.room] = settings

    def forget_room(self, room: str) -> None:
        self._rooms.pop(room, None)

    def close(self) -> None:
        pass
