"""How join shows events: as text (optionally coloured) or as JSON Lines.

Everything a peer wrote passes through `sanitize` before it reaches a terminal: control
characters, escape sequences and bidirectional overrides are made visible instead of obeyed,
so a hostile message cannot move the cursor, retitle the window or hide text.
The JSON Lines schema is documented in docs/join.md.
"""

from __future__ import annotations

import colorsys
import hashlib
import json
import os
import re
import time
import zlib
from collections.abc import Callable, Mapping
from typing import Any, Literal

from chatctl.client.events import (
    AnyEvent,
    Closed,
    Delivered,
    Disconnected,
    Reconnected,
    Refused,
)
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
    Welcome,
)

# C0 controls but tab/newline, DEL, C1 controls (U+009B is a one-character CSI), the Unicode
# line and paragraph separators, and the bidi controls that can make text display in a
# different order than it is stored.
_UNSAFE = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]"
)
_JSON_UNSAFE = re.compile("[\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def _visible(m: re.Match[str]) -> str:
    ch = m.group()
    code = ord(ch)
    if code < 0x20:
        return "^" + chr(code + 0x40)  # ESC -> ^[, as cat -v shows it
    return f"<U+{code:04X}>"


def sanitize(text: str, *, newline: str = "\n") -> str:
    """`text` made safe to print: unsafe characters shown, tabs kept, newlines replaced by
    `newline` (a single-line output passes an indent or a visible marker)."""
    text = _UNSAFE.sub(_visible, text)
    return text.replace("\n", newline) if newline != "\n" else text


# Colours from the 16 basic ANSI ones, which every terminal theme keeps readable.
_NICK_COLOURS = (31, 32, 33, 34, 35, 36, 91, 92, 93, 94, 95, 96)
BASIC_NAMES = {
    31: "ansired",
    32: "ansigreen",
    33: "ansiyellow",
    34: "ansiblue",
    35: "ansimagenta",
    36: "ansicyan",
    91: "ansibrightred",
    92: "ansibrightgreen",
    93: "ansibrightyellow",
    94: "ansibrightblue",
    95: "ansibrightmagenta",
    96: "ansibrightcyan",
}

ColourDepth = Literal["none", "basic", "256", "truecolor"]


def colour_depth(environ: Mapping[str, str] | None = None) -> ColourDepth:
    """How many colours the terminal shows, from the environment as terminals set it:
    NO_COLOR (any value) none; COLORTERM=truecolor or 24bit; a TERM with 256color; else the
    basic 16 (a `dumb` terminal: none)."""
    env = os.environ if environ is None else environ
    if "NO_COLOR" in env:
        return "none"
    term = env.get("TERM", "")
    if term == "dumb":
        return "none"
    if env.get("COLORTERM", "").lower() in ("truecolor", "24bit"):
        return "truecolor"
    if "256color" in term:
        return "256"
    return "basic"


def _luminance(rgb: tuple[int, int, int]) -> float:
    def linear(v: int) -> float:
        c = v / 255
        return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = map(linear, rgb)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def _readable(rgb: tuple[int, int, int]) -> bool:
    """Readable on a dark and on a light background (WCAG contrast at least 3 against black,
    2 against white): a nick's colour must do on either theme."""
    lum = _luminance(rgb)
    return (lum + 0.05) / 0.05 >= 3.0 and 1.05 / (lum + 0.05) >= 2.0


_CUBE = (0, 95, 135, 175, 215, 255)  # the levels of xterm's 6x6x6 colour cube (16-231)
# The cube's colours that are readable on both themes and not greyish: 98 of them.
XTERM_PALETTE: tuple[int, ...] = tuple(
    16 + i
    for i in range(216)
    if _readable(rgb := (_CUBE[i // 36], _CUBE[i // 6 % 6], _CUBE[i % 6]))
    and max(rgb) - min(rgb) >= 60
)


def xterm_rgb(index: int) -> tuple[int, int, int]:
    """The colour of a cube index (16-231) of the 256-colour palette."""
    i = index - 16
    return _CUBE[i // 36], _CUBE[i // 6 % 6], _CUBE[i % 6]


def _nick_hash(nick: str) -> int:
    return int.from_bytes(hashlib.blake2s(nick.casefold().encode()).digest()[:8], "big")


def nick_colour(nick: str) -> int:
    """The same basic ANSI colour for a nick in every session (case-insensitive, like nicks):
    the fallback where the terminal shows only 16 colours."""
    return _NICK_COLOURS[zlib.crc32(nick.casefold().encode()) % len(_NICK_COLOURS)]


def nick_rgb(nick: str, depth: ColourDepth) -> tuple[int, int, int] | None:
    """A nick's colour from the large palettes: one of XTERM_PALETTE's 98 on a 256-colour
    terminal, or on a truecolor one any of 360 hues at 3 saturations and lightnesses (each
    made readable on both themes); None for a basic or colourless terminal. Deterministic
    and case-insensitive."""
    h = _nick_hash(nick)
    if depth == "256":
        return xterm_rgb(XTERM_PALETTE[h % len(XTERM_PALETTE)])
    if depth != "truecolor":
        return None
    hue = (h % 360) / 360
    saturation = (0.55, 0.7, 0.85)[(h >> 16) % 3]
    lightness = (0.45, 0.55, 0.65)[(h >> 24) % 3]
    for _ in range(40):
        rgb = tuple(round(c * 255) for c in colorsys.hls_to_rgb(hue, lightness, saturation))
        r, g, b = rgb
        if _readable((r, g, b)):
            return r, g, b
        # Too dark for a dark theme, or too light for a light one: move towards readable.
        lightness += 0.02 if _luminance((r, g, b)) < 0.1 else -0.02
    return r, g, b


def nick_sgr(nick: str, depth: ColourDepth) -> str:
    """The SGR parameters of a nick's colour (without the bold)."""
    rgb = nick_rgb(nick, depth)
    if rgb is None:
        return str(nick_colour(nick))
    if depth == "256":
        return f"38;5;{XTERM_PALETTE[_nick_hash(nick) % len(XTERM_PALETTE)]}"
    return "38;2;{};{};{}".format(*rgb)


def nick_style(nick: str, depth: ColourDepth) -> str:
    """A nick's colour as a prompt_toolkit style: `#rrggbb` (an exact cube colour at 256
    colours), or an ANSI colour name."""
    rgb = nick_rgb(nick, depth)
    if rgb is None:
        return BASIC_NAMES[nick_colour(nick)]
    return "#{:02x}{:02x}{:02x}".format(*rgb)


DEFAULT_TIMESTAMP = "%H:%M:%S"


def clock(ts_ms: int, fmt: str = DEFAULT_TIMESTAMP) -> str:
    return time.strftime(fmt, time.localtime(ts_ms / 1000))


def timestamp_problem(fmt: str) -> str | None:
    """Why `fmt` cannot be a timestamp format (a strftime one, on one line), or None."""
    try:
        sample = time.strftime(fmt, time.localtime(0))
    except (ValueError, OverflowError) as exc:
        return f"not a strftime format: {exc}"
    if not sample.isprintable():
        return "the timestamp must be printable, on one line"
    if len(sample) > 40:
        return "the timestamp is longer than 40 characters"
    if sample != sample.strip():
        return "the timestamp may not start or end with a space"
    return None


def gap_text(gap: Gap) -> str:
    span = str(gap.first) if gap.first == gap.last else f"{gap.first}\u2013{gap.last}"
    return f"missed messages {span} (no longer stored)"


def error_name(code: int) -> str:
    try:
        return ErrorCode(code).name.lower()
    except ValueError:
        return str(code)


class TextRenderer:
    """One line (or, on a terminal, an indented block) per event. `colour` adds ANSI styles:
    a colour per nick, dim timestamps and history, system notices apart from speech."""

    def __init__(
        self,
        own_nick: Callable[[], str],
        *,
        colour: bool,
        single_line: bool,
        timestamp: str = DEFAULT_TIMESTAMP,
        depth: ColourDepth = "basic",
    ) -> None:
        self.own_nick = own_nick
        self.colour = colour
        self.timestamp = timestamp
        self.depth = depth
        # A pipe promises one event per line; a terminal indents continuation lines.
        self.newline = "\u23ce " if single_line else "\n" + " " * 11

    def _style(self, code: str, text: str) -> str:
        return f"\x1b[{code}m{text}\x1b[0m" if self.colour else text

    def _nick(self, nick: str) -> str:
        return self._style(f"1;{nick_sgr(nick, self.depth)}", sanitize(nick, newline=" "))

    def _text(self, text: str) -> str:
        return sanitize(text, newline=self.newline)

    def _line(self, ts: int | None, body: str, *, dim: bool = False) -> str:
        if ts is not None:
            stamp = self._style("2", clock(ts, self.timestamp)) + " " if self.timestamp else ""
        else:
            stamp = " " * (len(clock(0, self.timestamp)) + 1) if self.timestamp else ""
        return stamp + (self._style("2", body) if dim and self.colour else body)

    def system(self, text: str, ts: int | None = None) -> str:
        """A notice from the chat system or this program, styled apart from speech."""
        return self._line(ts, self._style("3;90", "-- " + self._text(text)))

    def error(self, text: str) -> str:
        return self._line(None, self._style("31", "!! " + self._text(text)))

    def _speech(
        self, ts: int, where: str, nick: str, text: str, action: bool, dim: bool = False
    ) -> str:
        if dim:  # a replay: all of it dimmed (inner styles would end the dimming early)
            who, where = sanitize(nick, newline=" "), where + " " if where else ""
        else:
            who, where = self._nick(nick), self._style("90", where) + " " if where else ""
        shown = self._text(text)
        if not dim and self.colour and self.mentions_me(nick, text):
            shown = self._style("1;33", shown)  # someone said our name
        body = f"{where}* {who} {shown}" if action else f"{where}<{who}> {shown}"
        return self._line(ts, body, dim=dim)

    def mentions_me(self, sender: str, text: str) -> bool:
        """Whether someone else's `text` names our nick (as a word)."""
        me = self.own_nick()
        if not me or sender.casefold() == me.casefold():
            return False
        return re.search(rf"(?<![\w-]){re.escape(me)}(?![\w-])", text, re.IGNORECASE) is not None

    def render(self, event: AnyEvent) -> str | None:
        match event:
            case Message():
                return self._speech(
                    event.ts,
                    "#" + sanitize(event.room, newline=" "),
                    event.sender,
                    event.text,
                    event.action,
                    dim=event.history,
                )
            case DirectMessage():
                peer = event.sender
                return self._speech(
                    event.ts, self._style("35", "[dm]"), peer, event.text, event.action
                )
            case Delivered(request=Say() as say, ack=ack, nick=nick):
                return self._speech(
                    ack.ts, "#" + sanitize(say.room, newline=" "), nick, say.text, say.action
                )
            case Delivered(request=Tell() as tell, ack=ack):
                to = sanitize(tell.to, newline=" ")
                return self._speech(
                    ack.ts,
                    self._style("35", f"[dm \u2192 {to}]"),
                    event.nick,
                    tell.text,
                    tell.action,
                )
            case Notice():
                return self.system(self.notice_text(event), event.ts)
            case Gap():
                return self.system(f"#{event.room}: {gap_text(event)}")
            case Members():
                return self._members(event)
            case RoomList():
                return self.system(self.rooms_text(event))
            case HistoryEnd():
                return None
            case Refused(error=error):
                return self.error(f"not sent: {error.message} ({error_name(error.code)})")
            case Error():
                return self.error(f"{event.message} ({error_name(event.code)})")
            case Disconnected():
                more = "; reconnecting" if event.retrying else ""
                return self.error(f"connection lost: {event.reason}{more}")
            case Reconnected():
                return self.system(reconnected_text(event))
            case Closed():
                return None if event.error is None else self.error(str(event.error))
        return None

    def _members(self, event: Members) -> str:
        """Who is in a room, and its topic on a line of its own (a join shows both)."""
        return "\n".join(self.system(text) for text in self.members_texts(event))

    def members_texts(self, event: Members) -> list[str]:
        nicks = ", ".join(sanitize(n, newline=" ") for n in event.nicks) or "nobody"
        private = " (private)" if event.private else ""
        room = self._one_line(event.room)
        texts = [f"#{room}{private}: {len(event.nicks)} here: {nicks}"]
        if event.topic:
            texts.append(f"topic of #{room}: {self._one_line(event.topic)}")
        return texts

    def rooms_text(self, event: RoomList) -> str:
        rooms = ", ".join(f"#{self._one_line(r)} ({n})" for r, n in sorted(event.rooms.items()))
        return f"rooms: {rooms or 'none'}"

    def _one_line(self, text: str) -> str:
        return sanitize(text, newline=" ")

    def _someone(self, name: str) -> str:
        """A moderation target as the user reads it: "you" when it is us."""
        me = self.own_nick()
        if me and name.casefold() == me.casefold():
            return "you"
        return self._one_line(name)

    def _moderation(self, n: Notice, who: str) -> str | None:
        """The line for a moderation notice (protocol.NOTICE_KINDS), or None for another."""
        room = f"#{n.room}"
        target = self._someone(n.target)
        reason = f" ({self._one_line(n.reason)})" if n.reason else ""
        match n.kind:
            case "topic" if n.reason:
                return f"{who} set the topic of {room}: {self._one_line(n.reason)}"
            case "topic":
                return f"{who} cleared the topic of {room}"
            case "private":
                return f"{who} made {room} private (invite only)"
            case "public":
                return f"{who} made {room} public"
            case "invited":
                return f"{who} invited {target} to {room}"
            case "uninvited":
                return f"{who} withdrew the invitation of {target} to {room}"
            case "kicked":
                return f"{who} kicked {target} from {room}{reason}"
            case "banned":
                return f"{who} banned {target} from {room}{reason}"
            case "unbanned":
                return f"{who} lifted the ban on {target} in {room}"
            case "op":
                return f"{who} made {target} an operator of {room}"
            case "deop":
                return f"{who} took operator rights in {room} from {target}"
        return None

    def notice_text(self, n: Notice) -> str:
        """A notice in words, its peer-supplied parts made safe."""
        who = sanitize(n.nick, newline=" ")
        if n.kind == "registered":
            return f"you are now registered as {who}, and logged in"
        moderation = self._moderation(n, who)
        if moderation is not None:
            return moderation
        room = f"#{n.room} " if n.room else ""
        reason = f" ({n.reason})" if n.reason else ""
        if n.kind == "joined":
            return f"{room}{who} joined"
        if n.kind == "left":
            return f"{room}{who} left{reason}"
        if n.kind == "renamed":
            return f"{who} is now {sanitize(n.new_nick, newline=' ')}"
        if n.kind == "dropped":
            return f"{room}{who} dropped{reason}"
        return f"{room}{who} {n.kind}{reason}"


def welcome_text(welcome: Welcome) -> str:
    """Who the server says we are: "alice", or "alice, logged in as alice"."""
    nick = sanitize(welcome.nick, newline=" ")
    if welcome.account:
        return f"{nick}, logged in as {sanitize(welcome.account, newline=' ')}"
    return nick


def reconnected_text(event: Reconnected) -> str:
    """The line after a reconnect, `reconnected to HOST:PORT as alice`: which server, since
    with several addresses it may be another one than before, and whether that server
    started a new session."""
    where = f" to {event.address.hostport}" if event.address is not None else ""
    text = f"reconnected{where} as {welcome_text(event.welcome)}"
    if event.new_session:
        text += " (a new session: the server did not know the old one)"
    return text


def event_record(event: AnyEvent) -> dict[str, Any] | None:
    """The JSON Lines record of an event (schema: docs/join.md), or None if not shown."""
    match event:
        case Message():
            return {
                "type": "message",
                "room": event.room,
                "seq": event.seq,
                "ts": event.ts,
                "nick": event.sender,
                "text": event.text,
                "action": event.action,
                "history": event.history,
                "own": False,
            }
        case DirectMessage():
            return {
                "type": "direct",
                "from": event.sender,
                "to": event.to,
                "ts": event.ts,
                "text": event.text,
                "action": event.action,
                "own": False,
            }
        case Delivered(request=Say() as say, ack=ack):
            return {
                "type": "message",
                "room": say.room,
                "seq": ack.seq,
                "ts": ack.ts,
                "nick": event.nick,
                "text": say.text,
                "action": say.action,
                "history": False,
                "own": True,
                "msg_id": say.msg_id,
                "recipients": ack.recipients,
            }
        case Delivered(request=Tell() as tell, ack=ack):
            return {
                "type": "direct",
                "from": event.nick,
                "to": tell.to,
                "ts": ack.ts,
                "text": tell.text,
                "action": tell.action,
                "own": True,
                "msg_id": tell.msg_id,
                "recipients": ack.recipients,
            }
        case Notice():
            return {
                "type": "notice",
                "kind": event.kind,
                "room": event.room,
                "nick": event.nick,
                "new_nick": event.new_nick,
                "reason": event.reason,
                "target": event.target,
                "ts": event.ts,
            }
        case Members():
            return {
                "type": "members",
                "room": event.room,
                "nicks": event.nicks,
                "topic": event.topic,
                "private": event.private,
                "owner": event.owner,
                "ops": event.ops,
            }
        case RoomList():
            return {"type": "rooms", "rooms": event.rooms}
        case Gap():
            return {"type": "gap", "room": event.room, "first": event.first, "last": event.last}
        case HistoryEnd():
            return {"type": "history_end", "room": event.room, "head": event.head}
        case Refused(error=error):
            return _error_record(error, error.msg_id)
        case Error():
            return _error_record(event, event.msg_id)
        case Disconnected():
            return {"type": "status", "state": "disconnected", "reason": event.reason}
        case Reconnected():
            return {
                "type": "status",
                "state": "reconnected",
                "reason": "",
                "nick": event.welcome.nick,
                "account": event.welcome.account,
                "address": event.address.hostport if event.address is not None else "",
                "new_session": event.new_session,
            }
        case Closed():
            return {"type": "status", "state": "closed", "reason": event.reason}
    return None


def _error_record(error: Error, msg_id: str) -> dict[str, Any]:
    return {
        "type": "error",
        "code": error.code,
        "name": error_name(error.code),
        "message": error.message,
        "msg_id": msg_id,
    }


def _escape_json(m: re.Match[str]) -> str:
    return f"\\u{ord(m.group()):04x}"


def json_line(record: dict[str, Any]) -> str:
    """One JSON object on one line. Non-ASCII text stays readable, but the characters that
    JSON leaves raw and a terminal would obey (C1 controls, bidi overrides) are escaped."""
    return _JSON_UNSAFE.sub(_escape_json, json.dumps(record, ensure_ascii=False))


__all__ = [
    "DEFAULT_TIMESTAMP",
    "XTERM_PALETTE",
    "ColourDepth",
    "TextRenderer",
    "clock",
    "colour_depth",
    "event_record",
    "gap_text",
    "json_line",
    "nick_colour",
    "nick_rgb",
    "nick_sgr",
    "nick_style",
    "reconnected_text",
    "sanitize",
    "timestamp_problem",
    "welcome_text",
]
