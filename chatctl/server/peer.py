"""One client connection as the event loop sees it: transport, protocol state, output queue.

The output queue is a list of byte strings and Batches that `write_once` coalesces into a
single `send` per loop turn. A Batch holds one loop turn's frames for one set of recipients (a
room): it is appended to each member's queue once, messages are added to it in O(1) whatever
the room's size, and its bytes are joined once and the same bytes object is sent to every
member. A member with frames of its own in the batch gets that join spliced: the sender of a
message has it cut out, the recipient of a private frame (an Ack) has it inserted exactly where
it was sent among the room's frames.
"""

from __future__ import annotations

from collections.abc import Sequence

from chatctl.protocol import Connection, Role
from chatctl.server.admission import RateMeter
from chatctl.server.transport import Transport


class Batch:
    __slots__ = ("_common", "edits", "open", "public", "size", "targets")

    def __init__(self, targets: Sequence[int]) -> None:
        self.targets = targets  # the recipients; kept alive so its id() stays unique
        self.public: list[bytes] = []  # what every member without edits gets, in order
        self.size = 0  # bytes in `public`: the offset where the next part goes
        # Per member with parts of its own: (offset, length, data) in order; data None cuts
        # public[offset:offset+length] out (its own message), else data is inserted at offset.
        self.edits: dict[int, list[tuple[int, int, bytes | None]]] = {}
        self.open = True  # parts may still be added (until the turn ends or order forbids)
        self._common: bytes | None = None

    def add(self, data: bytes, skip: int = -1) -> None:
        """A frame for every member but `skip`."""
        if skip != -1:
            self._edit(skip, (self.size, len(data), None))
        self.public.append(data)
        self.size += len(data)

    def add_private(self, data: bytes, cid: int) -> None:
        """A frame for `cid` only, at this point of the sequence."""
        self._edit(cid, (self.size, 0, data))

    def _edit(self, cid: int, edit: tuple[int, int, bytes | None]) -> None:
        edits = self.edits.get(cid)
        if edits is None:
            self.edits[cid] = [edit]
        else:
            edits.append(edit)

    def data_for(self, cid: int) -> bytes:
        """The bytes for member `cid`: the shared join, or for a member with edits, the shared
        join spliced (in time proportional to its own parts, not to the batch)."""
        common = self._common
        if common is None:
            common = self._common = b"".join(self.public)
        edits = self.edits.get(cid)
        if edits is None:
            return common
        view = memoryview(common)
        pieces: list[bytes | memoryview] = []
        pos = 0
        for offset, length, data in edits:
            pieces.append(view[pos:offset])
            if data is not None:
                pieces.append(data)
            pos = offset + length
        pieces.append(view[pos:])
        return b"".join(pieces)


class Peer:
    __slots__ = (
        "addr",
        "aligned",
        "born",
        "check_at",
        "cid",
        "closing",
        "conn",
        "ended",
        "ip",
        "last_recv",
        "lingering",
        "meter",
        "out",
        "out_size",
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
        meter: RateMeter,
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
        self.meter = meter  # the rate limit of what it sends

    def write_once(self) -> int:
        """One `send` of everything queued; the bytes left. Raises OSError if the peer is gone."""
        out = self.out
        cid = self.cid
        if len(out) == 1:
            item = out[0]
            data = item.data_for(cid) if isinstance(item, Batch) else item
        else:
            data = b"".join([x.data_for(cid) if isinstance(x, Batch) else x for x in out])
        try:
            sent = self.transport.send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        if sent == len(data):
            out.clear()
            self.out_size = 0
            self.aligned = True
            return 0
        # The kernel may have taken part of a frame: from here on nothing may be put in front
        # of what is queued (see Server._slow_consumer), until it has all been sent.
        self.aligned = False
        rest = memoryview(data)[sent:]
        out[:] = [rest]
        self.out_size = len(rest)
        return self.out_size
