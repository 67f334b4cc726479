"""Which window each event goes to, and the terminal's own commands (chatctl/ui/chatscreen.py),
driven with events directly: no terminal, no server."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import cast

import pytest

from chatctl.client.connection import Client
from chatctl.client.events import Disconnected
from chatctl.protocol import DirectMessage, Members, Message, Notice
from chatctl.ui.chatscreen import ChatScreen
from chatctl.ui.logs import ChatLogs
from chatctl.ui.screen import plain
from chatctl.ui.windows import Level


class FakeClient:
    """What ChatScreen reads of a Client."""

    def __init__(self) -> None:
        self.nick = "alice"
        self.account = ""
        self.joined: list[str] = []
        self.addr = "127.0.0.1:1060"
        self.host = "127.0.0.1"
        self.welcome = None
        self.connected = True

    @property
    def rooms(self) -> tuple[str, ...]:
        return tuple(self.joined)

    def joining(self, room: str) -> bool:
        return False


def ms(day: int, hour: int = 12) -> int:
    return int(datetime(2026, 3, day, hour).timestamp() * 1000)


def make(
    rooms: tuple[str, ...] = ("lobby", "dev"), logs: ChatLogs | None = None
) -> tuple[ChatScreen, FakeClient]:
    client = FakeClient()
    screen = ChatScreen(cast(Client, client), list(rooms), depth="none", logs=logs)
    for room in rooms:  # the server confirms each join
        client.joined.append(room)
        screen.on_event(Notice(kind="joined", nick="alice", room=room, ts=ms(3)))
        screen.on_event(Members(room=room, nicks=["alice", "bob"]))
    return screen, client


def texts(screen: ChatScreen, number: int) -> list[str]:
    window = screen.windows.get(number)
    assert window is not None
    return [plain(line) for entry in window.lines for line in screen_lines(screen, entry)]


def screen_lines(screen: ChatScreen, entry: object) -> list[list[tuple[str, str]]]:
    from chatctl.ui.screen import Entry, layout

    assert isinstance(entry, Entry)
    return layout(entry, 200, screen.timestamp, screen.mark)


def test_rooms_open_their_windows_once_joined_and_the_first_is_shown() -> None:
    screen, _ = make()
    assert [(w.kind, w.name) for w in screen.windows] == [
        ("status", "status"),
        ("room", "lobby"),
        ("room", "dev"),
    ]
    assert screen.windows.active == 2
    assert any("#dev alice joined" in t for t in texts(screen, 3))
    assert screen.windows.activity() == []  # our own joins are no news


def test_messages_go_to_their_room_and_raise_its_activity() -> None:
    screen, _ = make()
    screen.on_event(Message(room="dev", seq=1, ts=ms(3), sender="bob", text="hi"))
    screen.on_event(Message(room="dev", seq=2, ts=ms(3), sender="bob", text="old", history=True))
    dev = screen.windows.get(3)
    assert dev is not None and (dev.unread, dev.level) == (1, Level.MESSAGE)
    screen.on_event(Message(room="dev", seq=3, ts=ms(3), sender="bob", text="Alice: look"))
    assert (dev.unread, dev.level) == (2, Level.MENTION)
    screen.on_event(Message(room="lobby", seq=1, ts=ms(3), sender="bob", text="alice!"))
    assert screen.status_line()[-1][1].endswith("Ctrl-D quits")
    assert screen.activity_text() == "[Act: 3(2)!]"  # the shown window has no activity


def test_a_direct_message_opens_its_partners_window() -> None:
    screen, _ = make()
    screen.on_event(DirectMessage(sender="carol", to="alice", ts=ms(3), text="psst"))
    carol = screen.windows.find("query", "CAROL")
    assert carol is not None and screen.windows.number(carol) == 4
    assert (carol.unread, carol.level) == (1, Level.MENTION)
    assert screen.windows.active == 2  # not shown until asked for


def test_our_part_closes_the_window_and_a_kick_leaves_it_marked() -> None:
    screen, client = make()
    screen.windows.activate(3)
    client.joined.remove("dev")
    screen.on_event(Notice(kind="left", nick="alice", room="dev", ts=ms(3)))
    assert screen.windows.find("room", "dev") is None
    assert screen.windows.current.name == "lobby"  # the one shown before
    assert any("#dev alice left" in t for t in texts(screen, 2))
    client.joined.remove("lobby")
    screen.on_event(
        Notice(kind="kicked", nick="op", room="lobby", target="alice", reason="x", ts=ms(3))
    )
    lobby = screen.windows.find("room", "lobby")
    assert lobby is not None and not lobby.joined
    assert "(not joined)" in plain(screen.title_line())
    assert "lobby" not in screen.members


def test_a_rename_follows_the_nick_where_it_is() -> None:
    screen, _ = make()
    screen.on_event(DirectMessage(sender="bob", to="alice", ts=ms(3), text="psst"))
    screen.on_event(Notice(kind="renamed", nick="bob", new_nick="robert", ts=ms(3)))
    assert screen.windows.find("query", "robert") is not None
    assert screen.windows.find("query", "bob") is None
    assert any("bob is now robert" in t for t in texts(screen, 2))
    assert screen.members["dev"]["robert"] == "robert"


def test_a_day_change_line_between_days() -> None:
    screen, _ = make()
    screen.on_event(Message(room="lobby", seq=1, ts=ms(3, 23), sender="bob", text="late"))
    screen.on_event(Message(room="lobby", seq=2, ts=ms(4, 1), sender="bob", text="early"))
    lines = texts(screen, 2)
    late = next(i for i, t in enumerate(lines) if "late" in t)
    assert "-- day changed to Wednesday 04 March 2026" in lines[late + 1]
    assert "early" in lines[late + 2]


def test_connection_news_goes_to_the_status_window_and_the_shown_one() -> None:
    screen, _ = make()
    screen.on_event(Disconnected(reason="reset", retrying=True))
    assert screen.status == "reconnecting: reset"
    assert any("connection lost: reset; reconnecting" in t for t in texts(screen, 1))
    assert any("connection lost" in t for t in texts(screen, 2))
    assert not any("connection lost" in t for t in texts(screen, 3))


def test_the_terminals_own_commands() -> None:
    screen, _ = make()
    lobby = screen.windows.current

    def run(line: str) -> list[str]:
        before = len(lobby.lines)
        screen.run_line(line, lobby)
        return texts(screen, screen.windows.number(lobby))[before:]

    assert run("/whois BOB") == [" " * 9 + "-- bob is in #dev, #lobby (of your rooms)"]
    run("/ignore bob")
    screen.on_event(Message(room="lobby", seq=1, ts=ms(3), sender="Bob", text="spam"))
    assert not any("spam" in t for t in texts(screen, 2))
    assert "you ignore bob" in run("/ignore")[0]
    run("/unignore bob")
    run("/away lunch")
    assert "[alice (away)]" in plain(screen.status_line())
    screen.on_event(DirectMessage(sender="carol", to="alice", ts=ms(3), text="psst"))
    assert "named or written to once while away, in window 4" in run("/away")[0]
    screen.run_line("/window 4", lobby)
    assert screen.windows.current.name == "carol"
    screen.run_line("/window goto #dev", lobby)
    assert screen.windows.current.name == "dev"
    with pytest.raises(Exception, match="there is no window 9"):
        screen.run_line("/window 9", lobby)
    listing = run("/window list")
    assert [t.split("-- ")[1] for t in listing] == [
        " 1 (status)",
        " 2 #lobby",
        "*3 #dev",
        " 4 @carol (direct messages)",
    ]
    screen.run_line("/clear", lobby)
    assert not lobby.lines


def test_logs_keep_what_was_said_not_replays(tmp_path: Path) -> None:
    logs = ChatLogs(tmp_path)
    screen, _ = make(("lobby",), logs=logs)
    screen.on_event(Message(room="lobby", seq=1, ts=ms(3), sender="bob", text="old", history=True))
    screen.on_event(Message(room="lobby", seq=2, ts=ms(3), sender="bob", text="new"))
    screen.on_event(Message(room="lobby", seq=3, ts=ms(4), sender="bob", text="next day"))
    first = (tmp_path / "lobby.2026-03-03.log").read_text().splitlines()
    assert first[0].endswith("-- #lobby alice joined")
    assert first[-1] == "12:00:00 <bob> new"
    assert (tmp_path / "lobby.2026-03-04.log").read_text() == "12:00:00 <bob> next day\n"


def test_completion_of_commands_aliases_and_their_arguments() -> None:
    from prompt_toolkit.completion import CompleteEvent
    from prompt_toolkit.document import Document

    from chatctl.ui.tui import ChatCompleter

    screen, _ = make()
    screen.on_event(Message(room="lobby", seq=1, ts=ms(3), sender="bobby", text="hi"))
    completer = ChatCompleter(screen)

    def complete(text: str) -> list[str]:
        found = completer.get_completions(Document(text), CompleteEvent(completion_requested=True))
        return [c.text for c in found]

    assert complete("/wh") == ["/who ", "/whois "]
    assert complete("/lea") == ["/leave "]
    assert complete("/help wi") == ["wi", "win", "window"]
    assert complete("/window n") == ["next"]
    assert complete("/j #l") == ["#lobby"]
    assert complete("/names d") == ["#dev"]
    assert complete("/query bo") == ["bob", "bobby"]
    assert complete("/msg bob hi bo") == ["bob", "bobby"]
    assert complete("bo") == ["bob: ", "bobby: "]
    assert complete("hello @bo") == ["@bob", "@bobby"]
