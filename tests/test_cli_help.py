"""The command line's promises about itself: every option has a CHATCTL_* variable (or a
reason not to), `--help` fits 80 columns with each variable in full, the exit codes are listed
once (the root help and the README) and agree with errors.ExitCode, what Ctrl-C exits with is
what the README says, and `--sweep` takes the options' own names."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
import typer.main
from rich.cells import cell_len

from chatctl import options
from chatctl.bench.command import SWEEP_OPTIONS, parse_sweep
from chatctl.bench.params import SWEEPABLE
from chatctl.cli import app
from chatctl.errors import ExitCode
from tests.servers import serve_process

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
SERVE_HELP_LINES_BEFORE = 239  # `COLUMNS=80 chatctl serve --help` before the help panels


def commands() -> Iterator[tuple[str, click.Command]]:
    """Every command of the app, by its path (`accounts add`), the root included as ''."""

    def walk(command: click.Command, path: str) -> Iterator[tuple[str, click.Command]]:
        yield path, command
        if isinstance(command, click.Group):
            for name, sub in command.commands.items():
                yield from walk(sub, f"{path} {name}".strip())

    yield from walk(typer.main.get_command(app), "")


COMMANDS = dict(commands())
# Typer's own options on the root (shell completion): not ours to name.
TYPER_OWN = {"install_completion", "show_completion"}


def help_text(path: str) -> str:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CHATCTL_")}
    result = subprocess.run(
        [sys.executable, "-m", "chatctl", *path.split(), "--help"],
        env={**clean, "COLUMNS": "80", "NO_COLOR": "1"},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


# -- environment variables ----------------------------------------------------------------------------


def test_every_option_has_a_chatctl_variable_or_a_reason() -> None:
    missing = []
    for path, command in COMMANDS.items():
        for param in command.params:
            if param.name in options.ENV_EXEMPT or param.name in TYPER_OWN:
                continue
            envvar = getattr(param, "envvar", None)
            if not (isinstance(envvar, str) and re.fullmatch(r"CHATCTL_[A-Z0-9_]+", envvar)):
                missing.append(f"chatctl {path} {param.opts[0]}")
    assert not missing, f"options without a CHATCTL_* variable: {missing}"


def test_every_exemption_is_used_and_says_why() -> None:
    names = {param.name for command in COMMANDS.values() for param in command.params}
    for name, reason in options.ENV_EXEMPT.items():
        assert name in names, f"ENV_EXEMPT names {name!r}, which no command has"
        assert len(reason) > 10


def test_a_variable_means_one_thing_in_one_command() -> None:
    for path, command in COMMANDS.items():
        seen: dict[str, str] = {}
        for param in command.params:
            envvar = getattr(param, "envvar", None)
            if isinstance(envvar, str):
                assert envvar not in seen, f"chatctl {path}: {envvar} for {seen.get(envvar)} too"
                seen[envvar] = param.name or ""


def test_the_variables_the_issue_found_missing_work(server: tuple[str, int]) -> None:
    from chatctl.client.connection import Client
    from chatctl.protocol import Message
    from tests.clients import joined, wait_for
    from tests.servers import run_chatctl

    watcher: Client
    with joined(server, "watcher", "lobby") as watcher:
        result = run_chatctl(
            "send",
            "-p",
            str(server[1]),
            "waves",
            env={"CHATCTL_SEND_COUNT": "2", "CHATCTL_SEND_ME": "1"},
        )
        assert result.returncode == 0, result.stderr
        got = [wait_for(watcher, Message) for _ in range(2)]
        assert all(m.action and m.text == "waves" for m in got)


# -- help that fits ------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", list(COMMANDS))
def test_help_fits_80_columns_with_every_variable_in_full(path: str) -> None:
    text = help_text(path)
    assert "…" not in text  # nothing cut short
    for line in text.splitlines():
        assert cell_len(line) <= 80, line
    words = set(re.findall(r"[\w$]+", text))
    for param in COMMANDS[path].params:
        envvar = getattr(param, "envvar", None)
        if isinstance(envvar, str) and not getattr(param, "hidden", False):
            assert envvar in words, f"chatctl {path} --help: {envvar} is not shown whole"


def test_options_have_short_help_in_panels() -> None:
    for path, command in COMMANDS.items():
        for param in command.params:
            if isinstance(param, click.Option) and param.name not in TYPER_OWN:
                assert param.help and len(param.help) <= 70, (path, param.name, param.help)
                if path and param.name != "help":
                    assert getattr(param, "rich_help_panel", None), (path, param.name)


def test_serve_help_is_much_shorter() -> None:
    lines = help_text("serve").splitlines()
    assert len(lines) <= SERVE_HELP_LINES_BEFORE // 2, len(lines)
    panels = [line for line in lines if line.startswith("╭─ ")]
    assert len(panels) >= 8  # connection, limits, timeouts, rates, data, TLS, accounts, logging


def test_exit_codes_are_listed_once_in_the_root_help() -> None:
    root = help_text("")
    for code in ExitCode:
        assert re.search(rf"(^|\s){code.value}\s\s", root), code
    for path in COMMANDS:
        if path:
            assert "Exit codes" not in help_text(path), path


def test_the_readme_lists_the_exit_codes_once_and_right() -> None:
    assert README.count("### Exit codes") == 1
    section = README.split("### Exit codes", 1)[1].split("\n## ", 1)[0]
    codes = [int(m) for m in re.findall(r"^\| (\d+) \|", section, re.M)]
    assert codes == [code.value for code in ExitCode]


def test_the_readme_says_every_option_has_a_variable() -> None:
    # True by test_every_option_has_a_chatctl_variable_or_a_reason; the README must say so.
    assert "can also be set with a `CHATCTL_*` environment variable" in " ".join(README.split())


# -- Ctrl-C: what the README says ---------------------------------------------------------------------


def interrupted(*args: str, ready: float = 1.5) -> int:
    """The exit code of `chatctl ARGS` sent SIGINT (Ctrl-C) once it is going: `ready` seconds
    in (an interruption of its start-up is not the case here). Its stdin is a pipe left open,
    never written to."""
    with subprocess.Popen(
        [sys.executable, "-m", "chatctl", *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    ) as proc:
        time.sleep(ready)
        proc.send_signal(signal.SIGINT)
        return proc.wait(timeout=20)


def test_ctrl_c_interrupts_send_and_join_in_a_pipe_with_130() -> None:
    assert "| 130 | interrupted by Ctrl-C" in README
    with socket.socket() as silent:  # accepts, never answers: send waits for the handshake
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = str(silent.getsockname()[1])
        code = interrupted("send", "-p", port, "--connect-timeout", "30", "hi")
        assert code == ExitCode.INTERRUPTED
    with serve_process() as server:  # join waits for lines on its stdin
        code = interrupted("join", "-p", str(server.port), "-n", "piper", ready=2.5)
        assert code == ExitCode.INTERRUPTED


def test_ctrl_c_stops_the_server_cleanly_with_0() -> None:
    with serve_process() as server:
        server.proc.send_signal(signal.SIGINT)
        server.wait_for_line("server stopped")
        assert server.proc.wait(timeout=20) == 0
    # The interactive join's Ctrl-C, a way to leave like Ctrl-D and /quit, exits 0:
    # tests/test_join_tui.py, test_ctrl_d_and_ctrl_c_leave_cleanly.


# -- bench --sweep takes the options' names ------------------------------------------------------------


def test_sweep_names_are_the_option_names() -> None:
    assert sorted(SWEEP_OPTIONS.values()) == sorted(SWEEPABLE)
    bench = COMMANDS["bench"]
    longs = {opt.removeprefix("--") for p in bench.params for opt in p.opts if opt.startswith("--")}
    assert set(SWEEP_OPTIONS) <= longs  # each is an option of bench
    for option, field in SWEEP_OPTIONS.items():
        assert parse_sweep(f"{option}=1,2") == (field, ["1", "2"])
        assert parse_sweep(f"--{option}=3") == (field, ["3"])
        assert parse_sweep(f"{field}=4") == (field, ["4"])  # the old names still work


def test_the_docs_sweep_with_option_names() -> None:
    texts = [README, *(p.read_text(encoding="utf-8") for p in (ROOT / "docs").glob("*.md"))]
    texts.append((ROOT / "benchmarks" / "suite.py").read_text(encoding="utf-8"))
    names = [m for text in texts for m in re.findall(r"--sweep[\s=\"',]+([a-z_]+)=", text)]
    assert names, "no --sweep example found"
    assert set(names) <= set(SWEEP_OPTIONS), names
