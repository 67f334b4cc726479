"""The user's config file, `$XDG_CONFIG_HOME/chatctl/config.toml`: saved servers. Sans-IO but
for `load` and `config_home`.

    [servers.work]
    address = "tls://chat.example.com:1060, tls://chat2.example.com:1060"   # address.py's syntax
    nick = "alice"
    account = "alice"            # the password: $CHATCTL_PASSWORD or asked, never in the file
    rooms = ["dev", "ops"]
    tls-fingerprint = "SHA256:86:F0:..."
    tls-ca = "work-ca.pem"       # relative to this file's directory; ~ is the home directory

`chatctl join work`, `chatctl send -s work "hi"`: a saved server stands for its address, and
its other settings are defaults. For each setting the first that gives it wins:

    a flag  >  a CHATCTL_* variable  >  the saved server  >  the built-in default

except the address: a saved server chosen by name (HOST, --server or $CHATCTL_SERVER) is
reached at its own address whatever $CHATCTL_HOST says; an address typed as HOST replaces it
(with --server, that server's other settings apply there; with $CHATCTL_SERVER alone, none
do). `choose` and `host_layer` are those rules, `merge` the rest.

The file is read, never written: every mistake in it is one line that names the file and the
line (`ConfigError`), and a key nobody reads (a typo, a `password`) is such a mistake.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import date, datetime, time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chatctl.address import BadAddress, parse_addresses
from chatctl.errors import ChatctlError, ExitCode
from chatctl.fingerprint import parse_fingerprint
from chatctl.names import nick_problem, room_problem
from chatctl.protocol import DEFAULT_PORT

if TYPE_CHECKING:
    import tomllib

FILE_NAME = "config.toml"
NAME_MAX = 64
# Characters of address.py's syntax: a name without them can never be read as a URL, a
# HOST:PORT, an IPv6 address in brackets or a list of addresses.
_NOT_IN_NAMES = frozenset(":/,[]@?#\\\"'=")

# The keys of a [servers.NAME] table, in the order `chatctl config` shows them.
KEYS = ("address", "nick", "account", "rooms", "tls-ca", "tls-fingerprint")

EXAMPLE = """\
[servers.work]
address = "tls://chat.example.com:1060"
nick = "alice"
account = "alice"
rooms = ["dev", "ops"]
"""


class ConfigError(ChatctlError):
    """A config file that cannot be used, or a saved server that does not exist: one line,
    `FILE:LINE: what is wrong` (no LINE when none applies). A usage error."""

    exit_code = ExitCode.USAGE

    def __init__(self, path: str, message: str, line: int | None = None) -> None:
        where = f"{path}:{line}" if line else path
        super().__init__(f"{where}: {message}")
        self.path = path
        self.line = line
        self.detail = message


@dataclass(frozen=True)
class SavedServer:
    name: str
    address: str  # one or several comma-separated (address.py), as the file writes them
    nick: str | None = None
    account: str | None = None
    rooms: tuple[str, ...] = ()
    tls_ca: str | None = None  # as written; `load` makes it absolute
    tls_fingerprint: str | None = None  # normalised (fingerprint.py)
    line: int | None = None  # where its table starts

    def as_dict(self) -> dict[str, Any]:
        """The settings the file gives, by key, in KEYS order (for `chatctl config`)."""
        values = {
            "address": self.address,
            "nick": self.nick,
            "account": self.account,
            "rooms": list(self.rooms) or None,
            "tls-ca": self.tls_ca,
            "tls-fingerprint": self.tls_fingerprint,
        }
        return {key: value for key, value in values.items() if value is not None}


@dataclass(frozen=True)
class UserConfig:
    path: str
    servers: dict[str, SavedServer] = field(default_factory=dict)

    def server(self, name: str) -> SavedServer:
        """The saved server called `name`. Raises ConfigError, with the names there are."""
        found = self.servers.get(name)
        if found is not None:
            return found
        if not self.servers:
            raise ConfigError(self.path, f"no saved server {name!r}: the file saves none")
        raise ConfigError(
            self.path,
            f"no saved server {name!r}{_did_you_mean(name, self.servers)} "
            f"(saved: {', '.join(self.servers)})",
        )


def name_problem(name: str) -> str | None:
    """Why `name` cannot name a saved server, or None. Any language is welcome; what is ruled
    out is what would make a name look like an address, an option or nothing."""
    if not name:
        return "a server name may not be empty"
    if len(name) > NAME_MAX:
        return f"a server name has at most {NAME_MAX} characters"
    for ch in name:
        if ch in _NOT_IN_NAMES or ch.isspace() or not ch.isprintable():
            return f"a server name may not contain {ch!r}"
    if name.startswith("-"):
        return "a server name may not start with '-'"
    return None


# -- reading -------------------------------------------------------------------------------------


def parse(text: str, path: str) -> UserConfig:
    """The config file `text` (read from `path`, which errors name). Raises ConfigError."""
    import tomllib  # here: client commands that only look for known_servers do not pay for it

    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        line = _decode_error_line(exc)
        words = str(exc).split(" (at line ", 1)[0] if line else str(exc)
        raise ConfigError(path, f"not valid TOML: {words}", line) from None
    lines = _key_lines(text)

    def fail(message: str, *where: str) -> ConfigError:
        return ConfigError(path, message, _line_of(lines, where))

    for key in data:
        if key != "servers":
            hint = _did_you_mean(key, ["servers"])
            raise fail(f"unknown key {key!r}{hint}: the file holds [servers.NAME] tables", key)
    servers_table = data.get("servers", {})
    if not isinstance(servers_table, dict):
        raise fail(
            f"servers must be a table of [servers.NAME] tables, not {_kind(servers_table)}",
            "servers",
        )
    servers: dict[str, SavedServer] = {}
    for name, table in servers_table.items():
        problem = name_problem(name)
        if problem is not None:
            raise fail(f"[servers.{_show(name)}]: {problem}", "servers", name)
        if not isinstance(table, dict):
            raise fail(
                f"servers.{_show(name)} must be a table ([servers.{_show(name)}]), "
                f"not {_kind(table)}",
                "servers",
                name,
            )
        servers[name] = _server(name, table, fail, _line_of(lines, ("servers", name)))
    return UserConfig(path, servers)


_Fail = Callable[..., ConfigError]  # fail(message, *key_path): the error, at the key's line


def _server(name: str, table: dict[str, Any], fail: _Fail, line: int | None) -> SavedServer:
    label = f"[servers.{_show(name)}]"

    def at(key: str) -> tuple[str, ...]:
        return ("servers", name, key)

    for key in table:
        if key in KEYS:
            continue
        if key == "password":
            raise fail(
                f"{label}: a password does not belong in a file: set CHATCTL_PASSWORD, or "
                "let join ask for it",
                *at(key),
            )
        if key == "port":
            raise fail(
                f"{label}: unknown key 'port': write it in the address (HOST:PORT)", *at(key)
            )
        raise fail(
            f"{label}: unknown key {key!r}{_did_you_mean(key, KEYS)} (known: {', '.join(KEYS)})",
            *at(key),
        )

    def string(key: str) -> str | None:
        value = table.get(key)
        if value is None:
            return None
        if not isinstance(value, str):
            raise fail(f"{label}: {key} must be a string, not {_kind(value)}", *at(key))
        if not value.strip():
            raise fail(f"{label}: {key} is empty (leave it out instead)", *at(key))
        return value

    if "address" not in table:
        raise fail(
            f'{label}: address is missing (e.g. address = "chat.example.com:1060")', "servers", name
        )
    address_value = table["address"]
    if isinstance(address_value, list):
        if not address_value or not all(isinstance(a, str) for a in address_value):
            raise fail(
                f"{label}: address must be a string or an array of strings, one a server",
                *at("address"),
            )
        address = ", ".join(address_value)
    else:
        address = string("address") or ""
    try:
        addresses = parse_addresses(address, DEFAULT_PORT)
    except BadAddress as exc:
        raise fail(f"{label}: address: {exc}", *at("address")) from None

    nick = string("nick")
    account = string("account")
    for key, value in (("nick", nick), ("account", account)):
        if value is not None and (problem := nick_problem(value)) is not None:
            raise fail(f"{label}: {key} {value!r}: {problem}", *at(key))

    rooms_value = table.get("rooms", [])
    if not isinstance(rooms_value, list) or not all(isinstance(r, str) for r in rooms_value):
        raise fail(
            f'{label}: rooms must be an array of strings (rooms = ["dev", "ops"]), '
            f"not {_kind(rooms_value)}",
            *at("rooms"),
        )
    if "rooms" in table and not rooms_value:
        raise fail(f"{label}: rooms is empty (leave it out for #lobby)", *at("rooms"))
    for room in rooms_value:
        if (problem := room_problem(room)) is not None:
            raise fail(f"{label}: rooms: {problem}", *at("rooms"))

    tls_ca = string("tls-ca")
    fingerprint = string("tls-fingerprint")
    if fingerprint is not None:
        try:
            fingerprint = parse_fingerprint(fingerprint)
        except ValueError as exc:
            raise fail(f"{label}: tls-fingerprint: {exc}", *at("tls-fingerprint")) from None
    if (tls_ca or fingerprint) and not any(a.tls for a in addresses):
        key = "tls-fingerprint" if fingerprint else "tls-ca"
        raise fail(f"{label}: {key} is for tls:// addresses, and address has none", *at(key))
    return SavedServer(
        name=name,
        address=address,
        nick=nick,
        account=account,
        rooms=tuple(rooms_value),
        tls_ca=tls_ca,
        tls_fingerprint=fingerprint,
        line=line,
    )


def _kind(value: object) -> str:
    """A TOML value's type, as a person reads it."""
    kinds: tuple[tuple[type | tuple[type, ...], str], ...] = (
        (bool, "a boolean"),
        (int, "an integer"),
        (float, "a number"),
        (str, "a string"),
        (list, "an array"),
        (dict, "a table"),
        ((datetime, date, time), "a date or time"),
    )
    for types, words in kinds:
        if isinstance(value, types):
            return f"{words} ({_show_value(value)})" if words != "a table" else words
    return type(value).__name__


