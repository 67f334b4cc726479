"""Accounts on a real server, over real sockets (plain loopback and TLS with a test CA):
logins with key derivation off the loop, the throttle, and the attacks of issue #12, which
must fail: token replay without the login, a reserved nick, a private room's members and
history read by a non-member, a non-member joining a private room."""

from __future__ import annotations

import ssl
import time
from pathlib import Path

import pytest

from chatctl.passwords import hash_password
from chatctl.protocol import (
    Bye,
    Error,
    ErrorCode,
    Hello,
    History,
    Join,
    Members,
    Moderate,
    Notice,
    Ping,
    Pong,
    Register,
    Welcome,
    Who,
    encode,
)
from chatctl.server.admission import LoginThrottle
from chatctl.store.errors import StoreError
from chatctl.store.registry import MemoryRegistry
from tests.servers import Client, server_instance
from tests.test_tls import log_of, tls_server

NOW = 1_700_000_000_000


def registry() -> MemoryRegistry:
    accounts = MemoryRegistry()
    for name in ("alice", "bob"):
        # The real default cost: logins on the real server derive the key off the loop.
        accounts.add_account(name, hash_password(f"{name}-password"), NOW)
    return accounts


def refused(client: Client) -> Bye:
    bye = client.wait_closed()
    assert bye is not None
    return bye


def test_login_over_tls_and_a_wrong_password_is_logged(pki: dict[str, str]) -> None:
    context = ssl.create_default_context(cafile=pki["ca"])
    with tls_server(pki, registry=registry()) as (server, host, port):
        alice = Client(host, port, tls=context)
        welcome = alice.hello("", account="alice", password="alice-password")
        assert welcome.account == "alice" and welcome.nick == "alice"
        mallory = Client(host, port, tls=context)
        mallory.send(Hello(version=1, nick="", account="alice", password="guess"))
        bye = refused(mallory)
        assert bye.code == ErrorCode.LOGIN_FAILED and bye.reason == "wrong account name or password"
        assert "login_failed" in log_of(server) or "wrong account" in log_of(server)
        alice.send(Ping(token=5))  # the victim never noticed
        assert alice.wait_for(Pong).token == 5


def test_frames_pipelined_after_a_login_wait_for_its_answer() -> None:
    with server_instance(registry=registry()) as (_, host, port):
        client = Client(host, port)
        client.send_raw(
            client.conn.send(Hello(version=1, nick="", account="bob", password="bob-password"))
        )
        # The Join leaves with the Hello, before any Welcome: sent raw, past the client's
        # own state machine.
        client.send_raw(encode(Join(room="early")))
        assert type(client.recv()) is Welcome
        assert client.wait_for(Members, lambda m: m.room == "early").nicks == ["bob"]


def test_token_replay_without_the_login_takes_nothing_over() -> None:
    with server_instance(registry=registry()) as (_, host, port):
        alice = Client(host, port)
        token = alice.hello("", account="alice", password="alice-password").token
        alice.join("payroll")
        thief = Client(host, port)
        stolen = thief.hello("alice", token=token)
        assert stolen.token != token and stolen.nick != "alice" and stolen.account == ""
        alice.send(Ping(token=9))
        assert alice.wait_for(Pong).token == 9
        assert not [e for e in alice.seen if type(e) is Bye]
        # The owner's own login does resume, and the old connection hears who took it.
        again = Client(host, port)
        welcome = again.hello("", token=token, account="alice", password="alice-password")
        assert welcome.token == token
        bye = refused(alice)
        assert bye.code == ErrorCode.REPLACED and "taken over" in bye.reason
        assert "logged in as alice" in bye.reason


def test_a_reserved_nick_goes_to_its_account_only() -> None:
    with server_instance(registry=registry()) as (_, host, port):
        guest = Client(host, port)
        assert guest.hello("Alice").nick == "Alice2"
        alice = Client(host, port)
        assert alice.hello("", account="alice", password="alice-password").nick == "alice"


