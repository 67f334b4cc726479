"""A blocking connection to Redis, one command at a time, for short-lived commands
(`chatctl accounts --data redis://...`) that are no event loop: never used by a node, whose
links are non-blocking (link.py). On resp.py's codec."""

from __future__ import annotations

import socket
import time

from chatctl.cluster.resp import Pipeline, Reply, RespProtocolError, command
from chatctl.errors import ChatctlError
from chatctl.redis_url import RedisUrl

TIMEOUT = 10.0  # for the connection and for each reply


class BlockingRedis:
    """Raises ChatctlError when Redis cannot be reached or does not answer in time; an error
    reply is a value (resp.RedisError), as on a node's links."""

    def __init__(self, url: RedisUrl, timeout: float = TIMEOUT) -> None:
        self.url = url
        self.timeout = timeout
        self._pipeline: Pipeline[None] = Pipeline()
        try:
            self._sock = socket.create_connection((url.host, url.port), timeout=timeout)
        except OSError as exc:
            raise ChatctlError(f"cannot use Redis at {url}: {exc}") from None
        if url.db:
            reply = self.call(b"SELECT", url.db)
            if reply != b"OK":
                self.close()
                raise ChatctlError(f"Redis at {url}: SELECT {url.db} failed: {reply!r:.80}")

    def call(self, *args: bytes | str | int) -> Reply:
        """One command, and its reply."""
        self._pipeline.send(command(*args), None)
        deadline = time.monotonic() + self.timeout
        try:
            self._sock.sendall(self._pipeline.data_to_send())
            while time.monotonic() < deadline:
                data = self._sock.recv(1 << 16)
                if not data:
                    break
                for _, reply in self._pipeline.receive(data):
                    return reply
        except (OSError, RespProtocolError) as exc:
            raise ChatctlError(f"Redis at {self.url}: {exc}") from None
        raise ChatctlError(f"Redis at {self.url} did not answer {args[0]!r}")

    def close(self) -> None:
        self._sock.close()
