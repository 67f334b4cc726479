"""Bytes in and out of one connection: the seam between the event loop and the protocol.

The loop registers `transport.sock` with its selector and moves every byte of a connection
through its `Transport`: `recv_into` the loop's one shared read buffer (the protocol's stream,
0 at its end, BlockingIOError for nothing yet), `send` (how much of `data` was taken, possibly
0), `shutdown_write` once the last byte is out, `close`. Today's one implementation is plain
TCP, `TcpTransport`, whose methods *are* the socket's bound methods: the hot path pays no extra
call for the seam. The listening side, `Listeners`, lives here too: what a listener accepts
comes out as a transport, so a TLS listener will hand out TLS transports to the same loop.

How TLS will plug in (`ssl.MemoryBIO` + `SSLObject`, sans-IO, in the same loop, no thread):
`TlsTransport(sock, context)` keeps an incoming and an outgoing MemoryBIO and a server-side
SSLObject; `sock` is still what the selector watches.

- `recv_into`: `sock.recv` ciphertext into the incoming BIO, then `SSLObject.read(n, buffer)`.
  A handshake step or a partial record yields no plaintext: raise BlockingIOError, exactly as
  an empty socket does; a close_notify or EOF returns 0.
- A handshake step (or an alert, a key update) also produces ciphertext nobody queued. The
  transport will say so with a `wants_write` flag that the loop checks after a read, to put the
  peer on its write list (and register EVENT_WRITE while the kernel is full), even with an
  empty output queue.
- After a read the SSLObject may still hold decrypted bytes (`SSLObject.pending()`) that the
  socket will never signal again: a `pending` count the loop checks after a read, reading again
  in the next turn without waiting on the selector.
- `send`: `SSLObject.write` what fits a record budget, then flush the outgoing BIO to the
  socket; return the plaintext taken. Ciphertext the kernel refused stays in the outgoing BIO
  as a `backlog` that `Peer.write_once` adds to its bytes left, so the loop keeps EVENT_WRITE
  and does not half-close before it has gone.
- `shutdown_write`: `SSLObject.unwrap()` for the close_notify, flushed, then SHUT_WR.
- A refused connection (admission.Refusals) only sends, half-closes and drains through its
  transport; before a TLS handshake has finished there is nothing to say Bye over, so a TLS
  refusal will be a plain close, or wait for the handshake like a peer does.

The interface gains those three members with TLS; TcpTransport will have them as class
constants (False, 0, 0), which costs the plain path one attribute read per read or write turn,
never per message. WebSocket framing would sit the same way, over TCP or over TLS.
"""

from __future__ import annotations

import selectors
import socket
import ssl
from collections.abc import Callable, Sequence
from typing import Protocol

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


class TcpTransport:
    """Plain TCP over a non-blocking socket."""

    __slots__ = ("close", "fileno", "recv_into", "send", "sock")
    backlog = 0  # the kernel has everything `send` took

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        try:
            # Frames are whole when sent: Nagle would only delay replies and small fan-outs.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            # A fixed kernel buffer instead of autotuning (which grows a reader's to 4 MB):
            # what a client does not read waits in the server's queue, counted against
            # --max-output and --total-output, not in kernel memory nobody limits (100
            # readers that never read held 268 MB there, and the kernel's memory pressure
            # then slowed every connection).
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
        except OSError:
            pass
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


def format_addr(host: str, port: int) -> str:
    """ "host:port" for logs, with brackets around an IPv6 address."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class Listeners:
    """The listening sockets of every configured address, and what they accept."""

    def __init__(self) -> None:
        self.tls: ssl.SSLContext | None = None  # set: every connection accepted speaks TLS
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
        if self.tls is not None:
            from chatctl.server.tls import TlsTransport

            return TlsTransport(conn, self.tls), str(address[0]), int(address[1])
        return TcpTransport(conn), str(address[0]), int(address[1])

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
