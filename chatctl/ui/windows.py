"""The windows of `chatctl join` on a terminal, sans-IO: which exist, which one is shown, and
what happened in the others.

Like irssi's: window 1 is the status window (connection news, and what belongs to no room),
then one window per room and per direct-message partner ("query"), numbered 1..N in the
order they opened; closing one renumbers those after it. Each keeps its own lines, up to
`scrollback` of them (the oldest go first). A line added to a window that is not shown
raises its activity: `unread` counts the messages, `level` is the highest kind of line since
it was last shown (an event, a message, a mention of your nick or a direct message), and
`activity()` is the status line's `[Act: ...]`. Showing a window clears both.

No terminal, thread or clock is involved: tui.py calls this under its lock, and the tests
drive it against a plain model (tests/test_windows.py).
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date
from typing import Generic, Literal, TypeVar

T = TypeVar("T")

Kind = Literal["status", "room", "query"]
DEFAULT_SCROLLBACK = 2000


class Level(enum.IntEnum):
    """How much a line added to a hidden window matters, least first."""

    QUIET = 0  # our own lines, answers to our commands: no activity
    EVENT = 1  # joins, parts, topics...: listed, without a count
    MESSAGE = 2  # someone spoke: counted
    MENTION = 3  # someone said your nick, or wrote to you directly: counted, highlighted


@dataclass(eq=False)
class Window(Generic[T]):
    kind: Kind
    name: str  # the room's key, the partner's nick (as last seen), or "status"
    lines: deque[T]
    unread: int = 0
    level: Level = Level.QUIET
    scroll: int = 0  # screen lines scrolled back from the bottom (the UI's to interpret)
    joined: bool = True  # a room's: False once kicked or banned (its window stays open)
    day: date | None = None  # the day of the last dated line (the UI's day-change lines)

    @property
    def key(self) -> tuple[str, str]:
        return self.kind, self.name.casefold()


@dataclass(frozen=True, slots=True)
class Activity:
    """One entry of the activity list: window `number` has `unread` messages, at `level`."""

    number: int
    unread: int
    level: Level


@dataclass
class WindowList(Generic[T]):
    """The windows, in order; `active` is the number of the one shown (1-based)."""

    scrollback: int = DEFAULT_SCROLLBACK
    windows: list[Window[T]] = field(default_factory=list)
    active: int = 1
    _visited: list[Window[T]] = field(default_factory=list, init=False)  # most recent last

    def __post_init__(self) -> None:
        if self.scrollback < 1:
            raise ValueError("scrollback must be at least 1")
        if not self.windows:
            self.windows.append(self._new("status", "status"))
        self._visited = [self.windows[0]]

    def _new(self, kind: Kind, name: str) -> Window[T]:
        return Window(kind=kind, name=name, lines=deque(maxlen=self.scrollback))

    def __len__(self) -> int:
        return len(self.windows)

    def __iter__(self) -> Iterator[Window[T]]:
        return iter(self.windows)

    @property
    def current(self) -> Window[T]:
        return self.windows[self.active - 1]

    @property
    def status(self) -> Window[T]:
        return self.windows[0]

    def get(self, number: int) -> Window[T] | None:
        return self.windows[number - 1] if 1 <= number <= len(self.windows) else None

    def number(self, window: Window[T]) -> int:
        """The number of an open window; 0 for one closed since."""
        for i, w in enumerate(self.windows):
            if w is window:
                return i + 1
        return 0

    def find(self, kind: Kind, name: str) -> Window[T] | None:
        key = (kind, name.casefold())
        return next((w for w in self.windows if w.key == key), None)

    def find_name(self, name: str) -> Window[T] | None:
        """A window by what a user types: `#room`, `room` or `nick`."""
        if name.startswith("#"):
            return self.find("room", name[1:])
        return self.find("room", name) or self.find("query", name)

    # -- opening, closing, switching -------------------------------------------------------

    def open(self, kind: Kind, name: str, *, activate: bool = False) -> Window[T]:
        """The window for a room or a partner, opened at the end if there is none."""
        if kind == "status":
            raise ValueError("there is one status window, always open")
        window = self.find(kind, name)
        if window is None:
            window = self._new(kind, name)
            self.windows.append(window)
        if activate:
            self.activate(self.number(window))
        return window

    def close(self, number: int) -> bool:
        """Close window `number` (never the status window). When it was shown, the one shown
        before it is shown again."""
        window = self.get(number)
        if window is None or window.kind == "status":
            return False
        shown = self.current
        del self.windows[number - 1]
        self._visited = [w for w in self._visited if w is not window]
        if shown is window:
            back = self._visited[-1] if self._visited else self.status
            self.active = self.number(back)
            self._seen(back)
        else:
            self.active = self.number(shown)
        return True

    def activate(self, number: int) -> bool:
        window = self.get(number)
        if window is None:
            return False
        self.active = number
        self._visited = [w for w in self._visited if w is not window]
        self._visited.append(window)
        self._seen(window)
        return True

    def next(self) -> None:
        self.activate(self.active % len(self.windows) + 1)

    def prev(self) -> None:
        self.activate((self.active - 2) % len(self.windows) + 1)

    def _seen(self, window: Window[T]) -> None:
        window.unread = 0
        window.level = Level.QUIET

    # -- lines -------------------------------------------------------------------------------

    def add(self, window: Window[T], line: T, level: Level = Level.QUIET) -> None:
        """Add a line to an open window; a hidden one's activity rises with `level`."""
        window.lines.append(line)
        if window is self.current:
            return
        if level >= Level.MESSAGE:
            window.unread += 1
        window.level = max(window.level, level)

    def clear(self, window: Window[T]) -> None:
        window.lines.clear()
        window.scroll = 0

    def rename(self, kind: Kind, old: str, new: str) -> Window[T] | None:
        """A partner's new nick: their window takes it, unless the new nick has its own
        already (then each keeps its lines)."""
        window = self.find(kind, old)
        if window is None:
            return None
        other = self.find(kind, new)
        if other is None or other is window:
            window.name = new
        return window

    def activity(self) -> list[Activity]:
        """The hidden windows where something happened, by number."""
        return [
            Activity(i + 1, w.unread, w.level)
            for i, w in enumerate(self.windows)
            if w.level > Level.QUIET and i + 1 != self.active
        ]


def activity_text(activity: list[Activity]) -> str:
    """`[Act: 2,3(4),5(1)!]`: window 2 had events, 3 four messages, 5 a mention."""
    if not activity:
        return ""
    items = []
    for a in activity:
        item = str(a.number)
        if a.unread:
            item += f"({a.unread})"
        if a.level == Level.MENTION:
            item += "!"
        items.append(item)
    return "[Act: " + ",".join(items) + "]"


__all__ = ["Activity", "Level", "Window", "WindowList", "activity_text"]
