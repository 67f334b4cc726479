"""TLS for the bench's non-blocking sockets, sans-IO: an `ssl.SSLObject` over two MemoryBIOs.

The worker keeps its own socket calls and its own send queue; a `TlsPipe` only turns
plaintext into ciphertext (`encrypt`) and back (`decrypt`). So the worker's write path stays
as it is, with ciphertext in its pending queue, and its read path reads raw bytes and
decrypts them into the round buffer.

`decrypt` never leaves plaintext inside the SSLObject: the caller reads at most as many raw
bytes as its buffer holds minus the ciphertext still buffered here, and plaintext is never
longer than its ciphertext, so every complete record fits. Nothing is left that the selector
would never signal again.

Trust is the clients' (chatctl.client.link.client_context): the system's CAs, or the CA file
given with --tls-ca alone; the server's name is checked against its certificate. There is no
mode that skips the check: a self-signed server is trusted through its certificate file.
"""

from __future__ import annotations

import socket
import ssl


class TlsClosed(ConnectionError):
    """The server ended the TLS stream (close_notify, or end of stream)."""


def make_context(ca: str | None) -> ssl.SSLContext:
    """The bench's client context; raises ChatctlError for an unusable CA file."""
    from chatctl.client.link import client_context

    return client_context(ca)


class TlsPipe:
    __slots__ = ("incoming", "obj", "outgoing", "ready")

    def __init__(self, context: ssl.SSLContext, host: str) -> None:
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.obj = context.wrap_bio(self.incoming, self.outgoing, server_hostname=host)
        self.ready = False

    def handshake(self) -> bytes:
        """Start the handshake: the ClientHello to send."""
        return self.step(b"")[0]

    def step(self, data: bytes) -> tuple[bytes, bool]:
        """Feed the server's handshake bytes: (ciphertext to send back, whether the handshake
        is done). Raises ssl.SSLError (an OSError) when the handshake fails."""
        if data:
            self.incoming.write(data)
        try:
            self.obj.do_handshake()
            self.ready = True
        except ssl.SSLWantReadError:
            pass
        return self.outgoing.read(), self.ready

    def encrypt(self, data: bytes) -> bytes:
        self.obj.write(data)
        return self.outgoing.read()

    def read_size(self, room: int) -> int:
        """How many raw bytes to read so that their plaintext fits `room` bytes."""
        return max(room - self.incoming.pending, 1)

    def decrypt(self, raw: bytes, into: memoryview, *, eof: bool = False) -> int:
        """Feed raw bytes (`eof`: the stream has ended) and decrypt every complete record
        into `into`; plaintext bytes written. 0 means wait for more. Raises TlsClosed at the
        end of the stream and ssl.SSLError (an OSError) for a broken one."""
        if raw:
            self.incoming.write(raw)
        if eof:
            self.incoming.write_eof()
        got, size, obj = 0, len(into), self.obj
        try:
            while got < size:
                n: int = obj.read(size - got, into[got:])  # type: ignore[assignment]
                if not n:
                    break
                got += n
        except ssl.SSLWantReadError:
            pass
        except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
            if not got:
                raise TlsClosed("the server ended the TLS stream") from None
        return got

    def output(self) -> bytes:
        """Ciphertext a read produced (a key update's answer, say): to be sent."""
        return self.outgoing.read() if self.outgoing.pending else b""


# OpenSSL's reasons when what answered a ClientHello was not TLS (as chatctl.client.link says).
_NOT_TLS = {"WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "PACKET_LENGTH_TOO_LONG"}


def explain(exc: ssl.SSLError, address: str) -> str:
    """One line for a failed handshake, with what to do about it."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return (
            f"cannot trust {address}: {exc.verify_message or exc.reason} (--tls-ca FILE trusts "
            "a CA, or the server's own self-signed certificate)"
        )
    if exc.reason in _NOT_TLS:
        return f"{address} does not speak TLS ({exc.reason})"
    return f"TLS with {address} failed: {exc.reason or exc}"


def recv_plain(sock: socket.socket, pipe: TlsPipe, into: memoryview) -> int:
    """One raw read from `sock`, decrypted into `into`: like sock.recv_into, 0 at the end of
    the stream; raises BlockingIOError when no complete record has arrived yet."""
    raw = sock.recv(pipe.read_size(len(into)))
    try:
        n = pipe.decrypt(raw, into, eof=not raw)
    except TlsClosed:
        return 0
    if n == 0:
        if not raw:
            return 0
        raise BlockingIOError
    return n
