"""Every command-line option and its CHATCTL_* environment variable, in one place.

Commands in cli.py take these Annotated aliases as parameter types; nothing else defines an
option name. A new option goes here, next to its siblings, with an environment variable (or an
entry in ENV_EXEMPT saying why not; tests/test_cli_help.py checks) and a help panel: `--help`
groups options by panel, one short line of help each (the details are in the docs).
"""

from __future__ import annotations

import enum
import os
from pathlib import Path
from typing import Annotated, Any

import click
import typer

from chatctl.bench.params import Scenario
from chatctl.bench.payload import MIN_SIZE
from chatctl.bot.config import BackendName, OnFailure
from chatctl.protocol import DEFAULT_HOST
from chatctl.server.config import AuthMode, LogFormat, LogLevel, Registration


class OutputFormat(enum.StrEnum):
    text = "text"
    json = "json"


class _Choice(click.Choice[str]):
    """An enum's values as an option's type; any other value is a usage error (exit 2) that
    reads `refusal`, formatted with the value given and the choices."""

    def __init__(self, values: type[enum.StrEnum], refusal: str) -> None:
        super().__init__([v.value for v in values])
        self.refusal = refusal

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        try:
            return super().convert(value, param, ctx)
        except click.BadParameter:
            choices = ", ".join(str(c) for c in self.choices)
            raise click.UsageError(self.refusal.format(value=value, choices=choices), ctx) from None


def _print_version(value: bool | None) -> None:
    if value:
        from chatctl import __version__

        typer.echo(f"chatctl {__version__}")
        raise typer.Exit()


def _env(name: str) -> str:
    return f"CHATCTL_{name}"


# The help panels options are grouped in (`rich_help_panel`), in no particular order: Typer
# shows a command's panels in the order its first option in each comes.
CONNECTION = "Connection"
IDENTITY = "Identity"
ROOMS = "Rooms"
TLS = "TLS"
SCRIPTS = "Scripts"
MESSAGE = "Message"
OUTPUT = "Output"
LIMITS = "Limits"
RATES = "Rate limits, per client address"
TIMEOUTS = "Timeouts"
DATA = "Data and history"
ACCOUNTS = "Accounts"
LOGGING = "Logging"
LOAD = "Load"
TARGET = "Target"
BACKEND = "Backend"
MANNERS = "Manners"

# Parameters without an environment variable, and why. Every other one has a CHATCTL_* one.
ENV_EXEMPT = {
    "version": "asks for the version, sets nothing",
    "args": "send's HOST and MESSAGE: what to send is an argument (or stdin), not a setting",
    "name": "accounts: the account acted on is an argument of each call",
}


# Shared by several commands ------------------------------------------------------------------
HostArg = Annotated[
    str,
    typer.Argument(
        envvar=_env("HOST"),
        help="HOST[:PORT], chat:// or tls://HOST:PORT, several comma-separated (failover), "
        "or a saved server's name.",
        show_default=True,
    ),
]
Port = Annotated[
    int,
    typer.Option(
        "--port",
        "-p",
        envvar=_env("PORT"),
        min=0,
        max=65535,
        metavar="PORT",
        help="TCP port (for an address without one).",
        rich_help_panel=CONNECTION,
    ),
]
Nick = Annotated[
    str | None,
    typer.Option(
        "--nick",
        "-n",
        envvar=_env("NICK"),
        metavar="NICK",
        help="Nick (default: the account's; else asked, or the login name).",
        rich_help_panel=IDENTITY,
    ),
]
Rooms = Annotated[
    list[str] | None,
    typer.Option(
        "--room",
        "-r",
        envvar=_env("ROOM"),
        metavar="ROOM",
        help="Room to join; repeat for several. Default: lobby.",
        rich_help_panel=ROOMS,
    ),
]
Timeout = Annotated[
    float | None,
    typer.Option(
        "--timeout",
        "-t",
        envvar=_env("TIMEOUT"),
        min=0.0,
        metavar="SECONDS",
        help="Give up after this many seconds.",
        rich_help_panel=SCRIPTS,
    ),
]
ConnectTimeout = Annotated[
    float,
    typer.Option(
        "--connect-timeout",
        envvar=_env("CONNECT_TIMEOUT"),
        min=0.0,
        metavar="SECONDS",
        help="Seconds for the connection and handshake.",
        rich_help_panel=CONNECTION,
    ),
]
Format = Annotated[
    OutputFormat,
    typer.Option(
        "--format",
        "-f",
        envvar=_env("FORMAT"),
        help="In a pipe: text, or JSON Lines.",
        rich_help_panel=OUTPUT,
    ),
]
Json = Annotated[
    bool,
    typer.Option(
        "--json", envvar=_env("JSON"), help="Print JSON on stdout.", rich_help_panel=OUTPUT
    ),
]
Version = Annotated[
    bool | None,
    typer.Option(
        "--version",
        "-V",
        is_eager=True,
        callback=_print_version,
        help="Print the version and exit.",
    ),
]

