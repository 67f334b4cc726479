"""History through the real server: resume after a disconnect, gaps from retention, resends,
and sequence numbers across a restart. Each runs on SQLite (a data directory) and, where
persistence is not the point, on `--data :memory:` too."""

from __future__ import annotations

from pathlib import Path

import pytest

from chatctl.protocol import Event, Gap, History, HistoryEnd, Join, ListRooms, Message, RoomList
from tests.servers import Client, running_server

ROOM = "lobby"


@pytest.fixture(params=["sqlite", "memory"])
def data(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return str(tmp_path / "data") if request.param == "sqlite" else ":memory:"


def replay(client: Client, request: Join | History) -> tuple[list[Event], HistoryEnd]:
    """Send a Join or History and collect the Messages and Gaps up to its HistoryEnd."""
    client.send(request)
    got: list[Event] = []
    while True:
        event = client.recv()
        if type(event) is HistoryEnd and event.room == request.room:
            return got, event
        if type(event) in (Message, Gap):
            got.append(event)


def say_many(client: Client, count: int, prefix: str) -> list[int]:
    return [client.say(ROOM, f"{prefix} {i}").seq for i in range(count)]


def test_resume_receives_exactly_the_missed_messages(data: str) -> None:
    with running_server(data=data, rate=0) as (host, port):
        alice = Client.connect(host, port, "alice", ROOM)
        bob = Client.connect(host, port, "bob", ROOM)
        before = say_many(alice, 3, "seen")
        last_seen = bob.wait_for(Message, lambda m: m.seq == before[-1]).seq
        token = bob.token
        bob.close()
        missed = say_many(alice, 25, "missed")

        bob = Client(host, port)
        bob.hello("bob", token=token)
        got, end = replay(bob, Join(room=ROOM, after=last_seen))
        assert all(type(m) is Message for m in got)  # no gap: everything is still stored
        assert [(m.seq, m.text, m.history) for m in got if isinstance(m, Message)] == [
            (seq, f"missed {i}", True) for i, seq in enumerate(missed)
        ]
        assert end.head == missed[-1]
        # Live again: the next message arrives once, not as history.
        after = alice.say(ROOM, "live").seq
        live = bob.wait_for(Message, lambda m: m.seq == after)
        assert not live.history
        assert not [e for e in bob.seen if isinstance(e, Message) and e.seq <= after - 1]


def test_trimmed_history_gives_the_gap(data: str) -> None:
    with running_server(data=data, rate=0, retain_messages=5) as (host, port):
        alice = Client.connect(host, port, "alice", ROOM)
        seqs = say_many(alice, 12, "m")
        bob = Client.connect(host, port, "bob")
        got, end = replay(bob, Join(room=ROOM, after=2))
        assert got[0] == Gap(room=ROOM, first=3, last=7)
        assert [m.seq for m in got[1:] if isinstance(m, Message)] == seqs[7:]
        assert end.head == 12
        # The same answer to a History request, and none for a range still stored.
        assert replay(bob, History(room=ROOM, after=0, limit=3))[0] == [
            Gap(room=ROOM, first=1, last=7),
            *got[1:4],
        ]
        assert replay(bob, History(room=ROOM, after=9))[0] == got[3:]


def test_resend_after_reconnect_is_stored_once_acked_again_delivered_once(data: str) -> None:
    with running_server(data=data, rate=0) as (host, port):
        bob = Client.connect(host, port, "bob", ROOM)
        alice = Client.connect(host, port, "alice", ROOM)
        first = alice.say(ROOM, "only once", msg_id="abc")
        token = alice.token
        alice.close()

        alice = Client(host, port)
        alice.hello("alice", token=token)
        alice.join(ROOM, history=0)
        again = alice.say(ROOM, "only once", msg_id="abc")
        assert (again.seq, again.room, again.ts) == (first.seq, first.room, first.ts)
        marker = alice.say(ROOM, "after").seq

        bob.wait_for(Message, lambda m: m.seq == marker)
        copies = [e for e in bob.seen if isinstance(e, Message) and e.text == "only once"]
        assert [m.seq for m in copies] == [first.seq]
        stored, _ = replay(bob, History(room=ROOM, after=0))
        assert [m.text for m in stored if isinstance(m, Message)] == ["only once", "after"]


def test_restart_keeps_history_and_sequence_numbers(tmp_path: Path) -> None:
    data = str(tmp_path / "data")
    with running_server(data=data, rate=0) as (host, port):
        alice = Client.connect(host, port, "alice", ROOM, "dev")
        old = say_many(alice, 4, "before")
        alice.say("dev", "elsewhere")
    with running_server(data=data, rate=0) as (host, port):
        bob = Client.connect(host, port, "bob")
        bob.send(ListRooms())
        assert set(bob.wait_for(RoomList).rooms) >= {ROOM, "dev"}
        got, end = replay(bob, Join(room=ROOM, history=10))
        assert [(m.seq, m.history) for m in got if isinstance(m, Message)] == [
            (seq, True) for seq in old
        ]
        assert end.head == old[-1]
        assert bob.say(ROOM, "after the restart").seq == old[-1] + 1
