"""TLS against plaintext: chatctl and NATS (the anchor) in the same run, on the same machine.

Starts four servers and keeps them up for the whole run: `chatctl serve` plaintext and over
TLS, `nats-server` plaintext and with `--tls` (NATS is skipped if not installed). All of them
use one throw-away self-signed certificate made by chatctl.server.tls, which the clients trust
as their CA file: nothing here turns certificate checks off. Then, each part optional:

- fan-out 1 -> S (`--rounds`, `--subscribers`, `--messages`): `chatctl bench`'s own machinery
  (plan, worker processes, exactly-once verification) against each of the four targets, the
  targets alternating within every round, medians of the rounds. Deliveries per second, and
  the server's CPU time (utime + stime from /proc/PID/stat) per delivered message, counted
  from the moment the load starts (the first progress report, so connection set-up and TLS
  handshakes are left out) to the end of the run. The bench's workers decrypt too, on the same
  2 cores: the delivery rate is end to end, client cost included; the CPU figure is the
  server's alone.
- idle memory (`--idle N`): the chatctl server's RSS (VmRSS) before and after N connections
  are welcomed, per connection, plaintext and TLS.
- `chatctl send` (`--sends N`): the wall time of N real `python -m chatctl send` processes
  to `tls://127.0.0.1:PORT --tls-ca CERT` and to the plaintext server, alternating; median.
- connect (`--connect N`): N TLS clients connect at once and wait for Welcome, driven by
  `--processes` processes of non-blocking sockets (an SSLObject over memory BIOs each, as the
  bench's workers do); the time from the common start until the last Welcome. With
  `--account NAME --password PW` each client logs in (Hello with `account` and `password`,
  built by hand here until chatctl.protocol's Hello has those fields; client i uses NAME and
  PW as given, so a server must accept one account many times).

    python -m benchmarks.tls --rounds 3 --subscribers 100 --messages 20000 --idle 1000 \\
        --sends 20 --connect 1000
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import re
import resource
import selectors
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection as Pipe
from pathlib import Path

from chatctl.bench.adapters import Kind
from chatctl.bench.params import Params, Scenario
from chatctl.bench.plan import Target, make_plan
from chatctl.bench.runner import run_plan
from chatctl.bench.tls import TlsPipe, make_context, recv_plain
from chatctl.protocol import Hello, encode
from chatctl.server.tls import make_self_signed

NATS_SERVER = "/usr/sbin/nats-server"
WELCOME = 0x81
HELLO = 0x01
HEADER = struct.Struct("!2sBBI")
TICKS = os.sysconf("SC_CLK_TCK")
CHATCTL_ARGS = (
    "--data", ":memory:", "--log-level", "warning", "--log-format", "json",
    "--join-history", "0", "--rate", "0", "--max-output", str(16 * 1024 * 1024),
    "--max-connections", "1000000", "--max-per-ip", "1000000", "--connect-rate", "0",
    "--total-output", str(1 << 40),
)  # fmt: skip


@dataclass
class Server:
    name: str
    proc: subprocess.Popen[bytes]
    target: Target


def cpu_seconds(pid: int) -> float:
    """utime + stime of `pid`, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def rss_kib(pid: int) -> int:
    found = re.search(r"VmRSS:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text())
    assert found is not None
    return int(found.group(1))


def settle(pid: int) -> int:
    last = rss_kib(pid)
    for _ in range(30):
        time.sleep(0.5)  # until the RSS stops moving, at most 15 s
        now = rss_kib(pid)
        if now == last:
            break
        last = now
    return last


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_listening(proc: subprocess.Popen[bytes], port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"a server exited at start-up: {proc.args!r}")
        with contextlib.suppress(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        time.sleep(0.05)  # polling for a condition, with a deadline
    raise SystemExit(f"nothing listening on {port} after {timeout} s")


@contextlib.contextmanager
def servers(
    cert: Path, key: Path, nats: bool, data: Path | None = None
) -> Iterator[dict[str, Server]]:
    """The servers; `data`: the TLS chatctl's data directory (its accounts), not :memory:."""
    tls_args = ["--tls-cert", str(cert), "--tls-key", str(key)]
    if data is not None:
        tls_args += ["--data", str(data)]  # the later --data wins
    nats_tls = ["--tls", "--tlscert", str(cert), "--tlskey", str(key)]
    specs: list[tuple[str, list[str], Kind, bool]] = [
        ("chatctl", [sys.executable, "-m", "chatctl", "serve", *CHATCTL_ARGS], Kind.chatctl, False),
        ("chatctl TLS", [sys.executable, "-m", "chatctl", "serve", *CHATCTL_ARGS, *tls_args],
         Kind.chatctl, True),
    ]  # fmt: skip
    if nats:
        nats_args = [NATS_SERVER, "-a", "127.0.0.1"]
        specs += [
            ("NATS", nats_args, Kind.nats, False),
            ("NATS TLS", [*nats_args, *nats_tls], Kind.nats, True),
        ]
    started: dict[str, Server] = {}
    try:
        for name, base, kind, tls in specs:
            port = free_port()
            argv = [*base, "--port" if kind is Kind.chatctl else "-p", str(port)]
            proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            ca = str(cert) if tls else None
            target = Target(kind=kind, host="127.0.0.1", port=port, tls=tls, tls_ca=ca)
            started[name] = Server(name, proc, target)
            wait_listening(proc, port)
        yield started
    finally:
        for s in started.values():
            s.proc.terminate()
            try:
                s.proc.wait(10)
            except subprocess.TimeoutExpired:
                s.proc.kill()
                s.proc.wait(10)


# -- fan-out -------------------------------------------------------------------------------------


@dataclass
class FanoutRun:
    rate: float  # deliveries a second, end to end
    cpu_us: float  # server CPU per delivered message
    ok: bool
    detail: str  # what went wrong, if anything


def fanout(server: Server, subs: int, msgs: int) -> FanoutRun:
    params = Params(scenario=Scenario.fanout, publishers=1, subscribers=subs, messages=msgs)
    plan = make_plan(params, server.target)
    pid = server.proc.pid
    at_start: list[float] = []

    def progress(_elapsed: float, _sent: int, _delivered: int) -> None:
        if not at_start:
            at_start.append(cpu_seconds(pid))  # the load starts: set-up is done

    result = run_plan(plan, server_pid=pid, progress=progress)
    cpu = cpu_seconds(pid) - at_start[0]
    delivered = result.delivery.messages
    v = result.verification
    detail = (
        f"expected {v.expected}, lost {v.lost}, duplicated {v.duplicated}, reordered "
        f"{v.reordered}; {result.disconnects} disconnects; server said {result.server_said!r}"
    )
    return FanoutRun(
        rate=result.delivery.rate,
        cpu_us=cpu * 1e6 / max(delivered, 1),
        ok=v.ok,
        detail="" if v.ok else detail,
    )


# -- idle memory ---------------------------------------------------------------------------------


def frame(kind: int, body: dict[str, object]) -> bytes:
    data = json.dumps(body, separators=(",", ":")).encode()
    return HEADER.pack(b"CC", kind, 0, len(data)) + data


def hello(nick: str, account: str, password: str) -> bytes:
    """A Hello; with the login fields the coming protocol adds (only when not empty)."""
    if not account and not password:
        return encode(Hello(version=1, nick=nick))
    body: dict[str, object] = {"version": 1, "nick": nick}
    if account:
        body["account"] = account
    if password:
        body["password"] = password
    return frame(HELLO, body)


def read_welcome(sock: socket.socket) -> None:
    buf = b""
    while len(buf) < HEADER.size:
        data = sock.recv(65536)
        if not data:
            raise SystemExit("the server closed a connection before Welcome")
        buf += data
    if HEADER.unpack_from(buf)[1] != WELCOME:
        raise SystemExit(f"expected Welcome, got frame type {buf[2]:#x}")


def idle(server: Server, n: int) -> float:
    """Server RSS per welcomed idle connection, in KiB."""
    t = server.target
    context = make_context(t.tls_ca) if t.tls else None
    pid = server.proc.pid
    before = settle(pid)
    held = []
    for i in range(n):
        sock = socket.create_connection((t.host, t.port))
        if context is not None:
            sock = context.wrap_socket(sock, server_hostname=t.host)
        sock.sendall(hello(f"idle{i}", "", ""))
        read_welcome(sock)
        held.append(sock)
    after = settle(pid)
    for sock in held:
        sock.close()
    return (after - before) / n


# -- chatctl send --------------------------------------------------------------------------------


def send_times(plain: Server, tls: Server, n: int) -> tuple[list[float], list[float]]:
    """Wall seconds of `python -m chatctl send` to each, alternating."""
    out: tuple[list[float], list[float]] = ([], [])
    for i in range(n):
        for j, server in enumerate((plain, tls)):
            t = server.target
            argv = [sys.executable, "-m", "chatctl", "send"]
            argv += [f"tls://{t.address}", "--tls-ca", str(t.tls_ca)] if t.tls else [t.address]
            start = time.perf_counter()
            proc = subprocess.run(
                [*argv, f"tls bench {i}"], capture_output=True, timeout=30, check=False
            )
            out[j].append(time.perf_counter() - start)
            if proc.returncode:
                raise SystemExit(f"chatctl send failed: {proc.stderr.decode(errors='replace')}")
    return out


# -- connect -------------------------------------------------------------------------------------


def connect_worker(
    host: str, port: int, ca: str, first: int, n: int, login: tuple[str, str, int], pipe: Pipe
) -> None:
    """N non-blocking TLS clients: handshake, Hello, Welcome. Reports (seconds from the start
    to each Welcome, failures, first error)."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    context = make_context(ca)
    sel = selectors.DefaultSelector()
    scratch = memoryview(bytearray(65536))
    pipe.send("ready")
    start = pipe.recv()  # a time.time() shared by every process
    while time.time() < start:
        time.sleep(0.001)
    times: list[float] = []
    failed, first_error = 0, ""
    state: dict[socket.socket, tuple[TlsPipe, int]] = {}
    held: list[socket.socket] = []  # welcomed: kept open until every process is done
    for i in range(first, first + n):
        sock = socket.socket()
        if login[2] > 1:
            # Many accounts: many users, from many addresses (a server bounds the logins
            # one address may have waiting).
            sock.bind((f"127.0.{1 + i // 250}.{1 + i % 250}", 0))
        sock.setblocking(False)
        sock.connect_ex((host, port))
        state[sock] = (TlsPipe(context, host), i)
        sel.register(sock, selectors.EVENT_WRITE)
    deadline = time.monotonic() + 30
    while state and time.monotonic() < deadline:
        for key, mask in sel.select(0.5):
            sock = state_key(key.fileobj)
            tls, i = state[sock]
            try:
                if mask & selectors.EVENT_WRITE:
                    sock.sendall(tls.handshake())
                    sel.modify(sock, selectors.EVENT_READ)
                    continue
                if not tls.ready:
                    data = sock.recv(65536)
                    if not data:
                        raise ConnectionError("closed in the TLS handshake")
                    out, ready = tls.step(data)
                    if out:
                        sock.sendall(out)
                    if ready:
                        sock.sendall(tls.encrypt(hello(f"c{i}", *login_of(login, i))))
                    continue
                got = recv_plain(sock, tls, scratch)
                if got == 0:
                    raise ConnectionError("closed before Welcome")
                if got < HEADER.size:
                    continue  # a Welcome header split by TLS records: never seen, but wait
                if scratch[2] != WELCOME:
                    raise ConnectionError(f"frame type {scratch[2]:#x} instead of Welcome")
                times.append(time.time() - start)
                held.append(sock)
            except BlockingIOError:
                continue
            except OSError as exc:
                failed += 1
                first_error = first_error or f"{type(exc).__name__}: {exc}"
            sel.unregister(sock)
            del state[sock]
    failed += len(state)
    if state:
        first_error = first_error or "no Welcome within 30 s"
    pipe.send((times, failed, first_error))
    pipe.recv()  # hold every connection until all are in
    for sock in [*held, *state]:
        sock.close()


def login_of(login: tuple[str, str, int], i: int) -> tuple[str, str]:
    """Client i's (account, password): one account for all, or account{i % n} of n."""
    account, password, n = login
    if n <= 1 or not account:
        return account, password
    return f"{account}{i % n}", f"{password}{i % n}"


def make_accounts(data: Path, account: str, password: str, n: int, procs: int) -> None:
    """`n` accounts in `data` (one named `account`, or account0.. with password0..), hashed
    with the real cost in `procs` processes, as `chatctl accounts add` would store them."""
    from chatctl.passwords import hash_password
    from chatctl.store.registry_sqlite import SqliteRegistry

    logins = [login_of((account, password, n), i) for i in range(max(n, 1))]
    with multiprocessing.get_context("spawn").Pool(procs) as pool:
        hashes = pool.map(hash_password, [pw for _, pw in logins])
    registry = SqliteRegistry(data)
    try:
        for (name, _), hashed in zip(logins, hashes, strict=True):
            registry.add_account(name, hashed, int(time.time() * 1000))
    finally:
        registry.close()


def state_key(fileobj: object) -> socket.socket:
    assert isinstance(fileobj, socket.socket)
    return fileobj


def connect_all(
    server: Server, n: int, procs: int, login: tuple[str, str, int]
) -> dict[str, float]:
    t = server.target
    pid = server.proc.pid
    ctx = multiprocessing.get_context("spawn")
    pipes, workers = [], []
    share = -(-n // procs)
    for k in range(procs):
        count = min(share, n - k * share)
        parent, child = ctx.Pipe()
        args = (t.host, t.port, str(t.tls_ca), k * share, count, login, child)
        proc = ctx.Process(target=connect_worker, args=args, daemon=True)
        proc.start()
        pipes.append(parent)
        workers.append(proc)
    try:
        for p in pipes:
            if not p.poll(60):
                raise SystemExit("a connect process did not start")
            p.recv()
        start = time.time() + 0.2
        for p in pipes:
            p.send(start)
        cpu = cpu_seconds(pid)
        times: list[float] = []
        failed, errors = 0, []
        for p in pipes:
            if not p.poll(60):
                raise SystemExit("a connect process did not finish")
            got, bad, error = p.recv()
            times += got
            failed += bad
            errors.append(error)
        cpu = cpu_seconds(pid) - cpu
        for p in pipes:
            p.send("done")
    finally:
        for proc in workers:
            proc.join(10)
            if proc.is_alive():
                proc.kill()
    times.sort()
    if failed:
        print(f"  connect: {failed} failed: {next(e for e in errors if e)}")
    return {
        "welcomed": len(times),
        "failed": failed,
        "all_s": times[-1] if times else float("nan"),
        "p50_s": times[len(times) // 2] if times else float("nan"),
        "server_cpu_ms": cpu * 1000 / max(len(times), 1),  # per welcomed client
    }


# -- main ----------------------------------------------------------------------------------------


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="fan-out rounds (0: none)")
    parser.add_argument("--subscribers", "-S", type=int, default=100)
    parser.add_argument("--messages", "-m", type=int, default=20000)
    parser.add_argument("--idle", type=int, default=1000, help="idle connections (0: none)")
    parser.add_argument("--sends", type=int, default=20, help="chatctl send runs (0: none)")
    parser.add_argument("--connect", type=int, default=1000, help="TLS clients (0: none)")
    parser.add_argument("--processes", type=int, default=2, help="for --connect")
    parser.add_argument("--account", default="", help="for --connect: log in as")
    parser.add_argument("--password", default="", help="for --connect")
    parser.add_argument(
        "--accounts",
        type=int,
        default=1,
        help="for --connect with --account: log in to this many accounts (NAME0.., PW0..)",
    )
    parser.add_argument("--no-nats", action="store_true", help="chatctl only")
    args = parser.parse_args()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    nats = not args.no_nats and shutil.which(NATS_SERVER) is not None
    scratch = Path(tempfile.mkdtemp(prefix="chatctl-bench-tls-"))
    try:
        cert_pem, key_pem = make_self_signed(["127.0.0.1"])
        cert, key = scratch / "cert.pem", scratch / "key.pem"
        cert.write_bytes(cert_pem)
        key.write_bytes(key_pem)
        load = os.getloadavg()[0]
        print(f"load average {load:.2f}; {os.cpu_count()} cores; nats: {nats}")
        if args.idle:
            # servers of their own: memory freed by a fan-out would be reused, and hide growth
            with servers(cert, key, False) as running:
                for s in running.values():
                    print(f"idle {args.idle}: {s.name:12} {idle(s, args.idle):6.2f} KiB/conn")
        data = None
        if args.connect and args.account:
            data = scratch / "data"
            started = time.monotonic()
            make_accounts(data, args.account, args.password, args.accounts, args.processes)
            print(f"made {args.accounts} accounts in {time.monotonic() - started:.1f} s")
        with servers(cert, key, nats, data) as running:
            if args.rounds:
                run_fanout(running, args.rounds, args.subscribers, args.messages)
            plain, tls = running["chatctl"], running["chatctl TLS"]
            if args.sends:
                p_times, t_times = send_times(plain, tls, args.sends)
                for name, times in (("plain", p_times), ("tls", t_times)):
                    print(
                        f"send {name:5} median {median(times):.3f} s "
                        f"[{min(times):.3f} .. {max(times):.3f}] of {len(times)}"
                    )
            if args.connect:
                login = (args.account, args.password, args.accounts)
                got = connect_all(tls, args.connect, args.processes, login)
                print(
                    f"connect {args.connect} TLS ({args.processes} processes"
                    f"{f', login to {args.accounts} accounts' if args.account else ''}): "
                    f"{got['welcomed']:.0f} welcomed, "
                    f"{got['failed']:.0f} failed; all in {got['all_s']:.2f} s, "
                    f"half in {got['p50_s']:.2f} s; server CPU {got['server_cpu_ms']:.2f} ms each"
                )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def run_fanout(running: dict[str, Server], rounds: int, subs: int, msgs: int) -> None:
    print(f"fan-out 1 -> {subs}, {msgs} x 100 B, {rounds} rounds, targets alternating")
    runs: dict[str, list[FanoutRun]] = {name: [] for name in running}
    names = list(running)
    for r in range(rounds):
        # a different order every round, so no target always runs first or last
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            run = fanout(running[name], subs, msgs)
            runs[name].append(run)
            lost = "" if run.ok else f"  LOSS: {run.detail}"
            print(
                f"  round {r + 1} {name:12} {run.rate:12,.0f} deliveries/s "
                f"{run.cpu_us:6.3f} µs CPU/delivery{lost}"
            )
    print("medians:")
    base = median([x.rate for x in runs["chatctl"]])
    for name, got in runs.items():
        rate = median([x.rate for x in got])
        cpu = median([x.cpu_us for x in got])
        print(
            f"  {name:12} {rate:12,.0f} deliveries/s ({rate / base:.2f} x chatctl) "
            f"{cpu:6.3f} µs CPU/delivery  [{min(x.rate for x in got):,.0f} .. "
            f"{max(x.rate for x in got):,.0f}]{'' if all(x.ok for x in got) else '  LOSS'}"
        )


if __name__ == "__main__":
    main()
