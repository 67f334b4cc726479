"""The config file parser and the saved-server merge (chatctl/userconfig.py), without I/O:
property tests over files written from generated servers, keys and values."""

from __future__ import annotations

import json
import string
import tomllib
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from chatctl import userconfig as uc
from chatctl.errors import ExitCode
from chatctl.names import nick_problem

PATH = "/home/u/.config/chatctl/config.toml"


def toml_str(text: str) -> str:
    """`text` as a TOML basic string (JSON's escapes are TOML's, but for DEL)."""
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return toml_str(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{toml_str(k)} = {toml_value(v)}" for k, v in value.items()) + "}"
    return str(value)  # int, float, date


def render(servers: dict[str, dict[str, Any]], preamble: str = "") -> tuple[str, dict[str, int]]:
    """A config file of `servers`, and the line each [servers.NAME] header is on."""
    lines = preamble.split("\n") if preamble else []
    where = {}
    for name, table in servers.items():
        if lines:
            lines.append("")
        lines.append(f"[servers.{toml_str(name)}]")
        where[name] = len(lines)
        lines.extend(f"{toml_str(key)} = {toml_value(value)}" for key, value in table.items())
    return "\n".join(lines) + "\n", where


# -- strategies -------------------------------------------------------------------------------------

names = st.text(min_size=1, max_size=20).filter(lambda n: uc.name_problem(n) is None)
hosts = st.text(string.ascii_lowercase, min_size=1, max_size=10)
ports = st.integers(1, 65535)


@st.composite
def addresses(draw: st.DrawFn) -> str:
    items = []
    for _ in range(draw(st.integers(1, 3))):
        scheme = draw(st.sampled_from(["", "chat://", "tls://"]))
        port = draw(st.none() | ports)
        items.append(f"{scheme}{draw(hosts)}" + ("" if port is None else f":{port}"))
    return ",".join(items)


nicks = st.text(string.ascii_letters + "_[]{}|^`", min_size=1, max_size=12)
rooms = st.lists(st.text(string.ascii_lowercase + string.digits + "_-.", min_size=1, max_size=8))
fingerprints = st.binary(min_size=32, max_size=32).map(lambda b: "SHA256:" + b.hex(":").upper())


@st.composite
def server_tables(draw: st.DrawFn) -> dict[str, Any]:
    address = draw(addresses())
    table: dict[str, Any] = {"address": address}
    if draw(st.booleans()):
        table["nick"] = draw(nicks)
    if draw(st.booleans()):
        table["account"] = draw(nicks)
    chosen = draw(rooms)
    if chosen:
        table["rooms"] = chosen
    if "tls://" in address and draw(st.booleans()):
        table["tls-fingerprint"] = draw(fingerprints)
    if "tls://" in address and draw(st.booleans()):
        table["tls-ca"] = draw(st.sampled_from(["ca.pem", "/etc/ssl/work.pem", "~/ca.pem"]))
    return table


configs = st.dictionaries(names, server_tables(), max_size=4)
# A value of every TOML type, for the keys that take another.
toml_values = st.one_of(
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
    st.dates(min_value=date(1, 1, 1)),
    st.lists(st.integers(0, 9), max_size=3),
    st.dictionaries(st.sampled_from(["a", "b"]), st.integers(0, 9), max_size=2),
    st.text(max_size=10),
)


# -- reading a valid file ---------------------------------------------------------------------------


@given(configs)
def test_a_file_of_valid_servers_reads_back_as_written(servers: dict[str, dict[str, Any]]) -> None:
    text, where = render(servers, "# my servers")
    config = uc.parse(text, PATH)
    assert list(config.servers) == list(servers)
    for name, table in servers.items():
        saved = config.servers[name]
        assert saved.name == name
        assert saved.line == where[name]
        assert saved.as_dict() == table


@given(names, server_tables())
def test_unicode_names_are_kept_exactly(name: str, table: dict[str, Any]) -> None:
    text, _ = render({name: table})
    config = uc.parse(text, PATH)
    assert config.server(name).address == table["address"]
    assert (
        json.loads(uc.to_json(config, Path(PATH)))["servers"][name]["address"] == table["address"]
    )