def test_a_private_room_shows_nothing_to_a_non_member() -> None:
    with server_instance(registry=registry()) as (_, host, port):
        alice = Client(host, port)
        alice.hello("", account="alice", password="alice-password")
        alice.join("hr-private")
        alice.say("hr-private", "salaries are in the spreadsheet")
        alice.send(Moderate(room="hr-private", action="private"))
        alice.wait_for(Notice, lambda n: n.kind == "private")
        mallory = Client(host, port)
        mallory.hello("mallory")
        for request in (
            Who(room="hr-private"),
            History(room="hr-private", after=0),
            Join(room="hr-private"),
        ):
            mallory.send(request)
            error = mallory.wait_for(Error)
            assert error.code == ErrorCode.NOT_PERMITTED, request
        assert not any(type(e).__name__ in ("Message", "Members") for e in mallory.seen)
        # Invited, the same guest gets in.
        alice.send(Moderate(room="hr-private", action="invite", target="mallory"))
        assert mallory.wait_for(Notice).kind == "invited"
        mallory.join("hr-private")


def test_failed_logins_slow_down_then_refuse_without_checking() -> None:
    with server_instance(registry=registry()) as (_, host, port):
        for _ in range(LoginThrottle.FREE + 1):
            client = Client(host, port)
            client.send(Hello(version=1, nick="", account="bob", password="wrong-password"))
            assert refused(client).reason == "wrong account name or password"
        started = time.monotonic()
        client = Client(host, port)
        client.send(Hello(version=1, nick="", account="bob", password="bob-password"))
        bye = refused(client)
        assert bye.code == ErrorCode.LOGIN_FAILED and "try again in" in bye.reason
        assert time.monotonic() - started < 5.0  # refused before any key derivation


@pytest.mark.parametrize("count", [50])
def test_many_logins_of_one_account_at_once_are_all_welcomed(count: int) -> None:
    with server_instance(registry=registry(), max_per_ip=1000) as (_, host, port):
        clients = [Client(host, port) for _ in range(count)]
        for client in clients:
            client.send(Hello(version=1, nick="", account="alice", password="alice-password"))
        answers = [client.recv(timeout=30) for client in clients]
        # One derivation serves them all: the others wait for its answer.
        assert all(type(a) is Welcome for a in answers), answers


def test_accounts_room_settings_and_tokens_survive_a_restart(tmp_path: Path) -> None:
    data = str(tmp_path / "data")
    with server_instance(data=data, registration="open") as (_, host, port):
        alice = Client(host, port)
        alice.hello("alice")
        alice.send(Register(password="alice-password"))
        alice.wait_for(Notice, lambda n: n.kind == "registered")
        bob = Client(host, port)
        token = bob.hello("bob").token
    with server_instance(data=data) as (_, host, port):
        alice = Client(host, port)
        alice.hello("", account="alice", password="alice-password")
        alice.join("hr")
        alice.send(Moderate(room="hr", action="private"))
        alice.wait_for(Notice, lambda n: n.kind == "private")
        assert Client(host, port).hello("bob", token=token).token == token  # its own token
    with server_instance(data=data) as (_, host, port):
        mallory = Client(host, port)
        assert mallory.hello("alice").nick == "alice2"  # still reserved
        mallory.send(Join(room="hr"))
        assert mallory.wait_for(Error).code == ErrorCode.NOT_PERMITTED


class LockedRegistry(MemoryRegistry):
    """A registry whose file another process holds locked for too long."""

    def add_account(self, name: str, password_hash: str, now_ms: int) -> bool:
        raise StoreError("cannot write accounts: database is locked")


def test_a_registry_failure_costs_one_registration_not_the_server() -> None:
    with server_instance(registry=LockedRegistry(), registration="open") as (_, host, port):
        dave = Client(host, port)
        dave.hello("dave")
        dave.send(Register(password="dave-password"))
        bye = refused(dave)
        assert bye.code == ErrorCode.SERVER_ERROR
        other = Client(host, port)
        assert other.hello("erin").nick == "erin"  # the server goes on
