"""The command line itself, run as a real subprocess."""

from __future__ import annotations

import enum
import os
import subprocess
from pathlib import Path

import pytest
from click.testing import Result
from typer.testing import CliRunner

from chatctl import __version__
from chatctl.bench.params import Params, Scenario
from chatctl.bot.config import BackendName, BotConfig, OnFailure
from chatctl.cli import app
from chatctl.errors import ExitCode
from chatctl.protocol import DEFAULT_HOST, DEFAULT_PORT
from chatctl.server.config import ServerConfig
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
    for command in ("serve", "join", "send", "bench", "bot", "accounts"):
        assert command in result.stdout


def test_bad_option_is_a_usage_error() -> None:
    result = chatctl("serve", "--port", "99999")
    assert result.returncode == ExitCode.USAGE
    assert "Traceback" not in result.stderr


# -- the option layer: defaults come from the config objects, closed choices are enums ----------


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> dict[str, object]:
    """Run commands in-process with the library call replaced: what the CLI would pass to it.
    No CHATCTL_* variable from the environment may leak into the defaults."""
    for name in list(os.environ):
        if name.startswith("CHATCTL_"):
            monkeypatch.delenv(name)
    got: dict[str, object] = {}

    def serve(config: ServerConfig) -> int:
        got["serve"] = config
        return 0

    def bench(params: Params, **kwargs: object) -> int:
        got["bench"] = params
        got["bench_kwargs"] = kwargs
        return 0

    def bot(config: BotConfig) -> int:
        got["bot"] = config
        return 0

    monkeypatch.setattr("chatctl.server.main.serve", serve)
    monkeypatch.setattr("chatctl.bench.command.run_bench", bench)
    monkeypatch.setattr("chatctl.bot.runner.run_bot", bot)
    return got


def invoke(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(app, list(args), env=env)


def test_serve_defaults_are_the_server_config_defaults(captured: dict[str, object]) -> None:
    assert invoke("serve").exit_code == 0
    assert captured["serve"] == ServerConfig()


def test_bench_defaults_are_the_params_defaults(captured: dict[str, object]) -> None:
    assert invoke("bench").exit_code == 0
    assert captured["bench"] == Params()
    assert captured["bench_kwargs"] == {
        "target": None,
        "tls_ca": None,
        "json_out": False,
        "csv_path": None,
        "sweep": None,
    }


def test_bot_defaults_are_the_bot_config_defaults(captured: dict[str, object]) -> None:
    assert invoke("bot").exit_code == 0
    assert captured["bot"] == BotConfig()
    assert BotConfig().port == ServerConfig().port == DEFAULT_PORT
    assert BotConfig().host == ServerConfig().hosts[0] == DEFAULT_HOST


def test_bot_takes_several_addresses_in_order(captured: dict[str, object]) -> None:
    from chatctl.address import Address

    result = invoke("bot", "chat://h1:1060, h2,tls://[::1]:7", "--port", "9")
    assert result.exit_code == 0, result.output
    bot = captured["bot"]
    assert isinstance(bot, BotConfig)
    assert bot.servers == (Address("h1", 1060), Address("h2", 9), Address("::1", 7, True))
    assert (bot.host, bot.port, bot.tls) == ("h1", 1060, True)


@pytest.mark.parametrize(
    ("args", "env", "field", "value"),
    [
        (("--backend", "openai"), {}, "backend", BackendName.openai),
        ((), {"CHATCTL_BOT_BACKEND": "local"}, "backend", BackendName.local),
        (("--on-failure", "silent"), {}, "on_failure", OnFailure.silent),
        ((), {"CHATCTL_BOT_ON_FAILURE": "silent"}, "on_failure", OnFailure.silent),
    ],
)
def test_bot_choices_arrive_as_enums(
    captured: dict[str, object],
    args: tuple[str, ...],
    env: dict[str, str],
    field: str,
    value: enum.Enum,
) -> None:
    assert invoke("bot", *args, env=env).exit_code == 0
    assert getattr(captured["bot"], field) is value


@pytest.mark.parametrize("scenario", list(Scenario))
def test_every_scenario_is_accepted(captured: dict[str, object], scenario: Scenario) -> None:
    assert invoke("bench", scenario.value).exit_code == 0
    bench = captured["bench"]
    assert isinstance(bench, Params) and bench.scenario is scenario


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (
            ("bot", "--backend", "gpt"),
            {},
            "unknown backend 'gpt': choose one of offline, openai, local",
        ),
        (("bot",), {"CHATCTL_BOT_BACKEND": "Offline"}, "unknown backend 'Offline'"),
        (
            ("bot", "--on-failure", "shout"),
            {},
            "--on-failure must be one of notice, silent, not 'shout'",
        ),
        (
            ("bot",),
            {"CHATCTL_BOT_ON_FAILURE": "loud"},
            "--on-failure must be one of notice, silent",
        ),
        (
            ("bench", "sideways"),
            {},
            "unknown scenario 'sideways': expected fanout, room, rooms, connect",
        ),
        (("serve", "--log-format", "xml"), {}, "'xml' is not one of 'rich', 'json'"),
    ],
)
def test_a_value_outside_a_closed_choice_is_a_usage_error(
    captured: dict[str, object], args: tuple[str, ...], env: dict[str, str], message: str
) -> None:
    result = invoke(*args, env=env)
    assert result.exit_code == ExitCode.USAGE
    assert message in " ".join(result.stderr.replace("│", " ").split())
    assert not captured  # refused before the library was called


