"""`chatctl join` on a real pseudo-terminal (pexpect), its screen rebuilt by a terminal
emulator (pyte), so the tests look at what a person would see: windows, the activity list,
the wrap, a resize, a reconnect."""

from __future__ import annotations

import os
import re
import signal
import stat
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pexpect
import pyte
import pytest

from chatctl.client.connection import Client
from chatctl.protocol import DirectMessage, Message, Notice
from chatctl.ui.screen import MARK
from tests.clients import joined, wait_for
from tests.servers import serve_process

ROWS, COLS = 24, 100
WAIT = 15.0


class Terminal:
    """`chatctl join ARGS` in a pty of ROWS x COLS, and the screen it draws."""

    def __init__(
        self, *args: str, env: dict[str, str] | None = None, rows: int = ROWS, cols: int = COLS
    ) -> None:
        self.child = pexpect.spawn(
            sys.executable,
            ["-m", "chatctl", "join", *args],
            dimensions=(rows, cols),
            env={**os.environ, "TERM": "xterm", "LOGNAME": "tester", **(env or {})},
            encoding="utf-8",
            codec_errors="replace",
        )
        terminal = self

        class Screen(pyte.Screen):
            def write_process_input(self, data: str) -> None:
                terminal.child.send(data)  # answers cursor-position requests, as a terminal does

        self.screen = Screen(cols, rows)
        self.stream = pyte.Stream(self.screen)

    def resize(self, rows: int, cols: int) -> None:
        """As a terminal window resized: the screen, then the pty (which signals SIGWINCH)."""
        self._pump(0.05)
        self.screen.resize(rows, cols)
        self.child.setwinsize(rows, cols)

    def _pump(self, timeout: float) -> None:
        try:
            self.stream.feed(self.child.read_nonblocking(65536, timeout=timeout))
        except pexpect.TIMEOUT:
            pass

    @property
    def lines(self) -> list[str]:
        return [line.rstrip() for line in self.screen.display]

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    def input_line(self) -> str:
        """The prompt line: the last line that starts like the prompt."""
        prompts = [line for line in self.lines if re.match(r"^[#@(]\S* \S+>( |$)", line)]
        return prompts[-1] if prompts else ""

    def status_line(self) -> str:
        """The status line: the last that starts like it (` [N:window]`)."""
        found = [line for line in self.lines if re.match(r"^ ?(\S.*? )?\[\d+:", line)]
        return found[-1] if found else ""

    def title(self) -> str:
        return self.lines[0]

    def shows_window(self, number: int, name: str) -> Callable[[], bool]:
        """Whether window `number`, `name` (#room, @nick), is the one shown."""
        return lambda: (
            f"[{number}:{name}]" in self.status_line() and self.input_line().startswith(name + " ")
        )

    def wait(self, check: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if check():
                return
            self._pump(0.05)
        raise AssertionError(f"screen never showed {what}:\n{self.text}")

    def wait_text(self, text: str, timeout: float = WAIT) -> None:
        self.wait(lambda: text in self.text, repr(text), timeout)

    def send(self, data: str) -> None:
        self.child.send(data)

    def wait_exit(self, timeout: float = WAIT) -> int:
        deadline = time.monotonic() + timeout
        while self.child.isalive() and time.monotonic() < deadline:
            try:
                self._pump(0.05)
            except pexpect.EOF:
                break
        self.child.wait()
        status: int = self.child.exitstatus
        return status

    def close(self) -> None:
        self.child.close(force=True)


@pytest.fixture
def bob(server: tuple[str, int]) -> Iterator[Client]:
    with joined(server, "bob", "lobby") as client:
        yield client


@pytest.fixture
def alice(server: tuple[str, int], bob: Client) -> Iterator[Terminal]:
    term = Terminal("-p", str(server[1]), "-n", "alice")
    try:
        term.wait_text("#lobby alice>")
        wait_for(bob, Notice, lambda n: n.kind == "joined" and n.nick == "alice")
        yield term
    finally:
        term.close()


def test_a_line_being_typed_survives_arriving_messages(alice: Terminal, bob: Client) -> None:
    alice.send("hello wor")
    alice.wait(lambda: alice.input_line().endswith("hello wor"), "the half-typed line")
    for i in range(30):  # enough to scroll the screen while the line is being typed
        bob.say("lobby", f"interruption {i}")
    alice.wait_text("<bob> interruption 29")

    def intact_below_the_messages() -> bool:
        # Output is printed above the prompt, which is then redrawn with the buffer intact.
        lines = alice.lines
        prompt = [i for i, line in enumerate(lines) if line == "#lobby alice> hello wor"]
        said = [i for i, line in enumerate(lines) if "interruption" in line]
        return bool(prompt and said) and prompt[-1] > said[-1]

    alice.wait(intact_below_the_messages, "the typed line intact below the messages")
    alice.send("ld\r")
    message = wait_for(bob, Message, lambda m: m.sender == "alice")
    assert message.text == "hello world"
    alice.wait_text("<alice> hello world")


def test_slash_commands(alice: Terminal, bob: Client) -> None:
    alice.send("/who\r")
    alice.wait_text("#lobby: 2 here: alice, bob")
    alice.send("/msg bob psst\r")
    assert wait_for(bob, DirectMessage).text == "psst"
    alice.send("/nick alicia\r")
    renamed = wait_for(bob, Notice, lambda n: n.kind == "renamed")
    assert renamed.new_nick == "alicia"
    alice.wait_text("#lobby alicia>")
    alice.send("/join dev\r")
    alice.wait_text("#dev alicia>")
    alice.send("/help\r")
    # The help's last lines: its first ones may already have scrolled off a small screen
    # (whether one still sees them depends on when the screen is looked at).
    alice.wait_text("/help [COMMAND]")
    alice.wait_text("//TEXT")
    alice.send("/quit see you\r")
    left = wait_for(bob, Notice, lambda n: n.kind == "left")
    assert (left.nick, left.reason) == ("alicia", "see you")
    assert alice.wait_exit() == 0


def test_tab_completes_commands_and_nicks(alice: Terminal, bob: Client) -> None:
    bob.say("lobby", "hi")
    alice.wait_text("<bob> hi")
    alice.send("/wh\t")
    alice.wait(lambda: alice.input_line().endswith("/who"), "/who completed")
    alice.send("\x15b\t")  # Ctrl-U clears the line
    alice.wait(lambda: alice.input_line().endswith("bob:"), "bob completed")
    alice.send("yes\r")  # the completion ends with ": "
    assert wait_for(bob, Message).text == "bob: yes"
    alice.send("/msg bob first\r")
    wait_for(bob, DirectMessage)
    alice.send("\x1b[A")  # up arrow: input history
    alice.wait(lambda: alice.input_line().endswith("/msg bob first"), "the previous line")
    alice.send("\x15/who #lo\t")
    alice.wait(lambda: alice.input_line().endswith("/who #lobby"), "a room completed")


def test_a_long_paste_is_one_message_after_confirmation(alice: Terminal, bob: Client) -> None:
    alice.send("\x1b[200~short\npaste\x1b[201~\r")  # at most 5 lines: sent at once
    assert wait_for(bob, Message).text == "short\npaste"
    lines = [f"line {i}" for i in range(8)]
    alice.send("\x1b[200~" + "\n".join(lines) + "\x1b[201~\r")  # a bracketed paste
    alice.wait_text("Send these 8 lines as one message?")
    alice.send("y")
    message = wait_for(bob, Message)
    assert message.text == "\n".join(lines)


@pytest.mark.parametrize("key", ["\x04", "\x03"], ids=["ctrl-d", "ctrl-c"])
def test_ctrl_d_and_ctrl_c_leave_cleanly(alice: Terminal, bob: Client, key: str) -> None:
    alice.send(key)
    wait_for(bob, Notice, lambda n: n.kind == "left" and n.nick == "alice")
    assert alice.wait_exit() == 0


def test_asks_for_a_nick_defaulting_to_the_login_name(server: tuple[str, int], bob: Client) -> None:
    term = Terminal("-p", str(server[1]))
    try:
        term.wait_text("nick [tester]:")
        term.send("\r")
        term.wait_text("#lobby tester>")
        wait_for(bob, Notice, lambda n: n.kind == "joined" and n.nick == "tester")
    finally:
        term.close()


def test_reconnects_without_losing_the_typed_line(tmp_path: Path) -> None:
    data = str(tmp_path / "data")
    with serve_process("--data", data) as first:
        port = first.port
        term = Terminal("-p", str(port), "-n", "alice")
        try:
            term.wait_text("#lobby alice>")
            term.send("a draft")
            term.wait(lambda: term.input_line().endswith("a draft"), "the draft")
            first.proc.kill()
            term.wait_text("connection lost")
            term.wait_text("reconnecting")  # the status line
            term.wait(lambda: term.input_line().endswith("a draft"), "the draft kept")
            with serve_process("--port", str(port), "--data", data):
                # Which server: with several addresses it may be another one than before.
                term.wait_text(f"reconnected to 127.0.0.1:{port} as alice", timeout=3 * WAIT)
                term.wait(lambda: "reconnecting" not in term.status_line(), "the status cleared")
                term.wait(lambda: term.input_line() == "#lobby alice> a draft", "the draft kept")
                with joined(("127.0.0.1", port), "bob", "lobby") as bob:
                    term.send("\r")
                    assert wait_for(bob, Message).text == "a draft"
        finally:
            term.close()


def test_a_refused_join_leaves_the_prompt_and_toolbar_alone(alice: Terminal) -> None:
    def prompt() -> str:
        return next((ln for ln in reversed(alice.lines) if " alice>" in ln), "")

    alice.send("/join bad!room\r")
    alice.wait_text("'bad!room' is not a valid room name")
    alice.wait(lambda: prompt() == "#lobby alice>", "the prompt in #lobby")
    assert "#bad!room" not in alice.text  # neither the prompt nor the toolbar lists it
    alice.send("/join dev\r")
    alice.wait(lambda: prompt() == "#dev alice>", "the prompt in #dev")
    # The status line, once the server confirmed the join: #dev's window is the third.
    alice.wait(lambda: "[3:#dev]" in alice.status_line(), "window 3, #dev")


def test_sigterm_leaves_cleanly_and_exits_zero(alice: Terminal, bob: Client) -> None:
    alice.child.kill(signal.SIGTERM)
    assert alice.wait_exit() == 0
    wait_for(bob, Notice, lambda n: n.kind == "left" and n.nick == "alice")


# -- windows ---------------------------------------------------------------------------------


@pytest.fixture
def alice2(server: tuple[str, int], bob: Client) -> Iterator[Terminal]:
    """alice in #lobby (window 2, shown) and #dev (window 3); bob is in #lobby."""
    term = Terminal("-p", str(server[1]), "-n", "alice", "-r", "lobby", "-r", "dev")
    try:
        term.wait(term.shows_window(2, "#lobby"), "#lobby shown")
        open_windows(term, 3)
        term.send("\x1b2")
        term.wait(term.shows_window(2, "#lobby"), "#lobby shown again")
        wait_for(bob, Notice, lambda n: n.kind == "joined" and n.nick == "alice")
        yield term
    finally:
        term.close()


def open_windows(term: Terminal, count: int) -> None:
    """Wait until window `count` is open (our own joins make no activity to see): Alt-N
    shows it once it is."""
    deadline = time.monotonic() + WAIT
    while f"[{count}:" not in term.status_line():
        assert time.monotonic() < deadline, f"no window {count}:\n{term.text}"
        term.send(f"\x1b{count}")
        term._pump(0.1)


def _said(bob: Client) -> list[object]:
    seen: list[object] = []
    bob.sync(WAIT)
    while (event := bob.next_event(0)) is not None:
        seen.append(event)
    return seen


def test_switching_windows_with_keys_and_commands(alice2: Terminal, bob: Client) -> None:
    alice = alice2
    steps = [
        ("\x1b3", 3, "#dev"),  # Alt-3
        ("\x1b[1;3D", 2, "#lobby"),  # Alt-Left
        ("\x0e", 3, "#dev"),  # Ctrl-N
        ("\x0e", 1, "(status)"),  # Ctrl-N wraps around
        ("\x10", 3, "#dev"),  # Ctrl-P
        ("\x1b[1;3C", 1, "(status)"),  # Alt-Right
        ("\x1b2", 2, "#lobby"),
        ("/window 3\r", 3, "#dev"),
        ("/window goto #lobby\r", 2, "#lobby"),
        ("/win prev\r", 1, "(status)"),
        ("/window next\r", 2, "#lobby"),
    ]
    for keys, number, name in steps:
        alice.send(keys)
        alice.wait(alice.shows_window(number, name), f"window {number}, {name}, after {keys!r}")
        assert alice.title().startswith(f" {name}" if name[0] == "#" else " chatctl")
    alice.send("/window 9\r")
    alice.wait_text("there is no window 9 (1 to 3)")
    # Each window has its own lines, and switching never asks the server for anything:
    # no join, so no replay, and nobody sees alice join again.
    alice.send("\x1b3")
    alice.wait(alice.shows_window(3, "#dev"), "#dev")
    assert alice.text.count("#dev alice joined") == 1
    assert "lobby" not in "\n".join(alice.lines[1:-2])
    assert not [e for e in _said(bob) if isinstance(e, Notice) and e.nick == "alice"]


def test_the_activity_list_on_a_message_and_a_mention(
    alice2: Terminal, bob: Client, server: tuple[str, int]
) -> None:
    alice = alice2
    bob.join("dev")
    wait_for(bob, Notice, lambda n: n.kind == "joined" and n.room == "dev")
    alice.wait(lambda: "[Act: 3]" in alice.status_line(), "#dev's event (bob joined)")
    bob.say("dev", "just chatting")
    alice.wait(lambda: "[Act: 3(1)]" in alice.status_line(), "one message in #dev")
    bob.say("dev", "alice: have a look")
    alice.wait(lambda: "[Act: 3(2)!]" in alice.status_line(), "a mention in #dev")
    assert "have a look" not in alice.text  # it is in #dev's window, not the one shown
    bob.say("lobby", "here")  # in the shown window: no activity
    alice.wait_text("<bob> here")
    with joined(server, "carol") as carol:
        carol.tell("alice", "psst")
        alice.wait(lambda: "[Act: 3(2)!,4(1)!]" in alice.status_line(), "a direct message")
    alice.send("\x1b3")
    alice.wait(lambda: "[Act: 4(1)!]" in alice.status_line(), "#dev's activity seen")
    alice.wait_text("<bob> alice: have a look")
    alice.send("\x1b4")
    alice.wait(alice.shows_window(4, "@carol"), "carol's window")
    alice.wait_text("<carol> psst")
    assert "[Act:" not in alice.status_line()


def test_query_opens_a_window_for_direct_messages(alice2: Terminal, bob: Client) -> None:
    alice = alice2
    alice.send("/query bob\r")
    alice.wait(alice.shows_window(4, "@bob"), "bob's window")
    assert alice.title().startswith(" bob: direct messages")
    alice.send("hello bob\r")  # plain text in a query window is a direct message
    message = wait_for(bob, DirectMessage)
    assert (message.text, message.sender) == ("hello bob", "alice")
    alice.wait_text("<alice> hello bob")
    bob.tell("alice", "hi alice")
    alice.wait_text("<bob> hi alice")
    assert "[Act:" not in alice.status_line()  # shown as it came
    alice.send("/who\r")
    alice.wait_text("this window is a conversation with bob, not a room")
    alice.send("\x1b2/q\r")  # /q alone in #lobby: nothing to close
    alice.wait_text("usage: /query NICK [TEXT]")
    alice.send("\x1b4/query\r")  # in bob's window: closes it
    alice.wait(
        lambda: "[4:" not in alice.status_line() and "@bob" not in alice.input_line(), "closed"
    )


def test_commands_irssi_users_type(alice2: Terminal, bob: Client) -> None:
    alice = alice2
    alice.send("/jion x\r")
    alice.wait_text("unknown command /jion: did you mean /join?")
    alice.send("/help j\r")
    alice.wait_text("/join ROOM  join a room and go to its window")
    alice.wait_text("also: /j")
    alice.send("/names\r")
    alice.wait_text("#lobby: 2 here: alice, bob")
    alice.send("/whois bob\r")
    alice.wait_text("bob is in #lobby (of your rooms)")
    alice.send("/away lunch\r")
    alice.wait(lambda: "[alice (away)]" in alice.status_line(), "away in the status line")
    bob.say("lobby", "alice, are you there?")
    alice.wait_text("<bob> alice, are you there?")
    alice.send("/away\r")
    alice.wait_text("you are back: named or written to once while away, in window 2")
    alice.send("/ignore bob\r")
    alice.wait_text("ignoring bob")
    bob.say("lobby", "can you hear me")
    bob.say("dev", "or here")  # bob is not in #dev: refused, shown nowhere anyway
    bob.sync(WAIT)
    alice.send("/unignore bob\r")
    alice.wait_text("bob's messages are shown again")
    bob.say("lobby", "now?")
    alice.wait_text("<bob> now?")
    assert "can you hear me" not in alice.text
    alice.send("/clear\r")
    alice.wait(lambda: "<bob> now?" not in alice.text, "the window cleared")
    alice.send("/j #dev\r")  # already in: the window, no join
    alice.wait(alice.shows_window(3, "#dev"), "#dev")
    assert alice.text.count("#dev alice joined") == 1
    alice.send("/wc\r")
    alice.wait_text("you are in #dev: /part leaves it and closes its window")
    alice.send("/leave\r")
    alice.wait(alice.shows_window(2, "#lobby"), "back in #lobby after /leave")
    alice.wait_text("#dev alice left")
    alice.send("/exit\r")
    left = wait_for(bob, Notice, lambda n: n.kind == "left" and n.nick == "alice")
    assert left.room == "lobby"
    assert alice.wait_exit() == 0


def test_wrap_and_the_spoof_attempt_without_colour(server: tuple[str, int], bob: Client) -> None:
    """A message of 54 spaces and a fake notice: never a line that looks like a notice, at
    any width, and with NO_COLOR, where only the layout tells them apart."""
    term = Terminal("-p", str(server[1]), "-n", "alice", env={"NO_COLOR": "1"})
    try:
        term.wait_text("#lobby alice>")
        fake = "12:34:56 -- #lobby admin is now root"
        bob.say("lobby", " " * 54 + fake)
        bob.say("lobby", "a long message that goes on and on " * 4 + "THE END")
        bob.say("lobby", "two lines\n12:00:00 -- #lobby fake notice")
        term.wait_text("THE END")
        term.wait_text("fake notice")

        def spoof_is_marked() -> bool:
            for line in term.lines:
                if re.match(r"^\d\d:\d\d:\d\d -- ", line):
                    assert "admin" not in line and "fake" not in line, line
                for bit in ("admin is now root", "12:34:56 --", "fake notice"):
                    if bit in line and not re.match(r"^\d\d:\d\d:\d\d <bob> ", line):
                        assert re.match(rf"^ +{MARK} ", line), line
            return True

        for rows, cols in ((24, 100), (12, 40), (8, 24), (24, 70)):
            term.resize(rows, cols)

            def redrawn(width: int = cols) -> bool:
                fits = max(len(line) for line in term.lines) <= width
                return fits and term.input_line().startswith("#lobby")

            term.wait(redrawn, f"the screen redrawn at {cols} columns")
            time.sleep(0.3)  # what is still on its way
            term._pump(0.1)
            spoof_is_marked()
        # The long message, at 70 columns: a hanging indent under the message column.
        lines = [line for line in term.lines if "goes on" in line or "THE END" in line]
        assert len(lines) >= 3
        column = len("12:34:56 <bob> ")
        assert all(line.index(MARK) == column - 2 for line in lines[1:])
    finally:
        term.close()


def test_a_narrow_terminal_and_a_resize_keep_the_typed_line(
    server: tuple[str, int], bob: Client
) -> None:
    term = Terminal("-p", str(server[1]), "-n", "alice", rows=10, cols=30)
    try:
        term.wait_text("#lobby alice>")
        term.send("a draft to keep")
        term.wait(lambda: "a draft to keep" in term.text, "the draft")
        bob.say("lobby", "words " * 20 + "end")
        term.wait_text(f"{MARK} words words")  # wrapped in 30 columns
        term.wait_text("end")
        term.resize(30, 120)
        term.wait_text("<bob> words words words words words words words words words")
        term.wait(lambda: term.input_line() == "#lobby alice> a draft to keep", "the draft")
        term.wait(lambda: "[2:#lobby]" in term.status_line(), "the status line")
        term.send("\r")
        assert wait_for(bob, Message).text == "a draft to keep"
    finally:
        term.close()


def test_a_reconnect_keeps_the_windows_and_the_draft(tmp_path: Path) -> None:
    data = str(tmp_path / "data")
    with serve_process("--data", data) as first:
        port = first.port
        term = Terminal("-p", str(port), "-n", "alice", "-r", "lobby", "-r", "dev")
        try:
            term.wait(term.shows_window(2, "#lobby"), "#lobby")
            open_windows(term, 3)
            term.send("/query bob\r")
            term.wait(term.shows_window(4, "@bob"), "bob's window")
            term.send("\x1b3")
            term.wait(term.shows_window(3, "#dev"), "#dev")
            term.send("a draft")
            term.wait(lambda: term.input_line().endswith("a draft"), "the draft")
            first.proc.kill()
            term.wait(lambda: "reconnecting" in term.status_line(), "reconnecting")
            term.wait_text("connection lost")
            with serve_process("--port", str(port), "--data", data):
                term.wait_text(f"reconnected to 127.0.0.1:{port} as alice", timeout=3 * WAIT)
                term.wait(lambda: "reconnecting" not in term.status_line(), "the status cleared")
                term.wait(lambda: term.input_line() == "#dev alice> a draft", "the draft kept")
                assert "[3:#dev]" in term.status_line()  # the same window, the same number
                with joined(("127.0.0.1", port), "bob", "dev") as bob:
                    term.send("\r")
                    assert wait_for(bob, Message).text == "a draft"
                    term.send("\x1b4")
                    term.wait(term.shows_window(4, "@bob"), "bob's window, still open")
                    term.send("still here?\r")
                    assert wait_for(bob, DirectMessage).text == "still here?"
                    term.send("\x1b2")
                    term.wait(term.shows_window(2, "#lobby"), "#lobby, still open")
        finally:
            term.close()


def test_log_files_per_room_and_day(server: tuple[str, int], bob: Client, tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    term = Terminal("-p", str(server[1]), "-n", "alice", "--log-dir", str(logs))
    try:
        term.wait_text("#lobby alice>")
        bob.say("lobby", "hello\n12:00:00 -- #lobby fake notice")
        bob.tell("alice", "psst")
        term.wait_text("fake notice")
        term.wait(lambda: "[Act: 3(1)!]" in term.status_line(), "bob's window")
        term.send("hi all\r")
        wait_for(bob, Message, lambda m: m.text == "hi all")
        term.wait_text("<alice> hi all")
    finally:
        term.close()
    assert stat.S_IMODE(logs.stat().st_mode) == 0o700
    files = sorted(logs.iterdir())
    assert [re.sub(r"\d{4}-\d\d-\d\d", "DAY", p.name) for p in files] == [
        "@bob.DAY.log",
        "lobby.DAY.log",
    ]
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in files)
    lobby = (logs / files[1].name).read_text().splitlines()
    assert any(line.endswith("-- #lobby alice joined") for line in lobby)
    said = next(i for i, line in enumerate(lobby) if line.endswith("<bob> hello"))
    assert re.match(rf"^ +{MARK} 12:00:00 -- #lobby fake notice$", lobby[said + 1])
    assert lobby[-1].endswith("<alice> hi all")
    assert (logs / files[0].name).read_text().rstrip().endswith("<bob> psst")
