"""`chatctl join` on a terminal: windows, as irssi and weechat users know them.

A full-screen prompt_toolkit application: a title line (the window's room and topic, or its
partner), the shown window's lines, a status line (the window, the activity list
`[Act: 3(2),4(1)!]`, your nick, the connection), and the input line at the bottom. Window 1
is the status window; each room and each direct-message partner has its own, with its own
lines (windows.py: the model, sans-IO). Alt-1..9/Alt-0, Alt-Left/Right, Ctrl-P/N and
/window switch between them without any request to the server: switching never re-joins.

Nothing is ever printed over the input line: every line is drawn into the layout, laid out
for the current width (screen.py: word wrap, a hanging indent, marked continuation lines),
and redrawn on a resize. The connection lives in the client library's reader thread, which
adds lines to the windows; commands run one at a time on a thread of their own (a /join
waits for the server's answer), so typing, switching and redrawing never wait, and a
reconnect never touches the windows or what is being typed.

This is the only module that imports prompt_toolkit.
"""

from __future__ import annotations

import contextlib
import io
import queue
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from datetime import date
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from prompt_toolkit import PromptSession
from prompt_toolkit.application import Application
from prompt_toolkit.buffer import Buffer
from prompt_toolkit.completion import CompleteEvent, Completer, Completion
from prompt_toolkit.document import Document
from prompt_toolkit.filters import Condition, has_completions
from prompt_toolkit.formatted_text import StyleAndTextTuples
from prompt_toolkit.history import InMemoryHistory
from prompt_toolkit.key_binding import KeyBindings, KeyPressEvent
from prompt_toolkit.key_binding.bindings.completion import generate_completions
from prompt_toolkit.layout import (
    ConditionalContainer,
    Float,
    FloatContainer,
    HSplit,
    Layout,
    Window,
)
from prompt_toolkit.layout.controls import BufferControl, FormattedTextControl, UIContent, UIControl
from prompt_toolkit.layout.dimension import Dimension
from prompt_toolkit.layout.menus import CompletionsMenu
from prompt_toolkit.layout.processors import BeforeInput, PasswordProcessor
from prompt_toolkit.output import ColorDepth
from prompt_toolkit.styles import Style

from chatctl.client import (
    AnyEvent,
    Backoff,
    Client,
    Closed,
    Delivered,
    Disconnected,
    Reconnected,
    Refused,
    default_nick,
)
from chatctl.errors import ChatctlError, Rejected
from chatctl.names import room_key
from chatctl.protocol import (
    DirectMessage,
    Error,
    ErrorCode,
    Gap,
    HistoryEnd,
    Members,
    Message,
    Notice,
    RoomList,
    Say,
    Tell,
)
from chatctl.ui.commands import (
    ALIASES,
    COMMANDS,
    WINDOW_ACTIONS,
    Action,
    Chat,
    ClearWindow,
    Command,
    CommandError,
    IgnoreNick,
    JoinRoom,
    Query,
    SetAway,
    Text,
    WhoisNick,
    WindowCmd,
    parse,
)
from chatctl.ui.logs import ChatLogs
from chatctl.ui.render import (
    DEFAULT_TIMESTAMP,
    ColourDepth,
    colour_depth,
    gap_text,
    reconnected_text,
    sanitize,
    welcome_text,
)
from chatctl.ui.screen import Entry, EntryMaker, layout, local_day, log_lines, mark_for, now_ms
from chatctl.ui.windows import Level, WindowList, activity_text
from chatctl.ui.windows import Window as ChatWindow

if TYPE_CHECKING:
    import ssl

    from chatctl.address import Address
    from chatctl.client.trust import ServerTrust

PASTE_CONFIRM_LINES = 5  # a paste of more lines than this asks before it is sent
_MAX_NICKS = 5000  # completion candidates remembered
_WAIT_ASK = 0.2  # how often a question's waiter looks whether the screen is gone

# Arguments completed as rooms, nicks, commands or window actions, by command (and alias).
_ROOM_ARGS = {"join", "part", "who", "topic", "private", "public"}
_NICK_ARGS = {"msg", "query", "whois", "ignore", "unignore", "kick", "ban", "unban"}
_NICK_ARGS |= {"op", "deop", "invite", "uninvite"}

STYLE = Style.from_dict(
    {
        "title": "reverse",
        "status": "reverse",
        "status.alert": "noreverse bg:ansired fg:ansiwhite bold",
        "status.active": "bold",
        "act.event": "",
        "act.message": "bold",
        "act.mention": "bold fg:ansibrightmagenta",
        "timestamp": "fg:ansibrightblack",
        "system": "italic fg:ansibrightblack",
        "day": "bold",
        "error": "fg:ansired",
        "mention": "bold fg:ansiyellow",
        "history": "fg:ansibrightblack",
        "marker": "fg:ansibrightblack",
        "prompt.where": "bold",
        "question": "bold",
    }
)
_DEPTHS = {
    "none": ColorDepth.DEPTH_1_BIT,
    "basic": ColorDepth.DEPTH_4_BIT,
    "256": ColorDepth.DEPTH_8_BIT,
    "truecolor": ColorDepth.DEPTH_24_BIT,
}


