"""Slash commands: one parser and one executor, shared by the pipe and terminal modes of join.

`parse(line)` turns a line into a Command (plain text is `Text`; `//x` sends the literal
"/x"); a malformed command raises CommandError with its usage, an unknown one with a
did-you-mean. The irssi names are there as aliases (`ALIASES`: /j, /leave, /names, /list,
/exit...). `Chat.run(command)` carries a command out on a Client and says what to show the
user.

Some commands are the terminal's alone (`TERMINAL_ONLY`: windows, /query, /whois, /clear,
/away, /ignore): chatctl/ui/tui.py runs them; in a pipe Chat refuses them with why.

Passwords are never typed on a command line: `/register` takes no argument, and asks for the
password through the `ask_password` the terminal UI gives Chat. A pipe has none (its stdin
carries messages), so there `/register` is refused with what to do instead.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from chatctl import names
from chatctl.errors import ChatctlError, ExitCode
from chatctl.names import nick_problem, room_key
from chatctl.passwords import password_problem

if TYPE_CHECKING:
    from chatctl.client.connection import Client, Outgoing

DEFAULT_HISTORY = 20
MAX_HISTORY = 10_000
ANSWER_WAIT = 10.0  # seconds /join and /part wait for the server's answer


def room_problem(room: str) -> str | None:
    """Why the server would refuse `room` as a room name, in its own words and with the
    error's name, as an Error is shown; None for a valid name."""
    problem = names.room_problem(room)
    return None if problem is None else f"{problem} (invalid_room)"


class CommandError(ChatctlError):
    """A slash command the user typed wrong; the message says how to type it."""

    exit_code = ExitCode.USAGE


@dataclass(frozen=True, kw_only=True, slots=True)
class Text:
    """Plain text for the current room."""

    text: str


@dataclass(frozen=True, kw_only=True, slots=True)
class JoinRoom:
    room: str


@dataclass(frozen=True, kw_only=True, slots=True)
class PartRoom:
    room: str | None = None  # None: the current room
    reason: str = ""


@dataclass(frozen=True, kw_only=True, slots=True)
class ListRooms:
    pass


@dataclass(frozen=True, kw_only=True, slots=True)
class WhoIs:
    room: str | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class NewNick:
    nick: str


@dataclass(frozen=True, kw_only=True, slots=True)
class DirectMsg:
    nick: str
    text: str


@dataclass(frozen=True, kw_only=True, slots=True)
class Action:
    text: str


@dataclass(frozen=True, kw_only=True, slots=True)
class Quit:
    reason: str = ""


@dataclass(frozen=True, kw_only=True, slots=True)
class Help:
    topic: str | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class ShowHistory:
    count: int = DEFAULT_HISTORY


@dataclass(frozen=True, kw_only=True, slots=True)
class RegisterNick:
    """Make the current nick an account; the password is asked for, never typed inline."""


@dataclass(frozen=True, kw_only=True, slots=True)
class ModerateRoom:
    """A room owner's or operator's change: `action` is one of protocol.MODERATE_ACTIONS,
    `target` a nick or account, `text` a topic ("" clears it) or a kick's or ban's reason."""

    action: str
    room: str | None = None  # None: the current room
    target: str = ""
    text: str = ""


@dataclass(frozen=True, kw_only=True, slots=True)
class Query:
    """Open (and go to) the window of direct messages with `nick`, sending `text` there if
    given; without a nick, close the current one."""

    nick: str | None = None
    text: str = ""


@dataclass(frozen=True, kw_only=True, slots=True)
class WhoisNick:
    nick: str


@dataclass(frozen=True, kw_only=True, slots=True)
class ClearWindow:
    pass


@dataclass(frozen=True, kw_only=True, slots=True)
class SetAway:
    reason: str = ""  # "": back


@dataclass(frozen=True, kw_only=True, slots=True)
class IgnoreNick:
    nick: str | None = None  # None: list the ignored nicks
    undo: bool = False  # /unignore


WINDOW_ACTIONS = ("goto", "next", "prev", "close", "list")


@dataclass(frozen=True, kw_only=True, slots=True)
class WindowCmd:
    """`/window N`, `/window goto NAME`, `/window next|prev|close|list`."""

    action: str
    number: int | None = None
    name: str = ""


