"""The slash-command parser: examples, and properties over arbitrary lines."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chatctl.names import room_key
from chatctl.ui.commands import (
    ALIASES,
    COMMANDS,
    MAX_HISTORY,
    TERMINAL_ONLY,
    WINDOW_ACTIONS,
    Action,
    ClearWindow,
    Command,
    CommandError,
    DirectMsg,
    Help,
    IgnoreNick,
    JoinRoom,
    ListRooms,
    NewNick,
    PartRoom,
    Query,
    Quit,
    SetAway,
    ShowHistory,
    Text,
    WhoIs,
    WhoisNick,
    WindowCmd,
    format_command,
    help_lines,
    parse,
    resolve,
    suggestions,
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
# Valid nicks (the terminal's commands check them): docs/protocol.md §6.1.
nicks = st.from_regex(r"[A-Za-z_\[\]{}\\|^`][A-Za-z0-9_\-\[\]{}\\|^`]{0,31}", fullmatch=True)
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
    st.just(Query()),
    st.builds(Query, nick=nicks, text=texts | st.just("")),
    st.builds(WhoisNick, nick=nicks),
    st.just(ClearWindow()),
    st.builds(SetAway, reason=texts | st.just("")),
    st.builds(IgnoreNick, nick=nicks | st.none(), undo=st.just(False)),
    st.builds(IgnoreNick, nick=nicks, undo=st.just(True)),
    st.builds(WindowCmd, action=st.just("goto"), number=st.integers(1, 999)),
    st.builds(WindowCmd, action=st.just("goto"), name=words),
    st.sampled_from([WindowCmd(action=a) for a in WINDOW_ACTIONS if a != "goto"]),
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
        ("/j #rust", JoinRoom(room="rust")),
        ("/leave #rust bye", PartRoom(room="rust", reason="bye")),
        ("/names", WhoIs()),
        ("/list", ListRooms()),
        ("/exit later", Quit(reason="later")),
        ("/query bob", Query(nick="bob")),
        ("/q bob hi there", Query(nick="bob", text="hi there")),
        ("/query", Query()),
        ("/whois bob", WhoisNick(nick="bob")),
        ("/clear", ClearWindow()),
        ("/away lunch", SetAway(reason="lunch")),
        ("/away", SetAway()),
        ("/ignore", IgnoreNick()),
        ("/ignore spammer", IgnoreNick(nick="spammer")),
        ("/unignore spammer", IgnoreNick(nick="spammer", undo=True)),
        ("/window 3", WindowCmd(action="goto", number=3)),
        ("/window", WindowCmd(action="list")),
        ("/window next", WindowCmd(action="next")),
        ("/win #dev", WindowCmd(action="goto", name="#dev")),
        ("/wc", WindowCmd(action="close")),
        ("/help j", Help(topic="j")),
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
        "/query 1bad",
        "/whois",
        "/whois a b",
        "/clear x",
        "/unignore",
        "/ignore a b",
        "/window 0",
        "/window close now",
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
    assert help_lines("msg") == [f"{COMMANDS['msg'][0]}  {COMMANDS['msg'][1]}", "also: /m"]
    assert help_lines("nick") == [f"{COMMANDS['nick'][0]}  {COMMANDS['nick'][1]}"]
    assert help_lines("/j") == help_lines("join")  # an alias's help is its command's
    assert "also: /win, /wc (/window close)" in help_lines("window")
    assert help_lines("nosuch")[0].startswith("no command /nosuch")
    assert "did you mean /join" in help_lines("jion")[0]
    # A pipe's /help leaves out what only a terminal does, and says so when asked.
    piped = "\n".join(help_lines(terminal=False))
    assert "/window" not in piped and "/join" in piped
    assert help_lines("window", terminal=False)[-1] == "/window works only on a terminal"


@pytest.mark.parametrize(
    ("typed", "meant"),
    [("jion", "join"), ("qiut", "quit"), ("wh", "who"), ("windwo", "window"), ("ignor", "ignore")],
)
def test_unknown_commands_suggest_what_was_meant(typed: str, meant: str) -> None:
    with pytest.raises(CommandError) as info:
        parse(f"/{typed} x")
    assert f"did you mean /{meant}" in str(info.value) or f"/{meant}" in str(info.value)


@given(st.sampled_from(sorted({*COMMANDS, *ALIASES})), st.data())
def test_one_typo_in_a_long_name_is_recognised(name: str, data: st.DataObject) -> None:
    """A name of four letters or more with one letter changed, dropped or doubled: the
    suggestion names it."""
    if len(name) < 4:
        return
    i = data.draw(st.integers(0, len(name) - 1))
    typo = data.draw(
        st.sampled_from(
            [
                name[:i] + name[i + 1 :],
                name[:i] + name[i] + name[i:],
                name[:i] + ("z" if name[i] != "z" else "y") + name[i + 1 :],
            ]
        )
    )
    if resolve(typo) is not None:
        return  # the typo is another command's name
    assert name in suggestions(typo)


@given(st.text(max_size=12))
def test_suggestions_are_real_commands(typed: str) -> None:
    for guess in suggestions(typed):
        assert resolve(guess) is not None


def test_every_alias_stands_for_a_command() -> None:
    for alias, target in ALIASES.items():
        assert alias not in COMMANDS
        assert target.split()[0] in COMMANDS
    assert set(COMMANDS) >= TERMINAL_ONLY