Server = Annotated[
    str | None,
    typer.Option(
        "--server",
        "-s",
        envvar=_env("SERVER"),
        metavar="NAME",
        help="A saved server (chatctl config): its address and settings.",
        show_default=False,
        rich_help_panel=CONNECTION,
    ),
]

# serve -----------------------------------------------------------------------------------------
ServeHosts = Annotated[
    list[str] | None,
    typer.Option(
        "--host",
        "-H",
        envvar=_env("HOST"),
        metavar="ADDR",
        help="Address to listen on (repeatable).",
        show_default=DEFAULT_HOST,
        rich_help_panel=CONNECTION,
    ),
]
ServePort = Annotated[
    int,
    typer.Option(
        "--port",
        "-p",
        envvar=_env("PORT"),
        min=0,
        max=65535,
        metavar="PORT",
        help="TCP port to listen on (0: any free one).",
        rich_help_panel=CONNECTION,
    ),
]
ServerName = Annotated[
    str,
    typer.Option(
        "--name",
        envvar=_env("SERVER_NAME"),
        help="Server name sent in the welcome.",
        rich_help_panel=CONNECTION,
    ),
]
LogLevelOpt = Annotated[
    LogLevel,
    typer.Option(
        "--log-level",
        envvar=_env("LOG_LEVEL"),
        metavar="LEVEL",
        help="debug, info, warning or error.",
        rich_help_panel=LOGGING,
    ),
]
LogFormatOpt = Annotated[
    LogFormat,
    typer.Option(
        "--log-format",
        envvar=_env("LOG_FORMAT"),
        help="rich for people, json for machines.",
        rich_help_panel=LOGGING,
    ),
]
MaxFrame = Annotated[
    int,
    typer.Option(
        "--max-frame",
        envvar=_env("MAX_FRAME"),
        min=256,
        max=4 * 1024 * 1024,
        metavar="BYTES",
        help="Largest frame body (256 to 4194304).",
        rich_help_panel=LIMITS,
    ),
]
MaxText = Annotated[
    int,
    typer.Option(
        "--max-text",
        envvar=_env("MAX_TEXT"),
        min=1,
        metavar="BYTES",
        help="Longest message text, in UTF-8 bytes.",
        rich_help_panel=LIMITS,
    ),
]
MaxOutput = Annotated[
    int,
    typer.Option(
        "--max-output",
        envvar=_env("MAX_OUTPUT"),
        min=1024,
        metavar="BYTES",
        help="Output queued before a reader is dropped.",
        rich_help_panel=LIMITS,
    ),
]
HandshakeTimeout = Annotated[
    float,
    typer.Option(
        "--handshake-timeout",
        envvar=_env("HANDSHAKE_TIMEOUT"),
        min=0.1,
        metavar="SECONDS",
        help="Time a new connection has to say Hello.",
        rich_help_panel=TIMEOUTS,
    ),
]
PingInterval = Annotated[
    float,
    typer.Option(
        "--ping-interval",
        envvar=_env("PING_INTERVAL"),
        min=0.1,
        metavar="SECONDS",
        help="Silence before the server pings.",
        rich_help_panel=TIMEOUTS,
    ),
]
IdleTimeout = Annotated[
    float,
    typer.Option(
        "--idle-timeout",
        envvar=_env("IDLE_TIMEOUT"),
        min=0.1,
        metavar="SECONDS",
        help="Silence before a client is dropped.",
        rich_help_panel=TIMEOUTS,
    ),
]
RateLimit = Annotated[
    float,
    typer.Option(
        "--rate",
        envvar=_env("RATE"),
        min=0.0,
        metavar="PER_SEC",
        help="Frames a second (0: no limit).",
        rich_help_panel=RATES,
    ),
]
Burst = Annotated[
    int,
    typer.Option(
        "--burst",
        envvar=_env("BURST"),
        min=1,
        metavar="N",
        help="Frames at once before --rate applies.",
        rich_help_panel=RATES,
    ),
]
Ipv4Prefix = Annotated[
    int,
    typer.Option(
        "--ipv4-prefix",
        envvar=_env("IPV4_PREFIX"),
        min=8,
        max=32,
        metavar="BITS",
        help="IPv4 prefix length of a client (8-32).",
        rich_help_panel=RATES,
    ),
]
Ipv6Prefix = Annotated[
    int,
    typer.Option(
        "--ipv6-prefix",
        envvar=_env("IPV6_PREFIX"),
        min=16,
        max=128,
        metavar="BITS",
        help="IPv6 prefix length of a client (16-128).",
        rich_help_panel=RATES,
    ),
]
ConnectRate = Annotated[
    float,
    typer.Option(
        "--connect-rate",
        envvar=_env("CONNECT_RATE"),
        min=0.0,
        metavar="PER_SEC",
        help="New connections a second (0: no limit).",
        rich_help_panel=RATES,
    ),
]
ConnectBurst = Annotated[
    int,
    typer.Option(
        "--connect-burst",
        envvar=_env("CONNECT_BURST"),
        min=1,
        metavar="N",
        help="New connections at once before the rate.",
        rich_help_panel=RATES,
    ),
]
TotalRooms = Annotated[
    int,
    typer.Option(
        "--total-rooms",
        envvar=_env("TOTAL_ROOMS"),
        min=0,
        metavar="N",
        help="Rooms held in all (0: no limit).",
        rich_help_panel=LIMITS,
    ),
]
RoomRate = Annotated[
    float,
    typer.Option(
        "--room-rate",
        envvar=_env("ROOM_RATE"),
        min=0.0,
        metavar="PER_SEC",
        help="New rooms a second (0: no limit).",
        rich_help_panel=RATES,
    ),
]
RoomBurst = Annotated[
    int,
    typer.Option(
        "--room-burst",
        envvar=_env("ROOM_BURST"),
        min=1,
        metavar="N",
        help="New rooms at once before the rate.",
        rich_help_panel=RATES,
    ),
]
TotalOutput = Annotated[
    int,
    typer.Option(
        "--total-output",
        envvar=_env("TOTAL_OUTPUT"),
        min=1024,
        metavar="BYTES",
        help="Output queued for all connections.",
        rich_help_panel=LIMITS,
    ),
]
MaxConnections = Annotated[
    int,
    typer.Option(
        "--max-connections",
        envvar=_env("MAX_CONNECTIONS"),
        min=1,
        metavar="N",
        help="Connections at once, in total.",
        rich_help_panel=LIMITS,
    ),
]
MaxPerIp = Annotated[
    int,
    typer.Option(
        "--max-per-ip",
        envvar=_env("MAX_PER_IP"),
        min=1,
        metavar="N",
        help="Connections at once per client address.",
        rich_help_panel=LIMITS,
    ),
]
DataDir = Annotated[
    str | None,
    typer.Option(
        "--data",
        envvar=_env("DATA"),
        metavar="DIR",
        help="Store: DIR, :memory:, redis://HOST:PORT.",
        show_default="the XDG state dir",
        rich_help_panel=DATA,
    ),
]
JoinHistory = Annotated[
    int,
    typer.Option(
        "--join-history",
        envvar=_env("JOIN_HISTORY"),
        min=0,
        metavar="N",
        help="Messages replayed on joining (0: none).",
        rich_help_panel=DATA,
    ),
]
ReplayLimit = Annotated[
    int,
    typer.Option(
        "--replay-limit",
        envvar=_env("REPLAY_LIMIT"),
        min=1,
        metavar="N",
        help="Most messages one replay sends.",
        rich_help_panel=DATA,
    ),
]
MaxRooms = Annotated[
    int,
    typer.Option(
        "--max-rooms",
        envvar=_env("MAX_ROOMS"),
        min=1,
        metavar="N",
        help="Rooms one connection may be in.",
        rich_help_panel=LIMITS,
    ),
]
RetainMessages = Annotated[
    int,
    typer.Option(
        "--retain-messages",
        envvar=_env("RETAIN_MESSAGES"),
        min=0,
        metavar="N",
        help="Messages kept per room (0: no limit).",
        rich_help_panel=DATA,
    ),
]
RetainAge = Annotated[
    float,
    typer.Option(
        "--retain-age",
        envvar=_env("RETAIN_AGE"),
        min=0.0,
        metavar="SECONDS",
        help="Seconds a message is kept (0: no limit).",
        rich_help_panel=DATA,
    ),
]
NodeLease = Annotated[
    float,
    typer.Option(
        "--node-lease",
        envvar=_env("NODE_LEASE"),
        min=1.0,
        max=3600.0,
        metavar="SECONDS",
        help="Cluster: silence that ends a node.",
        rich_help_panel=DATA,
    ),
]
RedisReplicas = Annotated[
    int,
    typer.Option(
        "--redis-replicas",
        envvar=_env("REDIS_REPLICAS"),
        min=0,
        max=16,
        metavar="N",
        help="Cluster: replicas an ack waits for.",
        rich_help_panel=DATA,
    ),
]
# A tuning knob of a cluster, documented in docs/cluster.md: kept out of `serve --help`, which
# is held short (tests/test_cli_help.py).
SnapshotEvery = Annotated[
    int,
    typer.Option(
        "--snapshot-every",
        hidden=True,
        envvar=_env("SNAPSHOT_EVERY"),
        min=10,
        metavar="ENTRIES",
        help="Cluster: log entries between snapshots (same on every node).",
        rich_help_panel=DATA,
    ),
]

