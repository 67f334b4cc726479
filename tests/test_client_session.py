"""The client's sans-IO rules (ClientSession): resume, acks and paging without a socket.

A hypothesis state machine drives a session against a model server through two queues, one
each way, that a dropped connection empties: the application sends, joins and parts, others
post, the server forgets old messages, the connection drops (with or without the server
noticing) and comes back, and the two directions are read in any interleaving.
The replay limit is small, so resumes take several pages. Then the examples. (One file of
some 550 lines: the model, the machine and the examples all describe the one ClientSession.)
"""

from __future__ import annotations

import itertools
from collections import Counter, deque

import msgspec
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from chatctl.client.events import AnyEvent, Delivered, Refused
from chatctl.client.session import ClientSession
from chatctl.errors import ChatctlError
from chatctl.protocol import (
    Ack,
    Error,
    ErrorCode,
    Event,
    Gap,
    History,
    HistoryEnd,
    Join,
    Members,
    Message,
    Notice,
    Part,
    Ping,
    Pong,
    Say,
    Tell,
    Welcome,
)

ME = "alice"
ROOMS = ("r0", "r1", "r2")
REPLAY_LIMIT = 2
TOKEN = "t" * 16


def welcome(replay_limit: int = REPLAY_LIMIT, nick: str = ME) -> Welcome:
    return Welcome(
        protocol=1,
        server="model",
        version="0",
        nick=nick,
        token=TOKEN,
        limits={"replay_limit": replay_limit},
    )


def message(room: str, seq: int, sender: str = "bob", *, history: bool = False) -> Message:
    return Message(room=room, seq=seq, ts=seq, sender=sender, text=f"{room}:{seq}", history=history)


class ModelServer:
    """The server as far as one client's rules meet it: rooms of stored messages numbered
    from 1 (those up to `trimmed` forgotten), the rooms alice is in, and her stored messages
    by msg_id (a re-sent one is acknowledged again, not stored twice)."""

    def __init__(self) -> None:
        self.heads = dict.fromkeys(ROOMS, 0)
        self.stored: dict[str, dict[int, Message]] = {room: {} for room in ROOMS}
        self.trimmed = dict.fromkeys(ROOMS, 0)
        self.members: set[str] = set()
        self.acks: dict[str, Ack] = {}
        # Where alice's stream of a room starts: the head when the server last took a Join
        # without `after` (what came before reaches her as history=True, or not at all), or
        # the lowest `after` since (she says she has everything up to it).
        self.start: dict[str, int] = {}

    def store(self, room: str, sender: str) -> Message:
        seq = self.heads[room] = self.heads[room] + 1
        self.stored[room][seq] = message(room, seq, sender)
        return self.stored[room][seq]

    def trim(self, room: str, upto: int) -> None:
        for seq in range(self.trimmed[room] + 1, upto + 1):
            del self.stored[room][seq]
        self.trimmed[room] = max(self.trimmed[room], upto)

    def handle(self, frame: Event) -> list[Event]:
        """The answers to alice's frame, in order."""
        if isinstance(frame, Say | Tell):
            return [self._say(frame)]
        if isinstance(frame, Join):
            return self._join(frame)
        if isinstance(frame, Part):
            if frame.room not in self.members:
                not_in = f"not in #{frame.room}"
                return [Error(code=ErrorCode.NOT_IN_ROOM, message=not_in, rid=frame.rid)]
            self.members.discard(frame.room)
            return [Notice(kind="left", nick=ME, ts=0, room=frame.room, rid=frame.rid)]
        if isinstance(frame, History):
            assert frame.after is not None and frame.limit == REPLAY_LIMIT
            return self._replay_after(frame.room, frame.after)
        assert isinstance(frame, Pong), frame
        return []

    def _say(self, say: Say | Tell) -> Event:
        if not say.text:
            return Error(code=ErrorCode.EMPTY_TEXT, message="empty", msg_id=say.msg_id)
        if say.msg_id not in self.acks:
            if isinstance(say, Say):
                seq = self.store(say.room, ME).seq
                ack = Ack(msg_id=say.msg_id, ts=seq, recipients=0, room=say.room, seq=seq)
            else:
                ack = Ack(msg_id=say.msg_id, ts=0, recipients=1)
            self.acks[say.msg_id] = ack
        return self.acks[say.msg_id]

    def _join(self, join: Join) -> list[Event]:
        room = join.room
        out: list[Event] = []
        if room not in self.members:
            self.members.add(room)
            out.append(Notice(kind="joined", nick=ME, ts=0, room=room, rid=join.rid))
        if join.after is not None:
            self.start[room] = min(self.start.get(room, join.after), join.after)
            out += self._replay_after(room, join.after, join.rid)
        else:
            self.start[room] = head = self.heads[room]
            first = max(self.trimmed[room] + 1, head - min(join.history or 0, REPLAY_LIMIT) + 1)
            out += [
                msgspec.structs.replace(self.stored[room][s], history=True)
                for s in range(first, head + 1)
            ]
            out.append(HistoryEnd(room=room, head=head, rid=join.rid))
        out.append(Members(room=room, nicks=[ME], rid=join.rid))
        return out

    def _replay_after(self, room: str, after: int, rid: str = "") -> list[Event]:
        out: list[Event] = []
        first = after + 1
        if first <= self.trimmed[room]:
            out.append(Gap(room=room, first=first, last=self.trimmed[room]))
            first = self.trimmed[room] + 1
        last = min(first + REPLAY_LIMIT - 1, self.heads[room])
        out += [
            msgspec.structs.replace(self.stored[room][s], history=True)
            for s in range(first, last + 1)
        ]
        out.append(HistoryEnd(room=room, head=self.heads[room], rid=rid))
        return out