Command = (
    Text
    | JoinRoom
    | PartRoom
    | ListRooms
    | WhoIs
    | NewNick
    | DirectMsg
    | Action
    | Quit
    | Help
    | ShowHistory
    | RegisterNick
    | ModerateRoom
    | Query
    | WhoisNick
    | ClearWindow
    | SetAway
    | IgnoreNick
    | WindowCmd
)

# name -> (usage, what it does); the order is the order /help shows.
COMMANDS: dict[str, tuple[str, str]] = {
    "join": ("/join ROOM", "join a room and go to its window"),
    "part": ("/part [ROOM [REASON]]", "leave a room (default: the current one)"),
    "rooms": ("/rooms", "list every room and its number of members"),
    "who": ("/who [ROOM]", "list the members of a room"),
    "whois": ("/whois NICK", "which of your rooms NICK is in"),
    "msg": ("/msg NICK TEXT", "send a direct message"),
    "query": ("/query [NICK [TEXT]]", "open a window to talk with NICK (no NICK: close it)"),
    "me": ("/me TEXT", "send an action (* you TEXT)"),
    "nick": ("/nick NICK", "change your nick"),
    "history": (
        "/history [N]",
        f"show the last N messages of the room (default {DEFAULT_HISTORY})",
    ),
    "window": ("/window N|next|prev|close|list", "switch windows (Alt-N, Ctrl-N/P), or close one"),
    "clear": ("/clear", "clear this window's lines"),
    "away": ("/away [REASON]", "mark yourself away on this screen (no REASON: back)"),
    "ignore": ("/ignore [NICK]", "hide NICK's messages (no NICK: list who is ignored)"),
    "unignore": ("/unignore NICK", "show NICK's messages again"),
    "register": ("/register", "make your nick an account (asks for a password)"),
    "topic": (
        "/topic [#ROOM] [TEXT]",
        "set a room's topic (- clears it; no TEXT shows it)",
    ),
    "private": ("/private [ROOM]", "make a room invite-only"),
    "public": ("/public [ROOM]", "open a private room to everyone"),
    "invite": ("/invite NICK [ROOM]", "let a nick or account into a private room"),
    "uninvite": ("/uninvite NICK [ROOM]", "withdraw an invitation"),
    "kick": ("/kick NICK [REASON]", "put someone out of the current room"),
    "ban": ("/ban NICK [REASON]", "keep a nick or account out of the current room"),
    "unban": ("/unban NICK", "lift a ban from the current room"),
    "op": ("/op ACCOUNT", "make an account an operator of the current room (owner only)"),
    "deop": ("/deop ACCOUNT", "take an operator's rights in the current room (owner only)"),
    "quit": ("/quit [REASON]", "leave the chat"),
    "help": ("/help [COMMAND]", "show this help, or a command's"),
}

# The other names irssi users type: alias -> what it stands for (a command, maybe with its
# first words).
ALIASES: dict[str, str] = {
    "j": "join",
    "leave": "part",
    "list": "rooms",
    "names": "who",
    "wi": "whois",
    "m": "msg",
    "q": "query",
    "win": "window",
    "wc": "window close",
    "t": "topic",
    "exit": "quit",
}

# What works only on a terminal (they act on windows or on what this screen shows).
TERMINAL_ONLY = frozenset({"whois", "query", "window", "clear", "away", "ignore", "unignore"})

# More for /help COMMAND, where one line is not enough.
_DETAILS: dict[str, list[str]] = {
    "window": [
        "keys: Alt-1..9 and Alt-0 (window 10), Alt-Left/Alt-Right or Ctrl-P/Ctrl-N, "
        "PageUp/PageDown scroll",
        "/window goto NAME goes to #ROOM's or NICK's window; /window close closes this one "
        "(a room's only once you have left it: /part)",
    ],
    "whois": ["the server has no whois: this answers from the member lists of your rooms"],
    "away": ["the server has no away status: others are not told; your status line says it"],
    "ignore": ["on this screen only: the server still delivers, and others still see them"],
    "query": ["plain text in that window is a direct message to NICK"],
}

_COMMAND = re.compile(r"/(\S*)(?:\s+(.*))?", re.DOTALL)


