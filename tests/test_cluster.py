"""`chatctl serve --data redis://...`: several real server processes and a real redis-server
make one chat. Messages sent to every node reach every member on every node in the same
per-room order, with one seq each; an Ack is sent only for what Redis holds; with Redis down
a node refuses messages with 214 UNAVAILABLE (never acks them) and comes back by itself; a
node killed and started again rebuilds its history from the log."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from chatctl.cluster.entries import STREAM, SayEntry, decode_entries
from chatctl.protocol import (
    Ack,
    ConnectionClosed,
    Error,
    ErrorCode,
    Event,
    History,
    HistoryEnd,
    Join,
    Members,
    Message,
    Ping,
    Pong,
    Say,
    Who,
)
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
        entries = decode_entries(payload)
        assert not isinstance(entries, str), entries
        texts += [entry.text for entry in entries if isinstance(entry, SayEntry)]
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
            assert ack.recipients == 6  # the members on every node
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
        # What needs no Redis is still served; what changes who is where waits for it.
        alice.send(Who(room="lobby", rid="w"))
        assert alice.wait_for(Members, lambda m: m.rid == "w", timeout=WAIT).nicks == [
            "alice",
            "watcher",  # on the other node
        ]
        alice.send(Join(room="dev", rid="j"))
        joining = alice.wait_for(Error, lambda e: e.rid == "j", timeout=WAIT)
        assert joining.code == ErrorCode.UNAVAILABLE
        redis.start()
        one.wait_for_line("reachable again", timeout=WAIT)
        assert until_acked(alice, "a2", "during").seq == 2  # both links must be back first
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
            # Ten messages, and the sessions' entries.
            assert int(again.wait_for_line(r"(\d+) log entries applied").group(1)) > 10
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


def test_an_error_from_redis_is_a_refusal_at_once_and_nothing_is_acked(tmp_path: Path) -> None:
    with redis_server(tmp_path) as redis, nodes(redis, 1) as (one,):
        alice = Client.connect(one.host, one.port, "alice", "lobby")
        assert alice.say("lobby", "before").seq == 1
        # Out of memory: Redis refuses every write (XADD) and still serves reads (XREAD).
        assert redis_call(redis.port, "CONFIG", "SET", "maxmemory", "1") == b"OK"
        alice.send(Say(msg_id="full", room="lobby", text="no room"))
        refused = outcome(alice, "full")
        assert isinstance(refused, Error) and refused.code == ErrorCode.UNAVAILABLE
        assert "OOM" in refused.message
        assert redis_call(redis.port, "CONFIG", "SET", "maxmemory", "0") == b"OK"
        assert alice.say("lobby", "after").seq == 2
        assert logged_texts(redis) == ["before", "after"]


def test_messages_in_flight_when_redis_dies_are_each_acked_or_refused_once(
    tmp_path: Path,
) -> None:
    count, window = 1000, 50
    with redis_server(tmp_path, aof=True) as redis, nodes(redis, 2) as (one, two):
        watcher = Client.connect(two.host, two.port, "watcher", "lobby")
        alice = Client.connect(one.host, one.port, "alice")
        answers: dict[str, Ack | Error] = {}
        for start in range(0, count, window):
            ids = [f"k{k}" for k in range(start, start + window)]
            for msg_id in ids:
                alice.send(Say(msg_id=msg_id, room="lobby", text=f"t{msg_id[1:]}"))
            if start == 4 * window:
                # Killed while a window of Says is on its way: some stored, some not, some
                # in doubt; started again at once (from this thread: see dies_with_parent).
                redis.kill()
                redis.start()
            for msg_id in ids:
                answers[msg_id] = outcome(alice, msg_id)
        acked = [m for m, answer in answers.items() if isinstance(answer, Ack)]
        refused = [answer for answer in answers.values() if isinstance(answer, Error)]
        assert all(error.code == ErrorCode.UNAVAILABLE for error in refused)
        assert refused and len(acked) >= 4 * window
        # What was acked is in the log once, in the order sent, and nothing refused is.
        logged = logged_texts(redis)
        assert logged == [f"t{m[1:]}" for m in acked]
        # The member on the other node got exactly those, numbered 1, 2, 3... in that order,
        # and each sender's Ack has its message's seq.
        got = messages(watcher, len(acked))
        assert [m.text for m in got] == logged
        assert [m.seq for m in got] == list(range(1, len(acked) + 1))
        assert [answers[m].seq for m in acked] == [m.seq for m in got]  # type: ignore[union-attr]
        assert isinstance(until_acked(alice, "last", "t-last"), Ack)  # and it is back


def until_acked(client: Client, msg_id: str, text: str) -> Ack:
    """Send the Say again (the same msg_id) until it is acknowledged: refusals (Redis not
    back yet) are UNAVAILABLE."""
    deadline = time.monotonic() + WAIT
    while True:
        client.send(Say(msg_id=msg_id, room="lobby", text=text))
        answer = outcome(client, msg_id)
        if isinstance(answer, Ack):
            return answer
        assert answer.code == ErrorCode.UNAVAILABLE and time.monotonic() < deadline


def test_answers_come_in_the_order_of_the_requests(tmp_path: Path) -> None:
    """docs/protocol.md §6.7: a Say's Ack comes through the log, later than the answer to a
    request after it could: the node holds that one back."""
    with redis_server(tmp_path) as redis, nodes(redis, 1) as (one,):
        alice = Client.connect(one.host, one.port, "alice", "lobby")
        for round_ in range(20):
            requests: list[Event] = [
                Say(msg_id=f"a{round_}", room="lobby", text="one"),
                Ping(token=round_),
                Say(msg_id="", room="lobby", text="refused at once"),
                Who(room="lobby", rid=f"w{round_}"),
                Say(msg_id=f"b{round_}", room="lobby", text="two"),
            ]
            alice.send_raw(b"".join(alice.conn.send(request) for request in requests))  # at once
            kinds: list[type] = []
            while len(kinds) < 5:
                event = alice.recv(WAIT)
                if type(event) in (Ack, Pong, Error, Members):
                    kinds.append(type(event))
            assert kinds == [Ack, Pong, Error, Members, Ack]


def test_a_node_that_would_number_messages_otherwise_does_not_start(tmp_path: Path) -> None:
    with redis_server(tmp_path) as redis, nodes(redis, 1) as (one,):
        alice = Client.connect(one.host, one.port, "alice")
        for k in range(3):
            alice.say("lobby", f"m{k}")
        for args, complaint in (
            (["--retain-messages", "50"], "every node needs the same --retain-messages"),
            (["--retain-age", "60"], "--retain-age does not work with --data redis://"),
        ):
            proc = run_chatctl("serve", "--port", "0", "--data", redis.url, *args, timeout=60)
            assert proc.returncode == 1 and complaint in proc.stderr, proc.stderr
        trimmed = redis_call(redis.port, "XTRIM", STREAM, "MAXLEN", 1)
        assert isinstance(trimmed, int) and trimmed >= 3
        proc = run_chatctl("serve", "--port", "0", "--data", redis.url, timeout=60)
        assert proc.returncode == 1 and "no snapshot covers them" in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr


def test_a_client_of_a_killed_node_resumes_on_another_with_no_loss_and_no_duplicate(
    tmp_path: Path,
) -> None:
    with redis_server(tmp_path) as redis, nodes(redis, 2) as (one, two):
        bob = Client.connect(two.host, two.port, "bob")
        alice = Client.connect(one.host, one.port, "alice", "lobby")
        acks = [alice.say("lobby", f"a{k}", msg_id=f"k{k}") for k in range(5)]
        seen = acks[-1].seq
        one.stop()  # SIGKILL: alice's connection is gone with it
        missed = [bob.say("lobby", f"b{k}").seq for k in range(3)]  # while she is away
        again = Client(two.host, two.port)
        # Her token is good on every node (one key for the cluster): her resends are hers.
        assert again.hello("alice", token=alice.token).token == alice.token
        resent = again.say("lobby", "a4", msg_id="k4")  # its Ack was lost, say
        assert (resent.seq, resent.ts) == (acks[-1].seq, acks[-1].ts)  # the first copy's
        again.send(Say(msg_id="k3", room="lobby", text="another text"))
        reused = outcome(again, "k3")
        assert isinstance(reused, Error) and reused.code == ErrorCode.MSG_ID_REUSED
        # The resume replays exactly what she missed.
        end = again.join("lobby", after=seen)
        replay = [e for e in again.seen if type(e) is Message and e.room == "lobby"]
        assert [(m.seq, m.text) for m in replay] == [(seq, f"b{k}") for k, seq in enumerate(missed)]
        assert end.head == missed[-1]
        # Stored once each: the resend went through the log too, and was known there.
        carol = Client.connect(two.host, two.port, "carol")
        carol.join("lobby", history=100)
        stored = [(m.seq, m.text) for m in carol.seen if type(m) is Message]
        texts = [f"a{k}" for k in range(5)] + ["b0", "b1", "b2"]
        assert stored == list(enumerate(texts, start=1))


class Follower:
    """A member of #lobby on one node, reading on a thread; when its node dies it resumes on
    another (its token, then Join(after=the last seq it saw)), as the client library does:
    its session, still a member of #lobby, receives messages again from its Welcome on, and
    the replay covers what came before, so it keeps each seq once (`resumed`: it did)."""

    def __init__(self, nick: str, home: ServeProcess, fallback: ServeProcess) -> None:
        self.nick = nick
        self.fallback = fallback
        self.got: list[tuple[int, str]] = []  # (seq, text) of every Message, in order
        self.seqs: set[int] = set()
        self.resumed = False
        self.failure: BaseException | None = None
        self.client = Client.connect(home.host, home.port, nick, "lobby")
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            # Until "end", the last message, and everything before it.
            while not any(text == "end" for _, text in self.got[-50:]) or len(self.seqs) != max(
                self.seqs
            ):
                try:
                    event = self.client.recv(WAIT)
                except OSError:
                    event = ConnectionClosed()
                if type(event) is Message:
                    if event.seq not in self.seqs:
                        self.seqs.add(event.seq)
                        self.got.append((event.seq, event.text))
                elif type(event) is ConnectionClosed:
                    self.resumed = True
                    token = self.client.token
                    after = max(self.seqs, default=0)
                    self.client = Client(self.fallback.host, self.fallback.port)
                    self.client.hello(self.nick, token=token)
                    self.client.send(Join(room="lobby", after=after))
        except BaseException as exc:
            self.failure = exc


def test_a_node_killed_under_load_loses_and_duplicates_nothing_acknowledged(
    tmp_path: Path,
) -> None:
    count, window = 1500, 50
    with redis_server(tmp_path) as redis, nodes(redis, 3) as servers:
        one, two, three = servers
        followers = [
            Follower(f"f{i}{j}", home, three if home is one else home)
            for i, home in enumerate(servers)
            for j in range(4)
        ]
        publisher = Client.connect(one.host, one.port, "pub")
        acked: dict[str, Ack] = {}
        unanswered: list[str] = []
        for start in range(0, count + 1, window):
            ids = [f"k{k}" for k in range(start, min(start + window, count))] or ["end"]
            for msg_id in unanswered + ids:
                text = "end" if msg_id == "end" else f"t{msg_id[1:]}"
                publisher.send(Say(msg_id=msg_id, room="lobby", text=text))
            unanswered += ids
            if start == 10 * window:
                one.stop()  # SIGKILL, a window on its way: its publisher moves to node two
                token = publisher.token
                publisher = Client(two.host, two.port)
                assert publisher.hello("pub", token=token).token == token
                continue  # what was not answered is sent again, with the next window
            for msg_id in unanswered:
                answer = outcome(publisher, msg_id)
                assert isinstance(answer, Ack), answer
                acked[msg_id] = answer
            unanswered = []
        for follower in followers:
            follower.thread.join(timeout=WAIT)
            assert follower.failure is None and not follower.thread.is_alive()
        # Every follower saw every message once, numbered without a hole; those that did not
        # have to resume, in one order.
        first = followers[-1].got
        assert not followers[-1].resumed
        assert [seq for seq, _ in first] == list(range(1, len(first) + 1))
        assert len({text for _, text in first}) == len(first) == count + 1
        for follower in followers:
            assert follower.got == first if not follower.resumed else sorted(follower.got) == first
        by_text = {text: seq for seq, text in first}
        for msg_id, ack in acked.items():
            text = "end" if msg_id == "end" else f"t{msg_id[1:]}"
            assert by_text[text] == ack.seq
        # The killed node, started again, holds the same history.
        with serve_process("--data", redis.url) as again:
            again.wait_for_line(r"log entries applied")
            checker = Client.connect(again.host, again.port, "checker")
            checker.send(History(room="lobby", after=0, limit=1000))
            checker.wait_for(HistoryEnd)
            replay = [(m.seq, m.text) for m in checker.seen if type(m) is Message]
            assert replay == first[:1000]


def test_a_burst_of_big_messages_is_split_over_several_entries(tmp_path: Path) -> None:
    with redis_server(tmp_path) as redis, nodes(redis, 2) as (one, two):
        watcher = Client.connect(two.host, two.port, "watcher", "lobby")
        alice = Client.connect(one.host, one.port, "alice")
        texts = [f"{k:03d}" + "x" * 8000 for k in range(100)]  # 800,000 characters at once
        alice.send_raw(
            b"".join(
                alice.conn.send(Say(msg_id=f"k{k}", room="lobby", text=text))
                for k, text in enumerate(texts)
            )
        )
        acks = [outcome(alice, f"k{k}") for k in range(100)]
        assert [a.seq for a in acks if isinstance(a, Ack)] == list(range(1, 101))
        assert [m.text for m in messages(watcher, 100)] == texts
        length = redis_call(redis.port, "XLEN", STREAM)
        assert isinstance(length, int) and length >= 4  # at most 256 Ki characters an entry
