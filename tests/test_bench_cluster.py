"""`chatctl bench --target A,B,C` against real nodes of a cluster (a real redis-server, real
`chatctl serve --data redis://` processes, the real bench as a subprocess): clients spread
over the nodes, exactly-once and per-publisher order verified across them, and a node killed
(SIGKILL) mid-run, whose clients resume on another node, still ends with nothing lost,
duplicated or reordered."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import pytest

from chatctl.bench.local import SERVER_ARGS
from chatctl.cluster.entries import STREAM
from tests.redis_servers import RedisServer, redis_call, redis_server
from tests.servers import ServeProcess, dies_with_parent, serve_process

WAIT = 60.0
# A small replay limit: a subscriber that moves must read what it missed in History pages.
REPLAY_LIMIT = "20"


def node_args(redis: RedisServer) -> list[str]:
    """The bench's own server settings (no rate limit, large buffers), on the cluster."""
    args, skip = [], False
    for arg in SERVER_ARGS:
        if skip:
            skip = False
        elif arg in ("--port", "--data"):
            skip = True
        else:
            args.append(arg)
    return [*args, "--data", redis.url, "--replay-limit", REPLAY_LIMIT]


@contextmanager
def nodes(redis: RedisServer, count: int) -> Iterator[list[ServeProcess]]:
    with ExitStack() as stack:
        yield [stack.enter_context(serve_process(*node_args(redis))) for _ in range(count)]


def target(servers: list[ServeProcess]) -> str:
    return ",".join(f"chat://{s.host}:{s.port}" for s in servers)


def start_bench(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "chatctl", "bench", *args, "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=dies_with_parent(),  # noqa: PLW1509  (no lock taken; see tests/servers.py)
    )


def result(proc: subprocess.Popen[str]) -> dict[str, Any]:
    try:
        out, err = proc.communicate(timeout=WAIT)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    # On failure, the report's end too: its verification says what went wrong.
    assert proc.returncode == 0, f"{err}\n{out[-3000:]}"
    data: dict[str, Any] = json.loads(out)
    return data


def log_entries(redis: RedisServer) -> int:
    length = redis_call(redis.port, "XLEN", STREAM)
    assert isinstance(length, int)
    return length


@pytest.mark.parametrize(
    "load", [["fanout", "--pub", "2", "--sub", "7"], ["room", "--clients", "7"]]
)
def test_bench_across_three_nodes_verifies_exactly_once(tmp_path: Path, load: list[str]) -> None:
    with redis_server(tmp_path) as redis, nodes(redis, 3) as servers:
        data = result(start_bench(*load, "--msgs", "1500", "-w", "2", "--target", target(servers)))
    v = data["verification"]
    assert v["ok"] and v["expected"] > 0 and v["lost"] == v["duplicated"] == v["reordered"] == 0
    assert data["target"] == target(servers).replace("chat://", "")  # in the report's form
    assert data["reconnects"] == data["disconnects"] == 0


@pytest.mark.parametrize(
    ("load", "movers"),
    [
        # node 0 holds the publisher and subscribers 0 and 3
        (["fanout", "--pub", "1", "--sub", "6"], 3),
        # node 0 holds clients 0 and 3, each publishing and subscribing
        (["room", "--clients", "6"], 2),
    ],
)
def test_a_node_killed_under_a_bench_run_loses_and_duplicates_nothing(
    tmp_path: Path, load: list[str], movers: int
) -> None:
    with redis_server(tmp_path, aof=True) as redis, nodes(redis, 3) as servers:
        bench = start_bench(
            *load, "--msgs", "0", "--duration", "4", "-w", "2", "--target", target(servers)
        )
        # Kill the first node once the run is publishing through the log.
        deadline = time.monotonic() + WAIT
        while log_entries(redis) < 30:
            assert bench.poll() is None, bench.communicate()
            assert time.monotonic() < deadline, "the bench run never got going"
            time.sleep(0.05)  # polling Redis for a condition, with a deadline
        servers[0].stop()  # SIGKILL
        with serve_process(*node_args(redis)) as again:  # it comes back (on a new port)
            data = result(bench)
            again.wait_for_line("log entries applied")
    v = data["verification"]
    assert (v["lost"], v["duplicated"], v["reordered"]) == (0, 0, 0), v
    assert v["ok"] and v["expected"] > 0
    assert data["disconnects"] == data["reconnects"] == movers
    assert data["refused"] == 0
