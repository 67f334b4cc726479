"""Every command-line option and its CHATCTL_* environment variable, in one place.

Commands in cli.py take these Annotated aliases as parameter types; nothing else defines an
option name. A new option goes here, next to its siblings.
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


# Shared by several commands ------------------------------------------------------------------
HostArg = Annotated[
    str,
    typer.Argument(
        envvar=_env("HOST"),
        help="Server: HOST, HOST:PORT, [IPV6]:PORT, chat://HOST:PORT or tls://HOST:PORT; or several, comma-separated, tried in order (failover).",
        show_default=True,
    ),
]
Port = Annotated[
    int, typer.Option("--port", "-p", envvar=_env("PORT"), min=0, max=65535, help="TCP port.")
]
Nick = Annotated[
    str | None,
    typer.Option(
        "--nick",
        "-n",
        envvar=_env("NICK"),
        help="Nick to use (default: the --account name; else join asks on a terminal, or the "
        "login name).",
    ),
]
Rooms = Annotated[
    list[str] | None,
    typer.Option(
        "--room",
        "-r",
        envvar=_env("ROOM"),
        help="Room to join; repeat for several. Default: lobby.",
    ),
]
Timeout = Annotated[
    float | None,
    typer.Option(
        "--timeout", "-t", envvar=_env("TIMEOUT"), min=0.0, help="Give up after this many seconds."
    ),
]
ConnectTimeout = Annotated[
    float,
    typer.Option(
        "--connect-timeout",
        envvar=_env("CONNECT_TIMEOUT"),
        min=0.0,
        help="Seconds to wait for the TCP connect and handshake.",
    ),
]
Format = Annotated[
    OutputFormat,
    typer.Option(
        "--format",
        "-f",
        envvar=_env("FORMAT"),
        help="Output format in a pipe: text, or JSON Lines.",
    ),
]
Json = Annotated[
    bool, typer.Option("--json", envvar=_env("JSON"), help="Print machine-readable JSON on stdout.")
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

# serve -----------------------------------------------------------------------------------------
ServeHosts = Annotated[
    list[str] | None,
    typer.Option(
        "--host",
        "-H",
        envvar=_env("HOST"),
        help=f"Address to listen on; repeat for several (e.g. ::1 for IPv6). Default: {DEFAULT_HOST}.",
    ),
]
ServerName = Annotated[
    str, typer.Option("--name", envvar=_env("SERVER_NAME"), help="Server name sent in the welcome.")
]
LogLevelOpt = Annotated[
    LogLevel,
    typer.Option("--log-level", envvar=_env("LOG_LEVEL"), help="Least severe log level shown."),
]
LogFormatOpt = Annotated[
    LogFormat,
    typer.Option(
        "--log-format",
        envvar=_env("LOG_FORMAT"),
        help="rich for people, json (one object a line) for machines.",
    ),
]
MaxFrame = Annotated[
    int,
    typer.Option(
        "--max-frame",
        envvar=_env("MAX_FRAME"),
        min=256,
        max=4 * 1024 * 1024,
        help="Largest frame body accepted, in bytes.",
    ),
]
MaxText = Annotated[
    int,
    typer.Option(
        "--max-text", envvar=_env("MAX_TEXT"), min=1, help="Longest message text, in UTF-8 bytes."
    ),
]
MaxOutput = Annotated[
    int,
    typer.Option(
        "--max-output",
        envvar=_env("MAX_OUTPUT"),
        min=1024,
        help="Output-buffer high-water mark per connection, in bytes; a slower reader is disconnected.",
    ),
]
HandshakeTimeout = Annotated[
    float,
    typer.Option(
        "--handshake-timeout",
        envvar=_env("HANDSHAKE_TIMEOUT"),
        min=0.1,
        help="Seconds a new connection has to complete its Hello.",
    ),
]
PingInterval = Annotated[
    float,
    typer.Option(
        "--ping-interval",
        envvar=_env("PING_INTERVAL"),
        min=0.1,
        help="Seconds of silence before the server pings a client.",
    ),
]
IdleTimeout = Annotated[
    float,
    typer.Option(
        "--idle-timeout",
        envvar=_env("IDLE_TIMEOUT"),
        min=0.1,
        help="Seconds of silence (pings unanswered) before a client is dropped.",
    ),
]
RateLimit = Annotated[
    float,
    typer.Option(
        "--rate",
        envvar=_env("RATE"),
        min=0.0,
        help="Frames a second each client address may send on average, all its connections "
        "together (0: no limit).",
    ),
]
Burst = Annotated[
    int,
    typer.Option(
        "--burst",
        envvar=_env("BURST"),
        min=1,
        help="Frames a client address may send at once before the rate applies.",
    ),
]
Ipv4Prefix = Annotated[
    int,
    typer.Option(
        "--ipv4-prefix",
        envvar=_env("IPV4_PREFIX"),
        min=8,
        max=32,
        help="IPv4 addresses counted as one client: those sharing this many leading bits.",
    ),
]
Ipv6Prefix = Annotated[
    int,
    typer.Option(
        "--ipv6-prefix",
        envvar=_env("IPV6_PREFIX"),
        min=16,
        max=128,
        help="IPv6 addresses counted as one client: those sharing this many leading bits.",
    ),
]
ConnectRate = Annotated[
    float,
    typer.Option(
        "--connect-rate",
        envvar=_env("CONNECT_RATE"),
        min=0.0,
        help="New connections a second per client address (0: no limit).",
    ),
]
ConnectBurst = Annotated[
    int,
    typer.Option(
        "--connect-burst",
        envvar=_env("CONNECT_BURST"),
        min=1,
        help="New connections a client address may open at once before --connect-rate applies.",
    ),
]
TotalRooms = Annotated[
    int,
    typer.Option(
        "--total-rooms",
        envvar=_env("TOTAL_ROOMS"),
        min=0,
        help="Rooms the server holds in all, with history or members (0: no limit).",
    ),
]
RoomRate = Annotated[
    float,
    typer.Option(
        "--room-rate",
        envvar=_env("ROOM_RATE"),
        min=0.0,
        help="New rooms a second a client address may create (0: no limit).",
    ),
]
RoomBurst = Annotated[
    int,
    typer.Option(
        "--room-burst",
        envvar=_env("ROOM_BURST"),
        min=1,
        help="New rooms a client address may create at once before --room-rate applies.",
    ),
]
TotalOutput = Annotated[
    int,
    typer.Option(
        "--total-output",
        envvar=_env("TOTAL_OUTPUT"),
        min=1024,
        help="Bytes queued for all connections together; past it the biggest queues are "
        "dropped first.",
    ),
]
MaxConnections = Annotated[
    int,
    typer.Option(
        "--max-connections",
        envvar=_env("MAX_CONNECTIONS"),
        min=1,
        help="Connections held at once, in total (bounded by the open-files limit).",
    ),
]
MaxPerIp = Annotated[
    int,
    typer.Option(
        "--max-per-ip",
        envvar=_env("MAX_PER_IP"),
        min=1,
        help="Connections held at once by one client address (raise it for load tests from "
        "loopback).",
    ),
]
DataDir = Annotated[
    str | None,
    typer.Option(
        "--data",
        envvar=_env("DATA"),
        help="Data directory: history and accounts (default: XDG state dir). For serve, "
        ":memory: keeps nothing: after a restart every room starts again at sequence number 1.",
    ),
]
JoinHistory = Annotated[
    int,
    typer.Option(
        "--join-history",
        envvar=_env("JOIN_HISTORY"),
        min=0,
        help="Messages replayed to a client joining a room (0: none).",
    ),
]
ReplayLimit = Annotated[
    int,
    typer.Option(
        "--replay-limit",
        envvar=_env("REPLAY_LIMIT"),
        min=1,
        help="Most messages one join or history request replays (clients page for more).",
    ),
]
MaxRooms = Annotated[
    int,
    typer.Option(
        "--max-rooms", envvar=_env("MAX_ROOMS"), min=1, help="Rooms one connection may be in."
    ),
]
RetainMessages = Annotated[
    int,
    typer.Option(
        "--retain-messages",
        envvar=_env("RETAIN_MESSAGES"),
        min=0,
        help="Messages kept per room (0: no limit).",
    ),
]
RetainAge = Annotated[
    float,
    typer.Option(
        "--retain-age",
        envvar=_env("RETAIN_AGE"),
        min=0.0,
        help="Seconds a message is kept (0: no limit).",
    ),
]

TlsCert = Annotated[
    str | None,
    typer.Option(
        "--tls-cert",
        envvar=_env("TLS_CERT"),
        help="Speak TLS with this certificate (PEM, the chain after it); needs --tls-key.",
    ),
]
TlsKey = Annotated[
    str | None,
    typer.Option("--tls-key", envvar=_env("TLS_KEY"), help="The private key of --tls-cert (PEM)."),
]
TlsSelfSigned = Annotated[
    bool,
    typer.Option(
        "--tls-self-signed",
        envvar=_env("TLS_SELF_SIGNED"),
        help="Speak TLS with a self-signed certificate made once in the data directory "
        "(tls-cert.pem, tls-key.pem; in memory for this run with --data :memory:). The banner "
        "shows its SHA-256 fingerprint; clients trust it with --tls-fingerprint SHA256:... (or "
        "--tls-ca tls-cert.pem).",
    ),
]

AuthOpt = Annotated[
    AuthMode,
    typer.Option(
        "--auth",
        envvar=_env("AUTH"),
        help="Accounts: off (none), optional (guests welcome; an account's nick is reserved "
        "for it), required (only logged-in accounts). Passwords only over TLS or loopback.",
    ),
]
RegistrationOpt = Annotated[
    Registration,
    typer.Option(
        "--registration",
        envvar=_env("REGISTRATION"),
        help="closed: accounts come from `chatctl accounts add`; open: anyone may /register "
        "their nick.",
    ),
]

# clients (join, send, bot, bench) -------------------------------------------------------------------
TlsCa = Annotated[
    str | None,
    typer.Option(
        "--tls-ca",
        envvar=_env("TLS_CA"),
        help="With a tls:// address: trust this CA (PEM file) instead of the system's.",
    ),
]
Account = Annotated[
    str | None,
    typer.Option(
        "--account",
        "-a",
        envvar=_env("ACCOUNT"),
        help="Log in to this account (default nick: its name). The password comes from "
        "$CHATCTL_PASSWORD, or is asked for on a terminal; never from the command line.",
        show_default=False,
    ),
]
TlsFingerprint = Annotated[
    str | None,
    typer.Option(
        "--tls-fingerprint",
        envvar=_env("TLS_FINGERPRINT"),
        metavar="SHA256:...",
        help="With a tls:// address: the server certificate's SHA-256 fingerprint, as its "
        "banner shows it. A certificate no CA vouches for is trusted if it matches, and "
        "remembered in ~/.config/chatctl/known_servers; any certificate must match it.",
    ),
]

# join ----------------------------------------------------------------------------------------
Count = Annotated[
    int | None,
    typer.Option(
        "--count", "-c", envvar=_env("COUNT"), min=1, help="Exit after this many messages."
    ),
]
Reconnect = Annotated[
    bool,
    typer.Option(
        "--reconnect/--no-reconnect",
        envvar=_env("RECONNECT"),
        help="In a pipe, reconnect instead of exiting when the connection drops.",
    ),
]
HistoryCount = Annotated[
    int | None,
    typer.Option(
        "--history",
        envvar=_env("HISTORY"),
        min=0,
        help="Recent messages to show on joining (default: the server's).",
    ),
]

LogDir = Annotated[
    Path | None,
    typer.Option(
        "--log-dir",
        envvar=_env("LOG_DIR"),
        help="On a terminal, keep a plain-text log per room and day in this directory "
        "(made 0700; files 0600). Default: none.",
    ),
]
TimestampFormat = Annotated[
    str,
    typer.Option(
        "--timestamp-format",
        envvar=_env("TIMESTAMP_FORMAT"),
        help="strftime format of each line's time ('' for none).",
    ),
]

# send ----------------------------------------------------------------------------------------
SendArgs = Annotated[
    list[str] | None,
    typer.Argument(
        metavar="[HOST] [MESSAGE]",
        help="Server (HOST, HOST:PORT, chat:// or tls://HOST:PORT, or several comma-separated, tried in order; default $CHATCTL_HOST or 127.0.0.1) then the message; one argument is the message; '-' or none reads it from stdin (none: only from a pipe or file, not a terminal). One final newline is not part of it.",
        show_default=False,
    ),
]


def default_host() -> str:
    """The host when a command's positional HOST is left out."""
    return os.environ.get(_env("HOST"), DEFAULT_HOST)