class _Question:
    """A question the command thread asks through the input line (a password)."""

    def __init__(self, prompt: str) -> None:
        self.prompt = prompt
        self.answer: str | None = None  # None: not answered (yet), or given up
        self.done = threading.Event()


class ChatUI:
    """The windows and what the status line shows, shared by the reader thread (events),
    the command thread and the screen, under one lock."""

    def __init__(
        self,
        client: Client,
        rooms: Sequence[str],
        *,
        depth: ColourDepth,
        timestamp: str = DEFAULT_TIMESTAMP,
        logs: ChatLogs | None = None,
        mark: str = "\u2506",
    ) -> None:
        self.client = client
        self.chat = Chat(client, None, ask_password=self.ask_new_password, terminal=True)
        self.make = EntryMaker(lambda: client.nick, depth)
        self.depth = depth
        self.timestamp = timestamp
        self.logs = logs
        self.mark = mark
        self.windows: WindowList[Entry] = WindowList()
        self._first_room = room_key(rooms[0]) if rooms else None
        self.nicks: dict[str, str] = {}  # for completion, by casefolded nick
        self.known_rooms: set[str] = set(client.rooms)
        self.members: dict[str, dict[str, str]] = {}  # room -> casefolded nick -> nick
        self.topics: dict[str, str] = {}
        self.ignored: dict[str, str] = {}
        self.away: str | None = None
        self.missed: list[ChatWindow[Entry]] = []  # where you were wanted while away
        self.status = ""  # "reconnecting: ...", or ""
        self.closed: Closed | None = None
        self.terminated = False  # SIGTERM: quit cleanly
        self.quit_reason: str | None = None
        self.confirming: str | None = None  # a long paste waiting for yes or no
        self.question: _Question | None = None
        self.width = 80  # of the last drawing, to keep a scrolled-back view still
        self._greeted = False
        self.app: Application[None] | None = None
        self.input = Buffer(
            multiline=True,
            history=InMemoryHistory(),
            completer=ChatCompleter(self),
            complete_while_typing=False,
            accept_handler=self._accept,
        )
        self.secret = Buffer(multiline=False, accept_handler=self._answer)
        self._lock = threading.RLock()
        self._commands: queue.SimpleQueue[tuple[str, ChatWindow[Entry]] | None]
        self._commands = queue.SimpleQueue()
        self._worker = threading.Thread(target=self._work, name="chatctl-commands", daemon=True)

    # -- adding lines ---------------------------------------------------------------------------

    def _put(
        self,
        window: ChatWindow[Entry],
        entry: Entry,
        level: Level = Level.QUIET,
        *,
        log: bool = False,
    ) -> None:
        """Add `entry` to `window` (under the lock): a day-change line first when its day is
        not the last one's, and to the log file when `log`."""
        if entry.ts is not None:
            day = local_day(entry.ts)
            if window.day is None:
                window.day = date.today()
            if day != window.day:
                window.day = day
                self.windows.add(window, self.make.day(day))
        if window.scroll:  # keep a scrolled-back view where it is
            window.scroll += len(layout(entry, self.width, self.timestamp, self.mark))
        self.windows.add(window, entry, level)
        if log and self.logs is not None and window.kind != "status":
            ts = entry.ts if entry.ts is not None else now_ms()
            lines = log_lines(entry, DEFAULT_TIMESTAMP, self.mark)
            failed = self.logs.write(window.kind, window.name, local_day(ts), lines)
            if failed is not None:
                self.windows.add(self.windows.status, self.make.error(failed))
                if self.windows.current is not self.windows.status:
                    self.windows.add(self.windows.current, self.make.error(failed))

    def show(self, lines: list[str], window: ChatWindow[Entry] | None = None) -> None:
        """Our own notes (command output), in `window` if it is still open, else the shown
        one."""
        with self._lock:
            if window is None or not self.windows.number(window):
                window = self.windows.current
            for line in lines:
                self._put(window, self.make.system(line))
        self._redraw()

    def greet(self, window: ChatWindow[Entry] | None = None) -> None:
        """Say where we are connected, once: in the status window, and first in the first
        room's window (or the one shown, if no room opens before the screen starts)."""
        if self._greeted:
            return
        welcome = self.client.welcome
        who = welcome_text(welcome) if welcome is not None else self.client.nick
        entry = self.make.system(
            f"connected to {self.client.addr} as {who}; /help lists the commands"
        )
        self._greeted = True
        self.windows.add(self.windows.status, entry)
        window = window or self.windows.current
        if window is not self.windows.status:
            self.windows.add(window, entry)

    def _news(self, entry: Entry) -> None:
        """Connection news: in the status window, and in the one shown."""
        self.windows.add(self.windows.status, entry)
        if self.windows.current is not self.windows.status:
            self.windows.add(self.windows.current, entry)

    # -- events, on the reader thread -----------------------------------------------------------

    def on_event(self, event: AnyEvent) -> None:
        with self._lock:
            self._learn(event)
            self._route(event)
            if isinstance(event, Disconnected):
                self.status = f"reconnecting: {sanitize(event.reason, newline=' ')}"
            elif isinstance(event, Reconnected):
                self.status = ""
        if isinstance(event, Closed):
            self.closed = event
            self.exit_app()
        self._redraw()

    def _room_window(self, room: str) -> ChatWindow[Entry] | None:
        """The window of a room; opened when we are in the room (the server confirmed it).
        The first room asked for is shown once it opens, unless you went elsewhere."""
        window = self.windows.find("room", room)
        if window is None and room in self.client.rooms:
            window = self.windows.open("room", room)
            if room == self._first_room and self.windows.current is self.windows.status:
                self.windows.activate(self.windows.number(window))
                self.greet(window)
        if room == self._first_room and window is not None:
            self._first_room = None
        return window

    def _window_for(self, room: str) -> ChatWindow[Entry]:
        return self._room_window(room) or self.windows.current

    def _is_me(self, nick: str) -> bool:
        me = self.client.nick
        return bool(nick) and nick.casefold() in (me.casefold(), self.client.account.casefold())

    def _route(self, event: AnyEvent) -> None:
        make = self.make
        match event:
            case Message(sender=sender) if sender.casefold() in self.ignored:
                return
            case DirectMessage(sender=sender) if sender.casefold() in self.ignored:
                return
            case Message():
                mention = not event.history and make.mentions_me(event.sender, event.text)
                entry = make.speech(
                    event.ts,
                    event.sender,
                    event.text,
                    action=event.action,
                    history=event.history,
                    mention=mention,
                )
                level = (
                    Level.QUIET if event.history else Level.MENTION if mention else Level.MESSAGE
                )
                window = self._window_for(event.room)
                self._put(window, entry, level, log=not event.history)
                if mention:
                    self._wanted(window)
            case DirectMessage():
                window = self.windows.open("query", event.sender)
                entry = make.speech(event.ts, event.sender, event.text, action=event.action)
                self._put(window, entry, Level.MENTION, log=True)
                self._wanted(window)
            case Delivered(request=Say() as say, ack=ack, nick=nick):
                entry = make.speech(ack.ts, nick, say.text, action=say.action)
                self._put(self._window_for(say.room), entry, log=True)
            case Delivered(request=Tell() as tell, ack=ack, nick=nick):
                entry = make.speech(ack.ts, nick, tell.text, action=tell.action)
                self._put(self.windows.open("query", tell.to), entry, log=True)
            case Refused(request=request, error=error):
                from chatctl.ui.render import error_name

                text = f"not sent: {error.message} ({error_name(error.code)})"
                if isinstance(request, Say):
                    window = self._window_for(request.room)
                else:
                    window = self.windows.find("query", request.to) or self.windows.current
                self._put(window, make.error(text))
            case Notice():
                self._notice(event)
            case Members():
                window = self._window_for(event.room)
                for text in make.words.members_texts(event):
                    self._put(window, make.system(text))
            case RoomList():
                self._put(self.windows.current, make.system(make.words.rooms_text(event)))
            case Gap():
                window = self._window_for(event.room)
                self._put(window, make.system(f"#{event.room}: {gap_text(event)}"), log=True)
            case HistoryEnd():
                self._room_window(event.room)
            case Error():
                from chatctl.ui.render import error_name

                text = f"{event.message} ({error_name(event.code)})"
                self._put(self.windows.current, make.error(text))
            case Disconnected():
                more = "; reconnecting" if event.retrying else ""
                self._news(make.error(f"connection lost: {event.reason}{more}", now_ms()))
            case Reconnected():
                self._news(make.system(reconnected_text(event), now_ms()))
            case Closed(error=error) if error is not None:
                self._news(make.error(str(error)))

    def _wanted(self, window: ChatWindow[Entry]) -> None:
        """Someone named you or wrote to you: remembered while you are away."""
        if self.away is not None:
            self.missed.append(window)

    def _notice(self, n: Notice) -> None:
        text = self.make.words.notice_text(n)
        entry = self.make.system(text, n.ts)
        ours = self._is_me(n.nick)
        if n.kind == "renamed":
            if n.new_nick.casefold() == self.client.nick.casefold():  # we are renamed
                self._news(entry)
                for shown in self.windows:
                    if shown.kind == "room":
                        self._put(shown, entry, log=True)
                return
            shared = [r for r, m in self.members.items() if n.nick.casefold() in m]
            for room in shared:
                found = self.windows.find("room", room)
                if found is not None:
                    self._put(found, entry, Level.EVENT, log=True)
            query = self.windows.rename("query", n.nick, n.new_nick)
            if query is not None:
                self._put(query, entry, Level.EVENT, log=True)
            return
        if n.kind == "registered":
            self._put(self.windows.current, entry)
            return
        if n.kind == "left" and ours and n.room not in self.client.rooms:
            # Our /part, confirmed: the room's window closes (irssi's way); the line goes to
            # the room's log and to the window shown then.
            window = self.windows.find("room", n.room)
            if window is not None:
                if self.logs is not None:
                    self._put(window, entry, log=True)
                self.windows.close(self.windows.number(window))
            self._put(self.windows.current, entry)
            return
        if n.kind in ("kicked", "banned") and self._is_me(n.target):
            window = self.windows.find("room", n.room)
            if window is not None:
                window.joined = False
                self._put(window, entry, Level.MENTION, log=True)
                if window is not self.windows.current:
                    self._put(self.windows.current, entry)
                return
        if not n.room:
            self._put(self.windows.current, entry)
            return
        window = self._room_window(n.room)
        if window is None:  # an invitation to a room we are not in, say
            self._put(self.windows.current, entry)
            return
        if n.kind == "joined" and ours:
            window.joined = True
        level = Level.QUIET if ours else Level.EVENT
        if n.kind in ("invited", "op", "deop") and self._is_me(n.target):
            level = Level.MENTION
        self._put(window, entry, level, log=True)

    def _learn(self, event: AnyEvent) -> None:
        """Keep the member lists (for /whois and renames), topics, and what tab completes."""
        new: list[str] = []
        match event:
            case Message(sender=sender) | DirectMessage(sender=sender):
                new.append(sender)
            case Members(nicks=nicks, room=room):
                new.extend(nicks)
                self.known_rooms.add(room)
                if room in self.client.rooms:
                    self.members[room] = {n.casefold(): n for n in nicks}
                self.topics[room] = event.topic
            case Notice(kind="renamed", nick=old, new_nick=nick):
                self.nicks.pop(old.casefold(), None)
                new.append(nick)
                for members in self.members.values():
                    if members.pop(old.casefold(), None) is not None:
                        members[nick.casefold()] = nick
            case Notice(kind="joined", nick=nick, room=room):
                new.append(nick)
                self.members.setdefault(room, {})[nick.casefold()] = nick
            case Notice(kind="left" | "dropped", nick=nick, room=room):
                if self._is_me(nick) and room not in self.client.rooms:
                    self.members.pop(room, None)
                else:
                    self.members.get(room, {}).pop(nick.casefold(), None)
            case Notice(kind="kicked" | "banned", target=target, room=room):
                if self._is_me(target):
                    self.members.pop(room, None)
                else:
                    self.members.get(room, {}).pop(target.casefold(), None)
            case Notice(kind="topic", room=room, reason=topic):
                self.topics[room] = topic
            case RoomList(rooms=rooms):
                self.known_rooms.update(rooms)
        for nick in new:
            if len(self.nicks) < _MAX_NICKS:
                self.nicks[nick.casefold()] = nick

    # -- the screen -------------------------------------------------------------------------------

    def visible_lines(self, width: int, height: int) -> list[StyleAndTextTuples]:
        """The shown window's last `height` screen lines (fewer at the top when scrolled
        back), laid out for `width`."""
        with self._lock:
            self.width = width
            window = self.windows.current
            need = height + window.scroll
            out: list[StyleAndTextTuples] = []
            for entry in reversed(window.lines):
                lines = layout(entry, width, self.timestamp, self.mark)
                out.extend(reversed(lines))  # type: ignore[arg-type]
                if len(out) >= need:
                    break
            out.reverse()
            window.scroll = max(0, min(window.scroll, len(out) - height))
            end = len(out) - window.scroll
            shown = out[max(0, end - height) : end]
        return [[] for _ in range(height - len(shown))] + shown

    def scroll(self, pages: int, height: int) -> None:
        with self._lock:
            window = self.windows.current
            window.scroll = max(0, window.scroll + pages * max(1, height - 1))

    def _where(self, window: ChatWindow[Entry]) -> str:
        if window.kind == "room":
            return "#" + window.name
        if window.kind == "query":
            return "@" + window.name
        return "(status)"

    def title_line(self) -> StyleAndTextTuples:
        with self._lock:
            window = self.windows.current
            if window.kind == "room":
                topic = self.topics.get(window.name, "")
                text = f"#{window.name}"
                if not window.joined or (
                    window.name not in self.client.rooms and not self.client.joining(window.name)
                ):
                    text += " (not joined)"
                if topic:
                    text += ": " + sanitize(topic, newline=" ")
            elif window.kind == "query":
                text = f"{window.name}: direct messages"
            else:
                text = f"chatctl {self.client.addr}: the status window"
        return [("class:title", " " + text)]

    def status_line(self) -> StyleAndTextTuples:
        with self._lock:
            number = self.windows.active
            window = self.windows.current
            activity = self.windows.activity()
            scrolled = window.scroll > 0
            away = self.away
        parts: StyleAndTextTuples = []
        if self.status:
            parts.append(("class:status.alert", f" {self.status} "))
        parts.append(("class:status.active", f" [{number}:{self._where(window)}]"))
        if activity:
            parts.append(("", " [Act: "))
            for i, a in enumerate(activity):
                if i:
                    parts.append(("", ","))
                item = str(a.number) + (f"({a.unread})" if a.unread else "")
                if a.level == Level.MENTION:
                    parts.append(("class:act.mention", item + "!"))
                elif a.level == Level.MESSAGE:
                    parts.append(("class:act.message", item))
                else:
                    parts.append(("class:act.event", item))
            parts.append(("", "]"))
        nick = sanitize(self.client.nick, newline=" ")
        parts.append(("", f" [{nick}{' (away)' if away is not None else ''}]"))
        if scrolled:
            parts.append(("class:status.active", " -- more --"))
        parts.append(("", f" {self.client.addr} · /help · Ctrl-D quits"))
        return parts

    def activity_text(self) -> str:
        with self._lock:
            return activity_text(self.windows.activity())

    def prompt_message(self) -> StyleAndTextTuples:
        with self._lock:
            where = self._where(self.windows.current)
        nick = sanitize(self.client.nick, newline=" ")
        return [("class:prompt.where", where + " "), ("", f"{nick}> ")]

    def question_line(self) -> StyleAndTextTuples:
        lines = (self.confirming or "").count("\n") + 1
        return [("class:question", f"Send these {lines} lines as one message? [y/N] ")]

    def secret_prompt(self) -> StyleAndTextTuples:
        question = self.question
        return [("class:question", question.prompt if question is not None else "")]

    def _redraw(self) -> None:
        app = self.app
        if app is not None and app.is_running:
            app.invalidate()

    def exit_app(self) -> None:
        app = self.app
        if app is not None and app.is_running and app.loop is not None:
            app.loop.call_soon_threadsafe(self._exit)

    def _exit(self) -> None:
        app = self.app
        if app is not None and app.is_running:
            with contextlib.suppress(Exception):  # already on its way out
                app.exit()

    # -- switching -------------------------------------------------------------------------------

    def go(self, number: int) -> bool:
        with self._lock:
            done = self.windows.activate(number)
        self._redraw()
        return done

    def next_window(self, step: int) -> None:
        with self._lock:
            if step > 0:
                self.windows.next()
            else:
                self.windows.prev()
        self._redraw()

    # -- input, on the screen's thread ----------------------------------------------------------

    def _accept(self, buffer: Buffer) -> bool:
        text = buffer.text
        if not text.strip():
            return False
        if text.count("\n") + 1 > PASTE_CONFIRM_LINES:
            self.confirming = text  # asked on the question line; the text stays
            return True
        self.submit(text)
        return False

    def confirm(self, yes: bool) -> None:
        text, self.confirming = self.confirming, None
        if text is None:
            return
        if yes:
            self.input.reset()
            self.submit(text)
        else:
            self.show(["paste not sent: it is still there to edit"])

    def submit(self, text: str) -> None:
        """Run a line, in the window it was typed in, after the lines before it."""
        with self._lock:
            window = self.windows.current
        self._commands.put((text, window))

    def _answer(self, buffer: Buffer) -> bool:
        question, self.question = self.question, None
        if question is not None:
            question.answer = buffer.text
            question.done.set()
        self._focus_input()
        return False

    def cancel_question(self) -> None:
        question, self.question = self.question, None
        self.secret.reset()
        if question is not None:
            question.done.set()
        self._focus_input()

    def _focus_input(self) -> None:
        app = self.app
        if app is not None:
            with contextlib.suppress(ValueError):
                app.layout.focus(self.input)

    def ask(self, prompt: str) -> str | None:
        """From the command thread: ask on the input line, without echo; None if the user
        gives up (Ctrl-C) or the screen goes."""
        app = self.app
        if app is None or app.loop is None or not app.is_running:
            return None
        question = _Question(prompt)

        def start() -> None:
            self.question = question
            self.secret.reset()
            app.layout.focus(self.secret)
            app.invalidate()

        app.loop.call_soon_threadsafe(start)
        while not question.done.wait(_WAIT_ASK):
            if self.app is None or not self.app.is_running:
                return None
        return question.answer

    def ask_new_password(self) -> str:
        """A new password for /register, typed twice without echo (CommandError if the two
        differ or the user gives up)."""
        who = f"{self.client.nick}@{self.client.host}"
        first = self.ask(f"New password for {who}: ")
        if first is None:
            raise CommandError("not registered")
        if not first:
            raise CommandError("not registered: no password given")
        second = self.ask("Same password again: ")
        if second is None:
            raise CommandError("not registered")
        if first != second:
            raise CommandError("not registered: the two passwords differ")
        return first

    # -- commands, on their own thread ------------------------------------------------------------

    def start(self) -> None:
        self._worker.start()

    def stop(self) -> None:
        self._commands.put(None)

    def _work(self) -> None:
        while (item := self._commands.get()) is not None:
            text, window = item
            try:
                self.run_line(text, window)
            except ChatctlError as exc:
                self.show([str(exc)], window)
            if self.quit_reason is not None:
                self.exit_app()
                return

    def run_line(self, text: str, window: ChatWindow[Entry]) -> None:
        """Run one line typed in `window`."""
        command = parse(text)
        with self._lock:
            self.chat.room = window.name if window.kind == "room" else None
            self.chat.query = window.name if window.kind == "query" else None
        match command:
            case Text() | Action() if window.kind == "status":
                raise CommandError(
                    "the status window is no room: go to a room's window (Alt-2, /window 2) "
                    "or /join ROOM"
                )
            case JoinRoom(room=room) if room_key(room) in self.client.rooms:
                self._open("room", room_key(room))  # already in: no Join, no replay
                return
            case Query() | WhoisNick() | ClearWindow() | SetAway() | IgnoreNick() | WindowCmd():
                self._terminal(command, window)
                return
        outcome = self.chat.run(command)
        if isinstance(command, JoinRoom) and self.chat.room == room_key(command.room):
            self._open("room", self.chat.room)
        self.show(outcome.info, window)
        if outcome.sent is not None and not self.client.connected:
            self.show(["not connected: it goes out after the reconnect"], window)
        if outcome.quit:
            self.quit_reason = outcome.quit_reason

    def _open(self, kind: str, name: str) -> None:
        with self._lock:
            window = self.windows.open(kind, name, activate=True)  # type: ignore[arg-type]
            if kind == "room":
                window.joined = True
        self._redraw()

    def _terminal(self, command: Command, window: ChatWindow[Entry]) -> None:
        """The commands that act on this screen only."""
        match command:
            case Query(nick=None):
                if window.kind != "query":
                    raise CommandError("usage: /query NICK [TEXT] (no NICK closes a query window)")
                with self._lock:
                    self.windows.close(self.windows.number(window))
                self._redraw()
            case Query(nick=str(nick), text=text):
                self._open("query", nick)
                if text:
                    self.chat.query = nick
                    self.chat.run(Text(text=text))
            case WhoisNick(nick=nick):
                self.show(self._whois(nick), window)
            case ClearWindow():
                with self._lock:
                    self.windows.clear(window)
                self._redraw()
            case SetAway(reason=reason):
                self.show(self._away(reason), window)
            case IgnoreNick():
                self.show(self._ignore(command), window)
            case WindowCmd():
                self._window(command, window)

    def _whois(self, nick: str) -> list[str]:
        key = nick.casefold()
        with self._lock:
            rooms = sorted(r for r, m in self.members.items() if key in m)
            shown = next((m[key] for m in self.members.values() if key in m), nick)
            query = self.windows.find("query", nick)
            number = self.windows.number(query) if query is not None else 0
        if rooms:
            lines = [f"{shown} is in " + ", ".join("#" + r for r in rooms) + " (of your rooms)"]
        else:
            lines = [
                f"{nick} is in none of your rooms (the server has no whois: rooms you are "
                "not in are not known)"
            ]
        if number:
            lines.append(f"your conversation with {shown} is window {number}")
        if key in self.ignored:
            lines.append(f"you ignore {shown}")
        return lines

    def _away(self, reason: str) -> list[str]:
        with self._lock:
            if reason:
                self.away = reason
                self.missed = []
                return [
                    f"you are away ({reason}), on this screen only: the server has no away "
                    "status, so nobody is told"
                ]
            if self.away is None:
                return ["you are not away"]
            missed, self.away, self.missed = self.missed, None, []
            numbers = sorted({n for n in (self.windows.number(w) for w in missed) if n})
        if not missed:
            return ["you are back: nobody named you or wrote to you"]
        where = ", ".join(str(n) for n in numbers)
        return [f"you are back: named or written to {len(missed)} times, in windows {where}"]

    def _ignore(self, command: IgnoreNick) -> list[str]:
        with self._lock:
            if command.nick is None:
                names = sorted(self.ignored.values(), key=str.casefold)
                if not names:
                    return ["you ignore nobody"]
                return ["you ignore " + ", ".join(names)]
            key = command.nick.casefold()
            if command.undo:
                if self.ignored.pop(key, None) is None:
                    return [f"you were not ignoring {command.nick}"]
                return [f"{command.nick}'s messages are shown again"]
            self.ignored[key] = command.nick
        return [
            f"ignoring {command.nick}: their messages are hidden on this screen "
            "(the server still delivers them; /unignore undoes it)"
        ]

    def _window(self, command: WindowCmd, window: ChatWindow[Entry]) -> None:
        with self._lock:
            windows = self.windows
            match command:
                case WindowCmd(action="goto", number=int(number)):
                    if not windows.activate(number):
                        raise CommandError(f"there is no window {number} (1 to {len(windows)})")
                case WindowCmd(action="goto", name=name):
                    found = windows.find_name(name)
                    if found is None:
                        raise CommandError(f"no window is {name}'s: /window list lists them")
                    windows.activate(windows.number(found))
                case WindowCmd(action="next"):
                    windows.next()
                case WindowCmd(action="prev"):
                    windows.prev()
                case WindowCmd(action="close"):
                    if window.kind == "status":
                        raise CommandError("the status window stays open")
                    if window.kind == "room" and window.name in self.client.rooms:
                        raise CommandError(
                            f"you are in #{window.name}: /part leaves it and closes its window"
                        )
                    windows.close(windows.number(window))
                case WindowCmd(action="list"):
                    lines = []
                    for i, w in enumerate(windows, start=1):
                        mark = "*" if i == windows.active else " "
                        what = {"room": "", "query": " (direct messages)", "status": ""}[w.kind]
                        unread = f", {w.unread} unread" if w.unread else ""
                        lines.append(f"{mark}{i} {self._where(w)}{what}{unread}")
                    for line in lines:
                        self._put(
                            window if windows.number(window) else windows.current,
                            self.make.system(line),
                        )
        self._redraw()


