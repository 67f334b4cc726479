"""Snapshots of a cluster node's state, sans-IO (cluster/snapshot.py, server/hubstate.py):
the state after applying a log up to X is the state loaded from the snapshot at X. A random
log (sessions arriving, resuming, ending, joining, parting, renaming, telling, saying, and
nodes found gone by their leases) is applied by one hub whole; another applies it up to a
random point, is snapshotted (encoded in chunks and decoded), and a fresh hub loads the
snapshot and applies the rest. Both end in the same state, and deliver the same frames to
the connections that arrive on them after the snapshot."""

from __future__ import annotations

import itertools

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chatctl.cluster.entries import (
    ACCOUNT_ACTIONS,
    AccountEntry,
    ClaimEntry,
    EndEntry,
    Entry,
    HelloEntry,
    JoinEntry,
    ModerateEntry,
    NickEntry,
    PartEntry,
    SayEntry,
    TellEntry,
)
from chatctl.cluster.leases import Leases
from chatctl.cluster.snapshot import (
    CHUNK,
    Pointer,
    Snapshot,
    SnapshotPolicy,
    decode_snapshot,
    encode_snapshot,
    read_pointer,
)
from chatctl.protocol import MODERATE_ACTIONS
from chatctl.server.clusterhub import ClusterHub, Request
from chatctl.server.config import ServerConfig
from chatctl.server.hub import Delivery
from chatctl.server.hubstate import capture, restore
from chatctl.store.base import StoredMessage
from chatctl.store.memory import MemoryStore

ME = "me"  # the node the hubs run as: its sessions arrive after the snapshot only
NODES = ["n0", "n1"]
NICKS = ["ann", "bob", "Ann", "cy", "ann2"]
ROOMS = ["lobby", "dev", "ops"]
KEYS = 6
LEASE_MS = 10
RETAIN = 3


class Sink:
    """A hub's Log whose proposals go nowhere (a snapshot is about applying, not proposing)."""

    node = ME

    def __init__(self) -> None:
        self.p = 0

    def number(self) -> int:
        self.p += 1
        return self.p

    def submit(self, entry: Entry, request: Request) -> list[Delivery]:
        return []


def new_hub() -> ClusterHub:
    config = ServerConfig(retain_messages=RETAIN, node_lease=LEASE_MS / 1000)
    hub = ClusterHub(config, MemoryStore(retain_messages=RETAIN))
    hub.log = Sink()
    return hub


key = st.integers(0, KEYS - 1).map(lambda i: f"key{i}")
node = st.sampled_from(NODES)
since = st.integers(1, 4)
STEP = st.one_of(
    st.builds(
        lambda n, p, k, f, nick, account: HelloEntry(n, p, 0, k, f, nick, account),
        node,
        since,
        st.one_of(st.just(""), key),
        key,
        st.sampled_from(NICKS),
        st.sampled_from(["", "", "ann", "bob"]),  # a guest, or a login
    ),
    # Accounts and room settings (the registry's part of the state).
    st.builds(
        lambda n, action, name, k: AccountEntry(n, 0, 0, action, name, f"hash-{name}", k),
        node,
        st.sampled_from(ACCOUNT_ACTIONS),
        st.sampled_from(NICKS),
        st.one_of(st.just(""), key),
    ),
    st.builds(
        lambda n, r, account: ClaimEntry(n, 0, r, account),
        node,
        st.sampled_from(ROOMS),
        st.sampled_from(["ann", "bob"]),
    ),
    st.builds(
        lambda n, k, who, r, action, target: ModerateEntry(
            n, 0, 0, k, who, who, r, action, target, "words"
        ),
        node,
        key,
        st.sampled_from(["ann", "bob"]),
        st.sampled_from(ROOMS),
        st.sampled_from(sorted(MODERATE_ACTIONS)),
        st.sampled_from(NICKS),
    ),
    st.builds(
        lambda n, k, s, clean: EndEntry(n, 0, 0, k, s, "bye", clean),
        node,
        key,
        since,
        st.booleans(),
    ),
    st.builds(lambda n, k, r: JoinEntry(n, 0, 0, k, r), node, key, st.sampled_from(ROOMS)),
    st.builds(lambda n, k, r: PartEntry(n, 0, 0, k, r, ""), node, key, st.sampled_from(ROOMS)),
    st.builds(lambda n, k, nick: NickEntry(n, 0, 0, k, nick), node, key, st.sampled_from(NICKS)),
    st.builds(
        lambda n, k, to, m, t: TellEntry(n, 0, 0, k, "x", to, m, t, False),
        node,
        key,
        st.sampled_from(NICKS),
        st.sampled_from(["t1", "t2", "1"]),
        st.sampled_from(["psst", "hm"]),
    ),
    st.builds(
        lambda n, r, k, m, t: SayEntry(n, 0, 0, r, "x", k, m, t, False),
        node,
        st.sampled_from(ROOMS),
        key,
        st.sampled_from(["1", "2", "3", "4"]),
        st.sampled_from(["hi", "ho"]),
    ),
)
# A stream entry: the ms its id's clock moves on by, and an entry.
LOG = st.lists(st.tuples(st.integers(0, 8), STEP), min_size=1, max_size=50)
# What arrives on this node after the snapshot: its own Hellos (connection 1 to 3), Joins
# and Says of its sessions, mixed with the other nodes'.
NUMBERS = itertools.count()
LOCAL = st.one_of(
    st.tuples(st.just("hello"), st.integers(1, 3), st.sampled_from(NICKS)),
    st.tuples(st.just("join"), st.integers(1, 3), st.sampled_from(ROOMS)),
    st.tuples(st.just("say"), st.integers(1, 3), st.sampled_from(ROOMS)),
)


