"""One client connection as the event loop sees it: transport, protocol state, output queue.

The output queue is a list of byte strings and Batches (batch.py) that `write_once` coalesces
into a single `send` per loop turn; outbox.py fills it. Every queued item starts at a frame
boundary and holds whole frames, but the first, which may be the rest of a partial send: its
first `frame_left` bytes end the frame the transport has taken part of (Server._slow_consumer
keeps exactly those, so the stream still ends at a frame boundary, before its Bye).
"""

from __future__ import annotations

import struct

from chatctl.protocol import HEADER_SIZE, Connection, Role
from chatctl.server.admission import Client
from chatctl.server.batch import Batch
from chatctl.server.transport import WRITE_CHUNK, Buffer, Transport

_body_length = struct.Struct("!I").unpack_from  # a frame header's last 4 bytes (protocol.HEADER)


def frame_left(data: Buffer, start: int, sent: int) -> int:
    """Bytes of the frame in flight once `sent` bytes of `data` have gone: `data` ends a frame
    in `start` bytes (0: it starts at a frame boundary), then holds whole frames. Walks the
    headers of what was sent, from that boundary on: done on a partial send only (the kernel
    buffer is full), never per message or per full send."""
    pos = start
    while pos < sent:
        pos += HEADER_SIZE + _body_length(data, pos + 4)[0]
    return pos - sent


class Peer:
    __slots__ = (
        "addr",
        "born",
        "check_at",
        "cid",
        "client",
        "closing",
        "conn",
        "ended",
        "frame_left",
        "ip",
        "last_recv",
        "lingering",
        "meter",
        "more_input",
        "out",
        "out_size",
        "paused",
        "pinged",
        "scheduled",
        "sock",
        "transport",
        "want_write",
        "welcomed",
    )

    def __init__(
        self,
        cid: int,
        transport: Transport,
        ip: str,
        addr: str,
        now: float,
        *,
        max_frame: int,
        client: Client,
    ) -> None:
        self.cid = cid
        self.transport = transport
        self.sock = transport.sock  # for the selector; bytes go through the transport
        self.ip = ip
        self.addr = addr  # "host:port" for logs
        self.conn = Connection(Role.SERVER, max_frame_size=max_frame)
        # Bytes the transport has not taken yet of the frame it has taken part of: the front
        # of `out`; 0 when the stream sent so far ends at a frame boundary.
        self.frame_left = 0
        self.born = now
        self.check_at = 0.0  # when the one live timer check of this peer is due
        self.last_recv = now
        self.pinged = False  # a Ping is out since the last frame received
        self.welcomed = False
        self.out: list[bytes | memoryview | Batch] = []
        self.out_size = 0
        self.scheduled = False  # in this loop turn's list of peers to write
        self.want_write = False  # registered for EVENT_WRITE: the kernel buffer was full
        self.closing = False  # reads stopped; close once the output queue has drained
        self.ended = False  # the hub forgot it; set once, by the server
        self.lingering = False  # half-closed after the last byte; reading until the client closes
        self.paused = False  # its password is being checked: its frames wait in `conn`
        self.more_input = False  # used its share of a turn with frames left: not read meanwhile
        self.client = client  # its address's connections and allowances
        self.meter = client.meter  # the rate limit of what it sends, shared by its address

    @property
    def aligned(self) -> bool:
        """The stream sent so far ends at a frame boundary."""
        return self.frame_left == 0

    def write_once(self) -> int:
        """Send what is queued, about WRITE_CHUNK bytes at a time, until the kernel takes less
        than it is given (its buffer is full) or nothing is left; the bytes left. Usually one
        `send`: joining a whole backlog for every attempt would copy it over and over, while
        a chunk at a time copies no more than the kernel can take. Raises OSError if the
        peer is gone."""
        out = self.out
        cid = self.cid
        while True:
            taken = 1
            if len(out) == 1:
                item = out[0]
                data = item.data_for(cid) if isinstance(item, Batch) else item
            else:
                parts: list[bytes | memoryview] = []
                size = 0
                for item in out:
                    part = item.data_for(cid) if isinstance(item, Batch) else item
                    parts.append(part)
                    size += len(part)
                    if size >= WRITE_CHUNK:
                        break
                taken = len(parts)
                data = b"".join(parts)
            try:
                sent = self.transport.send(data)
            except (BlockingIOError, InterruptedError):
                sent = 0
            if sent < len(data):
                break
            self.frame_left = 0
            if taken == len(out):
                out.clear()
                self.out_size = 0
                backlog = self.transport.backlog
                if backlog:  # TLS: ciphertext the kernel has not taken yet
                    out.append(b"")  # the next write flushes it
                    self.out_size = backlog
                return backlog
            del out[:taken]
            self.out_size = max(self.out_size - sent, 1)
        # The transport may have taken part of a frame: from here on nothing may be put in
        # front of what is queued, and only the frame's remainder may be kept of it (see
        # Server._slow_consumer).
        if sent:
            self.frame_left = frame_left(data, self.frame_left, sent)
        rest = memoryview(data)[sent:]
        out[:taken] = [rest]
        self.out_size = max(self.out_size - sent, len(rest))
        return self.out_size
