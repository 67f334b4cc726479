"""The hub against hostile clients (issue #11): replays cut to the room left in the output
queue and charged by their size, and the rooms the server knows capped, their creation asked
of the loop's per-address allowance."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from chatctl.protocol import (
    Ack,
    Error,
    ErrorCode,
    Event,
    Hello,
    History,
    HistoryEnd,
    Join,
    ListRooms,
    Members,
    Message,
    Notice,
    Part,
    Say,
    Who,
)
from chatctl.server.config import ServerConfig
from chatctl.server.hub import Delivery, Hub
from chatctl.store.base import ReadResult, StoredMessage
from chatctl.store.memory import MemoryStore

NOW = 1_700_000_000_000
ROOM = "lobby"


def received(deliveries: Sequence[Delivery]) -> list[tuple[int, Event]]:
    return [(cid, d.event) for d in deliveries for cid in d.to if cid != d.skip]


def kinds(deliveries: Sequence[Delivery]) -> list[type[Event]]:
    return [type(event) for _, event in received(deliveries)]


def replayed(deliveries: Sequence[Delivery]) -> list[Delivery]:
    return [d for d in deliveries if type(d.event) is Message]


class ReadsForbidden(MemoryStore):
    """A store that must not be read."""

    def read(self, room: str, after: int, limit: int, max_bytes: int | None = None) -> ReadResult:
        raise AssertionError("the store was read")

    def latest(self, room: str, limit: int, max_bytes: int | None = None) -> list[StoredMessage]:
        raise AssertionError("the store was read")


def hub_with(texts: Sequence[str], store: MemoryStore | None = None, **config: Any) -> Hub:
    """A hub whose lobby holds `texts`, and client 1 (alice) welcomed, not in any room."""
    store = store or MemoryStore()
    for seq, text in enumerate(texts, 1):
        store.append(StoredMessage(room=ROOM, seq=seq, ts=NOW, sender="bob", text=text))
    hub = Hub(ServerConfig(**config), store)
    hub.handle(1, Hello(version=1, nick="alice"), NOW)
    return hub


MSG_IDS = itertools.count()


def say(hub: Hub, cid: int, room: str, msg_id: str = "") -> Event:
    """What `cid` hears back from a Say into `room` (an id of its own unless given)."""
    say = Say(msg_id=msg_id or f"id{next(MSG_IDS)}", room=room, text="hi")
    [answer] = [e for to, e in received(hub.handle(cid, say, NOW)) if to == cid]
    return answer


# -- replays cut to the room in the output queue ---------------------------------------------


def test_history_is_cut_to_the_room_left_in_the_output_queue() -> None:
    hub = hub_with([f"{i:03d}" + "x" * 97 for i in range(10)])
    frame = len(replayed(hub.handle(1, History(room=ROOM, after=0, limit=1), NOW))[0].data)

    out = hub.handle(1, History(room=ROOM, after=0, limit=10), NOW, replay_room=3 * frame + 10)
    assert [(type(e), getattr(e, "seq", None)) for _, e in received(out)] == [
        (Message, 1),
        (Message, 2),
        (Message, 3),
        (HistoryEnd, None),
    ]
    assert received(out)[-1][1] == HistoryEnd(room=ROOM, head=10)

    # The latest 3: from the oldest of them, as many as fit; the client pages on.
    out = hub.handle(1, History(room=ROOM, limit=3), NOW, replay_room=2 * frame + 10)
    assert [m.seq for _, m in received(replayed(out))] == [8, 9]  # type: ignore[attr-defined]


@pytest.mark.parametrize("replay_room", [0, -5, 50])
def test_without_room_for_one_message_a_replay_still_has_one(replay_room: int) -> None:
    # Paging always progresses; a client that does not read what it asked for becomes a slow
    # consumer, one message per request, each cheap to read.
    hub = hub_with([f"{i} " + "x" * 100 for i in range(1, 4)])
    for request, seq in ((History(room=ROOM, after=0), 1), (History(room="#Lobby", limit=2), 2)):
        out = hub.handle(1, request, NOW, replay_room=replay_room)
        assert [m.seq for _, m in received(replayed(out))] == [seq]  # type: ignore[attr-defined]
        assert received(out)[-1] == (1, HistoryEnd(room=ROOM, head=3))
    out = hub.handle(1, Join(room=ROOM, after=1), NOW, replay_room=replay_room)
    assert [m.seq for _, m in received(replayed(out))] == [2]  # type: ignore[attr-defined]
    assert kinds(out)[-2:] == [HistoryEnd, Members]


@pytest.mark.parametrize("replay_room", [0, 1])
def test_history_with_nothing_to_replay_is_answered_even_when_squeezed(replay_room: int) -> None:
    hub = hub_with(["x"] * 3)
    for request in (History(room=ROOM, after=3), History(room=ROOM, limit=0)):
        out = hub.handle(1, request, NOW, replay_room=replay_room)
        assert received(out) == [(1, HistoryEnd(room=ROOM, head=3))]


def test_join_replays_what_fits() -> None:
    hub = hub_with([f"{i:03d}" + "x" * 97 for i in range(10)])
    frame = len(replayed(hub.handle(1, History(room=ROOM, after=0, limit=1), NOW))[0].data)
    out = hub.handle(1, Join(room=ROOM, history=5), NOW, replay_room=2 * frame + frame // 2)
    assert [m.seq for _, m in received(replayed(out))] == [6, 7]  # type: ignore[attr-defined]
    out = hub.handle(1, Join(room=ROOM, after=4), NOW, replay_room=frame - 1)
    assert [m.seq for _, m in received(replayed(out))] == [5]  # type: ignore[attr-defined]


@settings(max_examples=150, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 400), max_size=12),
    after=st.none() | st.integers(0, 12),
    limit=st.integers(0, 14),
    replay_room=st.integers(-10, 4000),
)
def test_property_a_history_replay_is_the_longest_that_fits_the_room(
    sizes: list[int], after: int | None, limit: int, replay_room: int
) -> None:
    """With `replay_room`, a History replays exactly what it replays without it, cut to the
    longest run that fits, oldest first, and one message at least."""
    hub = hub_with(["é" * (n // 2) + "x" * (n % 2) for n in sizes])
    request = History(room=ROOM, after=after, limit=limit)
    unbounded = replayed(hub.handle(1, request, NOW))
    out = hub.handle(1, request, NOW, replay_room=replay_room)
    got = replayed(out)
    assert bool(got) == bool(unbounded)
    if len(got) > 1:
        assert sum(len(d.data) for d in got) <= max(replay_room, 0)
    assert got == unbounded[: len(got)]
    rest = unbounded[len(got) :]
    if rest:
        assert sum(len(d.data) for d in [*got, rest[0]]) > replay_room
    assert kinds(out)[-1] is HistoryEnd


class Recording(MemoryStore):
    """A store that notes the byte budget of every read."""

    def __init__(self) -> None:
        super().__init__()
        self.budgets: list[int | None] = []

    def read(self, room: str, after: int, limit: int, max_bytes: int | None = None) -> ReadResult:
        self.budgets.append(max_bytes)
        return super().read(room, after, limit, max_bytes)

    def latest(self, room: str, limit: int, max_bytes: int | None = None) -> list[StoredMessage]:
        self.budgets.append(max_bytes)
        return super().latest(room, limit, max_bytes)


def test_the_store_is_asked_for_no_more_than_fits() -> None:
    store = Recording()
    hub = hub_with(["x" * 100] * 10, store, max_output=100_000)
    hub.handle(1, History(room=ROOM, after=0), NOW, replay_room=700)
    hub.handle(1, Join(room=ROOM), NOW, replay_room=10**9)
    hub.handle(1, History(room=ROOM, after=0), NOW)
    assert store.budgets == [700, 50_000, 50_000]  # the room left, else half of max_output


def test_without_replay_room_the_replay_is_cut_only_by_the_byte_budget() -> None:
    hub = hub_with(["x" * 1000] * 50, max_output=20_000)  # a budget of 10,000 bytes
    out = hub.handle(1, History(room=ROOM, after=0, limit=50), NOW)
    assert len(replayed(out)) == 9
    assert received(out) == received(
        hub.handle(1, History(room=ROOM, after=0, limit=50), NOW, replay_room=10**9)
    )


# -- what a request costs ----------------------------------------------------------------------


def test_a_request_costs_one_and_a_replay_by_its_rows_or_bytes() -> None:
    hub = hub_with(["x" * 10] * 300 + ["y" * 8000] * 20)
    assert say(hub, 1, "elsewhere") and hub.last_cost == 1.0

    out = hub.handle(1, History(room=ROOM, after=0, limit=250), NOW)
    assert len(replayed(out)) == 250
    assert hub.last_cost == pytest.approx(1 + 250 / 100)  # rows weigh more than bytes

    out = hub.handle(1, History(room=ROOM, limit=20), NOW)
    size = sum(len(d.data) for d in replayed(out))
    assert size > 160_000
    assert hub.last_cost == pytest.approx(1 + size / 65536)  # bytes weigh more than rows

    hub.handle(1, Join(room=ROOM, history=3), NOW)
    assert hub.last_cost == pytest.approx(1 + 3 * len(replayed(out)[0].data) / 65536)

    # Every request starts again from 1: nothing replayed, one message when squeezed, a Say.
    for request in (History(room="empty"), Join(room="quiet", history=0)):
        hub.handle(1, request, NOW)
        assert hub.last_cost == 1.0
    hub.handle(1, History(room=ROOM, limit=20), NOW)
    out = hub.handle(1, History(room=ROOM, limit=20), NOW, replay_room=0)
    assert hub.last_cost == pytest.approx(1 + len(replayed(out)[0].data) / 65536)
    hub.handle(1, History(room=ROOM, limit=20), NOW)
    assert say(hub, 1, ROOM) and hub.last_cost == 1.0


@settings(max_examples=200, deadline=None)
@given(
    text=st.text(st.sampled_from(" \n\tx\u00e9\U0001f600"), max_size=50),
    id_length=st.integers(0, 70),
)
def test_property_say_is_refused_by_the_rules_whatever_the_shortcut(
    text: str, id_length: int
) -> None:
    """The hub's cheap test of a Say lets through exactly what the rules let through
    (docs/protocol.md §6.3; the msg_id is checked first: 1 to 64 characters)."""
    hub = hub_with([], max_text=40)
    out = hub.handle(1, Say(msg_id="i" * id_length, room=ROOM, text=text), NOW)
    [(_, answer)] = received(out)
    if id_length > 64 or id_length == 0:
        expected: ErrorCode | None = ErrorCode.INVALID_REQUEST
    elif not text.strip():
        expected = ErrorCode.EMPTY_TEXT
    elif len(text.encode()) > 40:
        expected = ErrorCode.TEXT_TOO_LONG
    else:
        expected = None
    assert (answer.code if isinstance(answer, Error) else None) == expected


def test_listing_costs_by_the_entries_sorted() -> None:
    store = MemoryStore()
    for i in range(2000):
        store.append(StoredMessage(room=f"r{i}", seq=1, ts=NOW, sender="x", text="t"))
    hub = hub_with([], store)
    for cid in range(2, 502):
        hub.handle(cid, Hello(version=1, nick=f"n{cid}"), NOW)
        hub.handle(cid, Join(room="r7", history=0), NOW)
    hub.handle(1, ListRooms(), NOW)
    assert hub.last_cost == 3.0
    hub.handle(1, Who(room="r7"), NOW)
    assert hub.last_cost == 1.5
    hub.handle(1, Who(room="nobody-here"), NOW)
    assert hub.last_cost == 1.0


# -- the rooms the server knows ------------------------------------------------------------------


def error_of(answer: Event) -> tuple[int, str, str] | None:
    return (answer.code, answer.message, answer.msg_id) if isinstance(answer, Error) else None


def test_room_cap_refuses_new_rooms_only_and_frees_rooms_without_history() -> None:
    hub = hub_with([], total_rooms=3)
    hub.handle(2, Hello(version=1, nick="bob"), NOW)
    assert hub.room_count == 0
    assert type(say(hub, 1, "one")) is Ack  # a Say creates a room with history
    assert kinds(hub.handle(1, Join(room="two"), NOW))[0] is Notice  # a Join, one without
    assert kinds(hub.handle(2, Join(room="three"), NOW))[0] is Notice
    assert hub.room_count == 3

    full = (ErrorCode.TOO_MANY_ROOMS, "the server holds its maximum of 3 rooms")
    assert error_of(say(hub, 1, "four", "m4")) == (*full, "m4")
    assert hub.store.head("four") == 0
    assert received(hub.handle(1, Join(room="four"), NOW)) == [
        (1, Error(code=full[0], message=full[1]))
    ]
    assert "four" not in hub.rooms
    # Rooms it knows stay open, with or without members or history.
    assert type(say(hub, 2, "one")) is Ack and type(say(hub, 2, "two")) is Ack
    assert kinds(hub.handle(2, Join(room="one"), NOW))[0] is Notice

    # A room that has only members is forgotten when the last one leaves; one with history
    # is known for ever.
    hub.handle(2, Part(room="one"), NOW)
    hub.disconnect(2, "gone", NOW)
    assert hub.room_count == 2 and "three" not in hub.rooms
    assert type(say(hub, 1, "four")) is Ack
    assert hub.room_count == 3
    assert error_of(say(hub, 1, "five", "m5")) == (*full, "m5")


def test_the_rooms_in_the_store_count_from_the_start() -> None:
    store = MemoryStore()
    for i in range(4):
        store.append(StoredMessage(room=f"old{i}", seq=1, ts=NOW, sender="x", text="t"))
    hub = hub_with([], store, total_rooms=5)
    assert hub.room_count == 4
    assert type(say(hub, 1, "new")) is Ack
    assert error_of(say(hub, 1, "newer")) is not None
    assert type(say(hub, 1, "old2")) is Ack


def test_creating_a_room_asks_the_hook_and_only_then() -> None:
    hub = hub_with(["x"], total_rooms=3)
    asked: list[int] = []
    allow = [True]

    def may_create_room(cid: int) -> bool:
        asked.append(cid)
        return allow[0]

    hub.may_create_room = may_create_room
    assert type(say(hub, 1, ROOM)) is Ack  # stored history: not new
    hub.handle(1, Join(room=ROOM), NOW)
    assert asked == []
    assert type(say(hub, 1, "new")) is Ack
    assert asked == [1]
    allow[0] = False
    assert error_of(say(hub, 1, "newer", "m9")) == (
        ErrorCode.RATE_LIMITED,
        "creating rooms too fast",
        "m9",
    )
    assert kinds(hub.handle(1, Join(room="newer"), NOW)) == [Error]
    assert asked == [1, 1, 1] and hub.room_count == 2 and hub.store.head("newer") == 0
    assert type(say(hub, 1, "new")) is Ack  # known now
    allow[0] = True
    hub.handle(1, Join(room="third"), NOW)
    assert hub.room_count == 3
    assert error_of(say(hub, 1, "fourth"))[0] == ErrorCode.TOO_MANY_ROOMS  # type: ignore[index]
    assert asked == [1, 1, 1, 1]  # the cap answers first: no allowance spent


NAMES = st.sampled_from(["a", "b", "c", "d", "e"])
CIDS = st.sampled_from([1, 2, 3])


class RoomCountMachine(RuleBasedStateMachine):
    """Random Says, Joins, Parts and reconnects of three clients over five room names, a cap
    of three rooms and an allowance that says yes or no: the hub knows exactly the rooms
    with history or members, never more than the cap, and asks the allowance exactly when
    a room would be created."""

    def __init__(self) -> None:
        super().__init__()
        self.hub = Hub(ServerConfig(total_rooms=3), MemoryStore())
        self.allow = True
        self.asked = 0
        self.hub.may_create_room = self.ask
        self.stored: set[str] = set()
        self.members: dict[str, set[int]] = {}
        for cid in (1, 2, 3):
            self.hub.handle(cid, Hello(version=1, nick=f"n{cid}"), NOW)

    def ask(self, cid: int) -> bool:
        self.asked += 1
        return self.allow

    def known(self) -> set[str]:
        return self.stored | {name for name, cids in self.members.items() if cids}

    def expect_creation(self, name: str) -> ErrorCode | None:
        """What creating `name`, if new, gives: None when allowed."""
        if name in self.known():
            return None
        if len(self.known()) >= 3:
            return ErrorCode.TOO_MANY_ROOMS
        self.asked -= 1
        return None if self.allow else ErrorCode.RATE_LIMITED

    @rule(allow=st.booleans())
    def allowance(self, allow: bool) -> None:
        self.allow = allow

    @rule(cid=CIDS, name=NAMES)
    def say(self, cid: int, name: str) -> None:
        refused = self.expect_creation(name)
        answer = say(self.hub, cid, name)
        if refused is None:
            assert type(answer) is Ack
            self.stored.add(name)
        else:
            assert isinstance(answer, Error) and answer.code == refused

    @rule(cid=CIDS, name=NAMES)
    def join(self, cid: int, name: str) -> None:
        refused = self.expect_creation(name)
        out = received(self.hub.handle(cid, Join(room=name, history=0), NOW))
        if refused is None:
            assert type(out[0][1]) is Notice or cid in self.members.get(name, set())
            self.members.setdefault(name, set()).add(cid)
        else:
            assert [(to, getattr(e, "code", None)) for to, e in out] == [(cid, refused)]

    @precondition(lambda self: any(self.members.values()))
    @rule(data=st.data())
    def part(self, data: st.DataObject) -> None:
        pairs = sorted((name, cid) for name, cids in self.members.items() for cid in cids)
        name, cid = data.draw(st.sampled_from(pairs))
        self.hub.handle(cid, Part(room=name), NOW)
        self.members[name].discard(cid)

    @rule(cid=CIDS)
    def reconnect(self, cid: int) -> None:
        self.hub.disconnect(cid, "gone", NOW)
        for cids in self.members.values():
            cids.discard(cid)
        self.hub.handle(cid, Hello(version=1, nick=f"n{cid}"), NOW)

    @invariant()
    def counted(self) -> None:
        assert self.hub.room_count == len(self.known()) <= 3
        assert set(self.hub.rooms) == {n for n, cids in self.members.items() if cids}
        assert self.asked == 0  # asked exactly when expected


RoomCountMachine.TestCase.settings = settings(
    max_examples=80, stateful_step_count=30, deadline=None
)
TestRoomCount = RoomCountMachine.TestCase
