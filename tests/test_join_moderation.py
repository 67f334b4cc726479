"""Room moderation from `chatctl join`: the slash commands (parsed, formatted, run), the
notices rendered as text and JSON Lines, and a pipe-mode owner running a room against a real
server while guests are invited, kicked and turned away."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chatctl.names import room_key
from chatctl.protocol import MODERATE_ACTIONS, Members, Notice, Welcome
from chatctl.server.config import Registration
from chatctl.ui.commands import (
    COMMANDS,
    PIPE_REGISTER,
    Chat,
    Command,
    CommandError,
    ModerateRoom,
    RegisterNick,
    WhoIs,
    format_command,
    help_lines,
    parse,
)
from chatctl.ui.login import PASSWORD_VAR
from chatctl.ui.render import TextRenderer, event_record, json_line, welcome_text
from tests import servers
from tests.clients import JoinProcess, joined, wait_for
from tests.servers import run_chatctl, running_server
from tests.test_join_tui import Terminal

PASSWORD = "correct horse battery"

# -- parsing ---------------------------------------------------------------------------------------

# As tests/test_commands.py draws them: a word has no whitespace and starts with neither "#"
# nor "/"; a room is canonical; a text has no surrounding whitespace.
words = st.text(
    st.characters(codec="utf-8", exclude_categories=["Zs", "Zl", "Zp", "Cc"]),
    min_size=1,
    max_size=12,
).filter(lambda w: w[0] not in "#/" and not any(c.isspace() for c in w))
rooms = words.map(room_key)
texts = st.text(st.characters(codec="utf-8"), min_size=1, max_size=40).filter(
    lambda t: t == t.strip() and t != ""
)
topics = texts.filter(lambda t: t != "-")  # "-" is how a clear is typed
moderation: st.SearchStrategy[Command] = st.one_of(
    st.just(RegisterNick()),
    # With no room named, a topic may not start with "#": that would name the room.
    st.builds(
        ModerateRoom,
        action=st.just("topic"),
        room=st.none(),
        text=topics.filter(lambda t: not t.startswith("#")) | st.just(""),
    ),
    st.builds(ModerateRoom, action=st.just("topic"), room=rooms, text=topics | st.just("")),
    st.builds(
        ModerateRoom,
        action=st.sampled_from(["invite", "uninvite"]),
        room=rooms | st.none(),
        target=words,
    ),
    st.builds(
        ModerateRoom,
        action=st.sampled_from(["kick", "ban"]),
        target=words,
        text=texts | st.just(""),
    ),
    st.builds(ModerateRoom, action=st.sampled_from(["unban", "op", "deop"]), target=words),
    st.builds(ModerateRoom, action=st.sampled_from(["private", "public"]), room=rooms | st.none()),
)


@given(moderation)
def test_format_then_parse_is_identity_for_moderation(command: Command) -> None:
    assert parse(format_command(command)) == command


@given(st.sampled_from(sorted(set(MODERATE_ACTIONS) - {"topic"})), st.text(max_size=30))
def test_any_moderation_line_parses_or_says_how(action: str, rest: str) -> None:
    try:
        command = parse(f"/{action} {rest}")
    except CommandError as exc:
        assert str(exc).startswith("usage: /") and "\n" not in str(exc)
        return
    assert isinstance(command, ModerateRoom) and command.action == action


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("/topic pay rises", ModerateRoom(action="topic", text="pay rises")),
        ("/topic #HR pay  rises ", ModerateRoom(action="topic", room="hr", text="pay  rises")),
        ("/topic #hr #1 priority", ModerateRoom(action="topic", room="hr", text="#1 priority")),
        ("/topic -", ModerateRoom(action="topic", text="")),
        ("/topic #hr -", ModerateRoom(action="topic", room="hr", text="")),
        ("/topic", WhoIs()),
        ("/topic #hr", WhoIs(room="hr")),
        ("/invite bob", ModerateRoom(action="invite", target="bob")),
        ("/invite bob #HR", ModerateRoom(action="invite", room="hr", target="bob")),
        ("/uninvite bob hr", ModerateRoom(action="uninvite", room="hr", target="bob")),
        ("/kick bob", ModerateRoom(action="kick", target="bob")),
        ("/kick bob spam  spam", ModerateRoom(action="kick", target="bob", text="spam  spam")),
        ("/ban bob flooding", ModerateRoom(action="ban", target="bob", text="flooding")),
        ("/unban bob", ModerateRoom(action="unban", target="bob")),
        ("/private", ModerateRoom(action="private")),
        ("/PUBLIC #hr", ModerateRoom(action="public", room="hr")),
        ("/op carol", ModerateRoom(action="op", target="carol")),
        ("/deop carol", ModerateRoom(action="deop", target="carol")),
        ("/register", RegisterNick()),
    ],
)
def test_moderation_examples(line: str, expected: Command) -> None:
    assert parse(line) == expected


@pytest.mark.parametrize(
    "line",
    [
        "/topic # x",
        "/invite",
        "/invite a b c",
        "/uninvite",
        "/kick",
        "/ban",
        "/unban",
        "/unban a b",
        "/op",
        "/op a b",
        "/deop",
        "/private a b",
        "/public a b",
        "/register hunter22",
    ],
)
def test_malformed_moderation_says_how(line: str) -> None:
    with pytest.raises(CommandError):
        parse(line)


def test_register_never_echoes_a_password_typed_inline() -> None:
    with pytest.raises(CommandError) as info:
        parse("/register my secret password")
    assert "secret" not in str(info.value)


def test_help_lists_the_moderation_commands() -> None:
    text = "\n".join(help_lines())
    for name in ("register", *MODERATE_ACTIONS):
        if name not in ("op", "deop"):
            assert f"/{name} " in text or f"/{name}\n" in text + "\n", name
    assert set(MODERATE_ACTIONS) <= set(COMMANDS)


# -- rendering -----------------------------------------------------------------------------------


def plain(me: str = "me") -> TextRenderer:
    return TextRenderer(lambda: me, colour=False, single_line=True)


def notice(kind: str, target: str = "", reason: str = "") -> Notice:
    return Notice(kind=kind, nick="alice", ts=0, room="hr", target=target, reason=reason)


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        (notice("topic", reason="pay rises"), "-- alice set the topic of #hr: pay rises"),
        (notice("topic"), "-- alice cleared the topic of #hr"),
        (notice("private"), "-- alice made #hr private (invite only)"),
        (notice("public"), "-- alice made #hr public"),
        (notice("invited", "bob"), "-- alice invited bob to #hr"),
        (notice("uninvited", "bob"), "-- alice withdrew the invitation of bob to #hr"),
        (notice("kicked", "bob", "spam"), "-- alice kicked bob from #hr (spam)"),
        (notice("kicked", "ME"), "-- alice kicked you from #hr"),
        (notice("banned", "bob"), "-- alice banned bob from #hr"),
        (notice("banned", "bob", "flood"), "-- alice banned bob from #hr (flood)"),
        (notice("unbanned", "bob"), "-- alice lifted the ban on bob in #hr"),
        (notice("op", "carol"), "-- alice made carol an operator of #hr"),
        (notice("deop", "carol"), "-- alice took operator rights in #hr from carol"),
        (
            Notice(kind="registered", nick="alice", ts=0),
            "-- you are now registered as alice, and logged in",
        ),
    ],
)
def test_each_moderation_notice_reads_as_a_sentence(event: Notice, expected: str) -> None:
    line = plain().render(event)
    assert line is not None and line.endswith(expected), line
    record = event_record(event)
    assert record is not None and record["target"] == event.target
    assert json.loads(json_line(record)) == record


def test_a_hostile_topic_is_shown_on_one_line_not_obeyed() -> None:
    line = plain().render(notice("topic", reason="\x1b[2Jwiped\nsecond line"))
    assert line is not None and "\x1b" not in line and "\n" not in line


def test_members_show_the_topic_after_a_join() -> None:
    members = Members(room="hr", nicks=["alice", "bob"], topic="pay rises", private=True)
    line = plain().render(members)
    assert line is not None
    first, second = line.split("\n")
    assert first.endswith("-- #hr (private): 2 here: alice, bob")
    assert second.endswith("-- topic of #hr: pay rises")
    assert plain().render(Members(room="hr", nicks=["a"])) == "         -- #hr: 1 here: a"
    record = event_record(members)
    assert record is not None
    assert (record["topic"], record["private"], record["owner"], record["ops"]) == (
        "pay rises",
        True,
        "",
        [],
    )


def test_the_welcome_line_says_who_is_logged_in() -> None:
    welcome = Welcome(protocol=1, server="s", version="v", nick="alice", token="t")
    assert welcome_text(welcome) == "alice"
    logged_in = Welcome(protocol=1, server="s", version="v", nick="al", token="t", account="Al")
    assert welcome_text(logged_in) == "al, logged in as Al"


# -- against a real server -----------------------------------------------------------------------


def register(addr: tuple[str, int], name: str, password: str = PASSWORD) -> None:
    servers.register(addr, name, password)


@pytest.fixture
def accounts() -> Iterator[tuple[str, int]]:
    with running_server(registration=Registration.open) as addr:
        register(addr, "alice")
        yield addr


class PipeJoin(JoinProcess):
    """`chatctl join` in a pipe, logged in through CHATCTL_PASSWORD."""

    def __init__(self, port: int, *args: str) -> None:
        super().__init__(port, *args, stdin=True, env={**os.environ, PASSWORD_VAR: PASSWORD})


@pytest.fixture
def owner(accounts: tuple[str, int]) -> Iterator[PipeJoin]:
    """alice in a pipe, logged in, owner of #hr (she made it)."""
    alice = PipeJoin(accounts[1], "--account", "alice", "-r", "hr")
    try:
        alice.expect("#hr: 1 here: alice")
        yield alice
    finally:
        alice.kill()


