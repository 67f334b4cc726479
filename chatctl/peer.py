"""One client connection as the event loop sees it: socket, protocol state, output queue.

The output queue is a list of byte strings and Batches that `write_once` coalesces into a
single `send` per loop turn. A Batch holds one loop turn's frames for one set of recipients (a
room): it is appended to each member's queue once, messages are added to it in O(1) whatever
the room's size, and its bytes are joined once and the same bytes object is sent to every
member. Only a member with a frame of its own in the batch gets its own join: the sender of a
message (which skips it) or the recipient of a private frame (an Ack, placed among the room's
frames exactly where it was sent).
"""

from __future__ import annotations

import socket
from collections.abc import Sequence

from chatctl.protocol import Connection, Role


class Batch:
    __slots__ = (
        "_common",
        "onlys",
        "open",
        "parts",
        "public",
        "size",
        "skips",
        "special",
        "targets",
    )

    def __init__(self, targets: Sequence[int]) -> None:
        self.targets = targets  # the recipients; kept alive so its id() stays unique
        self.parts: list[bytes] = []
        self.skips: list[int] = []  # per part: a cid that must not get it, or -1
        self.onlys: list[int] = []  # per part: the only cid that gets it, or -1
        self.public: list[bytes] = []  # the parts every member without a special part gets
        self.special: set[int] = set()
        self.size = 0  # bytes of the public parts
        self.open = True  # parts may still be added (until the turn ends or order forbids)
        self._common: bytes | None = None

    def add(self, data: bytes, skip: int = -1) -> None:
        self.parts.append(data)
        self.skips.append(skip)
        self.onlys.append(-1)
        self.public.append(data)
        self.size += len(data)
        if skip != -1:
            self.special.add(skip)

    def add_private(self, data: bytes, cid: int) -> None:
        self.parts.append(data)
        self.skips.append(-1)
        self.onlys.append(cid)
        self.special.add(cid)

    def data_for(self, cid: int) -> bytes:
        if cid not in self.special:
            common = self._common
            if common is None:
                common = self._common = b"".join(self.public)
            return common
        return b"".join(
            [
                data
                for data, skip, only in zip(self.parts, self.skips, self.onlys, strict=True)
                if only == cid or (only == -1 and skip != cid)
            ]
        )


class Peer:
    __slots__ = (
        "addr",
        "born",
        "check_at",
        "cid",
        "closing",
        "conn",
        "ended",
        "ip",
        "last_recv",
        "lingering",
        "out",
        "out_size",
        "pinged",
        "refill_at",
        "scheduled",
        "sock",
        "strikes",
        "tokens",
        "want_write",
        "welcomed",
    )

    def __init__(
        self,
        cid: int,
        sock: socket.socket,
        ip: str,
        addr: str,
        now: float,
        *,
        max_frame: int,
        burst: int,
    ) -> None:
        self.cid = cid
        self.sock = sock
        self.ip = ip
        self.addr = addr  # "host:port" for logs
        self.conn = Connection(Role.SERVER, max_frame_size=max_frame)
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
        self.tokens = float(burst)  # rate-limit token bucket
        self.refill_at = now
        self.strikes = 0.0  # rate-limited frames, decaying: sustained excess is flooding

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
            sent = self.sock.send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        if sent == len(data):
            out.clear()
            self.out_size = 0
            return 0
        rest = memoryview(data)[sent:]
        out[:] = [rest]
        self.out_size = len(rest)
        return self.out_size
