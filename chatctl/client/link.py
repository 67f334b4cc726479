"""One TCP connection (plain or TLS) to a chatctl server, blocking: connect with a timeout, the handshake,
frames out, events in, and the pace the server's rate limit allows.

No threads here: Client's reader thread is the only one that reads a Link, writers send
under Client's lock, and `Link.lock` guards the protocol Connection that both use (the
reader decodes while a writer encodes). Under TLS, `Link.io` also keeps the reader's read
and a writer's write apart: an OpenSSL connection must not be used by two threads at once
(the reader waits for data in `select`, outside the lock, so a writer is never held up by
a reader that has nothing to read).

A TLS connection is opened with a bare SSLContext (its CAs alone) or a ServerTrust
(trust.py: the CAs, then trust on first use): the certificate is judged before the first
byte of the chat protocol is sent.
"""

from __future__ import annotations

import ipaddress
import select
import socket
import threading
import time
from typing import TYPE_CHECKING

from chatctl.address import format_addr
from chatctl.client.trust import ServerTrust, client_context, unverified_context
from chatctl.errors import ChatctlError, ConnectFailed, ExitCode, Rejected, TimedOut
from chatctl.fingerprint import certificate_fingerprint
from chatctl.protocol import (
    NEED_DATA,
    Bye,
    Connection,
    ConnectionClosed,
    ErrorCode,
    Event,
    Hello,
    ProtocolError,
    Role,
    SpeaksTls,
    Welcome,
)
from chatctl.ratelimit import TokenBucket

if TYPE_CHECKING:
    import ssl

RECV_SIZE = 256 * 1024
POLL = 0.5  # a socket read times out this often, so the reader can check for silence


class InsecureLink(ChatctlError):
    """A password would cross the network in clear: not sent. The server would refuse it
    anyway (it takes passwords only over TLS or loopback), but by then it would be out."""

    exit_code = ExitCode.USAGE


class Link:
    """One TCP connection and its protocol state."""

    def __init__(self, sock: socket.socket, conn: Connection, *, tls: bool = False) -> None:
        self.sock = sock
        self.tls = tls  # sock is an ssl.SSLSocket
        self.conn = conn
        self.lock = threading.Lock()
        self.io = threading.Lock()  # TLS: one thread in the SSL connection at a time
        self.bye: Bye | None = None  # the server's, once it said goodbye
        self.dead = False

    @property
    def secure(self) -> bool:
        """Whether a password may be sent on this connection: TLS, or a loopback peer (the
        server's own rule, docs/protocol.md)."""
        return self.tls or _loopback(self.sock)

    def send(self, event: Event) -> None:
        """Encode `event` (ProtocolError when it may not be sent) and write it. A broken
        socket marks the link dead and wakes the reader, which reconnects or closes."""
        with self.lock:
            data = self.conn.send(event)
        try:
            if self.tls:
                with self.io:
                    self.sock.sendall(data)
            else:
                self.sock.sendall(data)
        except OSError:
            self.dead = True
            self.shutdown()

    def recv(self, size: int) -> bytes:
        """What the server sent next (b"" at its end). Raises TimeoutError when nothing came
        within the socket's timeout, OSError when the connection broke."""
        if not self.tls:
            return self.sock.recv(size)
        if not self.sock.pending():  # type: ignore[attr-defined]
            ready, _, _ = select.select([self.sock], [], [], self.sock.gettimeout())
            if not ready:
                raise TimeoutError
        with self.io:
            return self.sock.recv(size)

    def receive(self, data: bytes) -> None:
        with self.lock:
            self.conn.receive_data(data)

    def drain(self) -> tuple[list[Event], ProtocolError | None]:
        """The events buffered, and the error that stopped them, if any: the frames before a
        broken one are still delivered."""
        events: list[Event] = []
        with self.lock:
            try:
                while (event := self.conn.next_event()) is not NEED_DATA:
                    events.append(event)
                    if isinstance(event, ConnectionClosed):
                        break
            except ProtocolError as exc:
                return events, exc
        return events, None

    def half_close(self) -> None:
        """Everything is sent. Plain TCP says so with a FIN; TLS says nothing (a FIN under
        TLS would end the session for both directions), the server closes after our Bye."""
        if not self.tls:
            self.sock.shutdown(socket.SHUT_WR)

    def shutdown(self) -> None:
        try:
            # The socket's own shutdown, also under TLS: SSLSocket.shutdown would drop the TLS
            # layer and let the reader see raw ciphertext.
            socket.socket.shutdown(self.sock, socket.SHUT_RDWR)
        except OSError:
            pass

    def close(self) -> None:
        self.shutdown()
        self.sock.close()