def test_an_address_may_be_an_array_and_a_fingerprint_is_normalised() -> None:
    text = (
        "[servers.work]\n"
        'address = ["tls://h1:1060", "tls://h2:1060"]\n'
        f'tls-fingerprint = "{"ab" * 32}"\n'
    )
    saved = uc.parse(text, PATH).servers["work"]
    assert saved.address == "tls://h1:1060, tls://h2:1060"
    assert saved.tls_fingerprint == "SHA256:" + ":".join(["AB"] * 32)


def test_an_empty_file_saves_nothing() -> None:
    assert uc.parse("", PATH).servers == {}
    assert uc.parse("# nothing yet\n[servers]\n", PATH).servers == {}


# -- mistakes: one line, naming the file, the line and the key --------------------------------------


def refusal(text: str) -> uc.ConfigError:
    with pytest.raises(uc.ConfigError) as caught:
        uc.parse(text, PATH)
    error = caught.value
    assert error.exit_code == ExitCode.USAGE
    assert "\n" not in str(error)
    assert str(error).startswith(PATH)
    return error


@given(names, server_tables(), st.text(min_size=1, max_size=20), toml_values, st.data())
def test_an_unknown_key_is_named_with_its_line(
    name: str, table: dict[str, Any], key: str, value: Any, data: st.DataObject
) -> None:
    assume(key not in uc.KEYS and key != "password")
    items = list(table.items())
    position = data.draw(st.integers(0, len(items)))
    items.insert(position, (key, value))
    text, where = render({name: dict(items)})
    error = refusal(text)
    assert repr(key) in error.detail
    assert error.line == where[name] + 1 + position  # the key's own line


@given(names, server_tables(), st.sampled_from(uc.KEYS), toml_values)
def test_a_value_of_the_wrong_type_is_refused_naming_the_key(
    name: str, table: dict[str, Any], key: str, value: Any
) -> None:
    wrong_type = {
        "rooms": not (isinstance(value, list) and all(isinstance(v, str) for v in value)),
        "address": not isinstance(value, str),
    }.get(key, not isinstance(value, str))
    assume(wrong_type)
    table = {**table, key: value}
    text, where = render({name: table})
    error = refusal(text)
    assert key in error.detail
    assert error.line == where[name] + 1 + list(table).index(key)


@pytest.mark.parametrize(
    ("key", "value", "words"),
    [
        ("nick", 42, "nick must be a string, not an integer (42)"),
        ("nick", "bad nick", "nick 'bad nick': a nick may not contain ' '"),
        ("account", "9lives", "a nick may not start with a digit"),
        ("rooms", "dev", "rooms must be an array of strings"),
        ("rooms", [], "rooms is empty"),
        ("rooms", ["bad!room"], "'bad!room' is not a valid room name"),
        ("address", "h:99999", "the port must be a number from 1 to 65535"),
        ("address", "h1,,h2", "address 2 of 3"),
        ("address", [], "address must be a string or an array of strings"),
        ("tls-fingerprint", "SHA256:AB", "is not a SHA-256 fingerprint"),
        ("port", 1061, "write it in the address (HOST:PORT)"),
        ("nik", "alice", "unknown key 'nik' (did you mean 'nick'?)"),
        ("tls_ca", "ca.pem", "did you mean 'tls-ca'?"),
    ],
)
def test_refusals_say_what_is_wrong(key: str, value: Any, words: str) -> None:
    table = {"address": "tls://chat.example:1060"} | {key: value}
    text, where = render({"work": table})
    error = refusal(text)
    assert words in error.detail
    assert error.line == where["work"] + 1 + list(table).index(key)
    assert error.detail.startswith("[servers.work]: ")


def test_tls_settings_need_a_tls_address() -> None:
    error = refusal('[servers.home]\naddress = "h1"\ntls-ca = "ca.pem"\n')
    assert error.detail == "[servers.home]: tls-ca is for tls:// addresses, and address has none"
    assert error.line == 3


def test_a_server_without_an_address_is_refused_at_its_header() -> None:
    error = refusal('# a comment\n\n[servers.work]\nnick = "alice"\n')
    assert error.line == 3
    assert "address is missing" in error.detail


