"""The `chatctl` command line: thin by design.

Each command parses its options (all defined in options.py), calls one library function, and
turns a ChatctlError into one line on stderr and its exit code (errors.ExitCode). Library
modules are imported inside the commands so that `chatctl --help` and `chatctl send` start fast.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click
import typer
import typer.core

from chatctl import options as o
from chatctl.bench.params import Params
from chatctl.bot.config import BotConfig, BrainSettings
from chatctl.errors import ChatctlError, ExitCode
from chatctl.protocol import DEFAULT_HOST, DEFAULT_PORT
from chatctl.server.config import DEFAULT_ROOM, ServerConfig

if TYPE_CHECKING:
    from chatctl.address import Address
    from chatctl.client.trust import ServerTrust
    from chatctl.userconfig import Layer

# Once, in the root help (and the README): errors.ExitCode.
EXIT_CODES_HELP = "\n\n".join(
    [
        "[bold]Exit codes[/bold]",
        "0  ok (send: delivered)            5  rejected by the server",
        "1  any other error                 6  timed out",
        "2  bad options or arguments        7  bench: messages lost",
        "3  send: nobody received it        8  send: the nick was taken",
        "4  could not connect, or lost    130  interrupted (Ctrl-C)",
        "",
        "Every option can also be set with the CHATCTL_* variable its --help shows.",
    ]
)

ACCOUNTS_HELP = (
    "The password is never an argument: it comes from $CHATCTL_PASSWORD if set; on a "
    "terminal it is asked twice; otherwise it is the first line of stdin "
    "(printf 'secret\\n' | chatctl accounts add alice)."
)


class Command(typer.core.TyperCommand):
    """A command whose --help fits 80 columns, two lines an option: Typer's, but without the
    accepted range of each number in the column beside the option (it would halve the width
    left for the help; the help gives a range that matters, and a value outside it is refused
    with the range), and with the option's CHATCTL_* variable and default on one line under
    its help rather than one line each (tests/test_cli_help.py holds it to that)."""

    def format_help(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        from typer import rich_utils  # here: only --help pays for rich

        shown: Any = getattr(rich_utils, "RANGE_STRING", None)
        cell: Any = getattr(rich_utils, "_get_parameter_help", None)
        if shown is None or cell is None:  # another Typer: its own layout, as it is
            super().format_help(ctx, formatter)
            return
        rich_utils.RANGE_STRING = ""
        rich_utils._get_parameter_help = _two_lines(cell)
        try:
            super().format_help(ctx, formatter)
        finally:
            rich_utils.RANGE_STRING = shown
            rich_utils._get_parameter_help = cell


def _two_lines(parameter_help: Callable[..., Any]) -> Callable[..., Any]:
    """Typer's help cell of an option (its help, then "[env var: ...]", "[default: ...]" and
    so on, laid out together as rich Columns), as the help on its lines, then the bracketed
    items side by side where they fit (never one cut in two)."""
    from rich.columns import Columns
    from rich.console import Group
    from rich.text import Text

    def cell(**kwargs: Any) -> Any:
        columns = parameter_help(**kwargs)
        items = list(getattr(columns, "renderables", ()))
        if len(items) < 2 or not all(isinstance(item, Text) for item in items):
            return columns
        help_text, *rest = items
        if help_text.plain.startswith("["):  # no help: the bracketed items are all there is
            return Columns(items)
        return Group(help_text, Columns(rest))

    return cell


app = typer.Typer(
    name="chatctl",
    help="A chat server, its clients, a load generator and a bot, over one wire protocol.",
    epilog=EXIT_CODES_HELP,
    rich_markup_mode="rich",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.callback()
def root(
    version: o.Version = None,
) -> None:
    """chatctl: serve, join, send, bench and bot."""


def _servers(
    text: str, port: int, tls_ca: str | None, tls_fingerprint: str | None
) -> tuple[list[Address], ServerTrust | None]:
    """A client command's server addresses, in order (address.py: one, or several
    comma-separated), and what the tls:// ones trust (each for its own HOST:PORT)."""
    from chatctl.address import parse_addresses
    from chatctl.client.trust import client_trust

    addresses = parse_addresses(text, port)
    return addresses, client_trust(any(a.tls for a in addresses), tls_ca, tls_fingerprint)


