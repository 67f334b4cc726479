"""The SQLite store's segment files: new ones start once the newest is full, dead ones are
deleted (also after a kill cut a trim short), and `Segments.scan` reads back every whole
record and cuts off a torn last one."""

from __future__ import annotations

import os
import sqlite3
import tempfile
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from chatctl.store import segments, sqlite
from chatctl.store.base import StoredMessage
from chatctl.store.errors import StoreError
from chatctl.store.segments import ENCODER, Place, Segments, segment_name
from chatctl.store.sqlite import COMPACT_ABOVE, DB_NAME, SqliteStore
from tests.store_files import HEADER, check_only_live_bytes, segment_files

ROOMS = ("lobby", "dev")


def message(room: str, seq: int) -> StoredMessage:
    # ts = seq: the age limit expires a prefix.
    return StoredMessage(
        room, seq, seq, "ann", f"{room} {seq} " + "x" * 50, False, "k", f"{room}{seq}"
    )


def fill(store: SqliteStore, count: int, *, every: int, trim_at: int | None = None) -> None:
    """`count` messages in each room, flushed every `every`, trimmed as they go if
    `trim_at` (the clock's ms) is given."""
    for seq in range(1, count + 1):
        for room in ROOMS:
            store.append(message(room, seq))
        if seq % every == 0:
            store.flush()
        if trim_at is not None and seq % 100 == 0:
            store.trim(trim_at)
    store.flush()


def numbers(directory: Path) -> list[int]:
    return [int(path.name[9:15]) for path in segment_files(directory)]


def live_places(store: SqliteStore) -> list[tuple[int, int, int]]:
    return store._connection().execute("SELECT segment, pos, length FROM records").fetchall()


def trim_all(store: SqliteStore, now: int) -> None:
    for _ in range(1000):
        if not store.trim(now):
            return
    raise AssertionError("trim never finished")


@pytest.fixture
def small_segments() -> Iterator[None]:
    with mock.patch.object(segments, "SEGMENT_BYTES", 2048):
        yield


def test_full_segments_roll_and_dead_ones_are_deleted(tmp_path: Path, small_segments: None) -> None:
    store = SqliteStore(tmp_path, retain_messages=100, sync_rows=64)
    fill(store, 2000, every=7, trim_at=0)
    trim_all(store, 0)
    assert numbers(tmp_path)[-1] > 100  # ~250 KB written in 2 KB segments
    # 200 live messages of ~110 bytes fit in ~11 segments, +1 for records partly hidden.
    assert len(numbers(tmp_path)) <= 13
    check_only_live_bytes(tmp_path, live_places(store))
    store.close()
    again = SqliteStore(tmp_path, retain_messages=100, tail=1)
    for room in ROOMS:
        result = again.read(room, 0, 1000)
        assert result.gap == (1, 1900)
        assert result.messages == [message(room, seq) for seq in range(1901, 2001)]
    again.close()


def test_reads_span_more_segments_than_stay_open(tmp_path: Path, small_segments: None) -> None:
    """Readers of old segments are closed least recently read first (OPEN_READERS)."""
    store = SqliteStore(tmp_path, sync_rows=16)
    fill(store, 600, every=3)
    store.close()
    assert len(numbers(tmp_path)) > 3 * segments.OPEN_READERS
    again = SqliteStore(tmp_path, tail=1)
    for after in range(0, 600, 40):  # the two rooms in turn: readers come and go
        for room in ROOMS:
            got = again.read(room, after, 40).messages
            assert got == [message(room, seq) for seq in range(after + 1, after + 41)]
    assert len(again._segments_or_closed()._readers) <= segments.OPEN_READERS
    again.close()


