"""The output queue's shared Batch: every member gets exactly its own view, in order; and
Peer.write_once's account of the frame in flight (`frame_left`) through any partial sends."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from itertools import accumulate

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chatctl.protocol import HEADER, MAGIC, Message
from chatctl.server.admission import Client as Address
from chatctl.server.batch import Batch
from chatctl.server.config import ServerConfig
from chatctl.server.peer import Peer
from chatctl.server.transport import WRITE_CHUNK, Buffer

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


class PartialTransport:
    """A transport that takes what `take(len(data))` says of each send (TLS clips to
    WRITE_CHUNK first, as TlsTransport does with plaintext), and keeps what it took."""

    backlog = 0

    def __init__(self, sock: socket.socket, *, clip: bool) -> None:
        self.sock = sock  # never used: Peer only hands it to the selector
        self.clip = clip
        self.took = bytearray()
        self.take: Callable[[int], int] = lambda size: size

    def send(self, data: Buffer) -> int:
        size = min(len(data), WRITE_CHUNK) if self.clip else len(data)
        taken = max(0, min(self.take(size), size))
        self.took += memoryview(data)[:taken]
        return taken

    def recv_into(self, buf: bytearray, nbytes: int) -> int:
        raise BlockingIOError

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self) -> None:
        self.sock.close()

    def shutdown_write(self) -> None:
        pass


@pytest.fixture(scope="module")
def unused_sock() -> Iterator[socket.socket]:
    with socket.socket() as sock:
        yield sock


def frame(n: int, size: int) -> bytes:
    return HEADER.pack(MAGIC, Message.TYPE, 0, size) + bytes([65 + n % 26]) * size


# A body size: mostly small, some bigger than a send, some bigger than WRITE_CHUNK.
SIZES = st.one_of(
    st.integers(0, 300), st.integers(0, 40_000), st.sampled_from([WRITE_CHUNK, 300_000])
)
# A queue: items of whole frames, plain bytes (a private frame, or several) or a Batch.
QUEUES = st.lists(
    st.tuples(st.lists(SIZES, min_size=1, max_size=4), st.booleans()), min_size=1, max_size=12
)


def queue_of(items: list[tuple[list[int], bool]]) -> tuple[list[bytes | Batch], list[bytes]]:
    """The output queue for peer 1, and the frames it holds in order."""
    out: list[bytes | Batch] = []
    frames: list[bytes] = []
    for sizes, as_batch in items:
        these = [frame(len(frames) + i, size) for i, size in enumerate(sizes)]
        frames += these
        if as_batch:
            batch = Batch((1, 2))
            for f in these:
                batch.add(f)
            out.append(batch)
        else:
            out.append(b"".join(these))
    return out, frames


@given(items=QUEUES, clip=st.booleans(), draws=st.data())
def test_property_after_any_partial_sends_the_front_is_the_rest_of_the_frame_in_flight(
    unused_sock: socket.socket,
    items: list[tuple[list[int], bool]],
    clip: bool,
    draws: st.DataObject,
) -> None:
    out, frames = queue_of(items)
    stream = b"".join(frames)
    ends = list(accumulate(len(f) for f in frames))
    transport = PartialTransport(unused_sock, clip=clip)
    address = Address("127.0.0.1", ServerConfig(rate=0), 0.0)
    peer = Peer(1, transport, "x", "x", 0.0, max_frame=1 << 20, client=address)
    peer.out = list(out)
    peer.out_size = len(stream)
    # The kernel takes any part of what it is given, nothing at all included.
    transport.take = lambda size: draws.draw(st.integers(0, size), label="taken")
    for _ in range(draws.draw(st.integers(1, 20), label="sends")):
        left = peer.write_once()
        sent = len(transport.took)
        assert transport.took == stream[:sent]
        assert left == len(stream) - sent
        frame_end = next(end for end in (0, *ends) if end >= sent)
        assert peer.frame_left == frame_end - sent
        assert peer.aligned is (sent in (0, *ends))
        if peer.frame_left:
            # What Server._slow_consumer keeps: exactly the rest of that frame, then the Bye
            # goes at a frame boundary.
            head = peer.out[0]
            assert isinstance(head, memoryview)
            assert bytes(head[: peer.frame_left]) == stream[sent:frame_end]
            assert peer.frame_left <= max(len(f) for f in frames)
        if not peer.out:
            break
    transport.take = lambda size: size
    while peer.out:
        peer.write_once()
    assert bytes(transport.took) == stream
    assert (peer.frame_left, peer.aligned, peer.out_size) == (0, True, 0)


def test_a_partial_send_on_a_frame_boundary_leaves_the_stream_aligned(
    unused_sock: socket.socket,
) -> None:
    transport = PartialTransport(unused_sock, clip=False)
    address = Address("127.0.0.1", ServerConfig(rate=0), 0.0)
    peer = Peer(1, transport, "x", "x", 0.0, max_frame=1 << 20, client=address)
    first, second, third = frame(0, 10), frame(1, 1000), frame(2, 5)
    peer.out = [first + second, third]
    peer.out_size = len(first + second + third)
    transport.take = lambda size: len(first)
    assert peer.write_once() == len(second + third)
    assert (peer.frame_left, peer.aligned) == (0, True)
    transport.take = lambda size: 3  # three bytes of the second frame's header
    peer.write_once()
    assert peer.frame_left == len(second) - 3
    transport.take = lambda size: 500  # the remainder shrinks as it goes
    peer.write_once()
    assert peer.frame_left == len(second) - 503
    transport.take = lambda size: len(second) - 503 + 2  # the rest, and into the third
    peer.write_once()
    assert peer.frame_left == len(third) - 2
    assert bytes(transport.took) == first + second + third[:2]