class SessionMachine(RuleBasedStateMachine):
    """alice's session against the model server, with the connection dropped at any point."""

    def __init__(self) -> None:
        super().__init__()
        self.server = ModelServer()
        self.session = ClientSession(ME, rooms=["r0", "r1"], history=2)
        self.to_server: deque[Event] = deque()
        self.to_client: deque[Event] = deque()
        self.online = False
        self.connections = 0
        self.app: list[AnyEvent] = []  # everything the application was given
        self.sent: dict[str, Say | Tell] = {}
        self.ids = itertools.count()
        self.pings = itertools.count()
        self.connect()
        self.settle()  # most runs are about what happens after this

    # -- the connection ------------------------------------------------------------------------
    # Rules without preconditions (a rule that cannot apply does nothing): hypothesis gives up
    # on a run when it draws too many rules that are not enabled.

    def connect(self) -> None:
        hello = self.session.hello()
        assert (hello.nick, hello.token) == (ME, TOKEN if self.connections else "")
        self.connections += 1
        self.online = True
        self.to_server.extend(self.session.welcomed(welcome()))

    @rule(
        server_noticed=st.booleans(),
        back=st.booleans(),
        room=st.sampled_from(ROOMS),
        missed=st.integers(0, 2 * REPLAY_LIMIT + 1),
        then=st.integers(0, 2),
    )
    def blink(self, server_noticed: bool, back: bool, room: str, missed: int, then: int) -> None:
        """Drop the connection, and come `back` at once; or, while offline, come back. Whatever
        is in flight is lost; others post `missed` messages meanwhile, and `then` more at once
        after. A server that did not notice (a half-open connection) hands alice's rooms to
        her next connection, and sends those live before it answers her rejoins."""
        was_online = self.online
        if was_online:
            self.to_server.clear()
            self.to_client.clear()
            self.online = False
            self.session.connection_lost()
            if server_noticed:
                self.server.members.clear()
        self.others_post(room, missed)
        if back or not was_online:
            self.connect()
            self.others_post(room, then)

    @rule(count=st.integers(1, 8))
    def server_reads(self, count: int = 1) -> None:
        for _ in range(min(count, len(self.to_server))):
            self.to_client.extend(self.server.handle(self.to_server.popleft()))

    @rule(count=st.integers(1, 8))
    def client_reads(self, count: int = 1) -> None:
        for _ in range(min(count, len(self.to_client))):
            frame = self.to_client.popleft()
            actions = self.session.receive(frame)
            if isinstance(frame, Ping):
                assert actions.send == [Pong(token=frame.token)]
            self.to_server.extend(actions.send)
            self.app.extend(actions.emit)

    @rule()
    def settle(self) -> None:
        """Until nothing is in flight (answers make requests: the next page of a resume)."""
        for _ in range(10_000):
            if self.to_server:
                self.server_reads()
            elif self.to_client:
                self.client_reads()
            else:
                return
        raise AssertionError("the session never settles")

    @rule()
    def server_pings(self) -> None:
        if self.online:
            self.to_client.append(Ping(token=next(self.pings)))

    # -- the application -----------------------------------------------------------------------

    @rule(room=st.sampled_from(ROOMS) | st.none(), empty=st.booleans())
    def send(self, room: str | None, empty: bool) -> None:
        msg_id = f"m{next(self.ids)}"
        text = "" if empty else msg_id
        request: Say | Tell = (
            Tell(msg_id=msg_id, to="bob", text=text)
            if room is None
            else Say(msg_id=msg_id, room=room, text=text)
        )
        self.sent[msg_id] = request
        self.to_server.extend(self.session.send_message(request))

    @rule(room=st.sampled_from(ROOMS), history=st.integers(0, 5))
    def join(self, room: str, history: int) -> None:
        if room not in self.session.rooms and not self.session.joining(room):
            self.to_server.extend(self.session.join(room, history=history))

    @rule(room=st.sampled_from(ROOMS))
    def part(self, room: str) -> None:
        if room in self.session.rooms:
            self.to_server.extend(self.session.part(room))

    # -- the rest of the world -----------------------------------------------------------------

    @rule(room=st.sampled_from(ROOMS), count=st.integers(1, 6))
    def others_post(self, room: str, count: int) -> None:
        for _ in range(count):
            posted = self.server.store(room, "bob")
            if self.online and room in self.server.members:
                self.to_client.append(posted)

    @rule(room=st.sampled_from(ROOMS), data=st.data())
    def server_forgets(self, room: str, data: st.DataObject) -> None:
        server = self.server
        server.trim(room, data.draw(st.integers(server.trimmed[room], server.heads[room])))

    # -- always --------------------------------------------------------------------------------

    def answered(self) -> list[str]:
        return [e.request.msg_id for e in self.app if isinstance(e, Delivered | Refused)]

    @invariant()
    def every_message_is_answered_at_most_once_and_none_is_lost(self) -> None:
        answered = self.answered()
        assert len(answered) == len(set(answered))
        assert self.session.unacked == len(self.sent) - len(answered)

    @invariant()
    def nothing_is_sent_while_offline(self) -> None:
        assert self.online or not self.to_server

    @invariant()
    def each_room_is_delivered_in_order_without_our_own(self) -> None:
        """The stream of each room: messages, and Gaps where the server forgot some."""
        last: dict[str, int] = {}
        for event in self.app:
            if isinstance(event, Message) and not event.history:
                assert event.sender != ME, event
                assert event.seq > last.get(event.room, 0), (event, last)
                last[event.room] = event.seq
            elif isinstance(event, Gap):
                assert event.first > last.get(event.room, 0), (event, last)
                last[event.room] = event.last

    @invariant()
    def quiet_parts_stay_quiet(self) -> None:
        # Every Part the application asks for is for a room the server has it in, so a
        # NOT_IN_ROOM can only answer a Part re-sent after a reconnect: not news.
        assert not any(isinstance(e, Error) and e.code == ErrorCode.NOT_IN_ROOM for e in self.app)

    # -- at the end ----------------------------------------------------------------------------

    def teardown(self) -> None:
        if not self.online:
            self.connect()
        self.settle()
        self.check_settled()

    def check_settled(self) -> None:
        server, session = self.server, self.session
        answers = {e.request.msg_id: e for e in self.app if isinstance(e, Delivered | Refused)}
        assert answers.keys() == self.sent.keys()  # every message answered, once (invariant)
        for msg_id, answer in answers.items():
            if isinstance(answer, Delivered):
                assert answer.ack == server.acks[msg_id] and answer.nick == ME
            else:
                assert not self.sent[msg_id].text
        assert set(session.rooms) == server.members
        for room in session.rooms:
            self.check_room(room)

    def check_room(self, room: str) -> None:
        """From where alice's stream starts, every stored message reached her exactly once
        (ours as Delivered), but for those the server had forgotten before (a Gap says so)."""
        got: Counter[int] = Counter()
        gone: set[int] = set()
        for event in self.app:
            if isinstance(event, Message) and event.room == room and not event.history:
                got[event.seq] += 1
            elif isinstance(event, Delivered) and event.ack.room == room:
                got[event.ack.seq] += 1
            elif isinstance(event, Gap) and event.room == room:
                gone.update(range(event.first, event.last + 1))
        head = self.server.heads[room]
        for seq in range(self.server.start[room] + 1, head + 1):
            assert got[seq] == 1 or (seq in gone and got[seq] == 0), (room, seq, got[seq])
        assert self.session.last_seq(room) == head


