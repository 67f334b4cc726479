"""The sans-IO hub: chat rules without sockets, checked by examples, properties and a
hypothesis state machine against a simple model."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import groupby
from operator import itemgetter
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    invariant,
    rule,
)

from chatctl.names import NICK_MAX, nick_problem, room_key
from chatctl.protocol import (
    HEADER,
    HEADER_SIZE,
    Ack,
    Bye,
    ChangeNick,
    DirectMessage,
    Error,
    ErrorCode,
    Event,
    Gap,
    Hello,
    History,
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
    Welcome,
    Who,
    decode_body,
    encode,
    encode_ack,
    encode_message,
)
from chatctl.server.config import ServerConfig
from chatctl.server.hub import Delivery, Hub
from chatctl.store.memory import MemoryStore

NOW = 1_700_000_000_000


def flatten(deliveries: Sequence[Delivery]) -> list[tuple[int, Event]]:
    """(recipient, event) pairs, checking that each delivery's bytes are exactly what the
    protocol's own encoder makes of the event they carry."""
    out: list[tuple[int, Event]] = []
    for d in deliveries:
        event = d.event
        assert d.data == encode(event)
        out.extend((cid, event) for cid in d.to if cid != d.skip)
    return out


def make_hub(**overrides: Any) -> tuple[Hub, MemoryStore]:
    store = MemoryStore(retain_messages=overrides.pop("retain_messages", 100_000))
    return Hub(ServerConfig(**overrides), store), store


def hello(hub: Hub, cid: int, nick: str, token: str = "") -> Welcome:
    [(to, event)] = flatten(hub.handle(cid, Hello(version=1, nick=nick, token=token), NOW))
    assert to == cid and type(event) is Welcome
    return event


# -- examples ----------------------------------------------------------------------------------


def test_welcome_carries_nick_token_and_limits() -> None:
    hub, _ = make_hub(max_frame=1000, rate=2.5)
    welcome = hello(hub, 1, "alice")
    assert welcome.nick == "alice" and len(welcome.token) == 38
    assert welcome.limits["max_frame"] == 1000 and welcome.limits["rate"] == 2
    # A guest must name itself: an empty nick is as invalid as any other (§6.1).
    [(_, bye)] = flatten(hub.handle(2, Hello(version=1, nick=""), NOW))
    assert bye == Bye(code=ErrorCode.INVALID_NICK, reason="a nick may not be empty")


def test_taken_nick_gets_a_free_variant_within_the_length_limit() -> None:
    hub, _ = make_hub()
    long = "x" * NICK_MAX
    assert hello(hub, 1, long).nick == long
    variant = hello(hub, 2, long.upper()).nick
    assert variant == "X" * (NICK_MAX - 1) + "2"
    assert hello(hub, 3, "alice").nick == "alice"
    assert hello(hub, 4, "alice2").nick == "alice2"
    assert hello(hub, 5, "Alice").nick == "Alice3"


def test_bad_hello_gets_a_bye() -> None:
    hub, _ = make_hub()
    [(_, bye)] = flatten(hub.handle(1, Hello(version=1, nick="has space"), NOW))
    assert type(bye) is Bye and bye.code == ErrorCode.INVALID_NICK
    [(_, bye)] = flatten(hub.handle(2, Hello(version=0, nick="ok"), NOW))
    assert type(bye) is Bye and bye.code == ErrorCode.UNSUPPORTED_VERSION
    assert hub.sessions == {}
    # A newer client is answered in the version both speak.
    assert hello(hub, 3, "new", token="").protocol == 1


def test_join_sends_notice_then_gap_replay_history_end_then_members() -> None:
    hub, store = make_hub(retain_messages=5, join_history=3)
    hello(hub, 1, "alice")
    for i in range(10):
        hub.handle(1, Say(msg_id=str(i), room="r", text=f"t{i}"), NOW + i)
    hello(hub, 2, "bob")
    got = [e for _, e in flatten(hub.handle(2, Join(room="#R", after=2), NOW))]
    assert got[0] == Notice(kind="joined", nick="bob", ts=NOW, room="r")
    assert got[1] == Gap(room="r", first=3, last=5)
    assert [m.seq for m in got[2:7] if type(m) is Message] == [6, 7, 8, 9, 10]
    assert all(type(m) is Message and m.history for m in got[2:7])
    assert got[7:] == [HistoryEnd(room="r", head=10), Members(room="r", nicks=["bob"])]
    hello(hub, 3, "carol")
    got = [e for _, e in flatten(hub.handle(3, Join(room="r"), NOW))]
    assert [m.seq for m in got if type(m) is Message] == [8, 9, 10]
    # Joining again replays but announces nothing.
    got = [e for _, e in flatten(hub.handle(3, Join(room="r", history=1), NOW))]
    assert [type(e) for e in got] == [Message, HistoryEnd, Members]
    assert store.head("r") == 10


