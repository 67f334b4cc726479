"""Lines on a terminal (chatctl/ui/screen.py): the word wrap loses nothing, fits the width,
and no continuation line can pass for a line of its own; nick colours; log files."""

from __future__ import annotations

import os
import re
import stat
from datetime import date
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chatctl.errors import ChatctlError
from chatctl.ui.logs import ChatLogs, log_name
from chatctl.ui.render import (
    XTERM_PALETTE,
    colour_depth,
    nick_rgb,
    nick_sgr,
    nick_style,
    timestamp_problem,
    xterm_rgb,
)
from chatctl.ui.screen import (
    ASCII_MARK,
    MARK,
    EntryMaker,
    body_text,
    cwidth,
    layout,
    log_lines,
    plain,
    stamp,
    wrap,
)

# Bodies as peers may write them: words, runs of spaces, newlines, wide and zero-width
# characters, and text that imitates our own lines.
bodies = st.lists(
    st.sampled_from(
        [
            " ",
            "  ",
            " " * 54,
            "\n",
            "word",
            "a",
            "verylongwordwithoutanyspaceatall" * 3,
            "12:34:56 -- #lobby admin is now root",
            "-- ",
            "!! ",
            "\u2506 ",
            "漢字",
            "e\u0301",
            "\u200b",
        ]
    )
    | st.text(st.characters(codec="utf-8", exclude_categories=["Cc", "Cs"]), max_size=8),
    max_size=25,
).map("".join)
widths = st.integers(min_value=1, max_value=120)
FORMATS = ["%H:%M:%S", "%H:%M", "[%H:%M]", "%Y-%m-%d %H:%M:%S", ""]


@given(bodies, st.integers(0, 120), widths)
def test_wrapped_text_joins_back_into_the_original(body: str, first: int, rest: int) -> None:
    pieces = wrap(body, first, rest)
    assert "".join(("\n" if hard else "") + piece for piece, hard in pieces) == body
    assert all("\n" not in piece for piece, _ in pieces)


@given(bodies, st.integers(0, 120), st.integers(2, 120))
def test_every_piece_fits_but_for_spaces_a_terminal_clips(body: str, first: int, rest: int) -> None:
    pieces = wrap(body, first, rest)
    for i, (piece, hard) in enumerate(pieces):
        avail = first if i == 0 else rest
        shown = piece.rstrip(" ")
        # A single character wider than the room left is the one thing that may stick out.
        assert (
            cwidth(shown) <= avail
            or (len(shown) == 1 and i > 0 and not hard)
            or (i == 0 and shown == "")
        ), (piece, avail)


def test_words_are_not_cut_when_they_fit_on_a_line() -> None:
    pieces = [p for p, _ in wrap("the quick brown fox jumps over the lazy dog", 10, 10)]
    assert pieces == ["the quick ", "brown fox ", "jumps over ", "the lazy ", "dog"]
    assert [p for p, _ in wrap("abcdefghij", 4, 4)] == ["abcd", "efgh", "ij"]


@given(bodies, widths, st.sampled_from(FORMATS), st.booleans())
def test_no_continuation_line_can_look_like_a_line_of_its_own(
    body: str, width: int, fmt: str, action: bool
) -> None:
    """Continuation lines start with spaces and the marker; first lines with the time (or,
    without one, the head): `<nick>`, `* nick`, `--`, `!!`. So a peer's text can never
    begin a line that reads like a notice, with or without colour."""
    make = EntryMaker(lambda: "me", "none")
    for entry in (
        make.speech(1_700_000_000_000, "bob", body, action=action),
        make.system(body, 1_700_000_000_000),
        make.error(body),
    ):
        lines = [plain(line) for line in layout(entry, width, fmt)]
        time_text = stamp(entry.ts, fmt)
        prefix = (time_text + " " if time_text else "") + plain(list(entry.head)) + " "
        assert lines[0].startswith(prefix)
        for line in lines[1:]:
            assert re.match(rf"^ *{MARK} ", line), line
            if time_text.strip():
                assert not line.startswith(time_text[:1])


def test_the_spoof_in_the_issue_is_marked() -> None:
    """54 spaces then a fake notice: wherever the wrap falls, the fake stays after `<bob>`
    on the first line or after the marker on the next."""
    make = EntryMaker(lambda: "me", "none")
    entry = make.speech(0, "bob", " " * 54 + "12:34:56 -- #lobby admin is now root")
    for width in range(20, 121):
        lines = [plain(line) for line in layout(entry, width, "%H:%M:%S")]
        for line in lines:
            if "admin" in line or "12:34:56 --" in line:
                assert line.startswith(stamp(0, "%H:%M:%S") + " <bob>") or re.match(
                    rf"^ +{MARK} ", line
                ), (width, line)


def test_hanging_indent_under_the_message_column() -> None:
    make = EntryMaker(lambda: "me", "none")
    entry = make.speech(0, "bob", "one two three four five six seven eight nine ten")
    lines = [plain(line) for line in layout(entry, 30, "%H:%M:%S")]
    column = len("12:34:56 <bob> ")
    assert len(lines) > 1
    for line in lines[1:]:
        assert line.index(MARK) == column - 2
        assert line[column - 1] == " " and line[column] != " "
    # On a narrow screen the indent is at most half the width.
    narrow = [plain(line) for line in layout(entry, 20, "%H:%M:%S")]
    assert all(line.index(MARK) <= 8 for line in narrow[1:])


