"""Fitting replies into frames, clipping, and the SSE reader."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from chatctl.bot.manners import (
    ELLIPSIS,
    FLUSH_AT,
    IDLE_FLUSH,
    IDLE_MIN,
    Framer,
    clip,
    one_line,
    split_frames,
    stream_frames,
    strip_speaker,
)
from chatctl.bot.sse import SSEError, SSEEvent, SSEReader


def test_split_prefers_sentence_ends() -> None:
    text = "First sentence here. Second one is a bit longer. Third."
    assert split_frames(text, 30) == [
        "First sentence here.",
        "Second one is a bit longer.",
        "Third.",
    ]


def test_split_cuts_inside_a_word_only_when_it_must() -> None:
    assert split_frames("x" * 25, 10) == ["x" * 10, "x" * 10, "x" * 5]


def test_split_counts_utf8_bytes() -> None:
    pieces = split_frames("é" * 10, 5)  # two bytes each
    assert pieces == ["éé", "éé", "éé", "éé", "éé"]


def test_split_rejects_an_impossible_limit() -> None:
    with pytest.raises(ValueError):
        split_frames("hello", 3)


@given(st.text(max_size=600), st.integers(4, 120))
def test_property_split_frames_fit_and_lose_nothing(text: str, max_bytes: int) -> None:
    pieces = split_frames(text, max_bytes)
    assert all(0 < len(p.encode("utf-8", "surrogatepass")) <= max_bytes for p in pieces)
    assert all(p == p.strip() for p in pieces)
    assert "".join("".join(pieces).split()) == "".join(one_line(text).split())


@given(st.text(max_size=300), st.integers(1, 200))
def test_property_clip_bounds_length(text: str, limit: int) -> None:
    clipped = clip(text, limit)
    assert len(clipped) <= max(limit, 1 + len(ELLIPSIS))
    if len(text) <= limit:
        assert clipped == text
    else:
        assert clipped.endswith(ELLIPSIS)


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("ai: Hello there.", "Hello there."),
        ("  Alice: sure", "sure"),
        ("@bob: done", "done"),
        ("Note: this stays", "Note: this stays"),
        ("no colon at all", "no colon at all"),
    ],
)
def test_strip_speaker_drops_a_copied_nick(reply: str, expected: str) -> None:
    assert strip_speaker(reply, {"ai", "alice", "bob"}) == expected


def test_stream_frames_sends_full_frames_early() -> None:
    produced: list[str] = []

    def stream() -> Iterator[str]:
        for word in ["one ", "two ", "three ", "four ", "five ", "six"]:
            produced.append(word)
            yield word

    frames = stream_frames(stream(), max_chars=100, max_bytes=10)
    assert next(frames) == "one two"
    assert len(produced) < 6  # the first frame went out before the stream ended
    assert list(frames) == ["three", "four five", "six"]


def test_stream_frames_stops_the_stream_at_max_chars() -> None:
    closed = []

    def stream() -> Iterator[str]:
        try:
            while True:
                yield "blah "
        finally:
            closed.append(True)

    frames = list(stream_frames(stream(), max_chars=23, max_bytes=100))
    assert frames == ["blah blah blah blah bla" + ELLIPSIS]
    assert closed == [True]


@given(
    st.lists(st.sampled_from(["ai", ":", " ", "@", "\n"]) | st.text(max_size=30), max_size=30),
    st.integers(1, 300),
    st.integers(4, 80),
    st.booleans(),
)
def test_property_stream_frames_fit_and_keep_the_text(
    pieces: list[str], max_chars: int, max_bytes: int, strip: bool
) -> None:
    names = {"ai"} if strip else set()
    frames = list(
        stream_frames(iter(pieces), max_chars=max_chars, max_bytes=max_bytes, names=names)
    )
    assert all(0 < len(f.encode("utf-8", "surrogatepass")) <= max_bytes for f in frames)
    text = "".join(pieces)
    body = text[:max_chars]
    if names:
        body = strip_speaker(body, names)
    got = "".join("".join(frames).split())
    if len(text) > max_chars and body.strip():
        assert got.endswith(ELLIPSIS)
        got = got.removesuffix(ELLIPSIS)
    assert got == "".join(body.split())


# -- streaming into the chat ---------------------------------------------------------------------

SENTENCE = "A chat room is a place where people meet to talk about all kinds of things together."


def feed_words(framer: Framer, text: str, now: float = 0.0) -> list[str]:
    """Feed `text` a word at a time, as a model streams it."""
    frames: list[str] = []
    for word in text.split(" "):
        frames += framer.feed(word + " ", now)
    return frames


def test_framer_sends_each_sentence_once_it_is_long_enough() -> None:
    framer = Framer(max_chars=1500, max_bytes=8192)
    assert feed_words(framer, "Yes.") == []  # too short to be a message of its own
    assert feed_words(framer, SENTENCE) == []  # the stream may end here: no need to cut
    assert framer.feed("It", 0.1) == [f"Yes. {SENTENCE}"]
    assert framer.pending == "It"
    assert framer.feed(" has rooms.\nAnd nicks, ", 0.2) == []
    assert framer.finish() == ["It has rooms. And nicks,"]


def test_framer_sends_a_line_at_its_line_break() -> None:
    framer = Framer(max_chars=1500, max_bytes=8192)
    line = "- rooms, direct messages, history, a load generator and a bot, all in one command"
    assert feed_words(framer, line) == []
    assert framer.feed("\n", 0.1) == [line]
    assert framer.feed("- and", 0.2) == []
    assert framer.finish() == ["- and"]


def test_framer_keeps_a_reply_that_comes_whole_in_one_message() -> None:
    framer = Framer(max_chars=1500, max_bytes=8192)
    assert framer.feed(f"{SENTENCE} {SENTENCE}\n{SENTENCE}", 0.0) == []
    assert framer.finish() == [f"{SENTENCE} {SENTENCE} {SENTENCE}"]


def test_framer_sends_complete_words_when_the_model_pauses() -> None:
    framer = Framer(max_chars=1500, max_bytes=8192, now=10.0)
    assert framer.feed("The answer depends on what you mea", 10.0) == []
    assert framer.idle_at() == 10.0 + IDLE_FLUSH
    assert framer.idle(10.5) == []
    assert framer.idle(11.0) == ["The answer depends on what you"]  # "mea" may go on
    assert framer.idle_at() is None  # nothing new to send until more text arrives
    assert framer.feed("n by it.", 12.0) == []
    assert framer.finish() == ["mean by it."]


def test_framer_idle_is_done_until_new_text_arrives() -> None:
    framer = Framer(max_chars=1500, max_bytes=8192)
    framer.feed("https://example.com/a/very/long/address/without/spaces", 0.0)
    assert framer.idle_at() == IDLE_FLUSH
    assert framer.idle(5.0) == []  # no complete word to send
    assert framer.idle_at() is None
    framer.feed(" is", 6.0)
    assert framer.idle(7.0) == ["https://example.com/a/very/long/address/without/spaces"]


def test_framer_does_not_send_word_by_word_from_a_slow_model() -> None:
    framer = Framer(max_chars=1500, max_bytes=8192)
    now = 0.0
    sent: list[str] = []
    for word in ["Well, ", "I ", "think ", "so, ", "but ", "let ", "me ", "check."]:
        sent += framer.feed(word, now)
        now += 5.0  # a very slow model
        sent += framer.idle(now)
    sent += framer.finish()
    assert sent == ["Well, I think so, but", "let me check."]
    assert all(len(f) >= IDLE_MIN for f in sent[:-1])


def test_framer_cut_short_ends_in_an_ellipsis() -> None:
    framer = Framer(max_chars=1500, max_bytes=8192)
    framer.feed("Still thinking about", 0.0)
    assert framer.finish(cut=True) == ["Still thinking about" + ELLIPSIS]


def test_framer_waits_for_a_copied_nick_before_sending() -> None:
    framer = Framer(max_chars=1500, max_bytes=8192, names={"ai"})
    assert framer.feed("ai", 0.0) == []
    assert framer.idle(5.0) == []  # nothing complete to send yet
    assert framer.feed(": " + SENTENCE, 6.0) == []
    assert framer.feed(" More", 7.0) == [SENTENCE]


CHUNKS = st.text(st.sampled_from("abc é€😀.!?3\n") | st.characters(codec="utf-8"), max_size=40)


class FramerMachine(RuleBasedStateMachine):
    """Any pieces at any pace: frames fit, nothing is lost or reordered, a frame goes out at
    the first boundary after FLUSH_AT characters and after a pause, and the reply stops at
    max_chars with an ellipsis."""

    @initialize(max_chars=st.integers(1, 400), max_bytes=st.integers(4, 120))
    def start(self, max_chars: int, max_bytes: int) -> None:
        self.framer = Framer(max_chars=max_chars, max_bytes=max_bytes)
        self.max_chars = max_chars
        self.max_bytes = max_bytes
        self.now = 0.0
        self.received = ""
        self.frames: list[str] = []

    def _sent(self, frames: list[str]) -> None:
        for frame in frames:
            assert 0 < len(frame.encode("utf-8", "surrogatepass")) <= self.max_bytes
            assert frame == frame.strip()
        self.frames += frames

    @rule(chunk=CHUNKS, gap=st.floats(0.0, 3.0))
    def feed(self, chunk: str, gap: float) -> None:
        self.now += gap
        self.received += chunk
        self._sent(self.framer.feed(chunk, self.now))
        framer = self.framer
        if not framer.full and len(self.received) < self.max_chars:
            # No sentence end with a frame's worth of text before it is left waiting, once
            # the text has moved past it.
            head = framer.pending[: len(framer.pending) - len(chunk)].rstrip()
            for mark in ".!?…":
                at = head.rfind(mark + " ")
                if at >= FLUSH_AT and not head[at - 1].isspace() and not head[at - 1].isdigit():
                    raise AssertionError(f"held back a finished sentence: {head!r}")

    @rule(gap=st.floats(0.0, 3.0))
    def wait(self, gap: float) -> None:
        self.now += gap
        due = self.framer.idle_at()
        self._sent(self.framer.idle(self.now))
        if due is not None and self.now >= due:
            words = self.framer.pending.rsplit(None, 1)
            assert len(words) < 2 or len(words[0].strip()) < IDLE_MIN
            # Done until new text arrives: a caller waiting for idle_at never spins.
            assert self.framer.idle_at() is None

    @invariant()
    def holds_less_than_a_frame(self) -> None:
        assert len(self.framer.pending.strip().encode("utf-8", "surrogatepass")) <= self.max_bytes

    def teardown(self) -> None:
        if not hasattr(self, "framer"):
            return
        self._sent(self.framer.finish())
        body = self.received[: self.max_chars]
        got = "".join("".join(self.frames).split())
        if len(self.received) > self.max_chars and body.strip() and self.framer.full:
            assert got.endswith(ELLIPSIS)
            got = got.removesuffix(ELLIPSIS)
        assert got == "".join(body.split())


TestFramerMachine = FramerMachine.TestCase


# -- SSE --------------------------------------------------------------------------------------

STREAM = (
    b": keep-alive comment\n"
    b"data: one\n\n"
    b"event: update\r\nid: 7\r\ndata: two\r\ndata:  lines\r\n\r\n"
    b"data:three\r\r"
    b"retry: 100\n"
    b"data\n\n"
)
EXPECTED = [
    SSEEvent(data="one"),
    SSEEvent(data="two\n lines", event="update", id="7"),
    SSEEvent(data="three", id="7"),
    SSEEvent(data="", id="7"),
]


def test_sse_reader_follows_the_rules() -> None:
    assert SSEReader().feed(STREAM) == EXPECTED


@given(st.lists(st.integers(0, len(STREAM)), max_size=20))
def test_property_sse_same_events_however_the_stream_is_cut(cuts: list[int]) -> None:
    reader = SSEReader()
    events: list[SSEEvent] = []
    bounds = [0, *sorted(cuts), len(STREAM)]
    for start, end in itertools.pairwise(bounds):
        events += reader.feed(STREAM[start:end])
    assert events == EXPECTED


@given(st.binary(max_size=500), st.integers(1, 64))
def test_property_sse_arbitrary_bytes_give_events_or_sse_error(data: bytes, size: int) -> None:
    reader = SSEReader(max_line=64)
    try:
        for i in range(0, len(data), size):
            for event in reader.feed(data[i : i + size]):
                assert isinstance(event.data, str)
    except SSEError:
        pass


def test_sse_reader_bounds_a_line() -> None:
    with pytest.raises(SSEError):
        SSEReader(max_line=100).feed(b"data: " + b"x" * 200)