def _show_value(value: object) -> str:
    text = repr(value) if isinstance(value, str | list) else str(value)
    return text if len(text) <= 40 else text[:39] + "…"


def _show(name: str) -> str:
    """A key as a TOML header writes it: bare when it can be, quoted otherwise."""
    if name and all(ch.isascii() and (ch.isalnum() or ch in "-_") for ch in name):
        return name
    return '"' + "".join(_escape(ch) for ch in name) + '"'


def _escape(ch: str) -> str:
    """One character of a TOML basic string, escaped when it must be or is unprintable (so an
    error stays on one line and shows what is there)."""
    if ch in '"\\':
        return "\\" + ch
    if ch.isprintable():
        return ch
    return f"\\u{ord(ch):04X}" if ord(ch) <= 0xFFFF else f"\\U{ord(ch):08X}"


def _did_you_mean(word: str, choices: Any) -> str:
    import difflib  # only for a mistake

    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


# -- where a key is: tomllib reports no positions for the values it returns ---------------------


def _decode_error_line(exc: tomllib.TOMLDecodeError) -> int | None:
    lineno = getattr(exc, "lineno", None)  # Python 3.14 has it; earlier ones say it in words
    if isinstance(lineno, int):
        return lineno
    marker = "(at line "
    text = str(exc)
    if marker in text:
        digits = text.split(marker, 1)[1].split(",", 1)[0].rstrip(")")
        if digits.isdigit():
            return int(digits)
    return None