class MessagesControl(UIControl):
    """The shown window's lines, bottom-aligned, laid out for the width it is given."""

    def __init__(self, ui: ChatUI) -> None:
        self.ui = ui
        self.height = 24

    def create_content(self, width: int, height: int) -> UIContent:
        self.height = height
        lines = self.ui.visible_lines(width, height)
        return UIContent(get_line=lambda i: lines[i], line_count=len(lines), show_cursor=False)

    def is_focusable(self) -> bool:
        return False


class ChatCompleter(Completer):
    """Tab completes commands and aliases after "/", and then their arguments: rooms, nicks,
    command names (/help) or window actions; nicks elsewhere (`bo<Tab>` at the start of a
    line gives `bob: `)."""

    def __init__(self, ui: ChatUI) -> None:
        self.ui = ui

    def get_completions(
        self, document: Document, complete_event: CompleteEvent
    ) -> Iterator[Completion]:
        before = document.text_before_cursor
        word = document.get_word_before_cursor(WORD=True)
        if before.startswith("/") and " " not in before:
            stem = before[1:].lower()
            for name in sorted({*COMMANDS, *ALIASES}):
                if name.startswith(stem):
                    yield Completion("/" + name + " ", start_position=-len(before))
            return
        command = ""
        if before.startswith("/"):
            typed = before.split(" ", 1)[0][1:].lower()
            command = ALIASES.get(typed, typed).split()[0]
            if len(before.split()) > 2 or (len(before.split()) == 2 and not word):
                command = ""  # past the first argument: nicks, as in text
        if command == "help":
            for name in sorted({*COMMANDS, *ALIASES}):
                if name.startswith(word.lower()):
                    yield Completion(name, start_position=-len(word))
            return
        if command == "window":
            for action in (a for a in WINDOW_ACTIONS if a != "goto"):
                if action.startswith(word.lower()):
                    yield Completion(action, start_position=-len(word))
            return
        if command in _ROOM_ARGS:
            stem = word.removeprefix("#")
            with self.ui._lock:  # the reader thread adds rooms as it learns them
                rooms = sorted(self.ui.known_rooms | set(self.ui.client.rooms))
            for room in rooms:
                if room.startswith(stem):
                    yield Completion("#" + room, start_position=-len(word))
            return
        yield from self._nicks(before, word, after_command=command in _NICK_ARGS)

    def _nicks(self, before: str, word: str, *, after_command: bool) -> Iterator[Completion]:
        stem = word.removeprefix("@").casefold()
        at_start = before == word
        with self.ui._lock:
            nicks = sorted(self.ui.nicks.values(), key=str.casefold)
        for nick in nicks:
            if nick.casefold().startswith(stem) and nick != self.ui.client.nick:
                plain = after_command or word.startswith("@") or not at_start
                suffix = "" if plain else ": "
                prefix = "@" if word.startswith("@") else ""
                yield Completion(prefix + nick + suffix, start_position=-len(word))


