"""Open the store, and the registry of accounts, that a `--data` value names: `:memory:`, or a
directory (default: the XDG state directory) holding the durable SQLite store and
accounts.sqlite3, or `redis://HOST:PORT[/DB]`: a node of a cluster (docs/cluster.md), whose
history is kept in this process as the shared log feeds it (server/replication.py)."""

from __future__ import annotations

import os
from pathlib import Path

from chatctl.errors import ChatctlError
from chatctl.redis_url import is_redis, parse_redis_url
from chatctl.store.base import Store
from chatctl.store.memory import MemoryStore
from chatctl.store.registry import MemoryRegistry, Registry

MEMORY = ":memory:"  # `--data :memory:`: history lives and dies with the process (memory.py)


def default_data_dir() -> Path:
    """$XDG_STATE_HOME/chatctl, or ~/.local/state/chatctl (the XDG base directory default)."""
    state = os.environ.get("XDG_STATE_HOME", "")
    # The spec says to ignore a relative value.
    base = Path(state) if os.path.isabs(state) else Path.home() / ".local" / "state"
    return base / "chatctl"


def data_directory(data: str | None) -> Path:
    """The directory a `--data` value other than ':memory:' names (None: the default)."""
    if is_redis(data):
        raise ChatctlError(f"--data {data} names no directory (a cluster node keeps no files)")
    return Path(data).expanduser() if data else default_data_dir()


def open_store(data: str | None, *, retain_messages: int, retain_age: float) -> Store:
    """The store for `--data`: ':memory:' keeps nothing; a directory (default: the XDG state
    directory, created if needed) holds a durable SQLite store. Raises ChatctlError with a
    one-line message when the directory cannot be used."""
    if data == MEMORY or is_redis(data):
        store = MemoryStore(retain_messages=retain_messages, retain_age=retain_age)
        if data != MEMORY:
            store.location = f"{parse_redis_url(data or '')} (history in memory, fed by the log)"
        return store
    from chatctl.store.sqlite import SqliteStore

    return SqliteStore(data_directory(data), retain_messages=retain_messages, retain_age=retain_age)


def open_registry(data: str | None, *, busy_timeout_ms: int = 2000) -> Registry:
    """The registry of accounts and rooms' settings for `--data`: ':memory:' keeps them in the
    process; a directory (default: the XDG state directory, created if needed) holds
    accounts.sqlite3, which other processes may use at the same time (a writer waits up to
    `busy_timeout_ms` for another). Raises StoreError with a one-line message when the
    directory or the file cannot be used."""
    if data == MEMORY or is_redis(data):  # a node's: fed by the log (server/clusterhub.py)
        return MemoryRegistry()
    from chatctl.store.registry_sqlite import SqliteRegistry

    return SqliteRegistry(data_directory(data), busy_timeout_ms=busy_timeout_ms)
