"""What a person sees: a live progress line while running, and the final tables."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from typing import Any, TextIO

from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from chatctl.bench.params import Params, Scenario
from chatctl.bench.results import SWEEP_SCHEMA, RunResult, flatten


def fmt_ns(ns: int | float) -> str:
    if ns < 1_000:
        return f"{ns:.0f} ns"
    if ns < 1_000_000:
        return f"{ns / 1e3:.1f} µs"
    if ns < 1_000_000_000:
        return f"{ns / 1e6:.2f} ms"
    return f"{ns / 1e9:.2f} s"


def fmt_rate(rate: float) -> str:
    return f"{rate:,.0f}"


def fmt_short(rate: float) -> str:
    if rate >= 1e6:
        return f"{rate / 1e6:.2f}M"
    return f"{rate / 1e3:.1f}k" if rate >= 1e4 else f"{rate:.0f}"


def fmt_ms(ns: int) -> str:
    return f"{ns / 1e6:.2f}"


class LiveDisplay:
    """A progress bar and a live rate line on stderr, only when stderr is a terminal."""

    def __init__(self, params: Params, total_msgs: int, label: str) -> None:
        self.console = Console(stderr=True)
        self.enabled = self.console.is_terminal
        self.params = params
        self.total = float(total_msgs or params.warmup + params.duration)
        self.by_time = not total_msgs
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TimeElapsedColumn(),
            console=self.console,
        )
        self.task = self.progress.add_task(label, total=self.total)
        self.line = Text("connecting…")
        self.live = Live(
            Group(self.progress, self.line),
            console=self.console,
            transient=True,
            refresh_per_second=8,
        )
        self.last = (0.0, 0, 0)

    def __enter__(self) -> LiveDisplay:
        if self.enabled:
            self.live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            self.live.__exit__(None, None, None)

    def update(self, elapsed: float, sent: int, delivered: int) -> None:
        if not self.enabled:
            return
        done = elapsed if self.by_time else sent  # warm-up messages come on top of the total
        self.progress.update(self.task, completed=min(done, self.total))
        t0, s0, d0 = self.last
        dt = elapsed - t0
        if dt < 0.5:  # rates over at least half a second, not between two workers' reports
            return
        self.last = (elapsed, sent, delivered)
        self.line.plain = (
            f"sent {sent:,} ({(sent - s0) / dt:,.0f}/s)   "
            f"delivered {delivered:,} ({(delivered - d0) / dt:,.0f}/s)"
        )


def describe(params: Params) -> str:
    s = params.scenario
    if s is Scenario.fanout:
        who = f"{params.publishers} pub → {params.subscribers} sub"
    elif s is Scenario.room:
        who = f"{params.clients} clients in 1 room"
    elif s is Scenario.rooms:
        who = f"{params.clients} clients in {params.rooms} rooms"
    else:
        return f"connect {params.clients} clients"
    load = f"{params.messages:,} msgs each" if params.messages else f"{params.duration:g} s"
    rate = f", {params.rate:g} msg/s each" if params.rate else ""
    return f"{s} {who}, {params.size} B, {load}{rate}"


def result_table(r: RunResult) -> Table:
    t = Table(
        title=f"chatctl bench: {describe(r.params)} → {r.target} ({r.kind})", show_header=False
    )
    t.add_column("", style="bold")
    t.add_column("")
    if r.params.scenario is not Scenario.connect:
        for name, flow in (("publish", r.publish), ("delivery", r.delivery)):
            t.add_row(
                name,
                f"{fmt_rate(flow.rate)} msgs/s ~ {flow.mb_per_s:,.2f} MB/s "
                f"({flow.messages:,} msgs)",
            )
            s = flow.per_client
            t.add_row(
                "  per client",
                f"min {fmt_rate(s.min)} | avg {fmt_rate(s.avg)} | max {fmt_rate(s.max)} "
                f"| stddev {fmt_rate(s.stddev)} msgs/s",
            )
        lat = r.latency_ns
        t.add_row(
            "latency",
            f"min {fmt_ns(lat.min)} | p50 {fmt_ns(lat.p50)} | p90 {fmt_ns(lat.p90)} | "
            f"p99 {fmt_ns(lat.p99)} | p99.9 {fmt_ns(lat.p99_9)} | max {fmt_ns(lat.max)} "
            f"({lat.count:,} samples)",
        )
        v = r.verification
        verdict = "[green]exactly once, in order[/]" if v.ok else "[red]FAILED[/]"
        t.add_row(
            "verified",
            f"{verdict}: expected {v.expected:,}, delivered {v.delivered:,}, lost {v.lost:,}, "
            f"duplicated {v.duplicated:,}, reordered {v.reordered:,}",
        )
    c = r.connect
    t.add_row(
        "connect",
        f"{c.held:,} held of {c.connections:,} ({c.failed:,} failed) at {fmt_rate(c.rate)}/s; "
        f"time p50 {fmt_ns(c.time_ns.p50)} p99 {fmt_ns(c.time_ns.p99)} max {fmt_ns(c.time_ns.max)}",
    )
    if c.first_error:
        t.add_row("  first error", c.first_error)
    if r.server.rss_after and r.params.scenario is Scenario.connect:
        t.add_row(
            "server memory",
            f"{r.server.rss_after / 2**20:,.1f} MiB resident "
            f"({r.server.per_connection:,} B per connection)",
        )
    t.add_row("disconnects", f"{r.disconnects:,} (connections the server closed mid-run)")
    if r.reconnects:
        t.add_row("reconnects", f"{r.reconnects:,} (resumed on another node of the cluster)")
    if r.server_said:
        t.add_row("  server said", r.server_said)
    if r.refused:
        t.add_row(
            "refused",
            f"[red]{r.refused:,} publishes refused by the server[/] (a rate limit? start it "
            "with --rate 0, or bench below its limit with --rate)",
        )
    return t


def sweep_table(param: str, values: list[str], runs: list[RunResult]) -> Table:
    first = runs[0]
    t = Table(title=f"chatctl bench sweep of {param}: {describe(first.params)} → {first.target}")
    for col in (param, "pub/s", "deliv/s", "MB/s", "p50 ms", "p99 ms", "p99.9", "verified"):
        t.add_column(col, justify="right", no_wrap=True)
    for value, r in zip(values, runs, strict=True):
        lat = r.latency_ns
        t.add_row(
            value,
            fmt_short(r.publish.rate),
            fmt_short(r.delivery.rate),
            f"{r.delivery.mb_per_s:,.1f}",
            fmt_ms(lat.p50),
            fmt_ms(lat.p99),
            fmt_ms(lat.p99_9),
            _verdict(r),
        )
    return t


def _verdict(r: RunResult) -> str:
    v = r.verification
    if v.ok:
        return "ok"
    return f"[red]lost {v.lost:,} dup {v.duplicated:,} reord {v.reordered:,}[/]"


def to_json(runs: list[RunResult], sweep: tuple[str, list[str]] | None) -> dict[str, Any]:
    if sweep is None:
        return runs[0].as_json()
    return {
        "schema": SWEEP_SCHEMA,
        "param": sweep[0],
        "values": sweep[1],
        "runs": [r.as_json() for r in runs],
    }


def write_json(runs: list[RunResult], sweep: tuple[str, list[str]] | None, out: TextIO) -> None:
    json.dump(to_json(runs, sweep), out, indent=2)
    out.write("\n")


def write_csv(runs: list[RunResult], path: Path) -> None:
    """One row per run: the JSON fields flattened to dotted names."""
    rows = [flatten(r.as_json()) for r in runs]
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def print_tables(runs: list[RunResult], sweep: tuple[str, list[str]] | None) -> None:
    console = Console(file=sys.stdout)
    if sweep is None:
        console.print(result_table(runs[0]))
    else:
        console.print(sweep_table(sweep[0], sweep[1], runs))
