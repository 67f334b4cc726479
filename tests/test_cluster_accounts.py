"""`chatctl serve --data redis://...`: accounts and room settings are one state across the
nodes (real server processes, a real redis-server, real `chatctl accounts` subprocesses). An
account registered on one node logs in on another; one name registered twice at once goes to
one; an account's nick is reserved on every node; a private room, an invitation and a ban made
on one node hold on the others; the operator's `chatctl accounts` works on the cluster."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest

from chatctl.cluster.entries import STREAM
from chatctl.protocol import (
    Ack,
    Bye,
    Error,
    ErrorCode,
    Event,
    Hello,
    Join,
    Moderate,
    Notice,
    Register,
    Tell,
)
from tests.redis_servers import RedisServer, redis_call, redis_server
from tests.servers import Client, ServeProcess, run_chatctl, serve_process
from tests.test_cluster_members import WAIT, listed

PASSWORD = "correct horse"


@contextmanager
def nodes(redis: RedisServer, count: int = 3) -> Iterator[list[ServeProcess]]:
    with ExitStack() as stack:
        yield [
            stack.enter_context(
                serve_process("--data", redis.url, "--rate", "0", "--registration", "open")
            )
            for _ in range(count)
        ]


@pytest.fixture(autouse=True)
def no_password_in_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CHATCTL_PASSWORD", raising=False)
    monkeypatch.delenv("CHATCTL_DATA", raising=False)


def accounts(
    redis: RedisServer, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    command, *rest = args
    return run_chatctl("accounts", command, "--data", redis.url, *rest, stdin=stdin)


def caught_up(client: Client) -> None:
    """Wait until the client's node has applied everything appended to the log before now:
    a direct message to itself goes through the log, after all of it."""
    msg_id = client.next_msg_id()
    client.send(Tell(to=client.nick, msg_id=msg_id, text="sync"))
    client.wait_for(Ack, lambda a: a.msg_id == msg_id, timeout=WAIT)


def login(server: ServeProcess, account: str, password: str = PASSWORD) -> Client:
    client = Client(server.host, server.port, timeout=WAIT)
    welcome = client.hello("", account=account, password=password)
    assert welcome.account.casefold() == account.casefold()  # as it was registered
    return client


def refused_login(server: ServeProcess, account: str, password: str) -> Bye:
    client = Client(server.host, server.port, timeout=WAIT)
    client.send(Hello(version=1, nick="", account=account, password=password))
    bye = client.wait_for(Bye, timeout=WAIT)
    assert bye.code == ErrorCode.LOGIN_FAILED
    return bye


def moderate(client: Client, room: str, action: str, target: str = "") -> Notice:
    rid = client.next_msg_id()
    client.send(Moderate(room=room, action=action, target=target, rid=rid))
    return client.wait_for(Notice, lambda n: n.rid == rid, timeout=WAIT)


def refused_join(client: Client, room: str) -> Error:
    rid = client.next_msg_id()
    client.send(Join(room=room, rid=rid))
    error = client.wait_for(Error, lambda e: e.rid == rid, timeout=WAIT)
    assert error.code == ErrorCode.NOT_PERMITTED
    return error


def test_an_account_registered_on_one_node_logs_in_on_another(tmp_path: Path) -> None:
    with redis_server(tmp_path) as redis, nodes(redis) as (one, two, three):
        watcher = Client.connect(two.host, two.port, "watcher")
        alice = Client.connect(one.host, one.port, "alice", timeout=WAIT)
        alice.send(Register(password=PASSWORD, rid="r"))
        registered = alice.wait_for(Notice, lambda n: n.rid == "r", timeout=WAIT)
        assert (registered.kind, registered.nick) == ("registered", "alice")
        alice.bye()
        alice.wait_closed()
        caught_up(watcher)
        # Node 2 has it: the nick is reserved there, and the login is checked there.
        assert Client.connect(two.host, two.port, "Alice").nick == "Alice2"
        assert login(two, "alice").nick == "alice"
        refused_login(three, "alice", "wrong horse")
        # The accounts of the cluster, as the operator lists them from the log.
        listing = accounts(redis, "list")
        assert listing.returncode == 0, listing.stderr
        assert listing.stdout.split()[0] == "alice"


def test_one_name_registered_three_times_at_once_goes_to_one(tmp_path: Path) -> None:
    with redis_server(tmp_path) as redis, nodes(redis) as (one, two, three):
        zed = Client.connect(one.host, one.port, "zed", timeout=WAIT)
        # Two operators add "ZED" while the guest holding "zed" registers it: whichever entry
        # comes first in the log wins, the others get the standalone answers.
        passwords = ["first pass", "second pass"]
        operators = [
            subprocess.Popen(
                [sys.executable, "-m", "chatctl", "accounts", "add", "ZED", "--data", redis.url],
                env={**os.environ, "CHATCTL_PASSWORD": password},
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
            for password in passwords
        ]
        zed.send(Register(password=PASSWORD, rid="r"))
        answer: Event = zed.wait_for(
            Event,
            lambda e: type(e) in (Notice, Error) and e.rid == "r",  # type: ignore[attr-defined]
            timeout=WAIT,
        )
        outcomes = [operator.communicate(timeout=WAIT) for operator in operators]
        statuses = [operator.returncode for operator in operators]
        registered = type(answer) is Notice
        assert sorted([*statuses, 0 if registered else 1]) == [0, 1, 1], (answer, outcomes)
        if isinstance(answer, Error):
            assert answer.code == ErrorCode.REGISTRATION_REFUSED
            assert "already an account" in answer.message
        for status, (_, stderr) in zip(statuses, outcomes, strict=True):
            assert status == 0 or "exists already" in stderr, stderr
        # Every node holds the winner's password, and only it.
        winner = PASSWORD if registered else passwords[statuses.index(0)]
        watcher = Client.connect(three.host, three.port, "watcher")
        caught_up(watcher)
        login(three, "zed", winner)
        for loser in {PASSWORD, *passwords} - {winner}:
            refused_login(two, "zed", loser)


def test_a_guest_holding_an_accounts_nick_on_another_node_is_renamed(tmp_path: Path) -> None:
    with redis_server(tmp_path) as redis, nodes(redis) as (one, _, three):
        guest = Client.connect(three.host, three.port, "carol", "lobby", timeout=WAIT)
        other = Client.connect(three.host, three.port, "dave", "lobby", timeout=WAIT)
        added = accounts(redis, "add", "carol", stdin=f"{PASSWORD}\n")
        assert added.returncode == 0, added.stderr
        watcher = Client.connect(one.host, one.port, "watcher")
        caught_up(watcher)
        carol = login(one, "carol")
        assert carol.nick == "carol"
        # On node 3, the guest is renamed, as a standalone server renames it.
        renamed = guest.wait_for(Notice, lambda n: n.kind == "renamed", timeout=WAIT)
        assert (renamed.nick, renamed.new_nick) == ("carol", "carol2")
        heard = other.wait_for(Notice, lambda n: n.kind == "renamed", timeout=WAIT)
        assert heard.new_nick == "carol2"
        carol.join("lobby")
        listed(other, ["carol", "carol2", "dave"])


def test_a_private_room_and_an_invitation_hold_on_every_node(tmp_path: Path) -> None:
    with redis_server(tmp_path) as redis, nodes(redis) as (one, two, _):
        assert accounts(redis, "add", "alice", stdin=f"{PASSWORD}\n").returncode == 0
        bob = Client.connect(two.host, two.port, "bob", timeout=WAIT)
        watcher = Client.connect(one.host, one.port, "watcher")
        caught_up(watcher)
        alice = login(one, "alice")
        alice.join("hr")  # she creates it: she owns it, on every node
        assert moderate(alice, "hr", "private").kind == "private"
        caught_up(bob)
        refused = refused_join(bob, "hr")
        assert "private" in refused.message
        # An invitation made on node 1 reaches bob on node 2, and lets him in there.
        assert moderate(alice, "hr", "invite", "bob").kind == "invited"
        invited = bob.wait_for(Notice, lambda n: n.kind == "invited", timeout=WAIT)
        assert (invited.room, invited.target, invited.nick) == ("hr", "bob", "alice")
        bob.join("hr")
        joined = alice.wait_for(Notice, lambda n: n.kind == "joined" and n.nick == "bob")
        assert joined.room == "hr"
        # The topic set on node 1 reaches the member on node 2.
        moderate(alice, "hr", "topic", "")  # (an empty topic is a topic too)
        alice.send(Moderate(room="hr", action="topic", text="pay review"))
        topic = bob.wait_for(Notice, lambda n: n.kind == "topic" and n.reason == "pay review")
        assert topic.nick == "alice"


def test_a_ban_made_on_one_node_is_enforced_on_another(tmp_path: Path) -> None:
    with redis_server(tmp_path) as redis, nodes(redis) as (one, two, three):
        assert accounts(redis, "add", "alice", stdin=f"{PASSWORD}\n").returncode == 0
        watcher = Client.connect(one.host, one.port, "watcher", timeout=WAIT)
        caught_up(watcher)
        owner = login(one, "alice")
        owner.join("dev")
        mallory = Client.connect(three.host, three.port, "mallory", "dev", timeout=WAIT)
        watcher.join("dev")
        # Alice moderates from node 2 (another connection of her account).
        caught_up(Client.connect(two.host, two.port, "sync2"))
        moderator = login(two, "alice")
        banned = moderate(moderator, "dev", "ban", "mallory")
        assert (banned.kind, banned.target) == ("banned", "mallory")
        # Heard on node 3 by its victim, who is out there, and on node 1 by the others.
        heard = mallory.wait_for(Notice, lambda n: n.kind == "banned", timeout=WAIT)
        assert heard.target == "mallory"
        assert watcher.wait_for(Notice, lambda n: n.kind == "banned", timeout=WAIT).nick
        listed(watcher, sorted(["alice", "watcher"], key=str.casefold), room="dev")
        assert "banned" in refused_join(mallory, "dev").message
        # Another guest calling itself mallory on node 1, once she is gone, is refused too.
        mallory.bye()
        deadline = time.monotonic() + WAIT
        while (again := Client.connect(one.host, one.port, "mallory")).nick != "mallory":
            assert time.monotonic() < deadline
            again.close()
        assert "banned" in refused_join(again, "dev").message


def test_accounts_on_a_cluster_add_passwd_remove(tmp_path: Path) -> None:
    with redis_server(tmp_path) as redis, nodes(redis, 2) as (one, two):
        assert accounts(redis, "add", "Erin", stdin=f"{PASSWORD}\n").returncode == 0
        again = accounts(redis, "add", "erin", stdin=f"{PASSWORD}\n")
        assert again.returncode == 1 and "account 'Erin' exists already" in again.stderr
        missing = accounts(redis, "passwd", "nobody", stdin=f"{PASSWORD}\n")
        assert missing.returncode == 1 and "no account 'nobody'" in missing.stderr
        watcher = Client.connect(one.host, one.port, "watcher")
        caught_up(watcher)
        login(one, "erin")
        changed = accounts(redis, "passwd", "erin", stdin="battery staple\n")
        assert changed.returncode == 0, changed.stderr
        other = Client.connect(two.host, two.port, "watcher2")
        caught_up(other)
        login(two, "erin", "battery staple")
        refused_login(two, "erin", PASSWORD)
        listing = accounts(redis, "list", "--json")
        assert listing.returncode == 0 and '"name": "Erin"' in listing.stdout
        assert accounts(redis, "remove", "ERIN").returncode == 0
        gone = accounts(redis, "remove", "erin")
        assert gone.returncode == 1 and "no account 'erin'" in gone.stderr
        caught_up(other)
        refused_login(two, "erin", "battery staple")
        assert accounts(redis, "list").stdout == ""


def test_accounts_on_a_cluster_whose_log_was_trimmed_start_from_the_snapshot(
    tmp_path: Path,
) -> None:
    """`chatctl accounts` rebuilds the accounts as a node does: from the current snapshot (the
    registration's entry is trimmed away) and the log after it; and its own change is
    appended as a node appends (naming the entry before), so no node finds a hole."""
    with redis_server(tmp_path) as redis:
        options = ("--rate", "0", "--snapshot-every", "10", "--registration", "open")
        with serve_process("--data", redis.url, *options) as node:
            assert accounts(redis, "add", "Erin", stdin=f"{PASSWORD}\n").returncode == 0
            alice = Client.connect(node.host, node.port, "alice", "lobby")
            for n in range(40):  # past a few snapshots: the log below them is trimmed
                alice.say("lobby", f"filler {n}")
            first = redis_call(redis.port, "XRANGE", STREAM, "-", "+", "COUNT", 1)
            assert isinstance(first, list) and first and isinstance(first[0], list)
            assert first[0][0] != b"0-1"  # the registration's entry is gone
            until_trimmed = accounts(redis, "add", "erin", stdin=f"{PASSWORD}\n")
            assert until_trimmed.returncode == 1
            assert "account 'Erin' exists already" in until_trimmed.stderr
            assert '"name": "Erin"' in accounts(redis, "list", "--json").stdout
            assert accounts(redis, "add", "Fay", stdin=f"{PASSWORD}\n").returncode == 0
            caught_up(alice)
            login(node, "fay")  # the node took the command's entry: no hole, no restart
            assert alice.say("lobby", "still here").seq == 41
            assert not any("fell behind" in line for line in node.lines)
