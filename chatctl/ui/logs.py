"""`chatctl join --log-dir DIR`: a plain-text log per room (and per direct-message partner)
and per day, written as the lines arrive.

`DIR/lobby.2026-03-03.log` for #lobby, `DIR/@bob.2026-03-03.log` for the conversation with
bob ('@' is in no room name, and '/' in no name at all, so a name never leaves DIR); the
day is the local one of each line's time. The lines are the screen's (screen.log_lines):
timestamped, peer text made safe, and a newline inside a message begins a marked
continuation line, so a log cannot be forged into showing a notice that never happened.

The directory is made 0700 (only the directories made here: an existing one is left as it
is) and each file 0600, appended to with O_APPEND and never followed through a symbolic
link. A write that fails turns logging off, once, and says why.
"""

from __future__ import annotations

import os
from datetime import date
from pathlib import Path

from chatctl.errors import ChatctlError, ExitCode

_FLAGS = (
    os.O_WRONLY
    | os.O_APPEND
    | os.O_CREAT
    | getattr(os, "O_NOFOLLOW", 0)
    | getattr(os, "O_CLOEXEC", 0)
)


def log_name(kind: str, name: str, day: date) -> str:
    """The file name of a room's (`kind` "room") or a partner's ("query") log for `day`."""
    who = name.casefold()
    if kind == "query":
        who = "@" + who
    return f"{who}.{day.isoformat()}.log"


class ChatLogs:
    """Appends lines to the log files under `directory`, made on first use."""

    def __init__(self, directory: Path | str) -> None:
        self.directory = Path(directory).expanduser()
        self.failed: str | None = None  # why logging stopped
        self._made = False

    def _make_directory(self) -> None:
        missing: list[Path] = []
        path = self.directory
        while not path.exists():
            missing.append(path)
            if path.parent == path:
                break
            path = path.parent
        for made in reversed(missing):
            made.mkdir(mode=0o700)
            os.chmod(made, 0o700)  # whatever the umask
        if not self.directory.is_dir():
            raise NotADirectoryError(f"{self.directory} is not a directory")
        self._made = True

    def check(self) -> None:
        """Make the directory now, so that a bad --log-dir is a usage error at start."""
        try:
            self._make_directory()
        except OSError as exc:
            raise ChatctlError(
                f"--log-dir {self.directory}: {exc.strerror or exc}", ExitCode.USAGE
            ) from None

    def write(self, kind: str, name: str, day: date, lines: list[str]) -> str | None:
        """Append `lines` to the log of `name` for `day`. Returns why logging just stopped
        (then it stays off), else None."""
        if self.failed is not None or not lines:
            return None
        path = self.directory / log_name(kind, name, day)
        try:
            if not self._made:
                self._make_directory()
            fd = os.open(path, _FLAGS, 0o600)
            try:
                os.write(fd, ("\n".join(lines) + "\n").encode("utf-8", "replace"))
            finally:
                os.close(fd)
        except OSError as exc:
            self.failed = f"logging stopped: {path}: {exc.strerror or exc}"
            return self.failed
        return None


__all__ = ["ChatLogs", "log_name"]