TlsCert = Annotated[
    str | None,
    typer.Option(
        "--tls-cert",
        envvar=_env("TLS_CERT"),
        metavar="FILE",
        help="Speak TLS with this certificate (PEM).",
        rich_help_panel=TLS,
    ),
]
TlsKey = Annotated[
    str | None,
    typer.Option(
        "--tls-key",
        envvar=_env("TLS_KEY"),
        metavar="FILE",
        help="The private key of --tls-cert (PEM).",
        rich_help_panel=TLS,
    ),
]
TlsSelfSigned = Annotated[
    bool,
    typer.Option(
        "--tls-self-signed",
        envvar=_env("TLS_SELF_SIGNED"),
        help="Speak TLS with a self-signed certificate.",
        rich_help_panel=TLS,
    ),
]

AuthOpt = Annotated[
    AuthMode,
    typer.Option(
        "--auth",
        envvar=_env("AUTH"),
        metavar="MODE",
        help="off, optional (guests too) or required.",
        rich_help_panel=ACCOUNTS,
    ),
]
RegistrationOpt = Annotated[
    Registration,
    typer.Option(
        "--registration",
        envvar=_env("REGISTRATION"),
        help="open: anyone may /register their nick.",
        rich_help_panel=ACCOUNTS,
    ),
]

