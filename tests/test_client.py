"""The client library against the real server (in-process, and as a subprocess for restarts)."""

from __future__ import annotations

import random
import signal
import socket
import threading
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chatctl.client import (
    AnyEvent,
    Backoff,
    Client,
    Closed,
    Delivered,
    Disconnected,
    Reconnected,
    Refused,
)
from chatctl.client.link import Pacer
from chatctl.errors import ConnectFailed, Rejected, TimedOut
from chatctl.protocol import (
    NEED_DATA,
    UNACKED_MAX,
    Ack,
    Connection,
    DirectMessage,
    ErrorCode,
    HistoryEnd,
    Members,
    Message,
    Notice,
    Role,
    RoomList,
    Say,
    Welcome,
    encode,
)
from tests.clients import WAIT, joined, wait_for
from tests.servers import Client as RawClient
from tests.servers import running_server, serve_process

CUT = Message(room="lobby", seq=1, ts=1, sender="bob", text="whole")


def drain(client: Client) -> list[AnyEvent]:
    events = []
    while (event := client.next_event(0)) is not None:
        events.append(event)
    return events


def test_say_is_acknowledged_and_delivered_to_others_only(server: tuple[str, int]) -> None:
    with joined(server, "alice", "lobby") as alice, joined(server, "bob", "lobby") as bob:
        ack = alice.say("lobby", "hello bob").wait(WAIT)
        assert ack.seq >= 1 and ack.recipients == 1 and ack.room == "lobby"
        message = wait_for(bob, Message)
        assert (message.sender, message.text, message.seq) == ("alice", "hello bob", ack.seq)
        delivered = wait_for(alice, Delivered)
        assert delivered.ack == ack and delivered.nick == "alice"
        assert not any(isinstance(e, Message) for e in drain(alice))  # no echo of our own
        assert alice.last_seq("lobby") == ack.seq == bob.last_seq("lobby")


def test_direct_message_and_action(server: tuple[str, int]) -> None:
    with joined(server, "alice") as alice, joined(server, "bob") as bob:
        ack = alice.tell("BOB", "psst", action=True).wait(WAIT)
        assert ack.recipients == 1 and ack.seq == 0
        dm = wait_for(bob, DirectMessage)
        assert (dm.sender, dm.to, dm.text, dm.action) == ("alice", "bob", "psst", True)


def test_a_taken_nick_gets_a_variant(server: tuple[str, int]) -> None:
    with joined(server, "sam") as first, joined(server, "SAM") as second:
        assert first.nick == "sam"
        assert second.nick.casefold() != "sam" and second.nick.lower().startswith("sam")


def test_an_invalid_nick_is_rejected_with_the_server_code(server: tuple[str, int]) -> None:
    client = Client(*server, nick="no spaces allowed")
    with pytest.raises(Rejected) as info:
        client.connect()
    assert info.value.code == ErrorCode.INVALID_NICK


def test_refused_message_raises_rejected_and_is_reported(server: tuple[str, int]) -> None:
    with joined(server, "alice") as alice:
        with pytest.raises(Rejected) as info:
            alice.tell("nobody-here", "hi").wait(WAIT)
        assert info.value.code == ErrorCode.NO_SUCH_NICK
        refused = wait_for(alice, Refused)
        assert refused.error.code == ErrorCode.NO_SUCH_NICK
        assert alice.unacked() == 0


def test_requests_and_their_answers(server: tuple[str, int]) -> None:
    with joined(server, "alice", "lobby", "#Rust") as alice:
        assert list(alice.rooms) == ["lobby", "rust"]
        alice.who("rust")
        assert wait_for(alice, Members).nicks == ["alice"]
        alice.list_rooms()
        assert wait_for(alice, RoomList).rooms == {"lobby": 1, "rust": 1}
        for i in range(3):
            alice.say("rust", f"m{i}")
        assert alice.wait_acked(WAIT)
        alice.history("rust", limit=2)
        first = wait_for(alice, Message)
        second = wait_for(alice, Message)
        assert [first.text, second.text] == ["m1", "m2"] and first.history
        alice.change_nick("alicia")
        wait_for(alice, Notice, lambda n: n.kind == "renamed")
        assert alice.nick == "alicia"
        alice.part("rust")
        assert list(alice.rooms) == ["lobby"]


def test_sync_returns_after_the_answers_to_earlier_requests(server: tuple[str, int]) -> None:
    with joined(server, "alice", "lobby") as alice:
        alice.list_rooms()
        alice.who("lobby")
        assert alice.sync(WAIT)
        kinds = {type(e) for e in drain(alice)}
        assert {RoomList, Members} <= kinds


def test_close_says_bye_so_the_room_sees_the_departure(server: tuple[str, int]) -> None:
    with joined(server, "watcher", "lobby") as watcher:
        leaver = joined(server, "leaver", "lobby")
        leaver.close("off to lunch")
        left = wait_for(watcher, Notice, lambda n: n.kind == "left")
        assert (left.nick, left.reason) == ("leaver", "off to lunch")
        assert isinstance(wait_for(leaver, Closed), Closed)
        assert not leaver.running
        with pytest.raises(ConnectFailed):
            leaver.say("lobby", "too late").wait(WAIT)