def test_replay_stops_at_the_byte_budget_and_history_end_tells_the_head() -> None:
    hub, _ = make_hub(max_output=8192)  # budget: 4096 bytes
    hello(hub, 1, "alice")
    for i in range(20):
        hub.handle(1, Say(msg_id=str(i), room="r", text="x" * 500), NOW)
    events = [e for _, e in flatten(hub.handle(1, History(room="r", after=0, limit=100), NOW))]
    messages = [e for e in events if type(e) is Message]
    assert 0 < len(messages) < 20 and messages[0].seq == 1
    assert events[-1] == HistoryEnd(room="r", head=20)
    # "The latest 100" is the 20 there are, from the oldest, cut at the budget too.
    events = [e for _, e in flatten(hub.handle(1, History(room="r", limit=100), NOW))]
    latest = [e.seq for e in events if type(e) is Message]
    assert latest == list(range(1, len(latest) + 1)) and len(latest) < 20


def test_a_capped_replay_runs_oldest_first_and_pages_on_with_nothing_skipped() -> None:
    hub, _ = make_hub(replay_limit=8)
    hello(hub, 1, "alice")
    for i in range(23):
        hub.handle(1, Say(msg_id=str(i), room="r", text=f"t{i}"), NOW)
    hello(hub, 2, "bob")
    got = [e for _, e in flatten(hub.handle(2, Join(room="r", history=20), NOW))]
    seqs = [e.seq for e in got if type(e) is Message]
    assert seqs == list(range(4, 12))  # the last 20 are 4..23: the first 8 of them
    assert HistoryEnd(room="r", head=23) in got
    while seqs[-1] < 23:  # the paging rule of §6.4
        page = [e for _, e in flatten(hub.handle(2, History(room="r", after=seqs[-1]), NOW))]
        seqs += [e.seq for e in page if type(e) is Message]
    assert seqs == list(range(4, 24))


def test_resend_is_acknowledged_again_not_delivered_again() -> None:
    hub, store = make_hub()
    hello(hub, 1, "alice")
    hello(hub, 2, "bob")
    hub.handle(2, Join(room="r"), NOW)
    first = flatten(hub.handle(1, Say(msg_id="m", room="r", text="once"), NOW))
    again = flatten(hub.handle(1, Say(msg_id="m", room="r", text="once"), NOW + 5))
    assert [type(e) for _, e in first] == [Message, Ack]
    assert again == [(1, Ack(msg_id="m", ts=NOW, recipients=1, room="r", seq=1))]
    assert store.head("r") == 1


def test_token_takeover_moves_nick_and_rooms() -> None:
    hub, _ = make_hub()
    token = hello(hub, 1, "alice").token
    hub.handle(1, Join(room="r"), NOW)
    out = flatten(hub.handle(7, Hello(version=1, nick="other", token=token), NOW))
    assert out[0] == (
        1,
        Bye(
            code=ErrorCode.REPLACED, reason="your session was taken over by a new connection from -"
        ),
    )
    assert type(out[1][1]) is Welcome and out[1][1].nick == "alice" and out[1][0] == 7
    assert hub.rooms["r"].targets == (7,)
    assert hub.disconnect(1, "gone", NOW) == []  # the old connection is already forgotten


def test_only_the_server_makes_tokens_and_its_own_resume_after_the_session_ended() -> None:
    hub, _ = make_hub()
    made_up = "T" * 38
    assert hello(hub, 1, "a", token=made_up).token != made_up
    assert hello(hub, 2, "b", token="short").token != "short"
    token = hello(hub, 3, "c").token
    hub.disconnect(3, "gone", NOW)
    assert hello(hub, 4, "c", token=token).token == token  # resends stay recognised