# clients (join, send, bot, bench) -------------------------------------------------------------------
TlsCa = Annotated[
    str | None,
    typer.Option(
        "--tls-ca",
        envvar=_env("TLS_CA"),
        metavar="FILE",
        help="Trust this CA (PEM) instead of the system's.",
        rich_help_panel=TLS,
    ),
]
Account = Annotated[
    str | None,
    typer.Option(
        "--account",
        "-a",
        envvar=_env("ACCOUNT"),
        metavar="NAME",
        help="Log in (password: $CHATCTL_PASSWORD or asked).",
        show_default=False,
        rich_help_panel=IDENTITY,
    ),
]
TlsFingerprint = Annotated[
    str | None,
    typer.Option(
        "--tls-fingerprint",
        envvar=_env("TLS_FINGERPRINT"),
        metavar="SHA256:...",
        help="Trust the certificate with this fingerprint (remembered).",
        rich_help_panel=TLS,
    ),
]

# join ----------------------------------------------------------------------------------------
Count = Annotated[
    int | None,
    typer.Option(
        "--count",
        "-c",
        envvar=_env("COUNT"),
        min=1,
        metavar="N",
        help="Exit after this many messages.",
        rich_help_panel=SCRIPTS,
    ),
]
Reconnect = Annotated[
    bool,
    typer.Option(
        "--reconnect/--no-reconnect",
        envvar=_env("RECONNECT"),
        help="Reconnect on a drop (pipe mode).",
        rich_help_panel=SCRIPTS,
    ),
]
HistoryCount = Annotated[
    int | None,
    typer.Option(
        "--history",
        envvar=_env("HISTORY"),
        min=0,
        metavar="N",
        help="Messages to show on joining (default: the server's).",
        rich_help_panel=ROOMS,
    ),
]