SessionMachine.TestCase.settings = settings(max_examples=300, stateful_step_count=50)
TestSessionMachine = SessionMachine.TestCase


# -- examples ----------------------------------------------------------------------------------


def resumed(session: ClientSession, replay_limit: int = REPLAY_LIMIT) -> list[Event]:
    """Drop the connection and come back: the frames the session starts the new one with."""
    session.connection_lost()
    return session.welcomed(welcome(replay_limit))


def bare(frames: list[Event]) -> list[Event]:
    """`frames` without their request ids (fresh ones the session makes up)."""
    return [msgspec.structs.replace(f, rid="") if getattr(f, "rid", "") else f for f in frames]


def emitted(session: ClientSession, *frames: Event) -> list[AnyEvent]:
    out: list[AnyEvent] = []
    for frame in frames:
        actions = session.receive(frame)
        assert actions.send == []
        out += actions.emit
    return out


def test_the_first_welcome_joins_and_a_later_one_resumes_parts_and_resends() -> None:
    session = ClientSession(ME, rooms=["#R0", "r1"], history=5)
    assert session.hello().token == ""
    assert session.welcomed(welcome()) == [Join(room="r0", history=5), Join(room="r1", history=5)]
    emitted(session, HistoryEnd(room="r0", head=7), HistoryEnd(room="r1", head=0))
    say = Say(msg_id="1", room="r0", text="hi")
    assert session.send_message(say) == [say]
    assert bare(session.part("r1")) == [Part(room="r1")]
    assert session.hello().token == TOKEN
    # The Part may have been lost with the connection; r1 had nothing to resume from.
    assert bare(resumed(session)) == [Part(room="r1"), Join(room="r0", after=7), say]
    assert session.unacked == 1