def test_bot_takes_a_saved_servers_address_rooms_and_tls_but_not_the_users_nick(
    captured: dict[str, object], tmp_path: Path
) -> None:
    from chatctl.address import Address

    (tmp_path / "chatctl").mkdir()
    (tmp_path / "chatctl" / "config.toml").write_text(
        '[servers.work]\naddress = "tls://h1:7000, tls://h2"\nnick = "alice"\n'
        'account = "alice"\nrooms = ["dev"]\ntls-ca = "ca.pem"\n',
        encoding="utf-8",
    )
    result = invoke("bot", "-s", "work", env={"XDG_CONFIG_HOME": str(tmp_path)})
    assert result.exit_code == 0, result.output
    bot = captured["bot"]
    assert isinstance(bot, BotConfig)
    assert bot.servers == (Address("h1", 7000, True), Address("h2", DEFAULT_PORT, True))
    assert bot.rooms == ("dev",)
    assert bot.tls_ca == str(tmp_path / "chatctl" / "ca.pem")
    assert (bot.brain.nick, bot.account) == (BotConfig().brain.nick, "")  # the bot is not alice
    result = invoke("bot", "work", "-r", "ops", env={"XDG_CONFIG_HOME": str(tmp_path)})
    assert result.exit_code == 0, result.output
    bot = captured["bot"]
    assert isinstance(bot, BotConfig) and bot.rooms == ("ops",) and bot.host == "h1"


@pytest.mark.parametrize(
    ("variable", "value", "field", "expected"),
    [
        ("CHATCTL_BENCH_PUB", "3", "publishers", 3),
        ("CHATCTL_BENCH_SUB", "7", "subscribers", 7),
        ("CHATCTL_BENCH_MSGS", "5", "messages", 5),
        ("CHATCTL_BENCH_CLIENTS", "4", "clients", 4),
        ("CHATCTL_BENCH_SIZE", "64", "size", 64),
        ("CHATCTL_BENCH_WORKERS", "1", "workers", 1),
        ("CHATCTL_BENCH_SCENARIO", "rooms", "scenario", Scenario.rooms),
    ],
)
def test_bench_options_have_variables(
    captured: dict[str, object], variable: str, value: str, field: str, expected: object
) -> None:
    assert invoke("bench", env={variable: value}).exit_code == 0
    assert getattr(captured["bench"], field) == expected


def test_bench_sweep_flag_beats_its_variable(captured: dict[str, object]) -> None:
    result = invoke("bench", "--sweep", "sub=1,10", env={"CHATCTL_BENCH_SWEEP": "pub=9"})
    assert result.exit_code == 0, result.output
    assert captured["bench_kwargs"]["sweep"] == "sub=1,10"  # type: ignore[index]
