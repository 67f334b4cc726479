"""The bench's latency histogram: bucket bounds, nearest-rank percentiles, merging."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from chatctl.bench.histogram import (
    HALF,
    MAX_VALUE,
    PERCENTILES,
    Histogram,
    bucket_bounds,
    bucket_index,
)

values = st.lists(st.integers(min_value=0, max_value=2**40), min_size=1, max_size=300)


@given(st.integers(min_value=0, max_value=MAX_VALUE))
def test_property_every_value_falls_inside_its_bucket(v: int) -> None:
    index = int(bucket_index(np.array([v], dtype=np.int64))[0])
    low, high = bucket_bounds(index)
    assert low <= v <= high
    assert high - low <= max(0, low // HALF)  # never wider than 1/128 of the value


@given(values, st.sampled_from([p for _, p in PERCENTILES] + [0.0001, 100.0]))
def test_property_percentile_is_the_nearest_rank_to_bucket_precision(
    data: list[int], pct: float
) -> None:
    hist = Histogram()
    hist.record(np.array(data, dtype=np.int64))
    exact = sorted(data)[max(1, math.ceil(pct / 100 * len(data))) - 1]
    got = hist.percentile(pct)
    assert exact <= got <= max(exact, exact + exact // HALF)
    assert min(data) <= got <= max(data)


@given(values, values)
def test_property_merge_equals_recording_everything(a: list[int], b: list[int]) -> None:
    ha, hb, both = Histogram(), Histogram(), Histogram()
    ha.record(np.array(a, dtype=np.int64))
    hb.record(np.array(b, dtype=np.int64))
    both.record(np.array(a + b, dtype=np.int64))
    ha.merge(Histogram.from_wire(hb.to_wire()))
    assert ha.summary() == both.summary()
    assert (ha.counts == both.counts).all()


def test_summary_of_known_values() -> None:
    hist = Histogram()
    hist.record(np.arange(1, 1001, dtype=np.int64))
    s = hist.summary()
    assert (s.count, s.min, s.max) == (1000, 1, 1000)
    assert s.p50 == 500 + 1  # 500 is in the bucket [500, 501]
    assert 990 <= s.p99 <= 991 + 4
    empty = Histogram().summary()
    assert empty.count == 0 and empty.max == 0