def _password(account: str | None, addresses: list[Address]) -> str:
    """The password for --account: $CHATCTL_PASSWORD, or asked for on a terminal (once, for
    every server)."""
    if not account:
        return ""
    from chatctl.ui.login import account_password

    return account_password(account, ",".join(dict.fromkeys(a.host for a in addresses)))


def _with_saved(
    ctx: typer.Context, command: str, host_given: bool | None = None, **values: Any
) -> dict[str, Any]:
    """`values` (the command's HOST, nick, rooms, account and TLS settings, by parameter name)
    with the saved server that HOST, --server or $CHATCTL_SERVER names merged in (userconfig.py
    has the rules). `host_given`: for a command whose HOST is no parameter of its own (send),
    whether the command line gave one. A config file that cannot be used, or a saved server
    that does not exist, ends the command: one line, exit 2."""
    try:
        return _merge_saved(ctx, command, host_given, values)
    except ChatctlError as exc:
        raise _fail(exc) from None


def _merge_saved(
    ctx: typer.Context, command: str, host_given: bool | None, values: dict[str, Any]
) -> dict[str, Any]:
    from click.core import ParameterSource

    server = ctx.params.get("server")
    host = values["host"]
    if host_given is None:
        host_given = ctx.get_parameter_source("host") is ParameterSource.COMMANDLINE
    if not server and not host_given:
        return values  # nothing names a saved server: the file is not even read
    from chatctl import userconfig as uc

    server_layer = _layer(ctx, "server")
    could_be_name = host_given and uc.name_problem(host) is None
    if not could_be_name and (not server or (host_given and server_layer is not uc.Layer.FLAG)):
        return values  # HOST is an address, and only $CHATCTL_SERVER (which it beats) names one
    config = uc.load()
    host_is_name = could_be_name and config is not None and host in config.servers
    path = str(uc.config_path()) if config is None else config.path
    chosen = uc.choose(host, host_given, host_is_name, server, server_layer, path)
    if chosen is None:
        return values
    if config is None:
        raise uc.ConfigError(path, f"no saved server {chosen!r}: there is no such file")
    layers = {name: _layer(ctx, name) for name in values if name in ctx.params}
    layers["host"] = uc.host_layer(
        uc.Layer.FLAG if host_given else layers.get("host", uc.Layer.DEFAULT), host_is_name
    )
    given = {name: (value, layers.get(name, uc.Layer.DEFAULT)) for name, value in values.items()}
    return uc.merge(given, uc.saved_values(command, config.server(chosen)))


def _layer(ctx: typer.Context, name: str) -> Layer:
    """Where the command line parser found parameter `name`: a flag, a CHATCTL_* variable or
    the default."""
    from click.core import ParameterSource

    from chatctl.userconfig import Layer

    source = ctx.get_parameter_source(name)
    if source in (ParameterSource.COMMANDLINE, ParameterSource.PROMPT):
        return Layer.FLAG
    if source is ParameterSource.ENVIRONMENT:
        return Layer.ENV
    return Layer.DEFAULT


def _fail(exc: ChatctlError) -> typer.Exit:
    print(f"chatctl: {exc}", file=sys.stderr)
    return typer.Exit(int(exc.exit_code))


def run(action: Callable[[], int | None]) -> None:
    """Call the library; map its errors to one line on stderr and an exit code."""
    try:
        code = action()
    except ChatctlError as exc:
        raise _fail(exc) from None
    except KeyboardInterrupt:
        raise typer.Exit(int(ExitCode.INTERRUPTED)) from None
    raise typer.Exit(code or 0)