def test_an_owner_runs_a_room_from_a_pipe(accounts: tuple[str, int], owner: PipeJoin) -> None:
    owner.send("/topic pay rises")
    owner.expect("-- alice set the topic of #hr: pay rises")
    owner.send("/private")
    owner.expect("-- alice made #hr private (invite only)")
    with joined(accounts, "bob", "lobby") as bob:
        owner.send("/invite bob")
        owner.expect("-- alice invited bob to #hr")
        invited = wait_for(bob, Notice, lambda n: n.kind == "invited")
        assert (invited.nick, invited.target, invited.room) == ("alice", "bob", "hr")
        bob.join("hr")
        members = wait_for(bob, Members, lambda m: m.room == "hr")
        assert (members.topic, members.private, members.owner) == ("pay rises", True, "alice")
        assert "-- topic of #hr: pay rises" in (plain("bob").render(members) or "")
        owner.expect("#hr bob joined")
        owner.send("/kick bob spam")
        owner.expect("-- alice kicked bob from #hr (spam)")
        kicked = wait_for(bob, Notice, lambda n: n.kind == "kicked")
        assert "alice kicked you from #hr (spam)" in (plain("bob").render(kicked) or "")
        assert bob.rooms == ("lobby",)  # out, and a reconnect will not rejoin it
    code, stderr = owner.finish(close_stdin=True)
    assert code == 0, stderr


