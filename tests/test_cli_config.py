"""Saved servers through the real command line: `chatctl config`, `chatctl join NAME`,
`chatctl send -s NAME`, each a subprocess with its own $XDG_CONFIG_HOME and no CHATCTL_*
variable but those a test sets, against a real server. The precedence is tested a layer at a
time: a flag > a CHATCTL_* variable > the saved server > the default."""

from __future__ import annotations

import getpass
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from chatctl.client.connection import Client
from chatctl.errors import ExitCode
from chatctl.protocol import Message, Notice
from tests.clients import joined, wait_for
from tests.servers import free_port, running_server


class Home:
    """An isolated config directory, and chatctl run with it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.path = root / "chatctl" / "config.toml"

    def write(self, text: str) -> Path:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(text, encoding="utf-8")
        return self.path

    def run(
        self, *args: str, env: dict[str, str] | None = None, stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        clean = {k: v for k, v in os.environ.items() if not k.startswith("CHATCTL_")}
        return subprocess.run(
            [sys.executable, "-m", "chatctl", *args],
            env={**clean, "XDG_CONFIG_HOME": str(self.root), **(env or {})},
            input=stdin,
            stdin=None if stdin is not None else subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )


@pytest.fixture
def home(tmp_path: Path) -> Home:
    return Home(tmp_path / "xdg")


@pytest.fixture
def work(home: Home, server: tuple[str, int]) -> Home:
    """A config file whose server `work` is the test server: nick alice, rooms dev and ops."""
    home.write(
        "# saved servers\n"
        "[servers.work]\n"
        f'address = "127.0.0.1:{server[1]}"\n'
        'nick = "alice"\n'
        'rooms = ["dev", "ops"]\n'
        "\n"
        '[servers."büro"]\n'
        f'address = ["chat://127.0.0.1:{server[1]}"]\n'
        'nick = "bernd"\n'
    )
    return home


@pytest.fixture
def dev(server: tuple[str, int]) -> Iterator[Client]:
    """A client in #dev and #lobby: it sees what goes to either."""
    with joined(server, "watcher", "dev", "lobby") as client:
        yield client


def receipt(result: subprocess.CompletedProcess[str]) -> dict[str, object]:
    assert result.returncode == ExitCode.OK, result.stderr
    value = json.loads(result.stdout)
    assert isinstance(value, dict)
    return value


def one_line_error(result: subprocess.CompletedProcess[str], code: ExitCode) -> str:
    assert result.returncode == code, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


# -- chatctl config ----------------------------------------------------------------------------------


def test_config_shows_where_the_file_is_and_what_it_holds(
    work: Home, server: tuple[str, int]
) -> None:
    result = work.run("config")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"{work.path}: 2 saved servers",
        "",
        "work",
        f"  address          127.0.0.1:{server[1]}",
        "  nick             alice",
        "  rooms            dev, ops",
        "büro",
        f"  address          chat://127.0.0.1:{server[1]}",
        "  nick             bernd",
    ]
    shown = json.loads(work.run("config", "--json").stdout)
    assert shown == {
        "path": str(work.path),
        "exists": True,
        "servers": {
            "work": {
                "address": f"127.0.0.1:{server[1]}",
                "nick": "alice",
                "rooms": ["dev", "ops"],
            },
            "büro": {"address": f"chat://127.0.0.1:{server[1]}", "nick": "bernd"},
        },
    }
    assert work.run("config", "path").stdout == f"{work.path}\n"


def test_config_without_a_file_says_so_and_how_to_start(home: Home) -> None:
    result = home.run("config")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"{home.path}: no such file, so no saved servers.")
    assert "[servers.work]\naddress = " in result.stdout
    assert json.loads(home.run("config", "--json").stdout) == {
        "path": str(home.path),
        "exists": False,
        "servers": {},
    }
    assert home.run("config", "path").stdout == f"{home.path}\n"  # where it would be


