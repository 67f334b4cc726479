"""Fan-out throughput of `chatctl serve` side by side with redis-server pub/sub.

One publisher, N subscribers, fixed-size messages, the same selector-driven load generator for
both servers, in the same run on the same machine. The generator counts frames by their header
bytes (no JSON decoding), so it stays cheaper than the servers it measures.

    python benchmarks/server_fanout.py --subs 100 --size 100 --duration 5

Prints one line per target: delivered messages per second (subscriber receipts), published
messages per second, and the server's CPU use; then checks that every subscriber got every
published message (no loss).
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import re
import select
import selectors
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from multiprocessing.sharedctypes import Synchronized
from multiprocessing.synchronize import Event as EventType

from chatctl.protocol import HEADER, Hello, Join, encode

CHATCTL_MESSAGE = b"CC\x90\x00"
CHATCTL_ACK = b"CC\x93\x00"
CHATCTL_MEMBERS = b"CC\x94\x00"
REDIS_MESSAGE = b"$7\r\nmessage\r\n"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Counter:
    """Occurrences of `pattern` in a byte stream read in arbitrary chunks, counted in place in
    a reused buffer (a fresh 1 MiB bytes object per read would cost more than the count)."""

    def __init__(self, pattern: bytes) -> None:
        self.pattern = pattern
        self.keep = len(pattern) - 1
        self.tail = b""
        self.count = 0

    def feed(self, data: bytes) -> None:
        self.feed_buffer(bytearray(data), len(data))

    def feed_buffer(self, buf: bytearray, n: int) -> None:
        keep = self.keep
        if n < keep:
            joined = self.tail + bytes(buf[:n])
            self.count += joined.count(self.pattern)
            self.tail = joined[-keep:]
            return
        # An occurrence across the previous read and this one; then those inside this read.
        self.count += (self.tail + bytes(buf[:keep])).count(self.pattern)
        self.count += buf.count(self.pattern, 0, n)
        self.tail = bytes(buf[n - keep : n])


@dataclass
class Target:
    name: str
    pid: int
    port: int
    hello: Callable[[int], bytes]  # subscriber i's opening bytes
    ready: bytes  # what a subscriber receives once it is subscribed
    pub_hello: bytes
    publish: Callable[[int], bytes]  # message number -> bytes to send
    message: bytes  # the pattern counted at subscribers
    reply: bytes  # the pattern counted at the publisher, one per message


@contextlib.contextmanager
def chatctl_server(extra: list[str]) -> Iterator[tuple[int, int]]:
    # The output limit mirrors Redis's pub/sub client-output-buffer-limit (32 MiB hard).
    args = [sys.executable, "-m", "chatctl", "serve", "--port", "0", "--rate", "0"]
    args += ["--max-output", str(32 * 1024 * 1024)]
    args += ["--max-per-ip", "100000", "--connect-rate", "0"]  # every connection: 127.0.0.1
    args += ["--log-level", "warning", "--log-format", "json", *extra]
    if "--data" not in extra:
        args += ["--data", ":memory:"]
    proc = subprocess.Popen(args, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            found = re.search(r'"port": (\d+)', line)
            if found:
                yield proc.pid, int(found.group(1))
                break
        else:
            raise RuntimeError("chatctl serve did not start")
    finally:
        proc.terminate()
        proc.wait(10)


@contextlib.contextmanager
def redis_server() -> Iterator[tuple[int, int]]:
    port = free_port()
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield proc.pid, port
    finally:
        proc.terminate()
        proc.wait(10)


def chatctl_target(pid: int, port: int, size: int) -> Target:
    text = "x" * size
    head = b'{"msg_id":"'
    tail = f'","room":"bench","text":"{text}"}}'.encode()

    def publish(n: int) -> bytes:
        body = head + str(n).encode() + tail
        return HEADER.pack(b"CC", 0x12, 0, len(body)) + body

    return Target(
        name="chatctl",
        pid=pid,
        port=port,
        hello=lambda i: (
            encode(Hello(version=1, nick=f"sub{i}")) + encode(Join(room="bench", history=0))
        ),
        ready=CHATCTL_MEMBERS,
        pub_hello=encode(Hello(version=1, nick="pub")),
        publish=publish,
        message=CHATCTL_MESSAGE,
        reply=CHATCTL_ACK,
    )


def redis_target(pid: int, port: int, size: int) -> Target:
    payload = b"x" * size
    command = b"*3\r\n$7\r\nPUBLISH\r\n$5\r\nbench\r\n$%d\r\n%s\r\n" % (size, payload)
    return Target(
        name="redis",
        pid=pid,
        port=port,
        hello=lambda i: b"*2\r\n$9\r\nSUBSCRIBE\r\n$5\r\nbench\r\n",
        ready=b"subscribe",
        pub_hello=b"",
        publish=lambda n: command,
        message=REDIS_MESSAGE,
        reply=b"\r\n",
    )


def subscriber_worker(
    target: Target,
    indices: range,
    total: Synchronized[int],
    ready: Synchronized[int],
    stop: EventType,
) -> None:
    """Subscribers `indices`, counting messages into the shared `total` until `stop`."""
    sel = selectors.DefaultSelector()
    socks = []
    for i in indices:
        s = socket.create_connection(("127.0.0.1", target.port))
        s.sendall(target.hello(i))
        socks.append(s)
    for s in socks:  # wait until subscribed, before the clock starts
        seen = b""
        while target.ready not in seen:
            seen += s.recv(65536)
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ, Counter(target.message))
    with ready.get_lock():
        ready.value += 1
    buf = bytearray(1 << 20)
    reported = 0
    while not stop.is_set():
        for key, _ in sel.select(0.05):
            counter: Counter = key.data
            sock: socket.socket = key.fileobj  # type: ignore[assignment]
            try:
                while True:
                    n = sock.recv_into(buf)
                    if not n:
                        raise RuntimeError(f"{target.name} closed a connection")
                    counter.feed_buffer(buf, n)
                    if n < len(buf):
                        break
            except BlockingIOError:
                pass
        count = sum(k.data.count for k in sel.get_map().values())
        if count != reported:
            with total.get_lock():
                total.value += count - reported
            reported = count
    for s in socks:
        s.close()


def run(
    target: Target, subs: int, duration: float, warmup: float, window: int, workers: int
) -> dict[str, float]:
    total: Synchronized[int] = multiprocessing.Value("q", 0)
    ready: Synchronized[int] = multiprocessing.Value("i", 0)
    stop = multiprocessing.Event()
    shares = [range(w, subs, workers) for w in range(workers)]
    procs = [
        multiprocessing.Process(target=subscriber_worker, args=(target, share, total, ready, stop))
        for share in shares
    ]
    for proc in procs:
        proc.start()
    deadline = time.monotonic() + 60
    while ready.value < workers:
        if time.monotonic() > deadline:
            raise RuntimeError("subscribers did not get ready")
        time.sleep(0.01)
    pub = socket.create_connection(("127.0.0.1", target.port))
    pub.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if target.pub_hello:
        pub.sendall(target.pub_hello)
        pub.recv(65536)  # the Welcome
    pub.setblocking(False)
    replies = Counter(target.reply)
    buf = bytearray(1 << 16)
    sent = 0
    pending = b""
    measure_from = time.monotonic() + warmup
    stop_at = measure_from + duration
    measuring = False
    received_at_start = sent_at_start = 0
    cpu_at_start = 0.0
    while True:
        now = time.monotonic()
        if not measuring and now >= measure_from:
            measuring = True
            received_at_start, sent_at_start = total.value, sent
            cpu_at_start = cpu_seconds(target.pid)
        if now >= stop_at:
            break
        room = window - (sent - replies.count)
        if room > 0 and not pending:
            batch = min(room, 200)
            pending = b"".join(target.publish(sent + k) for k in range(batch))
            sent += batch
        if pending:
            try:
                pending = pending[pub.send(pending) :]
            except BlockingIOError:
                pass
        readable, _, _ = select.select([pub], [], [], 0.01 if room <= 0 else 0)
        if readable:
            n = pub.recv_into(buf)
            replies.feed_buffer(buf, n)
    elapsed = time.monotonic() - measure_from
    delivered = total.value - received_at_start
    cpu = cpu_seconds(target.pid) - cpu_at_start
    published = sent - sent_at_start
    pub.setblocking(True)
    pub.sendall(pending)
    # Drain: every subscriber must get every message (nothing lost).
    deadline = time.monotonic() + 30
    while total.value < sent * subs and time.monotonic() < deadline:
        time.sleep(0.01)
    lost = sent * subs - total.value
    stop.set()
    for proc in procs:
        proc.join(10)
    pub.close()
    return {
        "delivered_per_s": delivered / elapsed,
        "published_per_s": published / elapsed,
        "server_cpu": cpu / elapsed,
        "lost": lost,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--subs", type=int, default=100)
    parser.add_argument("--size", type=int, default=100)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--window", type=int, default=5000, help="unanswered messages in flight")
    parser.add_argument("--workers", type=int, default=2, help="subscriber processes")
    parser.add_argument("--rounds", type=int, default=1, help="alternate the targets this often")
    parser.add_argument("--only", choices=["chatctl", "redis"])
    parser.add_argument("--attach", metavar="PID:PORT", help="measure this running chatctl server")
    parser.add_argument("--chatctl-args", default="", help="extra `chatctl serve` arguments")
    args = parser.parse_args()
    results: dict[str, list[dict[str, float]]] = {"chatctl": [], "redis": []}
    for _ in range(args.rounds):
        if args.attach:  # a server started by hand (to profile it, say)
            pid, port = (int(x) for x in args.attach.split(":"))
            target = chatctl_target(pid, port, args.size)
            results["chatctl"].append(
                run(target, args.subs, args.duration, args.warmup, args.window, args.workers)
            )
        elif args.only != "redis":
            with chatctl_server(args.chatctl_args.split()) as (pid, port):
                target = chatctl_target(pid, port, args.size)
                results["chatctl"].append(
                    run(target, args.subs, args.duration, args.warmup, args.window, args.workers)
                )
        if args.only != "chatctl":
            with redis_server() as (pid, port):
                target = redis_target(pid, port, args.size)
                results["redis"].append(
                    run(target, args.subs, args.duration, args.warmup, args.window, args.workers)
                )
    print(f"fan-out: 1 publisher -> {args.subs} subscribers, {args.size}-byte messages")
    for name, runs in results.items():
        for r in runs:
            print(
                f"  {name:8} delivered {r['delivered_per_s']:>11,.0f} msg/s"
                f"  published {r['published_per_s']:>9,.0f} msg/s"
                f"  server cpu {r['server_cpu']:.0%}  lost {r['lost']:.0f}"
            )
    if results["chatctl"] and results["redis"]:
        best = max(r["delivered_per_s"] for r in results["chatctl"])
        redis = max(r["delivered_per_s"] for r in results["redis"])
        print(f"  chatctl / redis = {best / redis:.2f}")


if __name__ == "__main__":
    main()
