"""The turn's output: room batches and private frames reach every member, in order, whenever
in the turn they are queued (a notice can be dispatched in the middle of the write phase)."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chatctl.server.admission import Client as Address
from chatctl.server.batch import Batch
from chatctl.server.config import ServerConfig
from chatctl.server.outbox import Outbox
from chatctl.server.peer import Peer
from chatctl.server.transport import TcpTransport

MEMBERS = (1, 2, 3)


@pytest.fixture
def room() -> Iterator[tuple[dict[int, Peer], dict[int, socket.socket]]]:
    """Three peers over socketpairs (their far ends, to read what they were sent)."""
    peers: dict[int, Peer] = {}
    ends: dict[int, socket.socket] = {}
    address = Address("127.0.0.1", ServerConfig(rate=0), 0.0)
    for cid in MEMBERS:
        near, far = socket.socketpair()
        near.setblocking(False)
        peers[cid] = Peer(cid, TcpTransport(near), "x", "x", 0.0, max_frame=1024, client=address)
        ends[cid] = far
    yield peers, ends
    for cid in MEMBERS:
        peers[cid].transport.close()
        ends[cid].close()


def received(end: socket.socket) -> bytes:
    end.setblocking(False)
    data = b""
    try:
        while chunk := end.recv(65536):
            data += chunk
    except BlockingIOError:
        pass
    return data


def test_a_member_that_took_its_bytes_closes_the_batch() -> None:
    batch = Batch((1, 2))
    batch.add(b"a")
    assert batch.open
    batch.data_for(1)
    assert not batch.open


def test_a_room_frame_queued_while_writing_reaches_members_already_written(
    room: tuple[dict[int, Peer], dict[int, socket.socket]],
) -> None:
    peers, ends = room
    outbox = Outbox(peers, high_water=1 << 20)
    outbox.to_room(MEMBERS, b"A", -1)
    dirty = outbox.take_dirty()
    for peer in dirty:
        peer.scheduled = False  # as the write phase does before each write
    dirty[0].write_once()  # member 1 is written; then a notice for the room is dispatched
    outbox.to_room(MEMBERS, b"B", -1)
    for peer in dirty[1:]:
        peer.write_once()
    for peer in outbox.take_dirty():
        peer.write_once()
    assert {cid: received(ends[cid]) for cid in MEMBERS} == dict.fromkeys(MEMBERS, b"AB")


# An operation: ("room", frame, skip), ("private", frame, cid), or ("write", cid) (that member
# is written now, as the write phase does, possibly in the middle of dispatching), or ("turn",)
# (the end of the turn's processing: take_dirty, then everyone is written).
OPS = st.lists(
    st.one_of(
        st.tuples(st.just("room"), st.sampled_from([-1, *MEMBERS])),
        st.tuples(st.just("private"), st.sampled_from(MEMBERS)),
        st.tuples(st.just("write"), st.sampled_from(MEMBERS)),
        st.tuples(st.just("turn"), st.just(0)),
    ),
    max_size=40,
)


@given(ops=OPS)
def test_property_every_member_gets_its_frames_in_order(ops: list[tuple[str, int]]) -> None:
    peers: dict[int, Peer] = {}
    ends: dict[int, socket.socket] = {}
    address = Address("127.0.0.1", ServerConfig(rate=0), 0.0)
    try:
        for cid in MEMBERS:
            near, far = socket.socketpair()
            near.setblocking(False)
            peers[cid] = Peer(
                cid, TcpTransport(near), "x", "x", 0.0, max_frame=1024, client=address
            )
            ends[cid] = far
        outbox = Outbox(peers, high_water=1 << 20)
        expected: dict[int, bytes] = dict.fromkeys(MEMBERS, b"")
        for n, (op, arg) in enumerate(ops):
            frame = b"<%d>" % n
            if op == "room":
                outbox.to_room(MEMBERS, frame, arg)
                for cid in MEMBERS:
                    if cid != arg:
                        expected[cid] += frame
            elif op == "private":
                outbox.enqueue(peers[arg], frame)
                expected[arg] += frame
            elif op == "write":
                peers[arg].scheduled = False  # as the write phase does before each write
                if peers[arg].out:
                    peers[arg].write_once()
            else:
                for peer in outbox.take_dirty():
                    peer.scheduled = False
                    if peer.out:
                        peer.write_once()
        while dirty := outbox.take_dirty():
            for peer in dirty:
                peer.scheduled = False
                if peer.out:
                    peer.write_once()
        for cid in MEMBERS:
            if peers[cid].out:
                peers[cid].write_once()
        assert {cid: received(ends[cid]) for cid in MEMBERS} == expected
    finally:
        for cid, peer in peers.items():
            peer.transport.close()
            ends[cid].close()
