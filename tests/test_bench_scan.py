"""The bench's subscriber hot path: payloads found whole across any split into reads, in every
target's framing, and the verifier's counts against a plain model."""

from __future__ import annotations

import itertools

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from chatctl import protocol as p
from chatctl.bench.payload import HEADER_LEN, MIN_SIZE, make_payload, parse_payload
from chatctl.bench.scan import (
    Gaps,
    RoomSeq,
    RoundBuffer,
    Verifier,
    find_payloads,
    last_seq_field,
)

Record = tuple[int, int, int]  # pub, seq, ts


def chatctl_message(payload: bytes, seq: int) -> bytes:
    return p.encode(
        p.Message(room="r", seq=seq + 1, ts=1, sender="b0p0", text=payload.decode("ascii"))
    )


def redis_message(payload: bytes, seq: int) -> bytes:
    return b"*3\r\n$7\r\nmessage\r\n$6\r\nbench0\r\n$%d\r\n%s\r\n" % (len(payload), payload)


def nats_message(payload: bytes, seq: int) -> bytes:
    return b"MSG bench0 1 %d\r\n%s\r\n" % (len(payload), payload)


NOISE = {
    chatctl_message: p.encode(p.Notice(kind="joined", nick="x#@y", ts=1, room="r")),
    redis_message: b":1\r\n",
    nats_message: b"PING\r\n",
}

framings = st.sampled_from([chatctl_message, redis_message, nats_message])
records = st.tuples(
    st.integers(0, 0xFFFF), st.integers(0, 0xFFFFFFFF), st.integers(0, 0xFFFFFFFFFFFF)
)


MAX_READ = 4096  # the most one read takes, as RoundBuffer(max_read=) is told


@st.composite
def streams(draw: st.DrawFn) -> tuple[list[list[Record]], list[list[bytes]]]:
    """A few connections' byte streams, each cut into reads at arbitrary points."""
    framing = draw(framings)
    size = draw(st.integers(HEADER_LEN + 6, 120))
    recs_by_conn, reads_by_conn = [], []
    for _ in range(draw(st.integers(1, 4))):
        recs = draw(st.lists(records, max_size=25))
        data = b""
        for i, (pub, seq, ts) in enumerate(recs):
            if draw(st.booleans()):
                data += NOISE[framing]
            data += framing(make_payload(pub, seq, ts, size), i)
        cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=12)))
        bounds = [0, *cuts, len(data)]
        reads = [data[a:b] for a, b in itertools.pairwise(bounds) if b > a]
        # A read takes at most MAX_READ bytes (the worker's recv size): longer pieces arrive
        # in several reads.
        reads = [r[i : i + MAX_READ] for r in reads for i in range(0, len(r), MAX_READ)]
        recs_by_conn.append(recs)
        reads_by_conn.append(reads)
    return recs_by_conn, reads_by_conn


@given(streams(), st.randoms(use_true_random=False))
def test_property_every_payload_is_found_once_whatever_the_reads(
    data: tuple[list[list[Record]], list[list[bytes]]], rnd: object
) -> None:
    recs_by_conn, reads_by_conn = data
    tails = [b""] * len(reads_by_conn)
    found: list[list[Record]] = [[] for _ in reads_by_conn]
    pending = [list(r) for r in reads_by_conn]
    rb = RoundBuffer(size=1 << 16, max_read=MAX_READ)
    while any(pending):
        rb.clear()
        owners = []
        for conn, reads in enumerate(pending):
            if reads and rnd.random() < 0.7:  # type: ignore[attr-defined]
                chunk = reads.pop(0)
                rb.slot(tails[conn])[: len(chunk)] = chunk
                tails[conn] = rb.commit(len(chunk), 0)
                owners.append(conn)
        got = find_payloads(rb.array(), rb.segments())
        for seg, pub, seq, ts in zip(
            got.seg.tolist(), got.pub.tolist(), got.seq.tolist(), got.ts.tolist(), strict=True
        ):
            found[owners[seg]].append((pub, seq, ts))
    assert found == recs_by_conn


