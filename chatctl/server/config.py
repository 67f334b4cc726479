"""Server settings and their defaults: the one source the CLI options and the tests share."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from chatctl.protocol import DEFAULT_HOST, DEFAULT_MAX_FRAME_SIZE, DEFAULT_MAX_TEXT, DEFAULT_PORT

DEFAULT_ROOM = "lobby"


class LogLevel(enum.StrEnum):
    debug = "debug"
    info = "info"
    warning = "warning"
    error = "error"


class LogFormat(enum.StrEnum):
    rich = "rich"
    json = "json"


class AuthMode(enum.StrEnum):
    off = "off"  # no accounts: nicks belong to whoever connects first, rooms to nobody
    optional = "optional"  # guests chat under free nicks; an account's nick is its own
    required = "required"  # only logged-in accounts are admitted


class Registration(enum.StrEnum):
    closed = "closed"  # accounts are made by the operator (`chatctl accounts add`)
    open = "open"  # anyone may make their nick an account in the chat (`/register`)


@dataclass(frozen=True, kw_only=True)
class ServerConfig:
    hosts: tuple[str, ...] = (DEFAULT_HOST,)
    port: int = DEFAULT_PORT
    name: str = "chatctl"
    log_level: LogLevel = LogLevel.info
    log_format: LogFormat = LogFormat.rich
    max_frame: int = DEFAULT_MAX_FRAME_SIZE
    max_text: int = DEFAULT_MAX_TEXT
    max_output: int = 1024 * 1024  # high-water mark of one connection's output queue
    handshake_timeout: float = 10.0
    ping_interval: float = 30.0
    idle_timeout: float = 90.0
    # Frames a second per client address (every kind of frame; a replay costs by its size),
    # shared by its connections and kept across reconnects; 0 = unlimited.
    rate: float = 50.0
    burst: int = 200
    # A client address: IPv4 addresses grouped by this prefix length, IPv6 by this one (a
    # /64 is what one customer usually gets).
    ipv4_prefix: int = 32
    ipv6_prefix: int = 64
    connect_rate: float = 20.0  # new connections a second per client address, 0 = unlimited
    connect_burst: int = 100
    # In total: bounded at start-up by RLIMIT_NOFILE (see server.connection_ceiling).
    max_connections: int = 100_000
    # One address (or NAT) must not be able to take the whole server; load tests from
    # loopback pass a higher --max-per-ip.
    max_per_ip: int = 1000
    data: str | None = None  # None: XDG state dir; ":memory:": no persistence
    # TLS on every listener: a certificate and its key (PEM files), or a self-signed one made
    # once in the data directory (in memory for this run with data=":memory:").
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_self_signed: bool = False
    auth: AuthMode = AuthMode.optional
    registration: Registration = Registration.closed
    join_history: int = 20
    replay_limit: int = 1000  # most messages one join or history request replays
    max_rooms: int = 100  # rooms one connection may be in at once
    total_rooms: int = 10_000  # rooms the server knows (with history or members); 0 = no cap
    room_rate: float = 1.0  # new rooms a second per client address, 0 = unlimited
    room_burst: int = 50
    # Output queued for all connections together: past it, the biggest queues are dropped
    # as slow consumers first.
    total_output: int = 256 * 1024 * 1024
    retain_messages: int = 100_000
    retain_age: float = 0.0
    # A node of a cluster whose log entries stop for this long is gone: its members are
    # dropped everywhere (docs/cluster.md). The same on every node.
    node_lease: float = 10.0
    # A node of a cluster acknowledges what it proposed once this many of Redis's replicas
    # have it too (WAIT after each XADD; docs/cluster.md). 0: once Redis has it.
    redis_replicas: int = 0
    # A node of a cluster: stream entries of the log between snapshots, after which the log
    # is trimmed (docs/cluster.md). The same on every node.
    snapshot_every: int = 10_000
    trim_interval: float = 5.0  # seconds between retention passes (off the hot path)
