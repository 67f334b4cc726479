"""`chatctl bench` as one library call: a run, or a sweep of runs, and its report."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path

from chatctl.bench.adapters import Kind
from chatctl.bench.local import local_server
from chatctl.bench.params import SWEEPABLE, Params, Scenario
from chatctl.bench.plan import BadBenchOption, Target, make_plan, parse_targets
from chatctl.bench.report import LiveDisplay, describe, print_tables, write_csv, write_json
from chatctl.bench.results import RunResult
from chatctl.bench.runner import run_plan
from chatctl.bench.tls import make_context
from chatctl.errors import ChatctlError, ExitCode

# What --sweep varies, by the name of its option (`--sweep sub=1,10`), the Params field it sets.
SWEEP_OPTIONS = {
    "pub": "publishers",
    "sub": "subscribers",
    "clients": "clients",
    "rooms": "rooms",
    "msgs": "messages",
    "size": "size",
    "rate": "rate",
    "workers": "workers",
}


def parse_sweep(text: str) -> tuple[str, list[str]]:
    """`--sweep OPTION=V1,V2,...` as (the Params field, the values). OPTION is the option's
    name (`sub`, or `--sub`); the field's own (`subscribers`) is taken too."""
    name, sep, values = text.partition("=")
    name = name.strip().removeprefix("--")
    field = SWEEP_OPTIONS.get(name, name if name in SWEEPABLE else None)
    items = [v.strip() for v in values.split(",") if v.strip()]
    if not sep or field is None or not items:
        raise BadBenchOption(
            f"--sweep {text!r}: expected OPTION=V1,V2,... with OPTION one of "
            f"{', '.join(SWEEP_OPTIONS)}"
        )
    for v in items:
        try:
            float(v)
        except ValueError:
            raise BadBenchOption(f"--sweep {text!r}: {v!r} is not a number") from None
    return field, items


def kept_note(rooms: list[str]) -> str:
    """The one line that says what a run against a live server leaves behind."""
    names = ", ".join(f"#{r}" for r in rooms[:5]) + (
        f" and {len(rooms) - 5} more" if len(rooms) > 5 else ""
    )
    which = "room" if len(rooms) == 1 else "rooms"
    return (
        f"note: the server keeps the messages of {which} {names} in its history (as long as "
        "its retention allows: a server cannot delete a room); --room NAME reuses one room"
    )


@contextlib.contextmanager
def _targets(
    target: str | None, tls_ca: str | None, size: int
) -> Iterator[tuple[tuple[Target, ...], int | None]]:
    if target is None:
        with local_server(max_text=size) as (t, pid):
            yield (t,), pid
        return
    targets = parse_targets(target, tls_ca)
    if targets[0].tls:
        make_context(targets[0].tls_ca)  # an unusable CA file fails here, not in every worker
    yield targets, None


def run_series(
    params: list[Params],
    target: str | None,
    tls_ca: str | None = None,
    kept: list[str] | None = None,
) -> list[RunResult]:
    """Run each parameter set in turn against one target (a local server is started once).
    The rooms whose messages a live chatctl server keeps in its history are added to `kept`."""
    runs = []
    with _targets(target, tls_ca, max(p.size for p in params)) as ((t, *others), pid):
        for p in params:
            plan = make_plan(p, t, tuple(others))
            if kept is not None and t.kind is Kind.chatctl and not t.launched:
                kept.extend(r for r in plan.rooms if r not in kept)
            total = 0 if not p.messages else plan.n_pubs * p.messages
            with LiveDisplay(p, total, describe(p)) as live:
                runs.append(run_plan(plan, server_pid=pid, progress=live.update))
    return runs


def run_bench(
    base: Params,
    *,
    target: str | None,
    tls_ca: str | None = None,
    json_out: bool,
    csv_path: Path | None,
    sweep: str | None,
) -> int:
    """Run `base` (or the series `sweep` makes of it), report it; ExitCode.LOST on any loss."""
    if csv_path is not None and not csv_path.parent.is_dir():
        # Say so before the run, not after minutes of load.
        raise BadBenchOption(f"--csv {str(csv_path)!r}: no such directory {str(csv_path.parent)!r}")
    series = parse_sweep(sweep) if sweep else None
    params = [base.with_value(series[0], float(v)) for v in series[1]] if series else [base]
    kept: list[str] = []
    runs = run_series(params, target, tls_ca, kept)
    if json_out:
        write_json(runs, series, sys.stdout)
    else:
        print_tables(runs, series)
    if csv_path is not None:
        try:
            write_csv(runs, csv_path)
        except OSError as exc:
            raise ChatctlError(f"cannot write --csv {str(csv_path)!r}: {exc.strerror}") from None
    if kept:
        print(kept_note(kept), file=sys.stderr)
    if any(not r.verification.ok for r in runs if r.params.scenario is not Scenario.connect):
        return int(ExitCode.LOST)
    return 0
