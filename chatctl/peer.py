"""One client connection as the event loop sees it: socket, protocol state, output queue.

The output queue is a list of byte strings (often the very same bytes object shared by every
recipient of a message) that `write_once` coalesces into a single `send` per loop turn.
"""

from __future__ import annotations

import socket

from chatctl.protocol import Connection, Role


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
        self.out: list[bytes | memoryview] = []
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
        data = out[0] if len(out) == 1 else b"".join(out)
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
