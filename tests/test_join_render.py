"""Rendering of events: hostile text is shown, never obeyed; JSON Lines round-trip."""

from __future__ import annotations

import json
import re

from hypothesis import given
from hypothesis import strategies as st

from chatctl.client.events import AnyEvent, Closed, Delivered, Disconnected, Refused
from chatctl.errors import ConnectFailed
from chatctl.protocol import (
    Ack,
    DirectMessage,
    Error,
    Gap,
    HistoryEnd,
    Members,
    Message,
    Notice,
    RoomList,
    Say,
    Tell,
)
from chatctl.ui.render import TextRenderer, event_record, gap_text, json_line, nick_colour, sanitize

# What a terminal would act on: C0 but tab/newline, DEL, C1, bidi controls.
UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
hostile = st.lists(
    st.sampled_from(
        ["\x1b", "[", "2J", "]0;", "\x07", "\x9b", "\u202e", "\r", "\n", "\t", "a", "é"]
    )
    | st.characters(codec="utf-8"),
    max_size=30,
).map("".join)


def plain() -> TextRenderer:
    return TextRenderer(lambda: "me", colour=False, single_line=True)


@given(hostile)
def test_sanitize_leaves_nothing_a_terminal_obeys(text: str) -> None:
    out = sanitize(text, newline=" | ")
    assert UNSAFE.search(out) is None
    assert "\n" not in out


@given(hostile)
def test_sanitize_keeps_safe_text_unchanged(text: str) -> None:
    if UNSAFE.search(text) is None:
        assert sanitize(text) == text


@given(hostile, hostile, hostile)
def test_a_hostile_message_renders_on_one_line_without_escapes(
    room: str, sender: str, text: str
) -> None:
    event = Message(room=room, seq=1, ts=0, sender=sender, text=text)
    line = plain().render(event)
    assert line is not None
    assert UNSAFE.search(line) is None
    assert "\n" not in line


@given(hostile, hostile)
def test_colour_only_adds_our_own_styles(sender: str, text: str) -> None:
    renderer = TextRenderer(lambda: "me", colour=True, single_line=False)
    line = renderer.render(Message(room="r", seq=1, ts=0, sender=sender, text=text))
    assert line is not None
    without_styles = re.sub(r"\x1b\[[0-9;]*m", "", line)
    assert UNSAFE.search(without_styles.replace("\n", "")) is None


@given(hostile, hostile)
def test_json_lines_round_trip_and_escape_terminal_controls(sender: str, text: str) -> None:
    event = Message(room="r", seq=3, ts=5, sender=sender, text=text, history=True)
    line = json_line(event_record(event) or {})
    assert UNSAFE.search(line) is None
    assert "\n" not in line
    record = json.loads(line)
    assert record == {
        "type": "message",
        "room": "r",
        "seq": 3,
        "ts": 5,
        "nick": sender,
        "text": text,
        "action": False,
        "history": True,
        "own": False,
    }


@given(st.text(min_size=1, max_size=20))
def test_nick_colour_is_stable_and_case_insensitive(nick: str) -> None:
    assert nick_colour(nick) == nick_colour(nick.upper()) == nick_colour(nick.lower())


def test_gap_reads_as_the_issue_says() -> None:
    assert gap_text(Gap(room="r", first=120, last=180)) == (
        "missed messages 120\u2013180 (no longer stored)"
    )
    assert gap_text(Gap(room="r", first=7, last=7)) == "missed messages 7 (no longer stored)"


def test_every_kind_of_event_renders() -> None:
    ack = Ack(msg_id="m1", ts=0, recipients=2, room="r", seq=9)
    say = Say(msg_id="m1", room="r", text="hi")
    tell = Tell(msg_id="m2", to="bob", text="psst")
    error = Error(code=205, message="too long", msg_id="m1")
    cases: dict[str, AnyEvent] = {
        "<me> hi": Delivered(request=say, ack=ack, nick="me"),
        "bob": Delivered(request=tell, ack=Ack(msg_id="m2", ts=0, recipients=1), nick="me"),
        "<al> yo": DirectMessage(sender="al", to="me", ts=0, text="yo"),
        "al joined": Notice(kind="joined", nick="al", ts=0, room="r"),
        "al left (bye)": Notice(kind="left", nick="al", ts=0, room="r", reason="bye"),
        "al is now bo": Notice(kind="renamed", nick="al", ts=0, new_nick="bo"),
        "al dropped (idle)": Notice(kind="dropped", nick="al", ts=0, room="r", reason="idle"),
        "missed messages 1\u20132": Gap(room="r", first=1, last=2),
        "2 here: a, b": Members(room="r", nicks=["a", "b"]),
        "#r (3)": RoomList(rooms={"r": 3}),
        "not sent: too long (text_too_long)": Refused(request=say, error=error),
        "connection lost: reset; reconnecting": Disconnected(reason="reset", retrying=True),
        "could not connect": Closed(reason="x", error=ConnectFailed("could not connect")),
    }
    for expected, event in cases.items():
        line = plain().render(event)
        assert line is not None and expected in line, (event, line)
        record = event_record(event)
        assert record is not None and json.loads(json_line(record)) == record
    assert plain().render(HistoryEnd(room="r", head=1)) is None
    assert event_record(HistoryEnd(room="r", head=1)) == {
        "type": "history_end",
        "room": "r",
        "head": 1,
    }
    own = event_record(Delivered(request=say, ack=ack, nick="me"))
    assert own is not None and own["own"] is True and own["seq"] == 9 and own["recipients"] == 2


def test_a_mention_of_our_nick_is_highlighted_on_a_terminal() -> None:
    renderer = TextRenderer(lambda: "Al", colour=True, single_line=False)

    def shown(sender: str, text: str) -> str:
        return renderer.render(Message(room="r", seq=1, ts=0, sender=sender, text=text)) or ""

    assert "\x1b[1;33m" in shown("bob", "hey al, look")
    assert "\x1b[1;33m" in shown("bob", "@AL!")
    assert "\x1b[1;33m" not in shown("bob", "also alice and al-x")
    assert "\x1b[1;33m" not in shown("al", "al talks to itself")
    line = TextRenderer(lambda: "me", colour=False, single_line=True).render(
        Message(room="r", seq=1, ts=0, sender="b", text="me")
    )
    assert line is not None and "\x1b" not in line  # no colour, no highlight
