"""A log-linear (HDR-style) latency histogram over numpy counts.

Values below 2**SUB_BITS nanoseconds get a bucket each; above that, every power of two is cut into
2**(SUB_BITS-1) equal buckets, so a bucket is never wider than 1/128 of its value (< 0.8 %).
Recording takes a whole numpy array at once (a million values in a few milliseconds), and
histograms from different processes merge by adding their counts.

Why not the `hdrhistogram` package: it records one value per Python call, which costs more than
the subscriber's entire per-message budget, and numpy is already here for the scanner.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

SUB_BITS = 8
SUB_COUNT = 1 << SUB_BITS  # 256 exact buckets for 0..255
HALF = SUB_COUNT // 2  # 128 buckets per power of two above that
MAX_EXPONENT = 40  # values up to ~2**48 ns (3 days) are kept; larger ones are clamped
N_BUCKETS = SUB_COUNT + MAX_EXPONENT * HALF
MAX_VALUE = (SUB_COUNT << MAX_EXPONENT) - 1

PERCENTILES: tuple[tuple[str, float], ...] = (
    ("p50", 50.0),
    ("p90", 90.0),
    ("p99", 99.0),
    ("p99_9", 99.9),
)


def bucket_index(values: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    v = np.clip(values, 0, MAX_VALUE).astype(np.int64)
    # frexp gives the bit length exactly for integers below 2**53.
    _, bits = np.frexp(v.astype(np.float64))
    shift = np.maximum(bits.astype(np.int64) - SUB_BITS, 0)
    low = v < SUB_COUNT
    idx = SUB_COUNT + (shift - 1) * HALF + ((v >> shift) - HALF)
    return np.where(low, v, idx)


def bucket_bounds(index: int) -> tuple[int, int]:
    """The lowest and highest value that fall into bucket `index`."""
    if index < SUB_COUNT:
        return index, index
    shift = (index - SUB_COUNT) // HALF + 1
    low = ((index - SUB_COUNT) % HALF + HALF) << shift
    return low, low + (1 << shift) - 1


@dataclass(frozen=True, kw_only=True)
class Summary:
    count: int
    min: int
    p50: int
    p90: int
    p99: int
    p99_9: int
    max: int


class Histogram:
    def __init__(self) -> None:
        self.counts: npt.NDArray[np.int64] = np.zeros(N_BUCKETS, dtype=np.int64)
        self.min = MAX_VALUE
        self.max = 0

    @property
    def count(self) -> int:
        return int(self.counts.sum())

    def record(self, values: npt.NDArray[np.int64]) -> None:
        if len(values) == 0:
            return
        values = np.clip(values, 0, MAX_VALUE)
        self.counts += np.bincount(bucket_index(values), minlength=N_BUCKETS)
        self.min = min(self.min, int(values.min()))
        self.max = max(self.max, int(values.max()))

    def merge(self, other: Histogram) -> None:
        self.counts += other.counts
        self.min = min(self.min, other.min)
        self.max = max(self.max, other.max)

    def percentile(self, pct: float) -> int:
        """Nearest rank: the smallest recorded value (to bucket precision) that at least
        `pct` percent of the values do not exceed. Reported as the bucket's highest value,
        clamped to the exact min and max."""
        total = self.count
        if total == 0:
            return 0
        rank = max(1, math.ceil(pct / 100.0 * total))
        index = int(np.searchsorted(np.cumsum(self.counts), rank))
        return max(self.min, min(self.max, bucket_bounds(index)[1]))

    def summary(self) -> Summary:
        if self.count == 0:
            return Summary(count=0, min=0, p50=0, p90=0, p99=0, p99_9=0, max=0)
        values = {name: self.percentile(pct) for name, pct in PERCENTILES}
        return Summary(count=self.count, min=self.min, max=self.max, **values)

    def to_wire(self) -> tuple[bytes, int, int]:
        """A compact picklable form for sending between processes."""
        nz = np.flatnonzero(self.counts)
        return (
            np.stack([nz, self.counts[nz]]).astype(np.int64).tobytes(),
            self.min,
            self.max,
        )

    @classmethod
    def from_wire(cls, wire: tuple[bytes, int, int]) -> Histogram:
        hist = cls()
        pairs = np.frombuffer(wire[0], dtype=np.int64).reshape(2, -1)
        hist.counts[pairs[0]] = pairs[1]
        hist.min, hist.max = wire[1], wire[2]
        return hist