@app.command(cls=Command)
def serve(
    host: o.ServeHosts = None,
    port: o.ServePort = ServerConfig.port,
    name: o.ServerName = ServerConfig.name,
    log_level: o.LogLevelOpt = ServerConfig.log_level,
    log_format: o.LogFormatOpt = ServerConfig.log_format,
    max_frame: o.MaxFrame = ServerConfig.max_frame,
    max_text: o.MaxText = ServerConfig.max_text,
    max_output: o.MaxOutput = ServerConfig.max_output,
    handshake_timeout: o.HandshakeTimeout = ServerConfig.handshake_timeout,
    ping_interval: o.PingInterval = ServerConfig.ping_interval,
    idle_timeout: o.IdleTimeout = ServerConfig.idle_timeout,
    rate: o.RateLimit = ServerConfig.rate,
    burst: o.Burst = ServerConfig.burst,
    ipv4_prefix: o.Ipv4Prefix = ServerConfig.ipv4_prefix,
    ipv6_prefix: o.Ipv6Prefix = ServerConfig.ipv6_prefix,
    connect_rate: o.ConnectRate = ServerConfig.connect_rate,
    connect_burst: o.ConnectBurst = ServerConfig.connect_burst,
    max_connections: o.MaxConnections = ServerConfig.max_connections,
    max_per_ip: o.MaxPerIp = ServerConfig.max_per_ip,
    total_output: o.TotalOutput = ServerConfig.total_output,
    data: o.DataDir = None,
    join_history: o.JoinHistory = ServerConfig.join_history,
    replay_limit: o.ReplayLimit = ServerConfig.replay_limit,
    max_rooms: o.MaxRooms = ServerConfig.max_rooms,
    total_rooms: o.TotalRooms = ServerConfig.total_rooms,
    room_rate: o.RoomRate = ServerConfig.room_rate,
    room_burst: o.RoomBurst = ServerConfig.room_burst,
    retain_messages: o.RetainMessages = ServerConfig.retain_messages,
    retain_age: o.RetainAge = ServerConfig.retain_age,
    node_lease: o.NodeLease = ServerConfig.node_lease,
    redis_replicas: o.RedisReplicas = ServerConfig.redis_replicas,
    snapshot_every: o.SnapshotEvery = ServerConfig.snapshot_every,
    tls_cert: o.TlsCert = None,
    tls_key: o.TlsKey = None,
    tls_self_signed: o.TlsSelfSigned = False,
    auth: o.AuthOpt = ServerConfig.auth,
    registration: o.RegistrationOpt = ServerConfig.registration,
) -> None:
    """Run the chat server (one thread, an epoll event loop)."""
    config = ServerConfig(
        hosts=tuple(host or ServerConfig.hosts),
        port=port,
        name=name,
        log_level=log_level,
        log_format=log_format,
        max_frame=max_frame,
        max_text=max_text,
        max_output=max_output,
        handshake_timeout=handshake_timeout,
        ping_interval=ping_interval,
        idle_timeout=idle_timeout,
        rate=rate,
        burst=burst,
        ipv4_prefix=ipv4_prefix,
        ipv6_prefix=ipv6_prefix,
        connect_rate=connect_rate,
        connect_burst=connect_burst,
        max_connections=max_connections,
        max_per_ip=max_per_ip,
        total_output=total_output,
        data=data,
        join_history=join_history,
        replay_limit=replay_limit,
        max_rooms=max_rooms,
        total_rooms=total_rooms,
        room_rate=room_rate,
        room_burst=room_burst,
        retain_messages=retain_messages,
        retain_age=retain_age,
        node_lease=node_lease,
        redis_replicas=redis_replicas,
        snapshot_every=snapshot_every,
        tls_cert=tls_cert,
        tls_key=tls_key,
        tls_self_signed=tls_self_signed,
        auth=auth,
        registration=registration,
    )

    def action() -> int | None:
        from chatctl.server.main import serve as serve_forever

        return serve_forever(config)

    run(action)


