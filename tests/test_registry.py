"""The registry of accounts and rooms' settings: MemoryRegistry and SqliteRegistry against one
contract; SqliteRegistry against MemoryRegistry as a model (random writes through two open
instances, reopening); and what SQLite adds: a secret that is kept and shared, private files,
and use by several processes at once without the history store's lock."""

from __future__ import annotations

import os
import shutil
import sqlite3
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from chatctl.store.errors import StoreError
from chatctl.store.registry import Account, MemoryRegistry, Registry, RoomSettings
from chatctl.store.registry_sqlite import DB_NAME, SCHEMA_VERSION, SqliteRegistry
from chatctl.store.sqlite import SqliteStore
from chatctl.store.url import open_registry
from tests.servers import dies_with_parent


@pytest.fixture(params=["memory", "sqlite"])
def registry(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Registry]:
    opened: Registry = MemoryRegistry() if request.param == "memory" else SqliteRegistry(tmp_path)
    try:
        yield opened
    finally:
        opened.close()


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


# -- the contract, both implementations ------------------------------------------------------


def test_a_new_registry_is_empty(registry: Registry) -> None:
    assert registry.account("alice") is None
    assert registry.accounts() == []
    assert registry.room_settings() == []


def test_accounts_are_found_in_any_case_under_their_registered_name(registry: Registry) -> None:
    assert registry.add_account("Alice", "h1", 1000)
    for name in ("Alice", "alice", "ALICE", "aLiCe"):
        assert registry.account(name) == Account("Alice", "h1", 1000)
    assert not registry.add_account("aLICE", "h2", 2000)  # the same name in another case
    assert registry.accounts() == [Account("Alice", "h1", 1000)]


def test_accounts_are_listed_by_their_casefolded_name(registry: Registry) -> None:
    for name in ("carol", "Bob", "alice", "Dave"):
        assert registry.add_account(name, "h", 0)
    assert [a.name for a in registry.accounts()] == ["alice", "Bob", "carol", "Dave"]


def test_set_password_keeps_name_and_creation_time(registry: Registry) -> None:
    assert not registry.set_password("alice", "h2")
    assert registry.add_account("Alice", "h1", 1000)
    assert registry.set_password("ALICE", "h2")
    assert registry.account("alice") == Account("Alice", "h2", 1000)


def test_remove_account(registry: Registry) -> None:
    assert not registry.remove_account("alice")
    registry.add_account("Alice", "h1", 1000)
    registry.add_account("bob", "h1", 1000)
    assert registry.remove_account("ALICE")
    assert not registry.remove_account("alice")
    assert registry.account("alice") is None
    assert [a.name for a in registry.accounts()] == ["bob"]
    assert registry.account_count() == 1
    assert registry.add_account("alice", "h3", 3000)  # the name is free again


def test_rooms_settings_round_trip_and_are_replaced(registry: Registry) -> None:
    full = RoomSettings(
        "dev",
        owner="Alice",
        private=True,
        topic="release 2.0 ✨",
        ops=frozenset({"bob", "carol"}),
        invited=frozenset({"dave"}),
        banned=frozenset({"mallory", "eve"}),
    )
    registry.save_room(RoomSettings("lobby"))
    registry.save_room(full.replace(topic="old"))
    registry.save_room(full)
    rooms = {s.room: s for s in registry.room_settings()}
    assert rooms == {"lobby": RoomSettings("lobby"), "dev": full}


def test_the_secret_is_32_bytes_and_stable(registry: Registry) -> None:
    secret = registry.secret()
    assert isinstance(secret, bytes) and len(secret) == 32
    assert registry.secret() == secret


def test_close_is_idempotent(registry: Registry) -> None:
    registry.close()
    registry.close()


# -- SQLite against the model ------------------------------------------------------------------

# Names that differ in case (and "straße"/"STRASSE", equal once casefolded).
NAMES = st.sampled_from(["alice", "bob", "straße", "x[1]"]).flatmap(
    lambda base: st.tuples(*(st.sampled_from([c.lower(), c.upper()]) for c in base)).map("".join)
)
HASHES = st.sampled_from(["scrypt$a", "scrypt$b"]) | st.text(max_size=12)
IDENTITIES = st.frozensets(st.sampled_from(["alice", "bob", "guest", "é"]) | st.text(max_size=6))
ROOM_SETTINGS = st.builds(
    RoomSettings,
    room=st.sampled_from(["lobby", "dev", "ops"]),
    owner=st.sampled_from(["", "alice", "Bob"]),
    private=st.booleans(),
    topic=st.text(max_size=30),
    ops=IDENTITIES,
    invited=IDENTITIES,
    banned=IDENTITIES,
)
WHICH = st.integers(0, 1)  # through which of the two open SqliteRegistry instances