SendRoom = Annotated[
    str | None,
    typer.Option("--room", "-r", envvar=_env("ROOM"), help="Room to send to (default: lobby)."),
]
SendTo = Annotated[
    str | None,
    typer.Option("--to", envvar=_env("TO"), help="Send a direct message to this nick instead."),
]
SendCount = Annotated[
    int, typer.Option("--count", "-c", min=1, help="Send the message this many times.")
]
RequireRecipient = Annotated[
    bool,
    typer.Option(
        "--require-recipient",
        envvar=_env("REQUIRE_RECIPIENT"),
        help="Exit 3 if nobody else received it.",
    ),
]
RequireNick = Annotated[
    bool,
    typer.Option(
        "--require-nick",
        envvar=_env("REQUIRE_NICK"),
        help="Exit 8, sending nothing, if the server gives another nick (the one asked for is taken).",
    ),
]
SendNick = Annotated[
    str | None,
    typer.Option(
        "--nick",
        "-n",
        envvar=_env("NICK"),
        help="Nick to send as (default: the --account name, else the login name). If it is "
        "taken the server gives a variant (carol2), which the receipt names; see --require-nick.",
    ),
]
Action = Annotated[bool, typer.Option("--me", help="Send as a /me action.")]

# bench ---------------------------------------------------------------------------------------
Target = Annotated[
    str | None,
    typer.Option(
        "--target",
        envvar=_env("BENCH_TARGET"),
        help="HOST:PORT of a chatctl server (tls://HOST:PORT over TLS, see --tls-ca), redis://HOST:PORT, nats://HOST:PORT, nats+tls://HOST:PORT or irc://HOST:PORT. Default: start a local server.",
    ),
]
ScenarioArg = Annotated[
    Scenario,
    typer.Argument(
        click_type=_Choice(Scenario, "unknown scenario {value!r}: expected {choices}"),
        metavar="[SCENARIO]",
        help="fanout, room, rooms or connect.",
    ),
]
Publishers = Annotated[int, typer.Option("--pub", "-P", min=0, help="Publishers (fanout).")]
Subscribers = Annotated[int, typer.Option("--sub", "-S", min=0, help="Subscribers (fanout).")]
Clients = Annotated[
    int, typer.Option("--clients", "-N", min=1, help="Clients (room, rooms, connect).")
]
BenchRooms = Annotated[int, typer.Option("--rooms", "-R", min=1, help="Rooms (rooms).")]
BenchRoom = Annotated[
    str | None,
    typer.Option(
        "--room",
        help="Use this room (rooms: NAME-0, NAME-1, ...) instead of a new bench-RUNID-... one, "
        "so that repeated runs against a live server leave one room.",
    ),
]
Messages = Annotated[
    int, typer.Option("--msgs", "-m", min=0, help="Messages per publisher (0: run for --duration).")
]
Duration = Annotated[
    float, typer.Option("--duration", "-d", min=0.0, help="Seconds to run when --msgs is 0.")
]
Size = Annotated[int, typer.Option("--size", "-s", min=MIN_SIZE, help="Message size in bytes.")]
Rate = Annotated[
    float,
    typer.Option(
        "--rate", min=0.0, help="Messages per second per publisher (0: as fast as possible)."
    ),
]
Warmup = Annotated[
    float, typer.Option("--warmup", min=0.0, help="Seconds of load before measuring.")
]
Workers = Annotated[int, typer.Option("--workers", "-w", min=1, help="Load-generator processes.")]
Csv = Annotated[Path | None, typer.Option("--csv", help="Also write the results to this CSV file.")]
Sweep = Annotated[
    str | None, typer.Option("--sweep", help="Run a series, e.g. subscribers=1,10,100.")
]

