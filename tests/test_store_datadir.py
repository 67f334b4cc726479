"""The data directory is the server user's alone: modes, owners, symlinks, damaged segment
files and journals."""

from __future__ import annotations

import marshal
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest

from chatctl.store.base import StoredMessage
from chatctl.store.errors import StoreError
from chatctl.store.journal import JOURNAL_NAME
from chatctl.store.sqlite import DB_NAME, SqliteStore
from tests.servers import Client, run_chatctl, running_server, serve_process
from tests.store_files import record

SEGMENT = "messages-000001.log"


def message(seq: int) -> StoredMessage:
    return StoredMessage(room="lobby", seq=seq, ts=seq, sender="ann", text=f"m{seq}")


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


@pytest.fixture
def open_umask() -> Iterator[None]:
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def test_files_are_private_whatever_the_umask(tmp_path: Path, open_umask: None) -> None:
    directory = tmp_path / "data"
    store = SqliteStore(directory)
    store.append(message(1))
    store.flush()
    store.stored_rows()  # indexed in SQLite: the -wal file exists now
    created = sorted(p.name for p in directory.iterdir())
    assert set(created) == {DB_NAME, f"{DB_NAME}-wal", SEGMENT, "lock"}
    assert mode(directory) == 0o700
    for name in created:
        assert mode(directory / name) == 0o600, name
    store.close()


def test_existing_files_readable_by_others_are_made_private(tmp_path: Path) -> None:
    SqliteStore(tmp_path).close()
    os.chmod(tmp_path, 0o755)
    os.chmod(tmp_path / DB_NAME, 0o644)
    SqliteStore(tmp_path).close()
    assert mode(tmp_path) == 0o700
    assert mode(tmp_path / DB_NAME) == 0o600


def test_a_directory_writable_by_others_is_refused_in_one_line(tmp_path: Path) -> None:
    directory = tmp_path / "shared"
    directory.mkdir()
    os.chmod(directory, 0o777)
    result = run_chatctl("serve", "--port", "0", "--data", str(directory))
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert "writable by other users" in result.stderr and str(directory) in result.stderr
    assert list(directory.iterdir()) == []  # nothing was written there


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give a directory away")
def test_a_directory_of_another_user_is_refused(tmp_path: Path) -> None:
    directory = tmp_path / "theirs"
    directory.mkdir(mode=0o700)
    os.chown(directory, 65534, 65534)
    with pytest.raises(StoreError, match="belongs to another user"):
        SqliteStore(directory)


@pytest.mark.parametrize("name", [JOURNAL_NAME, DB_NAME, "lock"])
def test_a_symlink_in_the_directory_is_refused_not_followed(tmp_path: Path, name: str) -> None:
    directory = tmp_path / "data"
    directory.mkdir(mode=0o700)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    (directory / name).symlink_to(victim)
    with pytest.raises(StoreError, match="symbolic link"):
        SqliteStore(directory)
    assert victim.read_text() == "precious\n"


def test_a_symlink_in_place_of_a_segment_file_is_refused_not_followed(tmp_path: Path) -> None:
    """(In a new directory a segment file is deleted unread: a schema-7 one is opened.)"""
    SqliteStore(tmp_path).close()
    victim = tmp_path.parent / f"{tmp_path.name}-victim.txt"
    victim.write_text("precious\n")
    (tmp_path / SEGMENT).unlink()
    (tmp_path / SEGMENT).symlink_to(victim)
    with pytest.raises(StoreError, match="symbolic link"):
        SqliteStore(tmp_path)
    assert victim.read_text() == "precious\n"


BAD_BODIES = [
    b"\xff garbage that is not MessagePack data",
    marshal.dumps([("lobby", 1, 1, "ann", "hi", 0, "", "", 0)]),  # schema 5's journal
    msgspec.msgpack.encode({"not": "a list"}),
    msgspec.msgpack.encode([["lobby", 1, "ts?", "ann", "hi", False, "", ""]]),
    msgspec.msgpack.encode([["lobby", 1]]),
    msgspec.msgpack.encode([["lobby", 1, 1, "ann", "hi", False, "", ""]])[:-1] + b"\xc1",
    # Well formed, but not what follows the room's head (0), or of two rooms.
    msgspec.msgpack.encode([["lobby", 2, 1, "ann", "hi", False, "", ""]]),
    msgspec.msgpack.encode([["lobby", 1, 1, "a", "x", False, "", ""], ["dev", 2, 1, "a", "y"]]),
]