def test_a_trim_cut_short_by_a_kill_leaves_files_the_next_start_deletes(
    tmp_path: Path, small_segments: None
) -> None:
    """A kill after trim committed but before it punched and deleted: the segments it would
    have deleted are still there, whole (copied back here); the next start deletes the ones
    below where indexing stopped, since no record there is alive."""
    store = SqliteStore(tmp_path, retain_messages=50, sync_rows=1000)
    fill(store, 300, every=5)
    before = {path.name: path.read_bytes() for path in segment_files(tmp_path)}
    trim_all(store, 0)
    after = [path.name for path in segment_files(tmp_path)]
    dead = sorted(set(before) - set(after))
    assert len(dead) > 5
    store.crash()
    for name in dead:
        (tmp_path / name).write_bytes(before[name])
    again = SqliteStore(tmp_path, retain_messages=50, tail=1)
    assert [path.name for path in segment_files(tmp_path)] == after
    check_only_live_bytes(tmp_path, live_places(again))
    for room in ROOMS:
        assert again.read(room, 0, 100).messages == [message(room, s) for s in range(251, 301)]
    again.close()


class Killed(BaseException):
    """Stands for a kill at one instant: nothing after it runs."""


def test_a_kill_between_trims_commit_and_its_punching_is_finished_at_the_next_start(
    tmp_path: Path,
) -> None:
    """Trim deletes rows, commits, then punches the bytes out and deletes dead files. A kill
    right after the commit leaves the records' bytes in files that still hold live ones
    (one big segment here): the next start punches them out from the `dead` table."""
    store = SqliteStore(tmp_path, retain_messages=50, sync_rows=1000)
    fill(store, 300, every=5)
    with mock.patch.object(Segments, "release", side_effect=Killed), pytest.raises(Killed):
        trim_all(store, 0)
    store.crash()
    assert numbers(tmp_path) == [1]
    with pytest.raises(AssertionError, match="keeps bytes of trimmed history"):
        check_only_live_bytes(tmp_path, live_places_of(tmp_path))
    again = SqliteStore(tmp_path, retain_messages=50, tail=1)
    check_only_live_bytes(tmp_path, live_places(again))
    assert again._connection().execute("SELECT count(*) FROM dead").fetchone() == (0,)
    for room in ROOMS:
        assert again.read(room, 0, 100).messages == [message(room, s) for s in range(251, 301)]
    again.close()


def live_places_of(directory: Path) -> list[tuple[int, int, int]]:
    """The live records' places, read from a closed store's database."""
    db = sqlite3.connect(directory / DB_NAME)
    try:
        return db.execute("SELECT segment, pos, length FROM records").fetchall()
    finally:
        db.close()


def pinned(store: SqliteStore, turns: int) -> None:
    """`turns` turns of a busy room (a segment each, small segments) with one message of a
    quiet room in each: the quiet room's records would keep every segment."""
    for turn in range(turns):
        store.append(message("quiet", turn + 1))
        for seq in range(turn * 20 + 1, turn * 20 + 21):
            store.append(message("busy", seq))
        store.flush()
        if turn % 5 == 4:
            store.trim(0)


def test_quiet_rooms_do_not_keep_old_segments(tmp_path: Path, small_segments: None) -> None:
    """One record of a quiet room in every segment: trim moves such records into the newest
    segment, so the files stay few; everything still reads back, and only live bytes stay."""
    store = SqliteStore(tmp_path, retain_messages=40, sync_rows=50, tail=1)
    pinned(store, 200)
    trim_all(store, 0)
    files = numbers(tmp_path)
    assert len(files) <= COMPACT_ABOVE + 3, files
    check_only_live_bytes(tmp_path, live_places(store))
    assert store.read("quiet", 0, 500).messages == [message("quiet", s) for s in range(161, 201)]
    store.close()
    again = SqliteStore(tmp_path, retain_messages=40, tail=1)
    assert again.read("quiet", 0, 500).messages == [message("quiet", s) for s in range(161, 201)]
    assert again.read("busy", 3960, 100).messages == [message("busy", s) for s in range(3961, 4001)]
    again.close()