def _usage(name: str) -> CommandError:
    return CommandError(f"usage: {COMMANDS[name][0]}")


def resolve(name: str) -> str | None:
    """The command a name (or an alias, with or without its slash) stands for, or None."""
    name = name.lstrip("/").lower()
    if name in COMMANDS:
        return name
    alias = ALIASES.get(name)
    return None if alias is None else alias.split()[0]


def suggestions(name: str) -> list[str]:
    """The commands (names or aliases) a mistyped `name` may have meant, best first: those
    it is the start of, then the close ones."""
    name = name.lower()
    known = [*COMMANDS, *ALIASES]
    if not name:
        return []
    found = [c for c in known if c.startswith(name) and c != name]
    found += difflib.get_close_matches(name, known, n=3, cutoff=0.6)
    return list(dict.fromkeys(found))[:4]


def _unknown(name: str) -> CommandError:
    shown = name if name.isprintable() and len(name) <= 20 else "?"
    guesses = suggestions(name) if shown != "?" else []
    if guesses:
        listed = " or ".join("/" + g for g in guesses)
        return CommandError(f"unknown command /{shown}: did you mean {listed}? /help lists all")
    return CommandError(f"unknown command /{shown}: /help lists the commands")


def parse(line: str) -> Command:
    """The command a line stands for. Raises CommandError for a malformed one."""
    if not line.startswith("/"):
        return Text(text=line)
    if line.startswith("//"):
        return Text(text=line[1:])
    m = _COMMAND.fullmatch(line)
    assert m is not None  # the pattern matches anything that starts with "/"
    name = m.group(1).lower()
    rest = (m.group(2) or "").strip()
    if name in ALIASES:
        name, _, first = ALIASES[name].partition(" ")
        rest = f"{first} {rest}".strip()
    args = rest.split()
    if name not in COMMANDS:
        raise _unknown(name)
    if name in TERMINAL_ONLY:
        return _parse_terminal(name, rest, args)
    if name == "join":
        if len(args) != 1:
            raise _usage(name)
        return JoinRoom(room=room_key(args[0]))
    if name == "part":
        if not args:
            return PartRoom()
        return PartRoom(room=room_key(args[0]), reason=rest[len(args[0]) :].strip())
    if name == "rooms":
        if args:
            raise _usage(name)
        return ListRooms()
    if name == "who":
        if len(args) > 1:
            raise _usage(name)
        return WhoIs(room=room_key(args[0]) if args else None)
    if name == "nick":
        if len(args) != 1:
            raise _usage(name)
        return NewNick(nick=args[0])
    if name == "msg":
        if len(args) < 2:
            raise _usage(name)
        return DirectMsg(nick=args[0], text=rest[len(args[0]) :].strip())
    if name == "me":
        if not rest:
            raise _usage(name)
        return Action(text=rest)
    if name == "history":
        if not args:
            return ShowHistory()
        if len(args) != 1 or not args[0].isascii() or not args[0].isdigit():
            raise _usage(name)
        count = int(args[0])
        if not 1 <= count <= MAX_HISTORY:
            raise CommandError(f"/history takes a number from 1 to {MAX_HISTORY}")
        return ShowHistory(count=count)
    if name == "quit":
        return Quit(reason=rest)
    if name in _MODERATION or name == "register":
        return _parse_moderation(name, rest, args)
    # help
    if len(args) > 1:
        raise _usage(name)
    return Help(topic=args[0].lstrip("/").lower() if args else None)


def _nick_arg(name: str, nick: str) -> str:
    problem = nick_problem(nick)
    if problem is not None:
        raise CommandError(f"/{name}: {problem}")
    return nick


