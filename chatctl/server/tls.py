"""TLS for the server, sans-IO, in the same event loop: `TlsTransport` and the server's context.

`TlsTransport` is a Transport (transport.py) over a non-blocking socket: ciphertext moves
between the socket and two `ssl.MemoryBIO`s, an `ssl.SSLObject` turns it into plaintext and
back. No thread, no blocking call; the selector still watches the socket.

- The handshake is driven by reads: `recv_into` raises BlockingIOError until there is
  plaintext, exactly as an empty socket does. A failed handshake raises `TransportFailed`
  (the loop logs one line and closes), and so does a plaintext client: its first byte is not
  a TLS handshake record (0x16), so it gets a chatctl Bye in clear ("this port speaks TLS")
  before the close.
- `recv_into` reads at most `nbytes` minus the ciphertext already buffered from the socket,
  then decrypts every complete record: the plaintext never exceeds the ciphertext, so all of
  it fits the loop's buffer and nothing is left decrypted inside the SSLObject (`pending()`)
  that the socket would never signal again.
- `send` encrypts what it is given (one chunk at most) and writes the ciphertext; what the
  kernel refuses stays here, and `backlog` counts it: Peer.write_once keeps an empty item
  queued while there is a backlog, so the loop keeps EVENT_WRITE and closes only once it has
  gone. Output a read produces (handshake, session tickets) goes out at once; if the kernel
  refuses it, `on_backlog` (set by the loop) asks for a write turn.
- `shutdown_write` sends close_notify, then half-closes. A TLS stream that ends without
  close_notify is a lost connection (an OSError), never a traceback.

TLS 1.2 at least, no renegotiation (TLS 1.3 has none; OP_NO_RENEGOTIATION for 1.2).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import shutil
import socket
import ssl
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from chatctl.address import format_addr
from chatctl.errors import ChatctlError
from chatctl.fingerprint import certificate_fingerprint
from chatctl.protocol import Bye, ErrorCode, encode
from chatctl.server.transport import WRITE_CHUNK, Buffer, tune

TLS_HANDSHAKE = 0x16  # the content type of the first record a TLS client sends
CERT_FILE = "tls-cert.pem"
KEY_FILE = "tls-key.pem"
CERT_DAYS = 3650


class TransportFailed(OSError):
    """The connection cannot go on (a failed TLS handshake, a plaintext client on a TLS
    port): the loop logs the message once and closes, with nothing for anybody else."""


class TlsTransport:
    """A server-side TLS connection over a non-blocking socket (see the module docstring)."""

    __slots__ = (
        "_closing",
        "_incoming",
        "_obj",
        "_outgoing",
        "_pending_out",
        "_ready",
        "_started",
        "close",
        "fileno",
        "on_backlog",
        "sock",
    )

    def __init__(self, sock: socket.socket, context: ssl.SSLContext) -> None:
        tune(sock)
        self.sock = sock
        self.fileno: Callable[[], int] = sock.fileno
        self.close: Callable[[], None] = sock.close
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._obj = context.wrap_bio(self._incoming, self._outgoing, server_side=True)
        self._pending_out: bytes | memoryview = b""  # ciphertext the kernel has not taken
        self._ready = False  # handshake done
        self._started = False  # the first bytes were looked at
        self._closing = False  # close_notify sent: what comes in is only drained
        self.on_backlog: Callable[[], None] | None = None

    @property
    def established(self) -> bool:
        """The handshake is done."""
        return self._ready

    @property
    def backlog(self) -> int:
        """Ciphertext waiting for the kernel to take it."""
        return len(self._pending_out)

    # -- reading -----------------------------------------------------------------------------

    def recv_into(self, buf: bytearray, nbytes: int) -> int:
        sock = self.sock
        if self._closing:
            return sock.recv_into(buf, nbytes)  # drained and thrown away: no TLS needed
        incoming = self._incoming
        data = sock.recv(max(nbytes - incoming.pending, 1))
        if not data:
            incoming.write_eof()
        else:
            if not self._started:
                self._started = True
                if data[0] != TLS_HANDSHAKE:
                    self._refuse_plaintext()
            incoming.write(data)
        obj = self._obj
        if not self._ready:
            try:
                obj.do_handshake()
            except ssl.SSLWantReadError:
                self._flush_after_read()
                raise BlockingIOError from None
            except ssl.SSLError as exc:
                self._flush_quietly()  # the alert, if OpenSSL made one
                raise TransportFailed(f"TLS handshake failed: {_why(exc)}") from None
            self._ready = True
        view = memoryview(buf)
        got = 0
        eof = False
        try:
            while got < nbytes:
                n: int = obj.read(nbytes - got, view[got:])  # type: ignore[assignment]
                if not n:
                    break
                got += n
        except ssl.SSLWantReadError:
            pass
        except ssl.SSLZeroReturnError:  # close_notify
            eof = True
        except ssl.SSLEOFError:
            if not got:
                raise ConnectionResetError("the TLS stream ended without close_notify") from None
        except ssl.SSLError as exc:
            raise ConnectionAbortedError(f"TLS error: {_why(exc)}") from None
        finally:
            view.release()
        if self._outgoing.pending:
            self._flush_after_read()
        if got or eof:
            return got
        raise BlockingIOError

    def _refuse_plaintext(self) -> None:
        """A client speaking plaintext to a TLS port: a chatctl Bye in clear, then the end."""
        host, port = self.sock.getsockname()[:2]
        reason = f"this port speaks TLS: connect with tls://{format_addr(host, port)}"
        try:
            self.sock.send(encode(Bye(code=ErrorCode.MALFORMED_FRAME, reason=reason)))
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        raise TransportFailed("a plaintext client on a TLS port (told so in clear)")

    # -- writing -----------------------------------------------------------------------------

    def send(self, data: Buffer) -> int:
        """Plaintext taken (all of `data` up to WRITE_CHUNK), 0 while earlier ciphertext waits.
        Before the handshake is done nothing can be said: what is given is dropped (a Bye
        for a handshake timeout, say)."""
        if self._pending_out and not self._flush():
            return 0
        if not self._ready or self._closing:
            return len(data)
        size = len(data)
        if size > WRITE_CHUNK:
            data = memoryview(data)[:WRITE_CHUNK]
        taken = self._obj.write(data) if size else 0
        self._flush()
        return taken

    def _flush(self) -> bool:
        """Write the ciphertext made so far; True once the kernel took all of it. Raises
        OSError if the connection is gone."""
        outgoing = self._outgoing
        if outgoing.pending:
            fresh = outgoing.read()
            self._pending_out = bytes(self._pending_out) + fresh if self._pending_out else fresh
        out = self._pending_out
        sock = self.sock
        while out:
            try:
                sent = sock.send(out)
            except (BlockingIOError, InterruptedError):
                self._pending_out = out
                return False
            out = memoryview(out)[sent:] if sent < len(out) else b""
        self._pending_out = b""
        return True

    def _flush_after_read(self) -> None:
        if not self._flush() and self.on_backlog is not None:
            self.on_backlog()

    def _flush_quietly(self) -> None:
        try:
            self._flush()
        except OSError:
            pass

    def shutdown_write(self) -> None:
        """close_notify (once the handshake is done), then a FIN."""
        if self._ready and not self._closing:
            try:
                self._obj.unwrap()
            except ssl.SSLError:
                pass  # SSLWantReadError: the client's close_notify is not awaited
            self._flush_quietly()
        self._closing = True
        self.sock.shutdown(socket.SHUT_WR)


def _why(exc: ssl.SSLError) -> str:
    return str(exc.reason or exc.strerror or exc).lower().replace("_", " ")


# -- the server's context and certificate ------------------------------------------------------


@dataclass(frozen=True)
class TlsSetup:
    context: ssl.SSLContext
    description: str  # for the banner: which certificate, its fingerprint


def fingerprint(cert_pem: bytes) -> str:
    """SHA256: and the certificate's SHA-256 in colon-separated hex pairs, as `openssl x509
    -noout -fingerprint -sha256` prints it."""
    return certificate_fingerprint(ssl.PEM_cert_to_DER_cert(cert_pem.decode("ascii")))


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    """A server context for `cert` and `key`. Raises ChatctlError with one line."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.options |= ssl.OP_NO_RENEGOTIATION
    # No TLS 1.3 session tickets: chatctl clients do not resume TLS sessions (they resume
    # chat sessions, with a token), and each ticket costs the server work at every handshake.
    context.num_tickets = 0
    try:
        context.load_cert_chain(cert, key)
    except FileNotFoundError as exc:
        raise ChatctlError(f"cannot use the TLS certificate: {exc.filename}: not found") from None
    except (OSError, ssl.SSLError) as exc:
        why = _why(exc) if isinstance(exc, ssl.SSLError) else (exc.strerror or str(exc))
        raise ChatctlError(f"cannot use the TLS certificate {cert} with key {key}: {why}") from None
    return context


def setup(
    *,
    cert: str | None,
    key: str | None,
    self_signed: bool,
    data: str | None,
    hosts: Sequence[str],
) -> TlsSetup | None:
    """The TLS the configuration asks for, or None for plain TCP. Raises ChatctlError."""
    if self_signed and (cert or key):
        raise ChatctlError("give --tls-cert and --tls-key, or --tls-self-signed, not both")
    if bool(cert) != bool(key):
        raise ChatctlError("--tls-cert and --tls-key go together")
    if cert and key:
        cert_path, key_path = Path(cert).expanduser(), Path(key).expanduser()
        context = server_context(cert_path, key_path)
        return TlsSetup(context, f"{cert_path} ({fingerprint(cert_path.read_bytes())})")
    if not self_signed:
        return None
    from chatctl.store.url import MEMORY, data_directory

    if data == MEMORY:
        cert_pem, key_pem = make_self_signed(hosts)
        scratch = tempfile.mkdtemp(prefix="chatctl-tls-")  # 0700; gone once loaded
        try:
            cert_path, key_path = Path(scratch, CERT_FILE), Path(scratch, KEY_FILE)
            _write_private(cert_path, cert_pem)
            _write_private(key_path, key_pem)
            context = server_context(cert_path, key_path)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        where = "self-signed, in memory for this run only"
        return TlsSetup(context, f"{where} ({fingerprint(cert_pem)})")
    cert_path, key_path = ensure_self_signed(data_directory(data), hosts)
    context = server_context(cert_path, key_path)
    return TlsSetup(context, f"self-signed {cert_path} ({fingerprint(cert_path.read_bytes())})")


def ensure_self_signed(directory: Path, hosts: Sequence[str]) -> tuple[Path, Path]:
    """The data directory's self-signed certificate and key, made the first time (0600)."""
    from chatctl.store import datadir
    from chatctl.store.errors import StoreError

    cert_path, key_path = directory / CERT_FILE, directory / KEY_FILE
    try:
        datadir.prepare(directory)
        if os.path.lexists(cert_path) and os.path.lexists(key_path):
            return cert_path, key_path
        cert_pem, key_pem = make_self_signed(hosts)
        _write_private(key_path, key_pem, datadir.open_file)
        _write_private(cert_path, cert_pem, datadir.open_file)
    except StoreError as exc:
        raise ChatctlError(str(exc)) from None
    return cert_path, key_path


def _write_private(
    path: Path, data: bytes, opener: Callable[[Path, int], int] | None = None
) -> None:
    flags = os.O_WRONLY | os.O_TRUNC
    if opener is None:
        fd = os.open(path, flags | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    else:
        fd = opener(path, flags)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def make_self_signed(hosts: Sequence[str]) -> tuple[bytes, bytes]:
    """A P-256 key and a 10-year self-signed certificate naming `hosts` (but wildcards such
    as 0.0.0.0), localhost and the loopback addresses; both PEM."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = []
    seen: set[str] = set()
    for given in [*hosts, "localhost", "127.0.0.1", "::1"]:
        host = given.strip("[]")
        if host in seen or host in ("", "0.0.0.0", "::"):
            continue
        seen.add(host)
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "chatctl self-signed")])
    now = datetime.datetime.now(datetime.UTC)
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=CERT_DAYS))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert_pem, key_pem


__all__ = [
    "TlsSetup",
    "TlsTransport",
    "TransportFailed",
    "fingerprint",
    "make_self_signed",
    "server_context",
    "setup",
]
