"""The one token bucket (server rate limits, client pacing, bot replies)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from chatctl.ratelimit import TokenBucket


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


def test_charge_goes_into_debt_and_wait_time_says_how_long() -> None:
    bucket = TokenBucket(rate=10.0, capacity=5, now=0.0)
    bucket.charge(0.0, 8)
    assert bucket.tokens(0.0) == -3
    assert not bucket.take(0.0)
    assert abs(bucket.wait_time(0.0) - 0.4) < 1e-9
    assert bucket.take(0.4)
    assert bucket.wait_time(0.4) > 0


@given(st.floats(0.1, 100.0), st.integers(1, 50), st.lists(st.floats(0.0, 2.0), max_size=40))
def test_property_waiting_wait_time_always_grants(
    rate: float, capacity: int, gaps: list[float]
) -> None:
    bucket = TokenBucket(rate=rate, capacity=capacity, now=0.0)
    now = 0.0
    for gap in gaps:
        now += gap
        if not bucket.take(now):
            now += bucket.wait_time(now) + 1e-9
            assert bucket.take(now)