def _parse_terminal(name: str, rest: str, args: list[str]) -> Command:
    """The terminal's own commands (TERMINAL_ONLY)."""
    if name == "query":
        if not args:
            return Query()
        return Query(nick=_nick_arg(name, args[0]), text=rest[len(args[0]) :].strip())
    if name == "whois":
        if len(args) != 1:
            raise _usage(name)
        return WhoisNick(nick=_nick_arg(name, args[0]))
    if name == "clear":
        if args:
            raise _usage(name)
        return ClearWindow()
    if name == "away":
        return SetAway(reason=rest)
    if name in ("ignore", "unignore"):
        if len(args) > 1 or (name == "unignore" and not args):
            raise _usage(name)
        nick = _nick_arg(name, args[0]) if args else None
        return IgnoreNick(nick=nick, undo=name == "unignore")
    # window
    if not args:
        return WindowCmd(action="list")
    word = args[0].lower()
    if len(args) == 1 and word.isascii() and word.isdigit():
        number = int(word)
        if not 1 <= number <= 999:
            raise CommandError("/window takes a number from 1")
        return WindowCmd(action="goto", number=number)
    if word == "goto" and len(args) == 2:
        return WindowCmd(action="goto", name=args[1])
    if word in WINDOW_ACTIONS and word != "goto" and len(args) == 1:
        return WindowCmd(action=word)
    if len(args) == 1 and word not in WINDOW_ACTIONS:
        return WindowCmd(action="goto", name=args[0])
    raise _usage(name)


# Moderation commands by the shape of their arguments.
_TARGET_ROOM = ("invite", "uninvite")  # NICK [ROOM]
_TARGET_REASON = ("kick", "ban")  # NICK [REASON], in the current room
_TARGET_ONLY = ("unban", "op", "deop")  # NICK, in the current room
_ROOM_ONLY = ("private", "public")  # [ROOM]
_MODERATION = ("topic", *_TARGET_ROOM, *_TARGET_REASON, *_TARGET_ONLY, *_ROOM_ONLY)
CLEAR_TOPIC = "-"  # `/topic -` clears the topic


def _parse_moderation(name: str, rest: str, args: list[str]) -> Command:
    if name == "register":
        if args:
            raise CommandError("usage: /register (it asks for the password: never type it here)")
        return RegisterNick()
    if name == "topic":
        room: str | None = None
        text = rest
        if args and args[0].startswith("#"):
            if args[0] == "#":
                raise _usage(name)
            room = room_key(args[0][1:])
            text = rest[len(args[0]) :].strip()
        if not text:
            return WhoIs(room=room)  # the topic is shown with the members
        return ModerateRoom(action=name, room=room, text="" if text == CLEAR_TOPIC else text)
    if name in _TARGET_ROOM:
        if len(args) not in (1, 2):
            raise _usage(name)
        room = room_key(args[1]) if len(args) == 2 else None
        return ModerateRoom(action=name, room=room, target=args[0])
    if name in _TARGET_REASON:
        if not args:
            raise _usage(name)
        return ModerateRoom(action=name, target=args[0], text=rest[len(args[0]) :].strip())
    if name in _TARGET_ONLY:
        if len(args) != 1:
            raise _usage(name)
        return ModerateRoom(action=name, target=args[0])
    # private, public
    if len(args) > 1:
        raise _usage(name)
    return ModerateRoom(action=name, room=room_key(args[0]) if args else None)


def _format_moderation(command: ModerateRoom) -> str:
    action, room, target, text = command.action, command.room, command.target, command.text
    if action == "topic":
        where = f" #{room}" if room else ""
        return f"/topic{where} {text or CLEAR_TOPIC}"
    if action in _TARGET_ROOM:
        return f"/{action} {target} {room}" if room else f"/{action} {target}"
    if action in _TARGET_REASON:
        return f"/{action} {target} {text}".rstrip()
    if action in _TARGET_ONLY:
        return f"/{action} {target}"
    return f"/{action} {room}" if room else f"/{action}"