@app.command(cls=Command)
def join(
    ctx: typer.Context,
    host: o.HostArg = DEFAULT_HOST,
    server: o.Server = None,
    port: o.Port = DEFAULT_PORT,
    nick: o.Nick = None,
    room: o.Rooms = None,
    fmt: o.Format = o.OutputFormat.text,
    count: o.Count = None,
    timeout: o.Timeout = None,
    reconnect: o.Reconnect = False,
    history: o.HistoryCount = None,
    connect_timeout: o.ConnectTimeout = 5.0,
    tls_ca: o.TlsCa = None,
    account: o.Account = None,
    tls_fingerprint: o.TlsFingerprint = None,
    log_dir: o.LogDir = None,
    timestamp_format: o.TimestampFormat = "%H:%M:%S",
) -> None:
    """Chat interactively; in a pipe, send stdin lines and print events one per line."""
    saved = _with_saved(
        ctx,
        "join",
        host=host,
        nick=nick,
        room=room,
        account=account,
        tls_ca=tls_ca,
        tls_fingerprint=tls_fingerprint,
    )
    host, nick, room, account = saved["host"], saved["nick"], saved["room"], saved["account"]
    tls_ca, tls_fingerprint = saved["tls_ca"], saved["tls_fingerprint"]

    def action() -> int | None:
        from chatctl.ui.join import run_join

        addresses, tls = _servers(host, port, tls_ca, tls_fingerprint)
        return run_join(
            addresses=addresses,
            tls=tls,
            account=account or "",
            password=_password(account, addresses),
            nick=nick,
            rooms=room or [DEFAULT_ROOM],
            fmt=fmt.value,
            count=count,
            timeout=timeout,
            reconnect=reconnect,
            history=history,
            connect_timeout=connect_timeout,
            timestamp=timestamp_format,
            log_dir=log_dir,
        )

    run(action)


@app.command(cls=Command)
def send(
    ctx: typer.Context,
    args: o.SendArgs = None,
    server: o.Server = None,
    port: o.Port = DEFAULT_PORT,
    room: o.SendRoom = None,
    to: o.SendTo = None,
    nick: o.SendNick = None,
    count: o.SendCount = 1,
    json_out: o.Json = False,
    require_recipient: o.RequireRecipient = False,
    require_nick: o.RequireNick = False,
    action_: o.Action = False,
    timeout: o.Timeout = 10.0,
    connect_timeout: o.ConnectTimeout = 5.0,
    tls_ca: o.TlsCa = None,
    account: o.Account = None,
    tls_fingerprint: o.TlsFingerprint = None,
) -> None:
    """Send one message, wait for the server's ack and print a receipt."""
    positional = args or []
    if len(positional) > 2:
        raise typer.BadParameter("give at most HOST and MESSAGE (quote a message with spaces)")
    if room is not None and to is not None:
        raise typer.BadParameter("give --room or --to, not both")
    host = positional[0] if len(positional) == 2 else o.default_host()
    message = positional[-1] if positional else None
    saved = _with_saved(
        ctx,
        "send",
        host_given=len(positional) == 2,
        host=host,
        nick=nick,
        room=room,
        account=account,
        tls_ca=tls_ca,
        tls_fingerprint=tls_fingerprint,
    )
    host, nick, room, account = saved["host"], saved["nick"], saved["room"], saved["account"]
    tls_ca, tls_fingerprint = saved["tls_ca"], saved["tls_fingerprint"]

    def action() -> int | None:
        from chatctl.ui.send import run_send

        addresses, tls = _servers(host, port, tls_ca, tls_fingerprint)
        return run_send(
            message=message,
            addresses=addresses,
            tls=tls,
            account=account or "",
            password=_password(account, addresses),
            room=room or DEFAULT_ROOM,
            to=to,
            nick=nick,
            count=count,
            json_out=json_out,
            require_recipient=require_recipient,
            require_nick=require_nick,
            action=action_,
            timeout=timeout,
            connect_timeout=connect_timeout,
        )

    run(action)