def test_rename_reaches_everyone_sharing_a_room_once() -> None:
    hub, _ = make_hub()
    for cid, nick in ((1, "a"), (2, "b"), (3, "c")):
        hello(hub, cid, nick)
    for cid in (1, 2):
        hub.handle(cid, Join(room="x"), NOW)
        hub.handle(cid, Join(room="y"), NOW)
    out = flatten(hub.handle(1, ChangeNick(nick="A2"), NOW))
    assert sorted(to for to, _ in out) == [1, 2]
    # A rename to one's own nick is answered, to the member alone.
    again = flatten(hub.handle(1, ChangeNick(nick="A2"), NOW))
    assert again == [(1, Notice(kind="renamed", nick="A2", ts=NOW, new_nick="A2"))]
    [(_, error)] = flatten(hub.handle(2, ChangeNick(nick="a2"), NOW))
    assert type(error) is Error and error.code == ErrorCode.NICK_IN_USE


def test_who_rooms_and_tell() -> None:
    hub, _ = make_hub()
    hello(hub, 1, "bob")
    hello(hub, 2, "Alice")
    hub.handle(1, Join(room="x"), NOW)
    hub.handle(2, Join(room="x"), NOW)
    [(_, members)] = flatten(hub.handle(1, Who(room="#X"), NOW))
    assert members == Members(room="x", nicks=["Alice", "bob"])
    [(_, rooms)] = flatten(hub.handle(1, ListRooms(), NOW))
    assert rooms == RoomList(rooms={"x": 2})
    out = flatten(hub.handle(1, Tell(msg_id="t", to="alice", text="hi"), NOW))
    assert out == [
        (2, DirectMessage(sender="bob", to="Alice", ts=NOW, text="hi")),
        (1, Ack(msg_id="t", ts=NOW, recipients=1)),
    ]


# -- properties --------------------------------------------------------------------------------

TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=50)
INTS = st.integers(min_value=0, max_value=2**63 - 1)


@given(TEXT, INTS, INTS, TEXT, TEXT, st.booleans(), st.booleans())
def test_property_fast_message_encoding_is_the_protocol_encoding(
    room: str, seq: int, ts: int, sender: str, text: str, action: bool, history: bool
) -> None:
    message = Message(
        room=room, seq=seq, ts=ts, sender=sender, text=text, action=action, history=history
    )
    assert encode_message(room, seq, ts, sender, text, action, history) == encode(message)


@given(TEXT, INTS, INTS, TEXT, INTS)
def test_property_fast_ack_encoding_is_the_protocol_encoding(
    msg_id: str, ts: int, recipients: int, room: str, seq: int
) -> None:
    ack = Ack(msg_id=msg_id, ts=ts, recipients=recipients, room=room, seq=seq)
    assert encode_ack(msg_id, ts, recipients, room, seq) == encode(ack)


SAYS = st.lists(
    st.tuples(
        st.sampled_from([1, 2, 3]),  # 3 never said Hello
        st.builds(
            Say,
            msg_id=st.sampled_from(["1", "2", "", "x" * 65]),
            room=st.sampled_from(["lobby", "#Lobby", "dev", "bad room", ""]),
            text=st.sampled_from(["hi", "", "   ", "ho", "x" * 9000]),
            action=st.booleans(),
        ),
    ),
    max_size=30,
)


@given(SAYS)
def test_property_the_say_fast_path_answers_as_handle_does(says: list[tuple[int, Say]]) -> None:
    """The event loop hands a Say without a rid to handle_say: the same deliveries, state and
    cost as handle would give, for good Says and bad ones."""
    fast, _ = make_hub()
    slow, _ = make_hub()
    for hub in (fast, slow):
        hello(hub, 1, "alice")
        hello(hub, 2, "bob")
        hub.handle(2, Join(room="dev"), NOW)
    for cid, say in says:
        assert fast.handle_say(cid, say, NOW) == slow.handle(cid, say, NOW)
        assert fast.last_cost == slow.last_cost
    assert fast.store.rooms() == slow.store.rooms()


def frames(data: bytes) -> list[Event]:
    """The events of whole frames, one after another."""
    events = []
    while data:
        _, frame_type, _, length = HEADER.unpack_from(data)
        events.append(decode_body(frame_type, data[HEADER_SIZE : HEADER_SIZE + length]))
        data = data[HEADER_SIZE + length :]
    return events


def streams(deliveries: Sequence[Delivery], into: dict[int, bytes]) -> None:
    """Add to `into` the bytes each connection receives from `deliveries`, in order."""
    for d in deliveries:
        for cid in d.to:
            if cid != d.skip:
                into[cid] = into.get(cid, b"") + d.data


