"""A node's replicated state as a snapshot (cluster/snapshot.py), and back. Sans-IO.

`capture` reads what applying the log made in a ClusterHub (its store's heads and history,
sessions, direct messages remembered for resends, nick-variant hints, the registry) and in
the node's leases; `restore` puts a snapshot in their place, replacing whatever they held
(a node loading one at start-up, or again after falling behind the log's trim point). What a
node holds only for itself is not in a snapshot: its connections, proposals on their way,
rooms it counted as created before their first message came back. A restored node holds
every session as another node's (it has a new node id: none can be its own).
"""

from __future__ import annotations

from chatctl.cluster.leases import Leases
from chatctl.cluster.snapshot import VERSION, AccountState, RoomState, SessionState, Snapshot
from chatctl.server.clusterhub import ClusterHub
from chatctl.server.hub import Room, Session
from chatctl.server.moderation import RoomRules
from chatctl.store.memory import MemoryStore
from chatctl.store.registry import RoomSettings, account_key


def _memory(hub: ClusterHub) -> MemoryStore:
    store = hub.store
    if not isinstance(store, MemoryStore):
        raise TypeError(f"a cluster node keeps its history in memory, not in {store.location}")
    return store


def capture(hub: ClusterHub, position: bytes, leases: Leases) -> Snapshot:
    """The state after applying the log up to `position` (the stream id just applied)."""
    heads, messages = _memory(hub).export()
    registry = hub.registry
    return Snapshot(
        VERSION,
        position.decode("ascii"),
        leases.clock,
        list(leases.last.items()),
        list(leases.gone),
        heads,
        messages,
        [
            SessionState(s.sender_key, s.nick, s.account, s.node, s.since, list(s.rooms))
            for s in hub.by_key.values()
        ],
        [(key, msg_id, digest, ts) for (key, msg_id), (digest, ts) in hub._tells.items()],
        list(hub._next_suffix.items()),
        [AccountState(a.name, a.password_hash, a.created_ms) for a in registry.accounts()],
        [
            RoomState(
                s.room,
                s.owner,
                s.private,
                s.topic,
                sorted(s.ops),
                sorted(s.invited),
                sorted(s.banned),
            )
            for s in registry.room_settings()
        ],
    )


def restore(hub: ClusterHub, leases: Leases, snapshot: Snapshot) -> None:
    """Replace the hub's replicated state (and the leases) by the snapshot's."""
    store = _memory(hub)
    store.load(snapshot.heads, snapshot.messages)
    leases.load(snapshot.clock, snapshot.last, snapshot.gone)
    for table in (hub.sessions, hub.elsewhere, hub.nicks, hub.by_key, hub.rooms):
        table.clear()
    hub.arriving.clear()
    hub.creating.clear()
    for state in snapshot.sessions:
        cid = next(hub._elsewhere_cids)
        session = Session(cid, state.nick, "")
        session.sender_key = state.key
        session.account = state.account
        session.node = state.node
        session.since = state.since
        for name in state.rooms:
            room = hub.rooms.get(name)
            if room is None:
                room = hub.rooms[name] = Room(name)
            room.add(cid)
            session.rooms[name] = None
        hub.elsewhere[cid] = session
        hub.nicks[session.key] = session
        hub.by_key[state.key] = session
    hub._tells = {(key, msg_id): (digest, ts) for key, msg_id, digest, ts in snapshot.tells}
    hub._next_suffix = dict(snapshot.suffixes)
    registry = hub.registry
    wanted = {account_key(a.name): a for a in snapshot.accounts}
    for account in registry.accounts():
        if account_key(account.name) not in wanted:
            registry.remove_account(account.name)
    for a in snapshot.accounts:
        if not registry.add_account(a.name, a.password_hash, a.created_ms):
            registry.set_password(a.name, a.password_hash)
    named = {r.room for r in snapshot.settings}
    for settings in registry.room_settings():
        if settings.room not in named:  # made since the snapshot, and gone with it
            registry.forget_room(settings.room)
    for r in snapshot.settings:
        registry.save_room(
            RoomSettings(
                r.room,
                r.owner,
                r.private,
                r.topic,
                frozenset(r.ops),
                frozenset(r.invited),
                frozenset(r.banned),
            )
        )
    hub.rules = RoomRules(registry)
    hub.room_count = len(set(hub.rooms) | set(store.rooms()))
