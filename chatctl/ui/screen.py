"""What one line of a window looks like on a terminal of a given width, sans-IO.

An `Entry` is one thing said or one notice: a timestamp (or none, for our own notes), a head
(`<bob>`, `* bob`, `--`, `!!`) and a body. `layout` cuts it to the width: word wrap, with
a hanging indent under the message column, and every continuation line marked

    12:34:56 <bob> a message long enough to be wrapped at the edge
                 ┆ of the terminal goes on here

so that nothing a peer sends can look like a line of its own: whatever the body holds
(newlines, a run of spaces, a fake `12:34:56 -- ...`), a continuation line starts with
spaces and the marker, which no first line does, with or without colour. Log files get the
same lines without the wrap (`log_lines`). `EntryMaker` turns the client's events into
entries, their peer-supplied text made safe first (render.sanitize).

Widths are display columns (wcwidth, as the terminal and prompt_toolkit count them).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date

from wcwidth import wcwidth

from chatctl.ui.render import (
    DEFAULT_TIMESTAMP,
    ColourDepth,
    TextRenderer,
    clock,
    nick_style,
    sanitize,
)

Fragment = tuple[str, str]  # (style, text), as prompt_toolkit draws them
MARK = "\u2506"  # ┆ begins every continuation line
ASCII_MARK = "|"  # where the terminal cannot show ┆
TAB = "    "


def cwidth(text: str) -> int:
    """Columns `text` takes on a terminal (a control character counts 0, as prompt_toolkit
    counts it; the bodies here hold none)."""
    return sum(max(0, wcwidth(ch)) for ch in text)


@dataclass(frozen=True, slots=True)
class Entry:
    """One line of a window before layout. `ts` in Unix ms, None for a line of our own (it
    gets blank space where the time goes); `body` is safe text, "\\n" between hard lines."""

    ts: int | None
    head: tuple[Fragment, ...]
    body: str
    style: str = ""


def stamp(ts: int | None, fmt: str) -> str:
    """The timestamp column: the time, blank space as wide for `ts` None, "" without a
    format."""
    if not fmt:
        return ""
    if ts is None:
        return " " * cwidth(clock(0, fmt))
    return clock(ts, fmt)


# Lines break after runs of plain spaces only: not at a no-break space (U+00A0), which
# must keep its words together, nor at other spaces a terminal shows as a column.
_TOKENS = re.compile(r"[^ ]+ *| +")


def _fit(word: str, avail: int) -> int:
    """How many characters of `word` fit in `avail` columns (at least one)."""
    used = 0
    for i, ch in enumerate(word):
        used += max(0, wcwidth(ch))
        if used > avail:
            return max(1, i)
    return len(word)


def _wrap_hard_line(text: str, first: int, rest: int) -> list[str]:
    """One hard line cut into pieces: the first fits in `first` columns, the others in
    `rest`, breaking after a run of spaces where it can and inside a word only when the
    word is longer than a line. Spaces stay at the end of the piece before a break (where a
    terminal clips them), so the pieces join back into `text`."""
    pieces: list[str] = []
    cur = ""
    avail = first
    for token in _TOKENS.findall(text):
        word = token.rstrip(" ")
        spaces = token[len(word) :]
        while word:
            if cwidth(cur) + cwidth(word) <= avail:
                cur += word
                word = ""
            elif cur or avail < rest:
                pieces.append(cur)  # a new line; the first one may be narrower
                cur, avail = "", rest
            else:  # longer than a whole line: cut it
                n = _fit(word, avail)
                pieces.append(word[:n])
                word, avail = word[n:], rest
        cur += spaces
    pieces.append(cur)
    return pieces


def wrap(body: str, first: int, rest: int) -> list[tuple[str, bool]]:
    """`body` cut to the widths (see _wrap_hard_line), as (piece, begins after a newline)
    pairs: joining each piece, with a newline before those marked, gives `body` back."""
    rest = max(1, rest)
    out: list[tuple[str, bool]] = []
    for k, hard in enumerate(body.split("\n")):
        pieces = _wrap_hard_line(hard, max(0, first) if k == 0 else rest, rest)
        out.append((pieces[0], k > 0))
        out.extend((p, False) for p in pieces[1:])
    return out


def layout(entry: Entry, width: int, fmt: str, mark: str = MARK) -> list[list[Fragment]]:
    """The screen lines of `entry` at `width` columns: its first line (the time, the head,
    the body's start), then the continuation lines, indented under the body's column (at
    most half the width) and marked."""
    width = max(1, width)
    first: list[Fragment] = []
    time_text = stamp(entry.ts, fmt)
    if time_text:
        first.append(("class:timestamp", time_text + " "))
    first.extend(entry.head)
    first.append(("", " "))
    column = sum(cwidth(text) for _, text in first)
    indent = max(2, min(column, width // 2))
    lines: list[list[Fragment]] = []
    for i, (piece, _hard) in enumerate(wrap(entry.body, width - column, width - indent)):
        if i == 0:
            lines.append([*first, (entry.style, piece)])
        else:
            lines.append(
                [("", " " * (indent - 2)), ("class:marker", mark + " "), (entry.style, piece)]
            )
    return lines


def plain(line: list[Fragment]) -> str:
    return "".join(text for _, text in line)


def log_lines(entry: Entry, fmt: str = DEFAULT_TIMESTAMP, mark: str = MARK) -> list[str]:
    """The lines of `entry` in a log file: as on a screen wide enough never to wrap, so a
    newline in a message still begins a marked continuation line."""
    return [plain(line).rstrip() for line in layout(entry, 1 << 30, fmt, mark)]


def day_text(day: date) -> str:
    return f"day changed to {day.strftime('%A %d %B %Y')}"


def local_day(ts: int) -> date:
    return date.fromtimestamp(ts / 1000)


def mark_for(encoding: str | None) -> str:
    """The continuation marker a terminal of `encoding` can show."""
    return MARK if (encoding or "").lower().replace("-", "") in ("utf8", "utf_8") else ASCII_MARK


def body_text(text: str) -> str:
    """A peer's text as a body: control characters and escapes made visible (render.sanitize),
    newlines kept as hard breaks, tabs as spaces."""
    return sanitize(text).replace("\t", TAB)


class EntryMaker:
    """Entries for what the client reports: speech with the sender's colour (`depth`, as
    render.nick_style picks it), notices and errors in words (render.TextRenderer's)."""

    def __init__(self, own_nick: Callable[[], str], depth: ColourDepth) -> None:
        self.own_nick = own_nick
        self.depth = depth
        self.words = TextRenderer(own_nick, colour=False, single_line=True)

    def nick(self, nick: str) -> Fragment:
        shown = sanitize(nick, newline=" ")
        if self.depth == "none":
            return ("class:nick", shown)
        return (f"class:nick bold fg:{nick_style(nick, self.depth)}", shown)

    def mentions_me(self, sender: str, text: str) -> bool:
        return self.words.mentions_me(sender, text)

    def speech(
        self,
        ts: int,
        nick: str,
        text: str,
        *,
        action: bool = False,
        history: bool = False,
        mention: bool = False,
    ) -> Entry:
        who = self.nick(nick)
        if history:
            who = ("class:history", who[1])
        head = (("", "* "), who) if action else (("", "<"), who, ("", ">"))
        style = "class:history" if history else "class:mention" if mention else ""
        return Entry(ts=ts, head=head, body=body_text(text), style=style)

    def system(self, text: str, ts: int | None = None) -> Entry:
        """A notice of the chat system or of this program: `--`, apart from speech."""
        return Entry(
            ts=ts,
            head=(("class:system", "--"),),
            body=sanitize(text, newline="\u23ce "),
            style="class:system",
        )

    def error(self, text: str, ts: int | None = None) -> Entry:
        return Entry(
            ts=ts,
            head=(("class:error", "!!"),),
            body=sanitize(text, newline="\u23ce "),
            style="class:error",
        )

    def day(self, day: date) -> Entry:
        return Entry(ts=None, head=(("class:day", "--"),), body=day_text(day), style="class:day")


def now_ms() -> int:
    return int(time.time() * 1000)


__all__ = [
    "ASCII_MARK",
    "MARK",
    "Entry",
    "EntryMaker",
    "Fragment",
    "cwidth",
    "day_text",
    "layout",
    "local_day",
    "log_lines",
    "mark_for",
    "now_ms",
    "plain",
    "stamp",
    "wrap",
]