def test_while_offline_requests_wait_for_the_welcome() -> None:
    session = ClientSession(ME)
    say = Say(msg_id="1", room="r0", text="hi")
    assert session.send_message(say) == []
    assert session.join("r0") == []
    join, *rest = session.welcomed(welcome())
    assert isinstance(join, Join) and join.rid
    assert bare([join]) == [Join(room="r0")] and rest == [say]
    assert session.rooms == () and session.joining("r0")
    ack = Ack(msg_id="1", ts=1, recipients=0, room="r0", seq=1)
    joined = Notice(kind="joined", nick=ME, ts=0, room="r0", rid=join.rid)
    end = HistoryEnd(room="r0", head=0, rid=join.rid)
    delivered = Delivered(request=say, ack=ack, nick=ME)
    answer = [joined, end, ack, ack]
    assert emitted(session, *answer) == [joined, end, delivered]
    assert list(session.rooms) == ["r0"] and not session.joining("r0")
    assert session.unacked == 0
    assert session.last_seq("#R0") == 1


def test_a_resume_is_paged_and_live_messages_wait_for_the_hole_to_fill() -> None:
    session = ClientSession(ME, rooms=["r0"])
    session.welcomed(welcome())
    emitted(session, HistoryEnd(room="r0", head=1), message("r0", 2))
    assert resumed(session, replay_limit=2) == [Join(room="r0", after=2)]
    got = emitted(session, message("r0", 3, history=True), message("r0", 9))  # 9 came live
    got += emitted(session, message("r0", 4, history=True))
    actions = session.receive(HistoryEnd(room="r0", head=8))
    assert actions == type(actions)(send=[History(room="r0", after=4, limit=2)])
    got += emitted(session, Gap(room="r0", first=5, last=6), message("r0", 7, history=True))
    got += emitted(session, message("r0", 8, history=True), HistoryEnd(room="r0", head=9))
    seqs = [e.seq for e in got if isinstance(e, Message)]
    assert seqs == [3, 4, 7, 8, 9]  # in order, once, as the live stream would have been
    assert not any(e.history for e in got if isinstance(e, Message))
    assert [type(e) for e in got][-2:] == [Message, HistoryEnd]
    assert session.last_seq("r0") == 9


