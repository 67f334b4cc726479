"""An attack bench for issue #11, "Hostile clients": how `chatctl serve` holds up against
clients that mean harm, measured next to two well-behaved clients in the same room.

    python -m benchmarks.abuse [--seconds 5] [--attack NAME]... [--attackers N]
                               [--all-together] [--target HOST:PORT] [--json FILE]
                               [--server-arg=--rate=20]...

By default every attack runs on a fresh `chatctl serve` subprocess (port 0, a temporary --data
directory, --log-format json), which is killed afterwards. With --target the attacks go to a
server that is already running (loopback only); its memory and CPU are read from /proc when
its process can be found (or --server-pid). Every run, per attack:

1. the precondition (history: a room filled with 8 KB messages);
2. two well-behaved clients (in a separate process, so that the attackers' threads do not
   steal their CPU time) join `lobby`: A says every 20 ms, B every 100 ms; each times its Acks
   and checks that it receives every message the other one sent, and that the room's
   sequence numbers it sees have no gaps;
3. the server's RSS is read (baseline), then the attack runs for --seconds while the RSS is
   sampled every 100 ms (peak) and the CPU time is counted; 3 s after the attackers left the
   RSS is read again.

Attackers connect from their own loopback address (127.0.0.11 and up; address-spread from
127.0.0.1 to 127.0.0.8), the good clients from 127.0.0.200, so that per-address limits on one
do not hit the other. This is a measuring tool: it exits 0 whatever the server does.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import dataclasses
import ipaddress
import json
import math
import multiprocessing
import os
import resource
import select
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection as Pipe
from pathlib import Path
from typing import Any

from chatctl.address import BadAddress, parse_address
from chatctl.protocol import (
    HEADER,
    HEADER_SIZE,
    MAGIC,
    MAX_FRAME_SIZE_CEILING,
    NEED_DATA,
    PROTOCOL_VERSION,
    Ack,
    Bye,
    Connection,
    ConnectionClosed,
    Error,
    ErrorCode,
    Event,
    Hello,
    History,
    HistoryEnd,
    Join,
    Members,
    Message,
    Notice,
    Ping,
    Pong,
    RemoteProtocolError,
    Role,
    Say,
    Welcome,
    decode_body,
    encode,
)
from chatctl.ratelimit import TokenBucket
from chatctl.server.log import find_listening

ATTACKS = (
    "history",
    "reconnect-flood",
    "pong-flood",
    "room-spam",
    "address-spread",
    "slow-readers",
)
ROOM = "lobby"
TEXT_BYTES = 8 * 1024  # the attackers' message size (lowered to the server's max_text)
READ_SIZE = 256 * 1024
CONNECT_TIMEOUT = 3.0
ANSWER_TIMEOUT = 3.0  # for a Welcome, or the answers to a burst
GRACE = 2.0  # seconds an attacker may read past the deadline to count what it got
STOP_SLACK = 20.0  # past deadline + GRACE, a thread that has not stopped is reported stuck
SETTLE = 1.0  # seconds the good clients talk before the baseline is taken
FILL_TIMEOUT = 60.0
FILL_CONNECTIONS = 8
HISTORY_BATCH = 200  # History requests written at once by the history attacker
HISTORY_LIMIT = 1000
RECONNECT_BURST = 195
PONG_WRITE = 64 * 1024
SLOW_RCVBUF = 4096
SPREAD_ADDRESSES = 8
SPREAD_EXTRA = 3  # connections tried per address beyond the limit, to see the refusal
SPREAD_BATCH = 64
DEFAULT_MAX_PER_IP = 200  # passed to the servers the bench starts
SERVER_DEFAULT_MAX_PER_IP = 1000  # chatctl serve's own default, assumed for --target
SOURCES = {
    "history": "127.0.0.11",
    "reconnect-flood": "127.0.0.12",
    "pong-flood": "127.0.0.13",
    "room-spam": "127.0.0.14",
    "slow-readers": "127.0.0.15",
    "fill": "127.0.0.20",
    "good": "127.0.0.200",
}
ATTACK_FRAMES = frozenset(
    {Welcome.TYPE, Bye.TYPE, Error.TYPE, Ack.TYPE, Ping.TYPE, HistoryEnd.TYPE}
)

_PR_SET_PDEATHSIG = 1  # linux/prctl.h
# Looked up here, not in the forked child: between fork and exec only system calls are wise.
_PRCTL: Callable[..., int] | None = (
    ctypes.CDLL(None, use_errno=True).prctl if sys.platform == "linux" else None
)


# ---------------------------------------------------------------------------------------------
# Settings


@dataclasses.dataclass(frozen=True)
class Settings:
    seconds: float
    attacks: tuple[str, ...]
    attackers: int
    all_together: bool
    target: str | None
    server_pid: int | None
    server_args: tuple[str, ...]
    data: str | None
    max_per_ip: int | None
    fill: int
    slow_readers: int
    pong_connections: int
    spam_clients: int
    slow_senders: int
    history_hold: float
    after: float
    good_interval: float
    other_interval: float
    json_path: str | None


def parse_args(argv: list[str] | None) -> Settings:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.abuse",
        description=(
            "Attack a chatctl server (issue #11, hostile clients) next to two well-behaved "
            "clients, and print what it costs them and the server. Loopback only."
        ),
        epilog=(
            "Attacks: history (replay amplification), reconnect-flood (a fresh rate-limit "
            "bucket per connection), pong-flood (unmetered frames), room-spam (a new room per "
            "message), address-spread (the per-address limit from 8 loopback addresses), "
            "slow-readers (100 members that never read). Pass server flags as "
            "--server-arg=--rate=20 (with '='). See docs/abuse.md."
        ),
    )
    parser.add_argument(
        "--seconds", type=float, default=5.0, help="duration of each attack (default 5)"
    )
    parser.add_argument(
        "--attack",
        action="append",
        choices=ATTACKS,
        metavar="NAME",
        help=f"run this attack (repeatable; default all): {', '.join(ATTACKS)}",
    )
    parser.add_argument(
        "--attackers",
        type=int,
        default=1,
        help="concurrent attackers for history and reconnect-flood (default 1)",
    )
    parser.add_argument(
        "--all-together",
        action="store_true",
        help="run the chosen attacks at the same time against one server",
    )
    parser.add_argument(
        "--target",
        metavar="HOST:PORT",
        help="attack this running server (loopback only) instead of starting one",
    )
    parser.add_argument(
        "--server-pid",
        type=int,
        help="with --target: the server's pid, for RSS and CPU (default: found from /proc)",
    )
    parser.add_argument(
        "--server-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="extra argument for the started `chatctl serve` (repeatable; --server-arg=--rate=20)",
    )
    parser.add_argument(
        "--data",
        help="--data of the started server (default: a fresh temporary directory per server)",
    )
    parser.add_argument(
        "--max-per-ip",
        type=int,
        help=(
            f"per-address connection limit: passed to the started server (default "
            f"{DEFAULT_MAX_PER_IP}); with --target, the limit it enforces (default "
            f"{SERVER_DEFAULT_MAX_PER_IP})"
        ),
    )
    parser.add_argument(
        "--fill", type=int, default=1500, help="8 KB messages in the room for history (1500)"
    )
    parser.add_argument("--slow-readers", type=int, default=100, help="slow readers (100)")
    parser.add_argument(
        "--slow-senders",
        type=int,
        default=1,
        help="senders flooding the slow readers, from 127.0.1.1 and up (1)",
    )
    parser.add_argument("--pong-connections", type=int, default=8, help="pong flooders (8)")
    parser.add_argument("--spam-clients", type=int, default=10, help="room spammers (10)")
    parser.add_argument(
        "--history-hold",
        type=float,
        default=0.5,
        help="seconds a history attacker reads nothing after its requests (0.5)",
    )
    parser.add_argument(
        "--after", type=float, default=3.0, help="seconds after the attack for the last RSS (3)"
    )
    parser.add_argument(
        "--good-interval",
        type=float,
        default=0.04,
        help="seconds between good client A's messages (0.04: A and B share one address, "
        "and together stay under the server's default rate of 50 a second)",
    )
    parser.add_argument(
        "--other-interval",
        type=float,
        default=0.1,
        help="seconds between good client B's messages (0.1)",
    )
    parser.add_argument("--json", metavar="FILE", help="write every figure as JSON ('-': stdout)")
    ns = parser.parse_args(argv)
    if not 0 < ns.seconds <= 600:
        parser.error("--seconds must be more than 0 and at most 600")
    if not 1 <= ns.attackers <= 100:
        parser.error("--attackers must be from 1 to 100")
    for name in ("slow_readers", "pong_connections", "spam_clients"):
        if not 1 <= getattr(ns, name) <= 2000:
            parser.error(f"--{name.replace('_', '-')} must be from 1 to 2000")
    if not 1 <= ns.slow_senders <= 250:
        parser.error("--slow-senders must be from 1 to 250")
    if not 0 <= ns.fill <= 100_000:
        parser.error("--fill must be from 0 to 100000")
    if ns.max_per_ip is not None and not 1 <= ns.max_per_ip <= 5000:
        parser.error("--max-per-ip must be from 1 to 5000")
    if not 0 < ns.good_interval <= 10 or not 0 < ns.other_interval <= 10:
        parser.error("the intervals must be more than 0 and at most 10 s")
    if ns.target is not None:
        try:
            parse_target(ns.target)
        except ValueError as exc:
            parser.error(str(exc))
    if ns.target is None and ns.server_pid is not None:
        parser.error("--server-pid goes with --target")
    attacks = tuple(dict.fromkeys(ns.attack or ATTACKS))
    return Settings(
        seconds=float(ns.seconds),
        attacks=attacks,
        attackers=int(ns.attackers),
        all_together=bool(ns.all_together),
        target=ns.target,
        server_pid=ns.server_pid,
        server_args=tuple(ns.server_arg),
        data=ns.data,
        max_per_ip=ns.max_per_ip,
        fill=int(ns.fill),
        slow_readers=int(ns.slow_readers),
        pong_connections=int(ns.pong_connections),
        spam_clients=int(ns.spam_clients),
        slow_senders=int(ns.slow_senders),
        history_hold=max(0.0, float(ns.history_hold)),
        after=max(0.0, float(ns.after)),
        good_interval=float(ns.good_interval),
        other_interval=float(ns.other_interval),
        json_path=ns.json,
    )


def parse_target(text: str) -> tuple[str, int]:
    """HOST:PORT or [V6]:PORT, resolved to a loopback address. Raises ValueError."""
    try:
        address = parse_address(text, 0)
    except BadAddress as exc:
        raise ValueError(f"--target must be HOST:PORT: {exc}") from None
    if address.port == 0 or address.tls:
        raise ValueError(f"--target must be HOST:PORT, not {text!r}")
    host, port = address.host, address.port
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise ValueError(f"cannot resolve {host!r}: {exc}") from None
    for info in infos:
        resolved = str(info[4][0])
        if ipaddress.ip_address(resolved.split("%", maxsplit=1)[0]).is_loopback:
            return resolved, port
    raise ValueError(f"{host} is not a loopback address (127.0.0.0/8 or ::1): refused")


# ---------------------------------------------------------------------------------------------
# The server: started here, or found


@dataclasses.dataclass
class Target:
    host: str
    port: int
    pid: int | None = None
    banner: dict[str, Any] = dataclasses.field(default_factory=dict)  # limits it logged
    log_path: Path | None = None
    proc: subprocess.Popen[bytes] | None = None

    @property
    def ipv6(self) -> bool:
        return ":" in self.host

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if self.ipv6 else f"{self.host}:{self.port}"

    def source(self, role: str) -> str | None:
        """The loopback address `role` connects from (None for IPv6: only ::1 exists)."""
        return None if self.ipv6 else SOURCES[role]

    def exited(self) -> int | None:
        return None if self.proc is None else self.proc.poll()


def _die_with_parent() -> None:
    """preexec_fn: the server gets SIGKILL when the bench dies, however it dies (Linux)."""
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


@contextlib.contextmanager
def started_server(settings: Settings) -> Iterator[Target]:
    """A fresh `chatctl serve` on port 0, its log in a file; terminated (then killed) at exit."""
    workdir = Path(tempfile.mkdtemp(prefix="chatctl-abuse-"))
    log_path = workdir / "server.log"
    argv = [sys.executable, "-m", "chatctl", "serve", "--port", "0", "--log-format", "json"]
    argv += ["--data", settings.data or str(workdir / "data")]
    if not any(arg.startswith("--max-per-ip") for arg in settings.server_args):
        argv += ["--max-per-ip", str(settings.max_per_ip or DEFAULT_MAX_PER_IP)]
    argv += settings.server_args
    proc: subprocess.Popen[bytes] | None = None
    try:
        # The log goes to a file: a pipe nobody reads would stall the server once full.
        with log_path.open("wb") as sink:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=sink,
                # Two system calls, no locks: safe with threads running.
                preexec_fn=_die_with_parent,  # noqa: PLW1509
            )
        deadline = time.monotonic() + 20
        found: tuple[str, int] | None = None
        while found is None:
            text = log_path.read_text(errors="replace")
            found = find_listening(text)
            if found is None:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"the server did not start (argv {' '.join(argv[2:])}):\n{text[-2000:]}"
                    )
                time.sleep(0.05)
        target = Target(found[0], found[1], proc.pid, _banner(text), log_path, proc)
        yield target
    finally:
        if proc is not None:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    proc.kill()
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)
        shutil.rmtree(workdir, ignore_errors=True)


def _banner(log: str) -> dict[str, Any]:
    """The limits in the server's JSON "start" line, if it logged one."""
    for line in log.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and record.get("event") == "start":
            limits = record.get("limits")
            return dict(limits) if isinstance(limits, dict) else {}
    return {}


