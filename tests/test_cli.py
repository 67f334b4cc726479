"""The command line itself, run as a real subprocess."""

from __future__ import annotations

import subprocess

from chatctl import __version__
from chatctl.errors import ExitCode
from tests.servers import run_chatctl


def chatctl(*args: str) -> subprocess.CompletedProcess[str]:
    return run_chatctl(*args)


def test_version() -> None:
    result = chatctl("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"chatctl {__version__}"


def test_help_lists_every_command() -> None:
    result = chatctl("--help")
    assert result.returncode == 0
    for command in ("serve", "join", "send", "bench", "bot"):
        assert command in result.stdout


def test_bad_option_is_a_usage_error() -> None:
    result = chatctl("serve", "--port", "99999")
    assert result.returncode == ExitCode.USAGE
    assert "Traceback" not in result.stderr