def test_a_move_cut_short_by_a_kill_leaves_copies_the_next_start_punches_out(
    tmp_path: Path, small_segments: None
) -> None:
    """A kill after the moved records' copies are written, before their rows point to them:
    the next start finds copies of stored messages after the index's end, punches them out,
    and reads everything from the originals."""
    store = SqliteStore(tmp_path, retain_messages=0, sync_rows=10_000, tail=1)
    pinned(store, 30)  # no retention: nothing dies, so trim only moves (below: however full)
    store.flush()
    store._sync()
    store._segments_or_closed().sync = mock.Mock(side_effect=Killed)  # type: ignore[method-assign]
    store.retain_messages = 10**9  # trim runs (and moves), deletes nothing
    with mock.patch.object(sqlite, "COMPACT_LIVE", 1.0), pytest.raises(Killed):
        store.trim(0)
    store.crash()
    again = SqliteStore(tmp_path, retain_messages=0, tail=1)
    check_only_live_bytes(tmp_path, live_places(again))
    assert again.read("quiet", 0, 100).messages == [message("quiet", s) for s in range(1, 31)]
    assert again.read("busy", 0, 1000).messages == [message("busy", s) for s in range(1, 601)]
    again.trim(0)
    again.close()


def test_a_trim_that_leaves_nothing_alive_starts_a_new_segment(
    tmp_path: Path, small_segments: None
) -> None:
    """The newest segment is deleted too once nothing in it is alive (a new one is started
    first); heads survive, and appends go on into the new segment."""
    store = SqliteStore(tmp_path, retain_messages=0, retain_age=1.0)
    fill(store, 100, every=10)
    newest = numbers(tmp_path)[-1]
    trim_all(store, 100_000)  # everything expired
    assert numbers(tmp_path) == [newest + 1]
    assert (tmp_path / segment_name(newest + 1)).stat().st_size == 0
    store.close()
    again = SqliteStore(tmp_path, retain_messages=0, retain_age=1.0)
    assert again.head("lobby") == 100
    assert again.read("lobby", 0, 10).gap == (1, 100)
    again.append(message("lobby", 101))
    again.close()
    last = SqliteStore(tmp_path)
    assert last.read("lobby", 100, 10).messages == [message("lobby", 101)]
    last.close()
    assert numbers(tmp_path) == [newest + 1]


# -- Segments.scan ----------------------------------------------------------------------------

TEXT = st.text(max_size=12)
MESSAGES = st.builds(
    StoredMessage,
    TEXT,
    st.integers(0, 2**53),
    st.integers(0, 2**53),
    TEXT,
    st.text(max_size=60),
    st.booleans(),
    TEXT,
    TEXT,
)
# Loop turns, each a write of some records, each some messages.
TURNS = st.lists(
    st.lists(st.lists(MESSAGES, min_size=1, max_size=4), min_size=1, max_size=4),
    min_size=1,
    max_size=8,
)


Record = tuple[Place, list[StoredMessage]]


def written(directory: Path, turns: list[list[list[StoredMessage]]]) -> list[Record]:
    """The records of `turns` appended to fresh segments, with their places."""
    files = Segments(directory, fsync=False)
    records: list[Record] = []
    try:
        for turn in turns:
            places = files.append([ENCODER.encode(record) for record in turn])
            records += zip(places, turn, strict=True)
    finally:
        files.close()
    return records


def end(place: Place) -> int:
    return place[1] + HEADER.size + place[2]


@given(turns=TURNS, size=st.sampled_from([64, 300, 1 << 20]), data=st.data())
def test_scan_returns_every_whole_record_and_cuts_off_a_torn_last_one(
    turns: list[list[list[StoredMessage]]], size: int, data: st.DataObject
) -> None:
    with tempfile.TemporaryDirectory() as name, mock.patch.object(segments, "SEGMENT_BYTES", size):
        directory = Path(name)
        records = written(directory, turns)
        last = records[-1][0][0]
        path = directory / segment_name(last)
        cut = data.draw(st.integers(0, path.stat().st_size), label="cut")
        os.truncate(path, cut)  # killed during the write (or at its end)
        whole = [r for r in records if r[0][0] < last or end(r[0]) <= cut]
        length = max([end(place) for place, _ in whole if place[0] == last], default=0)
        files = Segments(directory, fsync=False)
        try:
            found, note = files.scan(1, 0)
            assert found == whole
            assert bool(note) == (cut != length)
            if note:
                assert note.startswith(f"{path}: dropped {cut - length} bytes of a write cut short")
            assert path.stat().st_size == length
            # From any record's start, the ones from there on.
            start = data.draw(st.integers(0, len(whole)), label="start")
            if start < len(whole):
                number, pos, _ = whole[start][0]
                assert files.scan(number, pos) == (whole[start:], "")
            # The next write goes where the torn one was, and reads back cleanly.
            new = [StoredMessage("lobby", 1, 1, "ann", "after the kill")]
            (place,) = files.append([ENCODER.encode(new)])
            assert files.scan(1, 0) == ([*whole, (place, new)], "")
        finally:
            files.close()