class Applier:
    """One hub and its leases, applying stream entries as replication.py does."""

    def __init__(self) -> None:
        self.hub = new_hub()
        self.leases = Leases(LEASE_MS)
        self.clock = 1_000
        self.position = b"0-0"
        self.n = 0

    def apply(self, step: int, entry: Entry, request: Request | None = None) -> list[Delivery]:
        self.clock += step
        self.n += 1
        self.position = b"%d-%d" % (self.clock, self.n)
        out: list[Delivery] = []
        for gone in self.leases.advance(self.clock, entry.node):
            out += self.hub.apply_gone(gone, self.clock)
        if self.leases.is_gone(entry.node):
            return out
        if type(entry) is SayEntry:
            return out + self.hub.apply_say(entry, None)
        return out + self.hub.apply(entry, request)

    def state(self) -> tuple[object, ...]:
        snapshot = capture(self.hub, self.position, self.leases)
        sizes = {name: room.size for name, room in self.hub.rooms.items()}
        return msgspec.msgpack.encode(snapshot), sizes, self.hub.room_count


def local_entry(
    action: tuple[str, int, str], appliers: list[Applier]
) -> tuple[Entry, list[Request | None]] | None:
    """This node's entry for `action`, and each applier's request for it (None: a Hello
    on a connection that has a session)."""
    kind, cid, arg = action
    hub = appliers[0].hub
    session = hub.sessions.get(cid)
    number = next(NUMBERS)
    if kind == "hello":
        if session is not None:
            return None
        entry: Entry = HelloEntry(ME, 0, 0, "", f"local{cid}-{number}", arg, "")
        requests: list[Request | None] = []
        for applier in appliers:
            request = Request(cid)
            request.fresh_token = f"token-of-{cid}"
            applier.hub.arriving[cid] = request
            requests.append(request)
        return entry, requests
    sender = session.sender_key if session is not None else "nobody"
    if kind == "join":
        entry = JoinEntry(ME, 0, 0, sender, arg)
    else:
        entry = SayEntry(ME, 0, 0, arg, "me", sender, f"m{number}", "local", False)
    return entry, [None] * len(appliers)


def frames(out: list[Delivery]) -> list[tuple[object, ...]]:
    return [(tuple(d.to), d.data, d.skip) for d in out]