def _key_lines(text: str) -> dict[tuple[str, ...], int]:
    """The line (from 1) where each table header and each `key =` line of `text` is, by its
    full key path. Best effort: a key inside an inline table, or a line of a multi-line string
    that looks like a key, is found at its enclosing line or not at all (errors then name the
    nearest enclosing table, or only the file)."""
    found: dict[tuple[str, ...], int] = {}
    table: tuple[str, ...] = ()
    in_string = ""
    for number, raw in enumerate(text.split("\n"), 1):  # TOML ends lines with \n only
        line = raw.strip()
        if in_string:
            if line.count(in_string) % 2 == 1:
                in_string = ""
            continue
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            header = _header_path(line)
            if header is not None:
                table = header
                _record(found, table, number)
            continue
        equals = _equals_sign(line)
        if equals is not None:
            path = _key_path(line[:equals])
            if path is not None:
                _record(found, table + path, number)
            value = line[equals + 1 :]
            for quotes in ('"""', "'''"):
                if value.count(quotes) % 2 == 1:
                    in_string = quotes
    return found


def _record(found: dict[tuple[str, ...], int], path: tuple[str, ...], line: int) -> None:
    """`path` and every enclosing path first seen on `line` (`[a.b]` opens `a` too)."""
    for end in range(1, len(path) + 1):
        found.setdefault(path[:end], line)


