"""Chat behaviour over real sockets, against the in-process server and a `chatctl serve`."""

from __future__ import annotations

import socket

from chatctl.errors import ExitCode
from chatctl.protocol import (
    Ack,
    Bye,
    ChangeNick,
    DirectMessage,
    Error,
    ErrorCode,
    Hello,
    HistoryEnd,
    Join,
    ListRooms,
    Members,
    Message,
    Notice,
    Part,
    RoomList,
    Say,
    Tell,
    Who,
    encode,
)
from tests.servers import Client, run_chatctl, running_server, serve_process


def test_say_reaches_every_other_member_once_with_seq_and_ack() -> None:
    with running_server() as (host, port):
        alice = Client.connect(host, port, "alice", "lobby")
        bob = Client.connect(host, port, "bob", "lobby")
        carol = Client.connect(host, port, "carol", "lobby")
        ack = alice.say("#Lobby", "hello")
        assert (ack.room, ack.seq, ack.recipients) == ("lobby", 1, 2)
        for member in (bob, carol):
            message = member.wait_for(Message)
            assert (message.sender, message.room, message.seq, message.text) == (
                "alice",
                "lobby",
                1,
                "hello",
            )
            assert message.ts == ack.ts and not message.history
        ack2 = bob.say("lobby", "waves", action=True)
        assert ack2.seq == 2
        got = alice.wait_for(Message)
        assert got.action and got.seq == 2 and got.sender == "bob"
        # The sender never gets its own message back: the next thing alice sees is carol's.
        carol.say("lobby", "third")
        assert alice.wait_for(Message).text == "third"
        assert all(type(e) is not Message or e.sender != "alice" for e in alice.seen)


def test_rooms_are_separate_and_notices_reach_members() -> None:
    with running_server() as (host, port):
        alice = Client.connect(host, port, "alice", "a", "b")
        bob = Client.connect(host, port, "bob", "a")
        carol = Client.connect(host, port, "carol", "b")
        joined = alice.wait_for(Notice, lambda n: n.nick == "bob")
        assert (joined.kind, joined.room) == ("joined", "a")
        assert alice.wait_for(Notice, lambda n: n.nick == "carol").room == "b"
        assert carol.say("b", "only b").recipients == 1
        assert alice.wait_for(Message).room == "b"
        assert bob.say("a", "only a").recipients == 1
        assert alice.wait_for(Message).text == "only a"
        carol.send(Part(room="b", reason="lunch"))
        left = alice.wait_for(Notice, lambda n: n.kind == "left")
        assert (left.nick, left.room, left.reason) == ("carol", "b", "lunch")
        bob.sock.close()  # drops without a Bye
        dropped = alice.wait_for(Notice, lambda n: n.kind == "dropped")
        assert (dropped.nick, dropped.room) == ("bob", "a")
        assert dropped.reason


def test_say_without_joining_is_stored_and_delivered() -> None:
    with running_server() as (host, port):
        member = Client.connect(host, port, "member", "news")
        outsider = Client.connect(host, port, "outsider")
        assert outsider.say("news", "extra").recipients == 1
        assert member.wait_for(Message).text == "extra"
        assert outsider.say("empty-room", "anyone?").recipients == 0


def test_direct_messages_who_and_room_list() -> None:
    with running_server() as (host, port):
        alice = Client.connect(host, port, "Alice", "lobby")
        bob = Client.connect(host, port, "bob", "lobby", "dev")
        bob.send(Tell(msg_id="t1", to="ALICE", text="psst", action=True))
        ack = bob.wait_for(Ack)
        assert (ack.msg_id, ack.seq, ack.recipients) == ("t1", 0, 1)
        dm = alice.wait_for(DirectMessage)
        assert (dm.sender, dm.to, dm.text, dm.action) == ("bob", "Alice", "psst", True)
        bob.send(Tell(msg_id="t2", to="nobody", text="hi"))
        error = bob.wait_for(Error)
        assert (error.code, error.msg_id) == (ErrorCode.NO_SUCH_NICK, "t2")
        alice.send(Who(room="lobby"))
        assert alice.wait_for(Members).nicks == ["Alice", "bob"]
        alice.send(ListRooms())
        assert alice.wait_for(RoomList).rooms == {"dev": 1, "lobby": 2}


def test_nicks_are_unique_validated_and_changeable() -> None:
    with running_server() as (host, port):
        alice = Client.connect(host, port, "alice", "lobby")
        second = Client.connect(host, port, "ALICE", "lobby")
        assert second.nick == "ALICE2"
        bad = Client(host, port)
        bad.send(Hello(version=1, nick="no spaces"))
        bye = bad.wait_closed()
        assert bye is not None and bye.code == ErrorCode.INVALID_NICK
        second.send(ChangeNick(nick="Alice"))
        assert second.wait_for(Error).code == ErrorCode.NICK_IN_USE
        second.send(ChangeNick(nick="bad nick!"))
        assert second.wait_for(Error).code == ErrorCode.INVALID_NICK
        second.send(ChangeNick(nick="bob"))
        renamed = alice.wait_for(Notice, lambda n: n.kind == "renamed")
        assert (renamed.nick, renamed.new_nick, renamed.room) == ("ALICE2", "bob", "")
        assert second.wait_for(Notice, lambda n: n.kind == "renamed").new_nick == "bob"
        assert second.say("lobby", "now bob").recipients == 1
        assert alice.wait_for(Message).sender == "bob"


