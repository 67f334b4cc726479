"""The resend filter in front of SQL: it may say "maybe" wrongly, never "no" wrongly."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from chatctl.store.idfilter import IdFilter

PAIRS = st.lists(st.tuples(st.text(max_size=8), st.text(min_size=1, max_size=8)), max_size=300)


@given(capacity=st.integers(0, 64), pairs=PAIRS)
def test_property_every_added_id_is_maybe_present(
    capacity: int, pairs: list[tuple[str, str]]
) -> None:
    ids = IdFilter(capacity)
    for i, pair in enumerate(pairs):
        if i % 2:
            ids.add(pair)  # the store's hot path: the newest layer's add, counted after
            ids.added(1)
        else:
            ids.add_many([pair])
        # Also across the layers added as it grows past its capacity.
        assert all(ids.may_contain(k, m) for k, m in pairs[: i + 1])
    assert ids.count == len(pairs)


@given(capacity=st.integers(0, 64), pairs=PAIRS)
def test_property_a_batch_goes_into_as_many_layers_as_it_needs(
    capacity: int, pairs: list[tuple[str, str]]
) -> None:
    ids = IdFilter(capacity)
    ids.add_many(pairs)
    assert all(ids.may_contain(k, m) for k, m in pairs)
    assert ids.count == len(pairs)


def test_new_ids_are_mostly_known_absent() -> None:
    ids = IdFilter(1000)
    ids.add_many([("session", f"m{n}") for n in range(4000)])  # 4x the capacity: two layers
    wrong = sum(ids.may_contain("session", f"new{n}") for n in range(100_000))
    assert wrong < 100  # ~0.02% per full layer; SQL answers those exactly
