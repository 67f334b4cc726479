"""The hub's side of a cluster, sans-IO: Says proposed on three hubs go to one log, and every
hub applies the log in order (`Hub.apply_say`). Held to a model, one standalone hub handling
the same Says in log order: every node stores exactly what the model stores (the same seqs),
each sender is answered as the model answers it (Ack with the same seq, or MSG_ID_REUSED),
and every member on every node receives each message once, in seq order."""

from __future__ import annotations

import itertools
from typing import Any

import hypothesis
from hypothesis import given, settings
from hypothesis import strategies as st

from chatctl.cluster.entries import AccountEntry, ClaimEntry, Entry, SayEntry, apply_account
from chatctl.protocol import (
    Ack,
    ChangeNick,
    Error,
    ErrorCode,
    Event,
    Hello,
    Join,
    Message,
    Moderate,
    Notice,
    Part,
    Register,
    Say,
    Tell,
    Welcome,
    Who,
)
from chatctl.server.clusterhub import ClusterHub, Request
from chatctl.server.config import Registration, ServerConfig
from chatctl.server.hub import Check, Delivery, Hub, Session
from chatctl.store.base import StoredMessage
from chatctl.store.memory import MemoryStore
from tests.test_hub import NOW, flatten

NODES = 3
SENDERS = 2  # per node; a sender's cid is 10 + its index, a member's 1
ROOMS = ["lobby", "dev"]  # every node's member joins these
SAID = [*ROOMS, "ops"]  # and Says go to these: "ops" is created by its first message


class Node:
    def __init__(self, index: int, log: list[tuple[int, int, Session, Say, str]]) -> None:
        self.index = index
        self.hub = Hub(ServerConfig(), MemoryStore())
        self.hub.propose = self.propose
        self.log = log
        self.got: dict[int, list[Any]] = {}  # cid -> events, in order
        self.receive(self.hub.handle(1, Hello(version=1, nick=f"member{index}"), NOW))
        for room in ROOMS:
            self.receive(self.hub.handle(1, Join(room=room), NOW))
        for s in range(SENDERS):
            self.receive(self.hub.handle(10 + s, Hello(version=1, nick=f"s{index}x{s}"), NOW))
        self.got.clear()

    def propose(self, session: Session, name: str, say: Say, now_ms: int) -> list[Delivery]:
        self.log.append((self.index, session.cid, session, say, name))
        return []

    def receive(self, deliveries: list[Delivery]) -> None:
        for cid, event in flatten(deliveries):
            self.got.setdefault(cid, []).append(event)

    def apply(self, origin: int, session: Session, say: Say, name: str) -> None:
        sender = session if origin == self.index else None
        said = SayEntry(
            "node", 0, NOW, name, session.nick, session.sender_key, say.msg_id, say.text, say.action
        )
        self.receive(self.hub.apply_say(said, sender, say.rid))


def fields(m: StoredMessage) -> tuple[object, ...]:
    """A stored message but its sender's key (each hub makes its own tokens)."""
    return (m.room, m.seq, m.ts, m.sender, m.text, m.action, m.msg_id)


STEPS = st.lists(
    st.one_of(
        st.tuples(
            st.just("say"),
            st.integers(0, NODES - 1),
            st.integers(0, SENDERS - 1),
            st.sampled_from(SAID),
            st.sampled_from(["1", "2", "3"]),
            st.sampled_from(["hi", "ho"]),
        ),
        st.tuples(st.just("apply"), st.integers(1, 4)),
    ),
    max_size=40,
)