def test_a_non_member_is_turned_away_from_a_private_room(
    accounts: tuple[str, int], owner: PipeJoin
) -> None:
    owner.send("/private")
    owner.expect("made #hr private")
    result = run_chatctl("join", "-p", str(accounts[1]), "-n", "carol", "-r", "hr", stdin="")
    assert "!! #hr is private: members need an invitation (not_permitted)" in result.stdout
    # A guest is no owner: its moderation is refused in words, too.
    result = run_chatctl(
        "join", "-p", str(accounts[1]), "-n", "carol", "-r", "lobby", stdin="/private\n"
    )
    assert "(not_permitted)" in result.stdout, result.stdout


def test_moderation_notices_in_json_lines(accounts: tuple[str, int]) -> None:
    result = subprocess.run(
        [
            *(sys.executable, "-m", "chatctl", "join", "-p", str(accounts[1])),
            *("--account", "alice", "-r", "hr", "--format", "json"),
        ],
        input="/topic from the pipe\n/invite dave\n/public\n/who\n",
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, PASSWORD_VAR: PASSWORD},
        check=False,
    )
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    notices = {r["kind"]: r for r in records if r["type"] == "notice"}
    assert notices["topic"]["reason"] == "from the pipe"
    assert notices["invited"]["target"] == "dave" and notices["invited"]["nick"] == "alice"
    assert notices["public"]["room"] == "hr"
    members = [r for r in records if r["type"] == "members" and r["room"] == "hr"]
    assert members[-1]["topic"] == "from the pipe" and members[-1]["owner"] == "alice"