def _key_bindings(ui: ChatUI, messages: MessagesControl) -> KeyBindings:
    kb = KeyBindings()
    asking = Condition(lambda: ui.question is not None)
    confirming = Condition(lambda: ui.confirming is not None)
    typing = ~asking & ~confirming

    for digit in "1234567890":

        @kb.add("escape", digit, eager=True)
        def _go(event: KeyPressEvent, number: int = int(digit) or 10) -> None:
            ui.go(number)

    @kb.add("escape", "right", eager=True)
    @kb.add("c-n", eager=True)
    def _next(event: KeyPressEvent) -> None:
        ui.next_window(1)

    @kb.add("escape", "left", eager=True)
    @kb.add("c-p", eager=True)
    def _prev(event: KeyPressEvent) -> None:
        ui.next_window(-1)

    @kb.add("pageup", eager=True)
    def _up(event: KeyPressEvent) -> None:
        ui.scroll(1, messages.height)

    @kb.add("pagedown", eager=True)
    def _down(event: KeyPressEvent) -> None:
        ui.scroll(-1, messages.height)

    @kb.add("enter", filter=typing & ~has_completions, eager=True)
    @kb.add("c-j", filter=typing & ~has_completions, eager=True)
    def _enter(event: KeyPressEvent) -> None:
        ui.input.validate_and_handle()

    @kb.add("enter", filter=typing & has_completions, eager=True)
    def _take_completion(event: KeyPressEvent) -> None:
        ui.input.complete_state = None  # the completion is in the line: send it as it is
        ui.input.validate_and_handle()

    @kb.add("tab", filter=typing)
    def _complete(event: KeyPressEvent) -> None:
        generate_completions(event)

    @kb.add("s-tab", filter=typing)
    def _complete_back(event: KeyPressEvent) -> None:
        if ui.input.complete_state:
            ui.input.complete_previous()

    @kb.add("c-c", filter=typing, eager=True)
    def _quit(event: KeyPressEvent) -> None:
        ui.quit_reason = ""
        event.app.exit()

    @kb.add("c-d", filter=typing, eager=True)
    def _eof(event: KeyPressEvent) -> None:
        if ui.input.text:
            ui.input.delete()
        else:
            ui.quit_reason = ""
            event.app.exit()

    @kb.add("y", filter=confirming, eager=True)
    @kb.add("Y", filter=confirming, eager=True)
    def _yes(event: KeyPressEvent) -> None:
        ui.confirm(True)

    @kb.add("<any>", filter=confirming, eager=True)
    @kb.add("c-c", filter=confirming, eager=True)
    def _no(event: KeyPressEvent) -> None:
        ui.confirm(False)

    @kb.add("c-c", filter=asking, eager=True)
    @kb.add("c-d", filter=asking, eager=True)
    def _give_up(event: KeyPressEvent) -> None:
        ui.cancel_question()

    return kb