@given(STEPS)
def test_every_node_applies_the_log_as_one_hub_would(steps: list[tuple[Any, ...]]) -> None:
    log: list[tuple[int, int, Session, Say, str]] = []
    nodes = [Node(i, log) for i in range(NODES)]
    model = Hub(ServerConfig(), MemoryStore())
    model_cid = {}
    for node in nodes:
        # Each room is counted once: it has members here, or history.
        assert node.hub.room_count == len(set(node.hub.rooms) | set(node.hub.store.rooms()))
        for s in range(SENDERS):
            cid = 100 * (node.index + 1) + s
            model_cid[node.index, 10 + s] = cid
            model.handle(cid, Hello(version=1, nick=f"s{node.index}x{s}"), NOW)
    applied = 0
    answers: dict[tuple[int, int], list[Any]] = {}  # the model's answers, by (node, cid)

    def apply(count: int) -> None:
        nonlocal applied
        for origin, cid, session, say, name in log[applied : applied + count]:
            for node in nodes:
                node.apply(origin, session, say, name)
            # The model hub sees the Say at its place in the log.
            for _, event in flatten(model.handle(model_cid[origin, cid], say, NOW)):
                answers.setdefault((origin, cid), []).append(event)
        applied = min(applied + count, len(log))

    for step in steps:
        if step[0] == "say":
            _, n, s, room, msg_id, text = step
            node = nodes[n]
            # Answered at once (a resend of what is already applied): the model answers it
            # at the same place, since nothing is in the log for it.
            before = len(log)
            node.receive(node.hub.handle_say(10 + s, Say(msg_id=msg_id, room=room, text=text), NOW))
            if len(log) == before:
                for _, event in flatten(
                    model.handle(
                        model_cid[n, 10 + s], Say(msg_id=msg_id, room=room, text=text), NOW
                    )
                ):
                    answers.setdefault((n, 10 + s), []).append(event)
        else:
            apply(step[1])
    apply(len(log))

    for room in SAID:
        want = model.store.read(room, 0, 1000).messages
        for node in nodes:
            stored = node.hub.store.read(room, 0, 1000).messages
            assert list(map(fields, stored)) == list(map(fields, want))
            # Every member receives each message once, in seq order.
            got = [e for e in node.got.get(1, []) if type(e) is Message and e.room == room]
            if room not in ROOMS:
                assert got == []  # nobody is in it
                continue
            assert [(m.seq, m.sender, m.text) for m in got] == [
                (m.seq, m.sender, m.text) for m in want
            ]
    for node in nodes:
        # Each room is counted once: it has members here, or history.
        assert node.hub.room_count == len(set(node.hub.rooms) | set(node.hub.store.rooms()))
        for s in range(SENDERS):
            mine = [
                (type(e).__name__, e.msg_id, getattr(e, "seq", None), getattr(e, "code", None))
                for e in node.got.get(10 + s, [])
                if type(e) in (Ack, Error)
            ]
            wanted = [
                (type(e).__name__, e.msg_id, getattr(e, "seq", None), getattr(e, "code", None))
                for e in answers.get((node.index, 10 + s), [])
                if type(e) in (Ack, Error)
            ]
            assert mine == wanted
            assert all(code in (None, ErrorCode.MSG_ID_REUSED) for *_, code in mine)


# -- sessions, rooms, nicks and direct messages ---------------------------------------------
#
# Three ClusterHubs propose to one log; every hub applies it in order. Held to a model, one
# standalone hub that handles each request at its place in the log (and each request a node
# answered at once, at that time): every client receives exactly what it would receive from
# the model (Welcome's nick, notices, Members, errors, direct messages and Acks, in order),
# and every hub holds the model's nicks, room members, accounts and room settings. A client with
# a request on its way sends nothing else meanwhile, as the event loop stalls it (answers.py).
# Clients register their nicks, log in to accounts and moderate rooms too; a password's "hash"
# is made by a stand-in for scrypt (the hubs' `offload`), the same on every hub.

CLIENTS = 3  # per node; client c of node n has cid c + 1 there, 100 * (n + 1) + c in the model
NICKS = ["ann", "bob", "Ann", "cy"]
MEMBER_ROOMS = ["lobby", "dev", "hr"]
MODERATIONS = st.tuples(
    st.sampled_from(MEMBER_ROOMS[1:]),
    st.sampled_from(
        ["private", "public", "invite", "uninvite", "kick", "ban", "unban", "op", "topic"]
    ),
    st.sampled_from(NICKS),
)
PASSWORD = "a good password"


def fake_scrypt(check: Check) -> bool | str:
    """A password check or hash, at no cost: `offload` for the hubs of these tests."""
    return check.stored == "h:" + check.password if check.stored else "h:" + check.password


def config() -> ServerConfig:
    return ServerConfig(registration=Registration.open)


Pending = tuple[int, Entry, Request]


