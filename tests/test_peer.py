"""The output queue's shared Batch: every member gets exactly its own view, in order."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from chatctl.server.batch import Batch

MEMBERS = (1, 2, 3, 4)
# (kind, cid): ("room", skip) adds a room frame that `skip` (or nobody, -1) must not get;
# ("private", cid) adds a frame only `cid` gets.
OPS = st.lists(
    st.tuples(st.sampled_from(["room", "private"]), st.sampled_from([-1, *MEMBERS])),
    max_size=30,
)


@given(OPS)
def test_property_batch_gives_each_member_its_frames_in_order(ops: list[tuple[str, int]]) -> None:
    batch = Batch(MEMBERS)
    expected: dict[int, list[bytes]] = {cid: [] for cid in MEMBERS}
    for n, (kind, cid) in enumerate(ops):
        frame = f"<{n}>".encode()
        if kind == "room":
            batch.add(frame, cid)
            for member in MEMBERS:
                if member != cid:
                    expected[member].append(frame)
        elif cid != -1:
            batch.add_private(frame, cid)
            expected[cid].append(frame)
    for member in MEMBERS:
        assert batch.data_for(member) == b"".join(expected[member])
    public = sum(len(f"<{n}>") for n, (kind, _) in enumerate(ops) if kind == "room")
    assert batch.size == public
