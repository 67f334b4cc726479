"""The chat rules of a node of a cluster: who is where, shared through the log. Sans-IO.

A node's hub (server/hub.py) applies every change the cluster's log holds, in log order, so
every node holds the same sessions, nicks and room members (docs/cluster.md). `ClusterHub`
is a `Hub` whose requests that change them (a Hello, Join, Part, ChangeNick, Tell, and a
connection's end) are checked as a standalone server checks them and then, instead of being
done, proposed to the log (`log.submit`, server/replication.py); each is done when the node
reads it back (`apply`), on every node alike, and its answer is made then, on the node that
proposed it, in its place among the connection's answers (answers.py).

Every node knows every session: its own (a connection, a positive cid) and the others'
(`Hub.elsewhere`, by negative cids that are this node's own numbering). Nicks are unique
across the cluster and conflicts are settled by log order, as a standalone server settles
them by arrival: a later guest gets a variant, a later ChangeNick `NICK_IN_USE`. A session is
named across nodes by its sender key (a hash of its resume token, as SayEntry names its
sender); a resume on another node moves it there (`HelloEntry` with its key). A node whose
lease ended (cluster/leases.py) has its sessions dropped everywhere (`apply_gone`).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Protocol

from chatctl.cluster.entries import (
    AccountEntry,
    ClaimEntry,
    EndEntry,
    Entry,
    HelloEntry,
    JoinEntry,
    ModerateEntry,
    NickEntry,
    PartEntry,
    TellEntry,
    apply_account,
)
from chatctl.names import clip_reason, nick_problem, normalise_room, quote
from chatctl.protocol import (
    Ack,
    Bye,
    ChangeNick,
    DirectMessage,
    Error,
    ErrorCode,
    Hello,
    Join,
    Moderate,
    Notice,
    Part,
    Register,
    Tell,
    encode,
)
from chatctl.server.answers import Slot
from chatctl.server.config import DEFAULT_ROOM, ServerConfig
from chatctl.server.hub import (
    MODERATE_COST,
    TELLS_KEPT,
    Delivery,
    Hub,
    Origin,
    Pending,
    Room,
    Session,
    _answering,
    _bad_room,
    _bye,
    _refuse,
    _reused,
    control,
    deliver,
    tell_digest,
)
from chatctl.server.moderation import Refusal
from chatctl.store.base import Store, sender_key_of
from chatctl.store.registry import Registry, account_key

GONE_REASON = "its server stopped answering"


class Request(Slot):
    """A request of one of this node's connections, on its way through the log: what its
    answer needs, and its place among the connection's answers (a Slot). cid -1: a
    connection's end, which nobody waits for."""

    __slots__ = (
        "after",
        "cid",
        "count",
        "entry",
        "fresh_token",
        "msg_id",
        "origin",
        "replay_room",
        "rid",
        "token",
        "unknown",
        "version",
    )

    def __init__(self, cid: int, rid: str = "", msg_id: str = "") -> None:
        self.out: list[Delivery] = []
        self.done = False
        self.cid = cid
        self.rid = rid
        self.msg_id = msg_id
        self.entry: Entry | None = None
        self.unknown = False  # the connection to Redis was lost before XADD's reply
        self.token = ""  # a Hello's: the token it resumes, if valid
        self.fresh_token = ""  # and a new one, if it resumes nothing
        self.origin = Origin()
        self.version = 1
        self.after: int | None = None  # a Join's replay
        self.count = 0
        self.replay_room: int | None = None

    def refusal(self, why: str) -> list[Delivery]:
        """The answer when the entry did not reach the log."""
        if type(self.entry) is HelloEntry:
            bye = Bye(
                code=ErrorCode.SERVER_SHUTDOWN,
                reason=clip_reason(f"this server cannot admit anyone now ({why}): try again"),
            )
            return [control(self.cid, bye)]
        what = "the message was not sent" if self.msg_id else "nothing was done"
        error = Error(
            code=ErrorCode.UNAVAILABLE,
            message=f"{what} ({why}): try again later",
            msg_id=self.msg_id,
            rid=self.rid,
        )
        return [deliver((self.cid,), error)]