class LogOf:
    """A node's `Log`: its proposals go to the shared list."""

    def __init__(self, node: str, log: list[Pending], index: int) -> None:
        self.node = node
        self._log = log
        self._index = index
        self._numbers = itertools.count(1)

    def number(self) -> int:
        return next(self._numbers)

    def submit(self, entry: Entry, request: Request) -> list[Delivery]:
        self._log.append((self._index, entry, request))
        return []


def view(event: Event) -> object:
    """What a client sees, but the token (each hub makes its own)."""
    if type(event) is Welcome:
        return ("Welcome", event.nick)
    return event


def act(kind: str, arg: st.SearchStrategy[Any]) -> st.SearchStrategy[tuple[Any, ...]]:
    """A client's step: (kind, node, client, arg)."""
    return st.tuples(st.just(kind), st.integers(0, NODES - 1), st.integers(0, CLIENTS - 1), arg)


ACTIONS = st.lists(
    st.one_of(
        *(act(kind, st.sampled_from(NICKS)) for kind in ("hello", "nick", "tell")),
        *(act(kind, st.sampled_from(MEMBER_ROOMS)) for kind in ("join", "part", "who")),
        act("bye", st.booleans()),
        act("register", st.just(PASSWORD)),
        act("login", st.sampled_from(NICKS)),
        act("moderate", MODERATIONS),
        st.tuples(st.just("moderate"), st.just(0), st.just(0), MODERATIONS),  # the owner's
        st.tuples(st.just("moderate"), st.just(0), st.just(0), MODERATIONS),
        st.tuples(st.just("operator"), st.sampled_from(NICKS)),  # chatctl accounts add
        st.tuples(st.just("apply"), st.integers(1, 4)),
    ),
    min_size=10,
    max_size=60,
)
# Often, a first client registers "cy" and makes two rooms its own: the rest has accounts and
# settings to work with.
PRELUDE = [
    ("hello", 0, 0, "cy"),
    ("apply", 1),
    ("register", 0, 0, PASSWORD),
    ("apply", 1),
    ("join", 0, 0, "dev"),
    ("apply", 2),
    ("join", 0, 0, "hr"),
    ("apply", 2),
]


