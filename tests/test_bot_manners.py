"""Fitting replies into frames, clipping, the token bucket, and the SSE reader."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chatctl.bot.manners import (
    ELLIPSIS,
    TokenBucket,
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


def test_token_bucket_refills_at_its_rate() -> None:
    bucket = TokenBucket(rate=1.0, capacity=2, now=0.0)
    assert [bucket.take(0.0) for _ in range(3)] == [True, True, False]
    assert not bucket.take(0.5)
    assert bucket.take(1.0)
    assert bucket.tokens(100.0) == 2


def test_token_bucket_rate_zero_means_no_limit() -> None:
    bucket = TokenBucket(rate=0.0, capacity=1, now=0.0)
    assert all(bucket.take(0.0) for _ in range(100))


@given(
    st.floats(0.01, 10.0),
    st.integers(1, 5),
    st.lists(st.floats(0.0, 5.0), max_size=60),
)
def test_property_token_bucket_never_grants_more_than_it_earns(
    rate: float, capacity: int, gaps: list[float]
) -> None:
    bucket = TokenBucket(rate=rate, capacity=capacity, now=0.0)
    now = 0.0
    granted = 0
    for gap in gaps:
        now += gap
        granted += bucket.take(now)
    assert granted <= capacity + rate * now + 1e-6


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
