"""`chatctl accounts add|passwd|remove|list`, run as real subprocesses: passwords from stdin,
$CHATCTL_PASSWORD or a terminal, one-line errors with the documented exit codes, and use of a
data directory while a real `chatctl serve` runs on it."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pexpect
import pytest

from chatctl.errors import ExitCode
from chatctl.passwords import verify_password
from chatctl.store.registry import Account
from chatctl.store.registry_sqlite import DB_NAME, SqliteRegistry
from tests.servers import Client, dies_with_parent, run_chatctl, serve_process

ISO = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"


def accounts(
    data: Path | str, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    command, *rest = args
    return run_chatctl("accounts", command, "--data", str(data), *rest, stdin=stdin)


def stored(data: Path, name: str) -> Account | None:
    registry = SqliteRegistry(data)
    try:
        return registry.account(name)
    finally:
        registry.close()


def one_line_error(result: subprocess.CompletedProcess[str], code: int, text: str) -> None:
    assert result.returncode == code, result.stderr
    assert result.stderr.startswith("chatctl: ") and result.stderr.count("\n") == 1
    assert text in result.stderr
    assert "Traceback" not in result.stderr


@pytest.fixture(autouse=True)
def no_password_in_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CHATCTL_PASSWORD", raising=False)
    monkeypatch.delenv("CHATCTL_DATA", raising=False)


def test_add_list_passwd_remove(tmp_path: Path) -> None:
    result = accounts(tmp_path, "add", "Alice", stdin="correct horse\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout == result.stderr == ""
    account = stored(tmp_path, "alice")
    assert account is not None and account.name == "Alice"
    assert verify_password("correct horse", account.password_hash)
    assert accounts(tmp_path, "add", "bob", stdin="battery staple\n").returncode == 0

    listed = accounts(tmp_path, "list")
    assert listed.returncode == 0
    assert re.fullmatch(rf"Alice  {ISO}\nbob    {ISO}\n", listed.stdout), listed.stdout
    rows = json.loads(accounts(tmp_path, "list", "--json").stdout)
    assert [row["name"] for row in rows] == ["Alice", "bob"]
    assert rows[0]["created_ms"] == account.created_ms and re.fullmatch(ISO, rows[0]["created"])

    assert accounts(tmp_path, "passwd", "ALICE", stdin="new password\n").returncode == 0
    changed = stored(tmp_path, "alice")
    assert changed is not None and changed.created_ms == account.created_ms
    assert verify_password("new password", changed.password_hash)
    assert not verify_password("correct horse", changed.password_hash)

    assert accounts(tmp_path, "remove", "alice").returncode == 0
    assert stored(tmp_path, "alice") is None
    assert accounts(tmp_path, "list").stdout.split()[0] == "bob"


def test_only_the_trailing_newline_is_taken_off_the_password(tmp_path: Path) -> None:
    assert accounts(tmp_path, "add", "alice", stdin="  two words \nsecond line\n").returncode == 0
    account = stored(tmp_path, "alice")
    assert account is not None
    assert verify_password("  two words ", account.password_hash)


def test_the_password_may_come_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHATCTL_PASSWORD", "from the environment")
    assert accounts(tmp_path, "add", "alice", stdin="ignored stdin\n").returncode == 0
    account = stored(tmp_path, "alice")
    assert account is not None
    assert verify_password("from the environment", account.password_hash)


def test_data_comes_from_the_environment_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHATCTL_DATA", str(tmp_path))
    result = run_chatctl("accounts", "add", "alice", stdin="password1\n")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / DB_NAME).exists()


def test_adding_an_existing_name_in_any_case_is_an_error(tmp_path: Path) -> None:
    assert accounts(tmp_path, "add", "Alice", stdin="password1\n").returncode == 0
    first = stored(tmp_path, "alice")
    one_line_error(
        accounts(tmp_path, "add", "aLICE", stdin="password2\n"),
        ExitCode.ERROR,
        "account 'Alice' exists already",
    )
    assert stored(tmp_path, "alice") == first


def test_passwd_and_remove_of_a_missing_account_are_errors(tmp_path: Path) -> None:
    one_line_error(
        accounts(tmp_path, "passwd", "zed", stdin="password1\n"), ExitCode.ERROR, "no account 'zed'"
    )
    one_line_error(accounts(tmp_path, "remove", "zed"), ExitCode.ERROR, "no account 'zed'")


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("9lives", "may not start with a digit"),
        ("al ice", "may not contain ' '"),
        ("x" * 33, "at most 32 characters"),
        ("élodie", "may not contain 'é'"),
    ],
)
def test_a_name_that_is_not_a_nick_is_refused(tmp_path: Path, name: str, problem: str) -> None:
    result = accounts(tmp_path, "add", name, stdin="password1\n")
    one_line_error(result, ExitCode.USAGE, problem)
    assert "invalid account name" in result.stderr
    assert not (tmp_path / DB_NAME).exists()  # refused before anything was opened


def test_a_short_password_is_refused(tmp_path: Path) -> None:
    one_line_error(
        accounts(tmp_path, "add", "alice", stdin="short\n"),
        ExitCode.ERROR,
        "a password has at least 8 characters",
    )
    assert stored(tmp_path, "alice") is None
    assert accounts(tmp_path, "add", "alice", stdin="long enough\n").returncode == 0
    one_line_error(
        accounts(tmp_path, "passwd", "alice", stdin="\n"),
        ExitCode.ERROR,
        "a password has at least 8 characters",
    )


def test_no_password_at_all_is_an_error(tmp_path: Path) -> None:
    one_line_error(accounts(tmp_path, "add", "alice"), ExitCode.ERROR, "no password")
    assert stored(tmp_path, "alice") is None


@pytest.mark.parametrize(
    "command", [("add", "alice"), ("passwd", "alice"), ("remove", "alice"), ("list",)]
)
def test_memory_data_is_refused(command: tuple[str, ...]) -> None:
    result = accounts(":memory:", *command, stdin="password1\n")
    one_line_error(result, ExitCode.USAGE, "--data :memory: holds no accounts")


def test_on_a_terminal_the_password_is_asked_twice(tmp_path: Path) -> None:
    def spawn(*args: str) -> pexpect.spawn:
        return pexpect.spawn(
            sys.executable,
            ["-m", "chatctl", "accounts", *args, "--data", str(tmp_path)],
            encoding="utf-8",
            timeout=30,
            env={k: v for k, v in os.environ.items() if k != "CHATCTL_PASSWORD"},
            preexec_fn=dies_with_parent(),
        )

    child = spawn("add", "alice")
    try:
        child.expect_exact("Password for alice: ")
        child.sendline("typed password")
        child.expect_exact("Again: ")
        assert "typed password" not in (child.before or "")  # not echoed
        child.sendline("typed password")
        child.expect(pexpect.EOF)
        assert "typed password" not in (child.before or "")
    finally:
        child.close()
    assert child.exitstatus == 0
    account = stored(tmp_path, "alice")
    assert account is not None and verify_password("typed password", account.password_hash)

    child = spawn("passwd", "alice")
    try:
        child.expect_exact("Password for alice: ")
        child.sendline("first attempt")
        child.expect_exact("Again: ")
        child.sendline("second attempt")
        child.expect(pexpect.EOF)
        output = child.before or ""
    finally:
        child.close()
    assert child.exitstatus == ExitCode.ERROR
    assert "the two passwords differ" in output
    assert stored(tmp_path, "alice") == account

    child = spawn("passwd", "alice")
    try:
        child.expect_exact("Password for alice: ")
        child.sendeof()  # Ctrl-D
        child.expect(pexpect.EOF)
        output = child.before or ""
    finally:
        child.close()
    assert child.exitstatus == ExitCode.ERROR
    assert "no password given" in output and "Traceback" not in output
    assert stored(tmp_path, "alice") == account


def test_accounts_are_administered_while_a_server_runs_on_the_directory(tmp_path: Path) -> None:
    with serve_process("--data", str(tmp_path)) as server:
        result = accounts(tmp_path, "add", "alice", stdin="password1\n")
        assert result.returncode == 0, result.stderr
        assert accounts(tmp_path, "list").stdout.startswith("alice ")
        assert accounts(tmp_path, "passwd", "alice", stdin="password2\n").returncode == 0
        assert server.proc.poll() is None
        with Client.connect(server.host, server.port, "bob", "lobby") as bob:
            assert bob.say("lobby", "still serving").seq == 1
        assert accounts(tmp_path, "remove", "alice").returncode == 0
        assert server.proc.poll() is None
