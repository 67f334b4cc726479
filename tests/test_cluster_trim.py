"""`chatctl serve --data redis://...`: the shared log is trimmed behind snapshots (real server
processes and a real redis-server). The log's length stays bounded however much is said; a
node started after trimming has the retained history with the same seqs and takes part; a
resend after a snapshot is still recognised; a node that fell behind the trim point loads
the snapshot again and its clients resume with nothing lost; killing the node that writes
snapshots, with SIGKILL, loses nothing."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

from chatctl.cluster.entries import STREAM
from chatctl.cluster.snapshot import POINTER
from chatctl.protocol import (
    Ack,
    DirectMessage,
    Error,
    ErrorCode,
    History,
    HistoryEnd,
    Message,
    Say,
    Tell,
)
from tests.redis_servers import RedisServer, redis_call, redis_server
from tests.servers import Client, ServeProcess, serve_process
from tests.test_cluster_members import nodes

WAIT = 20.0
EVERY = 10  # --snapshot-every of these tests: stream entries between snapshots
OPTIONS = ("--snapshot-every", str(EVERY), "--retain-messages", "50")


def xlen(redis: RedisServer) -> int:
    length = redis_call(redis.port, "XLEN", STREAM)
    assert isinstance(length, int)
    return length


def until(condition: object, what: str, timeout: float = WAIT) -> None:
    """Wait for `condition()` to hold, up to `timeout`."""
    assert callable(condition)
    deadline = time.monotonic() + timeout
    pause = threading.Event()
    while not condition():
        assert time.monotonic() < deadline, what
        pause.wait(0.02)


def written(node: ServeProcess) -> int:
    return sum("snapshot at" in line and "written" in line for line in node.lines)


def resume(node: ServeProcess, nick: str, token: str) -> Client:
    """A client resuming its session on `node`, which may refuse it (`Bye`) while it reads
    the log: it tries again, as the client library does."""
    deadline = time.monotonic() + WAIT
    while True:
        client = Client(node.host, node.port)
        try:
            welcome = client.hello(nick, token=token)
        except AssertionError:  # not admitted yet
            client.close()
            assert time.monotonic() < deadline, "not admitted"
            continue
        assert (welcome.nick, welcome.token) == (nick, token)  # the same session
        return client


def history(client: Client, room: str = "lobby") -> list[tuple[int, str]]:
    """Every message `room` retains, paged through with History requests."""
    got: list[tuple[int, str]] = []
    while True:
        client.seen.clear()
        after = got[-1][0] if got else 0
        client.send(History(room=room, after=after, limit=1000, rid="h"))
        end = client.wait_for(HistoryEnd, lambda e: e.rid == "h", timeout=WAIT)
        got += [(m.seq, m.text) for m in client.seen if type(m) is Message and m.room == room]
        if not got or got[-1][0] >= end.head:
            return got


def test_the_log_stays_bounded_and_a_node_started_after_trimming_takes_part(
    tmp_path: Path,
) -> None:
    with redis_server(tmp_path) as redis, nodes(redis, 2, *OPTIONS) as (one, two):
        alice = Client.connect(one.host, one.port, "alice", "lobby")
        bob = Client.connect(two.host, two.port, "bob", "lobby")
        alice.send(Tell(to="bob", msg_id="t1", text="psst"))
        alice.wait_for(Ack, lambda a: a.msg_id == "t1", timeout=WAIT)
        bob.wait_for(DirectMessage, timeout=WAIT)
        acks = [alice.say("lobby", f"a{k}", msg_id=f"k{k}") for k in range(150)]
        assert [a.seq for a in acks] == list(range(1, 151))
        added = redis_call(redis.port, "XINFO", "STREAM", STREAM)
        assert isinstance(added, list)
        entries_added = dict(zip(added[::2], added[1::2], strict=True))[b"entries-added"]
        assert isinstance(entries_added, int) and entries_added >= 150
        # At most the entries since the snapshot before the current one, and a few more
        # appended while the last commit was on its way.
        until(lambda: xlen(redis) <= 2 * EVERY + 4, f"the log is {xlen(redis)} entries long")
        assert written(one) >= 10
        with serve_process("--data", redis.url, "--rate", "0", *OPTIONS) as three:
            three.wait_for_line(r"snapshot at \d+-\d+ loaded", WAIT)
            carol = Client.connect(three.host, three.port, "carol")
            assert history(carol) == [(k + 1, f"a{k}") for k in range(100, 150)]
            carol.join("lobby")
            ack = carol.say("lobby", "from three")
            assert (ack.seq, ack.recipients) == (151, 2)
            for member in (alice, bob):
                got = member.wait_for(Message, lambda m: m.text == "from three", timeout=WAIT)
                assert got.seq == 151
            # Alice resumes on the node that started from a snapshot: her resends are known.
            again = Client(three.host, three.port)
            assert again.hello("alice", token=alice.token).token == alice.token
            resent = again.say("lobby", "a149", msg_id="k149")
            assert (resent.seq, resent.ts) == (acks[-1].seq, acks[-1].ts)
            again.send(Say(msg_id="k148", room="lobby", text="another text"))
            reused = again.wait_for(Error, lambda e: e.msg_id == "k148", timeout=WAIT)
            assert reused.code == ErrorCode.MSG_ID_REUSED
            again.send(Tell(to="bob", msg_id="t1", text="psst"))  # told before the snapshots
            assert again.wait_for(Ack, lambda a: a.msg_id == "t1", timeout=WAIT).recipients == 1
            again.send(Tell(to="bob", msg_id="t1", text="another"))
            assert again.wait_for(Error, lambda e: e.msg_id == "t1").code == ErrorCode.MSG_ID_REUSED
            bob.say("lobby", "the end")  # after the resent tell in the log: bob did not get it
            assert not [e for e in bob.seen if type(e) is DirectMessage]


def test_a_node_behind_the_trim_point_loads_the_snapshot_again_and_its_clients_resume(
    tmp_path: Path,
) -> None:
    with redis_server(tmp_path) as redis, nodes(redis, 2, *OPTIONS) as (one, two):
        alice = Client.connect(one.host, one.port, "alice", "lobby")
        bob = Client.connect(two.host, two.port, "bob", "lobby")
        first = alice.say("lobby", "before")
        bob.wait_for(Message, lambda m: m.seq == first.seq, timeout=WAIT)
        os.kill(two.proc.pid, signal.SIGSTOP)  # its reader stops where it is
        try:
            acks = [alice.say("lobby", f"a{k}") for k in range(4 * EVERY)]
            until(lambda: written(one) >= 3, "snapshots written")
        finally:
            os.kill(two.proc.pid, signal.SIGCONT)
        two.wait_for_line("fell behind|were trimmed before this node read them", WAIT)
        assert bob.wait_closed(WAIT) is not None  # Bye: its node's state was replaced
        again = resume(two, "bob", bob.token)
        again.join("lobby", after=first.seq)
        replay = [(m.seq, m.text) for m in again.seen if type(m) is Message]
        assert replay == [(a.seq, f"a{k}") for k, a in enumerate(acks)]
        ack = again.say("lobby", "back")
        assert ack.seq == acks[-1].seq + 1
        assert alice.wait_for(Message, lambda m: m.text == "back", timeout=WAIT).seq == ack.seq


def test_killing_the_node_that_writes_snapshots_loses_nothing(tmp_path: Path) -> None:
    options = ("--snapshot-every", str(EVERY), "--retain-messages", "5000", "--node-lease", "2")
    with redis_server(tmp_path) as redis, nodes(redis, 2, *options) as (one, two):
        alice = Client.connect(one.host, one.port, "alice")
        text = "x" * 2000  # a few MB of history: each snapshot takes a while to write
        acked: list[Ack] = []
        k = 0
        while True:
            batch = [
                Say(msg_id=f"k{k + i}", room="lobby", text=f"{k + i} {text}") for i in range(20)
            ]
            alice.send_raw(b"".join(alice.conn.send(say) for say in batch))
            k += len(batch)
            if written(one) >= 3:  # snapshots back to back: it is writing one now, or soon
                one.stop()  # SIGKILL
                break
            for say in batch:
                acked.append(alice.wait_for(Ack, lambda a: a.msg_id == say.msg_id, timeout=WAIT))  # noqa: B023
            assert k < 4000, "no snapshot written"
        # What was acknowledged before the kill is in the history of the survivor...
        bob = Client.connect(two.host, two.port, "bob")
        survived = history(bob)
        wanted = [(a.seq, f"{a.msg_id[1:]} {text}") for a in acked]
        assert survived[: len(wanted)] == wanted
        assert [seq for seq, _ in survived] == list(range(1, len(survived) + 1))
        # ... which writes the snapshots now (its beats are the log's entries), and of a node
        # started from one of them.
        until(lambda: written(two) >= 1, "a snapshot written by the survivor", timeout=30)
        pointer = redis_call(redis.port, "HGET", POINTER, "id")
        assert isinstance(pointer, bytes)
        with serve_process("--data", redis.url, "--rate", "0", *options) as three:
            three.wait_for_line(r"snapshot at \d+-\d+ loaded", WAIT)
            carol = Client.connect(three.host, three.port, "carol")
            assert history(carol) == survived
        # A snapshot the dead node had begun is not current, and expires.
        keys = redis_call(redis.port, "KEYS", "chatctl:snapshot:*")
        assert isinstance(keys, list)
        current = redis_call(redis.port, "HGET", POINTER, "id")
        assert isinstance(current, bytes)
        for key in keys:
            assert isinstance(key, bytes)
            ttl = redis_call(redis.port, "PTTL", key)
            assert (ttl == -1) == (key == POINTER + b":" + current), (key, ttl)