@app.command(cls=Command)
def bench(
    scenario: o.ScenarioArg = Params.scenario,
    target: o.Target = None,
    pub: o.Publishers = Params.publishers,
    sub: o.Subscribers = Params.subscribers,
    clients: o.Clients = Params.clients,
    rooms: o.BenchRooms = Params.rooms,
    room: o.BenchRoom = Params.room,
    msgs: o.Messages = Params.messages,
    duration: o.Duration = Params.duration,
    size: o.Size = Params.size,
    rate: o.Rate = Params.rate,
    warmup: o.Warmup = Params.warmup,
    workers: o.Workers = Params.workers,
    json_out: o.Json = False,
    csv: o.Csv = None,
    sweep: o.Sweep = None,
    tls_ca: o.TlsCa = None,
) -> None:
    """Load-test a chatctl, Redis or NATS server and verify nothing was lost.

    Without --target, a chatctl server is started for the run. With several
    chatctl nodes of one cluster (--target chat://h1:1060,chat://h2:1060),
    publishers and subscribers are dealt to the nodes round-robin, and a
    connection whose node goes away resumes on the next node of the list."""
    params = Params(
        scenario=scenario,
        publishers=pub,
        subscribers=sub,
        clients=clients,
        rooms=rooms,
        messages=msgs,
        duration=duration,
        size=size,
        rate=rate,
        warmup=warmup,
        workers=workers,
        room=room,
    )

    def action() -> int | None:
        from chatctl.bench.command import run_bench

        return run_bench(
            params, target=target, tls_ca=tls_ca, json_out=json_out, csv_path=csv, sweep=sweep
        )

    run(action)


@app.command(cls=Command)
def bot(
    ctx: typer.Context,
    host: o.HostArg = DEFAULT_HOST,
    server: o.Server = None,
    port: o.Port = DEFAULT_PORT,
    nick: o.BotNick = BrainSettings.nick,
    room: o.Rooms = None,
    backend: o.BackendOpt = BotConfig.backend,
    base_url: o.BaseUrl = BotConfig.base_url,
    model: o.Model = BotConfig.model,
    every_lines: o.EveryLines = BrainSettings.every_lines,
    every_seconds: o.EverySeconds = BrainSettings.every_seconds,
    system: o.SystemPrompt = BotConfig.system,
    knowledge: o.Knowledge = BotConfig.knowledge,
    context: o.ContextMessages = BrainSettings.context_messages,
    context_chars: o.ContextChars = BrainSettings.context_chars,
    reply_rate: o.ReplyRate = BrainSettings.reply_rate,
    max_reply: o.MaxReply = BrainSettings.max_reply,
    on_failure: o.OnFailureOpt = BotConfig.on_failure,
    reply_timeout: o.ReplyTimeout = BotConfig.reply_timeout,
    reaction_time: o.ReactionTime = BrainSettings.reaction_time,
    ignore: o.BotIgnore = None,
    tls_ca: o.TlsCa = None,
    account: o.Account = None,
    tls_fingerprint: o.TlsFingerprint = None,
) -> None:
    """Run an AI participant that answers in the chat (offline by default)."""
    from click.core import ParameterSource

    from chatctl.address import parse_addresses

    saved = _with_saved(
        ctx, "bot", host=host, room=room, tls_ca=tls_ca, tls_fingerprint=tls_fingerprint
    )
    host, room = saved["host"], saved["room"]
    tls_ca, tls_fingerprint = saved["tls_ca"], saved["tls_fingerprint"]
    try:
        addresses = parse_addresses(host, port)
    except ChatctlError as exc:
        raise typer.BadParameter(str(exc)) from None
    if account and ctx.get_parameter_source("nick") is ParameterSource.DEFAULT:
        nick = account  # logged in, the bot is called by its account's name
    config = BotConfig(
        servers=tuple(addresses),
        tls_ca=tls_ca,
        tls_fingerprint=tls_fingerprint,
        rooms=tuple(room or BotConfig.rooms),
        backend=backend,
        base_url=base_url,
        model=model,
        system=system,
        knowledge=knowledge,
        on_failure=on_failure,
        reply_timeout=reply_timeout,
        account=account or "",
        brain=BrainSettings(
            nick=nick,
            every_lines=every_lines,
            every_seconds=every_seconds,
            context_messages=context,
            context_chars=context_chars,
            reply_rate=reply_rate,
            max_reply=max_reply,
            reaction_time=reaction_time,
            ignore=tuple(ignore or BrainSettings.ignore),
        ),
    )

    def action() -> int | None:
        from chatctl.bot.runner import run_bot

        return run_bot(dataclasses.replace(config, password=_password(account, addresses)))

    run(action)


