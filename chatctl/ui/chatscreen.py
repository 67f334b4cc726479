"""What `chatctl join` shows on a terminal, apart from the terminal itself: the windows and
their lines, fed by the client's events (the reader thread) and by the commands typed (a
thread of their own), under one lock.

Events go to their windows: a room's to its window (opened once the server confirms the
join), a direct message to its partner's (opened as it comes), connection news to the status
window and the one shown; the level of each line (windows.Level) makes the activity list.
Our own /part, once confirmed, closes the room's window (irssi's way); a kick or a ban
leaves it open, marked "not joined". It keeps the member lists of our rooms (for /whois and
for showing a rename where it matters), the topics (the title line), the ignored nicks and
the away state, which the server does not know about: those are this screen's.

Commands run in the window they were typed in, one after the other; the terminal's own
(/window, /query, /whois, /clear, /away, /ignore) are done here, the rest by
commands.Chat. tui.py draws this with prompt_toolkit; nothing here imports it, so the tests
drive it with events directly (tests/test_join_screen.py).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Sequence
from datetime import date
from typing import TYPE_CHECKING

from chatctl.client.events import (
    AnyEvent,
    Closed,
    Delivered,
    Disconnected,
    Reconnected,
    Refused,
)
from chatctl.errors import ChatctlError
from chatctl.names import room_key
from chatctl.protocol import (
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
from chatctl.ui.commands import (
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
    error_name,
    gap_text,
    reconnected_text,
    sanitize,
    welcome_text,
)
from chatctl.ui.screen import (
    MARK,
    Entry,
    EntryMaker,
    Fragment,
    layout,
    local_day,
    log_lines,
    now_ms,
)
from chatctl.ui.windows import Kind, Level, Window, WindowList, activity_text

if TYPE_CHECKING:
    from chatctl.client.connection import Client

_MAX_NICKS = 5000  # completion candidates remembered


def _nothing() -> None:
    pass


class ChatScreen:
    """The windows and what the title and status lines say. `ask(prompt)` asks for a secret
    on the input line (None: given up), `redraw()` asks for the screen to be drawn again,
    `on_close()` for it to go (the client closed, or /quit)."""

    def __init__(
        self,
        client: Client,
        rooms: Sequence[str],
        *,
        depth: ColourDepth,
        timestamp: str = DEFAULT_TIMESTAMP,
        logs: ChatLogs | None = None,
        mark: str = MARK,
        ask: Callable[[str], str | None] | None = None,
        redraw: Callable[[], None] = _nothing,
        on_close: Callable[[], None] = _nothing,
    ) -> None:
        self.client = client
        self.chat = Chat(client, None, ask_password=self.ask_new_password, terminal=True)
        self.make = EntryMaker(lambda: client.nick, depth)
        self.timestamp = timestamp
        self.logs = logs
        self.mark = mark
        self.ask = ask or (lambda _prompt: None)
        self.redraw = redraw
        self.on_close = on_close
        self.windows: WindowList[Entry] = WindowList()
        self._show_first = bool(rooms)
        self.nicks: dict[str, str] = {}  # for completion, by casefolded nick
        self.known_rooms: set[str] = set(client.rooms)
        self.members: dict[str, dict[str, str]] = {}  # room -> casefolded nick -> nick
        self.topics: dict[str, str] = {}
        self.ignored: dict[str, str] = {}  # casefolded nick -> nick
        self.away: str | None = None
        self.missed: list[Window[Entry]] = []  # where you were wanted while away
        self.status = ""  # "reconnecting: ...", or ""
        self.closed: Closed | None = None
        self.quit_reason: str | None = None  # set: the user quits
        self.width = 80  # of the last drawing, to keep a scrolled-back view still
        self._greeted = False
        self.lock = threading.RLock()
        self._commands: queue.SimpleQueue[tuple[str, Window[Entry]] | None]
        self._commands = queue.SimpleQueue()
        self._worker = threading.Thread(target=self._work, name="chatctl-commands", daemon=True)

    # -- adding lines ---------------------------------------------------------------------------

    def _put(
        self,
        window: Window[Entry],
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
        if log:
            self._log(window, entry)

    def _log(self, window: Window[Entry], entry: Entry) -> None:
        """Write `entry` to the log of `window`'s room or partner, if logs are kept."""
        if self.logs is None or window.kind == "status":
            return
        ts = entry.ts if entry.ts is not None else now_ms()
        lines = log_lines(entry, DEFAULT_TIMESTAMP, self.mark)
        failed = self.logs.write(window.kind, window.name, local_day(ts), lines)
        if failed is not None:
            self._news(self.make.error(failed))

    def show(self, lines: list[str], window: Window[Entry] | None = None) -> None:
        """Our own notes (command output), in `window` if it is still open, else the shown
        one."""
        with self.lock:
            if window is None or not self.windows.number(window):
                window = self.windows.current
            for line in lines:
                self._put(window, self.make.system(line))
        self.redraw()

    def greet(self, window: Window[Entry] | None = None) -> None:
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
        with self.lock:
            self._learn(event)
            self._route(event)
            if isinstance(event, Disconnected):
                self.status = f"reconnecting: {sanitize(event.reason, newline=' ')}"
            elif isinstance(event, Reconnected):
                self.status = ""
        if isinstance(event, Closed):
            self.closed = event
            self.on_close()
        self.redraw()

    def _room_window(self, room: str) -> Window[Entry] | None:
        """The window of a room; opened when we are in the room (the server confirmed it).
        The first to open is shown (the first --room, unless the server refused it), unless
        you went elsewhere already."""
        window = self.windows.find("room", room)
        if window is None and room in self.client.rooms:
            window = self.windows.open("room", room)
            if self._show_first and self.windows.current is self.windows.status:
                self.windows.activate(self.windows.number(window))
                self.greet(window)
            self._show_first = False
        return window

    def _window_for(self, room: str) -> Window[Entry]:
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
                text = f"{event.message} ({error_name(event.code)})"
                self._put(self.windows.current, make.error(text))
            case Disconnected():
                more = "; reconnecting" if event.retrying else ""
                self._news(make.error(f"connection lost: {event.reason}{more}", now_ms()))
            case Reconnected():
                self._news(make.system(reconnected_text(event), now_ms()))
            case Closed(error=error) if error is not None:
                self._news(make.error(str(error)))

    def _wanted(self, window: Window[Entry]) -> None:
        """Someone named you or wrote to you: remembered while you are away."""
        if self.away is not None:
            self.missed.append(window)

    def _notice(self, n: Notice) -> None:
        text = self.make.words.notice_text(n)
        entry = self.make.system(text, n.ts)
        ours = self._is_me(n.nick)
        if n.kind == "renamed":
            if n.new_nick.casefold() == self.client.nick.casefold():  # we are renamed
                for each in self.windows:  # the status window, and every room's
                    if each.kind != "query":
                        self._put(each, entry, log=True)
                return
            # (The member lists already have the new nick: _learn comes first.)
            shared = [r for r, m in self.members.items() if n.new_nick.casefold() in m]
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
                self._log(window, entry)
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

    def visible_lines(self, width: int, height: int) -> list[list[Fragment]]:
        """The shown window's last `height` screen lines (fewer at the top when scrolled
        back), laid out for `width`."""
        with self.lock:
            self.width = width
            window = self.windows.current
            need = height + window.scroll
            out: list[list[Fragment]] = []
            for entry in reversed(window.lines):
                lines = layout(entry, width, self.timestamp, self.mark)
                out.extend(reversed(lines))
                if len(out) >= need:
                    break
            out.reverse()
            window.scroll = max(0, min(window.scroll, len(out) - height))
            end = len(out) - window.scroll
            shown = out[max(0, end - height) : end]
        return [[] for _ in range(height - len(shown))] + shown

    def scroll(self, pages: int, height: int) -> None:
        with self.lock:
            window = self.windows.current
            window.scroll = max(0, window.scroll + pages * max(1, height - 1))

    def _where(self, window: Window[Entry]) -> str:
        if window.kind == "room":
            return "#" + window.name
        if window.kind == "query":
            return "@" + window.name
        return "(status)"

    def title_line(self) -> list[Fragment]:
        with self.lock:
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

    def status_line(self) -> list[Fragment]:
        with self.lock:
            number = self.windows.active
            window = self.windows.current
            activity = self.windows.activity()
            scrolled = window.scroll > 0
            away = self.away
        parts: list[Fragment] = []
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
        with self.lock:
            return activity_text(self.windows.activity())

    def prompt_message(self) -> list[Fragment]:
        with self.lock:
            where = self._where(self.windows.current)
        nick = sanitize(self.client.nick, newline=" ")
        return [("class:prompt.where", where + " "), ("", f"{nick}> ")]

    # -- switching -------------------------------------------------------------------------------

    def go(self, number: int) -> bool:
        with self.lock:
            done = self.windows.activate(number)
        self.redraw()
        return done

    def next_window(self, step: int) -> None:
        with self.lock:
            if step > 0:
                self.windows.next()
            else:
                self.windows.prev()
        self.redraw()

    def submit(self, text: str) -> None:
        """Run a line, in the window it was typed in, after the lines before it."""
        with self.lock:
            window = self.windows.current
        self._commands.put((text, window))

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
                self.on_close()
                return

    def run_line(self, text: str, window: Window[Entry]) -> None:
        """Run one line typed in `window`."""
        command = parse(text)
        with self.lock:
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

    def _open(self, kind: Kind, name: str) -> None:
        with self.lock:
            window = self.windows.open(kind, name, activate=True)
            if kind == "room":
                window.joined = True
        self.redraw()

    def _terminal(self, command: Command, window: Window[Entry]) -> None:
        """The commands that act on this screen only."""
        match command:
            case Query(nick=None):
                if window.kind != "query":
                    raise CommandError("usage: /query NICK [TEXT] (no NICK closes a query window)")
                with self.lock:
                    self.windows.close(self.windows.number(window))
                self.redraw()
            case Query(nick=str(nick), text=text):
                self._open("query", nick)
                if text:
                    self.chat.query = nick
                    outcome = self.chat.run(Text(text=text))
                    if outcome.sent is not None and not self.client.connected:
                        self.show(["not connected: it goes out after the reconnect"])
            case WhoisNick(nick=nick):
                self.show(self._whois(nick), window)
            case ClearWindow():
                with self.lock:
                    self.windows.clear(window)
                self.redraw()
            case SetAway(reason=reason):
                self.show(self._away(reason), window)
            case IgnoreNick():
                self.show(self._ignore(command), window)
            case WindowCmd():
                self._window(command, window)

    def _whois(self, nick: str) -> list[str]:
        key = nick.casefold()
        with self.lock:
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
        with self.lock:
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
        times = "once" if len(missed) == 1 else f"{len(missed)} times"
        where = ("window " if len(numbers) == 1 else "windows ") + ", ".join(map(str, numbers))
        return [f"you are back: named or written to {times} while away, in {where}"]

    def _ignore(self, command: IgnoreNick) -> list[str]:
        with self.lock:
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

    def _window(self, command: WindowCmd, window: Window[Entry]) -> None:
        with self.lock:
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
        self.redraw()


__all__ = ["ChatScreen"]