def test_corrupted_payload_is_not_found() -> None:
    good = make_payload(1, 2, 3, 40)
    assert parse_payload(good) == (1, 2, 3)
    bad = good[:5] + b"Z" + good[6:]
    rb = RoundBuffer(size=1 << 16, max_read=MAX_READ)
    chunk = redis_message(good, 0) + redis_message(bad, 1)
    rb.slot(b"")[: len(chunk)] = chunk
    rb.commit(len(chunk), 0)
    got = find_payloads(rb.array(), rb.segments())
    assert got.seq.tolist() == [2]


class VerifierMachine(RuleBasedStateMachine):
    """Streams (subscriber, publisher) with messages sent, delivered in any order, dropped or
    repeated; fed to the Verifier in mixed batches and checked against plain counting."""

    N_SUBS, N_PUBS = 2, 3

    def __init__(self) -> None:
        super().__init__()
        self.verifier = Verifier(n_subs=self.N_SUBS, n_pubs=self.N_PUBS)
        self.sent = [[0] * self.N_PUBS for _ in range(self.N_SUBS)]
        self.in_flight: dict[tuple[int, int], list[int]] = {}
        self.batch: list[tuple[int, int, int]] = []
        self.arrivals: dict[tuple[int, int], list[int]] = {}

    streams = st.tuples(st.integers(0, N_SUBS - 1), st.integers(0, N_PUBS - 1))

    @rule(stream=streams, n=st.integers(1, 5))
    def send(self, stream: tuple[int, int], n: int) -> None:
        sub, pub = stream
        start = self.sent[sub][pub]
        self.in_flight.setdefault(stream, []).extend(range(start, start + n))
        self.sent[sub][pub] += n

    @precondition(lambda self: any(self.in_flight.values()))
    @rule(data=st.data(), keep=st.booleans(), in_order=st.booleans())
    def deliver(self, data: st.DataObject, keep: bool, in_order: bool) -> None:
        stream = data.draw(st.sampled_from(sorted(k for k, v in self.in_flight.items() if v)))
        flight = self.in_flight[stream]
        i = 0 if in_order else data.draw(st.integers(0, len(flight) - 1))
        seq = flight[i] if keep else flight.pop(i)  # keep: it will arrive again
        self.batch.append((stream[0], stream[1], seq))
        self.arrivals.setdefault(stream, []).append(seq)

    @rule()
    def flush(self) -> None:
        if self.batch:
            sub, pub, seq = (np.array(x, dtype=np.int64) for x in zip(*self.batch, strict=True))
            self.verifier.feed(sub, pub, seq)
        self.batch = []

    @invariant()
    def counts_match_the_model(self) -> None:
        fed = [0] * self.N_SUBS
        dup = [0] * self.N_SUBS
        reordered = [0] * self.N_SUBS
        unique = np.zeros((self.N_SUBS, self.N_PUBS), dtype=np.int64)
        for (sub, pub), seqs in self.arrivals.items():
            seen: set[int] = set()
            top = -1
            # only what was flushed counts; the unflushed batch is the tail of the arrivals
            n_pending = sum(1 for s, p_, _ in self.batch if (s, p_) == (sub, pub))
            arrived = seqs[: len(seqs) - n_pending]
            for q in arrived:
                fed[sub] += 1
                if q in seen:
                    dup[sub] += 1
                    continue
                if q < top:
                    reordered[sub] += 1
                seen.add(q)
                top = max(top, q)
            unique[sub, pub] = len(seen)
        v = self.verifier
        assert v.delivered.tolist() == fed
        assert v.duplicated.tolist() == dup
        assert v.reordered.tolist() == reordered
        assert (v.unique() == unique).all()


TestVerifier = VerifierMachine.TestCase
TestVerifier.settings = settings(max_examples=60, stateful_step_count=40)


@given(st.lists(st.tuples(st.integers(0, 5), st.integers(0, 6)), max_size=8), st.data())
def test_property_gaps_behave_like_a_set(steps: list[tuple[int, int]], data: st.DataObject) -> None:
    gaps, top = Gaps(), 0
    model: set[int] = set()
    for skip, length in steps:
        start = top + skip
        gaps.add(start, start + length)
        model.update(range(start, start + length))
        top = start + length
        for seq in data.draw(st.lists(st.integers(0, top + 1), max_size=4)):
            assert gaps.take(seq) == (seq in model)
            model.discard(seq)
        assert gaps.count == len(model)