def _loopback(sock: socket.socket) -> bool:
    try:
        peer = sock.getpeername()
        ip = ipaddress.ip_address(str(peer[0]).partition("%")[0])
    except (OSError, ValueError, IndexError, TypeError):
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped.is_loopback
    return ip.is_loopback


# OpenSSL's reasons when what answered a ClientHello was not TLS (or closed at once).
_NOT_TLS = {"WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "PACKET_LENGTH_TOO_LONG"}


class _Unverified(Exception):
    """The CAs do not vouch for the certificate (the reason is the message): TOFU judges."""


def _dial(host: str, port: int, timeout: float, addr: str) -> socket.socket:
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except TimeoutError:
        raise ConnectFailed(f"could not connect to {addr}: no answer in {timeout:g} s") from None
    except OSError as exc:
        raise ConnectFailed(f"could not connect to {addr}: {exc.strerror or exc}") from None
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _start_tls(
    sock: socket.socket, context: ssl.SSLContext, host: str, addr: str, *, tofu: bool = False
) -> ssl.SSLSocket:
    """The TLS handshake on a connected socket (its timeout applies). Raises ConnectFailed,
    or with `tofu` _Unverified for a certificate the CAs do not vouch for."""
    import ssl

    not_tls = ConnectFailed(f"{addr} does not speak TLS (use chat://{addr})")
    try:
        return context.wrap_socket(sock, server_hostname=host)
    except ssl.SSLCertVerificationError as exc:
        sock.close()
        why = str(exc.verify_message or exc.reason)
        if tofu:
            raise _Unverified(why) from None
        raise ConnectFailed(
            f"cannot trust {addr}: {why} "
            "(--tls-ca FILE trusts a CA, or the server's own self-signed certificate)"
        ) from None
    except (ssl.SSLEOFError, ConnectionResetError, BrokenPipeError):
        sock.close()
        raise not_tls from None
    except ssl.SSLError as exc:
        sock.close()
        if exc.reason in _NOT_TLS:
            raise not_tls from None
        raise ConnectFailed(f"TLS handshake with {addr} failed: {exc.reason or exc}") from None
    except TimeoutError:
        sock.close()
        raise
    except OSError as exc:
        sock.close()
        raise ConnectFailed(f"connection to {addr} failed: {exc.strerror or exc}") from None


def _fingerprint(sock: ssl.SSLSocket) -> str:
    der = sock.getpeercert(binary_form=True)
    if der is None:  # cannot happen once a client handshake is done: the server sends one
        raise ConnectFailed("the server sent no certificate")
    return certificate_fingerprint(der)


def _open_tls(
    host: str, port: int, timeout: float, tls: ssl.SSLContext | ServerTrust, addr: str
) -> tuple[ssl.SSLSocket, bool]:
    """A TLS connection whose certificate is trusted, and whether a person was asked (then
    the handshake's clock starts again). A bare context trusts its CAs only; a ServerTrust
    also judges other certificates (trust.py). Nothing of the chat protocol is sent before
    the verdict. Raises ConnectFailed (Untrusted), TimeoutError."""
    import ssl

    if isinstance(tls, ssl.SSLContext):
        return _start_tls(_dial(host, port, timeout, addr), tls, host, addr), False
    try:
        sock = _start_tls(_dial(host, port, timeout, addr), tls.context, host, addr, tofu=True)
    except _Unverified as exc:
        why = str(exc)
    else:
        try:
            tls.verified(host, port, _fingerprint(sock))
        except BaseException:
            sock.close()
            raise
        return sock, False
    # Again, taking any certificate, to judge it by its fingerprint.
    asked = False
    while True:
        sock = _start_tls(_dial(host, port, timeout, addr), unverified_context(), host, addr)
        try:
            if not tls.judge(host, port, _fingerprint(sock), why):
                return sock, asked
        except BaseException:
            sock.close()
            raise
        # The person took their time and the server may have given up waiting for a Hello:
        # a fresh connection, which the decision just made (remembered) judges at once.
        sock.close()
        asked = True


def open_link(
    host: str,
    port: int,
    hello: Hello,
    timeout: float,
    tls: ssl.SSLContext | ServerTrust | None = None,
) -> tuple[Link, Welcome]:
    """A TCP connection (TLS with a `tls` context or trust) and a completed handshake, or
    ConnectFailed/Rejected/TimedOut."""
    addr = format_addr(host, port)
    deadline = time.monotonic() + timeout
    if tls is None:
        sock = _dial(host, port, timeout, addr)
    else:
        try:
            sock, asked = _open_tls(host, port, timeout, tls, addr)
        except TimeoutError:
            raise TimedOut(
                f"{addr} did not finish the TLS handshake within {timeout:g} s"
            ) from None
        if asked:
            deadline = time.monotonic() + timeout
    link = Link(sock, Connection(Role.CLIENT), tls=tls is not None)
    if hello.password and not link.secure:
        link.close()
        raise InsecureLink(
            f"not sending the password for {hello.account} to {addr} in clear: "
            f"use tls://{addr} (passwords go only over TLS, or to this machine)"
        )
    try:
        welcome = _handshake(link, hello, deadline, addr)
    except TimeoutError:
        link.close()
        raise TimedOut(f"{addr} did not answer the handshake within {timeout:g} s") from None
    except BaseException:
        link.close()
        raise
    sock.settimeout(POLL)
    return link, welcome


def _handshake(link: Link, hello: Hello, deadline: float, addr: str) -> Welcome:
    conn = link.conn
    try:
        link.sock.sendall(conn.send(hello))
        while True:
            event = conn.next_event()
            if event is NEED_DATA:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError
                link.sock.settimeout(left)
                conn.receive_data(link.sock.recv(RECV_SIZE))
                continue
            if isinstance(event, Welcome):
                return event
            if isinstance(event, Bye):
                raise _refusal(event, hello, addr)
            raise ConnectFailed(f"{addr} closed the connection during the handshake")
    except TimeoutError:
        raise  # open_link says how long it waited
    except SpeaksTls:
        raise ConnectFailed(f"{addr} speaks TLS: use tls://{addr}") from None
    except ProtocolError as exc:
        raise ConnectFailed(f"{addr} does not speak the chatctl protocol: {exc}") from None
    except OSError as exc:
        raise ConnectFailed(f"connection to {addr} failed: {exc.strerror or exc}") from None


def _refusal(bye: Bye, hello: Hello, addr: str) -> Rejected:
    """The error for a Bye in answer to our Hello, saying what the user can do about it."""
    reason = bye.reason or "the server refused the connection"
    if bye.code == ErrorCode.LOGIN_FAILED:
        who = f" as {hello.account}" if hello.account else ""
        return Rejected(f"{addr} refused the login{who}: {reason}", bye.code)
    if bye.code == ErrorCode.AUTH_REQUIRED:
        return Rejected(f"{addr} admits accounts only: log in with --account NAME", bye.code)
    return Rejected(reason, bye.code)


class Pacer:
    """The server's token bucket (Welcome.limits rate and burst), mirrored with margins, so
    that a fast sender waits instead of being refused with RATE_LIMITED: 90 % of the rate,
    and half the burst left unused, so that the server's bucket still has room when it reads
    a backlog of our frames at once after a stall (burst / 2 / rate seconds of it: 2 s with
    the defaults). Thread-safe: writers spend while others wait."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._bucket = TokenBucket(rate=0.0, capacity=1.0, now=0.0)  # no limit before a Welcome

    def reset(self, limits: dict[str, int]) -> None:
        """A new connection starts with a full bucket on the server too."""
        bucket = TokenBucket(
            rate=0.9 * limits.get("rate", 0),
            capacity=limits.get("burst", 1) / 2,
            now=time.monotonic(),
        )
        with self._lock:
            self._bucket = bucket

    def wait_time(self) -> float:
        with self._lock:
            return self._bucket.wait_time(time.monotonic())

    def spend(self) -> None:
        with self._lock:
            self._bucket.charge(time.monotonic(), 1.0)


__all__ = [
    "POLL",
    "RECV_SIZE",
    "InsecureLink",
    "Link",
    "Pacer",
    "client_context",
    "open_link",
]