@contextlib.contextmanager
def existing_server(settings: Settings) -> Iterator[Target]:
    assert settings.target is not None
    host, port = parse_target(settings.target)
    pid = settings.server_pid or find_listener_pid(port)
    yield Target(host, port, pid)


def find_listener_pid(port: int) -> int | None:
    """The pid of the process (of ours, readable) listening on TCP `port`, from /proc."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            listening = len(fields) > 9 and fields[3] == "0A"  # LISTEN
            if listening and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(f"socket:[{fields[9]}]")
    if not inodes:
        return None
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fds = os.listdir(f"/proc/{entry}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{entry}/fd/{fd}") in inodes:
                    return int(entry)
            except OSError:
                continue
    return None


def rss_kib(pid: int | None) -> int | None:
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU time of `pid` so far."""
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def kernel_send_queue(port: int) -> int | None:
    """Bytes waiting in the kernel's send queues of the server's connections (local port
    `port`), from /proc/net/tcp: memory a slow reader costs outside the server's RSS."""
    total = 0
    found = False
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f, None)
                for line in f:
                    fields = line.split()
                    if len(fields) < 5 or fields[3] == "0A":  # a listener
                        continue
                    if int(fields[1].rsplit(":", 1)[1], 16) == port:
                        total += int(fields[4].split(":")[0], 16)
            found = True
        except (OSError, ValueError, IndexError):
            continue
    return total if found else None


class Sampler(threading.Thread):
    """The server's RSS and its connections' kernel send queues every 100 ms until `halt`."""

    def __init__(self, pid: int | None, port: int) -> None:
        super().__init__(name="rss-sampler", daemon=True)
        self.pid = pid
        self.port = port
        self.samples: list[tuple[float, int]] = []
        self.queued: list[int] = []
        self.halt = threading.Event()

    def run(self) -> None:
        while True:
            kib = rss_kib(self.pid)
            if kib is not None:
                self.samples.append((time.monotonic(), kib))
            queued = kernel_send_queue(self.port)
            if queued is not None:
                self.queued.append(queued)
            if self.halt.wait(0.1):
                return

    @property
    def peak(self) -> int | None:
        return max((kib for _, kib in self.samples), default=None)