class Log(Protocol):
    """What the hub needs of the cluster's log (server/replication.py)."""

    @property
    def node(self) -> str: ...

    def number(self) -> int:
        """The next proposal number of this node."""
        ...

    def submit(self, entry: Entry, request: Request) -> list[Delivery]:
        """Propose `entry`; its answer comes with `apply`. Returns the refusal (for a
        connection's end, never one: it waits for Redis)."""
        ...


class ClusterHub(Hub):
    """A `Hub` for a node of a cluster: `log` is set before any client is admitted."""

    def __init__(
        self,
        config: ServerConfig,
        store: Store,
        registry: Registry | None = None,
        **options: Callable[[], str],  # Hub's new_token
    ) -> None:
        super().__init__(config, store, registry, **options)
        self.log: Log | None = None
        self.by_key: dict[str, Session] = {}  # every session of the cluster, by sender key
        # Connections whose Hello is on its way through the log, and its request.
        self.arriving: dict[int, Request] = {}
        self._elsewhere_cids = itertools.count(-2, -1)  # -1 means "nobody" in apply_say
        self._apply: dict[type, Callable[[Entry, Request | None], list[Delivery]]] = {
            HelloEntry: self._apply_hello,  # type: ignore[dict-item]
            EndEntry: self._apply_end,  # type: ignore[dict-item]
            JoinEntry: self._apply_join,  # type: ignore[dict-item]
            PartEntry: self._apply_part,  # type: ignore[dict-item]
            NickEntry: self._apply_nick,  # type: ignore[dict-item]
            TellEntry: self._apply_tell,  # type: ignore[dict-item]
            AccountEntry: self._apply_account,  # type: ignore[dict-item]
            ClaimEntry: self._apply_claim,  # type: ignore[dict-item]
            ModerateEntry: self._apply_moderate,  # type: ignore[dict-item]
        }

    @property
    def node(self) -> str:
        assert self.log is not None
        return self.log.node

    def apply(self, entry: Entry, request: Request | None) -> list[Delivery]:
        """Apply an entry of the log (but a Say or a mark); `request`: this node's, when it
        proposed it. The deliveries are for this node's connections."""
        return self._apply[type(entry)](entry, request)

    def apply_gone(self, node: str, now_ms: int) -> list[Delivery]:
        """`node`'s lease ended: its sessions are dropped (every node does this at the same
        place in the log)."""
        out: list[Delivery] = []
        for session in [s for s in self.by_key.values() if s.node == node]:
            out += self._forget(session, "dropped", GONE_REASON, now_ms)
        return out

    # -- proposing -------------------------------------------------------------------------

    def _submit(self, entry: Entry, request: Request) -> list[Delivery]:
        assert self.log is not None
        return self.log.submit(entry, request)

    def _welcome(
        self, cid: int, hello: Hello, origin: Origin, account: str, now_ms: int
    ) -> list[Delivery]:
        log = self.log
        if log is None:
            return super()._welcome(cid, hello, origin, account, now_ms)
        token = hello.token
        key = sender_key_of(token) if token and self._token_valid(token, account) else ""
        nick = hello.nick or account
        problem = nick_problem(nick)
        if problem is not None:
            # Standalone, a resume keeps its session's nick whatever this one says.
            resumed = self.by_key.get(key) if key else None
            if resumed is None:
                return [control(cid, Bye(code=ErrorCode.INVALID_NICK, reason=problem))]
            nick = resumed.nick
        request = Request(cid)
        request.token = token if key else ""
        request.fresh_token = self._token_for(account)
        request.origin = origin
        request.version = hello.version
        entry = HelloEntry(
            log.node,
            log.number(),
            now_ms,
            key,
            sender_key_of(request.fresh_token),
            nick,
            account,
        )
        self.arriving[cid] = request
        out = log.submit(entry, request)
        if out:
            del self.arriving[cid]
        return out

    def disconnect(
        self, cid: int, reason: str, now_ms: int, *, clean: bool = False
    ) -> list[Delivery]:
        log = self.log
        if log is None:
            return super().disconnect(cid, reason, now_ms, clean=clean)
        pending = self.pending.pop(cid, None)
        if pending is not None:
            self._settle(pending)
        self.arriving.pop(cid, None)  # its session ends when its Hello is applied
        session = self.sessions.get(cid)
        if session is None:
            return []
        self._end(session, reason, now_ms, clean=clean)
        return []

    def _end(self, session: Session, reason: str, now_ms: int, *, clean: bool) -> None:
        """This node's session has no connection any more: it ends, through the log (until
        then it is listed, and goes nowhere)."""
        assert self.log is not None
        self._relocate(session, next(self._elsewhere_cids))
        entry = EndEntry(
            self.node,
            self.log.number(),
            now_ms,
            session.sender_key,
            session.since,
            clip_reason(reason),
            clean,
        )
        self.log.submit(entry, Request(-1))

    def _join(self, session: Session, join: Join, now_ms: int) -> list[Delivery]:
        if self.log is None:
            return super()._join(session, join, now_ms)
        cid = session.cid
        name = normalise_room(join.room)
        if name is None:
            return [_bad_room(cid, join.room)]
        request = Request(cid, join.rid)
        if join.after is not None:
            request.after, request.count = join.after, self.config.replay_limit
        else:
            request.count = self.config.join_history if join.history is None else join.history
        request.replay_room = self._replay_room
        if name in session.rooms:
            return self._joined(request, name)
        if len(session.rooms) >= self.config.max_rooms:
            return [self._too_many_rooms(cid)]
        problem = self.rules.entry_problem(name, session.identity, session.account)
        if problem is not None:
            return [_refuse(cid, ErrorCode.NOT_PERMITTED, problem)]
        if name not in self.rooms and not self.store.head(name) and name not in self.creating:
            refused = self._create_room(session, name)
            if refused is not None:
                return [refused]
            self.creating[name] = None
        entry = JoinEntry(self.node, self._number(), now_ms, session.sender_key, name)
        out = self._submit(entry, request)
        if out:
            self.not_stored(name)
        return out

    def _part(self, session: Session, part: Part, now_ms: int) -> list[Delivery]:
        if self.log is None:
            return super()._part(session, part, now_ms)
        cid = session.cid
        name = normalise_room(part.room)
        if name is None:
            return [_bad_room(cid, part.room)]
        if name not in session.rooms:
            return [_refuse(cid, ErrorCode.NOT_IN_ROOM, f"you are not in #{name}")]
        entry = PartEntry(
            self.node, self._number(), now_ms, session.sender_key, name, clip_reason(part.reason)
        )
        return self._submit(entry, Request(cid, part.rid))

    def _moderate(self, session: Session, request: Moderate, now_ms: int) -> list[Delivery]:
        """Checked against the settings now (what they refuse is answered at once), then
        proposed: every node does it when the log brings it back (`_apply_moderate`)."""
        if self.log is None:
            return super()._moderate(session, request, now_ms)
        cid = session.cid
        self.last_cost = MODERATE_COST
        name = normalise_room(request.room)
        if name is None:
            return [_bad_room(cid, request.room)]
        action, target = request.action, request.target
        try:
            if action == "kick":
                target = self._kick_target(name, target)
            self.rules.check(name, session.account, action, target, request.text)
        except Refusal as refusal:
            return [_refuse(cid, refusal.code, str(refusal))]
        entry = ModerateEntry(
            self.node,
            self._number(),
            now_ms,
            session.sender_key,
            session.nick,
            session.account,
            name,
            action,
            request.target,
            request.text,
        )
        return self._submit(entry, Request(cid, request.rid))

    def _own(self, name: str, account: str) -> None:
        """`account` creates room `name`: a claim goes to the log before the Join or Say
        that creates it, and every node gives it the room if it is still new then."""
        if self.log is None:
            super()._own(name, account)
            return
        entry = ClaimEntry(self.node, self._number(), name, account)
        self._submit(entry, Request(-1))

    def _registered(self, cid: int, pending: Pending, hashed: str, now_ms: int) -> list[Delivery]:
        """The password is hashed (here, once): the account goes to the log with its hash."""
        session = self.sessions.get(cid)
        if self.log is None or session is None or not hashed:
            return super()._registered(cid, pending, hashed, now_ms)
        entry = AccountEntry(
            self.node,
            self._number(),
            now_ms,
            "register",
            pending.account,
            hashed,
            session.sender_key,
        )
        rid = pending.event.rid if type(pending.event) is Register else ""
        return self._submit(entry, Request(cid, rid))

    def _change_nick(self, session: Session, change: ChangeNick, now_ms: int) -> list[Delivery]:
        if self.log is None:
            return super()._change_nick(session, change, now_ms)
        cid = session.cid
        nick = change.nick
        problem = nick_problem(nick)
        if problem is not None:
            return [deliver((cid,), Error(code=ErrorCode.INVALID_NICK, message=problem))]
        holder = self.nicks.get(nick.casefold())
        if holder is not None and holder is not session:
            return [_refuse(cid, ErrorCode.NICK_IN_USE, f"{nick!r} is taken")]
        if nick == session.nick:
            same = Notice(kind="renamed", nick=nick, ts=now_ms, new_nick=nick)
            return [deliver((cid,), same)]
        if nick.casefold() != session.key and self._reserved_for_other(nick, session.account):
            return [
                _refuse(
                    cid,
                    ErrorCode.NICK_RESERVED,
                    f"{quote(nick)} belongs to an account: log in to it to use it",
                )
            ]
        entry = NickEntry(self.node, self._number(), now_ms, session.sender_key, nick)
        return self._submit(entry, Request(cid, change.rid))

    def _tell(self, session: Session, tell: Tell, now_ms: int) -> list[Delivery]:
        if self.log is None:
            return super()._tell(session, tell, now_ms)
        cid = session.cid
        refused = self._check_text(cid, tell.text, tell.msg_id)
        if refused is not None:
            return refused
        entry = TellEntry(
            self.node,
            self._number(),
            now_ms,
            session.sender_key,
            session.nick,
            tell.to,
            tell.msg_id,
            tell.text,
            tell.action,
        )
        return self._submit(entry, Request(cid, tell.rid, tell.msg_id))

    def _too_many_rooms(self, cid: int) -> Delivery:
        message = f"a connection may be in at most {self.config.max_rooms} rooms"
        return _refuse(cid, ErrorCode.TOO_MANY_ROOMS, message)

    def _number(self) -> int:
        assert self.log is not None
        return self.log.number()

    # -- applying --------------------------------------------------------------------------

    def _tenant(self, key: str, node: str) -> Session | None:
        """The session `key`, if it is still on `node` (an entry of `node` about a session
        that has moved or ended since is about nothing)."""
        session = self.by_key.get(key)
        return session if session is not None and session.node == node else None

    def _asker(self, request: Request | None, session: Session | None) -> int:
        """The connection of this node that made the request and still holds `session`,
        or -1."""
        if request is None or session is None or session.cid != request.cid:
            return -1
        return request.cid

    def _relocate(self, session: Session, cid: int) -> None:
        """`session` is held by connection `cid` from now on (a negative cid: by none here)."""
        old = session.cid
        if old >= 0:
            if self.sessions.get(old) is session:
                del self.sessions[old]
        else:
            self.elsewhere.pop(old, None)
        session.cid = cid
        if cid >= 0:
            self.sessions[cid] = session
        else:
            self.elsewhere[cid] = session
        for name in session.rooms:
            room = self.rooms[name]
            room.remove(old)
            room.add(cid)

    def _apply_hello(self, entry: HelloEntry, request: Request | None) -> list[Delivery]:
        out: list[Delivery] = []
        cid = -1
        if request is not None and self.arriving.get(request.cid) is request:
            del self.arriving[request.cid]
            cid = request.cid
        if entry.account and self.registry.account(entry.account) is None:
            # Removed (`chatctl accounts remove`) after its password was checked.
            if cid < 0:
                return []
            return [_bye(cid, ErrorCode.LOGIN_FAILED, "wrong account name or password")]
        key, token = entry.key, request.token if request is not None else ""
        old = self.by_key.get(key) if key else None
        if old is not None and account_key(old.account) != account_key(entry.account):
            old = None  # a guest's token, and the guest has registered since
            key = ""
        if not key:
            key, token = entry.fresh, request.fresh_token if request is not None else ""
            if key in self.by_key:  # not a key a node made: a new token's is new
                if cid < 0:
                    return []
                bye = Bye(code=ErrorCode.SERVER_ERROR, reason="a session key in use twice")
                return [control(cid, bye)]
        where = cid if cid >= 0 else next(self._elsewhere_cids)
        if old is not None:
            # A resume: the session moves to the connection that resumes it, on its node.
            if old.cid >= 0:
                elsewhere = "" if cid >= 0 else " on another server"
                address = request.origin.address if request is not None else "-"
                who = f" (logged in as {entry.account})" if entry.account else ""
                reason = f"your session was taken over by a new connection{elsewhere}"
                if cid >= 0:
                    reason += f" from {address}"
                bye = Bye(code=ErrorCode.REPLACED, reason=clip_reason(reason + who))
                out.append(control(old.cid, bye))
            self._relocate(old, where)
            session = old
            session.token = token
        else:
            nick = self._claim(entry.nick, entry.account, entry.ts, out)
            session = Session(where, nick, token)
            session.sender_key = key
            session.account = entry.account
            self.nicks[session.key] = session
            self.by_key[key] = session
            if where >= 0:
                self.sessions[where] = session
            else:
                self.elsewhere[where] = session
        session.node = entry.node
        session.since = entry.p
        if cid >= 0 and request is not None:
            session.origin = request.origin
            out.append(self._welcomed(cid, request.version, session))
        elif entry.node == self.node and self.log is not None:
            self._end(session, "connection lost", entry.ts, clean=False)  # gone meanwhile
        else:
            session.origin = Origin()
        return out

    def _apply_end(self, entry: EndEntry, request: Request | None) -> list[Delivery]:
        del request
        session = self._tenant(entry.key, entry.node)
        if session is None or session.since != entry.since:
            return []
        return self._forget(session, "left" if entry.clean else "dropped", entry.reason, entry.ts)

    def _forget(self, session: Session, kind: str, reason: str, now_ms: int) -> list[Delivery]:
        """`session` ends: its rooms hear it (`kind` left or dropped) on this node."""
        cid = session.cid
        if cid >= 0:
            if self.sessions.get(cid) is session:
                del self.sessions[cid]
        else:
            self.elsewhere.pop(cid, None)
        if self.nicks.get(session.key) is session:
            del self.nicks[session.key]
        if self.by_key.get(session.sender_key) is session:
            del self.by_key[session.sender_key]
        out: list[Delivery] = []
        for name in session.rooms:
            room = self.rooms[name]
            room.remove(cid)
            if not room.size:
                self._vacate(name)
            elif room.targets:
                notice = Notice(kind=kind, nick=session.nick, ts=now_ms, room=name, reason=reason)
                out.append(deliver(room.targets, notice))
        session.rooms = {}
        return out

    def _to_room(self, room: Room, notice: Notice, cid: int) -> list[Delivery]:
        """`notice` to the room's members here; the asker's (`cid`) copy on its own, as an
        answer in its place among the connection's answers."""
        data = encode(notice)
        out: list[Delivery] = []
        if room.targets and room.targets != (cid,):
            out.append(Delivery(room.targets, data, cid))
        if cid >= 0:
            out.append(Delivery((cid,), data))
        return out

    def _joined(self, request: Request, name: str) -> list[Delivery]:
        """A Join's answer to its connection: the replay, HistoryEnd and Members."""
        cid = request.cid
        self._replay_room = request.replay_room
        try:
            out = self._replay(cid, name, request.after, request.count)
        finally:
            self._replay_room = None
        out.append(self._members(cid, name))
        return out

    def _apply_join(self, entry: JoinEntry, request: Request | None) -> list[Delivery]:
        name = entry.room
        session = self._tenant(entry.key, entry.node)
        cid = self._asker(request, session)
        out: list[Delivery] = []
        if session is not None and name not in session.rooms:
            problem = self.rules.entry_problem(name, session.identity, session.account)
            if problem is not None or len(session.rooms) >= self.config.max_rooms:
                # Full, or banned or made private since it was proposed.
                if request is not None:
                    self.not_stored(name)
                if cid < 0:
                    return []
                refused = (
                    _refuse(cid, ErrorCode.NOT_PERMITTED, problem)
                    if problem is not None and len(session.rooms) < self.config.max_rooms
                    else self._too_many_rooms(cid)
                )
                return self._answer(request, [refused])
            room = self.rooms.get(name)
            if room is None:
                if not self.store.head(name):
                    counted = name in self.creating  # by this node, when proposed
                    self.creating.pop(name, None)
                    self.room_count += not counted
                room = self.rooms[name] = Room(name)
            room.add(session.cid)
            session.rooms[name] = None
            joined = Notice(kind="joined", nick=session.nick, ts=entry.ts, room=name)
            out += self._to_room(room, joined, cid)
        elif request is not None:
            self.not_stored(name)
        if cid < 0 or request is None:
            return out
        return self._answer(request, out + self._joined(request, name))

    def _apply_part(self, entry: PartEntry, request: Request | None) -> list[Delivery]:
        name = entry.room
        session = self._tenant(entry.key, entry.node)
        cid = self._asker(request, session)
        if session is None or name not in session.rooms:
            if cid < 0 or request is None:
                return []
            return self._answer(
                request, [_refuse(cid, ErrorCode.NOT_IN_ROOM, f"you are not in #{name}")]
            )
        room = self.rooms[name]
        left = Notice(kind="left", nick=session.nick, ts=entry.ts, room=name, reason=entry.reason)
        out = self._to_room(room, left, cid)
        self._leave(session, name)
        return self._answer(request, out) if cid >= 0 else out

    def _apply_nick(self, entry: NickEntry, request: Request | None) -> list[Delivery]:
        session = self._tenant(entry.key, entry.node)
        cid = self._asker(request, session)
        if session is None:
            return []
        nick = entry.nick
        holder = self.nicks.get(nick.casefold())
        refused: Delivery | None = None
        if holder is not None and holder is not session:
            refused = _refuse(cid, ErrorCode.NICK_IN_USE, f"{nick!r} is taken")
        elif nick.casefold() != session.key and self._reserved_for_other(nick, session.account):
            # Registered since it was proposed.
            message = f"{quote(nick)} belongs to an account: log in to it to use it"
            refused = _refuse(cid, ErrorCode.NICK_RESERVED, message)
        if refused is not None:
            return self._answer(request, [refused]) if cid >= 0 else []
        notice = Notice(kind="renamed", nick=session.nick, ts=entry.ts, new_nick=nick)
        if nick != session.nick:
            del self.nicks[session.key]
            session.nick = nick
            session.key = nick.casefold()
            self.nicks[session.key] = session
            audience: dict[int, None] = {}
            for name in session.rooms:
                audience.update(dict.fromkeys(self.rooms[name].targets))
            audience.pop(cid, None)
            data = encode(notice)
            out = [Delivery(tuple(audience), data)] if audience else []
        else:
            out = []
        if cid < 0:
            return out
        out.append(deliver((cid,), notice))
        return self._answer(request, out)

    def _apply_tell(self, entry: TellEntry, request: Request | None) -> list[Delivery]:
        cid = request.cid if request is not None else -1
        msg_id = entry.msg_id
        out: list[Delivery] = []
        key = (entry.key, msg_id)
        digest = tell_digest(entry.to, entry.text, entry.action)
        earlier = self._tells.get(key)
        if earlier is not None:
            if earlier[0] != digest:
                out.append(_reused(cid, msg_id))
            else:
                out.append(deliver((cid,), Ack(msg_id=msg_id, ts=earlier[1], recipients=1)))
        elif self.store.find(entry.key, msg_id) is not None:
            out.append(_reused(cid, msg_id))  # the id of a room message
        else:
            target = self.nicks.get(entry.to.casefold())
            if target is None:
                message = f"nobody is called {quote(entry.to)}"
                out.append(_refuse(cid, ErrorCode.NO_SUCH_NICK, message, msg_id))
            else:
                self._tells[key] = (digest, entry.ts)
                if len(self._tells) > TELLS_KEPT:
                    del self._tells[next(iter(self._tells))]
                if target.cid >= 0:  # only the recipient's node delivers it
                    # Its sender's nick now: a guest's may have gone to an account's owner
                    # since the Tell was proposed.
                    sender = self.by_key.get(entry.key)
                    dm = DirectMessage(
                        sender=entry.nick if sender is None else sender.nick,
                        to=target.nick,
                        ts=entry.ts,
                        text=entry.text,
                        action=entry.action,
                    )
                    out.append(deliver((target.cid,), dm))
                out.append(deliver((cid,), Ack(msg_id=msg_id, ts=entry.ts, recipients=1)))
        if cid < 0:
            return [d for d in out if d.to != (-1,)]
        return self._answer(request, out)

    def _apply_account(self, entry: AccountEntry, request: Request | None) -> list[Delivery]:
        """An account made, given a password or removed: the registry decides alone, the
        same on every node (apply_account); a registration also logs its session in."""
        refused = apply_account(self.registry, entry)
        if entry.action != "register":
            return []
        session = self._tenant(entry.key, entry.node)
        cid = self._asker(request, session)
        if not refused and session is not None and session.nick == entry.name:
            # The session keeps its token for now, but resuming it takes the account's login
            # from here on (see _apply_hello), which a reconnect then gets a new token with.
            session.account = entry.name
            notice = Notice(kind="registered", nick=entry.name, ts=entry.ts)
            return self._answer(request, [deliver((cid,), notice)]) if cid >= 0 else []
        if cid < 0:
            return []
        taken = self.registry.account(entry.name) is not None
        message = f"{quote(entry.name)} is already an account" if taken else refused
        return self._answer(request, [_refuse(cid, ErrorCode.REGISTRATION_REFUSED, message)])

    def _apply_claim(self, entry: ClaimEntry, request: Request | None) -> list[Delivery]:
        del request
        name = entry.room
        if name not in self.rooms and not self.store.head(name) and name != DEFAULT_ROOM:
            self.rules.created(name, entry.account)  # nothing if it has settings already
        return []

    def _apply_moderate(self, entry: ModerateEntry, request: Request | None) -> list[Delivery]:
        """Checked again against the settings as they are now, and done: every node changes
        them alike, announces the change to its own members of the room (and to an invitee
        connected to it), and puts a kicked or banned member out."""
        cid = self._asker(request, self._tenant(entry.key, entry.node))
        out = self._moderated(
            cid,
            entry.nick,
            entry.account,
            entry.room,
            entry.action,
            entry.target,
            entry.text,
            entry.ts,
        )
        return self._answer(request, out) if cid >= 0 else out

    @staticmethod
    def _answer(request: Request | None, out: list[Delivery]) -> list[Delivery]:
        """`out`, with the request's rid on the frames that answer it."""
        if request is None or not request.rid:
            return out
        return _answering(request.cid, request.rid, out)