def test_refused_requests_keep_the_connection_open() -> None:
    with running_server(max_text=10, max_rooms=1) as (host, port):
        alice = Client.connect(host, port, "alice", "lobby")
        alice.send(Say(msg_id="1", room="lobby", text="x" * 11))
        assert alice.wait_for(Error).code == ErrorCode.TEXT_TOO_LONG
        alice.send(Say(msg_id="2", room="lobby", text="  "))
        assert alice.wait_for(Error).code == ErrorCode.EMPTY_TEXT
        alice.send(Say(msg_id="3", room="no spaces", text="x"))
        assert alice.wait_for(Error).code == ErrorCode.INVALID_ROOM
        alice.send(Join(room="second"))
        assert alice.wait_for(Error).code == ErrorCode.TOO_MANY_ROOMS
        alice.send(Part(room="elsewhere"))
        assert alice.wait_for(Error).code == ErrorCode.NOT_IN_ROOM
        assert alice.say("lobby", "still here").seq == 1


def test_history_on_join_and_resend_is_acknowledged_once() -> None:
    with running_server(join_history=2) as (host, port):
        alice = Client.connect(host, port, "alice", "lobby")
        for i in range(3):
            alice.say("lobby", f"m{i}", msg_id=f"id{i}")
        again = alice.say("lobby", "m2", msg_id="id2")
        assert again.seq == 3
        bob = Client(host, port)
        bob.hello("bob")
        bob.send(Join(room="lobby"))
        replay = [bob.wait_for(Message), bob.wait_for(Message)]
        assert [m.text for m in replay] == ["m1", "m2"] and all(m.history for m in replay)
        assert bob.wait_for(HistoryEnd).head == 3


def test_subprocess_server_chat_and_log() -> None:
    with serve_process("--log-format", "json") as server:
        alice = Client.connect(server.host, server.port, "alice", "lobby")
        bob = Client.connect(server.host, server.port, "bob", "lobby")
        assert alice.say("lobby", "over a real process").recipients == 1
        assert bob.wait_for(Message).text == "over a real process"
        server.wait_for_line(r'"event": "hello".*"nick": "bob"')


def test_port_in_use_is_one_line_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_chatctl("serve", "--port", str(port), "--data", ":memory:", timeout=30)
    assert result.returncode == ExitCode.ERROR
    assert "Traceback" not in result.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr


def test_bad_address_is_one_line_error() -> None:
    result = run_chatctl("serve", "--host", "no.such.host.invalid", "--port", "0", timeout=30)
    assert result.returncode == ExitCode.ERROR
    assert "Traceback" not in result.stderr
    assert "bad address" in result.stderr


def test_pipelined_frames_keep_their_order_for_every_member() -> None:
    """Frames one loop turn produces for a room share a batch: a rename, a part, a join and
    private acks in the middle of a burst must still arrive exactly where they were sent."""
    with running_server(rate=0) as (host, port):
        alice = Client.connect(host, port, "alice", "lobby", "side")
        bob = Client.connect(host, port, "bob", "lobby", "side")
        carol = Client.connect(host, port, "carol", "lobby")
        alice.wait_for(Notice, lambda n: n.nick == "carol")  # the last frame before the burst
        burst = [
            Say(msg_id="1", room="lobby", text="one"),
            Say(msg_id="2", room="side", text="side one"),
            ChangeNick(nick="robert"),
            Say(msg_id="3", room="lobby", text="two"),
            Part(room="side"),
            Say(msg_id="4", room="lobby", text="three"),
            Join(room="side", history=0),
            Say(msg_id="5", room="side", text="side two"),
        ]
        bob.send_raw(b"".join(encode(frame) for frame in burst))
        want = [
            ("Message", "lobby", "bob", "one"),
            ("Message", "side", "bob", "side one"),
            ("Notice", "", "bob", "renamed"),
            ("Message", "lobby", "robert", "two"),
            ("Notice", "side", "robert", "left"),
            ("Message", "lobby", "robert", "three"),
            ("Notice", "side", "robert", "joined"),
            ("Message", "side", "robert", "side two"),
        ]

        def view(event: object) -> tuple[str, str, str, str]:
            if type(event) is Message:
                return ("Message", event.room, event.sender, event.text)
            assert type(event) is Notice
            return ("Notice", event.room, event.nick, event.kind)

        got = [view(alice.wait_for((Message, Notice))) for _ in want]  # type: ignore[arg-type]
        assert got == want
        lobby_only = [w for w in want if w[1] in ("lobby", "")]
        got = [view(carol.wait_for((Message, Notice))) for _ in lobby_only]  # type: ignore[arg-type]
        assert got == lobby_only
        acks = [bob.wait_for(Ack).msg_id for _ in range(5)]
        assert acks == ["1", "2", "3", "4", "5"]


def test_says_and_a_bye_in_one_write_are_all_stored_and_acknowledged() -> None:
    """The loop hands a run of Says to the hub at once: a Bye right behind them in the same
    read must not overtake them (they are stored, delivered and acknowledged first)."""
    with running_server(rate=0) as (host, port):
        alice = Client.connect(host, port, "alice", "lobby")
        bob = Client.connect(host, port, "bob", "lobby")
        alice.wait_for(Notice, lambda n: n.nick == "bob")
        says = [Say(msg_id=str(i), room="lobby", text=f"m{i}") for i in range(3)]
        bob.send_raw(b"".join(encode(frame) for frame in [*says, Bye(reason="done")]))
        assert [alice.wait_for(Message).text for _ in says] == ["m0", "m1", "m2"]
        assert [bob.wait_for(Ack).msg_id for _ in says] == ["0", "1", "2"]
        left = alice.wait_for(Notice, lambda n: n.nick == "bob" and n.kind != "joined")
        assert left.reason == "done"