def _equals_sign(line: str) -> int | None:
    """Where the `=` after a key is (not one inside a quoted key), or None."""
    quote = ""
    escaped = False
    for index, ch in enumerate(line):
        if quote:
            if escaped:
                escaped = False
            elif ch == "\\" and quote == '"':
                escaped = True
            elif ch == quote:
                quote = ""
        elif ch in "\"'":
            quote = ch
        elif ch == "=":
            return index
        elif ch == "#":
            return None
    return None


def _header_path(line: str) -> tuple[str, ...] | None:
    """The key path of a `[a."b"]` or `[[a.b]]` header line."""
    import tomllib

    try:
        parsed: Any = tomllib.loads(line)
    except tomllib.TOMLDecodeError:
        return None
    path: list[str] = []
    while isinstance(parsed, dict) and len(parsed) == 1:
        key, parsed = next(iter(parsed.items()))
        path.append(key)
        if isinstance(parsed, list):  # an array of tables: the path stops at it
            break
    return tuple(path) or None


def _key_path(text: str) -> tuple[str, ...] | None:
    """The key path of the left-hand side of `a.b = ...`."""
    import tomllib

    try:
        parsed: Any = tomllib.loads(f"{text} = 0")
    except tomllib.TOMLDecodeError:
        return None
    path: list[str] = []
    while isinstance(parsed, dict) and len(parsed) == 1:
        key, parsed = next(iter(parsed.items()))
        path.append(key)
    return tuple(path) or None


def _line_of(lines: Mapping[tuple[str, ...], int], where: tuple[str, ...]) -> int | None:
    """The line of `where`, else of the nearest enclosing key that has one."""
    for end in range(len(where), 0, -1):
        line = lines.get(where[:end])
        if line is not None:
            return line
    return None


# -- choosing a saved server and merging it with the command line -------------------------------


class Layer(enum.IntEnum):
    """Where a setting's value came from; a higher layer wins."""

    DEFAULT = 0
    SAVED = 1
    ENV = 2
    FLAG = 3


# Which settings a saved server gives each command, by the command's parameter name. The bot
# is not the user: it takes the server and its rooms, not the user's nick or account.
_FOR_COMMAND: dict[str, tuple[str, ...]] = {
    "join": ("host", "nick", "account", "room", "tls_ca", "tls_fingerprint"),
    "send": ("host", "nick", "account", "room", "tls_ca", "tls_fingerprint"),
    "bot": ("host", "room", "tls_ca", "tls_fingerprint"),
}


def saved_values(command: str, server: SavedServer) -> dict[str, Any]:
    """What `server` sets for `command`, by parameter name (only what it sets). `send` sends
    to one room: the first saved one."""
    rooms: Any = list(server.rooms) or None
    if command == "send" and rooms:
        rooms = rooms[0]
    values = {
        "host": server.address,
        "nick": server.nick,
        "account": server.account,
        "room": rooms,
        "tls_ca": server.tls_ca,
        "tls_fingerprint": server.tls_fingerprint,
    }
    return {k: v for k, v in values.items() if k in _FOR_COMMAND[command] and v is not None}


def merge(given: Mapping[str, tuple[Any, Layer]], saved: Mapping[str, Any]) -> dict[str, Any]:
    """Each setting from the highest layer that gives it: `given` holds what the command line
    parser found (a flag, a CHATCTL_* variable or the default, and which), `saved` what a saved
    server sets. The saved value beats only a default."""
    merged = {}
    for name, (value, layer) in given.items():
        if layer is Layer.DEFAULT and name in saved:
            merged[name] = saved[name]
        else:
            merged[name] = value
    return merged


