"""`--data redis://HOST:PORT[/DB]`: the Redis a cluster of nodes shares."""

from __future__ import annotations

import urllib.parse
from typing import NamedTuple

from chatctl.errors import ChatctlError

SCHEME = "redis://"
DEFAULT_PORT = 6379


class RedisUrl(NamedTuple):
    host: str
    port: int = DEFAULT_PORT
    db: int = 0

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{SCHEME}{host}:{self.port}/{self.db}"


def is_redis(data: str | None) -> bool:
    return bool(data) and data.lower().startswith(SCHEME)  # type: ignore[union-attr]


def parse_redis_url(data: str) -> RedisUrl:
    """`redis://HOST[:PORT][/DB]`; raises ChatctlError saying what is wrong. No user, password
    or query: this engine does not speak AUTH or TLS to Redis yet."""
    try:
        parts = urllib.parse.urlsplit(data)
        port = parts.port
    except ValueError as exc:
        raise ChatctlError(f"bad Redis URL {data!r}: {exc}") from None
    if parts.scheme.lower() != "redis" or not parts.hostname:
        raise ChatctlError(f"bad Redis URL {data!r}: expected redis://HOST:PORT[/DB]")
    if parts.username or parts.password or parts.query or parts.fragment:
        raise ChatctlError(
            f"bad Redis URL {data!r}: no user, password, query or fragment (not supported yet)"
        )
    path = parts.path.strip("/")
    if path and not (path.isascii() and path.isdigit() and int(path) < 1 << 16):
        raise ChatctlError(f"bad Redis URL {data!r}: the database is a number, as in /0")
    return RedisUrl(parts.hostname, DEFAULT_PORT if port is None else port, int(path or 0))
