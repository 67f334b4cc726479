"""Resident memory per idle connection of `chatctl serve`.

Starts a server, measures its resident set size (VmRSS), opens N connections that each say
Hello (and optionally join one of R rooms), waits until every one is welcomed, and measures
again. The difference divided by N is the memory one idle connection costs the server.

    python benchmarks/idle_connections.py --connections 10000
"""

from __future__ import annotations

import argparse
import re
import resource
import selectors
import socket
import subprocess
import sys
import time

from chatctl.protocol import Hello, Join, encode

WELCOME = b"CC\x81\x00"
MEMBERS = b"CC\x94\x00"


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        found = re.search(r"VmRSS:\s+(\d+) kB", f.read())
    assert found is not None
    return int(found.group(1))


def settle(pid: int, seconds: float = 1.0) -> int:
    """RSS once it stops moving (the server has finished its work)."""
    last = rss_kib(pid)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        time.sleep(seconds)
        now = rss_kib(pid)
        if now == last:
            return now
        last = now
    return last


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--connections", "-n", type=int, default=10_000)
    parser.add_argument("--rooms", type=int, default=0, help="join one of this many rooms")
    args = parser.parse_args()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if args.connections + 100 > hard:
        sys.exit(f"need {args.connections + 100} descriptors, the hard limit is {hard}")
    server = subprocess.Popen(
        [
            sys.executable, "-m", "chatctl", "serve", "--port", "0", "--data", ":memory:",
            "--log-level", "warning", "--log-format", "json", "--join-history", "0",
            # Every connection comes from 127.0.0.1: lift the per-address limit.
            "--max-per-ip", str(args.connections + 1000), "--connect-rate", "0",
        ],
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert server.stderr is not None
        port = 0
        for line in server.stderr:
            found = re.search(r'"port": (\d+)', line)
            if found:
                port = int(found.group(1))
                break
        before = settle(server.pid)
        sel = selectors.DefaultSelector()
        socks = []
        start = time.monotonic()
        for i in range(args.connections):
            s = socket.create_connection(("127.0.0.1", port))
            hello = encode(Hello(version=1, nick=f"idle{i}"))
            if args.rooms:
                hello += encode(Join(room=f"room{i % args.rooms}", history=0))
            s.sendall(hello)
            s.setblocking(False)
            sel.register(s, selectors.EVENT_READ, [b""])
            socks.append(s)
        wanted = MEMBERS if args.rooms else WELCOME
        waiting = len(socks)
        while waiting:
            for key, _ in sel.select(10):
                seen = key.data
                seen[0] += key.fileobj.recv(65536)  # type: ignore[union-attr]
                if wanted in seen[0]:
                    sel.unregister(key.fileobj)
                    seen[0] = b""
                    waiting -= 1
        opened = time.monotonic() - start
        after = settle(server.pid)
        per = (after - before) * 1024 / args.connections
        rooms = f", each in one of {args.rooms} rooms" if args.rooms else ""
        print(f"{args.connections} idle connections{rooms} opened in {opened:.1f} s")
        print(f"  server RSS {before / 1024:.1f} MiB before, {after / 1024:.1f} MiB after")
        print(f"  {per:,.0f} bytes ({per / 1024:.2f} KiB) per connection")
        for s in socks:
            s.close()
    finally:
        server.terminate()
        server.wait(20)


if __name__ == "__main__":
    main()
