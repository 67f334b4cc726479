"""What a run does: its target, the simulated clients (from params.Params), and how they are
shared out among the worker processes. Everything here is plain data that pickles to the
workers."""

from __future__ import annotations

import functools
import secrets
from dataclasses import dataclass, field, replace

from chatctl.address import BadAddress, format_addr, parse_address
from chatctl.bench.adapters import ADAPTERS, Adapter, Kind
from chatctl.bench.params import Params, Scenario
from chatctl.bench.payload import MAX_PUBLISHERS, MIN_SIZE
from chatctl.errors import ChatctlError, ExitCode
from chatctl.names import ROOM_MAX, normalise_room

ROOM_PREFIX = "bench-"  # every room a run makes is named so, for an operator to recognise


class BadBenchOption(ChatctlError):
    exit_code = ExitCode.USAGE


@dataclass(frozen=True, kw_only=True)
class Target:
    kind: Kind
    host: str
    port: int
    launched: bool = False  # started by the bench itself
    tls: bool = False
    tls_ca: str | None = None  # with tls: the CA file trusted instead of the system's

    @property
    def address(self) -> str:
        return format_addr(self.host, self.port)

    @property
    def url(self) -> str:
        if self.tls:
            scheme = "tls" if self.kind is Kind.chatctl else f"{self.kind}+tls"
            return f"{scheme}://{self.address}"
        return self.address if self.kind is Kind.chatctl else f"{self.kind}://{self.address}"

    @property
    def adapter(self) -> Adapter:
        return ADAPTERS[self.kind]


TLS_SCHEMES = {"tls": Kind.chatctl, "nats+tls": Kind.nats}


def parse_target(text: str, tls_ca: str | None = None) -> Target:
    """A --target: HOST:PORT, chat://, tls://, redis://, nats://, nats+tls:// or irc://HOST:PORT.
    `tls_ca` (--tls-ca) is kept for a TLS target only, as the clients ignore it for a plain
    address (it may come from the environment)."""
    original, kind, tls = text, Kind.chatctl, False
    scheme, sep, rest = text.partition("://")
    if sep and scheme.lower() in TLS_SCHEMES:
        kind, tls, text = TLS_SCHEMES[scheme.lower()], True, rest
    elif sep and scheme.lower() == "chat":
        text = rest
    elif sep:
        if scheme not in {k.value for k in Kind}:
            raise BadBenchOption(
                f"--target {original!r}: unknown scheme {scheme!r} "
                "(chatctl, tls, redis, nats, nats+tls or irc)"
            )
        kind, text = Kind(scheme), rest
    try:
        address = parse_address(text, 0) if "://" not in text else None
    except BadAddress:
        address = None
    if address is None or address.port == 0:  # a bench target names its port
        raise BadBenchOption(
            f"--target {original!r}: expected HOST:PORT, tls://HOST:PORT, redis://HOST:PORT, "
            "nats://HOST:PORT or irc://HOST:PORT"
        )
    return Target(
        kind=kind, host=address.host, port=address.port, tls=tls, tls_ca=tls_ca if tls else None
    )


def parse_targets(text: str, tls_ca: str | None = None) -> tuple[Target, ...]:
    """A --target that may list several chatctl nodes of one cluster, comma-separated
    (`chat://h1:1060,chat://h2:1060`), as the clients' failover lists do. Several addresses
    must all be chatctl, all plain or all TLS, each named once."""
    items = [item.strip() for item in text.split(",")]
    if not all(items):
        raise BadBenchOption(f"--target {text!r}: an empty address in the list")
    targets = tuple(parse_target(item, tls_ca) for item in items)
    if len(targets) > 1:
        first = targets[0]
        if any(t.kind is not Kind.chatctl for t in targets):
            raise BadBenchOption(
                f"--target {text!r}: several addresses are for chatctl nodes of one cluster "
                "(a Redis, NATS or IRC target is one address)"
            )
        if any(t.tls != first.tls for t in targets):
            raise BadBenchOption(f"--target {text!r}: mixes TLS and plain addresses")
        if len({(t.host, t.port) for t in targets}) != len(targets):
            raise BadBenchOption(f"--target {text!r}: an address is listed twice")
    return targets


@dataclass(frozen=True, kw_only=True)
class Client:
    """A simulated user. `pub` and `sub` are global indices (-1: does not publish/subscribe)."""

    index: int
    name: str
    room: str | None
    pub: int = -1
    sub: int = -1
    node: int = 0  # the index of the target (cluster node) it connects to first