LogDir = Annotated[
    Path | None,
    typer.Option(
        "--log-dir",
        envvar=_env("LOG_DIR"),
        metavar="DIR",
        help="On a terminal: a plain-text log per room and day in DIR (0700).",
        rich_help_panel=OUTPUT,
    ),
]
TimestampFormat = Annotated[
    str,
    typer.Option(
        "--timestamp-format",
        envvar=_env("TIMESTAMP_FORMAT"),
        metavar="FMT",
        help="strftime format of each line's time ('' for none).",
        rich_help_panel=OUTPUT,
    ),
]

# send ----------------------------------------------------------------------------------------
SendArgs = Annotated[
    list[str] | None,
    typer.Argument(
        metavar="[HOST] [MESSAGE]",
        help="HOST as for join (default: $CHATCTL_HOST, else 127.0.0.1), then MESSAGE; one argument is MESSAGE; '-' or none reads it from stdin (not a terminal).",
        show_default=False,
    ),
]


def default_host() -> str:
    """The host when a command's positional HOST is left out."""
    return os.environ.get(_env("HOST"), DEFAULT_HOST)


SendRoom = Annotated[
    str | None,
    typer.Option(
        "--room",
        "-r",
        envvar=_env("ROOM"),
        metavar="ROOM",
        help="Room to send to (default: lobby).",
        rich_help_panel=MESSAGE,
    ),
]
SendTo = Annotated[
    str | None,
    typer.Option(
        "--to",
        envvar=_env("TO"),
        metavar="NICK",
        help="Send a direct message to this nick instead.",
        rich_help_panel=MESSAGE,
    ),
]
SendCount = Annotated[
    int,
    typer.Option(
        "--count",
        "-c",
        envvar=_env("SEND_COUNT"),
        min=1,
        metavar="N",
        help="Send the message this many times.",
        rich_help_panel=MESSAGE,
    ),
]
RequireRecipient = Annotated[
    bool,
    typer.Option(
        "--require-recipient",
        envvar=_env("REQUIRE_RECIPIENT"),
        help="Exit 3 if nobody else received it.",
        rich_help_panel=SCRIPTS,
    ),
]
RequireNick = Annotated[
    bool,
    typer.Option(
        "--require-nick",
        envvar=_env("REQUIRE_NICK"),
        help="Exit 8, sending nothing, if the nick is taken.",
        rich_help_panel=SCRIPTS,
    ),
]
SendNick = Annotated[
    str | None,
    typer.Option(
        "--nick",
        "-n",
        envvar=_env("NICK"),
        metavar="NICK",
        help="Nick (default: the account's, else the login name).",
        rich_help_panel=IDENTITY,
    ),
]
Action = Annotated[
    bool,
    typer.Option(
        "--me", envvar=_env("SEND_ME"), help="Send it as a /me action.", rich_help_panel=MESSAGE
    ),
]

