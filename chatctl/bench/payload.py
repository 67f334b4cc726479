"""The bench payload: who sent it, which one it is, and when, in a fixed ASCII layout.

    offset 0   2 bytes   MARK "#@"  (never produced by any of the three wire protocols' framing)
    offset 2   4 hex     publisher id
    offset 6   8 hex     sequence number of that publisher, from 0
    offset 14  12 hex    send time, nanoseconds since the run's epoch (CLOCK_MONOTONIC)
    offset 26  ...       "." padding up to --size

Printable ASCII survives every target unchanged (chatctl's JSON text included), and the fixed
layout lets the subscriber side find and decode whole receive buffers at once with numpy.
"""

from __future__ import annotations

MARK = b"#@"
PUB_DIGITS = 4
SEQ_DIGITS = 8
TS_DIGITS = 12
HEADER_LEN = len(MARK) + PUB_DIGITS + SEQ_DIGITS + TS_DIGITS  # 26
MIN_SIZE = 32
MAX_PUBLISHERS = 16**PUB_DIGITS
PAD = b"."


def payload_template(pub: int, size: int) -> bytes:
    """A %-format for one publisher's payloads, taking (seq, ts)."""
    if not 0 <= pub < MAX_PUBLISHERS:
        raise ValueError(f"publisher id {pub} out of range")
    if size < HEADER_LEN:
        raise ValueError(f"payload size {size} is under {HEADER_LEN} bytes")
    return MARK + b"%04x" % pub + b"%08x%012x" + PAD * (size - HEADER_LEN)


def make_payload(pub: int, seq: int, ts: int, size: int) -> bytes:
    return payload_template(pub, size) % (seq, ts)


def parse_payload(data: bytes) -> tuple[int, int, int]:
    """(pub, seq, ts) of one payload; for tests and diagnostics, not the hot path."""
    if not data.startswith(MARK) or len(data) < HEADER_LEN:
        raise ValueError("not a bench payload")
    p = len(MARK)
    pub = int(data[p : p + PUB_DIGITS], 16)
    p += PUB_DIGITS
    seq = int(data[p : p + SEQ_DIGITS], 16)
    p += SEQ_DIGITS
    return pub, seq, int(data[p : p + TS_DIGITS], 16)