def test_xdg_config_home_unset_means_dot_config(tmp_path: Path) -> None:
    clean = {k: v for k, v in os.environ.items() if k not in ("XDG_CONFIG_HOME",)}
    result = subprocess.run(
        [sys.executable, "-m", "chatctl", "config", "path"],
        env={**clean, "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.stdout == f"{tmp_path}/.config/chatctl/config.toml\n"


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ('[servers.work]\naddress = "h"\nnik = "alice"\n', 3, "unknown key 'nik' (did you mean"),
        ('[servers.work]\naddress = "h"\npassword = "hunter2"\n', 3, "set CHATCTL_PASSWORD"),
        ('[servers.work]\naddress = "h"\nrooms = "dev"\n', 3, "rooms must be an array"),
        ('[servers.work]\naddress = "h\n', 2, "not valid TOML"),
        ('[servers.work]\naddress = "h:0"\n', 2, "the port must be a number"),
    ],
)
def test_a_mistake_in_the_file_is_one_line_with_file_and_line(
    home: Home, text: str, line: int, words: str
) -> None:
    path = home.write(text)
    for args in (("config",), ("join", "work"), ("send", "-s", "work", "hi")):
        error = one_line_error(home.run(*args), ExitCode.USAGE)
        assert error.startswith(f"chatctl: {path}:{line}: "), error
        assert words in error
        assert "hunter2" not in error


def test_a_broken_file_does_not_stop_commands_that_name_no_saved_server(
    home: Home, server: tuple[str, int]
) -> None:
    home.write("this is not toml\n")
    result = home.run("send", "-p", str(server[1]), "--json", "hi")  # no HOST, no --server
    assert receipt(result)["room"] == "lobby"
    result = home.run("send", f"127.0.0.1:{server[1]}", "hi")  # an address is no name
    assert result.returncode == 0, result.stderr


# -- send -s NAME, join NAME ---------------------------------------------------------------------


def test_send_to_a_saved_server(work: Home, dev: Client) -> None:
    got = receipt(work.run("send", "-s", "work", "--json", "deployed"))
    assert (got["nick"], got["room"]) == ("alice", "dev")  # send: the first saved room
    message = wait_for(dev, Message)
    assert (message.room, message.sender, message.text) == ("dev", "alice", "deployed")
    got = receipt(work.run("send", "work", "--json", "by name"))  # HOST names it too
    assert (got["nick"], got["room"]) == ("alice", "dev")
    got = receipt(work.run("send", "büro", "--json", "grüß gott"))
    assert (got["nick"], got["room"]) == ("bernd", "lobby")


def test_join_a_saved_server_in_a_pipe(work: Home, dev: Client) -> None:
    result = work.run("join", "work", "--format", "json", stdin="hello from the pipe\n")
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    joins = [r["room"] for r in records if r["type"] == "notice" and r["kind"] == "joined"]
    assert joins == ["dev", "ops"]
    notice = wait_for(dev, Notice, lambda n: n.kind == "joined")
    assert (notice.nick, notice.room) == ("alice", "dev")
    message = wait_for(dev, Message)
    assert (message.room, message.sender, message.text) == ("dev", "alice", "hello from the pipe")


def test_join_with_server_option_and_variable(work: Home, dev: Client) -> None:
    for args, env in ((("join", "-s", "work"), {}), (("join",), {"CHATCTL_SERVER": "work"})):
        result = work.run(*args, "--format", "json", env=env, stdin="hi\n")
        assert result.returncode == 0, result.stderr
        message = wait_for(dev, Message)
        assert (message.room, message.sender) == ("dev", "alice")


# -- precedence, a layer at a time ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "env", "nick", "room"),
    [
        ((), {}, "alice", "dev"),  # the saved server
        ((), {"CHATCTL_NICK": "envy", "CHATCTL_ROOM": "ops"}, "envy", "ops"),  # variables beat it
        (
            ("-n", "flagg", "-r", "lobby"),
            {"CHATCTL_NICK": "envy", "CHATCTL_ROOM": "ops"},
            "flagg",
            "lobby",
        ),
    ],
    ids=["saved", "variable", "flag"],
)
def test_flag_beats_variable_beats_saved_server(
    work: Home, args: tuple[str, ...], env: dict[str, str], nick: str, room: str
) -> None:
    got = receipt(work.run("send", "-s", "work", "--json", *args, "hi", env=env))
    assert (got["nick"], got["room"]) == (nick, room)


