"""The subscriber's hot path: find, decode and verify every payload in a receive round at once.

A worker reads every readable socket into one shared buffer, one *segment* per socket, then
calls into this module once for the whole round. Per message only numpy work is done, so the
generator observes millions of deliveries a second from one process.

Segments keep the last TAIL bytes of the previous read of the same socket in front of the new
data, so a payload split between two reads is found whole the next time. An occurrence of a
pattern counts when it is complete (ends inside the segment) and new (ends after the carried
tail, which the previous round had already seen whole or not at all).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from numpy.lib.stride_tricks import as_strided

from chatctl.bench.payload import HEADER_LEN, MARK, PUB_DIGITS, SEQ_DIGITS, TS_DIGITS

I64 = npt.NDArray[np.int64]
U8 = npt.NDArray[np.uint8]
TAIL = HEADER_LEN - 1  # longer than every pattern searched for, shorter than a payload

_DIGITS = HEADER_LEN - len(MARK)  # 24 hex digits after the mark
# Where the decoded bytes of (pub, seq, ts) go in three big-endian 8-byte words.
_WORDS = ((PUB_DIGITS, 8), (SEQ_DIGITS, 16), (TS_DIGITS, 24))


@dataclass(frozen=True, kw_only=True)
class Segments:
    """Where each socket's bytes sit in the round buffer. `fresh` is where the bytes not seen
    by an earlier round begin (start + length of the carried tail)."""

    start: I64
    fresh: I64
    end: I64

    @classmethod
    def of(cls, start: list[int], fresh: list[int], end: list[int]) -> Segments:
        return cls(
            start=np.asarray(start, dtype=np.int64),
            fresh=np.asarray(fresh, dtype=np.int64),
            end=np.asarray(end, dtype=np.int64),
        )


def find_all(arr: U8, pattern: bytes) -> I64:
    """Every position where `pattern` starts in `arr`, overlapping ones included."""
    if len(arr) < len(pattern):
        return np.zeros(0, dtype=np.int64)
    pos = np.flatnonzero(arr[: len(arr) - len(pattern) + 1] == pattern[0]).astype(np.int64)
    for i in range(1, len(pattern)):
        pos = pos[arr[pos + i] == pattern[i]]
    return pos


def occurrences(arr: U8, pattern: bytes, segs: Segments, length: int = 0) -> tuple[I64, I64]:
    """(segment index, position) of every complete, new occurrence of `pattern`, where an
    occurrence is `length` bytes long (default: the pattern's own length)."""
    pos = find_all(arr, pattern)
    seg = np.searchsorted(segs.start, pos, side="right") - 1
    stop = pos + (length or len(pattern))
    keep = (stop <= segs.end[seg]) & (stop > segs.fresh[seg]) & (seg >= 0)
    return seg[keep], pos[keep]


def count_new(buf: bytes | bytearray, pattern: bytes, start: int, fresh: int, end: int) -> int:
    """Complete, new occurrences of `pattern` in one segment, by the rule above, for a pattern
    that cannot overlap itself. A C-speed count of one segment, for the few sockets that need
    it (publishers' acks), where a numpy pass over the whole round would cost more."""
    return buf.count(pattern, max(start, fresh - len(pattern) + 1), end)


class RoundBuffer:
    """One receive round: each socket's carried tail and new bytes, back to back, in one
    buffer. For each socket: `slot(tail)` gives the memory to recv_into, `commit(n, when)`
    records the segment and returns the socket's tail for the next round."""

    def __init__(self, size: int = 8 * 1024 * 1024, max_read: int = 256 * 1024) -> None:
        self.buf = bytearray(size)
        self.mv = memoryview(self.buf)
        self.max_read = max_read
        self.limit = size - max_read - TAIL
        self.clear()

    def clear(self) -> None:
        self.pos = 0
        self.starts: list[int] = []
        self.fresh: list[int] = []
        self.ends: list[int] = []
        self.times: list[int] = []
        self._at = 0

    @property
    def full(self) -> bool:
        return self.pos > self.limit

    def slot(self, tail: bytes) -> memoryview:
        self._at = self.pos + len(tail)
        self.buf[self.pos : self._at] = tail
        return self.mv[self._at : self._at + self.max_read]

    def commit(self, n: int, when: int) -> bytes:
        end = self._at + n
        self.starts.append(self.pos)
        self.fresh.append(self._at)
        self.ends.append(end)
        self.times.append(when)
        tail = bytes(self.buf[max(self.pos, end - TAIL) : end])
        self.pos = end
        return tail

    def segments(self) -> Segments:
        return Segments.of(self.starts, self.fresh, self.ends)

    def array(self) -> U8:
        return np.frombuffer(self.buf, dtype=np.uint8, count=self.pos)

    def segments_with(self, pattern: bytes) -> list[int]:
        """Segments holding a complete, new occurrence of `pattern`, searched for whole
        (bytes.find, in C) rather than by its first byte: "P" starts every IRC PRIVMSG line,
        so a first-byte search would stop at every message. Cheap while the pattern is rare
        (a NATS or IRC server's PING)."""
        buf = self.buf
        found: list[int] = []
        at = buf.find(pattern, 0, self.pos)
        while at >= 0:
            stop = at + len(pattern)
            i = bisect.bisect_right(self.starts, at) - 1
            if self.fresh[i] < stop <= self.ends[i] and (not found or found[-1] != i):
                found.append(i)
            at = buf.find(pattern, at + 1, self.pos)
        return found

    def segment(self, i: int) -> tuple[bytes, int]:
        """Segment `i`'s bytes (its carried tail, then its new bytes) and where the new begin."""
        start = self.starts[i]
        return bytes(self.buf[start : self.ends[i]]), self.fresh[i] - start

    def count_new(self, i: int, pattern: bytes) -> int:
        return count_new(self.buf, pattern, self.starts[i], self.fresh[i], self.ends[i])


@dataclass(frozen=True, kw_only=True)
class Payloads:
    """The payloads found in one round, in stream order within each segment."""

    seg: I64
    pub: I64
    seq: I64
    ts: I64
    pos: I64  # where each payload starts in the round buffer


def find_payloads(arr: U8, segs: Segments) -> Payloads:
    # A payload's header must be whole in its segment; one cut short by the end of a read is
    # in the tail, and found whole in the next round.
    seg, pos = occurrences(arr, MARK, segs, HEADER_LEN)
    n = len(pos)
    if n == 0:
        empty = np.zeros(0, dtype=np.int64)
        return Payloads(seg=empty, pub=empty, seq=empty, ts=empty, pos=empty)
    # Each payload's 24 hex digits as one row, copied out of the buffer through a strided view.
    rows = as_strided(arr, shape=(len(arr) - _DIGITS + 1, _DIGITS), strides=(1, 1))
    text = rows[pos + len(MARK)]
    digit = text - np.uint8(ord("0"))
    digit -= (digit > 9) * np.uint8(ord("a") - ord("0") - 10)
    bad = (digit > 15) | ((text > ord("9")) & (text < ord("a")))
    # 24 flags per row seen as three 8-byte words: a cheaper "any" than numpy's along an axis.
    words8 = bad.view(np.uint64)
    valid = (words8[:, 0] | words8[:, 1] | words8[:, 2]) == 0
    if not valid.all():  # a corrupted payload: dropped here, so it counts as lost
        seg, pos, digit, n = seg[valid], pos[valid], digit[valid], int(valid.sum())
    # Pairs of hex digits to bytes, placed right-aligned in three big-endian 8-byte words.
    cols = np.ascontiguousarray(digit.T)
    octets = (cols[0::2] << 4) | cols[1::2]
    words = np.zeros((24, n), dtype=np.uint8)
    at = 0
    for digits, end in _WORDS:
        words[end - digits // 2 : end] = octets[at : at + digits // 2]
        at += digits // 2
    values = np.ascontiguousarray(words.T).view(">u8").astype(np.int64)
    return Payloads(seg=seg, pub=values[:, 0], seq=values[:, 1], ts=values[:, 2], pos=pos)


SEQ_FIELD = b'"seq":'  # a chatctl Message's (and Ack's) room sequence number, in its JSON body


def last_seq_field(buf: bytes | bytearray, start: int, end: int) -> int | None:
    """The value of the last complete `"seq":N` in buf[start:end] (its digits ended by `,`
    or `}` before `end`), or None. Payloads (hex digits and dots), nicks and room names
    cannot hold the pattern."""
    at = end
    while (at := buf.rfind(SEQ_FIELD, start, at)) >= 0:
        first = stop = at + len(SEQ_FIELD)
        while stop < end and 0x30 <= buf[stop] <= 0x39:
            stop += 1
        if first < stop < end and buf[stop] in b",}":
            return int(buf[first:stop])
    return None


@dataclass(kw_only=True)
class RoomSeq:
    """Where one chatctl subscriber is in its room: `last` is the seq of the message that
    carried the last whole payload it received, so that on another node `Join(after=last)`
    replays exactly what it has not had. Fed each receive segment (bytes `start`..`end` of
    the round buffer, the carried tail first) and where its last whole payload starts (-1:
    none), so it costs two searches per segment, none per message.

    A payload's own frame holds the last `"seq":` before it; when that field came in an
    earlier read than the payload (beyond the carried tail), it is the last complete one
    seen then: `field`."""

    last: int = 0
    field: int = 0

    def feed(self, buf: bytes | bytearray, start: int, end: int, last_payload: int) -> None:
        if last_payload >= 0:
            own = last_seq_field(buf, start, last_payload)
            self.last = own if own is not None else self.field
        seen = last_seq_field(buf, start, end)
        if seen is not None:
            self.field = seen


class Gaps:
    """Sequence numbers still missing from one stream, as sorted disjoint ranges [start, end):
    a gap of any size costs one entry (a broken or hostile stream cannot exhaust memory)."""

    def __init__(self) -> None:
        self.starts: list[int] = []
        self.ends: list[int] = []
        self.count = 0

    def add(self, start: int, end: int) -> None:
        """Mark [start, end) missing; always beyond every range already held."""
        self.starts.append(start)
        self.ends.append(end)
        self.count += end - start

    def take(self, seq: int) -> bool:
        """Remove `seq` if it was missing; whether it was."""
        i = bisect.bisect_right(self.starts, seq) - 1
        if i < 0 or seq >= self.ends[i]:
            return False
        start, end = self.starts[i], self.ends[i]
        pieces = [(a, b) for a, b in ((start, seq), (seq + 1, end)) if b > a]
        self.starts[i : i + 1] = [a for a, _ in pieces]
        self.ends[i : i + 1] = [b for _, b in pieces]
        self.count -= 1
        return True


@dataclass(kw_only=True)
class Verifier:
    """Exactly-once, in-order checking of every (subscriber, publisher) stream.

    The fast path checks a whole round with array arithmetic: each stream's payloads must be
    the next sequence numbers, consecutive. Only a stream that breaks this goes through the
    slow path, which keeps the ranges of sequence numbers still missing, so that a late arrival
    counts as reordered, a repeat as duplicated, and what never comes as lost.
    """

    n_subs: int
    n_pubs: int
    next_seq: I64 = field(init=False)
    missing: dict[int, Gaps] = field(default_factory=dict)
    delivered: I64 = field(init=False)
    duplicated: I64 = field(init=False)
    reordered: I64 = field(init=False)

    def __post_init__(self) -> None:
        self.next_seq = np.zeros(self.n_subs * self.n_pubs, dtype=np.int64)
        self.delivered = np.zeros(self.n_subs, dtype=np.int64)
        self.duplicated = np.zeros(self.n_subs, dtype=np.int64)
        self.reordered = np.zeros(self.n_subs, dtype=np.int64)

    def feed(self, sub: I64, pub: I64, seq: I64) -> None:
        """Payloads in arrival order (arrival order matters only within one subscriber)."""
        n = len(sub)
        if n == 0:
            return
        self.delivered += np.bincount(sub, minlength=self.n_subs)
        key = sub * self.n_pubs + pub
        starts = _group_starts(key)
        if len(np.unique(key[starts])) != len(starts):
            # A stream's payloads are not contiguous: group them, keeping arrival order.
            order = np.argsort(key, kind="stable")
            key, seq = key[order], seq[order]
            starts = _group_starts(key)
        lengths = np.diff(np.append(starts, n))
        first = key[starts]
        rank = np.arange(n, dtype=np.int64) - np.repeat(starts, lengths)
        ok = seq == self.next_seq[key] + rank
        if ok.all():
            self.next_seq[first] += lengths
            return
        bad_group = np.logical_and.reduceat(ok, starts) == 0
        good = ~bad_group
        self.next_seq[first[good]] += lengths[good]
        for g in np.flatnonzero(bad_group):
            s = int(starts[g])
            self._slow(int(first[g]), seq[s : s + int(lengths[g])].tolist())

    def _slow(self, key: int, seqs: list[int]) -> None:
        sub = key // self.n_pubs
        expected = int(self.next_seq[key])
        missing = self.missing.setdefault(key, Gaps())
        for s in seqs:
            if s == expected:
                expected += 1
            elif s > expected:
                missing.add(expected, s)
                expected = s + 1
            elif missing.take(s):
                self.reordered[sub] += 1
            else:
                self.duplicated[sub] += 1
        self.next_seq[key] = expected

    def unique(self) -> I64:
        """Distinct payloads received, per (subscriber, publisher), shaped (n_subs, n_pubs)."""
        uniq = self.next_seq.copy()
        for key, missing in self.missing.items():
            uniq[key] -= missing.count
        return uniq.reshape(self.n_subs, self.n_pubs)


def _group_starts(key: I64) -> I64:
    change = np.empty(len(key), dtype=bool)
    change[0] = True
    np.not_equal(key[1:], key[:-1], out=change[1:])
    return np.flatnonzero(change).astype(np.int64)