@settings(max_examples=300)
@given(ACTIONS, st.booleans())
def test_every_node_applies_sessions_rooms_and_nicks_as_one_hub_would(
    actions: list[tuple[Any, ...]], prelude: bool
) -> None:
    if prelude:
        actions = PRELUDE + actions
    log: list[Pending] = []
    hubs = []
    for n in range(NODES):
        hub = ClusterHub(config(), MemoryStore())
        hub.log = LogOf(f"node{n}", log, n)
        hub.offload = fake_scrypt
        hubs.append(hub)
    model = Hub(config(), MemoryStore())
    model.offload = fake_scrypt
    got: dict[tuple[int, int], list[object]] = {}  # (node, client): what it received
    wanted: dict[tuple[int, int], list[object]] = {}  # what the model sends it
    ids = itertools.count()
    connected: set[tuple[int, int]] = set()  # its Hello was sent, and it has not gone
    waiting: set[tuple[int, int]] = set()  # a request of it on its way through the log
    to_client = {100 * (n + 1) + c: (n, c) for n in range(NODES) for c in range(CLIENTS)}

    def receive(n: int, deliveries: list[Delivery]) -> None:
        for cid, event in flatten(deliveries):
            got.setdefault((n, cid - 1), []).append(view(event))

    # Clients whose connection has ended, and how many of their ends the model has still to
    # see: what the model sends them meanwhile goes nowhere (a node delivers nothing to a
    # connection that is gone; the model ends its session at its place in the log).
    ending: dict[tuple[int, int], int] = {}

    def model_does(n: int, c: int, event: Event | None, *, clean: bool = False) -> None:
        cid = 100 * (n + 1) + c
        if event is None:
            out = model.disconnect(cid, "bye" if clean else "lost", NOW, clean=clean)
            ending[n, c] -= 1
            if not ending[n, c]:
                del ending[n, c]
        else:
            out = model.handle(cid, event, NOW)
        for to, e in flatten(out):
            if to_client[to] not in ending:
                wanted.setdefault(to_client[to], []).append(view(e))

    requests: dict[int, tuple[int, int, Event | None, bool]] = {}  # id(entry) -> request

    def apply(count: int) -> None:
        nonlocal log
        for origin, entry, request in log[:count]:
            for n, hub in enumerate(hubs):
                receive(n, hub.apply(entry, request if n == origin else None))
            if type(entry) is ClaimEntry:
                continue  # the model owns its room with the Join that follows it
            if origin < 0:  # the operator's: its tool writes the model's registry
                apply_account(model.registry, entry)  # type: ignore[arg-type]
                continue
            n, c, event, clean = requests.pop(id(entry))
            model_does(n, c, event, clean=clean)
            if request.cid >= 0:
                waiting.discard((n, c))
        del log[:count]

    for action in actions:
        if action[0] == "apply":
            apply(action[1])
            continue
        if action[0] == "operator":
            added = AccountEntry("cli", 1, NOW, "add", action[1], "h:" + PASSWORD, "")
            log.append((-1, added, Request(-1)))
            continue
        kind, n, c, arg = action
        hub = hubs[n]
        if (n, c) in waiting or (kind in ("hello", "login")) == ((n, c) in connected):
            continue  # stalled, or not connected (or already)
        event: Event | None
        if kind == "hello":
            event = Hello(version=1, nick=arg)
            connected.add((n, c))
        elif kind == "login":
            if model.registry.account(arg) is None:
                continue  # a failed login counts against the node's throttle, not the model's
            event = Hello(version=1, nick="", account=arg, password=PASSWORD)
            connected.add((n, c))
        elif kind == "register":
            event = Register(password=arg)
        elif kind == "moderate":
            room, what, target = arg
            event = Moderate(room=room, action=what, target=target, text="why")
        elif kind == "join":
            event = Join(room=arg, history=0)
        elif kind == "part":
            event = Part(room=arg)
        elif kind == "nick":
            event = ChangeNick(nick=arg)
        elif kind == "tell":
            event = Tell(to=arg, msg_id=f"t{next(ids)}", text="psst")
        elif kind == "who":
            event = Who(room=arg)
        else:
            event = None
            connected.discard((n, c))
            ending[n, c] = ending.get((n, c), 0) + 1
        before = len(log)
        if event is None:
            receive(n, hub.disconnect(c + 1, "bye" if arg else "lost", NOW, clean=arg))
        else:
            receive(n, hub.handle(c + 1, event, NOW))
        if len(log) > before:
            *claims, (_, entry, request) = log[before:]
            assert all(type(claim) is ClaimEntry for _, claim, _ in claims)
            requests[id(entry)] = (n, c, event, bool(arg) if event is None else False)
            if request.cid >= 0:
                waiting.add((n, c))
        else:
            assert event is not None and kind != "hello"  # answered at once: so does the model
            model_does(n, c, event)
    apply(len(log))

    assert got == wanted
    hypothesis.event(f"accounts: {min(model.registry.account_count(), 2)}")
    hypothesis.event(f"owned rooms: {sum(bool(s.owner) for s in model.rules.settings.values())}")
    notices = {e.kind for seen in got.values() for e in seen if type(e) is Notice}
    hypothesis.event(
        f"moderated: {bool(notices & {'private', 'invited', 'kicked', 'banned', 'op'})}"
    )
    hypothesis.event(f"renamed: {'renamed' in notices}")
    for hub in hubs:
        assert set(hub.nicks) == set(model.nicks)
        assert set(hub.by_key) == {s.sender_key for s in hub.nicks.values()}
        assert set(hub.rooms) == set(model.rooms)
        for name, room in hub.rooms.items():
            members = {
                hub.sessions.get(c, hub.elsewhere.get(c)) for c in (*room.members, *room.remote)
            }
            assert sorted(s.nick for s in members if s) == sorted(
                model.sessions[c].nick for c in model.rooms[name].members
            )
            assert room.size == len(model.rooms[name].members)
        assert hub.room_count == model.room_count
        assert hub.registry.accounts() == model.registry.accounts()
        assert hub.rules.settings == model.rules.settings
        assert {s.account for s in hub.by_key.values()} == {
            s.account for s in model.sessions.values()
        }