@given(turns=TURNS, data=st.data())
def test_scan_refuses_a_record_cut_short_before_the_last_segment(
    turns: list[list[list[StoredMessage]]], data: st.DataObject
) -> None:
    """Only the newest segment can end in a torn write: elsewhere it is damage."""
    with tempfile.TemporaryDirectory() as name, mock.patch.object(segments, "SEGMENT_BYTES", 64):
        directory = Path(name)
        big = [StoredMessage("lobby", 1, 1, "ann", "x" * 80)]  # fills a segment: two at least
        records = written(directory, [*turns, [big], [big]])
        number = data.draw(st.sampled_from(sorted({place[0] for place, _ in records})[:-1]))
        path = directory / segment_name(number)
        cut = data.draw(st.integers(0, path.stat().st_size - 1), label="cut")
        os.truncate(path, cut)
        starts = [place[1] for place, _ in records if place[0] == number]
        files = Segments(directory, fsync=False)
        try:
            if cut in starts:  # the cut fell between two records: whole ones only
                assert files.scan(number, 0)[0] == [
                    r for r in records if r[0][0] > number or (r[0][0] == number and r[0][1] < cut)
                ]
            else:
                at = max(start for start in starts if start <= cut)
                with pytest.raises(StoreError) as caught:
                    files.scan(number, 0)
                assert str(caught.value) == f"{path} is damaged at byte {at} (a record cut short)"
        finally:
            files.close()


SIZES = st.sampled_from([1, 300, 9000])  # characters of text past the seq
BATCHES = st.lists(
    st.one_of(
        st.builds(
            lambda room, sizes: [(room, size) for size in sizes],
            st.sampled_from(ROOMS),
            st.lists(SIZES, min_size=1, max_size=600),
        ),
        st.lists(st.tuples(st.sampled_from(ROOMS), SIZES), min_size=1, max_size=600),
    ),
    min_size=1,
    max_size=4,
)


@given(BATCHES)
@example([[("lobby", 9000)] * 10, [("dev", 1)] * 300, [("dev", 1), ("lobby", 1)]])
def test_property_each_flush_writes_the_records_parts_cuts(
    batches: list[list[tuple[str, int]]],
) -> None:
    """A flush of one room's messages skips _parts when their text is small (its own count of
    runs and text): the records written must be exactly those _parts makes of the batch,
    whatever the mix of rooms and text sizes (past CHUNK_MESSAGES, past CHUNK_TEXT_BYTES)."""
    with tempfile.TemporaryDirectory() as tmp:
        store = SqliteStore(Path(tmp) / "d", sync_rows=1 << 30)
        heads = dict.fromkeys(ROOMS, 0)
        want: list[tuple[str, list[StoredMessage]]] = []
        for batch in batches:
            pending = []
            for room, size in batch:
                heads[room] += 1
                text = f"{heads[room]} " + "x" * size
                pending.append(StoredMessage(room, heads[room], 1, "ann", text, False, "k", ""))
            for m in pending:
                store.append(m)
            want += sqlite._parts(pending)
            store.flush()
        found, note = store._segments_or_closed().scan(1, 0)
        store.close()
    assert note == ""
    assert [(messages[0].room, messages) for _, messages in found] == want