@given(SAYS)
def test_property_a_run_of_says_answers_as_each_say_does(says: list[tuple[int, Say]]) -> None:
    """The event loop hands a connection's Says of one read to handle_says: every connection
    receives the same bytes in the same order as from handle_say called for each, and the
    same is stored; the messages of one room and their Acks travel in one Delivery each."""
    batched, _ = make_hub()
    single, _ = make_hub()
    for hub in (batched, single):
        hello(hub, 1, "alice")
        hello(hub, 2, "bob")
        hub.handle(1, Join(room="dev"), NOW)  # the sender is a member: cut out of its own
        hub.handle(2, Join(room="dev"), NOW)
        hub.handle(2, Join(room="lobby"), NOW)
    got: dict[int, bytes] = {}
    want: dict[int, bytes] = {}
    runs = [(cid, [say for _, say in run]) for cid, run in groupby(says, key=itemgetter(0))]
    for cid, run in runs:
        answers = batched.handle_says(cid, run, NOW)
        streams(answers, got)
        for say in run:
            streams(single.handle_say(cid, say, NOW), want)
        stored = [d for d in answers if d.data[2] == Ack.TYPE]
        assert len(stored) <= len(run)
    assert got == want
    assert batched.store.rooms() == single.store.rooms()
    for room in single.store.rooms():
        # Each hub's sessions have tokens of their own: all else is the same.
        assert [
            (m.seq, m.sender, m.text, m.action, m.msg_id)
            for m in batched.store.read(room, 0, 100).messages
        ] == [
            (m.seq, m.sender, m.text, m.action, m.msg_id)
            for m in single.store.read(room, 0, 100).messages
        ]


def test_a_run_of_says_to_one_room_is_two_deliveries() -> None:
    """Ten Says to one room: one Delivery of ten Messages to the room but the sender, and one
    of ten Acks to the sender, in that order."""
    hub, _ = make_hub()
    hello(hub, 1, "alice")
    hello(hub, 2, "bob")
    hub.handle(1, Join(room="dev"), NOW)
    hub.handle(2, Join(room="dev"), NOW)
    says = [Say(msg_id=str(i), room="dev", text=f"m{i}") for i in range(10)]
    [messages, acks] = hub.handle_says(1, says, NOW)
    assert (sorted(messages.to), messages.skip) == ([1, 2], 1)
    assert acks.to == (1,)
    events = frames(messages.data + acks.data)
    assert [e.text for e in events if isinstance(e, Message)] == [f"m{i}" for i in range(10)]
    assert [e.msg_id for e in events if isinstance(e, Ack)] == [str(i) for i in range(10)]


# -- the state machine -------------------------------------------------------------------------

NICKS = st.sampled_from(["alice", "Alice", "bob", "BOB", "carol", "", "bad nick", "-x", "9"])
ROOMS = st.sampled_from(["lobby", "#Lobby", "dev", "ops"])
MSG_IDS = st.sampled_from(["1", "2", "3", ""])


