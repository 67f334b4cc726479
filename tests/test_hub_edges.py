"""The edges of the protocol that issue #13 decided (docs/protocol.md), in the sans-IO hub:
request ids echoed on every answer, msg_id rules, a no-op rename answered, exact limits."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from chatctl.protocol import (
    Ack,
    ChangeNick,
    Error,
    ErrorCode,
    Event,
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
    Who,
)
from chatctl.server.config import ServerConfig
from tests.test_hub import NOW, flatten, hello, make_hub

ANSWERS = (Notice, Ack, Members, RoomList, HistoryEnd, Error)

REQUESTS: list[Event] = [
    Join(room="r", rid="q"),
    Join(room="bad room!", rid="q"),
    Part(room="r", rid="q"),
    Part(room="nowhere", rid="q"),
    Say(msg_id="s1", room="r", text="hi", rid="q"),
    Say(msg_id="s2", room="r", text=" ", rid="q"),
    Tell(msg_id="t1", to="bob", text="psst", rid="q"),
    Tell(msg_id="t2", to="nobody", text="psst", rid="q"),
    ChangeNick(nick="alicia", rid="q"),
    ChangeNick(nick="bob", rid="q"),
    Who(room="r", rid="q"),
    ListRooms(rid="q"),
    History(room="r", after=0, rid="q"),
]


def test_every_answer_to_a_request_with_a_rid_carries_it() -> None:
    for request in REQUESTS:
        hub, _ = make_hub()
        hello(hub, 1, "alice")
        hello(hub, 2, "bob")
        hub.handle(1, Join(room="r"), NOW)
        hub.handle(2, Join(room="r"), NOW)
        out = flatten(hub.handle(1, request, NOW))
        mine = [e for to, e in out if to == 1 and isinstance(e, ANSWERS)]
        assert mine, request
        assert all(e.rid == "q" for e in mine), (request, mine)
        # The others' copies of a shared notice do not carry the requester's rid.
        theirs = [e for to, e in out if to == 2 and isinstance(e, ANSWERS)]
        assert all(e.rid == "" for e in theirs), (request, theirs)


def test_without_a_rid_the_answers_are_the_bytes_they_always_were() -> None:
    hub, _ = make_hub()
    hello(hub, 1, "alice")
    out = hub.handle(1, Join(room="r"), NOW)
    assert all(b'"rid"' not in d.data for d in out)


def test_a_long_rid_is_refused_with_the_rid_cut() -> None:
    hub, _ = make_hub()
    hello(hub, 1, "alice")
    [(_, error)] = flatten(hub.handle(1, Who(room="r", rid="x" * 65), NOW))
    assert type(error) is Error and error.code == ErrorCode.INVALID_REQUEST
    assert error.rid == "x" * 64


@given(st.text(max_size=64))
def test_any_rid_comes_back_exactly(rid: str) -> None:
    hub, _ = make_hub()
    hello(hub, 1, "alice")
    out = flatten(hub.handle(1, Say(msg_id="m", room="r", text="hi", rid=rid), NOW))
    [(_, ack)] = [(to, e) for to, e in out if type(e) is Ack]
    assert ack.rid == rid


def test_msg_ids_name_one_message_each() -> None:
    hub, _ = make_hub()
    hello(hub, 1, "alice")
    hello(hub, 2, "bob")
    assert type(flatten(hub.handle(1, Say(msg_id="a", room="r", text="one"), NOW))[-1][1]) is Ack

    def code(event: Event) -> int | None:
        answers = [e for to, e in flatten(hub.handle(1, event, NOW)) if to == 1]
        return answers[-1].code if type(answers[-1]) is Error else None

    assert code(Say(msg_id="a", room="r", text="one")) is None  # a resend: acked again
    assert code(Say(msg_id="a", room="r", text="two")) == ErrorCode.MSG_ID_REUSED
    assert code(Say(msg_id="a", room="elsewhere", text="one")) == ErrorCode.MSG_ID_REUSED
    assert code(Say(msg_id="a", room="r", text="one", action=True)) == ErrorCode.MSG_ID_REUSED
    assert code(Tell(msg_id="a", to="bob", text="one")) == ErrorCode.MSG_ID_REUSED
    assert code(Tell(msg_id="t", to="bob", text="psst")) is None
    assert code(Tell(msg_id="t", to="bob", text="psst")) is None  # a resend
    assert code(Tell(msg_id="t", to="bob", text="other")) == ErrorCode.MSG_ID_REUSED
    assert code(Say(msg_id="t", room="r", text="psst")) == ErrorCode.MSG_ID_REUSED
    assert code(Say(msg_id="", room="r", text="x")) == ErrorCode.INVALID_REQUEST
    assert code(Tell(msg_id="", to="bob", text="x")) == ErrorCode.INVALID_REQUEST


def test_a_resent_tell_is_not_delivered_twice() -> None:
    hub, _ = make_hub()
    hello(hub, 1, "alice")
    hello(hub, 2, "bob")
    first = flatten(hub.handle(1, Tell(msg_id="t", to="bob", text="psst"), NOW))
    again = flatten(hub.handle(1, Tell(msg_id="t", to="BOB", text="psst"), NOW + 5))
    assert [to for to, _ in first] == [2, 1]
    assert again == [(1, Ack(msg_id="t", ts=NOW, recipients=1))]


def test_limits_are_announced_exactly() -> None:
    config = ServerConfig(
        ping_interval=0.5, idle_timeout=2.5, handshake_timeout=1.25, rate=2.5, retain_age=90.5
    )
    hub, _ = make_hub(**{k: getattr(config, k) for k in (
        "ping_interval", "idle_timeout", "handshake_timeout", "rate", "retain_age"
    )})  # fmt: skip
    limits = hello(hub, 1, "alice").limits
    assert limits["ping_interval_ms"] == 500 and limits["idle_timeout_ms"] == 2500
    assert limits["handshake_timeout_ms"] == 1250 and limits["rate_milli"] == 2500
    assert limits["retain_age_ms"] == 90_500
    for key in ("max_per_address", "connect_rate_milli", "connect_burst", "room_rate_milli"):
        assert key in limits


def test_a_replay_message_is_never_marked_with_a_rid() -> None:
    hub, _ = make_hub()
    hello(hub, 1, "alice")
    hub.handle(1, Say(msg_id="1", room="r", text="x"), NOW)
    out = flatten(hub.handle(1, History(room="r", after=0, rid="p"), NOW))
    assert [type(e) for _, e in out] == [Message, HistoryEnd]
    assert out[-1][1] == HistoryEnd(room="r", head=1, rid="p")
