"""The slash-command parser: examples, and properties over arbitrary lines."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chatctl.names import room_key
from chatctl.ui.commands import (
    COMMANDS,
    MAX_HISTORY,
    Action,
    Command,
    CommandError,
    DirectMsg,
    Help,
    JoinRoom,
    ListRooms,
    NewNick,
    PartRoom,
    Quit,
    ShowHistory,
    Text,
    WhoIs,
    format_command,
    help_lines,
    parse,
)

# A word: no whitespace, does not start with "#" or "/" (those are stripped or special).
words = st.text(
    st.characters(codec="utf-8", exclude_categories=["Zs", "Zl", "Zp", "Cc"]),
    min_size=1,
    max_size=12,
).filter(lambda w: w[0] not in "#/" and not any(c.isspace() for c in w))
# A room as a parsed command names it: canonical ("Rust" -> "rust"), or as typed when invalid.
rooms = words.map(room_key)
# Free text: anything but surrounding whitespace, non-empty.
texts = st.text(st.characters(codec="utf-8"), min_size=1, max_size=40).filter(
    lambda t: t == t.strip() and t != ""
)
commands: st.SearchStrategy[Command] = st.one_of(
    st.builds(Text, text=st.text(st.characters(codec="utf-8"), max_size=40)),
    st.builds(JoinRoom, room=rooms),
    st.just(PartRoom()),
    st.builds(PartRoom, room=rooms, reason=texts | st.just("")),
    st.just(ListRooms()),
    st.builds(WhoIs, room=rooms | st.none()),
    st.builds(NewNick, nick=words),
    st.builds(DirectMsg, nick=words, text=texts),
    st.builds(Action, text=texts),
    st.builds(Quit, reason=texts | st.just("")),
    st.builds(Help, topic=st.sampled_from(sorted(COMMANDS)) | st.none()),
    st.builds(ShowHistory, count=st.integers(1, MAX_HISTORY)),
)


@given(commands)
def test_format_then_parse_is_identity(command: Command) -> None:
    assert parse(format_command(command)) == command


@given(st.text())
def test_any_line_parses_or_gives_a_usage_error(line: str) -> None:
    try:
        command = parse(line)
    except CommandError as exc:
        assert str(exc)
        assert "\n" not in str(exc)
        return
    if not line.startswith("/"):
        assert command == Text(text=line)


@given(st.text().filter(lambda t: not t.startswith("/")))
def test_plain_text_is_sent_unchanged(line: str) -> None:
    assert parse(line) == Text(text=line)


@given(st.text())
def test_double_slash_sends_the_text_after_one_slash(rest: str) -> None:
    assert parse("//" + rest) == Text(text="/" + rest)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("/join #rust", JoinRoom(room="rust")),
        ("/JOIN rust", JoinRoom(room="rust")),
        ("/part", PartRoom()),
        ("/part #rust bye  all", PartRoom(room="rust", reason="bye  all")),
        ("/rooms", ListRooms()),
        ("/who", WhoIs()),
        ("/who #lobby", WhoIs(room="lobby")),
        ("/nick bob", NewNick(nick="bob")),
        ("/msg bob hi  there ", DirectMsg(nick="bob", text="hi  there")),
        ("/me waves", Action(text="waves")),
        ("/quit", Quit()),
        ("/quit gone fishing", Quit(reason="gone fishing")),
        ("/help", Help()),
        ("/help /msg", Help(topic="msg")),
        ("/history", ShowHistory()),
        ("/history 5", ShowHistory(count=5)),
        ("hello /join", Text(text="hello /join")),
        (" /join x", Text(text=" /join x")),
    ],
)
def test_examples(line: str, expected: Command) -> None:
    assert parse(line) == expected


@pytest.mark.parametrize(
    "line",
    [
        "/",
        "/nosuch",
        "/join",
        "/join a b",
        "/nick",
        "/nick a b",
        "/msg bob",
        "/me",
        "/me   ",
        "/history x",
        "/history 0",
        f"/history {MAX_HISTORY + 1}",
        "/history \uff15",  # a fullwidth digit is not a number here
        "/rooms extra",
        "/who a b",
    ],
)
def test_malformed_commands_say_how(line: str) -> None:
    with pytest.raises(CommandError):
        parse(line)


def test_unknown_command_message_is_printable() -> None:
    with pytest.raises(CommandError) as info:
        parse("/\x1b[2Jx")
    assert "\x1b" not in str(info.value)


def test_help_lists_every_command() -> None:
    text = "\n".join(help_lines())
    for name in COMMANDS:
        assert f"/{name}" in text
    assert help_lines("msg") == [f"{COMMANDS['msg'][0]}  {COMMANDS['msg'][1]}"]
    assert "no command" in help_lines("nosuch")[0]
