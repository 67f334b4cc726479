"""`chatctl join` on a real pseudo-terminal (pexpect), its screen rebuilt by a terminal
emulator (pyte), so the tests look at what a person would see."""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pexpect
import pyte
import pytest

from chatctl.client.connection import Client
from chatctl.protocol import DirectMessage, Message, Notice
from tests.clients import joined, wait_for
from tests.servers import serve_process

ROWS, COLS = 24, 100
WAIT = 15.0


class Terminal:
    """`chatctl join ARGS` in a pty of ROWS x COLS, and the screen it draws."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        self.child = pexpect.spawn(
            sys.executable,
            ["-m", "chatctl", "join", *args],
            dimensions=(ROWS, COLS),
            env={**os.environ, "TERM": "xterm", "LOGNAME": "tester", **(env or {})},
            encoding="utf-8",
            codec_errors="replace",
        )
        terminal = self

        class Screen(pyte.Screen):
            def write_process_input(self, data: str) -> None:
                terminal.child.send(data)  # answers cursor-position requests, as a terminal does

        self.screen = Screen(COLS, ROWS)
        self.stream = pyte.Stream(self.screen)

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
        prompts = [line for line in self.lines if "> " in line and line[:1] == "#"]
        return prompts[-1] if prompts else ""

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
                term.wait(lambda: "reconnecting" not in term.lines[-1], "the status cleared")
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
    alice.wait_text("in #lobby #dev")  # the toolbar, once the server confirmed the join


def test_sigterm_leaves_cleanly_and_exits_zero(alice: Terminal, bob: Client) -> None:
    alice.child.kill(signal.SIGTERM)
    assert alice.wait_exit() == 0
    wait_for(bob, Notice, lambda n: n.kind == "left" and n.nick == "alice")