def build_app(ui: ChatUI) -> Application[None]:
    messages = MessagesControl(ui)
    asking = Condition(lambda: ui.question is not None)
    confirming = Condition(lambda: ui.confirming is not None)
    input_window = Window(
        BufferControl(ui.input, input_processors=[BeforeInput(ui.prompt_message)]),
        height=Dimension(min=1, max=6),
        dont_extend_height=True,
        wrap_lines=True,
    )
    body = HSplit(
        [
            Window(FormattedTextControl(ui.title_line), height=1, style="class:title"),
            Window(messages, wrap_lines=False),
            Window(FormattedTextControl(ui.status_line), height=1, style="class:status"),
            ConditionalContainer(input_window, filter=~asking & ~confirming),
            ConditionalContainer(
                Window(FormattedTextControl(ui.question_line), height=1),
                filter=confirming & ~asking,
            ),
            ConditionalContainer(
                Window(
                    BufferControl(
                        ui.secret,
                        input_processors=[
                            PasswordProcessor(char=""),
                            BeforeInput(ui.secret_prompt),
                        ],
                    ),
                    height=1,
                ),
                filter=asking,
            ),
        ]
    )
    root = FloatContainer(
        body,
        floats=[Float(xcursor=True, ycursor=True, content=CompletionsMenu(max_height=8))],
    )
    return Application(
        layout=Layout(root, focused_element=input_window),
        key_bindings=_key_bindings(ui, messages),
        style=STYLE,
        full_screen=True,
        color_depth=_DEPTHS[ui.depth],
        enable_page_navigation_bindings=False,
        mouse_support=False,
    )


