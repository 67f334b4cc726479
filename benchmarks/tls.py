"""TLS against plaintext on the same `chatctl serve`: fan-out throughput and idle memory.

Starts a server per mode (plaintext, then TLS with a throw-away self-signed certificate made
by chatctl.server.tls), and measures in each:

- fan-out 1 -> S: S subscribers in one room (non-blocking sockets, or TLS sockets, on one
  selector), one publisher sending M messages of SIZE bytes as fast as its acks come back in
  a window; the time until every subscriber has every message, in deliveries a second. The
  subscribers decrypt in this process too: the figure is end to end, client cost included.
- idle memory: the server's RSS (VmRSS) before and after N connections are welcomed, per
  connection.

    python benchmarks/tls.py --subscribers 100 --messages 2000 --idle 1000
"""

from __future__ import annotations

import argparse
import re
import resource
import selectors
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from chatctl.protocol import Hello, Join, Say, encode
from chatctl.server.tls import make_self_signed

MESSAGE = 0x90
WELCOME = 0x81
HEADER = struct.Struct("!2sBBI")


class Counter:
    """Counts frames of one type in a byte stream without decoding them."""

    def __init__(self, kind: int) -> None:
        self.kind = kind
        self.buf = bytearray()
        self.count = 0

    def feed(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        pos = 0
        while len(buf) - pos >= 8:
            _, kind, _, length = HEADER.unpack_from(buf, pos)
            if len(buf) - pos < 8 + length:
                break
            if kind == self.kind:
                self.count += 1
            pos += 8 + length
        del buf[:pos]


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        found = re.search(r"VmRSS:\s+(\d+) kB", f.read())
    assert found is not None
    return int(found.group(1))


def settle(pid: int) -> int:
    last = rss_kib(pid)
    for _ in range(30):
        time.sleep(0.5)
        now = rss_kib(pid)
        if now == last:
            break
        last = now
    return last


def start_server(tls: list[str]) -> tuple[subprocess.Popen[str], int]:
    server = subprocess.Popen(
        [
            sys.executable, "-m", "chatctl", "serve", "--port", "0", "--data", ":memory:",
            "--log-level", "warning", "--log-format", "json", "--join-history", "0",
            "--max-per-ip", "100000", "--connect-rate", "0", "--rate", "0", *tls,
        ],
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    assert server.stderr is not None
    for line in server.stderr:
        found = re.search(r'"port": (\d+)', line)
        if found:
            return server, int(found.group(1))
    raise SystemExit("the server did not start")


def connect(port: int, context: ssl.SSLContext | None) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if context is not None:
        sock = context.wrap_socket(sock, server_hostname="127.0.0.1")
    return sock


def read_until(sock: socket.socket, counter: Counter, count: int) -> None:
    while counter.count < count:
        counter.feed(sock.recv(65536))


def fanout(port: int, context: ssl.SSLContext | None, subs: int, msgs: int, size: int) -> float:
    room = "bench"
    sockets = []
    for i in range(subs):
        sock = connect(port, context)
        sock.sendall(encode(Hello(version=1, nick=f"sub{i}")) + encode(Join(room=room)))
        read_until(sock, Counter(WELCOME), 1)
        sockets.append(sock)
    publisher = connect(port, context)
    publisher.sendall(encode(Hello(version=1, nick="pub")))
    read_until(publisher, Counter(WELCOME), 1)
    sel = selectors.DefaultSelector()
    counters = {}
    for sock in sockets:
        sock.setblocking(False)
        counters[sock] = Counter(MESSAGE)
        sel.register(sock, selectors.EVENT_READ)
    text = "x" * size
    frames = b"".join(encode(Say(msg_id=str(i), room=room, text=text)) for i in range(msgs))
    done = 0
    start = time.perf_counter()
    publisher.sendall(frames)
    while done < subs:
        for key, _ in sel.select(10):
            sock = key.fileobj  # type: ignore[assignment]
            counter = counters[sock]
            try:
                while True:  # an SSL socket may hold decrypted bytes: read until it blocks
                    data = sock.recv(262144)
                    if not data:
                        raise SystemExit("a subscriber was disconnected")
                    counter.feed(data)
            except (BlockingIOError, ssl.SSLWantReadError):
                pass
            if counter.count >= msgs:
                sel.unregister(sock)
                done += 1
    elapsed = time.perf_counter() - start
    for sock in [*sockets, publisher]:
        sock.close()
    return subs * msgs / elapsed


def idle(pid: int, port: int, context: ssl.SSLContext | None, n: int) -> float:
    before = settle(pid)
    held = []
    for i in range(n):
        sock = connect(port, context)
        sock.sendall(encode(Hello(version=1, nick=f"idle{i}")))
        read_until(sock, Counter(WELCOME), 1)
        held.append(sock)
    after = settle(pid)
    for sock in held:
        sock.close()
    return (after - before) * 1024 / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--subscribers", "-S", type=int, default=100)
    parser.add_argument("--messages", "-m", type=int, default=2000)
    parser.add_argument("--size", type=int, default=100)
    parser.add_argument("--idle", type=int, default=1000)
    args = parser.parse_args()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    scratch = Path(tempfile.mkdtemp(prefix="chatctl-bench-tls-"))
    cert_pem, key_pem = make_self_signed(["127.0.0.1"])
    (scratch / "cert.pem").write_bytes(cert_pem)
    (scratch / "key.pem").write_bytes(key_pem)
    client = ssl.create_default_context(cafile=str(scratch / "cert.pem"))
    tls_args = ["--tls-cert", str(scratch / "cert.pem"), "--tls-key", str(scratch / "key.pem")]
    print(f"fan-out 1 -> {args.subscribers}, {args.messages} x {args.size} B; idle {args.idle}")
    for name, extra, context in (("plain", [], None), ("tls", tls_args, client)):
        server, port = start_server(extra)
        try:
            rate = fanout(port, context, args.subscribers, args.messages, args.size)
            per_conn = idle(server.pid, port, context, args.idle)
        finally:
            server.terminate()
            server.wait(10)
        print(f"{name:5}  {rate:12,.0f} deliveries/s   {per_conn / 1024:6.1f} KiB per idle conn")


if __name__ == "__main__":
    main()
