"""The window model of `chatctl join` on a terminal (chatctl/ui/windows.py), driven by
hypothesis against a plain model: a list of names, the shown one, unread counts and levels."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from chatctl.ui.windows import Activity, Level, WindowList, activity_text

SCROLLBACK = 5
NAMES = st.sampled_from(["lobby", "dev", "Dev", "bob", "BOB", "carol", "x"])
KINDS = st.sampled_from(["room", "query"])
LEVELS = st.sampled_from(list(Level))


@dataclass
class Plain:
    """What a window is, as simply as it can be said."""

    kind: str
    name: str
    lines: list[int] = field(default_factory=list)
    unread: int = 0
    level: Level = Level.QUIET


class WindowMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.windows: WindowList[int] = WindowList(scrollback=SCROLLBACK)
        self.model = [Plain("status", "status")]
        self.active = 0  # index into model
        self.visited = [0]  # model indices, most recent last (kept in step with closes)
        self.counter = 0

    def _index(self, kind: str, name: str) -> int | None:
        key = (kind, name.casefold())
        return next(
            (i for i, w in enumerate(self.model) if (w.kind, w.name.casefold()) == key), None
        )

    def _show(self, index: int) -> None:
        self.active = index
        self.visited = [v for v in self.visited if v != index] + [index]
        self.model[index].unread = 0
        self.model[index].level = Level.QUIET

    @rule(kind=KINDS, name=NAMES, activate=st.booleans())
    def open(self, kind: str, name: str, activate: bool) -> None:
        window = self.windows.open(kind, name, activate=activate)  # type: ignore[arg-type]
        index = self._index(kind, name)
        if index is None:
            self.model.append(Plain(kind, name))
            index = len(self.model) - 1
        assert self.windows.number(window) == index + 1
        if activate:
            self._show(index)

    @rule(number=st.integers(0, 9))
    def close(self, number: int) -> None:
        closed = self.windows.close(number)
        assert closed == (2 <= number <= len(self.model))
        if not closed:
            return
        index = number - 1
        was_shown = index == self.active
        del self.model[index]
        self.visited = [v - (v > index) for v in self.visited if v != index]
        if was_shown:
            self._show(self.visited[-1] if self.visited else 0)
        else:
            self.active -= self.active > index

    @rule(number=st.integers(0, 9))
    def activate(self, number: int) -> None:
        assert self.windows.activate(number) == (1 <= number <= len(self.model))
        if 1 <= number <= len(self.model):
            self._show(number - 1)

    @rule()
    def next(self) -> None:
        self.windows.next()
        self._show((self.active + 1) % len(self.model))

    @rule()
    def prev(self) -> None:
        self.windows.prev()
        self._show((self.active - 1) % len(self.model))

    @rule(number=st.integers(1, 9), level=LEVELS)
    def add(self, number: int, level: Level) -> None:
        window = self.windows.get(number)
        if window is None:
            assert number > len(self.model)
            return
        self.counter += 1
        self.windows.add(window, self.counter, level)
        plain = self.model[number - 1]
        plain.lines = [*plain.lines, self.counter][-SCROLLBACK:]
        if number - 1 != self.active:
            plain.unread += level >= Level.MESSAGE
            plain.level = max(plain.level, level)

    @rule(number=st.integers(1, 9))
    def clear(self, number: int) -> None:
        window = self.windows.get(number)
        if window is not None:
            self.windows.clear(window)
            self.model[number - 1].lines = []

    @precondition(lambda self: len(self.model) > 1)
    @rule(old=NAMES, new=NAMES)
    def rename(self, old: str, new: str) -> None:
        self.windows.rename("query", old, new)
        index = self._index("query", old)
        if index is None:
            return
        other = self._index("query", new)
        if other is None or other == index:
            self.model[index].name = new

    @invariant()
    def same_windows(self) -> None:
        assert len(self.windows) == len(self.model)
        for window, plain in zip(self.windows, self.model, strict=True):
            assert (window.kind, window.name) == (plain.kind, plain.name)
            assert list(window.lines) == plain.lines
            assert (window.unread, window.level) == (plain.unread, plain.level)

    @invariant()
    def one_shown_window_with_nothing_unread(self) -> None:
        assert self.windows.active == self.active + 1
        shown = self.windows.current
        assert shown.unread == 0 and shown.level == Level.QUIET

    @invariant()
    def status_first_and_keys_unique(self) -> None:
        assert self.windows.status.kind == "status"
        keys = [w.key for w in self.windows]
        assert len(keys) == len(set(keys))

    @invariant()
    def scrollback_is_bounded(self) -> None:
        assert all(len(w.lines) <= SCROLLBACK for w in self.windows)

    @invariant()
    def activity_lists_the_hidden_windows_where_something_happened(self) -> None:
        expected = [
            Activity(i + 1, w.unread, w.level)
            for i, w in enumerate(self.model)
            if w.level > Level.QUIET and i != self.active
        ]
        assert self.windows.activity() == expected
        # Counted messages only ever come with a level of at least MESSAGE.
        assert all(a.level >= Level.MESSAGE for a in expected if a.unread)


TestWindows = WindowMachine.TestCase


def test_the_activity_list_reads_like_irssis() -> None:
    windows: WindowList[str] = WindowList()
    lobby = windows.open("room", "lobby", activate=True)
    dev = windows.open("room", "dev")
    bob = windows.open("query", "bob")
    rust = windows.open("room", "rust")
    windows.add(dev, "bob joined", Level.EVENT)
    windows.add(bob, "psst", Level.MENTION)
    windows.add(rust, "hi", Level.MESSAGE)
    windows.add(rust, "hello", Level.MESSAGE)
    windows.add(lobby, "seen as it comes", Level.MENTION)
    assert activity_text(windows.activity()) == "[Act: 3,4(1)!,5(2)]"
    windows.activate(4)
    assert activity_text(windows.activity()) == "[Act: 3,5(2)]"
    assert activity_text([]) == ""


def test_closing_the_shown_window_goes_back_to_the_one_before() -> None:
    windows: WindowList[str] = WindowList()
    windows.open("room", "lobby", activate=True)
    windows.open("room", "dev", activate=True)
    windows.open("query", "bob")
    windows.activate(4)
    assert windows.close(4)
    assert windows.current.name == "dev"
    assert not windows.close(1)  # the status window stays
    assert windows.find_name("#DEV") is windows.current
    assert windows.find_name("bob") is None


def test_scrollback_must_hold_a_line() -> None:
    with pytest.raises(ValueError):
        WindowList(scrollback=0)
    with pytest.raises(ValueError):
        WindowList[str]().open("status", "status")