# bot -----------------------------------------------------------------------------------------
BotNick = Annotated[
    str, typer.Option("--nick", "-n", envvar=_env("BOT_NICK"), help="The bot's nick.")
]
BackendOpt = Annotated[
    BackendName,
    typer.Option(
        "--backend",
        envvar=_env("BOT_BACKEND"),
        click_type=_Choice(BackendName, "unknown backend {value!r}: choose one of {choices}"),
        help="offline, openai or local.",
    ),
]
BaseUrl = Annotated[
    str,
    typer.Option(
        "--base-url",
        envvar=_env("BOT_BASE_URL"),
        help="OpenAI-compatible API root, e.g. http://127.0.0.1:8080/v1.",
    ),
]
Model = Annotated[
    str | None,
    typer.Option(
        "--model", envvar=_env("BOT_MODEL"), help="Model name (openai), or GGUF path (local)."
    ),
]
EveryLines = Annotated[
    int | None,
    typer.Option(
        "--every-lines",
        envvar=_env("BOT_EVERY_LINES"),
        min=1,
        help="Speak after every N messages in a room.",
    ),
]
EverySeconds = Annotated[
    float | None,
    typer.Option(
        "--every-seconds",
        envvar=_env("BOT_EVERY_SECONDS"),
        min=1.0,
        help="Speak every N seconds while a room is active.",
    ),
]
SystemPrompt = Annotated[
    str | None,
    typer.Option(
        "--system",
        envvar=_env("BOT_SYSTEM"),
        help="System prompt, or @FILE to read it from a file.",
    ),
]
Knowledge = Annotated[
    Path | None,
    typer.Option(
        "--knowledge",
        envvar=_env("BOT_KNOWLEDGE"),
        help="Markdown or text file the offline backend answers from (default: the user guide).",
    ),
]
ContextMessages = Annotated[
    int,
    typer.Option(
        "--context",
        envvar=_env("BOT_CONTEXT"),
        min=1,
        help="Recent messages kept per room as context.",
    ),
]
ContextChars = Annotated[
    int,
    typer.Option(
        "--context-chars",
        envvar=_env("BOT_CONTEXT_CHARS"),
        min=100,
        help="Character budget of that context.",
    ),
]
ReplyRate = Annotated[
    float,
    typer.Option(
        "--reply-rate", envvar=_env("BOT_REPLY_RATE"), min=0.0, help="Replies per minute at most."
    ),
]
MaxReply = Annotated[
    int,
    typer.Option(
        "--max-reply", envvar=_env("BOT_MAX_REPLY"), min=20, help="Longest reply, in characters."
    ),
]
OnFailureOpt = Annotated[
    OnFailure,
    typer.Option(
        "--on-failure",
        envvar=_env("BOT_ON_FAILURE"),
        click_type=_Choice(OnFailure, "--on-failure must be one of {choices}, not {value!r}"),
        help="notice (say so in the chat) or silent, when the backend fails.",
    ),
]
ReplyTimeout = Annotated[
    float,
    typer.Option(
        "--reply-timeout",
        envvar=_env("BOT_REPLY_TIMEOUT"),
        min=0.1,
        help="Seconds a reply may take, any backend; then what came so far, or the failure notice.",
    ),
]
ReactionTime = Annotated[
    float,
    typer.Option(
        "--reaction-time",
        envvar=_env("BOT_REACTION_TIME"),
        min=0.01,
        help="Seconds: a reply to the bot sooner than this after it spoke to that nick is a "
        "machine's (the loop guard).",
    ),
]
BotIgnore = Annotated[
    list[str] | None,
    typer.Option(
        "--ignore",
        envvar=_env("BOT_IGNORE"),
        help="Nick whose messages never trigger the bot (repeat for several); nicks ending "
        "in 'bot' are always ignored.",
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
