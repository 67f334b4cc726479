"""The server's log: a rich console log for people, or JSON Lines for machines.

Every line has an event name and a message; the JSON form adds the fields as keys. The address
the server listens on is always logged as `listening on HOST:PORT` (event "listening", with
"host" and "port" fields in JSON), which is how scripts and tests find a `--port 0` server.
"""

from __future__ import annotations

import json
import re
import sys
import time
from collections.abc import Mapping
from typing import TextIO

from rich.console import Console
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}
_STYLES = {"debug": "dim", "info": "green", "warning": "yellow", "error": "bold red"}
# Control characters from clients (a quit reason, say) must not reach a terminal raw.
_PRINTABLE = {c: f"\\x{c:02x}" for c in (*range(0x20), *range(0x7F, 0xA0))}


def _style_codes(console: Console, style: str) -> tuple[str, str]:
    """The escape codes that open and close `style` on this console ("" when not a colour
    terminal), so that a log line is one string format instead of a rich render."""
    with console.capture() as capture:
        console.print(Text("\x01", style=style), end="")
    before, _, after = capture.get().partition("\x01")
    return before, after


def _shown(value: object) -> str:
    """A banner value for people: 100,000 rather than 100000, 10 rather than 10.0."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    return f"{value:,}" if isinstance(value, int) else f"{value:,g}"


# How a listener's address appears in the log, for tools that start a server on port 0
# (bench, tests): `listening on 127.0.0.1:PORT`, `listening on [::1]:PORT`.
_LISTENING = re.compile(r"listening on (?:\[([0-9A-Fa-f:.%a-z]+)\]|([^\s:\[\]\"]+)):(\d+)")


def find_listening(text: str) -> tuple[str, int] | None:
    """The first (host, port) a server log says it listens on, or None."""
    found = _LISTENING.search(text)
    if found is None:
        return None
    return found.group(1) or found.group(2), int(found.group(3))


class ServerLog:
    def __init__(self, level: str = "info", fmt: str = "rich", stream: TextIO | None = None):
        self.threshold = LEVELS[level]
        self.json = fmt == "json"
        self.stream = stream if stream is not None else sys.stderr
        self._console = (
            None
            if self.json
            else Console(file=self.stream, soft_wrap=True, highlight=False, emoji=False)
        )
        self._dim = ("", "")
        self._levels: dict[str, str] = {}
        if self._console is not None:
            self._dim = _style_codes(self._console, "dim")
            for name, style in _STYLES.items():
                start, end = _style_codes(self._console, style)
                self._levels[name] = f"{start}{name.upper():<7}{end}"

    def enabled(self, level: str) -> bool:
        return LEVELS[level] >= self.threshold

    def debug(self, event: str, message: str, **fields: object) -> None:
        if self.threshold <= 10:
            self._emit("debug", event, message, fields)

    def info(self, event: str, message: str, **fields: object) -> None:
        if self.threshold <= 20:
            self._emit("info", event, message, fields)

    def warning(self, event: str, message: str, **fields: object) -> None:
        if self.threshold <= 30:
            self._emit("warning", event, message, fields)

    def error(self, event: str, message: str, **fields: object) -> None:
        self._emit("error", event, message, fields)

    def listening(self, host: str, port: int, shown: str) -> None:
        """Logged at every level: it is how scripts find a `--port 0` server."""
        self._emit("info", "listening", f"listening on {shown}", {"host": host, "port": port})

    def banner(self, title: str, limits: Mapping[str, object]) -> None:
        """The start-up summary: every limit in force (the addresses follow as log lines). In
        JSON, the "start" event with the limits as a "limits" object of plain values."""
        if self.threshold > 20:
            return
        if self._console is None:
            self._emit("info", "start", title, {"limits": dict(limits)})
            return
        grid = Table.grid(padding=(0, 2))
        grid.add_column(style="cyan")
        grid.add_column()
        for key, value in limits.items():
            grid.add_row(key, _shown(value))
        self._console.print(Panel(grid, title=Text(title, style="bold"), expand=False))

    def _emit(self, level: str, event: str, message: str, fields: Mapping[str, object]) -> None:
        now = time.time()
        if self._console is None:
            record = {"ts": round(now, 3), "level": level, "event": event, "msg": message}
            record.update(fields)
            self.stream.write(json.dumps(record, default=str, ensure_ascii=False) + "\n")
            self.stream.flush()
            return
        stamp = time.strftime("%H:%M:%S", time.localtime(now))
        dim_start, dim_end = self._dim
        self.stream.write(
            f"{dim_start}{stamp}{dim_end} {self._levels[level]} {message.translate(_PRINTABLE)}\n"
        )
        trace = fields.get("traceback")
        if trace:  # a bug report: shown in full, one line at a time
            for line in str(trace).rstrip("\n").split("\n"):
                self.stream.write(f"    {line.translate(_PRINTABLE)}\n")
        self.stream.flush()
