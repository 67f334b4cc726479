"""Bytes in and out of one connection: the seam between the event loop and the protocol.

The loop registers `transport.sock` with its selector and moves every byte of a connection
through its `Transport`: `recv_into` the loop's one shared read buffer (the protocol's stream,
0 at its end, BlockingIOError for nothing yet), `send` (how much of `data` was taken, possibly
0), `shutdown_write` once the last byte is out, `close`. Plain TCP is `TcpTransport`, whose
methods *are* the socket's bound methods: the hot path pays no extra call for the seam. The
listening side, `Listeners`, lives here too: what a listener accepts comes out as a
transport, so a TLS listener hands out TLS transports to the same loop.

TLS plugs in beside it as `TlsTransport` (server/tls.py: `ssl.MemoryBIO` + `SSLObject`,
sans-IO, in the same loop, no thread); `Listeners.accept` hands it out once the loop
sets `Listeners.wrap` to build one. What the interface gained for it:

- `backlog`: bytes `send` took but the kernel has not (TLS ciphertext). `Peer.write_once`
  counts it as bytes left and keeps an empty item queued meanwhile, so the loop keeps
  EVENT_WRITE and does not half-close before it has gone. TcpTransport has it as a class
  constant 0: one attribute read per emptied queue, never per message.
- A TLS read never leaves decrypted bytes inside the SSLObject (it reads no more ciphertext
  than the buffer holds), so no `pending` check is needed after a read; ciphertext a read
  makes (a handshake step) that the kernel refuses asks the loop for a write turn through
  `TlsTransport.on_backlog`, which only TLS transports have.
- `TransportFailed` (an OSError) from `recv_into`: the connection cannot go on (a failed
  handshake, a plaintext client on a TLS port); the loop logs it once and closes.
- A refused connection (admission.Refusals) gets its Bye dropped before a TLS handshake is
  done: there is nothing to say it over yet, so a TLS refusal is a plain close.

WebSocket framing would sit the same way, over TCP or over TLS.
"""

from __future__ import annotations

import selectors
import socket
from collections.abc import Callable, Sequence
from typing import Protocol

from chatctl.address import format_addr
from chatctl.errors import ChatctlError

Buffer = bytes | bytearray | memoryview


class Transport(Protocol):
    """One connection's byte stream. Raise OSError when the connection is gone."""

    sock: socket.socket  # what the selector registers; I/O goes through the methods below

    # Read-only attributes rather than methods in the protocol, so that an implementation may
    # bind them straight to its socket's methods (TcpTransport does: no Python frame per
    # call) or define them as methods (TlsTransport).
    @property
    def recv_into(self) -> Callable[[bytearray, int], int]:
        """Into the buffer; 0 at the end of the stream."""
        ...

    @property
    def send(self) -> Callable[[Buffer], int]:
        """Bytes taken, 0 when full (or BlockingIOError)."""
        ...

    @property
    def fileno(self) -> Callable[[], int]:
        """-1 once closed."""
        ...

    @property
    def close(self) -> Callable[[], None]: ...

    @property
    def backlog(self) -> int:
        """Bytes taken by `send` but not yet given to the kernel (TLS ciphertext); 0 for TCP."""
        ...

    def shutdown_write(self) -> None:
        """Everything is sent: say so to the client (a FIN), keep reading."""


SEND_BUFFER = 256 * 1024  # bytes; the kernel doubles it for its bookkeeping
# Bytes one write gives a transport at most: a peer joins this much of its queue, and TLS
# encrypts all of it in one go. One size for both: a transport that took less would look,
# to the peer, like a full kernel buffer, and the rest would wait a loop turn to be joined
# again.
WRITE_CHUNK = 256 * 1024