def format_command(command: Command) -> str:
    """The line that parses back to `command` (the inverse of parse, for valid commands)."""
    match command:
        case Text(text=text):
            return "/" + text if text.startswith("/") else text
        case JoinRoom(room=room):
            return f"/join {room}"
        case PartRoom(room=None):
            return "/part"
        case PartRoom(room=str(room), reason=reason):
            return f"/part {room} {reason}".rstrip()
        case ListRooms():
            return "/rooms"
        case WhoIs(room=room):
            return f"/who {room}" if room else "/who"
        case NewNick(nick=nick):
            return f"/nick {nick}"
        case DirectMsg(nick=nick, text=text):
            return f"/msg {nick} {text}"
        case Action(text=text):
            return f"/me {text}"
        case Quit(reason=reason):
            return f"/quit {reason}".rstrip()
        case Help(topic=topic):
            return f"/help {topic}" if topic else "/help"
        case ShowHistory(count=count):
            return f"/history {count}"
        case RegisterNick():
            return "/register"
        case ModerateRoom():
            return _format_moderation(command)
        case Query(nick=None):
            return "/query"
        case Query(nick=str(nick), text=text):
            return f"/query {nick} {text}".rstrip()
        case WhoisNick(nick=nick):
            return f"/whois {nick}"
        case ClearWindow():
            return "/clear"
        case SetAway(reason=reason):
            return f"/away {reason}".rstrip()
        case IgnoreNick(nick=nick, undo=undo):
            name = "unignore" if undo else "ignore"
            return f"/{name} {nick}" if nick else f"/{name}"
        case WindowCmd(action="goto", number=int(number)):
            return f"/window {number}"
        case WindowCmd(action="goto", name=name):
            return f"/window goto {name}"
        case WindowCmd(action=action):
            return f"/window {action}"
    raise AssertionError(command)


def aliases_of(name: str) -> list[str]:
    return [alias for alias, target in ALIASES.items() if target.split()[0] == name]


def help_lines(topic: str | None = None, *, terminal: bool = True) -> list[str]:
    """/help: every command (those of the terminal only when `terminal`), or one command's
    usage, aliases and details."""
    if topic is not None:
        name = resolve(topic)
        if name is None:
            shown = topic if topic.isprintable() and len(topic) <= 20 else "?"
            return [str(_unknown(shown)).replace("unknown command", "no command")]
        usage, what = COMMANDS[name]
        lines = [f"{usage}  {what}"]
        aliases = [
            f"/{a} (/{ALIASES[a]})" if " " in ALIASES[a] else "/" + a for a in aliases_of(name)
        ]
        if aliases:
            lines.append("also: " + ", ".join(aliases))
        lines.extend(_DETAILS.get(name, []))
        if name in TERMINAL_ONLY and not terminal:
            lines.append(f"/{name} works only on a terminal")
        return lines
    listed = {n: v for n, v in COMMANDS.items() if terminal or n not in TERMINAL_ONLY}
    width = max(len(usage) for usage, _ in listed.values())
    lines = [f"{usage:<{width}}  {what}" for usage, what in listed.values()]
    lines.append(f"{'//TEXT':<{width}}  send TEXT that starts with a slash")
    return lines


@dataclass(kw_only=True)
class Outcome:
    """What a command did: lines to show the user, a message on its way, whether to quit."""

    info: list[str] = field(default_factory=list)
    sent: Outgoing | None = None
    quit: bool = False
    quit_reason: str = ""


PIPE_REGISTER = (
    "/register asks for a password, which a pipe cannot do (its input is messages): "
    "register with chatctl join on a terminal, or ask the operator (chatctl accounts add)"
)