@dataclass(frozen=True, kw_only=True)
class ConnSpec:
    """One TCP connection; a client has one, or two when a subscribed connection cannot publish."""

    client: int
    name: str
    room: str | None
    pub: int = -1
    sub: int = -1
    node: int = 0


@dataclass(frozen=True, kw_only=True)
class Plan:
    params: Params
    target: Target  # the first of `targets`: what the report names, and the kind of server
    targets: tuple[Target, ...]  # several: nodes of one chatctl cluster, clients spread over them
    run_id: str
    clients: tuple[Client, ...]
    n_pubs: int
    n_subs: int
    pub_room: tuple[str, ...]  # by publisher index
    pub_client: tuple[int, ...]

    @property
    def rooms(self) -> list[str]:
        """The rooms the run uses, in order, each once."""
        return list(dict.fromkeys(c.room for c in self.clients if c.room is not None))

    @functools.cached_property
    def _pubs_by_room(self) -> dict[str, list[int]]:
        rooms: dict[str, list[int]] = {}
        for p, room in enumerate(self.pub_room):
            rooms.setdefault(room, []).append(p)
        return rooms

    def expected_pubs(self, client: Client) -> list[int]:
        """The publishers whose every message this subscribing client must receive."""
        echo = self.target.adapter.echo
        return [
            p
            for p in self._pubs_by_room.get(client.room or "", [])
            if echo or self.pub_client[p] != client.index
        ]

    def deliveries_per_message(self) -> int:
        """How many subscribers receive a publisher's message, on average (at least 1)."""
        subs_in: dict[str | None, int] = {}
        for c in self.clients:
            if c.sub >= 0:
                subs_in[c.room] = subs_in.get(c.room, 0) + 1
        total = 0
        for p, room in enumerate(self.pub_room):
            own = self.clients[self.pub_client[p]].sub >= 0 and not self.target.adapter.echo
            total += subs_in.get(room, 0) - own
        return max(1, total // max(self.n_pubs, 1))

    def conns(self) -> list[ConnSpec]:
        out = []
        split = self.target.adapter.separate_pub_conn
        for c in self.clients:
            if split and c.pub >= 0 and c.sub >= 0:
                out.append(
                    ConnSpec(client=c.index, name=c.name, room=c.room, sub=c.sub, node=c.node)
                )
                out.append(
                    ConnSpec(client=c.index, name=c.name + "p", room=c.room, pub=c.pub, node=c.node)
                )
            else:
                out.append(
                    ConnSpec(
                        client=c.index, name=c.name, room=c.room, pub=c.pub, sub=c.sub, node=c.node
                    )
                )
        return out

    def shares(self) -> list[list[ConnSpec]]:
        """Connections per worker: subscribers and publishers each dealt round-robin. At a fixed
        rate, publish-only connections get a worker of their own, which can then sleep to the
        microsecond until each message is due without delaying any subscriber's reads."""
        conns = self.conns()
        n = max(1, min(self.params.workers, len(conns)))
        senders = [c for c in conns if c.sub < 0]
        own = bool(self.params.rate) and n >= 2 and bool(senders)
        out: list[list[ConnSpec]] = [[] for _ in range(n)]
        if own:
            out[0] = senders
            conns = [c for c in conns if c.sub >= 0]
        order = [c for c in conns if c.sub >= 0] + [c for c in conns if c.sub < 0]
        first = 1 if own else 0
        for i, c in enumerate(order):
            out[first + i % (n - first)].append(c)
        return out


def room_names(params: Params, run_id: str) -> list[str]:
    """The run's rooms: `bench-RUNID-...` (a new name each run), or with --room NAME that
    room (fanout, room), or NAME-0 ... NAME-(R-1) (rooms): the same ones every run."""
    s = params.scenario
    n = {Scenario.fanout: 1, Scenario.room: 1, Scenario.rooms: params.rooms}.get(s, 0)
    if params.room is None:
        if s is Scenario.fanout:
            return [f"{ROOM_PREFIX}{run_id}-fan"]
        return [f"{ROOM_PREFIX}{run_id}-r{i}" for i in range(n)]
    stem = normalise_room(params.room)
    longest = stem if n <= 1 or stem is None else f"{stem}-{n - 1}"
    if stem is None or longest is None or len(longest) > ROOM_MAX:
        raise BadBenchOption(
            f"--room {params.room!r}: not a valid room name (1-{ROOM_MAX} ASCII letters, "
            "digits or _-., with room for -N suffixes in the rooms scenario)"
        )
    if n <= 1 or s is not Scenario.rooms:
        return [stem] * min(n, 1)
    return [f"{stem}-{i}" for i in range(n)]


def spread(clients: list[Client], nodes: int) -> list[Client]:
    """Deal the clients out to `nodes` targets round-robin, publishers and subscribers each on
    their own count, so that 1 publisher and 100 subscribers on three nodes put the publisher
    on the first and 34, 33 and 33 subscribers on the three."""
    if nodes <= 1:
        return clients
    out, pubs, subs, other = [], 0, 0, 0
    for c in clients:
        if c.pub >= 0:
            node, pubs = pubs % nodes, pubs + 1
        elif c.sub >= 0:
            node, subs = subs % nodes, subs + 1
        else:
            node, other = other % nodes, other + 1
        out.append(replace(c, node=node))
    return out


def make_plan(params: Params, target: Target, others: tuple[Target, ...] = ()) -> Plan:
    """The run's plan against `target`, and with `others` the nodes of a cluster that the
    clients are spread over."""
    run_id = secrets.token_hex(3)
    base = f"b{run_id}"
    s = params.scenario
    names = room_names(params, run_id)
    clients: list[Client] = []
    if s is Scenario.fanout:
        if params.publishers < 1 or params.subscribers < 1:
            raise BadBenchOption("fanout needs at least one publisher and one subscriber")
        room = names[0]
        clients += [
            Client(index=i, name=f"{base}p{i}", room=room, pub=i) for i in range(params.publishers)
        ]
        clients += [
            Client(index=params.publishers + i, name=f"{base}s{i}", room=room, sub=i)
            for i in range(params.subscribers)
        ]
    elif s in (Scenario.room, Scenario.rooms):
        n_rooms = 1 if s is Scenario.room else params.rooms
        if params.clients < 2:
            raise BadBenchOption(f"{s} needs at least two clients")
        clients += [
            Client(index=i, name=f"{base}c{i}", room=names[i % n_rooms], pub=i, sub=i)
            for i in range(params.clients)
        ]
    else:
        clients += [Client(index=i, name=f"{base}c{i}", room=None) for i in range(params.clients)]
    clients = spread(clients, 1 + len(others))
    pubs = [c for c in clients if c.pub >= 0]
    if len(pubs) > MAX_PUBLISHERS:
        raise BadBenchOption(f"at most {MAX_PUBLISHERS} publishers")
    if params.size < MIN_SIZE:
        raise BadBenchOption(f"--size must be at least {MIN_SIZE} bytes")
    adapter = target.adapter
    for pub_room in dict.fromkeys(c.room or "" for c in pubs):
        limit = adapter.max_size(pub_room)
        if limit and params.size > limit:
            raise BadBenchOption(
                f"--size {params.size}: at most {limit} bytes for {target.kind} in room "
                f"{pub_room!r} (a {target.kind} server takes lines of at most "
                f"{adapter.max_line} bytes, and relays each message with the sender's prefix)"
            )
    return Plan(
        params=params,
        target=target,
        targets=(target, *others),
        run_id=run_id,
        clients=tuple(clients),
        n_pubs=len(pubs),
        n_subs=sum(1 for c in clients if c.sub >= 0),
        pub_room=tuple(c.room or "" for c in pubs),
        pub_client=tuple(c.index for c in pubs),
    )


@dataclass(kw_only=True)
class WorkerResult:
    """What one worker measured; the runner merges these."""

    connected: int = 0
    failed: int = 0
    first_error: str = ""
    connect_hist: tuple[bytes, int, int] | None = None
    connect_first_ns: int = 0
    connect_last_ns: int = 0
    # by global subscriber index
    sub_ids: list[int] = field(default_factory=list)
    delivered: list[int] = field(default_factory=list)
    unique: list[int] = field(default_factory=list)
    expected: list[int] = field(default_factory=list)
    duplicated: list[int] = field(default_factory=list)
    reordered: list[int] = field(default_factory=list)
    measured: list[int] = field(default_factory=list)
    first_ns: list[int] = field(default_factory=list)
    last_ns: list[int] = field(default_factory=list)
    latency_hist: tuple[bytes, int, int] | None = None
    # by global publisher index
    pub_ids: list[int] = field(default_factory=list)
    sent: list[int] = field(default_factory=list)
    pub_measured: list[int] = field(default_factory=list)
    pub_first_ns: list[int] = field(default_factory=list)
    pub_last_ns: list[int] = field(default_factory=list)
    refused: int = 0
    disconnects: int = 0
    reconnects: int = 0  # connections moved to another node of a cluster, and resumed there
    server_said: str = ""