# bench ---------------------------------------------------------------------------------------
Target = Annotated[
    str | None,
    typer.Option(
        "--target",
        envvar=_env("BENCH_TARGET"),
        metavar="URL",
        help="chatctl address(es: A,B,C = cluster nodes), redis://, nats://, irc://.",
        rich_help_panel=TARGET,
    ),
]
ScenarioArg = Annotated[
    Scenario,
    typer.Argument(
        envvar=_env("BENCH_SCENARIO"),
        click_type=_Choice(Scenario, "unknown scenario {value!r}: expected {choices}"),
        metavar="[SCENARIO]",
        help="fanout, room, rooms or connect.",
    ),
]
Publishers = Annotated[
    int,
    typer.Option(
        "--pub",
        "-P",
        envvar=_env("BENCH_PUB"),
        min=0,
        metavar="N",
        help="Publishers (fanout).",
        rich_help_panel=LOAD,
    ),
]
Subscribers = Annotated[
    int,
    typer.Option(
        "--sub",
        "-S",
        envvar=_env("BENCH_SUB"),
        min=0,
        metavar="N",
        help="Subscribers (fanout).",
        rich_help_panel=LOAD,
    ),
]
Clients = Annotated[
    int,
    typer.Option(
        "--clients",
        "-N",
        envvar=_env("BENCH_CLIENTS"),
        min=1,
        metavar="N",
        help="Clients (room, rooms, connect).",
        rich_help_panel=LOAD,
    ),
]
BenchRooms = Annotated[
    int,
    typer.Option(
        "--rooms",
        "-R",
        envvar=_env("BENCH_ROOMS"),
        min=1,
        metavar="N",
        help="Rooms (rooms).",
        rich_help_panel=LOAD,
    ),
]
BenchRoom = Annotated[
    str | None,
    typer.Option(
        "--room",
        envvar=_env("BENCH_ROOM"),
        metavar="NAME",
        help="Reuse this room (rooms: NAME-0, NAME-1...), not a new one.",
        rich_help_panel=TARGET,
    ),
]
Messages = Annotated[
    int,
    typer.Option(
        "--msgs",
        "-m",
        envvar=_env("BENCH_MSGS"),
        min=0,
        metavar="N",
        help="Messages per publisher (0: run for --duration).",
        rich_help_panel=LOAD,
    ),
]
Duration = Annotated[
    float,
    typer.Option(
        "--duration",
        "-d",
        envvar=_env("BENCH_DURATION"),
        min=0.0,
        metavar="SECONDS",
        help="How long to run when --msgs is 0.",
        rich_help_panel=LOAD,
    ),
]
Size = Annotated[
    int,
    typer.Option(
        "--size",
        "-s",
        envvar=_env("BENCH_SIZE"),
        min=MIN_SIZE,
        metavar="BYTES",
        help=f"Message size (at least {MIN_SIZE}).",
        rich_help_panel=LOAD,
    ),
]
Rate = Annotated[
    float,
    typer.Option(
        "--rate",
        envvar=_env("BENCH_RATE"),
        min=0.0,
        metavar="PER_SEC",
        help="Messages a second per publisher (0: no limit).",
        rich_help_panel=LOAD,
    ),
]
Warmup = Annotated[
    float,
    typer.Option(
        "--warmup",
        envvar=_env("BENCH_WARMUP"),
        min=0.0,
        metavar="SECONDS",
        help="Seconds of load before measuring.",
        rich_help_panel=LOAD,
    ),
]
Workers = Annotated[
    int,
    typer.Option(
        "--workers",
        "-w",
        envvar=_env("BENCH_WORKERS"),
        min=1,
        metavar="N",
        help="Load-generator processes.",
        rich_help_panel=LOAD,
    ),
]
Csv = Annotated[
    Path | None,
    typer.Option(
        "--csv",
        envvar=_env("BENCH_CSV"),
        metavar="FILE",
        help="Also write the results to this CSV file.",
        rich_help_panel=OUTPUT,
    ),
]
Sweep = Annotated[
    str | None,
    typer.Option(
        "--sweep",
        envvar=_env("BENCH_SWEEP"),
        metavar="OPTION=V1,V2",
        help="Run a series, e.g. sub=1,10,100.",
        rich_help_panel=OUTPUT,
    ),
]