def test_register_in_a_pipe_says_where_to_do_it(accounts: tuple[str, int]) -> None:
    result = run_chatctl("join", "-p", str(accounts[1]), "-n", "erin", stdin="/register\n")
    assert result.returncode == 0, result.stderr
    assert PIPE_REGISTER in result.stdout


def test_register_on_a_terminal_asks_twice_and_logs_in(accounts: tuple[str, int]) -> None:
    with joined(accounts, "frank", "lobby") as frank:
        answers = iter([PASSWORD, PASSWORD])
        chat = Chat(frank, "lobby", ask_password=lambda: next(answers))
        assert chat.run_line("/register").info == []
        done = wait_for(frank, Notice, lambda n: n.kind == "registered")
        assert done.nick == "frank" and frank.account == "frank"
        assert chat.run_line("/register").info == ["you are already logged in as frank"]


def test_a_too_short_password_is_refused_before_it_is_sent(accounts: tuple[str, int]) -> None:
    with joined(accounts, "gina", "lobby") as gina:
        chat = Chat(gina, "lobby", ask_password=lambda: "short")
        [info] = chat.run_line("/register").info
        assert info.startswith("not registered: a password has at least")
        assert gina.account == ""


def test_after_a_kick_the_current_room_is_gone(accounts: tuple[str, int], owner: PipeJoin) -> None:
    with joined(accounts, "hank", "hr") as hank:
        owner.expect("#hr hank joined")
        chat = Chat(hank, "hr")
        owner.send("/kick hank")
        wait_for(hank, Notice, lambda n: n.kind == "kicked")
        [info] = chat.run_line("still here?").info
        assert info == "you are not in #hr any more: /join ROOM"


# -- on a terminal ---------------------------------------------------------------------------------


@pytest.fixture
def terminal_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, int]]:
    """A server with `alice` registered, and no CHATCTL_PASSWORD: a terminal asks."""
    monkeypatch.delenv(PASSWORD_VAR, raising=False)
    with running_server(registration=Registration.open) as addr:
        register(addr, "alice")
        yield addr


def test_a_terminal_asks_for_the_password_and_says_who_is_logged_in(
    terminal_server: tuple[str, int],
) -> None:
    term = Terminal("-p", str(terminal_server[1]), "--account", "alice")
    try:
        term.wait_text("Password for alice@127.0.0.1:")
        term.send(PASSWORD + "\r")
        term.wait_text("as alice, logged in as alice")
        assert PASSWORD not in term.text  # not echoed
        term.wait_text("#lobby alice>")
    finally:
        term.close()


def test_register_on_a_terminal_asks_twice(terminal_server: tuple[str, int]) -> None:
    term = Terminal("-p", str(terminal_server[1]), "-n", "zed")
    try:
        term.wait_text("#lobby zed>")
        term.send("/register\r")
        term.wait_text("New password for zed@127.0.0.1:")
        term.send(PASSWORD + "\r")
        term.wait_text("Same password again:")
        term.send(PASSWORD + "\r")
        term.wait_text("-- you are now registered as zed, and logged in")
        assert PASSWORD not in term.text
    finally:
        term.close()
