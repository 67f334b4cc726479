"""`chatctl serve --data redis://...`: several real server processes and a real redis-server
make one chat. Messages sent to every node reach every member on every node in the same
per-room order, with one seq each; an Ack is sent only for what Redis holds; with Redis down
a node refuses messages with 214 UNAVAILABLE (never acks them) and comes back by itself; a
node killed and started again rebuilds its history from the log."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from chatctl.cluster.entries import STREAM, SayEntry, decode_entry
from chatctl.protocol import Ack, Error, ErrorCode, Event, Message, Say
from tests.redis_servers import RedisServer, redis_call, redis_server
from tests.servers import Client, ServeProcess, free_port, run_chatctl, serve_process

WAIT = 20.0


@contextmanager
def nodes(redis: RedisServer, count: int) -> Iterator[list[ServeProcess]]:
    with ExitStack() as stack:
        yield [
            stack.enter_context(serve_process("--data", redis.url, "--rate", "0"))
            for _ in range(count)
        ]


def messages(client: Client, count: int, room: str = "lobby") -> list[Message]:
    """The next `count` Messages of `room` the client receives."""
    out: list[Message] = []
    while len(out) < count:
        out.append(client.wait_for(Message, lambda m: m.room == room, timeout=WAIT))
    return out


def outcome(client: Client, msg_id: str) -> Ack | Error:
    """The answer to the Say `msg_id`: its Ack or its Error."""
    event: Event = client.wait_for(
        Event,
        lambda e: type(e) in (Ack, Error) and e.msg_id == msg_id,  # type: ignore[attr-defined]
        timeout=WAIT,
    )
    assert isinstance(event, (Ack, Error))
    return event


def logged_texts(redis: RedisServer) -> list[str]:
    """The texts of the Says in the shared log, in log order."""
    reply = redis_call(redis.port, "XRANGE", STREAM, "-", "+")
    assert isinstance(reply, list)
    texts = []
    for item in reply:
        assert isinstance(item, list) and isinstance(item[1], list)
        payload = item[1][1]
        assert isinstance(payload, bytes)
        entry = decode_entry(payload)
        if isinstance(entry, SayEntry):
            texts.append(entry.text)
    return texts


def test_three_nodes_deliver_every_message_to_every_member_in_one_order(tmp_path: Path) -> None:
    per_sender = 40
    with redis_server(tmp_path) as redis, nodes(redis, 3) as servers:
        members = [
            Client.connect(s.host, s.port, f"m{i}{j}", "lobby")
            for i, s in enumerate(servers)
            for j in range(2)
        ]
        senders = [Client.connect(s.host, s.port, f"s{i}") for i, s in enumerate(servers)]
        # Every sender pipelines all its Says at once: the nodes interleave them.
        for i, sender in enumerate(senders):
            for k in range(per_sender):
                sender.send(Say(msg_id=f"k{k}", room="lobby", text=f"s{i}-{k}"))
        acks = {
            (i, k): outcome(sender, f"k{k}")
            for i, sender in enumerate(senders)
            for k in range(per_sender)
        }
        total = per_sender * len(senders)
        got = [messages(member, total) for member in members]
        order = [(m.seq, m.sender, m.text) for m in got[0]]
        for other in got[1:]:
            assert [(m.seq, m.sender, m.text) for m in other] == order
        assert [seq for seq, _, _ in order] == list(range(1, total + 1))
        for i in range(len(senders)):  # each sender's messages in the order it sent them
            texts = [text for _, sender, text in order if sender == f"s{i}"]
            assert texts == [f"s{i}-{k}" for k in range(per_sender)]
        by_text = {text: seq for seq, _, text in order}
        for (i, k), ack in acks.items():
            assert isinstance(ack, Ack), ack
            assert ack.seq == by_text[f"s{i}-{k}"] and ack.room == "lobby"
            assert ack.recipients == 2  # the members on the sender's own node
        assert sorted(logged_texts(redis)) == sorted(by_text)  # acked: in Redis, once each


def test_without_redis_a_node_refuses_messages_and_comes_back_by_itself(tmp_path: Path) -> None:
    with redis_server(tmp_path, aof=True) as redis, nodes(redis, 2) as (one, two):
        watcher = Client.connect(two.host, two.port, "watcher", "lobby")
        alice = Client.connect(one.host, one.port, "alice", "lobby")
        assert alice.say("lobby", "before", msg_id="a1").seq == 1
        redis.kill()
        one.wait_for_line("Redis unavailable")
        alice.send(Say(msg_id="a2", room="lobby", text="during"))
        refused = outcome(alice, "a2")
        assert isinstance(refused, Error) and refused.code == ErrorCode.UNAVAILABLE
        assert "not stored" in refused.message
        assert alice.join("dev").head == 0  # what needs no Redis is still served
        redis.start()
        one.wait_for_line("reachable again", timeout=WAIT)
        deadline = time.monotonic() + WAIT
        while True:  # both links must be back: until then, refusals
            alice.send(Say(msg_id="a2", room="lobby", text="during"))
            answer = outcome(alice, "a2")
            if isinstance(answer, Ack):
                break
            assert answer.code == ErrorCode.UNAVAILABLE and time.monotonic() < deadline
        assert answer.seq == 2
        assert [(m.seq, m.text) for m in messages(watcher, 2)] == [(1, "before"), (2, "during")]


def test_a_node_killed_and_started_again_rebuilds_its_history_from_the_log(
    tmp_path: Path,
) -> None:
    with redis_server(tmp_path) as redis, nodes(redis, 2) as (one, two):
        alice = Client.connect(one.host, one.port, "alice")
        bob = Client.connect(two.host, two.port, "bob")
        for k in range(5):
            alice.say("lobby", f"a{k}")
            bob.say("dev", f"b{k}")
        one.stop()  # SIGKILL
        with serve_process("--data", redis.url) as again:
            assert again.wait_for_line(r"(\d+) log entries applied").group(1) == "10"
            carol = Client(again.host, again.port)
            carol.hello("carol")
            for room, sender in (("lobby", "alice"), ("dev", "bob")):
                end = carol.join(room, history=10)
                assert end.head == 5
                replay = [e for e in carol.seen if type(e) is Message and e.room == room]
                assert [(m.seq, m.sender) for m in replay] == [(k, sender) for k in range(1, 6)]
            # And it takes part at once: its messages continue the rooms' numbering.
            assert carol.say("lobby", "after").seq == 6
            assert bob.say("lobby", "and me").seq == 7


def test_a_node_that_cannot_reach_redis_does_not_start() -> None:
    url = f"redis://127.0.0.1:{free_port()}"
    proc = run_chatctl("serve", "--port", "0", "--data", url, timeout=60)
    assert proc.returncode == 1
    assert f"cannot use Redis at {url}/0" in proc.stderr
    assert "Traceback" not in proc.stderr
