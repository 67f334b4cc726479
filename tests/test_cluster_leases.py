"""Node leases decided by the log (chatctl/cluster/leases.py), held to their promises: a node
that appends at least once a beat (a fifth of the lease) is never found gone while the log
goes on; a node whose entries stop while others go on is found gone once, by the first entry
more than a lease after its last, and its later entries are skipped; a silence of the whole
log (Redis down) starts every lease again."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from chatctl.cluster.leases import Leases, stream_ms

LEASE = 10_000
BEAT = LEASE // 5


def test_a_stream_id_gives_its_milliseconds() -> None:
    assert stream_ms(b"1712345678901-7") == 1712345678901
    assert stream_ms(b"junk") == 0


@given(
    st.lists(st.integers(0, BEAT), min_size=1, max_size=200),  # the gaps between entries
    st.integers(0, 2**40),
)
def test_nodes_that_beat_are_never_gone(gaps: list[int], start: int) -> None:
    leases = Leases(LEASE)
    clock = start
    nodes = ["a", "b", "c"]
    last = dict.fromkeys(nodes, clock)
    for i, gap in enumerate(gaps):
        clock += gap
        # Each node appends at least once a beat: the latest due writes now.
        node = (
            min(nodes, key=lambda n: last[n])
            if clock - min(last.values()) >= BEAT
            else nodes[i % 3]
        )
        assert leases.advance(clock, node) == []
        last[node] = clock


@given(
    st.integers(0, 2**40),
    st.lists(st.integers(1, BEAT), min_size=1, max_size=100),
    st.integers(0, 20 * LEASE),
)
def test_a_silent_node_is_gone_after_a_lease_while_others_go_on(
    start: int, gaps: list[int], silence: int
) -> None:
    leases = Leases(LEASE)
    assert leases.advance(start, "dead") == []
    clock = start
    found = []
    for gap in gaps:
        clock += gap
        found += [(clock, n) for n in leases.advance(clock, "alive")]
    gone_at = [c for c, n in found if n == "dead"]
    if clock - start > LEASE:
        # Once, at the first entry more than a lease after its last one.
        assert len(gone_at) == 1 and LEASE < gone_at[0] - start <= LEASE + BEAT
        assert leases.is_gone("dead")
        assert leases.advance(clock + 1, "dead") == [] and leases.is_gone("dead")
    else:
        assert gone_at == [] and not leases.is_gone("dead")
    assert not leases.is_gone("alive")


def test_a_silence_of_the_whole_log_starts_every_lease_again() -> None:
    leases = Leases(LEASE)
    leases.advance(1_000_000, "a")
    leases.advance(1_000_100, "b")
    # Redis was down for a minute: nobody could append.
    for clock in range(1_060_000, 1_060_000 + LEASE + 1, BEAT):
        assert leases.advance(clock, "a") == []
    # b did not come back: a lease after the silence ended, it is gone.
    assert leases.advance(1_060_001 + LEASE, "a") == ["b"]