def test_a_huge_gap_costs_nothing() -> None:
    v = Verifier(n_subs=1, n_pubs=1)
    seqs = np.array([0, 0xFFFFFFFF, 5, 5], dtype=np.int64)
    v.feed(np.zeros(4, dtype=np.int64), np.zeros(4, dtype=np.int64), seqs)
    assert (v.reordered[0], v.duplicated[0], int(v.unique()[0, 0])) == (1, 1, 3)
    assert v.missing[0].count == 0xFFFFFFFF - 2


@given(st.lists(st.binary(max_size=30), min_size=1, max_size=6), st.data())
def test_property_segments_with_a_pattern(reads: list[bytes], data: st.DataObject) -> None:
    """segments_with finds exactly the segments whose new bytes complete a PING."""
    ping = b"PING\r\n"
    rb = RoundBuffer(size=1 << 16, max_read=MAX_READ)
    tails = [data.draw(st.sampled_from([b"", b"PI", b"xPING\r", b"PING\r\n"])) for _ in reads]
    for tail, chunk in zip(tails, reads, strict=True):
        rb.slot(tail)[: len(chunk)] = chunk
        rb.commit(len(chunk), 0)
    expected = []
    for i, (tail, chunk) in enumerate(zip(tails, reads, strict=True)):
        seg = tail + chunk
        ends = [k + len(ping) for k in range(len(seg)) if seg.startswith(ping, k)]
        if any(len(tail) < e for e in ends):
            expected.append(i)
    assert rb.segments_with(ping) == expected


# A chatctl subscriber's place in its room, for resuming on another node --------------------


@settings(max_examples=200)
@given(
    st.lists(st.integers(1, 3), min_size=1, max_size=40),  # gaps between successive seqs
    st.lists(st.integers(1, 400), min_size=1, max_size=60),  # read sizes
    st.booleans(),  # acks (with a seq of their own) between the messages
    st.integers(MIN_SIZE, 120),
)
def test_property_room_seq_is_the_message_of_the_last_whole_payload(
    steps: list[int], sizes: list[int], acks: bool, size: int
) -> None:
    """However a stream of Message frames (and Acks, which carry a room seq too) is cut into
    reads, after each round RoomSeq.last is the seq of the message whose payload was the last
    one found whole: what `Join(after=last)` must resume after."""
    stream, ends = b"", []  # ends: (where a payload's header ends, its message's seq)
    seq = 0
    for k, step in enumerate(steps):
        seq += step
        payload = make_payload(0, k, 0, size)
        frame = p.encode(
            p.Message(room="r", seq=seq, ts=1, sender="b0s0", text=payload.decode("ascii"))
        )
        at = frame.index(payload)
        ends.append((len(stream) + at + HEADER_LEN, seq))
        stream += frame
        if acks:
            stream += p.encode(p.Ack(msg_id="m", ts=1, recipients=2, room="r", seq=seq + 1))
    room = RoomSeq(last=-1)
    tail, done, rb = b"", 0, RoundBuffer(size=1 << 16, max_read=MAX_READ)
    reads = itertools.cycle(sizes)
    while done < len(stream):
        chunk = stream[done : done + next(reads)]
        done += len(chunk)
        rb.clear()
        rb.slot(tail)[: len(chunk)] = chunk
        tail = rb.commit(len(chunk), 0)
        got = find_payloads(rb.array(), rb.segments())
        room.feed(rb.buf, rb.starts[0], rb.ends[0], int(got.pos[-1]) if len(got.pos) else -1)
        whole = [s for end, s in ends if end <= done]
        assert room.last == (whole[-1] if whole else -1)


def test_last_seq_field_wants_the_whole_number() -> None:
    body = b'{"room":"r","seq":1234,"ts":1}'
    assert last_seq_field(body, 0, len(body)) == 1234
    cut = body.index(b"1234") + 2  # "seq":12| -- more digits may follow in the next read
    assert last_seq_field(body, 0, cut) is None
    assert last_seq_field(b'"seq":7,' + body[:cut], 0, 8 + cut) == 7
