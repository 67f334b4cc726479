"""IRC servers for `chatctl bench --target irc://`: ngircd and miniircd started on 127.0.0.1
with the settings a load test needs (docs/benchmarks.md, "IRC servers"). Used by the suite
and by tests/test_bench_irc.py.

ngircd runs in the foreground (`ngircd -n -f CONFIG`) with a generated configuration in a
temporary directory: no PID file, no daemon, no DNS or IDENT lookups, no per-IP connection
limit, nicks up to 30 characters, and penalties off (`MaxPenaltyTime = 0`, ngircd 26's name
for it), so that a publisher is never throttled. ngircd has no SendQ/RecvQ settings: a client
whose unsent output reaches 32 KiB is closed ("Write buffer space exhausted"), and it reads at
most 2 KiB of a client's input at a time (the rest waits in the socket). miniircd has no flood
control and no output limit at all.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

NGIRCD_CONF = """\
[Global]
    Name = bench.irc
    Info = chatctl bench
    AdminInfo1 = chatctl bench
    AdminInfo2 = 127.0.0.1
    AdminEMail = bench@localhost
    Listen = 127.0.0.1
    Ports = {port}
    MotdPhrase = chatctl bench

[Limits]
    MaxConnections = 0
    MaxConnectionsIP = 0
    MaxJoins = 0
    MaxNickLength = 30
    MaxPenaltyTime = 0
    PingTimeout = {ping_timeout}
    PongTimeout = {ping_timeout}

[Options]
    DNS = no
    Ident = no
    PAM = no
"""

START_TIMEOUT = 10.0


def ngircd_config(port: int, ping_timeout: int = 120) -> str:
    """ngircd's configuration; `ping_timeout` (at least 5) is both how long a silent client
    waits for a PING and how long it then has to answer it."""
    return NGIRCD_CONF.format(port=port, ping_timeout=max(5, ping_timeout))


def ngircd_argv(config: Path) -> list[str]:
    return ["ngircd", "--nodaemon", "--config", str(config)]


def miniircd_argv(port: int) -> list[str]:
    argv = ["miniircd", "--listen", "127.0.0.1", "--ports", str(port)]
    if os.getuid() == 0 or os.getgid() == 0:
        argv += ["--setuid", "nobody"]  # miniircd refuses to run as root otherwise
    return argv


def wait_listening(port: int, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited at start-up ({proc.returncode})")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.02)  # poll for the listener, with a deadline
    raise RuntimeError(f"nothing listening on port {port} after {timeout} s")


@contextlib.contextmanager
def irc_server(
    name: str,
    port: int,
    preexec_fn: Callable[[], None] | None = None,
    ping_timeout: int = 120,
) -> Iterator[subprocess.Popen[bytes]]:
    """`name` ("ngircd" or "miniircd") listening on 127.0.0.1:`port` until the block ends
    (`ping_timeout`: ngircd's, see ngircd_config)."""
    with tempfile.TemporaryDirectory(prefix=f"chatctl-{name}-") as tmp:
        if name == "ngircd":
            config = Path(tmp) / "ngircd.conf"
            config.write_text(ngircd_config(port, ping_timeout))
            argv = ngircd_argv(config)
        elif name == "miniircd":
            argv = miniircd_argv(port)
        else:
            raise ValueError(f"unknown IRC server {name!r}")
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=preexec_fn,  # noqa: PLW1509  (the caller's, e.g. die with the parent)
        )
        try:
            wait_listening(port, proc, START_TIMEOUT)
            yield proc
        finally:
            proc.kill()
            proc.wait(timeout=10)


def installed(name: str) -> bool:
    return shutil.which(name) is not None