accounts_app = typer.Typer(
    name="accounts",
    help="Add, change and remove a server's accounts (safe while it runs).",
    epilog=ACCOUNTS_HELP,
    rich_markup_mode="rich",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(accounts_app, name="accounts")


@accounts_app.command("add", epilog=ACCOUNTS_HELP, cls=Command)
def accounts_add(name: o.AccountName, data: o.DataDir = None) -> None:
    """Create an account (the name may not exist in any case)."""

    def action() -> int | None:
        from chatctl.server import accounts

        accounts.add(data, name, lambda: accounts.read_password(name))
        return 0

    run(action)


@accounts_app.command("passwd", epilog=ACCOUNTS_HELP, cls=Command)
def accounts_passwd(name: o.AccountName, data: o.DataDir = None) -> None:
    """Set an existing account's password."""

    def action() -> int | None:
        from chatctl.server import accounts

        accounts.passwd(data, name, lambda: accounts.read_password(name))
        return 0

    run(action)


@accounts_app.command("remove", epilog=ACCOUNTS_HELP, cls=Command)
def accounts_remove(name: o.AccountName, data: o.DataDir = None) -> None:
    """Delete an account."""

    def action() -> int | None:
        from chatctl.server import accounts

        accounts.remove(data, name)
        return 0

    run(action)


@accounts_app.command("list", epilog=ACCOUNTS_HELP, cls=Command)
def accounts_list(data: o.DataDir = None, json_out: o.Json = False) -> None:
    """Print each account's name and creation time (UTC), one a line, by name."""

    def action() -> int | None:
        from chatctl.server import accounts

        accounts.list_accounts(data, json_out=json_out)
        return 0

    run(action)


config_app = typer.Typer(
    name="config",
    help="Saved servers: show where the config file is and what it holds (checked).",
    epilog="Use one: `chatctl join NAME`, `chatctl send -s NAME MESSAGE` (docs/join.md).",
    subcommand_metavar="[path]",
    rich_markup_mode="rich",
    invoke_without_command=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(config_app, name="config")


@config_app.callback()
def config_show(ctx: typer.Context, json_out: o.Json = False) -> None:
    """Show the config file's path and its saved servers (checked: a mistake is one line with
    the file and line, exit 2)."""
    if ctx.invoked_subcommand is not None:
        return

    def action() -> int | None:
        from chatctl import userconfig

        path = userconfig.config_path()
        config = userconfig.load(path)
        if json_out:
            print(userconfig.to_json(config, path))
        else:
            print(userconfig.describe(config, path), end="")
        return 0

    run(action)


@config_app.command("path", cls=Command)
def config_path() -> None:
    """Print the config file's path (it need not exist): $EDITOR "$(chatctl config path)"."""
    from chatctl.userconfig import config_path as path

    print(path())


def main() -> None:
    app()