class Chat:
    """The state the two join modes share: the client and the current room. `ask_password`
    (the terminal's) asks for a new password twice and returns it, or raises CommandError;
    without it, `/register` is refused.

    `/join` and `/part` wait (up to `answer_wait` seconds) for the server's answer before the
    current room changes: a refused join leaves it as it was, and only the server's notices
    say that we joined or left."""

    def __init__(
        self,
        client: Client,
        room: str | None,
        *,
        ask_password: Callable[[], str] | None = None,
        answer_wait: float = ANSWER_WAIT,
        terminal: bool = False,
    ) -> None:
        self.client = client
        self.room = room
        # A nick: plain text and /me go to it as direct messages (a terminal's query window).
        self.query: str | None = None
        self.ask_password = ask_password
        self.answer_wait = answer_wait
        # On a terminal, windows say where you are: /part of the current room does not make
        # another one current (a pipe's way), and /help lists the terminal's commands too.
        self.terminal = terminal

    def run_line(self, line: str) -> Outcome:
        """Parse and run one line; an error becomes an info line."""
        try:
            return self.run(parse(line))
        except ChatctlError as exc:  # a typo, or a request while disconnected
            return Outcome(info=[str(exc)])

    def _need_room(self, room: str | None = None) -> str:
        if room:
            return room
        if self.query is not None:
            raise CommandError(
                f"this window is a conversation with {self.query}, not a room: name the room"
            )
        if self.room is None:
            raise CommandError("you are in no room: /join ROOM first")
        if self.room not in self.client.rooms:  # kicked or banned from it
            raise CommandError(f"you are not in #{self.room} any more: /join ROOM")
        return self.room

    def run(self, command: Command) -> Outcome:
        client = self.client
        match command:
            case Text(text=text) if self.query is not None:
                return Outcome(sent=client.tell(self.query, text))
            case Action(text=text) if self.query is not None:
                return Outcome(sent=client.tell(self.query, text, action=True))
            case Text(text=text):
                return Outcome(sent=client.say(self._need_room(), text))
            case Action(text=text):
                return Outcome(sent=client.say(self._need_room(), text, action=True))
            case DirectMsg(nick=nick, text=text):
                return Outcome(sent=client.tell(nick, text))
            case JoinRoom(room=room):
                return self._join(room)
            case PartRoom(room=room, reason=reason):
                return self._part(room, reason)
            case ListRooms():
                client.list_rooms()
                return Outcome()
            case WhoIs(room=room):
                client.who(self._need_room(room))
                return Outcome()
            case NewNick(nick=nick):
                client.change_nick(nick)
                return Outcome()
            case ShowHistory(count=count):
                client.history(self._need_room(), limit=count)
                return Outcome()
            case Quit(reason=reason):
                return Outcome(quit=True, quit_reason=reason)
            case Help(topic=topic):
                return Outcome(info=help_lines(topic, terminal=self.terminal))
            case RegisterNick():
                return self._register()
            case ModerateRoom(action=action, room=room, target=target, text=text):
                room = room_key(self._need_room(room))
                client.moderate(room, action, target=target, text=text)
                return Outcome()
            case Query() | WhoisNick() | ClearWindow() | SetAway() | IgnoreNick() | WindowCmd():
                name = format_command(command).split()[0]
                raise CommandError(f"{name} works only on a terminal (a pipe has no windows)")
        raise AssertionError(command)

    def _where(self) -> str:
        return f"still in #{self.room}" if self.room else "still in no room"

    def _join(self, room: str) -> Outcome:
        problem = room_problem(room)
        if problem is not None:
            raise CommandError(problem)
        room = room_key(room)
        self.client.join(room)
        joined = self.client.wait_joined(room, self.answer_wait)
        if joined is None:
            return Outcome(info=[f"no answer to /join #{room} yet; {self._where()}"])
        if joined:
            self.room = room
        return Outcome()  # the server's notice, or its error, says what happened

    def _part(self, room: str | None, reason: str) -> Outcome:
        room = room_key(self._need_room(room))
        if room not in self.client.rooms:
            raise CommandError(f"you are not in #{room} (not_in_room)")
        self.client.part(room, reason)
        if self.terminal:
            where = ""
        elif room == self.room:
            self.room = self.client.rooms[-1] if self.client.rooms else None
            where = f"now in #{self.room}" if self.room else "in no room now"
        else:
            where = ""
        if self.client.wait_parted(room, self.answer_wait) is None:
            return Outcome(info=[f"no answer to /part #{room} yet"])
        # "left" is the server's to say (our own `left` notice); here only where we are now.
        return Outcome(info=[where] if where else [])

    def _register(self) -> Outcome:
        if self.ask_password is None:
            raise CommandError(PIPE_REGISTER)
        if self.client.account:
            raise CommandError(f"you are already logged in as {self.client.account}")
        password = self.ask_password()
        problem = password_problem(password)
        if problem is not None:
            raise CommandError(f"not registered: {problem}")
        self.client.register(password)
        return Outcome()


__all__ = [
    "ALIASES",
    "ANSWER_WAIT",
    "CLEAR_TOPIC",
    "COMMANDS",
    "PIPE_REGISTER",
    "TERMINAL_ONLY",
    "Chat",
    "ClearWindow",
    "Command",
    "CommandError",
    "IgnoreNick",
    "ModerateRoom",
    "Outcome",
    "Query",
    "RegisterNick",
    "SetAway",
    "WhoisNick",
    "WindowCmd",
    "aliases_of",
    "format_command",
    "help_lines",
    "parse",
    "resolve",
    "room_problem",
    "suggestions",
]