@pytest.mark.parametrize("body", BAD_BODIES)
def test_a_segment_record_with_a_good_checksum_and_bad_content_is_one_line(
    tmp_path: Path, body: bytes
) -> None:
    SqliteStore(tmp_path).close()
    (tmp_path / SEGMENT).write_bytes(record(body))  # written after the last indexing
    result = run_chatctl("serve", "--port", "0", "--data", str(tmp_path))
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
    assert f"{tmp_path / SEGMENT} is damaged at byte 0" in result.stderr


@pytest.mark.parametrize(
    "body",
    [
        b"\xff garbage that is not marshal data",
        marshal.dumps({"not": "a list"}),
        marshal.dumps([("lobby", 1, "ts?", "ann", "hi", 0, "", "", 0)]),
        marshal.dumps([("lobby", 1)]),
        *BAD_BODIES[2:6],
    ],
)
def test_a_legacy_journal_record_with_a_good_checksum_and_bad_content_is_refused(
    tmp_path: Path, body: bytes
) -> None:
    SqliteStore(tmp_path).close()
    (tmp_path / JOURNAL_NAME).write_bytes(record(body))
    with pytest.raises(StoreError, match=f"^{tmp_path / JOURNAL_NAME} is damaged at byte 0 "):
        SqliteStore(tmp_path)


def test_zeros_after_the_last_record_are_cut_off_like_a_torn_write(tmp_path: Path) -> None:
    """A power cut can leave zeros where the file grew before its data reached the disk: no
    record is empty, so a zero header ends the records like a torn write (nothing there was
    indexed, so nothing it held was promised beyond what a power cut may lose)."""
    store = SqliteStore(tmp_path, sync_rows=1000)
    store.append(message(1))
    store.flush()
    store.crash()
    with (tmp_path / SEGMENT).open("ab") as f:
        f.write(bytes(4096))
    again = SqliteStore(tmp_path)
    assert again.read("lobby", 0, 10).messages == [message(1)]
    assert again.notes == [
        f"{tmp_path / SEGMENT}: dropped 4096 bytes of a write cut short at the end "
        "(a kill or crash during the write; it was never acknowledged)"
    ]
    again.close()


def torn_segment(directory: Path, cut: int) -> bytes:
    """A store whose segment ends in a record `cut` bytes short (killed during the write);
    the torn bytes."""
    store = SqliteStore(directory, sync_rows=1000)
    store.append(message(1))
    store.flush()
    store.crash()
    torn = record(msgspec.msgpack.encode([message(2)]))[:-cut]
    with (directory / SEGMENT).open("ab") as f:
        f.write(torn)
    return torn


def test_a_torn_tail_is_reported_with_the_bytes_dropped(tmp_path: Path) -> None:
    torn = torn_segment(tmp_path, 1)
    again = SqliteStore(tmp_path)
    assert again.head("lobby") == 1
    assert again.notes == [
        f"{tmp_path / SEGMENT}: dropped {len(torn)} bytes of a write cut short at the end"
        " (a kill or crash during the write; it was never acknowledged)"
    ]
    again.close()


def test_a_running_server_never_writes_a_resume_token(tmp_path: Path) -> None:
    with running_server(data=str(tmp_path)) as (host, port), Client(host, port) as alice:
        token = alice.hello("alice").token
        for n in range(3):
            alice.say("lobby", f"hello {n}")  # acked: durable in the segment file
        assert alice.say("lobby", "again", msg_id="m-1").seq == 4
        # A resend after a reconnect with the same token is still recognised (by its hash).
        with Client(host, port) as again:
            again.hello("alice", token=token)
            assert again.say("lobby", "again", msg_id="m-1").seq == 4
        files = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert SEGMENT in files
    files.update({p.name + " (closed)": p.read_bytes() for p in tmp_path.iterdir()})
    for name, data in files.items():
        assert token.encode() not in data, name


def test_the_server_logs_what_opening_the_store_repaired(tmp_path: Path) -> None:
    torn = torn_segment(tmp_path, 3)
    with serve_process("--data", str(tmp_path), "--log-format", "json") as server:
        line = server.wait_for_line(r'"event": "store_repaired"')
    assert f"dropped {len(torn)} bytes of a write cut short" in line.string