def test_a_drop_during_a_resume_resumes_from_what_was_delivered() -> None:
    session = ClientSession(ME, rooms=["r0"])
    session.welcomed(welcome())
    emitted(session, HistoryEnd(room="r0", head=1))
    resumed(session)
    emitted(session, message("r0", 2, history=True), message("r0", 5))  # 5 is held back
    assert resumed(session) == [Join(room="r0", after=2)]
    got = emitted(session, *(message("r0", s, history=True) for s in (3, 4, 5)))
    got += emitted(session, HistoryEnd(room="r0", head=5))
    assert [e.seq for e in got if isinstance(e, Message)] == [3, 4, 5]


def test_our_own_replayed_messages_are_left_to_their_delivered() -> None:
    session = ClientSession(ME, rooms=["r0"])
    session.welcomed(welcome())
    emitted(session, HistoryEnd(room="r0", head=1))
    say = Say(msg_id="1", room="r0", text="mine")
    session.send_message(say)  # stored as 2, but the ack is lost with the connection
    assert resumed(session) == [Join(room="r0", after=1), say]
    ack = Ack(msg_id="1", ts=2, recipients=1, room="r0", seq=2)
    got = emitted(
        session, message("r0", 2, ME.upper(), history=True), message("r0", 3, history=True)
    )
    got += emitted(session, HistoryEnd(room="r0", head=3), ack)
    assert [type(e) for e in got] == [Message, HistoryEnd, Delivered]
    assert session.last_seq("r0") == 3


def test_a_server_that_lost_its_history_is_followed_from_its_new_head() -> None:
    session = ClientSession(ME, rooms=["r0"])
    session.welcomed(welcome())
    emitted(session, HistoryEnd(room="r0", head=5))
    assert resumed(session) == [Join(room="r0", after=5)]
    got = emitted(session, message("r0", 2), HistoryEnd(room="r0", head=1))
    assert [type(e) for e in got] == [Message, HistoryEnd]
    assert session.last_seq("r0") == 2
    assert resumed(session) == [Join(room="r0", after=2)]


def test_only_the_answers_to_re_sent_parts_are_quiet() -> None:
    session = ClientSession(ME)
    session.welcomed(welcome())
    session.part("a")
    session.part("b")
    again_a, again_b = resumed(session)
    assert bare([again_a, again_b]) == [Part(room="a"), Part(room="b")]
    left = Notice(kind="left", nick=ME, ts=0, room="a", rid=again_a.rid)  # type: ignore[attr-defined]
    [part_c] = session.part("c")
    assert bare([part_c]) == [Part(room="c")]
    not_in_b = Error(code=ErrorCode.NOT_IN_ROOM, message="no", rid=again_b.rid)  # type: ignore[attr-defined]
    not_in_c = Error(code=ErrorCode.NOT_IN_ROOM, message="no", rid=part_c.rid)  # type: ignore[attr-defined]
    # b's answer is not news; c's is the answer to the application's own request.
    assert emitted(session, left, not_in_b, not_in_c) == [left, not_in_c]


def test_refused_messages_are_answered_and_other_errors_pass() -> None:
    session = ClientSession(ME)
    session.welcomed(welcome())
    tell = Tell(msg_id="7", to="nobody", text="hi")
    session.send_message(tell)
    refusal = Error(code=ErrorCode.NO_SUCH_NICK, message="no", msg_id="7")
    assert emitted(session, refusal) == [Refused(request=tell, error=refusal)]
    assert emitted(session, refusal) == [refusal]  # not ours any more: the application's
    assert session.unacked == 0


def test_a_frame_that_cannot_be_sent_is_refused_at_once_and_kept_nowhere() -> None:
    session = ClientSession(ME)
    with pytest.raises(ChatctlError, match="cannot send that"):
        session.send_message(Say(msg_id="1", room="r0", text="\ud800"))
    with pytest.raises(ChatctlError, match="cannot send that"):
        session.join("\ud800")
    assert session.unacked == 0 and session.rooms == ()
    assert session.welcomed(welcome()) == []


