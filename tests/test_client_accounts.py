"""Logging in from the client: `--account` on send and join, the library's Hello, in-chat
registration, and every refusal as one line and the right exit code, against real servers."""

from __future__ import annotations

import io
import subprocess
import threading
from collections.abc import Iterator

import pytest

from chatctl.client import Client, Closed, Reconnected
from chatctl.client.link import InsecureLink, _loopback
from chatctl.client.session import ClientSession
from chatctl.errors import ChatctlError, ExitCode, Rejected
from chatctl.protocol import (
    Error,
    ErrorCode,
    Message,
    Notice,
    Register,
    Welcome,
)
from chatctl.server.config import AuthMode, Registration
from chatctl.ui.login import PASSWORD_VAR, account_password
from tests import servers
from tests.clients import WAIT, joined, wait_for
from tests.proxy import proxy_to
from tests.servers import run_chatctl, running_server, start_chatctl

PASSWORD = "correct horse battery"
OPEN = {"registration": Registration.open}


def register(addr: tuple[str, int], name: str, password: str = PASSWORD) -> None:
    servers.register(addr, name, password)


@pytest.fixture
def accounts() -> Iterator[tuple[str, int]]:
    """A server with open registration, where `alice` is an account (password PASSWORD)."""
    with running_server(**OPEN) as addr:
        register(addr, "alice")
        yield addr


@pytest.fixture
def no_password_var(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PASSWORD_VAR, raising=False)


