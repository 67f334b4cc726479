"""History persistence cost: the same `chatctl bench` runs against a server with SQLite
history (`--data DIR`) and one with `--data :memory:`, alternating rounds so that background
load hits both alike; prints the median of each and the ratio.

    python benchmarks/history.py [--rounds 5] [--msgs 20000]

Scenarios: fan-out (1 publisher -> 100 subscribers, 100-byte messages; delivered messages/s)
and single-room ingest (10 clients in one room, each sending and receiving; acknowledged
messages/s).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

CHATCTL = [sys.executable, "-m", "chatctl"]
MAX_OUTPUT = ["--max-output", str(16 * 1024 * 1024)]
SCENARIOS = {
    "fanout 1->100 (delivered msgs/s)": (["fanout", "-P", "1", "-S", "100"], "delivery"),
    "room ingest 10 senders/10 members (acked msgs/s)": (["room", "-N", "10"], "publish"),
}


@dataclass(frozen=True)
class Server:
    target: str
    pid: int

    def cpu_seconds(self) -> float:
        """User + system CPU time of the server so far (from /proc)."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextmanager
def server(data: str, log: Path) -> Iterator[Server]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # The log goes to a file: a pipe nobody reads would block the server once it is full.
    with log.open("w") as sink:
        proc = subprocess.Popen(
            # As the bench suite runs it: no rate limit, room for a briefly slow consumer.
            [
                *CHATCTL,
                "serve",
                "--port",
                str(port),
                "--data",
                data,
                "--rate",
                "0",
                "--connect-rate",
                "0",
                *MAX_OUTPUT,
            ],
            stdout=subprocess.DEVNULL,
            stderr=sink,
        )
    try:
        deadline = time.monotonic() + 20
        while "listening on" not in log.read_text():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start:\n{log.read_text()}")
            time.sleep(0.05)
        yield Server(f"127.0.0.1:{port}", proc.pid)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def bench(srv: Server, args: list[str], key: str, msgs: int) -> tuple[float, float]:
    """The rate of `key` and the server's CPU microseconds per published message."""
    cpu = srv.cpu_seconds()
    out = subprocess.run(
        [*CHATCTL, "bench", *args, "--target", srv.target, "--msgs", str(msgs), "--json"],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    if out.returncode:
        raise RuntimeError(f"{srv.target}: bench exit {out.returncode}: {out.stderr[-2000:]}")
    result = json.loads(out.stdout)
    if not result["verification"]["ok"]:
        raise RuntimeError(f"bench saw loss: {result['verification']}")
    cpu = srv.cpu_seconds() - cpu
    return float(result[key]["rate"]), cpu * 1e6 / result["publish"]["messages"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--msgs", type=int, default=20000)
    options = parser.parse_args()
    directory = tempfile.mkdtemp(prefix="chatctl-history-bench-")
    try:
        logs = Path(directory)
        with (
            server(str(logs / "data"), logs / "sqlite.log") as sqlite,
            server(":memory:", logs / "memory.log") as memory,
        ):
            for name, (args, key) in SCENARIOS.items():
                rates: dict[str, list[float]] = {"sqlite": [], "memory": []}
                cpus: dict[str, list[float]] = {"sqlite": [], "memory": []}
                for _ in range(options.rounds):
                    for label, srv in (("sqlite", sqlite), ("memory", memory)):
                        rate, cpu = bench(srv, args, key, options.msgs)
                        rates[label].append(rate)
                        cpus[label].append(cpu)
                med = {label: statistics.median(r) for label, r in rates.items()}
                per = {label: statistics.median(c) for label, c in cpus.items()}
                print(
                    f"{name}: sqlite {med['sqlite']:,.0f}  memory {med['memory']:,.0f}"
                    f"  ratio {med['sqlite'] / med['memory']:.2f}"
                    f"  (rounds sqlite {[round(r) for r in rates['sqlite']]},"
                    f" memory {[round(r) for r in rates['memory']]})\n"
                    f"  server CPU per published message: sqlite {per['sqlite']:.1f} us,"
                    f" memory {per['memory']:.1f} us, ratio {per['memory'] / per['sqlite']:.2f}",
                    flush=True,
                )
    finally:
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