def test_without_a_saved_server_the_defaults_apply(work: Home, server: tuple[str, int]) -> None:
    got = receipt(work.run("send", "-p", str(server[1]), "--json", "hi"))
    assert (got["nick"], got["room"]) == (getpass.getuser(), "lobby")


def test_the_saved_address_beats_chatctl_host_but_not_a_typed_address(
    work: Home, server: tuple[str, int]
) -> None:
    dead = f"127.0.0.1:{free_port()}"
    # A saved server chosen by name is reached at its address, whatever $CHATCTL_HOST says.
    got = receipt(work.run("send", "-s", "work", "--json", "hi", env={"CHATCTL_HOST": dead}))
    assert got["nick"] == "alice"
    got = receipt(work.run("send", "work", "--json", "hi", env={"CHATCTL_HOST": dead}))
    assert got["nick"] == "alice"
    # An address typed out with --server: that server's settings at that address.
    error = one_line_error(work.run("send", "-s", "work", dead, "hi"), ExitCode.CONNECT)
    assert dead in error
    # $CHATCTL_SERVER yields to an address typed out: none of its settings apply.
    result = work.run(
        "send", f"127.0.0.1:{server[1]}", "--json", "hi", env={"CHATCTL_SERVER": "work"}
    )
    assert (receipt(result)["nick"], receipt(result)["room"]) == (getpass.getuser(), "lobby")


def test_a_name_that_is_not_saved_is_a_host(work: Home, server: tuple[str, int]) -> None:
    got = receipt(work.run("send", "-p", str(server[1]), "localhost", "--json", "hi"))
    assert got["nick"] == getpass.getuser()


def test_unknown_or_conflicting_saved_servers_are_usage_errors(work: Home) -> None:
    error = one_line_error(work.run("send", "-s", "wrok", "hi"), ExitCode.USAGE)
    assert error == (
        f"chatctl: {work.path}: no saved server 'wrok' (did you mean 'work'?) (saved: work, büro)"
    )
    error = one_line_error(work.run("join", "work", "-s", "büro"), ExitCode.USAGE)
    assert "HOST names the saved server 'work' and --server names 'büro'" in error
    error = one_line_error(work.run("join", env={"CHATCTL_SERVER": "nope"}), ExitCode.USAGE)
    assert "no saved server 'nope'" in error
    work.path.unlink()
    error = one_line_error(work.run("send", "-s", "work", "hi"), ExitCode.USAGE)
    assert error == f"chatctl: {work.path}: no saved server 'work': there is no such file"


def test_tls_settings_come_from_the_saved_server_and_yield_to_variables(
    home: Home, pki: dict[str, str]
) -> None:
    with running_server(tls_cert=pki["cert"], tls_key=pki["key"]) as (_, port):
        home.write(
            f'[servers.secure]\naddress = "tls://127.0.0.1:{port}"\ntls-ca = "{pki["ca"]}"\n'
            'nick = "tilda"\n'
        )
        assert receipt(home.run("send", "-s", "secure", "--json", "hi"))["nick"] == "tilda"
        missing = str(home.root / "nowhere.pem")
        error = one_line_error(
            home.run("send", "-s", "secure", "hi", env={"CHATCTL_TLS_CA": missing}),
            ExitCode.ERROR,
        )
        assert f"cannot use the CA file {missing}" in error
        result = home.run(
            "send",
            "-s",
            "secure",
            "--tls-ca",
            pki["ca"],
            "--json",
            "hi",
            env={"CHATCTL_TLS_CA": missing},
        )
        assert receipt(result)["nick"] == "tilda"