def assert_one_line_error(result: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


# -- the library ---------------------------------------------------------------------------------


def test_every_hello_carries_the_login() -> None:
    session = ClientSession("", account="alice", password=PASSWORD)
    hello = session.hello()
    assert (hello.account, hello.password, hello.nick) == ("alice", PASSWORD, "")
    assert PASSWORD not in repr(hello)
    guest = ClientSession("bob").hello()
    assert (guest.account, guest.password) == ("", "")


def test_a_confirmed_registration_becomes_the_login() -> None:
    session = ClientSession("carol")
    session.welcomed(Welcome(protocol=1, server="s", version="v", nick="carol", token="t" * 40))
    assert session.register(PASSWORD) == [Register(password=PASSWORD)]
    assert session.hello().account == ""  # not before the server says so
    session.receive(Notice(kind="registered", nick="carol", ts=0))
    hello = session.hello()
    assert (hello.account, hello.password) == ("carol", PASSWORD)
    with pytest.raises(ChatctlError, match="already logged in as carol"):
        session.register("another password")


def test_a_refused_registration_changes_nothing() -> None:
    session = ClientSession("carol")
    session.welcomed(Welcome(protocol=1, server="s", version="v", nick="carol", token="t" * 40))
    session.register(PASSWORD)
    refusal = Error(code=ErrorCode.REGISTRATION_REFUSED, message="registration is closed")
    assert session.receive(refusal).emit == [refusal]
    session.receive(Notice(kind="registered", nick="carol", ts=0))  # not ours: ignored
    assert session.hello().account == ""


def test_a_kick_or_ban_drops_the_room_so_a_reconnect_does_not_rejoin() -> None:
    session = ClientSession("bob", rooms=["hr", "lobby"])
    session.welcomed(Welcome(protocol=1, server="s", version="v", nick="bob", token="t" * 40))
    rooms: list[tuple[str, ...]] = []
    for room, target in [("hr", "carol"), ("hr", "BOB"), ("lobby", "bob")]:
        kind = "banned" if room == "lobby" else "kicked"
        session.receive(Notice(kind=kind, nick="alice", ts=0, room=room, target=target))
        rooms.append(session.rooms)
    # Someone else's kick changes nothing; ours (any case) and our ban drop the room.
    assert rooms == [("hr", "lobby"), ("lobby",), ()]


def test_login_with_the_library(accounts: tuple[str, int]) -> None:
    with Client(*accounts, nick="", account="alice", password=PASSWORD) as alice:
        welcome = alice.connect()
        assert (welcome.account, welcome.nick) == ("alice", "alice")
        assert alice.account == "alice"


def test_a_wrong_password_is_final_even_with_reconnect(accounts: tuple[str, int]) -> None:
    client = Client(
        *accounts, nick="alice", account="alice", password="wrong password", reconnect=True
    )
    outcome: list[BaseException] = []

    def connect() -> None:
        try:
            client.connect(retry_for=None)  # would retry for ever were the refusal not final
        except BaseException as exc:
            outcome.append(exc)

    attempt = threading.Thread(target=connect, daemon=True)
    attempt.start()
    attempt.join(WAIT)
    client.close()
    assert not attempt.is_alive(), "connect() kept retrying a refused login"
    [error] = outcome
    assert isinstance(error, Rejected) and error.code == ErrorCode.LOGIN_FAILED
    assert "refused the login as alice: wrong account name or password" in str(error)


def test_a_guest_cannot_take_an_accounts_nick(accounts: tuple[str, int]) -> None:
    with joined(accounts, "alice", "lobby") as guest:
        assert guest.nick.casefold() != "alice"
        guest.change_nick("alice")
        refusal = wait_for(guest, Error)
        assert refusal.code == ErrorCode.NICK_RESERVED


def test_registering_in_the_chat_logs_in_on_every_reconnect() -> None:
    with running_server(**OPEN) as addr, proxy_to(addr) as proxy:
        carol = joined(("127.0.0.1", proxy.port), "carol", "lobby", reconnect=True)
        with carol:
            carol.register(PASSWORD)
            assert wait_for(carol, Notice, lambda n: n.kind == "registered").nick == "carol"
            assert carol.account == "carol"
            proxy.cut()
            back = wait_for(carol, Reconnected)
            assert back.welcome.account == "carol"
            assert carol.account == "carol"


def test_a_session_taken_over_says_by_whom_and_stops(accounts: tuple[str, int]) -> None:
    with Client(*accounts, nick="", account="alice", password=PASSWORD, reconnect=True) as first:
        first.connect()
        second = Client(*accounts, nick="", account="alice", password=PASSWORD, reconnect=True)
        second.token = first.token
        with second:
            second.connect()
            closed = wait_for(first, Closed)
            assert closed.error is not None
            text = str(closed.error)
            assert "your session was taken over by a new connection from" in text
            assert "(logged in as alice)" in text
            assert second.connected


def test_only_a_loopback_peer_is_secure_without_tls() -> None:
    class Peer:
        def __init__(self, addr: str) -> None:
            self.addr = addr

        def getpeername(self) -> tuple[str, int]:
            return (self.addr, 1060)

    for addr, secure in [
        ("127.0.0.1", True),
        ("::1", True),
        ("::ffff:127.0.0.1", True),
        ("192.0.2.7", False),
        ("2001:db8::1", False),
    ]:
        assert _loopback(Peer(addr)) is secure, addr  # type: ignore[arg-type]


def test_the_insecure_link_refusal_is_a_usage_error() -> None:
    assert InsecureLink("x").exit_code == ExitCode.USAGE


# -- where the password comes from ----------------------------------------------------------------


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_password_comes_from_the_environment_first() -> None:
    def never(prompt: str) -> str:
        raise AssertionError("asked")

    got = account_password("alice", "h", environ={PASSWORD_VAR: "s3cret pw"}, prompt=never)
    assert got == "s3cret pw"


def test_on_a_terminal_the_password_is_asked_for() -> None:
    prompts: list[str] = []

    def prompt(text: str) -> str:
        prompts.append(text)
        return "typed pw"

    got = account_password(
        "alice", "chat.example", environ={}, stdin=Tty(), stderr=Tty(), prompt=prompt
    )
    assert got == "typed pw"
    assert prompts == ["Password for alice@chat.example: "]


def test_without_a_terminal_it_says_to_set_the_variable() -> None:
    with pytest.raises(ChatctlError) as info:
        account_password("alice", "h", environ={}, stdin=io.StringIO(), stderr=Tty())
    assert info.value.exit_code == ExitCode.USAGE
    assert PASSWORD_VAR in str(info.value) and "\n" not in str(info.value)


# -- the commands -----------------------------------------------------------------------------------


def test_send_logs_in_with_the_password_variable(
    accounts: tuple[str, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(PASSWORD_VAR, PASSWORD)
    with joined(accounts, "watcher", "lobby") as watcher:
        result = run_chatctl("send", "-p", str(accounts[1]), "--account", "alice", "hi all")
        assert result.returncode == ExitCode.OK, result.stderr
        message = wait_for(watcher, Message)
    # The nick is the account's, which only a session logged in to it can have.
    assert (message.sender, message.text) == ("alice", "hi all")


def test_send_with_a_wrong_password_is_rejected_in_one_line(
    accounts: tuple[str, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(PASSWORD_VAR, "not the password")
    result = run_chatctl("send", "-p", str(accounts[1]), "--account", "alice", "hi")
    assert result.returncode == ExitCode.REJECTED
    assert "refused the login as alice: wrong account name or password" in result.stderr
    assert_one_line_error(result)


def test_join_with_a_wrong_password_does_not_retry(
    accounts: tuple[str, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(PASSWORD_VAR, "not the password")
    result = run_chatctl(
        "join", "-p", str(accounts[1]), "--account", "alice", "--reconnect", stdin="hello\n"
    )
    assert result.returncode == ExitCode.REJECTED
    assert "refused the login as alice" in result.stderr
    assert_one_line_error(result)


@pytest.mark.usefixtures("no_password_var")
def test_without_a_terminal_or_the_variable_send_says_what_to_do(
    accounts: tuple[str, int],
) -> None:
    result = run_chatctl("send", "-p", str(accounts[1]), "--account", "alice", "-", stdin="hi\n")
    assert result.returncode == ExitCode.USAGE
    assert PASSWORD_VAR in result.stderr
    assert_one_line_error(result)


@pytest.mark.usefixtures("no_password_var")
def test_a_server_for_accounts_only_turns_a_guest_away() -> None:
    with running_server(auth=AuthMode.required) as addr:
        result = run_chatctl("send", "-p", str(addr[1]), "-n", "guest1", "hi")
    assert result.returncode == ExitCode.REJECTED
    assert "admits accounts only" in result.stderr
    assert_one_line_error(result)


def test_the_password_is_never_an_option() -> None:
    result = run_chatctl("send", "--password", "x", "hi")
    assert result.returncode == ExitCode.USAGE
    assert "--password" in result.stderr


def test_the_bot_logs_in_under_its_accounts_name(monkeypatch: pytest.MonkeyPatch) -> None:
    with running_server(**OPEN) as addr:
        register(addr, "helper")
        monkeypatch.setenv(PASSWORD_VAR, PASSWORD)
        with joined(addr, "watcher", "lobby") as watcher:
            bot = start_chatctl("bot", "-p", str(addr[1]), "--account", "helper")
            try:
                came = wait_for(watcher, Notice, lambda n: n.kind == "joined")
                assert came.nick == "helper"  # its account's name, not the default "ai"
            finally:
                bot.stop()


def test_a_server_without_accounts_is_never_sent_register_or_moderate() -> None:
    with (
        running_server(auth=AuthMode.off, registration=Registration.open) as addr,
        Client(*addr, nick="gus") as gus,
    ):
        gus.connect()
        with pytest.raises(ChatctlError, match="has no accounts"):
            gus.moderate("lobby", "private")
        with pytest.raises(ChatctlError, match="has no accounts"):
            gus.register("a-good-password")
        gus.who("lobby")  # still connected: nothing was sent
