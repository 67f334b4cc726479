"""A TCP proxy that drops connections on demand, as a blinking network would.

- `Proxy(upstream)`: forwards 127.0.0.1:`.port` to `upstream`. `cut()` drops every connection
  (`half_open=True`: only the client side, as when a path dies without a FIN); while `.blocked`
  is set, new connections are refused.
- `proxy_to(addr)`: the same as a context manager, closed at exit.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from tests.clients import WAIT


class Proxy:
    """Forwards 127.0.0.1:port to a server; `cut()` drops every connection, `blocked` refuses."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.blocked = threading.Event()
        self.socks: list[socket.socket] = []
        self.pairs: list[tuple[socket.socket, socket.socket]] = []
        self.held: list[socket.socket] = []  # server sides kept open by a half-open cut
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while True:
            try:
                down, _ = self.listener.accept()
            except OSError:
                return
            if self.blocked.is_set():
                down.close()
                continue
            up = socket.create_connection(self.upstream)
            with self.lock:
                self.socks += [down, up]
                self.pairs.append((down, up))
            for a, b in ((down, up), (up, down)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        for sock in (src, dst):
            if sock in self.held:
                continue
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cut(self, *, half_open: bool = False) -> None:
        """Drop every connection. `half_open`: only the client side, as when a network path
        dies without a FIN; the server keeps its side (and the session) until it times out."""
        with self.lock:
            socks, self.socks = self.socks, []
            pairs, self.pairs = self.pairs, []
            if half_open:
                self.held += [up for _, up in pairs]
                socks = [down for down, _ in pairs]
        for sock in socks:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def close(self) -> None:
        self.listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept(); close() would not
        self.listener.close()
        self.cut()
        for sock in self.held:
            sock.close()
        self.thread.join(WAIT)


@contextmanager
def proxy_to(addr: tuple[str, int]) -> Iterator[Proxy]:
    proxy = Proxy(addr)
    try:
        yield proxy
    finally:
        proxy.close()