@given(names, server_tables(), st.text(max_size=30))
def test_a_password_is_refused_and_never_echoed(
    name: str, table: dict[str, Any], password: str
) -> None:
    table = {**table, "password": password}
    text, where = render({name: table})
    error = refusal(text)
    assert "CHATCTL_PASSWORD" in error.detail
    assert "does not belong in a file" in error.detail
    assert error.line == where[name] + len(table)
    other = refusal(render({name: {**table, "password": "something else"}})[0])
    assert str(other) == str(error)  # the message says nothing of the password


@given(st.text(min_size=1, max_size=20).filter(lambda n: uc.name_problem(n) is not None))
def test_a_name_that_could_be_read_as_an_address_is_refused(name: str) -> None:
    text, _ = render({name: {"address": "h"}})
    error = refusal(text)
    assert "[servers." in error.detail
    assert error.line == 1


@pytest.mark.parametrize("name", ["h:1060", "a/b", "x,y", "[::1]", "-s", "two words", "tab\tname"])
def test_names_with_address_syntax_are_not_names(name: str) -> None:
    assert uc.name_problem(name) is not None


@pytest.mark.parametrize("name", ["work", "büro", "仕事", "chat.example.com", "home-2", "🏠"])
def test_names_in_any_language_are_names(name: str) -> None:
    assert uc.name_problem(name) is None


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ('[servers.work]\naddress = "h\n', 2, "not valid TOML"),
        ("[servers.work]\naddress = h\n", 2, "not valid TOML"),
        ('servers = "work"\n', 1, "servers must be a table"),
        ('[server.work]\naddress = "h"\n', 1, "unknown key 'server' (did you mean 'servers'?)"),
        ('[servers]\nwork = "h"\n', 2, "servers.work must be a table"),
        ('servers.work.address = "h"\nservers.work.nick = 1\n', 2, "nick must be a string"),
    ],
)
def test_file_level_mistakes_have_their_line(text: str, line: int, words: str) -> None:
    error = refusal(text)
    assert error.line == line
    assert words in error.detail


@given(st.text(max_size=200))
def test_any_text_is_a_config_or_one_config_error(text: str) -> None:
    try:
        uc.parse(text, PATH)
    except uc.ConfigError as error:
        assert "\n" not in str(error)


@given(configs, st.data())
def test_toml_that_parses_gets_line_numbers_within_the_file(
    servers: dict[str, dict[str, Any]], data: st.DataObject
) -> None:
    assume(servers)
    text, _ = render(servers)
    name = data.draw(st.sampled_from(list(servers)))
    broken = text.replace(f"[servers.{toml_str(name)}]", f"[servers.{toml_str(name)}]\nbad = 1", 1)
    error = refusal(broken)
    assert error.line is not None and 1 <= error.line <= broken.count("\n")
    assert tomllib.loads(broken)  # the mistake is ours to find, not TOML's


# -- the file on disk -------------------------------------------------------------------------------