def test_renames_follow_the_server_and_pings_are_answered() -> None:
    session = ClientSession("al")
    session.welcomed(welcome(nick="al2"))
    assert session.nick == "al2"
    emitted(session, Notice(kind="renamed", nick="AL2", ts=0, new_nick="alicia"))
    assert session.nick == "alicia"
    assert session.receive(Ping(token=5)).send == [Pong(token=5)]


def test_a_room_resumes_only_from_where_its_join_said_its_stream_starts() -> None:
    session = ClientSession(ME, rooms=["r0"])
    session.welcomed(welcome())
    # Still in flight from a membership the server kept: not where our stream starts.
    assert emitted(session, message("r0", 5)) == [message("r0", 5)]
    assert session.last_seq("r0") is None
    assert resumed(session) == [Join(room="r0")]
    emitted(session, HistoryEnd(room="r0", head=0))  # an empty room is resumed from 0
    assert resumed(session) == [Join(room="r0", after=0)]


def test_the_rest_of_a_parted_rooms_resume_is_not_news() -> None:
    session = ClientSession(ME, rooms=["r0"])
    session.welcomed(welcome())
    emitted(session, HistoryEnd(room="r0", head=1))
    resumed(session)
    assert bare(session.part("r0")) == [Part(room="r0")]
    answer = [Gap(room="r0", first=2, last=3), message("r0", 4, history=True)]
    assert emitted(session, *answer, message("r0", 9), HistoryEnd(room="r0", head=9)) == []
    assert session.rooms == () and session.last_seq("r0") is None
    [join] = session.join("r0")
    assert bare([join]) == [Join(room="r0")]
    joined = Notice(kind="joined", nick=ME, ts=0, room="r0", rid=join.rid)  # type: ignore[attr-defined]
    end = HistoryEnd(room="r0", head=9, rid=join.rid)  # type: ignore[attr-defined]
    later = [joined, message("r0", 9, history=True), end]
    assert emitted(session, *later) == later  # the answer is news
    assert list(session.rooms) == ["r0"] and session.last_seq("r0") == 9


def test_a_gap_says_nothing_about_what_came_live() -> None:
    session = ClientSession(ME, rooms=["r0"])
    session.welcomed(welcome())
    emitted(session, HistoryEnd(room="r0", head=1))
    resumed(session)
    got = emitted(session, message("r0", 6), Gap(room="r0", first=2, last=7))
    got += emitted(session, HistoryEnd(room="r0", head=7))
    assert got == [Gap(room="r0", first=2, last=5), message("r0", 6), HistoryEnd(room="r0", head=7)]


def test_a_part_is_sent_again_after_each_reconnect_until_it_is_answered() -> None:
    session = ClientSession(ME, rooms=["r0"])
    session.welcomed(welcome())
    session.part("r0")
    assert bare(resumed(session)) == [Part(room="r0")]
    [again] = resumed(session)  # lost again, unanswered
    assert bare([again]) == [Part(room="r0")]
    emitted(session, Notice(kind="left", nick=ME, ts=0, room="r0", rid=again.rid))  # type: ignore[attr-defined]
    assert resumed(session) == []


def test_a_gap_is_reported_once_even_when_the_connection_drops_after_it() -> None:
    session = ClientSession(ME, rooms=["r0"])
    session.welcomed(welcome())
    emitted(session, HistoryEnd(room="r0", head=1))
    resumed(session)
    assert emitted(session, Gap(room="r0", first=2, last=4)) == [Gap(room="r0", first=2, last=4)]
    assert resumed(session) == [Join(room="r0", after=4)]


def test_a_join_is_one_of_the_rooms_only_once_the_server_confirms_it() -> None:
    session = ClientSession(ME, rooms=["r0"])
    session.welcomed(welcome())
    [join] = session.join("r1")
    assert session.rooms == ("r0",) and session.joining("r1")
    refused = Error(code=ErrorCode.NOT_PERMITTED, message="#r1 is private", rid=join.rid)  # type: ignore[attr-defined]
    # Answers to other requests (no rid, or another) confirm nothing.
    early = HistoryEnd(room="r1", head=0, rid="other")
    assert emitted(session, early, refused) == [early, refused]
    assert session.rooms == ("r0",) and not session.joining("r1")
