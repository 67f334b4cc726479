"""Regenerate the figures in docs/benchmarks.md: `nox -s bench`, or
`python -m benchmarks.suite [--write docs/benchmarks.md] [--quick]`.

It starts redis-server, nats-server, ngircd and miniircd on free ports of 127.0.0.1 (each when
installed; the IRC servers as benchmarks/ircd.py configures them) and a `chatctl serve` with a
data directory (the default SQLite store; the plain chatctl runs start their own server with
`--data :memory:`), runs each `chatctl bench` command as a subprocess exactly as printed in
the document (with the real ports), and replaces the text between the results markers.

A reduced run for a quick look: `--subscribers 1,10 --sections fanout --quick`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.ircd import irc_server, wait_listening
from benchmarks.server_fanout import free_port
from chatctl.bench.local import local_server

BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"
SUBSCRIBERS = (1, 10, 100, 1000)
SECTIONS = ("fanout", "capacity", "latency", "connect")
# The --target each documented command names; the suite substitutes the port it started the
# server on. "chatctl" is the server the bench starts itself (--data :memory:).
TARGETS = {
    "chatctl": "",
    "chatctl-sqlite": "127.0.0.1:1060",
    "redis": "redis://127.0.0.1:6379",
    "nats": "nats://127.0.0.1:4222",
    "ngircd": "irc://127.0.0.1:6667",
    "miniircd": "irc://127.0.0.1:6668",
}
NOTES = {
    "chatctl-sqlite": "`chatctl serve` with a data directory (the default SQLite store), "
    "started by the suite with the bench's own server settings otherwise (in the fan-out "
    "section, a fresh one every round, as the bench starts chatctl's `:memory:` server)",
    "ngircd": "ngircd with benchmarks/ircd.py's configuration (penalties off)",
    "miniircd": "miniircd (Python, no flood control)",
}


@contextlib.contextmanager
def _external(binary: str, args: list[str]) -> Iterator[int | None]:
    """A server on a free port, or None when the binary is not installed."""
    if shutil.which(binary) is None:
        yield None
        return
    port = free_port()
    proc = subprocess.Popen(
        [binary, *(a.replace("PORT", str(port)) for a in args)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_listening(port, proc, 10.0)
        yield port
    finally:
        proc.kill()
        proc.wait(timeout=10)


@contextlib.contextmanager
def _irc(name: str) -> Iterator[int | None]:
    if shutil.which(name) is None:
        yield None
        return
    port = free_port()
    with irc_server(name, port):
        yield port


@contextlib.contextmanager
def _chatctl_sqlite() -> Iterator[int | None]:
    with (
        tempfile.TemporaryDirectory(prefix="chatctl-suite-") as tmp,
        local_server(data=str(Path(tmp) / "data")) as (target, _),
    ):
        yield target.port


def _bench(args: list[str], ports: dict[str, int | None]) -> dict[str, Any] | None:
    """Run one documented command; its JSON, or None if its target is not available."""
    real = []
    for arg in args:
        value = arg
        for kind, url in TARGETS.items():
            if url and arg == url:
                port = ports.get(kind)
                if port is None:
                    return None
                value = url.rsplit(":", 1)[0] + f":{port}"
        real.append(value)
    print("$", " ".join(args), file=sys.stderr)
    proc = subprocess.run(
        [sys.executable, "-m", "chatctl", *real, "--json"],
        capture_output=True,
        text=True,
        check=False,
    )
    if not proc.stdout.strip():
        print(proc.stderr, file=sys.stderr)
        return None
    data: dict[str, Any] = json.loads(proc.stdout)
    return data


def _cmd(args: list[str]) -> str:
    return "chatctl " + " ".join(args)


def _target_args(kind: str) -> list[str]:
    return ["--target", TARGETS[kind]] if TARGETS[kind] else []


def _us(ns: int) -> str:
    return f"{ns / 1000:,.0f}" if ns >= 10_000 else f"{ns / 1000:,.1f}"


def _load() -> str:
    try:
        return Path("/proc/loadavg").read_text().split()[0]
    except OSError:
        return "unknown"


def _machine() -> str:
    cpu = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = ""
    with contextlib.suppress(OSError):
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f", {kb / 2**20:.0f} GiB RAM"
    versions = []
    for binary, flag in (("redis-server", "--version"), ("nats-server", "--version")):
        if shutil.which(binary):
            out = subprocess.run([binary, flag], capture_output=True, text=True, check=False)
            versions.append(out.stdout.strip().splitlines()[0] if out.stdout else binary)
    return (
        f"{cpu}, {os.cpu_count()} cores{mem}; Linux {platform.release()}; "
        f"Python {platform.python_version()}; " + "; ".join(versions)
    )


def _median(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median delivery rate (the lower middle one of an even number)."""
    ordered = sorted(runs, key=lambda r: float(r["delivery"]["rate"]))
    return ordered[(len(ordered) - 1) // 2]


def _m(rate: float) -> str:
    return f"{rate / 1e6:.2f} M" if rate >= 1e6 else f"{rate / 1e3:.0f} k"


def _ns(ns: float) -> str:
    return f"{ns / 1000:,.1f}" if ns >= 100 else f"{ns / 1000:,.2f}"


def run_suite(
    quick: bool,
    rounds: int,
    subscribers: tuple[int, ...] = SUBSCRIBERS,
    sections: tuple[str, ...] = SECTIONS,
) -> str:
    duration = ["--msgs", "0", "--duration", "2" if quick else "5", "--warmup", "1"]
    reduced = subscribers != SUBSCRIBERS or sections != SECTIONS or quick
    lines = [
        ("Generated by `python -m benchmarks.suite`" if reduced else "Generated by `nox -s bench`")
        + f" on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC"
        + (
            f" — **a reduced run** (subscribers {', '.join(map(str, subscribers))}; sections "
            f"{', '.join(sections)}; {'2' if quick else '5'} s per run; {rounds} rounds)."
            if reduced
            else "."
        ),
        "",
        f"Machine: {_machine()}. Load average when the suite started: {_load()} "
        "(anything above 0 is other work competing for the same 2 cores).",
        "",
        "Targets: " + "; ".join(f"{k}: {v}" for k, v in NOTES.items()) + ".",
        "",
    ]
    with (
        _external("redis-server", ["--port", "PORT", "--save", "", "--appendonly", "no"]) as rp,
        _external("nats-server", ["-a", "127.0.0.1", "-p", "PORT"]) as np_,
        _irc("ngircd") as ngp,
        _irc("miniircd") as mip,
        _chatctl_sqlite() as sqp,
    ):
        ports = {"redis": rp, "nats": np_, "ngircd": ngp, "miniircd": mip, "chatctl-sqlite": sqp}
        if "fanout" in sections:
            lines += _fanout(ports, rounds, subscribers, duration)
        if "capacity" in sections:
            lines += _capacity(ports, rounds, duration)
        if "latency" in sections:
            lines += _latency(ports, quick)
        if "connect" in sections:
            lines += _connect(ports, quick)
    return "\n".join(lines)


def _fanout(
    ports: dict[str, int | None], rounds: int, subscribers: tuple[int, ...], duration: list[str]
) -> list[str]:
    lines = [
        "### Fan-out: 1 publisher → N subscribers, 100-byte messages",
        "",
        f"Deliveries per second, the median of {rounds} rounds [lowest to highest], and that "
        "run's p50 / p99 latency in ms; as fast as the publisher's window allows, after a "
        "1 s warm-up. Every run verified: nothing lost, duplicated or reordered unless "
        "marked.",
        "",
        "| subscribers | " + " | ".join(TARGETS) + " |",
        "|---:|" + "---:|" * len(TARGETS),
    ]
    # Rounds alternate the targets, so that each sees the same share of a busy machine.
    table: dict[str, dict[int, list[dict[str, Any]]]] = {k: {} for k in TARGETS}
    cmds = []
    for rnd in range(rounds):
        for kind in TARGETS:
            args = [
                "bench",
                "fanout",
                *_target_args(kind),
                "--sweep",
                "sub=" + ",".join(map(str, subscribers)),
                "--size",
                "100",
                *duration,
            ]
            if rnd == 0:
                cmds.append(_cmd(args))
            if kind == "chatctl-sqlite" and ports.get(kind) is not None:
                # A fresh data directory every round, as the bench starts a fresh `:memory:`
                # server for "chatctl" every round: the two stores from the same start, not
                # one fresh and one holding every earlier run's history.
                with _chatctl_sqlite() as port:
                    data = _bench(args, {**ports, kind: port})
            else:
                data = _bench(args, ports)
            for n, run in zip(subscribers, data["runs"] if data else [], strict=False):
                table[kind].setdefault(n, []).append(run)
    cpu_rows = []
    for n in subscribers:
        cells, cpu_cells = [], []
        for kind in TARGETS:
            runs = table[kind].get(n, [])
            if not runs:
                cells.append("n/a")
                cpu_cells.append("n/a")
                continue
            mid = _median(runs)
            lat = mid["latency_ns"]
            rates = [x["delivery"]["rate"] for x in runs]
            spread = f" [{_m(min(rates))} to {_m(max(rates))}]" if len(runs) > 1 else ""
            mark = "" if all(x["verification"]["ok"] for x in runs) else " **(lost!)**"
            cells.append(
                f"{mid['delivery']['rate']:,.0f}{spread} "
                f"({lat['p50'] / 1e6:,.1f} / {lat['p99'] / 1e6:,.1f}){mark}"
            )
            cpu = sorted(x["server"]["cpu_per_message_ns"] for x in runs)
            cpu_cells.append(_ns(cpu[(len(cpu) - 1) // 2]) if cpu[-1] else "n/a")
        lines.append(f"| {n:,} | " + " | ".join(cells) + " |")
        cpu_rows.append(f"| {n:,} | " + " | ".join(cpu_cells) + " |")
    lines += [
        "",
        "Server CPU (user + system) per published message in µs, the median of the same "
        "rounds: the server's CPU time from the start of publishing to the end of the run "
        "(warm-up and drain included), divided by the messages published in it. One "
        "message published to N subscribers is N deliveries.",
        "",
        "| subscribers | " + " | ".join(TARGETS) + " |",
        "|---:|" + "---:|" * len(TARGETS),
        *cpu_rows,
    ]
    lines += ["", "Commands:", "", "```sh", *cmds, "```", ""]
    c100, r100 = table["chatctl"].get(100), table["redis"].get(100)
    if c100 and r100:
        c, red = _median(c100)["delivery"]["rate"], _median(r100)["delivery"]["rate"]
        lines += [
            f"chatctl 1 → 100 against Redis in the same run (medians): "
            f"{c / max(red, 1):.2f} times ({c:,.0f} vs {red:,.0f} deliveries/s).",
            "",
        ]
    best = max(
        (x["delivery"]["rate"] for runs in table["redis"].values() for x in runs),
        default=0.0,
    )
    if best:
        lines += [
            f"Most deliveries per second the generator observed from Redis above: **{best:,.0f}**.",
            "",
        ]
    return lines


def _capacity(ports: dict[str, int | None], rounds: int, duration: list[str]) -> list[str]:
    lines: list[str] = []
    # What the generator can observe
    lines += [
        "### Generator capacity: deliveries observed from Redis",
        "",
        "The load generator must never be the bottleneck. Against Redis, which fans out in "
        "C, these are the most deliveries per second it observed (verified; best of "
        f"{rounds} runs) on this machine, where the generator, Redis and the publisher "
        "share 2 cores.",
        "",
        "| load | deliveries/s | MB/s | p50 latency (µs) | verified |",
        "|---|---:|---:|---:|---|",
    ]
    cmds = []
    for pubs, subs in ((1, 50), (2, 100)):
        args = ["bench", "fanout", "--target", TARGETS["redis"], "--pub", str(pubs)]
        args += ["--sub", str(subs), *duration]
        cmds.append(_cmd(args))
        tries = [x for x in (_bench(args, ports) for _ in range(rounds)) if x is not None]
        if not tries:
            lines.append(f"| {pubs} → {subs} | n/a | | | |")
            continue
        top = max(tries, key=lambda x: float(x["delivery"]["rate"]))
        ok = "ok" if top["verification"]["ok"] else "**lost**"
        lines.append(
            f"| {pubs} → {subs} | {top['delivery']['rate']:,.0f} | "
            f"{top['delivery']['mb_per_s']:,.0f} | {_us(top['latency_ns']['p50'])} | {ok} |"
        )
    lines += ["", "```sh", *cmds, "```", ""]
    return lines


def _latency(ports: dict[str, int | None], quick: bool) -> list[str]:
    lines: list[str] = []
    lines += [
        "### Latency at a fixed rate: 1 publisher at 1,000 msg/s → 10 subscribers",
        "",
        "10,000 deliveries/s; end-to-end latency in µs from the send timestamp in each "
        "message (the time it was due, so a stalled sender shows as latency).",
        "",
        "| target | min | p50 | p90 | p99 | p99.9 | max | verified |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    cmds = []
    for kind in TARGETS:
        args = ["bench", "fanout", *_target_args(kind), "--sub", "10", "--rate", "1000"]
        args += ["--msgs", "3000" if quick else "10000", "--warmup", "1", "--size", "100"]
        cmds.append(_cmd(args))
        r = _bench(args, ports)
        if r is None:
            lines.append(f"| {kind} | n/a | | | | | | |")
            continue
        lat = r["latency_ns"]
        keys = ("min", "p50", "p90", "p99", "p99_9", "max")
        ok = "ok" if r["verification"]["ok"] else "**lost**"
        lines.append(f"| {kind} | " + " | ".join(_us(lat[k]) for k in keys) + f" | {ok} |")
    lines += ["", "```sh", *cmds, "```", ""]
    return lines


def _connect(ports: dict[str, int | None], quick: bool) -> list[str]:
    lines: list[str] = []
    n = 2000 if quick else 10_000
    lines += [
        f"### {n:,} concurrent connections",
        "",
        "Connections opened, set up (chatctl: Hello/Welcome; Redis: PING; NATS: "
        "CONNECT/PING) and held at once; server resident memory growth per connection.",
        "",
        "| target | held | connects/s | connect p50 / p99 (µs) | memory per connection |",
        "|---|---:|---:|---:|---:|",
    ]
    cmds = []
    for kind in TARGETS:
        args = ["bench", "connect", *_target_args(kind), "--clients", str(n)]
        cmds.append(_cmd(args))
        r = _bench(args, ports)
        if r is None:
            lines.append(f"| {kind} | n/a | | | |")
            continue
        c = r["connect"]
        per = r["server"]["per_connection"]
        lines.append(
            f"| {kind} | {c['held']:,} | {c['rate']:,.0f} | "
            f"{_us(c['time_ns']['p50'])} / {_us(c['time_ns']['p99'])} | "
            f"{per / 1024:,.1f} KiB |"
        )
    lines += ["", "```sh", *cmds, "```", ""]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--write", type=Path, help="replace the results section of this file")
    parser.add_argument("--quick", action="store_true", help="shorter runs, for a smoke test")
    parser.add_argument("--rounds", type=int, default=3, help="repeats of the throughput runs")
    parser.add_argument(
        "--subscribers",
        default=",".join(map(str, SUBSCRIBERS)),
        help="the fan-out sweep's subscriber counts (a reduced run: 1,10)",
    )
    parser.add_argument(
        "--sections",
        default=",".join(SECTIONS),
        help=f"which sections to run, of {','.join(SECTIONS)}",
    )
    opts = parser.parse_args()
    subscribers = tuple(int(n) for n in opts.subscribers.split(","))
    sections = tuple(x for x in SECTIONS if x in opts.sections.split(","))
    text = run_suite(opts.quick, max(1, opts.rounds), subscribers, sections)
    if opts.write is None:
        print(text)
        return
    doc = opts.write.read_text()
    pattern = re.compile(re.escape(BEGIN) + ".*?" + re.escape(END), re.S)
    if not pattern.search(doc):
        raise SystemExit(f"{opts.write}: no {BEGIN} ... {END} section")
    opts.write.write_text(pattern.sub(lambda _: f"{BEGIN}\n{text}\n{END}", doc))


if __name__ == "__main__":
    main()
