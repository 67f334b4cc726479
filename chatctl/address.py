"""Server addresses as the client commands take them: one parser for join, send, bot and bench.

    tls://HOST:PORT     TLS (certificate checked against the system CAs, or --tls-ca)
    chat://HOST:PORT    plaintext chatctl
    HOST:PORT           plaintext
    [::1]:PORT          an IPv6 address, in brackets when a port follows
    HOST                plaintext on the default port (or --port); a bare IPv6 address too

The scheme is case-insensitive; the port is 1 to 65535. A URL names its port or takes the
default one. Sans-IO: no name is resolved here.

A client command also takes several of them, comma-separated, to fail over in order
(`parse_addresses`): `chat://h1:1060,tls://h2:1060`, each in any of the forms above.
"""

from __future__ import annotations

from dataclasses import dataclass

from chatctl.errors import ChatctlError, ExitCode

SCHEMES = {"tls": True, "chat": False}  # scheme -> TLS


class BadAddress(ChatctlError):
    exit_code = ExitCode.USAGE


def format_addr(host: str, port: int) -> str:
    """HOST:PORT, with brackets around an IPv6 address (for URLs and logs alike)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass(frozen=True)
class Address:
    host: str  # without brackets
    port: int
    tls: bool = False

    @property
    def hostport(self) -> str:
        """HOST:PORT, with brackets around an IPv6 address."""
        return format_addr(self.host, self.port)

    def __str__(self) -> str:
        return f"{'tls' if self.tls else 'chat'}://{self.hostport}"


def parse_address(text: str, default_port: int) -> Address:
    """The address `text` names; `default_port` when it names none. Raises BadAddress."""
    original = text
    tls = False
    scheme, sep, rest = text.partition("://")
    if sep:
        if scheme.lower() not in SCHEMES:
            raise BadAddress(
                f"{original!r}: unknown scheme {scheme!r} (tls://HOST:PORT or chat://HOST:PORT)"
            )
        tls = SCHEMES[scheme.lower()]
        text = rest
    if text.endswith("/"):
        text = text[:-1]
    port_text = ""
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise BadAddress(f"{original!r}: an IPv6 address needs its closing ']'")
        host, after = text[1:end], text[end + 1 :]
        if after:
            if not after.startswith(":"):
                raise BadAddress(f"{original!r}: expected [IPV6]:PORT")
            port_text = after[1:]
            if not port_text:
                raise BadAddress(f"{original!r}: the port is missing after ':'")
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
        if not port_text:
            raise BadAddress(f"{original!r}: the port is missing after ':'")
    else:
        host = text  # a name, an IPv4 address, or a bare IPv6 address (two colons or more)
    if not host:
        raise BadAddress(f"{original!r}: the host is missing")
    if any(c.isspace() or c in "/?#@[]" for c in host):
        raise BadAddress(f"{original!r}: {host!r} is not a host name or address")
    port = default_port
    if port_text:
        if not (port_text.isascii() and port_text.isdigit()) or not 0 < int(port_text) < 65536:
            raise BadAddress(f"{original!r}: the port must be a number from 1 to 65535")
        port = int(port_text)
    return Address(host, port, tls)


def parse_addresses(text: str, default_port: int) -> list[Address]:
    """The addresses a comma-separated `text` names, in order, each as `parse_address` reads
    it (whitespace around each is ignored). Raises BadAddress naming the bad item; an empty
    item is one."""
    items = [item.strip() for item in text.split(",")]
    addresses = []
    for number, item in enumerate(items, 1):
        where = f"address {number} of {len(items)} in {text!r}" if len(items) > 1 else ""
        if not item:
            raise BadAddress(f"{where or repr(text)}: the address is empty")
        try:
            addresses.append(parse_address(item, default_port))
        except BadAddress as exc:
            raise BadAddress(f"{where}: {exc}" if where else str(exc)) from None
    return addresses


def format_addresses(addresses: list[Address]) -> str:
    """The text `parse_addresses` reads back as `addresses`: their URLs, comma-separated."""
    return ",".join(map(str, addresses))


__all__ = [
    "Address",
    "BadAddress",
    "format_addr",
    "format_addresses",
    "parse_address",
    "parse_addresses",
]