class HubMachine(RuleBasedStateMachine):
    """The hub against a model of who is where, called what, and each room's head."""

    connections = Bundle("connections")

    def __init__(self) -> None:
        super().__init__()
        self.hub, self.store = make_hub(max_rooms=2)
        self.next_cid = 1
        self.nick: dict[int, str] = {}
        self.token: dict[int, str] = {}
        self.members: dict[str, set[int]] = {}
        self.heads: dict[str, int] = {}
        self.sent: dict[tuple[str, str], tuple[str, int]] = {}
        self.told: dict[tuple[str, str], str] = {}  # (token, msg_id) -> recipient, casefolded

    def rooms_of(self, cid: int) -> set[str]:
        return {r for r, m in self.members.items() if cid in m}

    def sharing(self, cid: int) -> set[int]:
        out = {cid}
        for room in self.rooms_of(cid):
            out |= self.members[room]
        return out

    @rule(target=connections, nick=NICKS)
    def connect(self, nick: str) -> Any:
        cid = self.next_cid
        self.next_cid += 1
        out = flatten(self.hub.handle(cid, Hello(version=1, nick=nick), NOW))
        [(to, event)] = out
        assert to == cid
        wanted = nick
        if nick_problem(wanted) is not None:
            assert type(event) is Bye and event.code == ErrorCode.INVALID_NICK
            return consumes_nothing(cid)
        assert type(event) is Welcome
        taken = {n.casefold() for n in self.nick.values()}
        if wanted.casefold() in taken:
            assert event.nick.casefold() not in taken and event.nick.startswith(wanted)
        else:
            assert event.nick == wanted
        self.nick[cid] = event.nick
        self.token[cid] = event.token
        return cid

    def live(self, cid: int) -> bool:
        return cid in self.nick

    @rule(cid=connections, room=ROOMS)
    def join(self, cid: int, room: str) -> None:
        out = flatten(self.hub.handle(cid, Join(room=room, history=0), NOW))
        if not self.live(cid):
            assert out == []
            return
        name = room_key(room)
        before = self.members.get(name, set())
        if cid not in before and len(self.rooms_of(cid)) >= 2:
            assert [type(e) for _, e in out] == [Error]
            return
        *notices, end, members = out
        assert end == (cid, HistoryEnd(room=name, head=self.heads.get(name, 0)))
        self.members[name] = before | {cid}
        nicks = sorted((self.nick[c] for c in self.members[name]), key=str.casefold)
        assert members == (cid, Members(room=name, nicks=nicks))
        if cid in before:
            assert notices == []
            return
        assert sorted(to for to, _ in notices) == sorted(self.members[name])
        assert all(type(e) is Notice and e.kind == "joined" for _, e in notices)

    @rule(cid=connections, room=ROOMS)
    def part(self, cid: int, room: str) -> None:
        out = flatten(self.hub.handle(cid, Part(room=room), NOW))
        if not self.live(cid):
            assert out == []
            return
        name = room_key(room)
        if cid not in self.members.get(name, set()):
            assert [(to, getattr(e, "code", None)) for to, e in out] == [
                (cid, ErrorCode.NOT_IN_ROOM)
            ]
            return
        assert sorted(to for to, _ in out) == sorted(self.members[name])
        self.members[name].discard(cid)
        if not self.members[name]:
            del self.members[name]

    @rule(cid=connections, room=ROOMS, msg_id=MSG_IDS)
    def say(self, cid: int, room: str, msg_id: str) -> None:
        out = flatten(self.hub.handle(cid, Say(msg_id=msg_id, room=room, text="hi"), NOW))
        if not self.live(cid):
            assert out == []
            return
        name = room_key(room)
        others = self.members.get(name, set()) - {cid}
        key = (self.token[cid], msg_id)
        if not msg_id:
            assert [getattr(e, "code", None) for _, e in out] == [ErrorCode.INVALID_REQUEST]
            return
        if key in self.told or (key in self.sent and self.sent[key][0] != name):
            assert [getattr(e, "code", None) for _, e in out] == [ErrorCode.MSG_ID_REUSED]
            return
        if key in self.sent:
            [(to, ack)] = out
            assert to == cid and type(ack) is Ack
            assert (ack.room, ack.seq, ack.recipients) == (*self.sent[key], len(others))
            return
        seq = self.heads[name] = self.heads.get(name, 0) + 1
        self.sent[key] = (name, seq)
        *messages, (to, ack) = out
        assert to == cid and ack == Ack(
            msg_id=msg_id, ts=NOW, recipients=len(others), room=name, seq=seq
        )
        assert sorted(to for to, _ in messages) == sorted(others)
        for _, message in messages:
            assert type(message) is Message
            assert (message.seq, message.sender, message.room) == (seq, self.nick[cid], name)

    @rule(cid=connections, to=NICKS, msg_id=MSG_IDS)
    def tell(self, cid: int, to: str, msg_id: str) -> None:
        out = flatten(self.hub.handle(cid, Tell(msg_id=msg_id, to=to, text="psst"), NOW))
        if not self.live(cid):
            assert out == []
            return
        key = (self.token[cid], msg_id)
        codes = [getattr(e, "code", None) for _, e in out]
        if not msg_id:
            assert codes == [ErrorCode.INVALID_REQUEST]
            return
        if key in self.sent or (key in self.told and self.told[key] != to.casefold()):
            assert codes == [ErrorCode.MSG_ID_REUSED]
            return
        if key in self.told:  # a resend: acknowledged again, not delivered again
            assert out == [(cid, Ack(msg_id=msg_id, ts=NOW, recipients=1))]
            return
        targets = [c for c, n in self.nick.items() if n.casefold() == to.casefold()]
        if not targets:
            assert codes == [ErrorCode.NO_SUCH_NICK]
            return
        self.told[key] = to.casefold()
        assert out[0][0] == targets[0] and type(out[0][1]) is DirectMessage
        assert out[1] == (cid, Ack(msg_id=msg_id, ts=NOW, recipients=1))

    @rule(cid=connections, nick=NICKS)
    def rename(self, cid: int, nick: str) -> None:
        audience = self.sharing(cid)
        out = flatten(self.hub.handle(cid, ChangeNick(nick=nick), NOW))
        if not self.live(cid):
            assert out == []
            return
        holder = [c for c, n in self.nick.items() if n.casefold() == nick.casefold()]
        if nick_problem(nick) is not None:
            assert [getattr(e, "code", None) for _, e in out] == [ErrorCode.INVALID_NICK]
        elif holder and holder != [cid]:
            assert [getattr(e, "code", None) for _, e in out] == [ErrorCode.NICK_IN_USE]
        elif self.nick[cid] == nick:
            assert out == [(cid, Notice(kind="renamed", nick=nick, ts=NOW, new_nick=nick))]
        else:
            assert sorted(to for to, _ in out) == sorted(audience)
            self.nick[cid] = nick

    @rule(cid=connections, room=ROOMS)
    def who(self, cid: int, room: str) -> None:
        out = flatten(self.hub.handle(cid, Who(room=room), NOW))
        if not self.live(cid):
            assert out == []
            return
        name = room_key(room)
        expected = sorted((self.nick[c] for c in self.members.get(name, ())), key=str.casefold)
        assert out == [(cid, Members(room=name, nicks=expected))]

    @rule(cid=consumes(connections), clean=st.booleans())
    def disconnect(self, cid: int, clean: bool) -> None:
        out = flatten(self.hub.disconnect(cid, "bye", NOW, clean=clean))
        if not self.live(cid):
            assert out == []
            return
        expected: list[int] = []
        for room in self.rooms_of(cid):
            self.members[room].discard(cid)
            if not self.members[room]:
                del self.members[room]
            else:
                expected += self.members[room]
        assert sorted(to for to, _ in out) == sorted(expected)
        assert all(type(e) is Notice and e.kind == ("left" if clean else "dropped") for _, e in out)
        del self.nick[cid]

    @invariant()
    def hub_matches_model(self) -> None:
        assert {s.cid: s.nick for s in self.hub.sessions.values()} == self.nick
        assert set(self.hub.nicks) == {n.casefold() for n in self.nick.values()}
        assert {name: set(r.members) for name, r in self.hub.rooms.items()} == self.members
        for room in self.hub.rooms.values():
            assert room.targets == tuple(room.members)
        for name, head in self.heads.items():
            assert self.store.head(name) == head


