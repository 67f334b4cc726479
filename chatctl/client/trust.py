"""What a TLS client trusts: CAs, and, like SSH, the certificates it met before.

A certificate that verifies against the CAs (the system's, or `--tls-ca`) is trusted, as it
always was. Any other (self-signed, unknown CA) is judged by its SHA-256 fingerprint
(chatctl/fingerprint.py), trust on first use:

- remembered for this HOST:PORT in known_servers with the same fingerprint: trusted;
- remembered with another fingerprint: refused, loudly, whatever else is said (no prompt,
  no option overrides it; the user deletes the old line if the change is expected);
- not remembered: trusted if it matches `--tls-fingerprint` (the pin), or if the user says
  yes to `confirm` (given by an interactive front end only; the library never reads stdin),
  and then remembered. Otherwise refused, with the fingerprint and what to do.

A pin is checked whenever it is given, CA-verified certificates included. Within a process
a ServerTrust also remembers each certificate it accepted, so a reconnect never asks again
and a reconnect to a different (unverified) certificate is refused.

The known_servers file ($XDG_CONFIG_HOME/chatctl/known_servers, by default
~/.config/chatctl/known_servers) holds one `HOST:PORT SHA256:...` line per server; other
lines (comments, anything malformed) are kept as they are and ignored. It is written whole,
atomically (a temporary file renamed over it), mode 0600 in a 0700 directory.

The rules on the file's text are pure functions (`parse_line`, `lookup`, `add_entry`); the
I/O is ServerTrust's. client/link.py runs the handshakes and asks ServerTrust to judge.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from chatctl.address import format_addr
from chatctl.errors import ChatctlError, ExitCode, Untrusted
from chatctl.fingerprint import parse_fingerprint

if TYPE_CHECKING:
    import ssl

log = logging.getLogger(__name__)

KNOWN_SERVERS = "known_servers"

# confirm(HOST:PORT, fingerprint) -> trust it? Given only by a front end that can ask a person.
Confirm = Callable[[str, str], bool]


def client_context(ca: str | None = None) -> ssl.SSLContext:
    """What a TLS client trusts: the system's CAs, or the CA file `ca` (PEM) alone; the
    server's name is checked against its certificate. Raises ChatctlError."""
    import ssl  # here: `chatctl send` over plain TCP does not pay for it

    try:
        context = ssl.create_default_context(cafile=ca)
    except (OSError, ssl.SSLError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ChatctlError(f"cannot use the CA file {ca}: {why}") from None
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def unverified_context() -> ssl.SSLContext:
    """A context that takes any certificate: only to read its fingerprint and judge it."""
    import ssl

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def pin_of(text: str | None) -> str | None:
    """`--tls-fingerprint` read (None: not given). Raises ChatctlError (usage)."""
    if text is None or not text.strip():
        return None
    try:
        return parse_fingerprint(text)
    except ValueError as exc:
        raise ChatctlError(f"--tls-fingerprint: {exc}", ExitCode.USAGE) from None


def known_servers_path() -> Path:
    """$XDG_CONFIG_HOME/chatctl/known_servers, or ~/.config/chatctl/known_servers (beside
    config.toml: userconfig.py)."""
    from chatctl.userconfig import config_home

    return config_home() / KNOWN_SERVERS


# -- the file's text, sans-IO -------------------------------------------------------------------


def server_key(host: str, port: int) -> str:
    """How known_servers names a server: HOST:PORT ([IPV6]:PORT), the host in lower case."""
    return format_addr(host.lower(), port)


def entry(key: str, fingerprint: str) -> str:
    """One line of known_servers, without its newline."""
    return f"{key} {fingerprint}"


def parse_line(line: str) -> tuple[str, str] | None:
    """(HOST:PORT, fingerprint) from one line, or None for anything else."""
    fields = line.split()
    if len(fields) != 2 or fields[0].startswith("#"):
        return None
    key, text = fields
    host, sep, port = key.rpartition(":")
    if not sep or not host or not port.isascii() or not port.isdigit():
        return None
    try:
        return key.lower(), parse_fingerprint(text)
    except ValueError:
        return None


@dataclass(frozen=True)
class Known:
    fingerprint: str
    line: int  # 1-based, for the message that tells which line to delete


def lookup(text: str, key: str) -> Known | None:
    """The first well-formed entry for `key` (server_key) in known_servers' `text`."""
    for number, line in enumerate(text.splitlines(), 1):
        parsed = parse_line(line)
        if parsed is not None and parsed[0] == key:
            return Known(parsed[1], number)
    return None


def add_entry(text: str, key: str, fingerprint: str) -> str:
    """`text` with an entry appended; every line already there is kept as it is."""
    if text and not text.endswith("\n"):
        text += "\n"
    return text + entry(key, fingerprint) + "\n"


# -- the I/O --------------------------------------------------------------------------------------


class ServerTrust:
    """A TLS client's trust (see the module docstring): the CA context, an optional pin, the
    known_servers file and, from an interactive front end, `confirm`. Thread-safe; one per
    Client, so its memory lasts as long as the process's connections."""

    def __init__(
        self,
        context: ssl.SSLContext,
        *,
        pin: str | None = None,
        known_servers: Path | None = None,
        confirm: Confirm | None = None,
    ) -> None:
        self.context = context
        self.pin = pin_of(pin)
        self.known_servers = known_servers or known_servers_path()
        self.confirm = confirm
        self._accepted: dict[str, str] = {}  # server_key -> fingerprint, this process
        self._lock = threading.Lock()

    def verified(self, host: str, port: int, fingerprint: str) -> None:
        """The certificate verified against the CAs: trusted, unless a pin says otherwise.
        Raises Untrusted."""
        addr = format_addr(host, port)
        if self.pin is not None and fingerprint != self.pin:
            raise Untrusted(self._pin_mismatch(addr, fingerprint))
        with self._lock:
            self._accepted[server_key(host, port)] = fingerprint

    def judge(self, host: str, port: int, fingerprint: str, why: str) -> bool:
        """A certificate the CAs do not vouch for (`why`: OpenSSL's reason). Returns when it
        is trusted: True if a person was asked just now (the caller reconnects: the server
        may have given up on a handshake that waited for them), False if not. Raises
        Untrusted."""
        addr = format_addr(host, port)
        key = server_key(host, port)
        with self._lock:
            before = self._accepted.get(key)
            if before is not None:
                if before == fingerprint:
                    return False
                raise Untrusted(
                    f"the certificate of {addr} changed while connected: it was {before}, it "
                    f"is {fingerprint} ({why}); refusing it"
                )
            known = lookup(self._read(), key)
            if known is not None and known.fingerprint != fingerprint:
                raise Untrusted(self._changed(addr, key, known, fingerprint))
            if self.pin is not None and fingerprint != self.pin:
                raise Untrusted(self._pin_mismatch(addr, fingerprint))
            if known is not None:
                self._accepted[key] = fingerprint
                return False
            if self.pin is not None:
                self._remember(key, fingerprint)
                return False
            if self.confirm is None:
                raise Untrusted(
                    f"cannot trust {addr}: {why}, fingerprint {fingerprint}; if that is the "
                    f"server's (its banner shows it), pass --tls-fingerprint {fingerprint} "
                    "(remembered after the first time), or --tls-ca FILE"
                )
            if not self.confirm(addr, fingerprint):
                raise Untrusted(f"{addr} not trusted (its fingerprint is {fingerprint})")
            self._remember(key, fingerprint)
            return True

    def _pin_mismatch(self, addr: str, fingerprint: str) -> str:
        return (
            f"cannot trust {addr}: its certificate's fingerprint is {fingerprint}, not "
            f"{self.pin} as --tls-fingerprint says"
        )

    def _changed(self, addr: str, key: str, known: Known, fingerprint: str) -> str:
        return (
            f"REFUSED: the certificate of {addr} has CHANGED since it was trusted: remembered "
            f"{known.fingerprint}, presented {fingerprint}. Someone may be intercepting the "
            "connection, or the server has a new certificate. If you know it has, delete "
            f"the line for {key} (line {known.line}) in {self.known_servers} and connect again"
        )

    def _read(self) -> str:
        try:
            return self.known_servers.read_text(encoding="utf-8", errors="surrogateescape")
        except (FileNotFoundError, NotADirectoryError):
            return ""
        except OSError as exc:  # there may be a line against this certificate: no guessing
            raise Untrusted(f"cannot read {self.known_servers}: {exc.strerror or exc}") from None

    def _remember(self, key: str, fingerprint: str) -> None:
        """Accepted for this process, and written to known_servers. A file that cannot be
        written costs the memory of it only: a warning, not a refusal."""
        self._accepted[key] = fingerprint
        path = self.known_servers
        try:
            write_atomically(path, add_entry(self._read(), key, fingerprint))
        except OSError as exc:
            log.warning("could not remember %s in %s: %s", key, path, exc.strerror or exc)


def write_atomically(path: Path, text: str) -> None:
    """`text` into `path` (0600, its directory made 0700 if missing) by a rename: a reader
    sees the old file or the new one, never half of one. Raises OSError."""
    import tempfile

    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", errors="surrogateescape") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise


def client_trust(tls: bool, ca: str | None, fingerprint: str | None) -> ServerTrust | None:
    """What a client command trusts for its address (`tls`: a tls:// one): None for
    plaintext. Raises ChatctlError (a pin for a plaintext address is a usage error)."""
    if not tls:
        if fingerprint:
            raise ChatctlError("--tls-fingerprint is for tls:// addresses", ExitCode.USAGE)
        return None
    return ServerTrust(client_context(ca), pin=fingerprint)


__all__ = [
    "KNOWN_SERVERS",
    "Confirm",
    "Known",
    "ServerTrust",
    "add_entry",
    "client_context",
    "client_trust",
    "entry",
    "known_servers_path",
    "lookup",
    "parse_line",
    "pin_of",
    "server_key",
    "unverified_context",
    "write_atomically",
]