def log_figures(path: Path | None, offset: int) -> dict[str, Any]:
    """What the server logged from `offset` on: events by name, the largest output queue a
    slow consumer was dropped with, and the commonest disconnect reasons."""
    if path is None:
        return {}
    try:
        with path.open("rb") as f:
            f.seek(offset)
            data = f.read()
    except OSError:
        return {}
    events: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    largest_queue = 0
    queued_total = 0
    for line in data.decode("utf-8", "replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if not isinstance(record, dict):
            continue
        event = str(record.get("event", "?"))
        events[event] += 1
        if event == "slow_consumer":
            queued = record.get("queued")
            if isinstance(queued, int):
                largest_queue = max(largest_queue, queued)
                queued_total += queued
        elif event == "disconnect":
            reasons[str(record.get("reason", "?"))[:60]] += 1
        elif event == "refused":
            more = record.get("more")
            if isinstance(more, int):
                events[event] += more
    return {
        "events": dict(events.most_common()),
        "largest_slow_consumer_queue": largest_queue,
        "slow_consumer_queued_total": queued_total,
        "disconnect_reasons": dict(reasons.most_common(6)),
    }


# ---------------------------------------------------------------------------------------------
# Sockets and frames


def open_socket(
    target: Target, source: str | None, *, rcvbuf: int = 0, timeout: float = CONNECT_TIMEOUT
) -> socket.socket:
    """A TCP connection to the target from `source` (a loopback address), or OSError."""
    family = socket.AF_INET6 if target.ipv6 else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        if rcvbuf:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        if source is not None:
            sock.bind((source, 0))
        sock.settimeout(timeout)
        sock.connect((target.host, target.port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except BaseException:
        sock.close()
        raise
    return sock


def send_all(sock: socket.socket, data: bytes, timeout: float = 2.0) -> bool:
    """False when the connection is broken (reset, closed, or stuck for `timeout`)."""
    try:
        sock.settimeout(timeout)
        sock.sendall(data)
    except OSError:
        return False
    return True


def recv_some(sock: socket.socket, timeout: float) -> bytes | None:
    """Bytes; b"" once the stream has ended (or was reset); None when nothing came in time."""
    try:
        sock.settimeout(max(timeout, 0.001))
        return sock.recv(READ_SIZE)
    except TimeoutError:
        return None
    except OSError:
        return b""


class FrameReader:
    """Splits a byte stream into frames by their headers, and decodes only the bodies of the
    types in `decode`: an attacker reading megabytes of replayed messages counts them without
    parsing them."""

    def __init__(self, decode: frozenset[int] = ATTACK_FRAMES) -> None:
        self.decode = decode
        self.buf = bytearray()
        self.bytes = 0
        self.frames: Counter[int] = Counter()
        self.broken = ""  # why the rest of the stream cannot be read

    def feed(self, data: bytes) -> list[Event]:
        self.bytes += len(data)
        if self.broken:
            return []
        buf = self.buf
        buf += data
        pos = 0
        out: list[Event] = []
        while len(buf) - pos >= HEADER_SIZE:
            magic, kind, _flags, length = HEADER.unpack_from(buf, pos)
            if magic != MAGIC or length > MAX_FRAME_SIZE_CEILING:
                self.broken = "not a chatctl stream"
                buf.clear()
                return out
            end = pos + HEADER_SIZE + length
            if len(buf) < end:
                break
            self.frames[kind] += 1
            if kind in self.decode:
                try:
                    out.append(decode_body(kind, bytes(buf[pos + HEADER_SIZE : end])))
                except RemoteProtocolError as exc:
                    self.broken = str(exc)
                    buf.clear()
                    return out
            pos = end
        del buf[:pos]
        return out

    @property
    def mid_frame(self) -> bool:
        return bool(self.buf)


Greeting = Welcome | Bye | str  # str: why there was neither


def why_not(greeting: Greeting) -> str:
    """A greeting that is not a Welcome, as a reason."""
    if isinstance(greeting, Bye):
        return f"Bye {code_name(greeting.code)}"
    return "welcomed" if isinstance(greeting, Welcome) else greeting


def await_greeting(sock: socket.socket, reader: FrameReader, timeout: float) -> Greeting:
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return "no Welcome in time"
        data = recv_some(sock, left)
        if data is None:
            return "no Welcome in time"
        if not data:
            return "closed before the Welcome"
        for event in reader.feed(data):
            if isinstance(event, Welcome | Bye):
                return event
        if reader.broken:
            return f"unreadable: {reader.broken}"


def connect_and_greet(
    target: Target,
    source: str | None,
    nick: str,
    *,
    rcvbuf: int = 0,
    timeout: float = ANSWER_TIMEOUT,
) -> tuple[socket.socket | None, FrameReader, Greeting]:
    """Connect, say Hello and wait for the answer. The socket is None unless welcomed."""
    reader = FrameReader()
    try:
        sock = open_socket(target, source, rcvbuf=rcvbuf)
    except OSError as exc:
        return None, reader, f"connect failed: {exc.strerror or exc}"
    if not send_all(sock, encode(Hello(version=PROTOCOL_VERSION, nick=nick))):
        sock.close()
        return None, reader, "Hello not sent"
    greeting = await_greeting(sock, reader, timeout)
    if not isinstance(greeting, Welcome):
        sock.close()
        return None, reader, greeting
    return sock, reader, greeting


def drain(
    sock: socket.socket, reader: FrameReader, *, first: float, idle: float, cap: float
) -> tuple[list[Event], bool]:
    """Read until the stream ends (True), or nothing comes for `first` seconds (a server busy
    with the request), then for `idle` seconds, or `cap` seconds passed since the first bytes."""
    events: list[Event] = []
    deadline = time.monotonic() + first
    wait = first
    started = False
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return events, False
        data = recv_some(sock, min(wait, left))
        if data is None:
            return events, False
        if not data:
            return events, True
        if not started:
            started = True
            wait = idle
            deadline = time.monotonic() + cap
        events += reader.feed(data)
        if reader.broken:
            return events, False


def close(sock: socket.socket | None) -> None:
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.close()


def code_name(code: int) -> str:
    try:
        return f"{code} {ErrorCode(code).name}"
    except ValueError:
        return str(code)


def codes(counts: Counter[int] | dict[int, int]) -> str:
    return ", ".join(f"{code_name(c)} x{n}" for c, n in sorted(counts.items())) or "none"


def payload(n: int, tag: str, size: int) -> str:
    head = f"{tag} {n} "
    return head + "x" * max(1, size - len(head))


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def mb(kib: int | None) -> str:
    return "n/a" if kib is None else f"{kib / 1024:.1f} MB"


def ms(seconds: float | None) -> str:
    return "n/a" if seconds is None else f"{seconds * 1000:.1f}"


# ---------------------------------------------------------------------------------------------
# The attack context, and a client that says messages at a pace


@dataclasses.dataclass
class Ctx:
    target: Target
    settings: Settings
    limits: dict[str, int]  # Welcome.limits
    max_per_ip: int
    stop: threading.Event
    deadline: float = 0.0
    fill: dict[str, Any] | None = None

    def over(self) -> bool:
        return self.stop.is_set() or time.monotonic() >= self.deadline

    def left(self) -> float:
        return max(0.0, self.deadline - time.monotonic())

    def sleep_until(self, when: float) -> None:
        self.stop.wait(max(0.0, min(when, self.deadline) - time.monotonic()))

    @property
    def rate(self) -> float:
        return float(self.limits.get("rate", 50))

    @property
    def burst(self) -> int:
        return int(self.limits.get("burst", 200))

    @property
    def text_size(self) -> int:
        return min(TEXT_BYTES, int(self.limits.get("max_text", TEXT_BYTES)))


@dataclasses.dataclass
class Outcome:
    """What an attack reports: figures for the JSON, rows for the table."""

    figures: dict[str, Any]
    rows: list[tuple[str, str]]


@dataclasses.dataclass
class SayTally:
    connections: int = 0
    sent: int = 0
    acked: int = 0
    errors: Counter[int] = dataclasses.field(default_factory=Counter)
    byes: Counter[int] = dataclasses.field(default_factory=Counter)
    closed: int = 0  # connections that ended without a Bye
    failures: Counter[str] = dataclasses.field(default_factory=Counter)  # could not connect

    def add(self, other: SayTally) -> None:
        self.connections += other.connections
        self.sent += other.sent
        self.acked += other.acked
        self.errors.update(other.errors)
        self.byes.update(other.byes)
        self.closed += other.closed
        self.failures.update(other.failures)

    def note(self, greeting: Greeting) -> None:
        if isinstance(greeting, Bye):
            self.byes[greeting.code] += 1
        else:
            self.failures[why_not(greeting)] += 1

    def figures(self) -> dict[str, Any]:
        return {
            "connections": self.connections,
            "says_sent": self.sent,
            "acked": self.acked,
            "errors": {code_name(c): n for c, n in sorted(self.errors.items())},
            "byes": {code_name(c): n for c, n in sorted(self.byes.items())},
            "closed_without_bye": self.closed,
            "connect_failures": dict(self.failures),
        }

    def ends(self) -> str:
        parts = [f"Bye {codes(self.byes)}"] if self.byes else []
        if self.closed:
            parts.append(f"closed without Bye x{self.closed}")
        if self.failures:
            parts += [f"{why} x{n}" for why, n in self.failures.most_common(3)]
        return "; ".join(parts) or "none by the server"


def say_loop(
    target: Target,
    source: str | None,
    nick: str,
    make: Callable[[int], tuple[str, str]],
    tally: SayTally,
    *,
    until: float,
    stop: threading.Event,
    pace: float,
    burst: float,
    count: int | None = None,
    polite: bool = False,
    window: int = 32,
) -> None:
    """Say `make(n)` = (room, text) messages at `pace` a second (bursts of `burst`; 0: as fast
    as the answers come), at most `window` unanswered, until `until` or `count` acks;
    reconnect when dropped. `polite`: at a RATE_LIMITED, pause 1 s and go on at 70% of the
    pace (never below 5% of the first one)."""
    sock: socket.socket | None = None
    reader = FrameReader()
    outstanding = 0
    n = 0
    bucket = TokenBucket(rate=pace, capacity=max(1.0, burst), now=time.monotonic())
    floor = pace * 0.05
    paused_until = 0.0
    try:
        while not stop.is_set():
            now = time.monotonic()
            if now >= until or (count is not None and tally.acked >= count):
                return
            if sock is None:
                name = f"{nick}c{tally.connections + sum(tally.failures.values())}"
                sock, reader, greeting = connect_and_greet(target, source, name[:32])
                if sock is None:
                    tally.note(greeting)
                    stop.wait(0.05)
                    continue
                tally.connections += 1
                outstanding = 0
            batch: list[bytes] = []
            while (
                now >= paused_until
                and outstanding + len(batch) < window
                and (count is None or tally.acked + outstanding + len(batch) < count)
                and bucket.take(now)
            ):
                room, text = make(n)
                n += 1
                batch.append(encode(Say(msg_id=str(n), room=room, text=text)))
            if batch:
                if not send_all(sock, b"".join(batch)):
                    tally.closed += 1
                    close(sock)
                    sock = None
                    continue
                tally.sent += len(batch)
                outstanding += len(batch)
            wait = 0.05 if outstanding >= window else min(0.05, bucket.wait_time(now))
            data = recv_some(sock, max(wait, 0.001))
            if data is None:
                continue
            ended = not data
            for event in reader.feed(data):
                if isinstance(event, Ack):
                    tally.acked += 1
                    outstanding -= 1
                elif isinstance(event, Error):
                    tally.errors[event.code] += 1
                    if event.msg_id:
                        outstanding -= 1
                    if polite and event.code == ErrorCode.RATE_LIMITED:
                        pace = max(floor, pace * 0.7)
                        paused_until = time.monotonic() + 1.0
                        bucket = TokenBucket(rate=pace, capacity=1.0, now=paused_until)
                elif isinstance(event, Ping):
                    send_all(sock, encode(Pong(token=event.token)))
                elif isinstance(event, Bye):
                    tally.byes[event.code] += 1
                    ended = True
                    break
            else:
                if ended:
                    tally.closed += 1
            if ended or reader.broken:
                close(sock)
                sock = None
    finally:
        close(sock)


def run_threads(
    ctx: Ctx, name: str, count: int, body: Callable[[int], None], stop_by: float
) -> int:
    """Run body(0..count-1) in threads; the number still running at `stop_by` (stuck)."""
    threads = [
        threading.Thread(target=body, args=(i,), name=f"{name}-{i}", daemon=True)
        for i in range(count)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(max(0.0, stop_by - time.monotonic()))
    stuck = sum(thread.is_alive() for thread in threads)
    if stuck:
        ctx.stop.set()
    return stuck


# ---------------------------------------------------------------------------------------------
# The precondition of `history`: a room full of big messages


def fill_room(ctx: Ctx, stop: threading.Event) -> dict[str, Any]:
    """Fill `lobby` up to settings.fill messages of 8 KB from FILL_CONNECTIONS polite clients,
    each from its own address (127.0.0.20 and up) at 90% of the announced rate, slowing
    down at any RATE_LIMITED."""
    started = time.monotonic()
    target = ctx.target
    source = target.source("fill")
    sock, reader, greeting = connect_and_greet(target, source, "filler")
    if sock is None:
        return {"error": f"could not connect to look at the room: {greeting}"}
    head = 0
    try:
        send_all(sock, encode(Join(room=ROOM, history=0)))
        deadline = time.monotonic() + ANSWER_TIMEOUT
        while time.monotonic() < deadline:
            data = recv_some(sock, deadline - time.monotonic())
            if not data:
                break
            ends = [e for e in reader.feed(data) if isinstance(e, HistoryEnd)]
            if ends:
                head = ends[0].head
                break
    finally:
        close(sock)
    need = max(0, ctx.settings.fill - head)
    tallies = [SayTally() for _ in range(FILL_CONNECTIONS)]
    size = ctx.text_size
    share = math.ceil(need / FILL_CONNECTIONS) if need else 0
    until = time.monotonic() + FILL_TIMEOUT

    def body(i: int) -> None:
        say_loop(
            target,
            None if target.ipv6 else f"127.0.0.{20 + i}",
            f"filler{i}",
            lambda n: (ROOM, payload(n, f"fill{i}", size)),
            tallies[i],
            until=until,
            stop=stop,
            pace=ctx.rate * 0.9,
            burst=ctx.burst / 2,
            count=max(0, min(share, need - i * share)),
            polite=True,
        )

    if need:
        run_threads(ctx, "fill", FILL_CONNECTIONS, body, until + 10)
    total = SayTally()
    for tally in tallies:
        total.add(tally)
    return {
        "messages_before": head,
        "messages_added": total.acked,
        "text_bytes": size,
        "seconds": round(time.monotonic() - started, 2),
        "rate_limited": total.errors.get(ErrorCode.RATE_LIMITED, 0),
        "complete": total.acked >= need,
    }


# ---------------------------------------------------------------------------------------------
# The attacks


@dataclasses.dataclass
class HistoryTally:
    connections: int = 0
    requests: int = 0
    answered: int = 0  # HistoryEnd frames: requests answered in full
    messages: int = 0  # replayed Message frames received
    bytes: int = 0
    errors: Counter[int] = dataclasses.field(default_factory=Counter)
    byes: Counter[int] = dataclasses.field(default_factory=Counter)
    closed: int = 0
    still_open: int = 0  # rounds the server had not closed by the end of the reading
    failures: Counter[str] = dataclasses.field(default_factory=Counter)


def attack_history(ctx: Ctx) -> Outcome:
    """Each attacker: connect, Hello, 200 x History(after=0, limit=1000) in one write, read
    nothing for --history-hold seconds, then count what arrived (up to 1 s), and again."""
    n = ctx.settings.attackers
    tallies = [HistoryTally() for _ in range(n)]
    requests = encode(History(room=ROOM, after=0, limit=HISTORY_LIMIT)) * HISTORY_BATCH
    hold = ctx.settings.history_hold
    source = ctx.target.source("history")

    def body(i: int) -> None:
        t = tallies[i]
        rounds = 0
        while not ctx.over():
            rounds += 1
            sock, reader, greeting = connect_and_greet(ctx.target, source, f"hist{i}r{rounds}")
            if sock is None:
                if isinstance(greeting, Bye):
                    t.byes[greeting.code] += 1
                else:
                    t.failures[why_not(greeting)] += 1
                ctx.stop.wait(0.05)
                continue
            try:
                t.connections += 1
                greeted = reader.bytes
                if not send_all(sock, requests):
                    t.closed += 1
                    continue
                t.requests += HISTORY_BATCH
                ctx.stop.wait(hold)  # read nothing
                # Then count what came: wait for a server busy with the requests (bounded by
                # the attack's end), read until it closes, goes quiet, or for 1 s at most.
                first = max(0.25, ctx.deadline + GRACE - time.monotonic())
                events, ended = drain(sock, reader, first=first, idle=0.25, cap=1.0)
                t.bytes += reader.bytes - greeted
                t.answered += reader.frames[HistoryEnd.TYPE]
                t.messages += reader.frames[Message.TYPE]
                bye = False
                for event in events:
                    if isinstance(event, Error):
                        t.errors[event.code] += 1
                    elif isinstance(event, Bye):
                        t.byes[event.code] += 1
                        bye = True
                if ended and not bye:
                    t.closed += 1
                elif not ended:
                    t.still_open += 1
            finally:
                close(sock)

    stuck = run_threads(ctx, "history", n, body, ctx.deadline + GRACE + STOP_SLACK)
    total = HistoryTally()
    for t in tallies:
        total.connections += t.connections
        total.requests += t.requests
        total.answered += t.answered
        total.messages += t.messages
        total.bytes += t.bytes
        total.errors.update(t.errors)
        total.byes.update(t.byes)
        total.closed += t.closed
        total.still_open += t.still_open
        total.failures.update(t.failures)
    refused = total.errors.get(ErrorCode.RATE_LIMITED, 0)
    unanswered = total.requests - total.answered - sum(total.errors.values())
    figures: dict[str, Any] = {
        "attackers": n,
        "fill": ctx.fill,
        "connections": total.connections,
        "history_requests_sent": total.requests,
        "answered_in_full": total.answered,
        "refused_rate_limited": refused,
        "errors": {code_name(c): k for c, k in sorted(total.errors.items())},
        "unanswered": unanswered,
        "replayed_messages_received": total.messages,
        "bytes_received": total.bytes,
        "byes": {code_name(c): k for c, k in sorted(total.byes.items())},
        "closed_without_bye": total.closed,
        "connections_still_open_after_reading": total.still_open,
        "connect_failures": dict(total.failures),
        "stuck_threads": stuck,
    }
    fill = ctx.fill or {}
    rows = [
        (
            "room filled",
            f"{fill.get('messages_before', 0) + fill.get('messages_added', 0):,} messages of "
            f"{fill.get('text_bytes', 0):,} B ({fill.get('messages_added', 0):,} added in "
            f"{fill.get('seconds', 0)} s, RATE_LIMITED x{fill.get('rate_limited', 0)})"
            if "error" not in fill
            else str(fill["error"]),
        ),
        (
            "attackers",
            f"{n} x ({HISTORY_BATCH} History(after=0, limit={HISTORY_LIMIT}) in one write, "
            f"then {hold:g} s reading nothing)",
        ),
        ("connections", f"{total.connections:,} welcomed"),
        (
            "History requests",
            f"{total.requests:,} sent: {total.answered:,} answered in full (HistoryEnd), "
            f"{refused:,} refused (RATE_LIMITED), {unanswered:,} unanswered",
        ),
        (
            "attacker received",
            f"{total.bytes / 1048576:,.1f} MB, {total.messages:,} replayed Messages",
        ),
        (
            "connections ended",
            f"Bye {codes(total.byes)}; closed without Bye x{total.closed}; "
            f"still open after reading x{total.still_open}",
        ),
    ]
    if total.failures:
        rows.append(("connect failures", ", ".join(f"{w} x{k}" for w, k in total.failures.items())))
    return Outcome(figures, rows)


def attack_reconnect_flood(ctx: Ctx) -> Outcome:
    """Connect, Hello, a burst of 195 Says (just under the burst) into lobby, read the answers,
    close, and again as fast as possible: every connection starts with a full bucket."""
    n = ctx.settings.attackers
    burst_size = max(1, min(RECONNECT_BURST, ctx.burst - 5))
    frames = b"".join(
        encode(Say(msg_id=str(i), room=ROOM, text=f"flood {i}")) for i in range(burst_size)
    )
    tallies = [SayTally() for _ in range(n)]
    source = ctx.target.source("reconnect-flood")
    started = time.monotonic()
    finished = [started] * n

    def body(i: int) -> None:
        t = tallies[i]
        k = 0
        while not ctx.over():
            k += 1
            sock, reader, greeting = connect_and_greet(ctx.target, source, f"flood{i}x{k}")
            if sock is None:
                t.note(greeting)
                ctx.stop.wait(0.01)
                continue
            try:
                t.connections += 1
                if not send_all(sock, frames):
                    t.closed += 1
                    continue
                t.sent += burst_size
                answered = 0
                until = min(time.monotonic() + ANSWER_TIMEOUT, ctx.deadline + GRACE)
                while answered < burst_size:
                    left = until - time.monotonic()
                    data = recv_some(sock, left) if left > 0 else None
                    if data is None:
                        break
                    if not data:
                        t.closed += 1
                        break
                    for event in reader.feed(data):
                        if isinstance(event, Ack):
                            t.acked += 1
                            answered += 1
                        elif isinstance(event, Error):
                            t.errors[event.code] += 1
                            answered += 1
                        elif isinstance(event, Bye):
                            t.byes[event.code] += 1
                            answered = burst_size
                    if reader.broken:
                        break
            finally:
                close(sock)
        finished[i] = time.monotonic()

    stuck = run_threads(ctx, "reconnect", n, body, ctx.deadline + GRACE + STOP_SLACK)
    total = SayTally()
    for t in tallies:
        total.add(t)
    elapsed = max(max(finished) - started, 0.001)
    per_second = total.acked / elapsed
    rate, burst = ctx.rate, ctx.burst
    allowance = rate + burst / elapsed if rate else None
    figures = {
        "attackers": n,
        "burst_size": burst_size,
        **total.figures(),
        "seconds": round(elapsed, 3),
        "acked_per_second": round(per_second, 1),
        "server_rate": rate,
        "server_burst": burst,
        "per_address_allowance_per_second": round(allowance, 1) if allowance else None,
        "times_the_allowance": round(per_second / allowance, 2) if allowance else None,
        "stuck_threads": stuck,
    }
    verdict = (
        f"{per_second / allowance:.1f}x the per-address allowance of {allowance:,.0f}/s "
        f"(rate {rate:g}/s + burst {burst} over {elapsed:.1f} s)"
        if allowance
        else "the server has no rate limit (rate 0)"
    )
    rows = [
        ("attackers", f"{n} from one address, {burst_size} Says per connection, then reconnect"),
        ("connections", f"{total.connections:,} welcomed"),
        (
            "Say frames",
            f"{total.sent:,} sent, {total.acked:,} acked, errors {codes(total.errors)}",
        ),
        ("accepted rate", f"{per_second:,.0f} msg/s = {verdict}"),
        ("connections ended", total.ends()),
    ]
    return Outcome(figures, rows)


def attack_pong_flood(ctx: Ctx) -> Outcome:
    """N connections writing Pong frames as fast as the server reads them (64 KB writes);
    one that is dropped reconnects (after 0.1 s) and goes on."""
    n = ctx.settings.pong_connections
    frame = encode(Pong(token=0))
    chunk = frame * (PONG_WRITE // len(frame))
    source = ctx.target.source("pong-flood")
    sent = [0] * n
    welcomed = [0] * n
    ends: list[list[tuple[float, str]]] = [[] for _ in range(n)]
    failures: Counter[str] = Counter()
    started = time.monotonic()

    def flood(i: int, sock: socket.socket, reader: FrameReader) -> str:
        """Write Pongs until the deadline ("") or the server ends it (how)."""
        view = memoryview(chunk)
        offset = 0
        sock.setblocking(False)
        while not ctx.over():
            readable, writable, _ = select.select(
                [sock], [sock], [], min(0.1, max(ctx.left(), 0.001))
            )
            if readable:
                try:
                    data = sock.recv(READ_SIZE)
                except BlockingIOError:
                    data = None
                except OSError:
                    data = b""
                if data == b"":
                    return "closed without Bye"
                if data:
                    for event in reader.feed(data):
                        if isinstance(event, Bye):
                            return code_name(event.code)
            if writable:
                try:
                    written = sock.send(view[offset:])
                except BlockingIOError:
                    continue
                except OSError:
                    return "reset while writing"
                sent[i] += written
                offset += written
                if offset == len(chunk):
                    offset = 0
        return ""

    def body(i: int) -> None:
        k = 0
        while not ctx.over():
            k += 1
            sock, reader, greeting = connect_and_greet(ctx.target, source, f"pong{i}x{k}")
            if sock is None:
                failures[why_not(greeting)] += 1
                ctx.stop.wait(0.1)
                continue
            welcomed[i] += 1
            try:
                how = flood(i, sock, reader)
            finally:
                close(sock)
            if how:
                ends[i].append((time.monotonic() - started, how))
                ctx.stop.wait(0.1)

    stuck = run_threads(ctx, "pong", n, body, ctx.deadline + GRACE + STOP_SLACK)
    elapsed = max(time.monotonic() - started, 0.001)
    frames = sum(sent) // len(frame)
    dropped = [end for per in ends for end in per]
    how: Counter[str] = Counter(why for _, why in dropped)
    first = min((at for at, _ in dropped), default=None)
    figures = {
        "connections": n,
        "welcomed": sum(welcomed),
        "pong_frames_sent": frames,
        "pong_frames_per_second": round(frames / elapsed),
        "bytes_sent": sum(sent),
        "disconnected": len(dropped),
        "disconnect_ways": dict(how),
        "first_disconnect_after_s": None if first is None else round(first, 3),
        "connect_failures": dict(failures),
        "stuck_threads": stuck,
    }
    rows = [
        (
            "connections",
            f"{n} flooders writing {PONG_WRITE // 1024} KB at a time, reconnecting when "
            f"dropped: {sum(welcomed):,} welcomed",
        ),
        (
            "Pong frames sent",
            f"{frames:,} ({frames / elapsed:,.0f}/s, {sum(sent) / 1048576:,.1f} MB)",
        ),
        (
            "disconnected",
            (
                f"{len(dropped):,} times: "
                + ", ".join(f"{w} x{k}" for w, k in how.items())
                + f" (first after {first:.2f} s)"
            )
            if dropped
            else f"never: all {n} still connected at the end",
        ),
    ]
    if failures:
        rows.append(
            ("reconnects failed", ", ".join(f"{w} x{k}" for w, k in failures.most_common(4)))
        )
    return Outcome(figures, rows)


def attack_room_spam(ctx: Ctx) -> Outcome:
    """N clients each saying 8 KB into a new room per message (spam-<n>-<i>), not joining,
    as fast as the rate limit lets them (reconnecting when dropped)."""
    n = ctx.settings.spam_clients
    tallies = [SayTally() for _ in range(n)]
    size = ctx.text_size
    source = ctx.target.source("room-spam")

    def body(i: int) -> None:
        say_loop(
            ctx.target,
            source,
            f"spam{i}",
            lambda k: (f"spam-{i}-{k}", payload(k, "spam", size)),
            tallies[i],
            until=ctx.deadline,
            stop=ctx.stop,
            pace=ctx.rate,
            burst=ctx.burst,
        )

    stuck = run_threads(ctx, "spam", n, body, ctx.deadline + GRACE + STOP_SLACK)
    total = SayTally()
    for t in tallies:
        total.add(t)
    figures = {"clients": n, "text_bytes": size, **total.figures(), "stuck_threads": stuck}
    figures["rooms_created"] = total.acked
    rows = [
        ("clients", f"{n}, {size:,} B per message, a new room per message, not joining"),
        ("rooms created", f"{total.acked:,} (Acks) of {total.sent:,} Says"),
        ("errors", codes(total.errors)),
        ("connections", f"{total.connections:,} welcomed; ended: {total.ends()}"),
    ]
    return Outcome(figures, rows)


def attack_address_spread(ctx: Ctx) -> Outcome:
    """From each of 127.0.0.1 to 127.0.0.8 at once: connections (Hello, then held idle) up to
    the per-address limit and SPREAD_EXTRA more. A refusal before the limit (a limit on the
    connection rate, say) is waited out (0.2 s) and tried again until the attack's end."""
    limit = ctx.max_per_ip
    target = ctx.target
    sources: list[str | None] = (
        [None] if target.ipv6 else [f"127.0.0.{k}" for k in range(1, SPREAD_ADDRESSES + 1)]
    )
    held: list[list[socket.socket]] = [[] for _ in sources]
    per_source: list[dict[str, Any]] = [{} for _ in sources]

    def body(k: int) -> None:
        source = sources[k]
        admitted = tried = over_limit = 0
        refused: Counter[int] = Counter()
        failures: Counter[str] = Counter()
        reasons: dict[str, int] = {}
        while over_limit < SPREAD_EXTRA and not ctx.over():
            batch: list[tuple[socket.socket, FrameReader]] = []
            for _ in range(min(SPREAD_BATCH, limit + SPREAD_EXTRA - admitted - over_limit)):
                tried += 1
                try:
                    sock = open_socket(target, source)
                except OSError as exc:
                    failures[f"connect: {exc.strerror or exc}"] += 1
                    continue
                hello = encode(Hello(version=PROTOCOL_VERSION, nick=f"spread{k}n{tried}"))
                if send_all(sock, hello):
                    batch.append((sock, FrameReader()))
                else:
                    failures["Hello not sent"] += 1
                    close(sock)
            refusals = 0
            for sock, reader in batch:
                timeout = min(ANSWER_TIMEOUT, max(ctx.left(), 0.2))
                greeting = await_greeting(sock, reader, timeout)
                if isinstance(greeting, Welcome):
                    admitted += 1
                    held[k].append(sock)
                    continue
                if isinstance(greeting, Bye):
                    refused[greeting.code] += 1
                    refusals += 1
                    reasons[greeting.reason] = reasons.get(greeting.reason, 0) + 1
                    if admitted >= limit:
                        over_limit += 1
                else:
                    failures[why_not(greeting)] += 1
                close(sock)
            if refusals and admitted < limit:
                ctx.stop.wait(0.2)  # refused below the limit: wait, then try again
        per_source[k] = {
            "source": source or target.host,
            "tried": tried,
            "let_in": admitted,
            "refused": {code_name(c): m for c, m in sorted(refused.items())},
            "refusal_reasons": dict(sorted(reasons.items(), key=lambda r: -r[1])[:3]),
            "failures": dict(failures),
        }

    try:
        stuck = run_threads(ctx, "spread", len(sources), body, ctx.deadline + GRACE + STOP_SLACK)
        ctx.sleep_until(ctx.deadline)  # hold them for the rest of the attack
    finally:
        for socks in held:
            for sock in socks:
                close(sock)
    total = sum(int(entry.get("let_in", 0)) for entry in per_source)
    figures: dict[str, Any] = {
        "max_per_ip": limit,
        "addresses": len(per_source),
        "let_in_total": total,
        "times_the_per_address_limit": round(total / limit, 2),
        "per_source": per_source,
        "stuck_threads": stuck,
    }
    rows = [
        (
            "per-address limit",
            f"{limit:,}; each address tries to hold that many and {SPREAD_EXTRA} more",
        )
    ]
    for entry in per_source:
        if not entry:
            continue
        refused_text = ", ".join(f"{c} x{m}" for c, m in entry["refused"].items()) or "none"
        text = f"let in {entry['let_in']:,} of {entry['tried']:,}; refused: {refused_text}"
        if entry["refusal_reasons"]:
            text += " (" + "; ".join(f"{r!r}" for r in entry["refusal_reasons"]) + ")"
        if entry["failures"]:
            text += "; " + ", ".join(f"{w} x{m}" for w, m in entry["failures"].items())
        rows.append((entry["source"], text))
    if target.ipv6:
        rows.append(("note", "an IPv6 target: ::1 is the only loopback address to spread over"))
    rows.append(
        (
            "total let in",
            f"{total:,} from {len(per_source)} addresses = {total / limit:.1f}x the limit",
        )
    )
    return Outcome(figures, rows)


def attack_slow_readers(ctx: Ctx) -> Outcome:
    """N clients (SO_RCVBUF 4 KB) join lobby and never read, while a sender says 8 KB
    messages into it as fast as the rate limit allows; then see who was dropped."""
    n = ctx.settings.slow_readers
    senders = ctx.settings.slow_senders
    source = ctx.target.source("slow-readers")
    readers: list[tuple[socket.socket, FrameReader]] = []
    failures: Counter[str] = Counter()
    tallies = [SayTally() for _ in range(senders)]
    size = ctx.text_size
    outcome: Counter[str] = Counter()
    received = 0
    try:
        for i in range(n):
            if ctx.over():
                break
            sock, reader, greeting = connect_and_greet(
                ctx.target, source, f"slow{i}", rcvbuf=SLOW_RCVBUF
            )
            if sock is None:
                failures[why_not(greeting)] += 1
                continue
            readers.append((sock, reader))
            if not send_all(sock, encode(Join(room=ROOM))):
                failures["Join not sent"] += 1

        def body(i: int) -> None:
            say_loop(
                ctx.target,
                None if ctx.target.ipv6 else f"127.0.1.{i + 1}",  # not the readers' address
                f"sender{i}",
                lambda k: (ROOM, payload(k, "slow", size)),
                tallies[i],
                until=ctx.deadline,
                stop=ctx.stop,
                pace=ctx.rate * 0.95,  # within the rate: no refusals from clock jitter
                burst=max(1, ctx.burst - 5),
                window=64,
            )

        run_threads(ctx, "sender", senders, body, ctx.deadline + GRACE + STOP_SLACK)
        # Before reading anything: which connections has the server closed? (A reader sees
        # the close only after the megabytes the kernel still holds for it.)
        states = server_side_states(ctx.target.port)
        outcome, received = classify_readers(readers, states, cap=GRACE)
    finally:
        for sock, _ in readers:
            close(sock)
    tally = SayTally()
    for t in tallies:
        tally.add(t)
    dropped = sum(k for how, k in outcome.items() if not how.startswith("still connected"))
    figures = {
        "slow_readers": n,
        "connected": len(readers),
        "connect_failures": dict(failures),
        "senders": senders,
        "sender": tally.figures(),
        "text_bytes": size,
        "dropped": dropped,
        "outcome": dict(outcome),
        "bytes_read_afterwards": received,
    }
    rows = [
        (
            "slow readers",
            f"{len(readers)} of {n} joined {ROOM} (SO_RCVBUF {SLOW_RCVBUF} B) and read nothing",
        ),
        (
            "sender" if senders == 1 else f"{senders} senders",
            f"{tally.sent:,} Says of {size:,} B, {tally.acked:,} acked, "
            f"errors {codes(tally.errors)}",
        ),
        (
            "slow readers dropped",
            f"{dropped} of {len(readers)}: "
            + (", ".join(f"{how} x{k}" for how, k in outcome.most_common()) or "-"),
        ),
    ]
    if failures:
        rows.append(("connect failures", ", ".join(f"{w} x{k}" for w, k in failures.items())))
    return Outcome(figures, rows)


def _proc_address(field: str) -> tuple[str, int]:
    """An address of /proc/net/tcp ("0100007F:1F90": 32-bit words in host byte order)."""
    host, port = field.split(":")
    raw = bytes.fromhex(host)
    words = [raw[i : i + 4] for i in range(0, len(raw), 4)]
    if sys.byteorder == "little":
        words = [word[::-1] for word in words]
    packed = b"".join(words)
    family = socket.AF_INET if len(packed) == 4 else socket.AF_INET6
    return socket.inet_ntop(family, packed), int(port, 16)


_TCP_STATES = {
    "01": "ESTABLISHED",
    "04": "FIN_WAIT1",
    "05": "FIN_WAIT2",
    "06": "TIME_WAIT",
    "07": "CLOSE",
    "08": "CLOSE_WAIT",
    "09": "LAST_ACK",
    "0B": "CLOSING",
}


def server_side_states(port: int) -> dict[tuple[str, int], str]:
    """The TCP state of each of the server's connections, by the client's (ip, port)."""
    states: dict[tuple[str, int], str] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f, None)
                for line in f:
                    fields = line.split()
                    if len(fields) < 4 or fields[3] == "0A":
                        continue
                    if _proc_address(fields[1])[1] == port:
                        remote = _proc_address(fields[2])
                        states[remote] = _TCP_STATES.get(fields[3], fields[3])
        except (OSError, ValueError, IndexError):
            continue
    return states


def classify_readers(
    readers: list[tuple[socket.socket, FrameReader]],
    states: dict[tuple[str, int], str],
    *,
    cap: float,
    idle: float = 0.5,
) -> tuple[Counter[str], int]:
    """How each slow reader ended (its Bye, a close, or still connected), and the bytes read
    to find out. Every stream is read at once for up to `cap` seconds; a reader whose end
    was not reached in time is judged by the server side's TCP state taken in `states`."""
    outcome: Counter[str] = Counter()
    last: dict[int, float] = {}
    sel = selectors.DefaultSelector()
    total = 0
    server_closed: dict[int, bool] = {}
    try:
        for i, (sock, _) in enumerate(readers):
            try:
                name = sock.getsockname()
                state = states.get((str(name[0]), int(name[1])), "gone")
            except OSError:
                state = "gone"
            server_closed[i] = state != "ESTABLISHED"
            sock.setblocking(False)
            sel.register(sock, selectors.EVENT_READ, i)
            last[i] = time.monotonic()
        deadline = time.monotonic() + cap
        while last and time.monotonic() < deadline:
            for key, _ in sel.select(0.05):
                i = int(key.data)
                sock, reader = readers[i]
                try:
                    data = sock.recv(READ_SIZE)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                total += len(data)
                byes = [e for e in reader.feed(data) if isinstance(e, Bye)]
                if byes or not data:
                    if byes:
                        how = f"Bye {code_name(byes[0].code)}"
                    elif reader.mid_frame:
                        how = "closed mid-frame (no Bye)"
                    else:
                        how = "closed without Bye"
                    outcome[how] += 1
                    sel.unregister(sock)
                    del last[i]
                else:
                    last[i] = time.monotonic()
            now = time.monotonic()
            for i in [i for i, at in last.items() if now - at > idle and not server_closed[i]]:
                outcome["still connected"] += 1
                sel.unregister(readers[i][0])
                del last[i]
        for i in last:
            if server_closed[i]:
                outcome["closed by the server (end not read in time)"] += 1
            else:
                outcome["still connected (still receiving)"] += 1
    finally:
        sel.close()
    return outcome, total


ATTACK_FUNCTIONS: dict[str, Callable[[Ctx], Outcome]] = {
    "history": attack_history,
    "reconnect-flood": attack_reconnect_flood,
    "pong-flood": attack_pong_flood,
    "room-spam": attack_room_spam,
    "address-spread": attack_address_spread,
    "slow-readers": attack_slow_readers,
}


# ---------------------------------------------------------------------------------------------
# The well-behaved clients, in their own process


@dataclasses.dataclass(frozen=True)
class GoodSpec:
    host: str
    port: int
    source: str | None
    intervals: tuple[float, float]
    lifetime: float  # the process ends by itself after this long, whatever happens


class GoodClient:
    """Hello, join lobby (no replay), then one Say every `interval` seconds, timing each Ack,
    answering Pings, and noting every lobby message it receives."""

    def __init__(self, spec: GoodSpec, nick: str, interval: float, go: threading.Event) -> None:
        self.spec = spec
        self.wanted = nick
        self.nick = ""
        self.interval = interval
        self.go = go
        self.joined = threading.Event()
        self.stop_saying = threading.Event()
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.conn = Connection(Role.CLIENT)
        self.sock: socket.socket | None = None
        self.pending: dict[str, float] = {}  # msg_id -> sent at
        self.records: list[tuple[float, float, int]] = []  # sent at, latency (-1), code
        self.acked_seqs: list[int] = []
        self.received: dict[int, str] = {}  # seq -> sender, of live lobby messages
        self.notices: Counter[str] = Counter()
        self.ended = ""  # why the connection ended early
        self.ended_at = 0.0
        self.late = 0  # times the sending schedule slipped by over half a second
        self._n = 0

    def run(self) -> None:
        try:
            self._run()
        except (OSError, RemoteProtocolError) as exc:
            self._end(f"{type(exc).__name__}: {exc}")
        except Exception as exc:  # a measuring tool: report, never crash the worker
            self._end(f"client error: {type(exc).__name__}: {exc}")
        finally:
            close(self.sock)

    def _run(self) -> None:
        spec = self.spec
        target = Target(spec.host, spec.port)
        self.sock = open_socket(target, spec.source, timeout=5.0)
        self._send(Hello(version=PROTOCOL_VERSION, nick=self.wanted))
        self._wait(lambda: bool(self.nick), "no Welcome")
        self._send(Join(room=ROOM, history=0))
        self._wait(self.joined.is_set, "no Members after the Join")
        self._wait(self.go.is_set, "the other good client did not join", timeout=20.0)
        next_at = time.monotonic()
        while not self.stop.is_set() and not self.ended:
            now = time.monotonic()
            saying = not self.stop_saying.is_set()
            if saying and now >= next_at:
                self._say(now)
                next_at += self.interval
                if next_at < now - 0.5:
                    self.late += 1
                    next_at = now + self.interval
            wait = min(0.05, max(0.0, next_at - time.monotonic())) if saying else 0.05
            self._pump(wait)

    def _wait(self, done: Callable[[], bool], why: str, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            if self.ended or self.stop.is_set():
                raise TimeoutError(self.ended or "stopped")
            if time.monotonic() > deadline:
                raise TimeoutError(why)
            self._pump(0.05)

    def _send(self, event: Event) -> None:
        assert self.sock is not None
        self.sock.settimeout(2.0)
        self.sock.sendall(self.conn.send(event))

    def _say(self, now: float) -> None:
        self._n += 1
        msg_id = str(self._n)
        with self.lock:
            self.pending[msg_id] = now
        self._send(Say(msg_id=msg_id, room=ROOM, text=f"{self.wanted} says {self._n}"))

    def _pump(self, timeout: float) -> None:
        sock = self.sock
        assert sock is not None
        readable, _, _ = select.select([sock], [], [], timeout)
        if not readable:
            return
        try:
            data = sock.recv(READ_SIZE)
        except (BlockingIOError, TimeoutError):
            return
        except OSError:
            data = b""
        self.conn.receive_data(data)
        now = time.monotonic()
        while not self.ended:
            event = self.conn.next_event()
            if event is NEED_DATA:
                if not data:
                    self._end("the stream ended")
                return
            self._handle(event, now)

    def _handle(self, event: Event, now: float) -> None:
        with self.lock:
            if isinstance(event, Message):
                if event.room == ROOM and not event.history:
                    self.received[event.seq] = event.sender
            elif isinstance(event, Ack):
                sent_at = self.pending.pop(event.msg_id, None)
                if sent_at is not None:
                    self.records.append((sent_at, now - sent_at, 0))
                    self.acked_seqs.append(event.seq)
            elif isinstance(event, Error):
                sent_at = self.pending.pop(event.msg_id, None)
                if sent_at is not None:
                    self.records.append((sent_at, -1.0, event.code))
            elif isinstance(event, Notice):
                self.notices[f"{event.kind}: {event.reason}" if event.reason else event.kind] += 1
            elif isinstance(event, Welcome):
                self.nick = event.nick
            elif isinstance(event, Members) and event.room == ROOM:
                self.joined.set()
        if isinstance(event, Ping):
            self._send(Pong(token=event.token))
        elif isinstance(event, Bye):
            self._end(f"Bye {code_name(event.code)}: {event.reason}")
        elif isinstance(event, ConnectionClosed):
            self._end("closed by the server")

    def _end(self, why: str) -> None:
        if not self.ended:
            self.ended = why
            self.ended_at = time.monotonic()

    def settled(self, other: GoodClient) -> bool:
        """Every Say answered, and every message `other` had acked received."""
        with self.lock, other.lock:
            if self.pending and not self.ended:
                return False
            return self.ended != "" or all(s in self.received for s in other.acked_seqs)

    def result(self, other: GoodClient) -> dict[str, Any]:
        with self.lock, other.lock:
            records = list(self.records)
            records += [(sent_at, -1.0, -1) for sent_at in self.pending.values()]
            missed = [s for s in other.acked_seqs if s not in self.received]
            seen = set(self.received) | set(self.acked_seqs)
            gaps = [s for s in range(min(seen), max(seen)) if s not in seen] if seen else []
            return {
                "nick": self.nick or self.wanted,
                "interval": self.interval,
                "records": sorted(records),
                "missed": len(missed),
                "missed_seqs": missed[:20],
                "other_sent": len(other.acked_seqs),
                "received": len(self.received),
                "seq_gaps": len(gaps),
                "gap_seqs": gaps[:20],
                "seq_range": [min(seen), max(seen)] if seen else [],
                "ended": self.ended,
                "ended_at": self.ended_at,
                "late": self.late,
                "notices": dict(self.notices.most_common(8)),
            }


def good_worker(pipe: Pipe, spec: GoodSpec) -> None:
    """The good clients' process: report "ready" once both joined, talk until told to stop
    (or the parent is gone, or `spec.lifetime` passed), then send the figures."""
    go = threading.Event()
    a = GoodClient(spec, "goodA", spec.intervals[0], go)
    b = GoodClient(spec, "goodB", spec.intervals[1], go)
    clients = (a, b)
    threads = [threading.Thread(target=c.run, daemon=True) for c in clients]
    for thread in threads:
        thread.start()
    end_of_life = time.monotonic() + spec.lifetime
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not all(
            c.joined.is_set() or c.ended for c in clients
        ):
            time.sleep(0.02)
        if not all(c.joined.is_set() for c in clients):
            why = "; ".join(f"{c.wanted}: {c.ended or 'not joined in 15 s'}" for c in clients)
            pipe.send({"error": f"the good clients could not join: {why}"})
            return
        go.set()
        pipe.send({"ready": [c.nick for c in clients]})
        while time.monotonic() < end_of_life:
            if pipe.poll(0.2):
                pipe.recv()
                break
        for c in clients:
            c.stop_saying.set()
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline and not (a.settled(b) and b.settled(a)):
            time.sleep(0.05)
        for c in clients:
            c.stop.set()
        for thread in threads:
            thread.join(3.0)
        pipe.send({"clients": [a.result(b), b.result(a)]})
    except (EOFError, OSError):
        pass  # the parent is gone
    finally:
        for c in clients:
            c.stop.set()


class GoodClients:
    """The parent's handle on the good clients' process."""

    def __init__(self, target: Target, settings: Settings) -> None:
        spec = GoodSpec(
            target.host,
            target.port,
            target.source("good"),
            (settings.good_interval, settings.other_interval),
            lifetime=settings.seconds + settings.after + GRACE + STOP_SLACK + 60.0,
        )
        mp = multiprocessing.get_context("spawn")
        self.pipe, child = mp.Pipe()
        self.proc = mp.Process(target=good_worker, args=(child, spec), daemon=True)
        self.proc.start()
        child.close()

    def _receive(self, timeout: float) -> dict[str, Any] | None:
        try:
            if self.pipe.poll(timeout):
                message = self.pipe.recv()
                return message if isinstance(message, dict) else None
        except (EOFError, OSError):
            pass
        return None

    def wait_ready(self, timeout: float = 30.0) -> str:
        """ "" when both good clients are in the room, else why not."""
        message = self._receive(timeout)
        if message is None:
            return "the good clients' process did not answer"
        return "" if "ready" in message else str(message.get("error", message))

    def finish(self, timeout: float = 15.0) -> list[dict[str, Any]]:
        try:
            self.pipe.send({"stop": True})
        except (OSError, ValueError):
            return []
        message = self._receive(timeout)
        clients = None if message is None else message.get("clients")
        return list(clients) if isinstance(clients, list) else []

    def close(self) -> None:
        self.proc.join(3.0)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(3.0)
        self.pipe.close()


def good_figures(result: dict[str, Any], t0: float, t1: float) -> dict[str, Any]:
    """A good client's figures for the Says it sent during the attack [t0, t1]."""
    records = [(float(s), float(lat), int(code)) for s, lat, code in result["records"]]
    during = [(lat, code) for sent, lat, code in records if t0 <= sent <= t1]
    latencies = [lat for lat, code in during if code == 0]
    before = [lat for sent, lat, code in records if sent < t0 and code == 0]
    errors: Counter[int] = Counter(code for _, code in during if code > 0)
    ended_at = float(result.get("ended_at") or 0.0)
    return {
        "nick": result["nick"],
        "says_per_second": round(1 / float(result["interval"]), 1),
        "sent": len(during),
        "acked": len(latencies),
        "errors": {code_name(c): n for c, n in sorted(errors.items())},
        "unanswered": sum(1 for _, code in during if code == -1),
        "ack_ms_p50": _ms_value(percentile(latencies, 50)),
        "ack_ms_p99": _ms_value(percentile(latencies, 99)),
        "ack_ms_max": _ms_value(max(latencies, default=None)),
        "ack_ms_p50_before_attack": _ms_value(percentile(before, 50)),
        "missed": result["missed"],
        "other_sent": result["other_sent"],
        "seq_gaps": result["seq_gaps"],
        "missed_seqs": result["missed_seqs"],
        "gap_seqs": result["gap_seqs"],
        "seq_range": result["seq_range"],
        "disconnected": result["ended"] or None,
        "disconnected_after_s": round(ended_at - t0, 2) if result["ended"] else None,
        "schedule_slips": result["late"],
        "notices": result["notices"],
    }


def _ms_value(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 2)


# ---------------------------------------------------------------------------------------------
# A run: one server, the good clients, one or all attacks


def probe(target: Target) -> tuple[dict[str, int], str]:
    """The server's Welcome.limits and version. Raises RuntimeError when it cannot be reached."""
    sock, _, greeting = connect_and_greet(target, target.source("good"), "abuseprobe")
    if sock is None or not isinstance(greeting, Welcome):
        why = greeting if isinstance(greeting, str) else f"Bye {greeting}"
        raise RuntimeError(f"cannot reach the server at {target.address}: {why}")
    with contextlib.suppress(OSError):
        sock.sendall(encode(Bye(reason="abuse bench probe")))
    close(sock)
    return dict(greeting.limits), f"{greeting.server} {greeting.version}"


def run_round(names: tuple[str, ...], settings: Settings) -> dict[str, Any]:
    out: dict[str, Any] = {
        "attacks": list(names),
        "seconds": settings.seconds,
        "cpus": os.cpu_count(),
        "load_before": round(os.getloadavg()[0], 2),
    }
    stop = threading.Event()  # set to end every thread of this round early
    opener = existing_server if settings.target else started_server
    try:
        with opener(settings) as target:
            out["server"] = {
                "address": target.address,
                "pid": target.pid,
                "started_by_bench": target.proc is not None,
            }
            try:
                _run_on(target, names, settings, stop, out)
            except Exception as exc:
                out["error"] = f"{type(exc).__name__}: {exc}"
                if target.log_path is not None:  # what the server said about it
                    with contextlib.suppress(OSError):
                        lines = target.log_path.read_text(errors="replace").splitlines()
                        out["server_log_tail"] = lines[-8:]
            finally:
                stop.set()  # whatever happened, no attacker outlives its round
    except Exception as exc:  # a measuring tool: one failed round does not end the others
        out["error"] = f"{type(exc).__name__}: {exc}"
    return out


def _run_on(
    target: Target,
    names: tuple[str, ...],
    settings: Settings,
    stop: threading.Event,
    out: dict[str, Any],
) -> None:
    limits, version = probe(target)
    out["server"]["version"] = version
    out["welcome_limits"] = limits
    if target.banner:
        out["server"]["banner"] = target.banner
    banner_limit = target.banner.get("max_per_ip")
    max_per_ip = (
        int(banner_limit)
        if isinstance(banner_limit, int)
        else settings.max_per_ip or SERVER_DEFAULT_MAX_PER_IP
    )
    ctx = Ctx(target, settings, limits, max_per_ip, stop)
    if "history" in names:
        ctx.fill = fill_room(ctx, stop)
    good = GoodClients(target, settings)
    try:
        problem = good.wait_ready()
        if problem:
            out["good_clients_error"] = problem
        stop.wait(SETTLE)
        pid = target.pid
        baseline = rss_kib(pid)
        cpu0 = cpu_seconds(pid)
        log_offset = target.log_path.stat().st_size if target.log_path else 0
        sampler = Sampler(pid, target.port)
        sampler.start()
        t0 = time.monotonic()
        ctx.deadline = t0 + settings.seconds
        outcomes: dict[str, Outcome] = {}

        def attack(name: str) -> None:
            try:
                outcomes[name] = ATTACK_FUNCTIONS[name](ctx)
            except Exception as exc:
                why = f"{type(exc).__name__}: {exc}"
                outcomes[name] = Outcome({"error": why}, [("error", why)])

        threads = [
            threading.Thread(target=attack, args=(name,), name=name, daemon=True) for name in names
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(max(0.0, ctx.deadline + GRACE + STOP_SLACK + 10 - time.monotonic()))
            if thread.is_alive():
                stop.set()
                outcomes.setdefault(
                    thread.name, Outcome({"error": "did not stop"}, [("error", "did not stop")])
                )
        ctx.sleep_until(ctx.deadline)  # attackers done early: the window is still --seconds
        t1 = time.monotonic()
        cpu1 = cpu_seconds(pid)
        sampler.halt.set()
        sampler.join(1.0)
        peak = sampler.peak
        stop.wait(settings.after)
        after = rss_kib(pid)
        clients = good.finish() if not problem else []
    finally:
        good.close()
    elapsed = t1 - t0
    cpu = None if cpu0 is None or cpu1 is None else cpu1 - cpu0
    out["server_figures"] = {
        "rss_kib_baseline": baseline,
        "rss_kib_peak": max(peak, baseline or 0) if peak is not None else None,
        "rss_kib_after": after,
        "after_seconds": settings.after,
        "kernel_send_queue_peak_bytes": max(sampler.queued, default=None),
        "cpu_seconds": None if cpu is None else round(cpu, 3),
        "attack_seconds": round(elapsed, 3),
        "cpu_share": None if cpu is None else round(cpu / max(elapsed, 0.001), 3),
        "rss_samples": [(round(t - t0, 2), kib) for t, kib in sampler.samples],
        "exit_status": target.exited(),
    }
    out["load_after"] = round(os.getloadavg()[0], 2)
    out["server_log"] = log_figures(target.log_path, log_offset)
    out["good_clients"] = [good_figures(c, t0, t1) for c in clients]
    if names == ("history",) and "history" in outcomes:
        _estimate_history(outcomes["history"], out["server_log"])
    out["results"] = {name: outcomes[name].figures for name in names if name in outcomes}
    out["rows"] = {name: outcomes[name].rows for name in names if name in outcomes}


def _estimate_history(outcome: Outcome, log: dict[str, Any]) -> None:
    """The attacker sees only what the kernel buffers held when the server dropped it; the
    server's log says how much it had queued. At the bytes of one full answer the attacker
    did receive, that is roughly how many requests the server accepted."""
    figures = outcome.figures
    answered = int(figures.get("answered_in_full", 0))
    queued = int(log.get("slow_consumer_queued_total", 0))
    if not answered or not queued:
        return
    per_answer = figures["bytes_received"] / answered
    estimate = min(
        figures["history_requests_sent"], round(answered + queued / max(per_answer, 1.0))
    )
    figures["accepted_estimate"] = estimate
    outcome.rows.insert(
        4,
        (
            "accepted (estimate)",
            f"~{estimate:,} of {figures['history_requests_sent']:,}: the server queued "
            f"{queued / 1048576:,.1f} MB for the attackers before dropping them, "
            f"~{per_answer / 1024:,.0f} KB per answer",
        ),
    )


# ---------------------------------------------------------------------------------------------
# The report


def print_round(run: dict[str, Any]) -> None:
    names = run["attacks"]
    server = run.get("server", {})
    head = " + ".join(names)
    where = server.get("address", "?")
    if server.get("pid"):
        where += f", pid {server['pid']}"
    if server.get("started_by_bench"):
        where += ", fresh"
    load = f"load {run['load_before']:g}"
    if "load_after" in run:
        load += f" to {run['load_after']:g}"
    print(
        f"\n=== {head} — {run['seconds']:g} s — server {where} — {load} on {run['cpus']} CPUs ==="
    )
    if "error" in run:
        print(f"  round failed: {run['error']}")
        for line in run.get("server_log_tail", []):
            print(f"    server: {line[:300]}")
        return
    rows: list[tuple[str, str]] = []
    if "good_clients_error" in run:
        rows.append(("good clients", run["good_clients_error"]))
    for g in run.get("good_clients", []):
        errors = ", ".join(f"{c} x{n}" for c, n in g["errors"].items())
        text = (
            f"{g['says_per_second']:g}/s: acks {g['acked']}/{g['sent']}"
            f"{'; errors ' + errors if errors else ''}; ack ms p50 {_fmt(g['ack_ms_p50'])}, "
            f"p99 {_fmt(g['ack_ms_p99'])}, max {_fmt(g['ack_ms_max'])} "
            f"(before: p50 {_fmt(g['ack_ms_p50_before_attack'])}); missed "
            f"{g['missed']} of {g['other_sent']}; seq gaps {g['seq_gaps']}; "
        )
        if g["schedule_slips"]:
            text += f"sending fell behind x{g['schedule_slips']}; "
        text += (
            f"DISCONNECTED after {g['disconnected_after_s']} s ({g['disconnected']})"
            if g["disconnected"]
            else "stayed connected"
        )
        rows.append((f"good {g['nick']}", text))
    figures = run.get("server_figures", {})
    if figures.get("rss_kib_baseline") is None:
        rows.append(("server RSS, CPU", "n/a (no server pid: pass --server-pid)"))
    else:
        rows.append(
            (
                "server RSS",
                f"{mb(figures['rss_kib_baseline'])} baseline, {mb(figures['rss_kib_peak'])} "
                f"peak, {mb(figures['rss_kib_after'])} {figures['after_seconds']:g} s after",
            )
        )
        queued = figures.get("kernel_send_queue_peak_bytes")
        if queued is not None:
            rows.append(
                ("kernel send queues", f"{queued / 1048576:.1f} MB peak (server side, not in RSS)")
            )
        cpu = figures.get("cpu_seconds")
        if cpu is not None:
            rows.append(
                (
                    "server CPU",
                    f"{cpu:.2f} s in {figures['attack_seconds']:.2f} s "
                    f"({figures['cpu_share'] * 100:.0f}% of a core)",
                )
            )
    if figures.get("exit_status") is not None:
        rows.append(("SERVER EXITED", f"status {figures['exit_status']}"))
    log = run.get("server_log") or {}
    if log:
        events = {
            k: v
            for k, v in log["events"].items()
            if k not in {"hello", "connect", "disconnect", "bye"}
        }
        text = ", ".join(f"{k} x{v}" for k, v in events.items()) or "nothing of note"
        if log.get("largest_slow_consumer_queue"):
            text += f"; largest queue dropped {log['largest_slow_consumer_queue'] / 1048576:.1f} MB"
        rows.append(("server log", text))
    attack_rows: dict[str, list[tuple[str, str]]] = run.get("rows", {})
    if len(names) == 1:
        _print_rows(rows + attack_rows.get(names[0], []))
        return
    _print_rows(rows)
    for name in names:
        print(f"  -- {name}")
        _print_rows(attack_rows.get(name, []))


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}"


def _print_rows(rows: list[tuple[str, str]]) -> None:
    width = max((len(label) for label, _ in rows), default=0)
    for label, value in rows:
        print(f"  {label:<{width}}  {value}")


def summary_line(run: dict[str, Any]) -> str:
    """One line per round: the good client's ack p50/p99, missed, RSS, CPU."""
    good = (run.get("good_clients") or [{}])[0]
    figures = run.get("server_figures", {})
    cpu = figures.get("cpu_seconds")
    names = run["attacks"]
    label = names[0] if len(names) == 1 else "all together"
    if "error" in run:
        return f"{label:<16} failed: {run['error']}"
    return (
        f"{label:<16} ack p50/p99 {_fmt(good.get('ack_ms_p50'))}/"
        f"{_fmt(good.get('ack_ms_p99'))} ms, missed {good.get('missed', 'n/a')}, "
        f"RSS {mb(figures.get('rss_kib_baseline'))} / {mb(figures.get('rss_kib_peak'))} / "
        f"{mb(figures.get('rss_kib_after'))}, CPU {'n/a' if cpu is None else f'{cpu:.2f} s'}"
    )


def raise_nofile() -> None:
    """Take every descriptor allowed: address-spread holds thousands of sockets."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def main(argv: list[str] | None = None) -> int:
    settings = parse_args(argv)
    raise_nofile()
    runs: list[dict[str, Any]] = []
    rounds = [settings.attacks] if settings.all_together else [(a,) for a in settings.attacks]
    status = 0
    try:
        for names in rounds:
            run = run_round(names, settings)
            runs.append(run)
            print_round(run)
            sys.stdout.flush()
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        status = 130
    if runs:
        print("\nsummary (good client A; server RSS baseline / peak / after)")
        for run in runs:
            print("  " + summary_line(run))
    if all("error" in run for run in runs) and status == 0:
        status = 1  # not one round could be measured: the bench itself failed
    if settings.json_path:
        report: dict[str, Any] = {"settings": dataclasses.asdict(settings), "runs": runs}
        for run in report["runs"]:
            run.pop("rows", None)
        text = json.dumps(report, indent=2, default=str)
        if settings.json_path == "-":
            print(text)
        else:
            Path(settings.json_path).write_text(text + "\n")
    return status


if __name__ == "__main__":
    sys.exit(main())
