"""`chatctl bench --json` and `--csv` match the schema documented in docs/benchmarks.md."""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pexpect

from chatctl.bench.results import SCHEMA, SWEEP_SCHEMA, flatten
from tests.servers import dies_with_parent

DOC = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
ROW = re.compile(r"^\| `([a-z0-9_.]+)` \| (str|int|float|bool) \|")
TYPES: dict[str, type] = {"str": str, "int": int, "float": float, "bool": bool}
SWEEP_ARGS = (
    "bench",
    "fanout",
    "--sub",
    "2",
    "--msgs",
    "200",
    "-w",
    "1",
    "--sweep",
    "sub=1,2",
)
TABLE_ARGS = ("bench", "fanout", "--sub", "1", "--msgs", "50", "-w", "1")


def documented_fields() -> list[tuple[str, str]]:
    text = DOC.read_text()
    section = text.split("## JSON output", 1)[1].split("\n## ", 1)[0]
    fields = [(m.group(1), m.group(2)) for m in map(ROW.match, section.splitlines()) if m]
    assert len(fields) > 40, "the JSON field table in docs/benchmarks.md was not found"
    return fields


def check_run(run: dict[str, Any], fields: list[tuple[str, str]]) -> None:
    flat = flatten(run)
    assert list(flat) == [name for name, _ in fields]
    for name, kind in fields:
        value = flat[name]
        if kind == "float":
            assert isinstance(value, int | float) and not isinstance(value, bool), name
        else:
            assert type(value) is TYPES[kind], (name, value)
    assert run["schema"] == SCHEMA


def test_json_and_csv_match_the_documented_schema(tmp_path: Path) -> None:
    fields = documented_fields()
    out = tmp_path / "runs.csv"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "chatctl",
            *SWEEP_ARGS,
            "--json",
            "--csv",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["schema"] == SWEEP_SCHEMA
    assert (data["param"], data["values"]) == ("subscribers", ["1", "2"])
    assert [r["params"]["subscribers"] for r in data["runs"]] == [1, 2]
    for run in data["runs"]:
        check_run(run, fields)
    with out.open(newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == [name for name, _ in fields]
    assert len(rows) == 3
    for row, run in zip(rows[1:], data["runs"], strict=True):
        assert row == [str(v) for v in flatten(run).values()]


def test_table_output_without_json() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "chatctl", *TABLE_ARGS],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    for word in ("publish", "delivery", "latency", "exactly once, in order", "lost 0"):
        assert word in proc.stdout


def test_live_display_on_a_terminal() -> None:
    """On a terminal the live progress runs (and is cleared) before the final table."""
    child = pexpect.spawn(
        sys.executable,
        ["-m", "chatctl", *TABLE_ARGS[:-4], "--msgs", "0", "--duration", "1.5"],
        encoding="utf-8",
        timeout=120,
        dimensions=(40, 120),
        preexec_fn=dies_with_parent(),
    )
    try:
        child.expect("delivered [0-9,]+ \\([0-9,]+/s\\)")  # the live rate line
        child.expect(pexpect.EOF)
        output = child.before or ""
    finally:
        child.close()
    assert child.exitstatus == 0
    assert "exactly once, in order" in output and "Traceback" not in output