# bot -----------------------------------------------------------------------------------------
BotNick = Annotated[
    str,
    typer.Option(
        "--nick",
        "-n",
        envvar=_env("BOT_NICK"),
        metavar="NICK",
        help="The bot's nick.",
        rich_help_panel=IDENTITY,
    ),
]
BackendOpt = Annotated[
    BackendName,
    typer.Option(
        "--backend",
        envvar=_env("BOT_BACKEND"),
        click_type=_Choice(BackendName, "unknown backend {value!r}: choose one of {choices}"),
        metavar="NAME",
        help="offline, openai or local.",
        rich_help_panel=BACKEND,
    ),
]
BaseUrl = Annotated[
    str,
    typer.Option(
        "--base-url",
        envvar=_env("BOT_BASE_URL"),
        metavar="URL",
        help="OpenAI-compatible API root (http://HOST:PORT/v1).",
        rich_help_panel=BACKEND,
    ),
]
Model = Annotated[
    str | None,
    typer.Option(
        "--model",
        envvar=_env("BOT_MODEL"),
        metavar="NAME",
        help="Model name (openai), or GGUF path (local).",
        rich_help_panel=BACKEND,
    ),
]
EveryLines = Annotated[
    int | None,
    typer.Option(
        "--every-lines",
        envvar=_env("BOT_EVERY_LINES"),
        min=1,
        metavar="N",
        help="Speak after every N messages in a room.",
        rich_help_panel=MANNERS,
    ),
]
EverySeconds = Annotated[
    float | None,
    typer.Option(
        "--every-seconds",
        envvar=_env("BOT_EVERY_SECONDS"),
        min=1.0,
        metavar="SECONDS",
        help="Speak every N seconds while a room is active.",
        rich_help_panel=MANNERS,
    ),
]
SystemPrompt = Annotated[
    str | None,
    typer.Option(
        "--system",
        envvar=_env("BOT_SYSTEM"),
        metavar="TEXT",
        help="System prompt, or @FILE.",
        rich_help_panel=BACKEND,
    ),
]
Knowledge = Annotated[
    Path | None,
    typer.Option(
        "--knowledge",
        envvar=_env("BOT_KNOWLEDGE"),
        metavar="FILE",
        help="What the offline backend answers from (default: the guide).",
        rich_help_panel=BACKEND,
    ),
]
ContextMessages = Annotated[
    int,
    typer.Option(
        "--context",
        envvar=_env("BOT_CONTEXT"),
        min=1,
        metavar="N",
        help="Recent messages kept per room as context.",
        rich_help_panel=MANNERS,
    ),
]
ContextChars = Annotated[
    int,
    typer.Option(
        "--context-chars",
        envvar=_env("BOT_CONTEXT_CHARS"),
        min=100,
        metavar="N",
        help="Characters of that context at most.",
        rich_help_panel=MANNERS,
    ),
]
ReplyRate = Annotated[
    float,
    typer.Option(
        "--reply-rate",
        envvar=_env("BOT_REPLY_RATE"),
        min=0.0,
        metavar="PER_MIN",
        help="Replies a minute at most.",
        rich_help_panel=MANNERS,
    ),
]
MaxReply = Annotated[
    int,
    typer.Option(
        "--max-reply",
        envvar=_env("BOT_MAX_REPLY"),
        min=20,
        metavar="N",
        help="Longest reply, in characters.",
        rich_help_panel=MANNERS,
    ),
]
OnFailureOpt = Annotated[
    OnFailure,
    typer.Option(
        "--on-failure",
        envvar=_env("BOT_ON_FAILURE"),
        click_type=_Choice(OnFailure, "--on-failure must be one of {choices}, not {value!r}"),
        metavar="MODE",
        help="When the backend fails: notice (say so) or silent.",
        rich_help_panel=BACKEND,
    ),
]
ReplyTimeout = Annotated[
    float,
    typer.Option(
        "--reply-timeout",
        envvar=_env("BOT_REPLY_TIMEOUT"),
        min=0.1,
        metavar="SECONDS",
        help="Time a reply may take; then what came, or the failure notice.",
        rich_help_panel=BACKEND,
    ),
]
ReactionTime = Annotated[
    float,
    typer.Option(
        "--reaction-time",
        envvar=_env("BOT_REACTION_TIME"),
        min=0.01,
        metavar="SECONDS",
        help="A reply to the bot sooner than this is a machine's (loop guard).",
        rich_help_panel=MANNERS,
    ),
]
BotIgnore = Annotated[
    list[str] | None,
    typer.Option(
        "--ignore",
        envvar=_env("BOT_IGNORE"),
        metavar="NICK",
        help="Never answer this nick (repeat for several; *bot always).",
        rich_help_panel=MANNERS,
    ),
]

# accounts --------------------------------------------------------------------------------------
AccountName = Annotated[
    str,
    typer.Argument(
        help="The account's name; it follows the nick rules and reserves that nick (any case).",
        show_default=False,
    ),
]