def tune(sock: socket.socket) -> None:
    """An accepted socket, set up for the loop (every transport's)."""
    sock.setblocking(False)
    try:
        # Frames are whole when sent: Nagle would only delay replies and small fan-outs.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # A fixed kernel buffer instead of autotuning (which grows a reader's to 4 MB): what
        # a client does not read waits in the server's queue, counted against --max-output
        # and --total-output, not in kernel memory nobody limits (100 readers that never
        # read held 268 MB there, and the kernel's memory pressure then slowed every
        # connection).
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
    except OSError:
        pass


class TcpTransport:
    """Plain TCP over a non-blocking socket."""

    __slots__ = ("close", "fileno", "recv_into", "send", "sock")
    backlog = 0  # the kernel has everything `send` took

    def __init__(self, sock: socket.socket) -> None:
        tune(sock)
        self.sock = sock
        self.recv_into: Callable[[bytearray, int], int] = sock.recv_into
        self.send: Callable[[Buffer], int] = sock.send
        self.fileno: Callable[[], int] = sock.fileno
        self.close: Callable[[], None] = sock.close

    def shutdown_write(self) -> None:
        self.sock.shutdown(socket.SHUT_WR)


def drain(transport: Transport, buf: bytearray) -> bool:
    """One read of input nobody will look at (a connection being closed); True once the client
    has closed too, or the connection failed."""
    try:
        return transport.recv_into(buf, len(buf)) == 0
    except (BlockingIOError, InterruptedError):
        return False
    except OSError:
        return True


class Listeners:
    """The listening sockets of every configured address, and what they accept."""

    def __init__(self) -> None:
        # What an accepted socket becomes: TcpTransport, or a TlsTransport (the loop sets it;
        # this module does not know TLS, so tls.py can build on it).
        self.wrap: Callable[[socket.socket], Transport] = TcpTransport
        self.socks: list[socket.socket] = []
        self.addresses: list[tuple[str, int]] = []  # (host, port) as bound

    def open(self, hosts: Sequence[str], port: int) -> list[tuple[str, int]]:
        """Listen on every address of `hosts`; with port 0, all on the first one's port.
        Raises ChatctlError (having closed what it opened)."""
        try:
            for host in hosts:
                for sock in _listen(host, port):
                    self.socks.append(sock)
                    bound = sock.getsockname()
                    self.addresses.append((bound[0], bound[1]))
                    port = bound[1]
        except BaseException:
            self.close(None)
            raise
        return self.addresses

    def watch(self, selector: selectors.BaseSelector, data: object | None) -> None:
        """Register every listener for reading with `data`; None unregisters (to pause
        accepting, or before closing)."""
        for sock in self.socks:
            try:
                if data is None:
                    selector.unregister(sock)
                else:
                    selector.register(sock, selectors.EVENT_READ, data)
            except (KeyError, ValueError):
                pass

    def accept(self, sock: socket.socket) -> tuple[Transport, str, int]:
        """One new connection: its transport, address and port. Raises BlockingIOError when
        there is none, OSError when accepting fails (out of descriptors, say)."""
        conn, address = sock.accept()
        return self.wrap(conn), str(address[0]), int(address[1])

    def close(self, selector: selectors.BaseSelector | None) -> None:
        if selector is not None:
            self.watch(selector, None)
        for sock in self.socks:
            sock.close()
        self.socks.clear()


def _listen(host: str, port: int) -> list[socket.socket]:
    """Non-blocking listening sockets for every address `host` resolves to. Raises
    ChatctlError for a bad address or a port in use (closing any already open)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ChatctlError(f"cannot listen on {host!r}: bad address ({why})") from None
    seen: set[tuple[object, ...]] = set()
    out: list[socket.socket] = []
    for family, kind, proto, _, sockaddr in infos:
        if sockaddr in seen:
            continue
        seen.add(sockaddr)
        sock = socket.socket(family, kind, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(sockaddr)
            sock.listen(4096)
            sock.setblocking(False)
        except OSError as exc:
            sock.close()
            for s in out:
                s.close()
            where = format_addr(str(sockaddr[0]), int(sockaddr[1]))
            raise ChatctlError(f"cannot listen on {where}: {exc.strerror or exc}") from None
        out.append(sock)
    return out