class _Sink(io.TextIOBase):
    """stdout and stderr while the screen is up: whatever a library prints becomes a line in
    the status window instead of a mess over the screen."""

    def __init__(self, ui: ChatUI) -> None:
        self.ui = ui
        self._partial = ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self._partial += text
        *lines, self._partial = self._partial.split("\n")
        for line in lines:
            if line.strip():
                with self.ui._lock:
                    self.ui.windows.add(self.ui.windows.status, self.ui.make.error(line))
        self.ui._redraw()
        return len(text)


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
    timestamp: str = DEFAULT_TIMESTAMP,
    log_dir: Path | str | None = None,
) -> int:
    logs = ChatLogs(log_dir) if log_dir is not None else None
    if logs is not None:
        logs.check()
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
    ui = ChatUI(
        client,
        rooms,
        depth=colour_depth(),
        timestamp=timestamp,
        logs=logs,
        mark=mark_for(getattr(sys.stdout, "encoding", None)),
    )
    client.on_event = ui.on_event
    if not _connect(client, asked):
        return 0
    ui.app = build_app(ui)

    def on_sigterm(_signum: int, _frame: FrameType | None) -> None:
        ui.terminated = True
        ui.exit_app()  # the screen closes, and the client says Bye: a clean quit

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        _chat(ui, client)
    finally:
        signal.signal(signal.SIGTERM, previous)
    closed = ui.closed
    if closed is not None and closed.error is not None:
        print(f"chatctl: {closed.error}", file=sys.stderr)
        return int(closed.error.exit_code)
    return 0


def _chat(ui: ChatUI, client: Client) -> None:
    """The session until the user quits (or SIGTERM) or the client closes; then Bye."""
    with ui._lock:
        ui.greet()
    ui.start()
    app = ui.app
    assert app is not None
    sink = _Sink(ui)
    try:
        if ui.closed is None and not ui.terminated:
            with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
                app.run()
    finally:
        ui.cancel_question()
        ui.stop()
        client.close(ui.quit_reason or "")


__all__ = ["PASTE_CONFIRM_LINES", "ChatCompleter", "ChatUI", "run_tui"]