def test_pings_are_answered() -> None:
    # The server drops a client that leaves its pings unanswered; ours must outlive one.
    with (
        running_server(ping_interval=0.2, idle_timeout=0.6) as addr,
        joined(addr, "alive", "lobby") as client,
        RawClient.connect(*addr, "mute", "lobby"),
    ):
        dropped = wait_for(client, Notice, lambda n: n.kind == "dropped")
        assert dropped.nick == "mute"
        assert client.connected
        assert client.say("lobby", "still here").wait(WAIT).seq >= 1


def test_connect_refused_is_connect_failed() -> None:
    with socket.socket() as reserved:
        reserved.bind(("127.0.0.1", 0))  # bound, not listening: connections are refused
        client = Client("127.0.0.1", reserved.getsockname()[1], nick="x")
        with pytest.raises(ConnectFailed, match="could not connect"):
            client.connect()


def test_a_server_that_never_answers_times_out() -> None:
    with socket.create_server(("127.0.0.1", 0)) as mute:  # listens, never reads or writes
        client = Client("127.0.0.1", mute.getsockname()[1], nick="x", connect_timeout=0.3)
        with pytest.raises(TimedOut, match="did not answer"):
            client.connect()


def test_a_lost_connection_without_reconnect_closes_with_an_error(tmp_path: Path) -> None:
    with serve_process() as proc:
        client = joined((proc.host, proc.port), "alice", "lobby")
        proc.proc.kill()
        closed = wait_for(client, Closed)
        assert isinstance(closed.error, ConnectFailed)
        assert not client.running


@given(st.integers(0, 100), st.floats(0.01, 2.0), st.floats(0.1, 60.0), st.integers(0, 2**32))
def test_backoff_grows_within_its_cap_with_jitter(
    attempt: int, base: float, cap: float, seed: int
) -> None:
    backoff = Backoff(base=base, cap=cap)
    delay = backoff.delay(attempt, random.Random(seed))
    ceiling = min(cap, base * 2.0**attempt)
    assert ceiling / 2 <= delay <= ceiling
    assert backoff.delay(attempt + 1, random.Random(seed)) <= min(cap, ceiling * 2)


def test_reconnect_rejoins_resumes_and_resends(tmp_path: Path) -> None:
    data = str(tmp_path / "data")
    with serve_process("--data", data) as first:
        addr = (first.host, first.port)
        alice = joined(
            addr, "alice", "lobby", "dev", reconnect=True, backoff=Backoff(base=0.2, cap=0.5)
        )
        with joined(addr, "bob", "lobby") as bob:
            bob.say("lobby", "before").wait(WAIT)
        wait_for(alice, Message, lambda m: m.text == "before")
        first.proc.kill()
        wait_for(alice, Disconnected)
        # Sent while down: queued, re-sent after the reconnect with its msg_id.
        queued = alice.say("dev", "while down")
        with serve_process("--port", str(addr[1]), "--data", data) as second:
            assert second.port == addr[1]
            with joined(addr, "carol", "lobby") as carol:
                carol.say("lobby", "missed or live").wait(WAIT)
            seen: list[AnyEvent] = []
            wait_for(alice, Reconnected, seen=seen, timeout=3 * WAIT)  # a loaded CI is slow
            ack = queued.wait(WAIT)
            assert ack.room == "dev"
            got = wait_for(alice, Message, lambda m: m.text == "missed or live", seen=seen)
            assert got.seq == 2
            with joined(addr, "dave", "dev", "lobby") as dave:
                dave.who("dev")
                assert "alice" in wait_for(dave, Members, lambda m: m.room == "dev").nicks
                dave.history("dev", limit=10)
                replay = []
                while not isinstance(event := dave.next_event(WAIT), HistoryEnd):
                    if isinstance(event, Message) and event.room == "dev":
                        replay.append(event.text)
                assert replay == ["while down"]  # stored once
            alice.close()
            texts = [e.text for e in seen + drain(alice) if isinstance(e, Message)]
            assert texts.count("before") == 0 and texts.count("missed or live") == 0


def test_an_ack_that_does_not_come_in_time_times_out_and_may_still_come() -> None:
    with serve_process() as proc, Client(proc.host, proc.port, nick="alice") as alice:
        alice.connect()
        proc.proc.send_signal(signal.SIGSTOP)  # a server that hangs
        try:
            out = alice.say("lobby", "are you there?")
            with pytest.raises(TimedOut, match="no acknowledgement"):
                out.wait(0.3)
        finally:
            proc.proc.send_signal(signal.SIGCONT)
        assert out.wait(WAIT).seq == 1  # the waiting ended, the message did not