def test_load_resolves_tls_ca_against_the_files_directory(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(
        '[servers.a]\naddress = "tls://h"\ntls-ca = "ca.pem"\n'
        '[servers.b]\naddress = "tls://h"\ntls-ca = "/etc/ca.pem"\n'
        '[servers.c]\naddress = "tls://h"\ntls-ca = "~/ca.pem"\n',
        encoding="utf-8",
    )
    config = uc.load(path)
    assert config is not None
    assert config.servers["a"].tls_ca == str(tmp_path / "ca.pem")
    assert config.servers["b"].tls_ca == "/etc/ca.pem"
    assert config.servers["c"].tls_ca == str(Path.home() / "ca.pem")


def test_load_of_no_file_is_none_and_of_bad_bytes_one_error(tmp_path: Path) -> None:
    assert uc.load(tmp_path / "config.toml") is None
    path = tmp_path / "latin1.toml"
    path.write_bytes(b'[servers.b\xfcro]\naddress = "h"\n')
    with pytest.raises(uc.ConfigError, match="not UTF-8"):
        uc.load(path)
    with pytest.raises(uc.ConfigError, match="cannot read it"):
        uc.load(tmp_path)  # a directory


def test_config_home_follows_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    assert uc.config_path() == tmp_path / "chatctl" / "config.toml"
    monkeypatch.setenv("XDG_CONFIG_HOME", "relative/dir")  # ignored, as the spec says
    assert uc.config_path() == Path.home() / ".config" / "chatctl" / "config.toml"


# -- choosing a saved server and merging it ---------------------------------------------------------

layers = st.sampled_from([uc.Layer.DEFAULT, uc.Layer.ENV, uc.Layer.FLAG])
settings = st.sampled_from(["host", "nick", "room", "account", "tls_ca", "tls_fingerprint"])


@given(
    st.dictionaries(settings, st.tuples(st.text(max_size=5), layers)),
    st.dictionaries(settings, st.text(max_size=5)),
)
def test_a_flag_beats_a_variable_beats_the_saved_server_beats_the_default(
    given_: dict[str, tuple[str, uc.Layer]], saved: dict[str, str]
) -> None:
    merged = uc.merge(given_, saved)
    assert merged.keys() == given_.keys()
    for name, (value, layer) in given_.items():
        if layer in (uc.Layer.FLAG, uc.Layer.ENV):
            assert merged[name] == value
        else:
            assert merged[name] == saved.get(name, value)


@pytest.mark.parametrize(
    ("given_", "names_server", "expected"),
    [
        (uc.Layer.FLAG, False, uc.Layer.FLAG),  # an address typed out replaces the saved one
        (uc.Layer.FLAG, True, uc.Layer.DEFAULT),  # HOST was the server's name, not an address
        (uc.Layer.ENV, False, uc.Layer.DEFAULT),  # $CHATCTL_HOST does not move a saved server
        (uc.Layer.DEFAULT, False, uc.Layer.DEFAULT),
    ],
)
def test_the_saved_address_stands_in_for_host(
    given_: uc.Layer, names_server: bool, expected: uc.Layer
) -> None:
    assert uc.host_layer(given_, names_server) is expected


@pytest.mark.parametrize(
    ("host_given", "host_is_name", "server", "layer", "chosen"),
    [
        (False, False, None, uc.Layer.DEFAULT, None),
        (True, True, None, uc.Layer.DEFAULT, "work"),  # chatctl join work
        (False, False, "home", uc.Layer.FLAG, "home"),  # chatctl join -s home
        (False, False, "home", uc.Layer.ENV, "home"),  # CHATCTL_SERVER=home chatctl join
        (True, True, "home", uc.Layer.ENV, "work"),  # HOST beats $CHATCTL_SERVER
        (True, False, "home", uc.Layer.ENV, None),  # so does an address typed out
        (True, False, "home", uc.Layer.FLAG, "home"),  # -s home at that address
        (True, True, "work", uc.Layer.FLAG, "work"),  # the same server twice
    ],
)
def test_which_saved_server_is_used(
    host_given: bool, host_is_name: bool, server: str | None, layer: uc.Layer, chosen: str | None
) -> None:
    assert uc.choose("work", host_given, host_is_name, server, layer, PATH) == chosen


def test_naming_two_servers_is_a_usage_error() -> None:
    with pytest.raises(uc.ConfigError, match="HOST names the saved server 'work' and --server"):
        uc.choose("work", True, True, "home", uc.Layer.FLAG, PATH)


def test_an_unknown_saved_server_is_named_with_the_ones_there_are() -> None:
    config = uc.parse('[servers.work]\naddress = "h"\n[servers.home]\naddress = "h"\n', PATH)
    with pytest.raises(uc.ConfigError) as caught:
        config.server("wrok")
    assert str(caught.value) == (
        f"{PATH}: no saved server 'wrok' (did you mean 'work'?) (saved: work, home)"
    )


@given(names, server_tables())
def test_what_each_command_takes_from_a_saved_server(name: str, table: dict[str, Any]) -> None:
    saved = uc.parse(render({name: table})[0], PATH).server(name)
    join = uc.saved_values("join", saved)
    assert join["host"] == saved.address
    assert join.get("room") == (list(saved.rooms) or None)
    assert join.get("nick") == saved.nick and join.get("account") == saved.account
    send = uc.saved_values("send", saved)
    assert send.get("room") == (saved.rooms[0] if saved.rooms else None)  # send: one room
    bot = uc.saved_values("bot", saved)
    assert "nick" not in bot and "account" not in bot  # the bot is not the user
    assert bot["host"] == saved.address
    assert nick_problem(join.get("nick") or "ok") is None
