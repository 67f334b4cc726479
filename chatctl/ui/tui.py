"""`chatctl join` on a terminal: prompt_toolkit keeps the input line at the bottom.

Arriving events are printed above the prompt through `patch_stdout(raw=True)`, which redraws
the line being typed afterwards, so a message arriving mid-word never garbles it. The
connection lives in the client library's reader thread, so a reconnect never touches the
input line either: the toolbar shows the state and typed text waits in the buffer.
This is the only module that imports prompt_toolkit.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from types import FrameType
from typing import TYPE_CHECKING

from prompt_toolkit import PromptSession
from prompt_toolkit.completion import CompleteEvent, Completer, Completion
from prompt_toolkit.document import Document
from prompt_toolkit.formatted_text import HTML, FormattedText
from prompt_toolkit.history import InMemoryHistory
from prompt_toolkit.patch_stdout import patch_stdout
from prompt_toolkit.shortcuts import confirm

from chatctl.client import (
    AnyEvent,
    Backoff,
    Client,
    Closed,
    Disconnected,
    Reconnected,
    default_nick,
)
from chatctl.errors import Rejected
from chatctl.protocol import DirectMessage, ErrorCode, Members, Message, Notice, RoomList
from chatctl.ui.commands import COMMANDS, Chat, CommandError
from chatctl.ui.render import TextRenderer, welcome_text

if TYPE_CHECKING:
    import ssl

    from chatctl.address import Address
    from chatctl.client.trust import ServerTrust

PASTE_CONFIRM_LINES = 5  # a paste of more lines than this asks before it is sent
_MAX_NICKS = 5000  # completion candidates remembered
_ROOM_COMMANDS = ("/join", "/part", "/who", "/private", "/public")


class ChatUI:
    """Screen state shared by the reader thread (events) and the prompt (input)."""

    def __init__(self, client: Client, room: str | None) -> None:
        self.client = client
        self.chat = Chat(client, room, ask_password=self.ask_new_password)
        colour = "NO_COLOR" not in os.environ
        self.render = TextRenderer(lambda: client.nick, colour=colour, single_line=False)
        self.nicks: dict[str, str] = {}
        self.known_rooms: set[str] = set(client.rooms)
        self.status = ""
        self.closed: Closed | None = None
        self.terminated = False  # SIGTERM: quit cleanly
        self.session: PromptSession[str] | None = None
        self._lock = threading.Lock()

    # -- events, on the reader thread ----------------------------------------------------------

    def on_event(self, event: AnyEvent) -> None:
        self._learn(event)
        line = self.render.render(event)
        if line is not None:
            print(line, flush=True)
        if isinstance(event, Disconnected):
            self.status = f"reconnecting: {event.reason}"
        elif isinstance(event, Reconnected):
            self.status = ""
        elif isinstance(event, Closed):
            self.closed = event
            self._stop_prompt()
        self._redraw()

    def ask_new_password(self) -> str:
        """A new password for /register, typed twice without echo (CommandError if the two
        differ or the user gives up). Asked on the main thread, between two input lines."""
        who = f"{self.client.nick}@{self.client.host}"
        asker: PromptSession[str] = PromptSession()  # no history: the password is not kept
        try:
            first = asker.prompt(f"New password for {who}: ", is_password=True)
            if not first:
                raise CommandError("not registered: no password given")
            second = asker.prompt("Same password again: ", is_password=True)
        except (KeyboardInterrupt, EOFError):
            raise CommandError("not registered") from None
        if first != second:
            raise CommandError("not registered: the two passwords differ")
        return first

    def show(self, lines: list[str]) -> None:
        for line in lines:
            print(self.render.system(line), flush=True)

    def _learn(self, event: AnyEvent) -> None:
        """Remember nicks and rooms for tab completion."""
        with self._lock:
            new: list[str] = []
            match event:
                case Message(sender=sender) | DirectMessage(sender=sender):
                    new.append(sender)
                case Members(nicks=nicks, room=room):
                    new.extend(nicks)
                    self.known_rooms.add(room)
                case Notice(kind="renamed", nick=old, new_nick=nick):
                    self.nicks.pop(old.casefold(), None)
                    new.append(nick)
                case Notice(kind="joined", nick=nick):
                    new.append(nick)
                case RoomList(rooms=rooms):
                    self.known_rooms.update(rooms)
            for nick in new:
                if len(self.nicks) < _MAX_NICKS:
                    self.nicks[nick.casefold()] = nick

    def _redraw(self) -> None:
        session = self.session
        if session is not None and session.app.is_running:
            session.app.invalidate()

    def _stop_prompt(self) -> None:
        session = self.session
        if session is not None and session.app.is_running:
            app = session.app
            if app.loop is not None:
                app.loop.call_soon_threadsafe(lambda: app.exit(exception=EOFError))

    # -- the prompt ------------------------------------------------------------------------------

    def prompt_message(self) -> FormattedText:
        room = f"#{self.chat.room}" if self.chat.room else "(no room)"
        return FormattedText([("bold", f"{room} "), ("", f"{self.client.nick}> ")])

    def toolbar(self) -> HTML:
        if self.status:
            return HTML("<style bg='ansired' fg='ansiwhite'> {} </style>").format(self.status)
        rooms = " ".join(f"#{r}" for r in self.client.rooms) or "no room"
        return HTML(" {} as <b>{}</b> in {} · /help · Ctrl-D quits").format(
            self.client.addr, self.client.nick, rooms
        )


class ChatCompleter(Completer):
    """Tab completes commands after "/", rooms after /join /part /who, nicks elsewhere."""

    def __init__(self, ui: ChatUI) -> None:
        self.ui = ui

    def get_completions(
        self, document: Document, complete_event: CompleteEvent
    ) -> Iterator[Completion]:
        before = document.text_before_cursor
        word = document.get_word_before_cursor(WORD=True)
        if before.startswith("/") and " " not in before:
            for name in COMMANDS:
                if name.startswith(before[1:].lower()):
                    yield Completion("/" + name + " ", start_position=-len(before))
            return
        if before.split(" ", 1)[0] in _ROOM_COMMANDS:
            stem = word.removeprefix("#")
            with self.ui._lock:  # the reader thread adds rooms as it learns them
                rooms = sorted(self.ui.known_rooms | set(self.ui.client.rooms))
            for room in rooms:
                if room.startswith(stem):
                    yield Completion("#" + room, start_position=-len(word))
            return
        stem = word.removeprefix("@").casefold()
        at_start = before == word
        with self.ui._lock:
            nicks = sorted(self.ui.nicks.values(), key=str.casefold)
        for nick in nicks:
            if nick.casefold().startswith(stem) and nick != self.ui.client.nick:
                suffix = ": " if at_start and not word.startswith("@") else ""
                prefix = "@" if word.startswith("@") else ""
                yield Completion(prefix + nick + suffix, start_position=-len(word))


def _ask_nick(default: str) -> str | None:
    try:
        answer = PromptSession[str]().prompt(f"nick [{default}]: ")
    except (KeyboardInterrupt, EOFError):
        return None
    return answer.strip() or default


def _connect(client: Client, asked: bool) -> bool:
    """Connect; when the nick was asked for and is refused, ask again. False: the user quit."""
    for _ in range(3):
        try:
            client.connect()
            return True
        except Rejected as exc:
            if not asked or exc.code != ErrorCode.INVALID_NICK:
                raise
            print(f"chatctl: {exc}", file=sys.stderr)
            nick = _ask_nick(default_nick())
            if nick is None:
                return False
            client.nick = nick
    client.connect()
    return True


def _read_line(ui: ChatUI, session: PromptSession[str]) -> str | None:
    """The next line to send, or None to quit (Ctrl-C, Ctrl-D, or the client closed)."""
    try:
        text = session.prompt()
    except (KeyboardInterrupt, EOFError):
        return None
    if "\n" in text and text.count("\n") + 1 > PASTE_CONFIRM_LINES:
        lines = text.count("\n") + 1
        try:
            ok = confirm(f"Send these {lines} lines as one message?")
        except (KeyboardInterrupt, EOFError):
            ok = False
        if not ok:
            ui.show(["paste not sent"])
            return ""
    return text


def run_tui(
    *,
    addresses: Sequence[Address],
    nick: str | None,
    rooms: list[str],
    history: int | None,
    connect_timeout: float,
    tls: ssl.SSLContext | ServerTrust | None = None,
    account: str = "",
    password: str = "",
) -> int:
    if nick is None and account:
        nick = account  # an account's nick is its name: nothing to ask
    asked = nick is None
    if nick is None:
        nick = _ask_nick(default_nick())
        if nick is None:
            return 0
    client = Client(
        addresses,
        nick=nick,
        rooms=rooms,
        history=history,
        connect_timeout=connect_timeout,
        tls=tls,
        account=account,
        password=password,
        reconnect=True,
        backoff=Backoff(cap=5.0),
    )
    ui = ChatUI(client, rooms[0] if rooms else None)
    client.on_event = ui.on_event
    if not _connect(client, asked):
        return 0
    session: PromptSession[str] = PromptSession(
        message=ui.prompt_message,
        completer=ChatCompleter(ui),
        complete_while_typing=False,
        history=InMemoryHistory(),
        bottom_toolbar=ui.toolbar,
        erase_when_done=True,  # the line comes back rendered, from its ack
    )
    ui.session = session

    def on_sigterm(_signum: int, _frame: FrameType | None) -> None:
        ui.terminated = True
        ui._stop_prompt()  # the loop below ends, and the client says Bye: a clean quit

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        _chat(ui, client, session)
    finally:
        signal.signal(signal.SIGTERM, previous)
    closed = ui.closed
    if closed is not None and closed.error is not None:
        print(f"chatctl: {closed.error}", file=sys.stderr)
        return int(closed.error.exit_code)
    return 0


def _chat(ui: ChatUI, client: Client, session: PromptSession[str]) -> None:
    """The session until the user quits (or SIGTERM) or the client closes; then Bye."""
    reason = ""
    with patch_stdout(raw=True):
        welcome = client.welcome
        who = welcome_text(welcome) if welcome is not None else client.nick
        ui.show([f"connected to {client.addr} as {who}; /help lists the commands"])
        while ui.closed is None and not ui.terminated:
            line = _read_line(ui, session)
            if line is None:
                break
            if not line.strip():
                continue
            outcome = ui.chat.run_line(line)
            ui.show(outcome.info)
            if outcome.sent is not None and not client.connected:
                ui.show(["not connected: it goes out after the reconnect"])
            if outcome.quit:
                reason = outcome.quit_reason
                break
        client.close(reason)


__all__ = ["PASTE_CONFIRM_LINES", "ChatCompleter", "ChatUI", "run_tui"]