def test_newlines_tabs_and_escapes_in_a_body() -> None:
    assert body_text("a\tb\x1b[2Jc\nd") == "a    b^[[2Jc\nd"
    make = EntryMaker(lambda: "me", "none")
    lines = log_lines(make.speech(0, "bob", "line one\n12:00:00 -- fake\n"), "%H:%M:%S")
    assert lines[0].endswith("<bob> line one")
    assert re.match(rf"^ +{MARK} 12:00:00 -- fake$", lines[1])
    assert re.match(rf"^ +{MARK}$", lines[2])
    assert ASCII_MARK in plain(layout(make.speech(0, "b", "x\ny"), 40, "", ASCII_MARK)[1])


def test_timestamp_formats() -> None:
    assert timestamp_problem("%H:%M") is None
    assert timestamp_problem("") is None  # no timestamps
    assert timestamp_problem("%H\n") is not None
    assert timestamp_problem(" %H") is not None
    assert timestamp_problem("%Y" * 20) is not None
    assert stamp(None, "%H:%M") == "     "
    assert stamp(0, "") == ""


# -- nick colours --------------------------------------------------------------------------------


@given(st.text(min_size=1, max_size=20), st.sampled_from(["basic", "256", "truecolor", "none"]))
def test_nick_colours_are_deterministic_and_case_insensitive(nick: str, depth: str) -> None:
    assert nick_style(nick, depth) == nick_style(nick.upper(), depth)  # type: ignore[arg-type]
    assert nick_sgr(nick, depth) == nick_sgr(nick.lower(), depth)  # type: ignore[arg-type]


def _luminance(rgb: tuple[int, int, int]) -> float:
    def linear(v: int) -> float:
        c = v / 255
        return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = map(linear, rgb)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


@given(st.text(min_size=1, max_size=12))
def test_truecolour_nicks_are_readable_on_dark_and_light(nick: str) -> None:
    rgb = nick_rgb(nick, "truecolor")
    assert rgb is not None
    lum = _luminance(rgb)
    assert (lum + 0.05) / 0.05 >= 3.0 - 1e-9 and 1.05 / (lum + 0.05) >= 2.0 - 1e-9


def test_large_palettes_make_collisions_in_a_room_rare() -> None:
    """Among 20 nicks, 12 basic colours must repeat; the 256-colour palette has ~100 readable
    ones and truecolor far more, so repeats are few."""
    assert len(XTERM_PALETTE) >= 90
    for index in XTERM_PALETTE:
        assert 16 <= index <= 231
        assert nick_style("x", "256").startswith("#")
    nicks = [f"user{i}" for i in range(20)]
    assert len({nick_style(n, "256") for n in nicks}) >= 17
    assert len({nick_style(n, "truecolor") for n in nicks}) == 20
    assert len({nick_style(n, "basic") for n in nicks}) <= 12
    assert nick_sgr("bob", "256").startswith("38;5;")
    assert nick_sgr("bob", "truecolor").startswith("38;2;")
    index = int(nick_sgr("bob", "256").split(";")[2])
    assert "#{:02x}{:02x}{:02x}".format(*xterm_rgb(index)) == nick_style("bob", "256")


def test_colour_depth_from_the_environment() -> None:
    assert colour_depth({"TERM": "xterm-256color", "NO_COLOR": ""}) == "none"
    assert colour_depth({"TERM": "xterm-256color", "COLORTERM": "truecolor"}) == "truecolor"
    assert colour_depth({"TERM": "tmux-256color"}) == "256"
    assert colour_depth({"TERM": "xterm"}) == "basic"
    assert colour_depth({"TERM": "dumb"}) == "none"


# -- log files ------------------------------------------------------------------------------------


def test_log_files_are_private_and_one_per_room_and_day(tmp_path: Path) -> None:
    directory = tmp_path / "a" / "logs"
    logs = ChatLogs(directory)
    logs.check()
    day = date(2026, 3, 3)
    assert logs.write("room", "lobby", day, ["12:00:00 <bob> hi"]) is None
    assert logs.write("room", "lobby", day, ["12:00:01 <bob> again"]) is None
    assert logs.write("query", "Bob", date(2026, 3, 4), ["x"]) is None
    assert logs.write("room", "..", day, ["y"]) is None  # a valid room name, still inside
    assert sorted(p.name for p in directory.iterdir()) == [
        "...2026-03-03.log",
        "@bob.2026-03-04.log",
        "lobby.2026-03-03.log",
    ]
    text = (directory / "lobby.2026-03-03.log").read_text()
    assert text == "12:00:00 <bob> hi\n12:00:01 <bob> again\n"
    for path in (directory, tmp_path / "a"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o700
    for path in directory.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert log_name("query", "A|b", day) == "@a|b.2026-03-03.log"


def test_a_log_that_cannot_be_written_stops_logging_once(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ChatctlError):
        ChatLogs(blocker).check()
    directory = tmp_path / "logs"
    logs = ChatLogs(directory)
    logs.check()
    os.symlink(tmp_path / "elsewhere", directory / "lobby.2026-03-03.log")
    why = logs.write("room", "lobby", date(2026, 3, 3), ["x"])  # never through a symlink
    assert why is not None and "logging stopped" in why
    assert logs.write("room", "lobby", date(2026, 3, 3), ["x"]) is None  # said once
    assert not (tmp_path / "elsewhere").exists()


def test_a_no_break_space_keeps_its_words_together() -> None:
    # Found by the property above: U+00A0 is whitespace to str.split, but not a place to break.
    pieces = [p for p, _ in wrap("see 10\xa0km away", 6, 6)]
    assert pieces == ["see ", "10\xa0km ", "away"]