@settings(max_examples=300, deadline=None)
@given(LOG, st.data())
def test_the_state_loaded_from_a_snapshot_at_x_is_the_state_after_applying_up_to_x(
    log: list[tuple[int, Entry]], data: st.DataObject
) -> None:
    split = data.draw(st.integers(0, len(log)), label="split")
    later = data.draw(st.lists(LOCAL, max_size=12), label="local")
    whole, first = Applier(), Applier()
    for step, entry in log[:split]:
        whole.apply(step, entry)
        first.apply(step, entry)
    chunks = encode_snapshot(capture(first.hub, first.position, first.leases))
    loaded = decode_snapshot(chunks)
    assert isinstance(loaded, Snapshot)
    second = Applier()
    restore(second.hub, second.leases, loaded)
    second.clock, second.n, second.position = first.clock, first.n, first.position
    assert second.state() == first.state()
    # The rest of the log, with this node's own sessions arriving meanwhile.
    rest: list[tuple[int, Entry] | tuple[str, int, str]] = list(log[split:])
    for action in later:
        rest.insert(data.draw(st.integers(0, len(rest)), label="at"), action)
    for item in rest:
        requests: list[Request | None] = [None, None]
        if len(item) == 3:
            made = local_entry(item, [whole, second])
            if made is None:
                continue
            step, (entry, requests) = 1, made
        else:
            step, entry = item
        got = [
            applier.apply(step, entry, request)
            for applier, request in zip((whole, second), requests, strict=True)
        ]
        assert frames(got[0]) == frames(got[1])
    assert whole.state() == second.state()


def test_a_snapshot_of_a_long_history_is_cut_in_chunks_and_put_together_again() -> None:
    hub = new_hub()
    store = hub.store
    assert isinstance(store, MemoryStore)
    store.retain_messages = 0
    for seq in range(1, 30_001):
        store.append(StoredMessage("lobby", seq, seq, "ann", "x" * 100, False, "k", f"m{seq}"))
    snapshot = capture(hub, b"5-0", Leases(LEASE_MS))
    chunks = encode_snapshot(snapshot)
    assert len(chunks) > 2
    assert all(len(chunk) <= CHUNK for chunk in chunks)
    assert decode_snapshot(chunks) == snapshot
    assert isinstance(decode_snapshot(chunks[:-1]), str)  # one missing: an error, no crash
    assert isinstance(decode_snapshot([b"\x93junk"]), str)


def test_the_pointer_to_the_current_snapshot_is_checked() -> None:
    assert read_pointer([]) is None
    pointer = read_pointer([b"id", b"1-0", b"chunks", b"2", b"bytes", str(CHUNK + 5).encode()])
    assert pointer == Pointer(b"1-0", 2, CHUNK + 5)
    for bad in (
        b"nope",
        [b"id"],
        [b"id", b"1-0"],
        [b"id", b"1-0", b"chunks", b"x", b"bytes", b"1"],
        [b"id", b"1-0", b"chunks", b"9", b"bytes", b"10"],  # more chunks than bytes need
        [b"id", 5, b"chunks", b"1", b"bytes", b"1"],
    ):
        assert isinstance(read_pointer(bad), str), bad


@given(st.lists(st.integers(0, 5000), max_size=200), st.integers(1, 20), st.integers(1, 8000))
def test_snapshots_fall_due_alike_from_the_start_or_from_any_due_point(
    sizes: list[int], every: int, every_bytes: int
) -> None:
    """Every node decides alike, whether it counted from the log's start or loaded the
    snapshot taken at a due point; and one falls due within `every` entries."""
    whole = SnapshotPolicy(every, every_bytes)
    dues = [whole.due(size) for size in sizes]
    for i, due in enumerate(dues):
        if due:
            resumed = SnapshotPolicy(every, every_bytes)
            resumed.restart()
            assert [resumed.due(size) for size in sizes[i + 1 :]] == dues[i + 1 :]
    gaps = [i for i, due in enumerate(dues) if due]
    previous = -1
    for i in [*gaps, len(sizes) - 1]:
        assert i - previous <= every or i == len(sizes) - 1
        previous = i


@pytest.mark.parametrize("count", [0, 1])
def test_an_empty_hub_round_trips(count: int) -> None:
    hub = new_hub()
    for i in range(count):
        hub.apply(HelloEntry("n0", 1, 0, "", f"k{i}", "ann", ""), None)
    snapshot = capture(hub, b"1-1", Leases(LEASE_MS))
    other = new_hub()
    leases = Leases(LEASE_MS)
    loaded = decode_snapshot(encode_snapshot(snapshot))
    assert isinstance(loaded, Snapshot)
    restore(other, leases, loaded)
    assert capture(other, b"1-1", leases) == snapshot
