"""The cluster's figures (docs/cluster.md, issue #15): `python -m benchmarks.cluster`.

Starts its own redis-server (`appendonly yes`, `appendfsync always`) and `chatctl serve
--data redis://...` nodes on free ports of 127.0.0.1, with the bench's own server settings
(chatctl.bench.local.SERVER_ARGS), and runs `chatctl bench` against them as a subprocess:

1. Three nodes, 1 → 100 spread across them for --kill-duration seconds while the publisher's
   node is killed (SIGKILL) a third of the way in and started again on its port: the
   bench's counts of acknowledged messages lost, duplicated and reordered.
2. Server CPU per published message, a one-node cluster against the standalone `:memory:`
   server, at 1 → 1 and 1 → 100, rounds alternating (utime + stime from /proc, as
   `chatctl bench` measures it), and Redis's CPU per message.
3. Deliveries per second of three nodes (the 100 subscribers spread across them) against
   one node, rounds alternating, and Redis's CPU per message.

Each measured run gets a Redis and nodes of its own, so that no run replays another's log.
Prints Markdown; bounded by the bench's own limits (a stalled run fails after 30 s).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.ircd import wait_listening
from benchmarks.server_fanout import cpu_seconds, free_port
from chatctl.bench.local import SERVER_ARGS, local_server, stop_process

START_WITHIN = 30.0


@dataclass
class Node:
    port: int
    proc: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"chat://127.0.0.1:{self.port}"


def node_args(port: int, data: str) -> list[str]:
    args = list(SERVER_ARGS)
    args[args.index("--port") + 1] = str(port)
    args[args.index("--data") + 1] = data
    return [sys.executable, "-m", "chatctl", "serve", *args]


def start_node(port: int, redis_url: str, log: Path) -> Node:
    with log.open("a") as out:
        proc = subprocess.Popen(
            node_args(port, redis_url), stdin=subprocess.DEVNULL, stdout=out, stderr=out
        )
    wait_listening(port, proc, START_WITHIN)
    return Node(port, proc)


@dataclass
class Cluster:
    redis_pid: int
    redis_url: str
    nodes: list[Node]
    logs: Path

    @property
    def target(self) -> str:
        return ",".join(n.url for n in self.nodes)


@contextlib.contextmanager
def cluster(count: int) -> Iterator[Cluster]:
    """A fresh redis-server and `count` nodes on it."""
    with tempfile.TemporaryDirectory(prefix="chatctl-cluster-bench-") as tmp:
        port = free_port()
        redis = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--dir",
                tmp,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        nodes: list[Node] = []
        try:
            wait_listening(port, redis, START_WITHIN)
            url = f"redis://127.0.0.1:{port}"
            for i in range(count):
                nodes.append(start_node(free_port(), url, Path(tmp) / f"node{i}.log"))
            yield Cluster(redis.pid, url, nodes, Path(tmp))
        finally:
            for node in nodes:
                stop_process(node.proc)
            stop_process(redis)


def bench(args: list[str]) -> dict[str, Any]:
    print("$ chatctl bench", " ".join(args), file=sys.stderr)
    proc = subprocess.run(
        [sys.executable, "-m", "chatctl", "bench", *args, "--json"],
        capture_output=True,
        text=True,
        check=False,
    )
    if not proc.stdout.strip():
        raise SystemExit(f"chatctl bench failed: {proc.stderr.strip()}")
    data: dict[str, Any] = json.loads(proc.stdout)
    return data


def median(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[(len(ordered) - 1) // 2]


def us(ns: float) -> str:
    return f"{ns / 1000:.1f} µs"


# -- 1. a node killed and restarted under 1 -> 100 ---------------------------------------------


def kill_run(duration: float) -> list[str]:
    with cluster(3) as c:
        victim = c.nodes[0]  # the publisher's, and a third of the subscribers'
        target = c.target
        events: list[str] = []

        def kill_and_restart() -> None:
            time.sleep(duration / 3)  # the schedule of the fault, not a synchronisation
            os.kill(victim.proc.pid, signal.SIGKILL)
            victim.proc.wait(timeout=10)
            events.append(f"killed at {duration / 3:.0f} s")
            time.sleep(2)
            started = time.monotonic()
            c.nodes[0] = start_node(victim.port, c.redis_url, c.logs / "node0-again.log")
            took = time.monotonic() - started
            events.append(f"started again 2 s later, listening {took:.1f} s after that")

        fault = threading.Thread(target=kill_and_restart)
        fault.start()
        data = bench(
            [
                "fanout",
                "--pub",
                "1",
                "--sub",
                "100",
                "--msgs",
                "0",
                "--duration",
                f"{duration:g}",
                "--target",
                target,
            ]
        )
        fault.join()
    v = data["verification"]
    return [
        f"Three nodes, 1 → 100 spread across them (the publisher and 34 subscribers on the "
        f"first), {duration:g} s as fast as the publisher's window allows; the first node "
        f"SIGKILLed ({'; '.join(events)}):",
        "",
        f"- published {data['publish']['messages']:,} messages, "
        f"{v['expected']:,} deliveries expected, {v['delivered']:,} delivered",
        f"- **lost {v['lost']:,}, duplicated {v['duplicated']:,}, reordered "
        f"{v['reordered']:,}** (target: 0, 0, 0); connections moved and resumed: "
        f"{data['reconnects']}, refused publishes: {data['refused']}",
        "",
    ]


# -- 2. and 3. alternating rounds -------------------------------------------------------------


def measured(args: list[str], c: Cluster | None) -> dict[str, Any]:
    """One bench run's JSON, with Redis's CPU per published message added (whole run)."""
    before = cpu_seconds(c.redis_pid) if c else 0.0
    data = bench(args)
    if c:
        sent = max(int(data["publish"]["messages"]), 1)
        data["redis_cpu_per_message_ns"] = (cpu_seconds(c.redis_pid) - before) * 1e9 / sent
    if not data["verification"]["ok"]:
        data["note"] = " **(not exactly-once!)**"
    return data


def cpu_rounds(rounds: int, duration: str) -> list[str]:
    load = ["--msgs", "0", "--duration", duration, "--warmup", "1"]
    rows = []
    for subs in (1, 100):
        node_cpu: list[float] = []
        alone_cpu: list[float] = []
        redis_cpu: list[float] = []
        for _ in range(rounds):
            with local_server() as (target, _pid):
                alone = measured(
                    ["fanout", "--sub", str(subs), *load, "--target", target.url], None
                )
            alone_cpu.append(alone["server"]["cpu_per_message_ns"])
            with cluster(1) as c:
                one = measured(["fanout", "--sub", str(subs), *load, "--target", c.target], c)
            node_cpu.append(one["server"]["cpu_per_message_ns"])
            redis_cpu.append(one["redis_cpu_per_message_ns"])
        a, n = median(alone_cpu), median(node_cpu)
        rows.append(
            f"| 1 → {subs} | {us(a)} | {us(n)} | **{n / max(a, 1):.2f} x** | "
            f"{us(median(redis_cpu))} |"
        )
    return [
        f"Server CPU per published message (medians of {rounds} alternating rounds of "
        f"{duration} s after a 1 s warm-up; node and standalone server each started fresh):",
        "",
        "| fan-out | standalone `:memory:` | one node `redis://` | ratio (target ≤ 1.5 x) "
        "| Redis, per message |",
        "|---|---:|---:|---:|---:|",
        *rows,
        "",
    ]


def throughput_rounds(rounds: int, duration: str) -> list[str]:
    load = ["--msgs", "0", "--duration", duration, "--warmup", "1"]
    three: list[dict[str, Any]] = []
    one: list[dict[str, Any]] = []
    for _ in range(rounds):
        for count, into in ((3, three), (1, one)):
            with cluster(count) as c:
                into.append(measured(["fanout", "--sub", "100", *load, "--target", c.target], c))
    lines = [
        f"Deliveries per second at 1 → 100 (medians of {rounds} alternating rounds of "
        f"{duration} s after a 1 s warm-up):",
        "",
        "| nodes | deliveries/s [lowest to highest] | server CPU per message (all nodes) "
        "| Redis CPU per message |",
        "|---|---:|---:|---:|",
    ]
    for name, runs in (("three", three), ("one", one)):
        rates = [r["delivery"]["rate"] for r in runs]
        marks = "".join(r.get("note", "") for r in runs)[:40]
        lines.append(
            f"| {name} | {median(rates):,.0f} [{min(rates):,.0f} to {max(rates):,.0f}]{marks} "
            f"| {us(median([r['server']['cpu_per_message_ns'] for r in runs]))} "
            f"| {us(median([r['redis_cpu_per_message_ns'] for r in runs]))} |"
        )
    r3 = median([r["delivery"]["rate"] for r in three])
    r1 = median([r["delivery"]["rate"] for r in one])
    lines += ["", f"Three nodes against one: **{r3 / max(r1, 1):.2f} x** (target ≥ 1 x).", ""]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", default="5", help="seconds per measured run")
    parser.add_argument("--kill-duration", type=float, default=30.0)
    parser.add_argument(
        "--sections", default="kill,cpu,throughput", help="any of kill, cpu, throughput"
    )
    args = parser.parse_args()
    sections = set(args.sections.split(","))
    lines: list[str] = []
    if "kill" in sections:
        lines += kill_run(args.kill_duration)
    if "cpu" in sections:
        lines += cpu_rounds(args.rounds, args.duration)
    if "throughput" in sections:
        lines += throughput_rounds(args.rounds, args.duration)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
