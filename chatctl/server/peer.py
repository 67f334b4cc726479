"""One client connection as the event loop sees it: transport, protocol state, output queue.

The output queue is a list of byte strings and Batches (batch.py) that `write_once` coalesces
into a single `send` per loop turn; outbox.py fills it.
"""

from __future__ import annotations

from chatctl.protocol import Connection, Role
from chatctl.server.admission import Client
from chatctl.server.batch import Batch
from chatctl.server.transport import WRITE_CHUNK, Transport


class Peer:
    __slots__ = (
        "addr",
        "aligned",
        "born",
        "check_at",
        "cid",
        "client",
        "closing",
        "conn",
        "ended",
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
        self.aligned = True  # the stream sent so far ends at a frame boundary
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
            self.aligned = True
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
        # The kernel may have taken part of a frame: from here on nothing may be put in front
        # of what is queued (see Server._slow_consumer), until it has all been sent.
        if sent:
            self.aligned = False
        rest = memoryview(data)[sent:]
        out[:taken] = [rest]
        self.out_size = max(self.out_size - sent, len(rest))
        return self.out_size
