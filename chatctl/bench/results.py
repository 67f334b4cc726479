"""A run's figures: merged from the workers' measurements, and flattened for JSON and CSV.

docs/benchmarks.md documents every field; tests/test_bench_output.py keeps the two in step.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from chatctl.bench.histogram import Histogram, Summary
from chatctl.bench.params import Params
from chatctl.bench.plan import Plan, WorkerResult

SCHEMA = "chatctl-bench/1"
SWEEP_SCHEMA = "chatctl-bench-sweep/1"
NS = 1_000_000_000


@dataclass(frozen=True, kw_only=True)
class Spread:
    """Messages per second of the individual clients."""

    min: float
    avg: float
    max: float
    stddev: float

    @classmethod
    def of(cls, rates: list[float]) -> Spread:
        if not rates:
            return cls(min=0.0, avg=0.0, max=0.0, stddev=0.0)
        avg = sum(rates) / len(rates)
        var = sum((r - avg) ** 2 for r in rates) / len(rates)
        return cls(min=min(rates), avg=avg, max=max(rates), stddev=math.sqrt(var))


@dataclass(frozen=True, kw_only=True)
class Flow:
    messages: int
    rate: float
    mb_per_s: float
    per_client: Spread


@dataclass(frozen=True, kw_only=True)
class Verification:
    expected: int
    delivered: int
    unique: int
    lost: int
    duplicated: int
    reordered: int
    ok: bool


@dataclass(frozen=True, kw_only=True)
class Connect:
    connections: int
    held: int
    failed: int
    rate: float
    time_ns: Summary
    first_error: str


@dataclass(frozen=True, kw_only=True)
class Server:
    pid: int
    rss_before: int
    rss_after: int
    per_connection: int
    # CPU time (user + system) the server used from the start of publishing to the end of
    # the run, and per message published in that time (0: unknown, or nothing published).
    cpu_s: float = 0.0
    cpu_per_message_ns: int = 0


@dataclass(frozen=True, kw_only=True)
class RunResult:
    scenario: str
    target: str
    kind: str
    launched: bool
    params: Params
    publish: Flow
    delivery: Flow
    latency_ns: Summary
    verification: Verification
    connect: Connect
    disconnects: int
    reconnects: int
    refused: int
    server_said: str
    server: Server
    elapsed_s: float

    def as_json(self) -> dict[str, Any]:
        out = asdict(self)
        # `room` (--room) is left out: schema 1's fields and CSV columns stay as they were;
        # the rooms a run used are named on stderr (bench/command.py kept_note).
        out["params"] = {k: v for k, v in out["params"].items() if k not in ("scenario", "room")}
        return {"schema": SCHEMA, **out}


def flatten(obj: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested JSON to dotted keys, in order: the CSV row."""
    out: dict[str, Any] = {}
    for key, value in obj.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _window_rate(count: int, first: list[int], last: list[int]) -> float:
    starts = [f for f in first if f]
    ends = [t for t in last if t]
    if not count or not starts or not ends:
        return 0.0
    return count * NS / max(max(ends) - min(starts), 1000)


def _client_rates(counts: list[int], first: list[int], last: list[int]) -> list[float]:
    return [
        n * NS / max(t - f, 1000) if n and f and t else 0.0
        for n, f, t in zip(counts, first, last, strict=True)
    ]


def merge(
    plan: Plan,
    parts: list[WorkerResult],
    *,
    elapsed_s: float,
    server: Server,
) -> RunResult:
    params = plan.params
    size = params.size

    def cat(name: str) -> list[int]:
        return [x for part in parts for x in getattr(part, name)]

    latency, connect_time = Histogram(), Histogram()
    for part in parts:
        if part.latency_hist is not None:
            latency.merge(Histogram.from_wire(part.latency_hist))
        if part.connect_hist is not None:
            connect_time.merge(Histogram.from_wire(part.connect_hist))

    pub_n, pub_first, pub_last = cat("pub_measured"), cat("pub_first_ns"), cat("pub_last_ns")
    sub_n, sub_first, sub_last = cat("measured"), cat("first_ns"), cat("last_ns")
    pub_rate = _window_rate(sum(pub_n), pub_first, pub_last)
    sub_rate = _window_rate(sum(sub_n), sub_first, sub_last)

    expected, unique = sum(cat("expected")), sum(cat("unique"))
    duplicated, reordered = sum(cat("duplicated")), sum(cat("reordered"))
    lost = expected - unique

    connected = sum(p.connected for p in parts)
    firsts = [p.connect_first_ns for p in parts if p.connect_first_ns]
    lasts = [p.connect_last_ns for p in parts if p.connect_last_ns]
    connect_rate = connected * NS / max(max(lasts) - min(firsts), 1000) if firsts and lasts else 0.0
    return RunResult(
        scenario=str(params.scenario),
        target=",".join(t.url for t in plan.targets),
        kind=str(plan.target.kind),
        launched=plan.target.launched,
        params=params,
        publish=Flow(
            messages=sum(pub_n),
            rate=pub_rate,
            mb_per_s=pub_rate * size / 1e6,
            per_client=Spread.of(_client_rates(pub_n, pub_first, pub_last)),
        ),
        delivery=Flow(
            messages=sum(sub_n),
            rate=sub_rate,
            mb_per_s=sub_rate * size / 1e6,
            per_client=Spread.of(_client_rates(sub_n, sub_first, sub_last)),
        ),
        latency_ns=latency.summary(),
        verification=Verification(
            expected=expected,
            delivered=sum(cat("delivered")),
            unique=unique,
            lost=lost,
            duplicated=duplicated,
            reordered=reordered,
            ok=lost == 0 and duplicated == 0 and reordered == 0,
        ),
        connect=Connect(
            connections=connected + sum(p.failed for p in parts),
            held=connected,
            failed=sum(p.failed for p in parts),
            rate=connect_rate,
            time_ns=connect_time.summary(),
            first_error=next((p.first_error for p in parts if p.first_error), ""),
        ),
        disconnects=sum(p.disconnects for p in parts),
        reconnects=sum(p.reconnects for p in parts),
        refused=sum(p.refused for p in parts),
        server_said=next((p.server_said for p in parts if p.server_said), ""),
        server=server,
        elapsed_s=elapsed_s,
    )
