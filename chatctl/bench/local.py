"""The target's process: a chatctl server started for the run, and any local server's memory.

With no --target, the bench starts `python -m chatctl serve` on a free port with the limits
that would otherwise distort a load test turned off (no rate limit, a large output buffer, no
history on join, history in memory), and stops it afterwards.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from chatctl.bench.adapters import Kind
from chatctl.bench.plan import Target
from chatctl.errors import ChatctlError
from chatctl.protocol import DEFAULT_MAX_FRAME_SIZE, DEFAULT_MAX_TEXT, MAX_FRAME_SIZE_CEILING
from chatctl.server.log import find_listening

START_TIMEOUT = 20.0
SERVER_ARGS = (
    "--port",
    "0",
    "--data",
    ":memory:",
    "--rate",
    "0",
    "--max-output",
    str(16 * 1024 * 1024),
    "--join-history",
    "0",
    # every bench connection comes from 127.0.0.1
    "--max-connections",
    "1000000",
    "--max-per-ip",
    "1000000",
    "--connect-rate",
    "0",
    "--total-output",
    str(1 << 40),
    "--log-format",
    "json",
)


class ServerFailed(ChatctlError):
    pass


@contextlib.contextmanager
def local_server(max_text: int = 0, data: str = ":memory:") -> Iterator[tuple[Target, int]]:
    """A `chatctl serve` subprocess for one run; yields its target and pid. Its text and frame
    limits are raised to fit messages of `max_text` bytes; `data` is its --data (the suite
    also measures a server with a data directory, the default SQLite store)."""
    limits: list[str] = []
    if max_text > DEFAULT_MAX_TEXT:
        # The server allows text only as long as its worst-case JSON escaping fits a frame.
        frame = min(MAX_FRAME_SIZE_CEILING, max(DEFAULT_MAX_FRAME_SIZE, 6 * max_text + 4096))
        limits = ["--max-text", str(max_text), "--max-frame", str(frame)]
    with tempfile.TemporaryDirectory(prefix="chatctl-bench-") as tmp:
        log_path = Path(tmp) / "server.log"
        with log_path.open("w") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "chatctl", "serve", *_with_data(data), *limits],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        try:
            host, port = _wait_listening(proc, log_path)
            yield Target(kind=Kind.chatctl, host=host, port=port, launched=True), proc.pid
        finally:
            stop_process(proc)


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, and SIGKILL if it is still there 10 s later."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def _with_data(data: str) -> list[str]:
    args = list(SERVER_ARGS)
    args[args.index("--data") + 1] = data
    return args


def _wait_listening(proc: subprocess.Popen[bytes], log_path: Path) -> tuple[str, int]:
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        text = log_path.read_text(errors="replace")
        found = find_listening(text)
        if found:
            return found
        if proc.poll() is not None:
            last = text.strip().splitlines()[-1:] or ["(no output)"]
            raise ServerFailed(f"the local chatctl server exited: {last[0]}")
        if time.monotonic() > deadline:
            raise ServerFailed(f"the local chatctl server did not listen within {START_TIMEOUT} s")
        time.sleep(0.02)  # polling a log file for a condition, with a deadline


def listening_pid(port: int) -> int | None:
    """The local process listening on TCP `port`, when this user can see it (Linux /proc)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                local, state, inode = fields[1], fields[3], fields[9]
                if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
                    inodes.add(f"socket:[{inode}]")
    if not inodes:
        return None
    for pid in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    if os.readlink(f"/proc/{pid}/fd/{fd}") in inodes:
                        return int(pid)
    return None


def rss_bytes(pid: int | None) -> int:
    """Resident memory of `pid` in bytes; 0 when unknown."""
    if pid is None:
        return 0
    with contextlib.suppress(OSError, ValueError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def cpu_seconds(pid: int | None) -> float | None:
    """CPU time (user + system) `pid` has used so far, in seconds; None when unknown (Linux)."""
    if pid is None:
        return None
    with contextlib.suppress(OSError, ValueError, IndexError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return None
