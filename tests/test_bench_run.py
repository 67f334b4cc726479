"""`chatctl bench` end to end: real servers, real sockets, the real command line.

A run against a local chatctl server verifies itself; a proxy that drops, duplicates or
reorders one message frame on purpose must be caught; the Redis and NATS adapters run against
real redis-server and nats-server processes when those are installed (CI installs both).
"""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from chatctl import protocol as p
from chatctl.errors import ExitCode
from chatctl.protocol import HistoryEnd, Notice, RoomList
from chatctl.server.tls import make_self_signed
from tests.clients import joined, wait_for
from tests.servers import dies_with_parent, free_port, run_chatctl, running_server, serve_process

BENCH_TIMEOUT = 120


def bench(*args: str) -> tuple[int, dict[str, Any], str]:
    """Run `chatctl bench ... --json`; (exit status, the JSON, stderr)."""
    proc = run_chatctl("bench", *args, "--json", timeout=BENCH_TIMEOUT)
    assert "Traceback" not in proc.stderr, proc.stderr
    data = json.loads(proc.stdout) if proc.stdout.strip() else {}
    return proc.returncode, data, proc.stderr


def wait_listening(port: int, proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the server exited at start-up"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.02)  # poll for the condition, with a deadline
    raise AssertionError(f"nothing listening on port {port} after {timeout} s")


def external_server(binary: str, *args: str) -> Iterator[int]:
    if shutil.which(binary) is None:
        pytest.skip(f"{binary} is not installed")
    port = free_port()
    proc = subprocess.Popen(
        [binary, *(a.replace("PORT", str(port)) for a in args)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=dies_with_parent(),  # noqa: PLW1509  (no lock taken; see tests/servers.py)
    )
    try:
        wait_listening(port, proc)
        yield port
    finally:
        proc.kill()
        proc.wait(timeout=10)


@pytest.fixture(scope="module")
def redis_port() -> Iterator[int]:
    yield from external_server(
        "redis-server", "--port", "PORT", "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"
    )


@pytest.fixture(scope="module")
def nats_port() -> Iterator[int]:
    yield from external_server("nats-server", "-a", "127.0.0.1", "-p", "PORT")


def assert_sane(data: dict[str, Any], *, deliveries: int, published: int, clients: int) -> None:
    v = data["verification"]
    assert v == {
        "expected": deliveries,
        "delivered": deliveries,
        "unique": deliveries,
        "lost": 0,
        "duplicated": 0,
        "reordered": 0,
        "ok": True,
    }
    assert data["publish"]["messages"] == published
    assert data["delivery"]["messages"] == deliveries
    assert data["publish"]["rate"] > 0 and data["delivery"]["rate"] > 0
    spread = data["delivery"]["per_client"]
    assert 0 < spread["min"] <= spread["avg"] <= spread["max"]
    lat = data["latency_ns"]
    assert lat["count"] == deliveries
    assert 0 < lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["p99_9"] <= lat["max"]
    assert lat["max"] < 60 * 10**9  # a timestamp read wrong would be far off
    assert data["connect"]["held"] == clients and data["connect"]["failed"] == 0
    assert data["disconnects"] == 0 and data["refused"] == 0


def test_fanout_against_its_own_local_server_verifies_itself() -> None:
    code, data, _ = bench("fanout", "--pub", "2", "--sub", "5", "--msgs", "300", "--workers", "2")
    assert code == 0
    assert data["kind"] == "chatctl" and data["launched"] is True
    assert_sane(data, deliveries=2 * 300 * 5, published=600, clients=7)
    assert data["server"]["pid"] > 0 and data["server"]["rss_after"] > 0


def test_rooms_against_a_running_chatctl_server() -> None:
    with running_server(rate=0.0, join_history=0) as (host, port):
        code, data, _ = bench(
            "rooms", "--target", f"{host}:{port}", "--clients", "9", "--rooms", "3",
            "--msgs", "50", "--workers", "1",
        )  # fmt: skip
    assert code == 0
    # 3 rooms of 3: each message reaches the 2 others in its room (no echo to the sender)
    assert_sane(data, deliveries=9 * 50 * 2, published=9 * 50, clients=9)


def test_a_run_on_a_live_server_parts_its_rooms_names_them_and_says_what_remains() -> None:
    with running_server(rate=0.0, join_history=0) as addr, joined(addr, "op", "lobby") as op:
        code, _, err = bench(
            "fanout", "--target", f"{addr[0]}:{addr[1]}", "--sub", "2", "--msgs", "20",
            "--workers", "1",
        )  # fmt: skip
        assert code == 0, err
        op.list_rooms()  # the server's answer comes once the run is over: no sleep needed
        rooms = wait_for(op, RoomList).rooms
        note = [line for line in err.splitlines() if line.startswith("note:")]
        assert len(note) == 1 and "#bench-" in note[0] and "--room NAME" in note[0]
        room = note[0].split("#", 1)[1].split()[0]
        assert room.startswith("bench-") and room.endswith("-fan")
        # Every bench client parted (and said Bye): the room is left with its history only.
        assert rooms == {"lobby": 1, room: 0}
        # Watching the reused room: the bench clients leave it, they do not drop.
        with joined(addr, "watcher", "kept") as watcher:
            for _ in range(2):
                code, _, err = bench(
                    "room", "--target", f"{addr[0]}:{addr[1]}", "--clients", "2",
                    "--msgs", "10", "--workers", "1", "--room", "Kept",
                )  # fmt: skip
                assert code == 0, err
                assert "#kept " in err
            gone = [
                wait_for(watcher, Notice, lambda n: n.kind in ("left", "dropped")) for _ in range(4)
            ]
            assert {n.kind for n in gone} == {"left"}
            watcher.history("kept", limit=100)
            wait_for(watcher, HistoryEnd, lambda e: e.room == "kept" and e.head == 40)


def test_bench_runs_on_a_launched_server_leave_no_note() -> None:
    code, _, err = bench("fanout", "--sub", "1", "--msgs", "10", "--workers", "1")
    assert code == 0, err
    assert "note:" not in err


def test_fanout_over_tls_against_a_self_signed_server(tmp_path: Path) -> None:
    # The server's own certificate file is the CA the bench trusts: no mode skips the check.
    args = ("--tls-self-signed", "--data", str(tmp_path), "--rate", "0", "--join-history", "0")
    with serve_process(*args) as server:
        target = f"tls://127.0.0.1:{server.port}"
        cert = str(tmp_path / "tls-cert.pem")
        code, data, _ = bench(
            "fanout", "--target", target, "--tls-ca", cert, "--pub", "2", "--sub", "4",
            "--msgs", "500", "--workers", "2",
        )  # fmt: skip
        assert code == 0, data
        assert data["target"] == target and data["kind"] == "chatctl"
        assert_sane(data, deliveries=2 * 500 * 4, published=1000, clients=6)
        # without the certificate, the system's CAs do not trust it: said so, before any load
        code, _, err = bench("fanout", "--target", target, "--sub", "1", "--msgs", "1")
        assert code == ExitCode.CONNECT and "cannot trust" in err and "--tls-ca" in err
        # plaintext to a TLS port, and TLS to a plaintext one: clear failures
        code, _, err = bench("fanout", "--target", f"127.0.0.1:{server.port}", "--sub", "1")
        assert code == ExitCode.CONNECT and "speaks TLS" in err
    with running_server(rate=0.0, join_history=0) as (host, port):
        code, _, err = bench("fanout", "--target", f"tls://{host}:{port}", "--tls-ca", cert)
        assert code == ExitCode.CONNECT and "does not speak TLS" in err
    code, _, err = bench("fanout", "--target", target, "--tls-ca", str(tmp_path / "none.pem"))
    assert code != 0 and "CA file" in err


def test_nats_fanout_over_tls(tmp_path: Path) -> None:
    # nats-server says INFO in clear, then the client starts TLS (the adapter's tls_after)
    cert_pem, key_pem = make_self_signed(["127.0.0.1"])
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_bytes(cert_pem)
    key.write_bytes(key_pem)
    for port in external_server(
        "nats-server", "-a", "127.0.0.1", "-p", "PORT", "--tls", "--tlscert", str(cert),
        "--tlskey", str(key),
    ):  # fmt: skip
        code, data, _ = bench(
            "fanout", "--target", f"nats+tls://127.0.0.1:{port}", "--tls-ca", str(cert),
            "--sub", "3", "--msgs", "1000",
        )  # fmt: skip
        assert code == 0, data
        assert_sane(data, deliveries=3 * 1000, published=1000, clients=4)


def test_redis_fanout_and_room(redis_port: int) -> None:
    target = f"redis://127.0.0.1:{redis_port}"
    code, data, _ = bench("fanout", "--target", target, "--sub", "4", "--msgs", "2000")
    assert code == 0
    assert_sane(data, deliveries=4 * 2000, published=2000, clients=5)
    code, data, _ = bench("room", "--target", target, "--clients", "4", "--msgs", "100")
    assert code == 0
    # a Redis subscriber hears its own client's publishes too: 4 x 4 per round
    assert_sane(data, deliveries=4 * 100 * 4, published=400, clients=8)


def test_nats_fanout_at_a_fixed_rate(nats_port: int) -> None:
    target = f"nats://127.0.0.1:{nats_port}"
    code, data, _ = bench(
        "fanout", "--target", target, "--sub", "3", "--msgs", "200", "--rate", "2000"
    )
    assert code == 0
    assert_sane(data, deliveries=3 * 200, published=200, clients=4)


def test_connect_scenario_holds_every_connection(redis_port: int) -> None:
    code, data, _ = bench("connect", "--target", f"redis://127.0.0.1:{redis_port}", "-N", "300")
    assert code == 0
    c = data["connect"]
    assert (c["connections"], c["held"], c["failed"]) == (300, 300, 0)
    assert c["rate"] > 0 and 0 < c["time_ns"]["p50"] <= c["time_ns"]["max"]
    # the server process was found; its growth may be 0 if it reuses memory freed earlier
    assert data["server"]["pid"] > 0 and data["server"]["rss_after"] > 0


def test_usage_errors_and_unreachable_target() -> None:
    code, _, err = bench("fanout", "--target", "nowhere")
    assert code == ExitCode.USAGE and "HOST:PORT" in err
    code, _, err = bench("sideways")
    assert code == ExitCode.USAGE and "scenario" in err
    code, _, err = bench("fanout", "--sweep", "colour=1,2")
    assert code == ExitCode.USAGE
    code, _, err = bench("fanout", "--target", f"127.0.0.1:{free_port()}", "--sub", "1")
    assert code == ExitCode.CONNECT and "connect" in err


# -- a proxy that breaks the stream on purpose ---------------------------------------------------


def _hang_up(*socks: socket.socket) -> None:
    """End both directions: shutdown (unlike close) wakes a thread blocked in recv."""
    for s in socks:
        with contextlib.suppress(OSError):
            s.shutdown(socket.SHUT_RDWR)


class FaultyProxy:
    """Forwards TCP to a chatctl server, frame-aware towards the client: on the first
    connection accepted, Message frame number `at` is dropped, sent twice, or swapped with
    the next one; or the connection is closed there (as a server drops a slow consumer)."""

    def __init__(self, upstream: tuple[str, int], fault: str, at: int = 10) -> None:
        self.upstream, self.fault, self.at = upstream, fault, at
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self.socks: list[socket.socket] = []
        self.threads: list[threading.Thread] = []
        self.accepted = 0
        self._spawn(self._accept)

    def _spawn(self, target: Any, *args: Any) -> None:
        t = threading.Thread(target=target, args=args, daemon=True)
        t.start()
        self.threads.append(t)

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.upstream)
            self.socks += [client, server]
            faulty = self.accepted == 0
            self.accepted += 1
            self._spawn(self._pipe, client, server)
            self._spawn(self._frames, server, client, faulty)

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            _hang_up(src, dst)

    def _frames(self, src: socket.socket, dst: socket.socket, faulty: bool) -> None:
        buf = b""
        messages = 0
        held: bytes | None = None
        try:
            while data := src.recv(65536):
                buf += data
                out = b""
                while len(buf) >= p.HEADER_SIZE:
                    _, kind, _, length = p.HEADER.unpack_from(buf)
                    end = p.HEADER_SIZE + length
                    if len(buf) < end:
                        break
                    frame, buf = buf[:end], buf[end:]
                    if faulty and kind == p.Message.TYPE:
                        messages += 1
                        if messages == self.at:
                            if self.fault == "hangup":  # as a server drops a slow consumer
                                dst.sendall(out)
                                return
                            if self.fault == "drop":
                                continue
                            if self.fault == "duplicate":
                                out += frame
                            elif self.fault == "reorder":
                                held = frame
                                continue
                        out += frame
                        if held is not None and messages == self.at + 1:
                            out += held
                            held = None
                        continue
                    out += frame
                dst.sendall(out)
        except OSError:
            pass
        finally:
            _hang_up(src, dst)

    def close(self) -> None:
        _hang_up(self.listener, *self.socks)
        for t in self.threads:
            t.join(timeout=5)
        for s in [self.listener, *self.socks]:
            s.close()


@pytest.mark.parametrize(
    ("fault", "counts"),
    [
        ("drop", {"lost": 1, "duplicated": 0, "reordered": 0}),
        ("duplicate", {"lost": 0, "duplicated": 1, "reordered": 0}),
        ("reorder", {"lost": 0, "duplicated": 0, "reordered": 1}),
        ("hangup", {"lost": 100 - 9, "duplicated": 0, "reordered": 0}),
    ],
)
def test_verifier_catches_a_proxy_that_breaks_the_stream(
    fault: str, counts: dict[str, int]
) -> None:
    with running_server(rate=0.0, join_history=0) as (host, port):
        proxy = FaultyProxy((host, port), fault)
        try:
            code, data, _ = bench(
                "fanout", "--target", f"127.0.0.1:{proxy.port}", "--sub", "3",
                "--msgs", "100", "--workers", "1",
            )  # fmt: skip
        finally:
            proxy.close()
    assert code == ExitCode.LOST
    v = data["verification"]
    assert {k: v[k] for k in counts} == counts
    assert v["expected"] == 300 and v["ok"] is False
    assert v["delivered"] == 300 - counts["lost"] + counts["duplicated"]
    assert data["disconnects"] == (1 if fault == "hangup" else 0)
