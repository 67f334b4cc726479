"""`serve --data redis://... --redis-replicas N`: a node acknowledges what it proposed only once
N Redis replicas have it too (WAIT after each XADD). With a real master and replica: Acks
while the replica keeps up; with the replica killed, a Say is refused with 214 although the
log has it (members receive it), and its resend, once the replica is back, is acknowledged
with the first copy's seq."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from chatctl.protocol import Ack, Error, ErrorCode, Members, Say, Tell, Who
from tests.redis_servers import RedisServer, redis_call, redis_server
from tests.servers import Client, ServeProcess, serve_process
from tests.test_cluster import WAIT, logged_texts, messages, outcome


def wait_for_replicas(master: RedisServer, count: int) -> None:
    """Until `count` replicas are connected and have caught up with the master."""
    deadline = time.monotonic() + WAIT
    while True:
        info = redis_call(master.port, "INFO", "replication")
        assert isinstance(info, bytes)
        fields = dict(line.split(":", 1) for line in info.decode().splitlines() if ":" in line)
        offset = fields.get("master_repl_offset")
        caught_up = [
            value
            for key, value in fields.items()
            if key.startswith("slave") and "state=online" in value and f"offset={offset}," in value
        ]
        if int(fields.get("connected_slaves", 0)) == count and len(caught_up) == count:
            return
        assert time.monotonic() < deadline, info
        time.sleep(0.05)  # polling Redis for a condition, with a deadline


@contextmanager
def replicated(tmp_path: Path) -> Iterator[tuple[RedisServer, RedisServer, ServeProcess]]:
    """A Redis master with AOF, one replica that has caught up, and a node that waits for
    one replica (`--redis-replicas 1`): (the master, the replica, the node)."""
    (tmp_path / "m").mkdir()
    (tmp_path / "r").mkdir()
    with (
        redis_server(tmp_path / "m", aof=True) as master,
        redis_server(tmp_path / "r", replica_of=master.port) as replica,
    ):
        wait_for_replicas(master, 1)
        with serve_process("--data", master.url, "--rate", "0", "--redis-replicas", "1") as node:
            yield master, replica, node


def test_acks_wait_for_the_replica_and_a_say_it_missed_is_refused_then_recognised(
    tmp_path: Path,
) -> None:
    with replicated(tmp_path) as (master, replica, node):
        bob = Client.connect(node.host, node.port, "bob", "lobby")
        alice = Client.connect(node.host, node.port, "alice", "lobby")
        first = alice.say("lobby", "replicated", msg_id="a1")
        assert isinstance(first, Ack) and first.seq == 1
        assert logged_texts(replica) == ["replicated"]  # acked: the replica has it
        replica.kill()
        alice.send(Say(msg_id="a2", room="lobby", text="not replicated"))
        refused = outcome(alice, "a2")
        assert isinstance(refused, Error) and refused.code == ErrorCode.UNAVAILABLE
        assert "0 of 1 Redis replicas" in refused.message and "resend" in refused.message
        node.wait_for_line("messages are not acknowledged until replicated")
        # The log has it all the same: every member receives it, once.
        assert [(m.seq, m.text) for m in messages(bob, 2)] == [
            (1, "replicated"),
            (2, "not replicated"),
        ]
        replica.start()
        wait_for_replicas(master, 1)
        again = alice.say("lobby", "not replicated", msg_id="a2")  # the resend
        assert isinstance(again, Ack) and again.seq == 2
        node.wait_for_line("1 Redis replicas keep up again")
        after = alice.say("lobby", "later", msg_id="a3")
        assert isinstance(after, Ack) and after.seq == 3


def test_more_replicas_than_redis_has_refuses_every_say(tmp_path: Path) -> None:
    with (
        redis_server(tmp_path, aof=True) as master,
        serve_process("--data", master.url, "--rate", "0", "--redis-replicas", "2") as node,
    ):
        alice = Client.connect(node.host, node.port, "alice", "lobby")
        alice.send(Say(msg_id="a1", room="lobby", text="hello"))
        refused = outcome(alice, "a1")
        assert isinstance(refused, Error) and refused.code == ErrorCode.UNAVAILABLE
        assert "0 of 2 Redis replicas had it within 1000 ms" in refused.message


def test_while_the_replica_is_away_answers_stay_prompt_and_tells_are_refused_too(
    tmp_path: Path,
) -> None:
    """Says sent over many loop turns while the replica is away are each answered (214)
    within a few of WAIT's 1 s timeouts, not one timeout after another; a Tell is refused
    like a Say."""
    with replicated(tmp_path) as (_master, replica, node):
        bob = Client.connect(node.host, node.port, "bob", "lobby")
        alice = Client.connect(node.host, node.port, "alice", "lobby")
        assert alice.say("lobby", "before", msg_id="a0").seq == 1
        replica.kill()
        started = time.monotonic()
        for n in range(12):
            alice.send(Say(msg_id=f"a{n + 1}", room="lobby", text=f"m{n}"))
            # A Who is answered at once, not through the log: a loop turn has passed.
            rid = f"w{n}"
            bob.send(Who(room="lobby", rid=rid))
            assert bob.wait_for(Members, timeout=WAIT).rid == rid
        answers = [outcome(alice, f"a{n + 1}") for n in range(12)]
        took = time.monotonic() - started
        assert all(isinstance(a, Error) and a.code == ErrorCode.UNAVAILABLE for a in answers)
        assert took < 6.0, took
        alice.send(Tell(msg_id="t1", to="bob", text="psst"))
        told = outcome(alice, "t1")
        assert isinstance(told, Error) and told.code == ErrorCode.UNAVAILABLE
        assert "Redis replicas" in told.message