def test_a_stuck_application_makes_a_slow_consumer_not_a_growing_client() -> None:
    """Events wait for next_event() up to max_backlog; then the reader stops reading, the
    kernel buffers fill, and the server drops the client as a slow consumer (before the fix
    the client read everything into memory and the server never saw it fall behind)."""
    with (
        running_server(rate=0, max_output=64 * 1024) as (host, port),
        joined((host, port), "stuck", "lobby", max_backlog=50) as stuck,
        RawClient.connect(host, port, "flood", "lobby") as flood,
    ):
        text = "x" * 1000
        for i in range(30_000):
            flood.send(Say(msg_id=f"f{i}", room="lobby", text=text))
            if i % 500 == 499:  # read the acks as it goes: the flood is no slow consumer
                last = f"f{i}"
                flood.wait_for(Ack, lambda a: a.msg_id == last, timeout=60)  # noqa: B023
                flood.seen.clear()
        # The flood's last ack comes after the server has handled every message.
        assert stuck._queue.qsize() <= stuck.max_backlog
        # What the kernel buffered still comes first; then the end, with the server's reason.
        seen: list[AnyEvent] = []
        end = wait_for(stuck, Closed, seen=seen, timeout=60)
        # The server queues the rest of a half-sent frame and its Bye, but a reader stuck for
        # longer than the close grace is aborted, possibly inside that frame (docs/protocol.md
        # §6.5).
        assert "slow consumer" in end.reason or "middle of a frame" in end.reason
        assert sum(isinstance(e, Message) for e in seen) < 30_000


@pytest.mark.parametrize(
    ("tail", "reason"),
    [
        (encode(CUT)[:-1], "the server closed the connection in the middle of a frame"),
        (b"XX garbage", "protocol error from the server: bad magic: this is not a chatctl stream"),
    ],
    ids=["cut inside a frame", "garbage"],
)
def test_a_broken_stream_delivers_the_frames_before_the_break_and_says_why(
    tail: bytes, reason: str
) -> None:
    """A stream that ends inside a frame (a connection lost, or a server that aborted a reader
    that did not take even its last frame in time: the protocol says so with TruncatedStream,
    not in words to match) or turns to garbage: the frames before it still arrive."""
    with socket.create_server(("127.0.0.1", 0)) as listener:

        def serve() -> None:
            sock, _ = listener.accept()
            with sock:
                conn = Connection(Role.SERVER)
                while conn.next_event() is NEED_DATA:  # alice's Hello
                    conn.receive_data(sock.recv(65536))
                welcome = Welcome(protocol=1, server="s", version="0", nick="alice", token="")
                sock.sendall(conn.send(welcome) + conn.send(CUT) + tail)

        server = threading.Thread(target=serve, daemon=True)
        server.start()
        with Client(*listener.getsockname()[:2], nick="alice") as alice:
            alice.connect()
            seen: list[AnyEvent] = []
            closed = wait_for(alice, Closed, seen=seen)
        server.join(WAIT)
    assert seen == [CUT]
    assert closed.reason == reason
    assert isinstance(closed.error, ConnectFailed)


def test_the_pacer_mirrors_the_server_bucket_at_90_percent_and_half_the_burst() -> None:
    pacer = Pacer()
    assert pacer.wait_time() == 0  # no limit before a Welcome
    pacer.reset({"rate": 1, "burst": 4})  # paced: 0.9 a second, 2 at once
    pacer.spend()
    assert pacer.wait_time() == 0
    pacer.spend()
    assert 1.0 < pacer.wait_time() <= 1 / 0.9


def test_the_client_keeps_at_most_unacked_max_messages_unacknowledged() -> None:
    """The protocol's UNACKED_MAX (the window in which the server recognises resends): a
    client with that many unanswered waits for an answer before it sends one more."""
    received: list[Say] = []
    arrived = threading.Condition()
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        conn_box: list[socket.socket] = []

        def serve() -> None:
            sock, _ = listener.accept()
            conn_box.append(sock)
            proto = Connection(Role.SERVER)
            welcomed = False
            while data := sock.recv(65536):
                proto.receive_data(data)
                while (event := proto.next_event()) is not NEED_DATA:
                    if not welcomed:
                        sock.sendall(
                            proto.send(
                                Welcome(protocol=1, server="s", version="0", nick="x", token="t")
                            )
                        )
                        welcomed = True
                    elif isinstance(event, Say):
                        with arrived:
                            received.append(event)
                            arrived.notify_all()

        server = threading.Thread(target=serve, daemon=True)
        server.start()
        client = Client("127.0.0.1", port, nick="x")
        client.connect()
        try:
            sender = threading.Thread(
                target=lambda: [client.say("lobby", f"m{i}") for i in range(UNACKED_MAX + 1)],
                daemon=True,
            )
            sender.start()
            with arrived:
                assert arrived.wait_for(lambda: len(received) >= UNACKED_MAX, WAIT)
                # The one more must not come while all are unanswered.
                assert not arrived.wait_for(lambda: len(received) > UNACKED_MAX, 0.5)
            assert client.unacked() == UNACKED_MAX and sender.is_alive()
            first = received[0]
            conn_box[0].sendall(
                encode(Ack(msg_id=first.msg_id, ts=1, recipients=0, room="lobby", seq=1))
            )
            with arrived:
                assert arrived.wait_for(lambda: len(received) == UNACKED_MAX + 1, WAIT)
            sender.join(WAIT)
            assert not sender.is_alive()
        finally:
            client.close()
            server.join(WAIT)
            for sock in conn_box:
                sock.close()
