"""`chatctl serve --data redis://...`: who is where is one state across the nodes (real
server processes and a real redis-server). A member on each of three nodes sees the others in
Members and hears them join and leave; a nick taken on one node cannot be taken on another;
a direct message from a client of one node to a client of another arrives once; a node
killed with SIGKILL has its members dropped on the other nodes within the lease."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from chatctl.protocol import (
    Ack,
    ChangeNick,
    DirectMessage,
    Error,
    ErrorCode,
    Event,
    Members,
    Notice,
    Part,
    Tell,
    Who,
)
from tests.redis_servers import RedisServer, redis_server
from tests.servers import Client, ServeProcess, serve_process

WAIT = 20.0
LEASE = 2.0  # --node-lease of the test that kills a node


@contextmanager
def nodes(redis: RedisServer, count: int, *args: str) -> Iterator[list[ServeProcess]]:
    with ExitStack() as stack:
        yield [
            stack.enter_context(serve_process("--data", redis.url, "--rate", "0", *args))
            for _ in range(count)
        ]


def notice(client: Client, kind: str, nick: str, room: str = "lobby") -> Notice:
    return client.wait_for(
        Notice, lambda n: (n.kind, n.nick, n.room) == (kind, nick, room), timeout=WAIT
    )


def who(client: Client, room: str = "lobby") -> list[str]:
    rid = client.next_msg_id()
    client.send(Who(room=room, rid=rid))
    return client.wait_for(Members, lambda m: m.rid == rid, timeout=WAIT).nicks


def listed(client: Client, nicks: list[str], room: str = "lobby") -> None:
    """Wait until the client's node lists `nicks` in `room`: a node lists what another did
    once it has read it from the log."""
    deadline = time.monotonic() + WAIT
    while (members := who(client, room)) != nicks:
        assert time.monotonic() < deadline, members


def test_a_member_on_each_node_sees_the_others_join_and_leave(tmp_path: Path) -> None:
    with redis_server(tmp_path) as redis, nodes(redis, 3) as servers:
        clients: list[Client] = []
        for i, server in enumerate(servers):
            client = Client.connect(server.host, server.port, f"m{i}", "lobby")
            # Everyone who joined before, on any node, is listed.
            assert who(client) == [f"m{k}" for k in range(i + 1)]
            for earlier in clients:
                notice(earlier, "joined", f"m{i}")  # heard on the other nodes
            clients.append(client)
        for client in clients:
            assert who(client) == ["m0", "m1", "m2"]
        # A message counts every node's members, and reaches them.
        ack = clients[0].say("lobby", "hello all")
        assert ack.recipients == 2
        # One parts (its Part is answered by its own notice), one quits, one is lost.
        clients[1].send(Part(room="lobby", reason="later", rid="p"))
        mine = clients[1].wait_for(Notice, lambda n: n.rid == "p", timeout=WAIT)
        assert (mine.kind, mine.nick, mine.reason) == ("left", "m1", "later")
        assert notice(clients[0], "left", "m1").reason == "later"
        assert notice(clients[2], "left", "m1").reason == "later"
        clients[2].bye()
        assert notice(clients[0], "left", "m2").kind == "left"
        clients[1].close()  # no Bye: its connection is just gone; not in the room anyway
        assert who(clients[0]) == ["m0"]
        third = Client.connect(servers[2].host, servers[2].port, "late", "lobby")
        assert who(third) == ["late", "m0"]
        clients[0].close()
        assert notice(third, "dropped", "m0").kind == "dropped"
        assert who(third) == ["late"]


def test_a_nick_taken_on_one_node_cannot_be_taken_on_another(tmp_path: Path) -> None:
    with redis_server(tmp_path) as redis, nodes(redis, 3) as (one, two, three):
        ann = Client.connect(one.host, one.port, "ann", "lobby")
        assert Client.connect(two.host, two.port, "ANN").nick == "ANN2"  # a guest: a variant
        bob = Client.connect(two.host, two.port, "bob", "lobby")
        bob.send(ChangeNick(nick="Ann", rid="c"))
        refused = bob.wait_for(Error, lambda e: e.rid == "c", timeout=WAIT)
        assert refused.code == ErrorCode.NICK_IN_USE
        # Claimed at once on two nodes: the log's order settles it, once.
        cy = Client.connect(three.host, three.port, "cy")
        for client in (bob, cy):
            client.send(ChangeNick(nick="zed", rid="z"))
        outcomes: list[Event] = [
            client.wait_for(
                Event,
                lambda e: type(e) in (Notice, Error) and e.rid == "z",  # type: ignore[attr-defined]
                timeout=WAIT,
            )
            for client in (bob, cy)
        ]
        kinds = sorted(type(answer).__name__ for answer in outcomes)
        assert kinds == ["Error", "Notice"], outcomes
        winner = "bob" if type(outcomes[0]) is Notice else "cy"
        assert all(e.code == ErrorCode.NICK_IN_USE for e in outcomes if isinstance(e, Error))
        if winner == "bob":  # ann shares #lobby with bob: she hears the rename
            renamed = notice(ann, "renamed", "bob", room="")
            assert renamed.new_nick == "zed"
        assert who(ann) == ["ann", "zed"] if winner == "bob" else ["ann", "bob"]
        # Gone, the nick is free again everywhere.
        ann.bye()
        deadline = time.monotonic() + WAIT
        while (fresh := Client.connect(three.host, three.port, "ann")).nick != "ann":
            assert time.monotonic() < deadline
            fresh.close()


def test_a_direct_message_to_another_node_arrives_once(tmp_path: Path) -> None:
    with redis_server(tmp_path) as redis, nodes(redis, 3) as (one, two, _):
        ann = Client.connect(one.host, one.port, "ann")
        bob = Client.connect(two.host, two.port, "bob")
        ann.send(Tell(to="BOB", msg_id="d1", text="psst", rid="t"))
        ack = ann.wait_for(Ack, lambda a: a.msg_id == "d1", timeout=WAIT)
        assert (ack.recipients, ack.rid) == (1, "t")
        dm = bob.wait_for(DirectMessage, timeout=WAIT)
        assert (dm.sender, dm.to, dm.text) == ("ann", "bob", "psst")
        # A resend (its Ack lost, say) is acknowledged again, and not delivered again; the
        # same msg_id for another text is refused; nobody by that name: NO_SUCH_NICK.
        ann.send(Tell(to="bob", msg_id="d1", text="psst"))
        again = ann.wait_for(Ack, lambda a: a.msg_id == "d1", timeout=WAIT)
        assert again.ts == ack.ts
        for msg_id, to, text, code in (
            ("d1", "bob", "other", ErrorCode.MSG_ID_REUSED),
            ("d2", "nobody", "hi", ErrorCode.NO_SUCH_NICK),
        ):
            ann.send(Tell(to=to, msg_id=msg_id, text=text))
            error = ann.wait_for(Error, lambda e: e.msg_id == msg_id, timeout=WAIT)  # noqa: B023
            assert error.code == code
        ann.send(Tell(to="bob", msg_id="d3", text="last"))
        ann.wait_for(Ack, lambda a: a.msg_id == "d3", timeout=WAIT)
        assert bob.wait_for(DirectMessage, timeout=WAIT).text == "last"
        assert not [e for e in bob.seen if type(e) is DirectMessage]  # "psst" came once
        # Bob's DM to ann's node, the other way, and an Ack only after the log had it.
        bob.send(Tell(to="ann", msg_id="b1", text="back"))
        assert bob.wait_for(Ack, lambda a: a.msg_id == "b1", timeout=WAIT).recipients == 1
        assert ann.wait_for(DirectMessage, timeout=WAIT).text == "back"


def test_a_killed_nodes_members_are_dropped_within_the_lease(tmp_path: Path) -> None:
    lease = ["--node-lease", str(LEASE)]
    with redis_server(tmp_path) as redis, nodes(redis, 3, *lease) as (one, two, three):
        watchers = [
            Client.connect(s.host, s.port, f"w{i}", "lobby") for i, s in enumerate((two, three))
        ]
        for k in range(3):
            Client.connect(one.host, one.port, f"d{k}", "lobby")
        for watcher in watchers:  # once its node has read their joins
            listed(watcher, ["d0", "d1", "d2", "w0", "w1"])
        # Talk goes on meanwhile: the live nodes' messages are their beats too.
        stop = threading.Event()

        def chatter() -> None:
            talker = Client.connect(two.host, two.port, "talker")
            k = 0
            while not stop.is_set():
                talker.say("other", f"t{k}")
                k += 1

        thread = threading.Thread(target=chatter, daemon=True)
        thread.start()
        try:
            killed = time.monotonic()
            one.stop()  # SIGKILL: its connections vanish with no word to anyone
            for watcher in watchers:
                for k in range(3):
                    dropped = notice(watcher, "dropped", f"d{k}")
                    assert "stopped answering" in dropped.reason
            took = time.monotonic() - killed
            # The bound: a lease after its last entry, found by an entry at most a beat
            # (a fifth of the lease) later; the slack is this test machine's.
            assert LEASE * 0.75 < took < LEASE * 1.2 + 3.0, took
            for watcher in watchers:
                assert who(watcher) == ["w0", "w1"]
            # A killed node's client resumes elsewhere: its nick is free again by then.
            assert Client.connect(three.host, three.port, "d0").nick == "d0"
        finally:
            stop.set()
            thread.join(WAIT)