class RegistryMachine(RuleBasedStateMachine):
    """Two SqliteRegistry instances on one directory (as the server and `chatctl accounts`
    would have) take random writes; MemoryRegistry takes the same; both instances must always
    read what the model holds, also after reopening the file."""

    def __init__(self) -> None:
        super().__init__()
        self.directory = tempfile.mkdtemp(prefix="chatctl-registry-")
        self.model = MemoryRegistry()
        self.real = [SqliteRegistry(self.directory), SqliteRegistry(self.directory)]
        self.secret = self.real[0].secret()

    @rule(which=WHICH, name=NAMES, password_hash=HASHES, now_ms=st.integers(0, 2**53))
    def add(self, which: int, name: str, password_hash: str, now_ms: int) -> None:
        expected = self.model.add_account(name, password_hash, now_ms)
        assert self.real[which].add_account(name, password_hash, now_ms) == expected

    @rule(which=WHICH, name=NAMES, password_hash=HASHES)
    def passwd(self, which: int, name: str, password_hash: str) -> None:
        expected = self.model.set_password(name, password_hash)
        assert self.real[which].set_password(name, password_hash) == expected

    @rule(which=WHICH, name=NAMES)
    def remove(self, which: int, name: str) -> None:
        expected = self.model.remove_account(name)
        assert self.real[which].remove_account(name) == expected

    @rule(which=WHICH, settings=ROOM_SETTINGS)
    def save_room(self, which: int, settings: RoomSettings) -> None:
        self.model.save_room(settings)
        self.real[which].save_room(settings)

    @rule(which=WHICH, settings=ROOM_SETTINGS)
    def forget_room(self, which: int, settings: RoomSettings) -> None:
        self.model.forget_room(settings.room)  # a room with settings, or one without
        self.real[which].forget_room(settings.room)

    @rule()
    def reopen(self) -> None:
        for registry in self.real:
            registry.close()
        self.real = [SqliteRegistry(self.directory), SqliteRegistry(self.directory)]

    @rule(which=WHICH, name=NAMES)
    def look_up(self, which: int, name: str) -> None:
        assert self.real[which].account(name) == self.model.account(name)

    @invariant()
    def same_as_the_model(self) -> None:
        rooms = {s.room: s for s in self.model.room_settings()}
        for registry in self.real:
            assert registry.accounts() == self.model.accounts()
            assert registry.account_count() == self.model.account_count()
            assert {s.room: s for s in registry.room_settings()} == rooms
            assert registry.secret() == self.secret

    def teardown(self) -> None:
        for registry in self.real:
            registry.close()
        shutil.rmtree(self.directory, ignore_errors=True)


# Every write is fsynced (synchronous=FULL, ~4 ms here): shorter runs keep the test to seconds.
RegistryMachine.TestCase.settings = settings(stateful_step_count=25)
TestRegistryStateful = RegistryMachine.TestCase


# -- SQLite: the file, its secret, its users ------------------------------------------------


def test_the_secret_survives_reopening(tmp_path: Path) -> None:
    first = SqliteRegistry(tmp_path)
    secret = first.secret()
    first.close()
    again = SqliteRegistry(tmp_path)
    assert again.secret() == secret
    again.close()
    other = SqliteRegistry(tmp_path / "elsewhere")
    assert other.secret() != secret
    other.close()


def test_two_open_instances_share_the_secret(tmp_path: Path) -> None:
    one, two = SqliteRegistry(tmp_path), SqliteRegistry(tmp_path)
    try:
        assert one.secret() == two.secret()
    finally:
        one.close()
        two.close()


def test_processes_opening_a_new_file_at_once_agree_on_the_secret(tmp_path: Path) -> None:
    script = (
        "import sys; from chatctl.store.registry_sqlite import SqliteRegistry; "
        "r = SqliteRegistry(sys.argv[1]); print(r.secret().hex()); r.close()"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(tmp_path / "data")],
            stdout=subprocess.PIPE,
            text=True,
            preexec_fn=dies_with_parent(),  # noqa: PLW1509 (two system calls, see servers.py)
        )
        for _ in range(6)
    ]
    secrets = {proc.communicate(timeout=60)[0].strip() for proc in procs}
    assert all(proc.returncode == 0 for proc in procs)
    assert len(secrets) == 1 and len(bytes.fromhex(secrets.pop())) == 32