def host_layer(given: Layer, host_is_name: bool) -> Layer:
    """The layer of HOST for `merge`, once a saved server is chosen; `given` is where HOST
    came from. A HOST that names the saved server is no address (DEFAULT: the saved address
    takes its place); and a saved server comes with its address, which $CHATCTL_HOST (a
    default address for when none is chosen) does not replace. An address on the command
    line does."""
    if host_is_name or given is Layer.ENV:
        return Layer.DEFAULT
    return given


def choose(
    host: str,
    host_given: bool,
    host_is_name: bool,
    server: str | None,
    server_layer: Layer,
    path: str,
) -> str | None:
    """The name of the saved server to use, or None. `host_given`: HOST was on the command
    line, `host_is_name`: as a saved server's name; `server`: --server or $CHATCTL_SERVER, as
    `server_layer` says. HOST naming a server beats $CHATCTL_SERVER, and so does HOST giving an
    address (an address typed out means that server, not the saved one); --server with HOST
    naming another server is a usage error; --server with an address is that server's settings
    at that address."""
    if host_is_name:
        if server and server_layer is Layer.FLAG and server != host:
            raise ConfigError(
                path,
                f"HOST names the saved server {host!r} and --server names {server!r}: give one",
            )
        return host
    if host_given and server_layer is not Layer.FLAG:
        return None
    return server or None


# -- the file on disk -----------------------------------------------------------------------------


def config_home() -> Path:
    """$XDG_CONFIG_HOME/chatctl, or ~/.config/chatctl (the XDG spec: a relative value is
    ignored). known_servers (client/trust.py) lives here too."""
    config = os.environ.get("XDG_CONFIG_HOME", "")
    base = Path(config) if os.path.isabs(config) else Path.home() / ".config"
    return base / "chatctl"


def config_path() -> Path:
    return config_home() / FILE_NAME


def load(path: Path | None = None) -> UserConfig | None:
    """The config file (default: `config_path()`), None when there is none. A relative or ~
    tls-ca is made absolute, relative to the file's directory. Raises ConfigError."""
    path = path or config_path()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except UnicodeDecodeError as exc:
        raise ConfigError(str(path), f"not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise ConfigError(str(path), f"cannot read it: {exc.strerror or exc}") from None
    config = parse(text, str(path))
    for name, server in config.servers.items():
        if server.tls_ca is not None:
            ca = Path(server.tls_ca).expanduser()
            absolute = ca if ca.is_absolute() else path.parent / ca
            config.servers[name] = replace(server, tls_ca=str(absolute))
    return config


# -- showing it ----------------------------------------------------------------------------------


def describe(config: UserConfig | None, path: Path) -> str:
    """What `chatctl config` prints: the path, then each saved server and its settings."""
    if config is None:
        return (
            f"{path}: no such file, so no saved servers. To save one, write it there, e.g.:\n\n"
            + EXAMPLE
        )
    if not config.servers:
        return f"{path}: no saved servers\n"
    count = len(config.servers)
    lines = [f"{path}: {count} saved server{'s' if count != 1 else ''}", ""]
    for name, server in config.servers.items():
        lines.append(name)
        for key, value in server.as_dict().items():
            shown = ", ".join(value) if isinstance(value, list) else value
            lines.append(f"  {key:<16} {shown}")
    return "\n".join(lines) + "\n"


def to_json(config: UserConfig | None, path: Path) -> str:
    """What `chatctl config --json` prints: path, exists, and servers by name."""
    import json

    servers = {} if config is None else {n: s.as_dict() for n, s in config.servers.items()}
    return json.dumps(
        {"path": str(path), "exists": config is not None, "servers": servers}, ensure_ascii=False
    )


__all__ = [
    "EXAMPLE",
    "KEYS",
    "ConfigError",
    "Layer",
    "SavedServer",
    "UserConfig",
    "choose",
    "config_home",
    "config_path",
    "describe",
    "host_layer",
    "load",
    "merge",
    "name_problem",
    "parse",
    "saved_values",
    "to_json",
]