def consumes_nothing(cid: int) -> int:
    """A refused connection still goes in the bundle: the hub must ignore its frames."""
    return cid


HubMachine.TestCase.settings = settings(stateful_step_count=40)
test_stateful_hub = HubMachine.TestCase


def test_member_and_room_lists_fit_in_one_frame() -> None:
    hub, _ = make_hub(max_frame=1024)
    for cid in range(1, 201):
        hello(hub, cid, f"member{cid:03}")
        hub.handle(cid, Join(room=f"room{cid:03}"), NOW)
        hub.handle(cid, Join(room="big"), NOW)
    [d] = hub.handle(1, Who(room="big"), NOW)
    members = d.event
    assert type(members) is Members and len(d.data) <= 1024 + 8
    assert 0 < len(members.nicks) < 200 and members.nicks == sorted(members.nicks)
    assert members.nicks[0] == "member001"
    [d] = hub.handle(1, ListRooms(), NOW)
    rooms = d.event
    assert type(rooms) is RoomList and len(d.data) <= 1024 + 8
    assert rooms.rooms["big"] == 200 and len(rooms.rooms) < 201


def test_errors_echo_client_strings_short() -> None:
    hub, _ = make_hub(max_frame=2048)
    hello(hub, 1, "alice")
    long = "x" * 1500
    for event in (
        Say(msg_id=long, room=long + " ", text="hi"),
        Tell(msg_id=long, to=long, text="hi"),
        Join(room=long),
    ):
        [d] = hub.handle(1, event, NOW)
        error = d.event
        assert type(error) is Error and len(d.data) < 400
        assert error.msg_id in ("", long[:64])


def test_many_clients_asking_for_one_nick_all_get_distinct_variants() -> None:
    hub, _ = make_hub()
    nicks = [hello(hub, cid, "bot").nick for cid in range(1, 3001)]
    assert len({n.casefold() for n in nicks}) == 3000
    assert nicks[:3] == ["bot", "bot2", "bot3"]
    hub.disconnect(2, "gone", NOW)  # bot2 is free again: the small numbers are reused first
    assert hello(hub, 5000, "BOT").nick == "BOT2"