def test_files_are_private_whatever_the_umask(tmp_path: Path) -> None:
    directory = tmp_path / "data"
    old = os.umask(0)
    try:
        registry = SqliteRegistry(directory)
        registry.add_account("alice", "h", 0)
        reader = SqliteRegistry(directory)
        assert reader.account("alice") is not None  # the -shm file exists now
        files = sorted(p.name for p in directory.iterdir())
        assert {DB_NAME, f"{DB_NAME}-wal", f"{DB_NAME}-shm"} <= set(files)
        assert mode(directory) == 0o700
        for name in files:
            assert mode(directory / name) == 0o600, name
        reader.close()
        registry.close()
    finally:
        os.umask(old)


def test_a_second_instance_sees_writes_at_once(tmp_path: Path) -> None:
    server, operator = SqliteRegistry(tmp_path, busy_timeout_ms=200), SqliteRegistry(tmp_path)
    try:
        assert server.account("alice") is None  # a read before the write: no stale snapshot
        assert operator.add_account("Alice", "h1", 5)
        assert server.account("alice") == Account("Alice", "h1", 5)
        assert operator.set_password("alice", "h2")
        assert server.account("ALICE") == Account("Alice", "h2", 5)
        server.save_room(RoomSettings("dev", owner="Alice", ops=frozenset({"bob"})))
        assert operator.room_settings() == [
            RoomSettings("dev", owner="Alice", ops=frozenset({"bob"}))
        ]
        assert operator.remove_account("alice")
        assert server.account("alice") is None
        assert server.add_account("bob", "h", 0)  # writes from both sides
        assert [a.name for a in operator.accounts()] == ["bob"]
    finally:
        server.close()
        operator.close()


def test_a_held_write_lock_blocks_writers_briefly_and_readers_not_at_all(tmp_path: Path) -> None:
    registry = SqliteRegistry(tmp_path, busy_timeout_ms=100)
    registry.add_account("alice", "h", 0)
    other = sqlite3.connect(tmp_path / DB_NAME, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    other.execute("DELETE FROM accounts")  # not committed: nobody sees it
    try:
        assert registry.account("alice") == Account("alice", "h", 0)
        started = time.monotonic()
        with pytest.raises(StoreError, match="database is locked") as caught:
            registry.add_account("bob", "h", 0)
        assert 0.05 < time.monotonic() - started < 5
        assert "\n" not in str(caught.value) and DB_NAME in str(caught.value)
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert registry.add_account("bob", "h", 0)  # the lock gone, writes go through
    registry.close()


def test_the_history_store_lock_is_not_taken(tmp_path: Path) -> None:
    """The server holds the history lock; the registry opens beside it, either way round."""
    store = SqliteStore(tmp_path)
    registry = SqliteRegistry(tmp_path)
    second = SqliteRegistry(tmp_path)
    registry.add_account("alice", "h", 0)
    assert second.account("alice") is not None
    second.close()
    registry.close()
    store.close()


def test_a_newer_schema_is_refused_in_one_line(tmp_path: Path) -> None:
    SqliteRegistry(tmp_path).close()
    db = sqlite3.connect(tmp_path / DB_NAME)
    db.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(StoreError, match=r"accounts schema version 2; this chatctl reads 1"):
        SqliteRegistry(tmp_path)


def test_a_file_that_is_not_a_database_is_refused_in_one_line(tmp_path: Path) -> None:
    (tmp_path / DB_NAME).write_bytes(b"not a database at all\n" * 100)
    os.chmod(tmp_path / DB_NAME, 0o600)
    with pytest.raises(StoreError) as caught:
        SqliteRegistry(tmp_path)
    message = str(caught.value)
    assert "\n" not in message and DB_NAME in message and "not a database" in message


def test_a_symlink_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "target"
    target.write_bytes(b"")
    (tmp_path / "data").mkdir(mode=0o700)
    (tmp_path / "data" / DB_NAME).symlink_to(target)
    with pytest.raises(StoreError, match="symbolic link"):
        SqliteRegistry(tmp_path / "data")


def test_a_closed_registry_raises_store_error(tmp_path: Path) -> None:
    registry = SqliteRegistry(tmp_path)
    registry.close()
    with pytest.raises(StoreError, match="closed"):
        registry.account("alice")


def test_open_registry_picks_the_implementation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    memory = open_registry(":memory:")
    assert isinstance(memory, MemoryRegistry) and memory.location == ":memory:"
    directory = open_registry(str(tmp_path / "d"))
    assert isinstance(directory, SqliteRegistry)
    assert directory.location == str(tmp_path / "d" / DB_NAME)
    directory.close()
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    default = open_registry(None)
    assert default.location == str(tmp_path / "state" / "chatctl" / DB_NAME)
    default.close()
