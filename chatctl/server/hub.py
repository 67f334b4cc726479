"""The chat rules, sans-IO: rooms, nicks, membership and who receives what.

The event loop feeds `Hub.handle(cid, event, now_ms, replay_room=...)` with every decoded
client frame of a connection (`cid`) and `Hub.disconnect` when a connection ends. Both return
deliveries: which connections get which frame. Each delivered frame is encoded here exactly
once, so the loop can append the same bytes to every recipient's output queue; a Welcome or a
Bye also carries its event (`control`), which the loop needs to act on it. Nothing here touches
a socket or a clock, so the rules are unit-tested without either.

What a hostile client can make the hub do is bounded (issue #11): a replay never reads or
queues more than the connection's output queue can take (`replay_room`) and reports its cost
(`Hub.last_cost`) for the loop's rate meter; the rooms the server knows are capped
(`total_rooms`) and creating one asks the loop's per-address allowance (`may_create_room`).

Kept as one module: it is the rule book of docs/protocol.md §6, one request kind a method, over
one shared state (sessions, rooms, the store); a split would only scatter it. Room settings and
who may moderate live in moderation.py, the key derivation of logins in verifier.py.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
import secrets
from collections.abc import Callable, Iterable, Sequence
from typing import NamedTuple, Protocol

import msgspec

from chatctl import __version__
from chatctl.names import (
    MSG_ID_MAX,
    NICK_MAX,
    ROOM_MAX,
    clip_reason,
    nick_problem,
    normalise_room,
    quote,
    room_problem,
)
from chatctl.passwords import (
    PASSWORD_MAX,
    dummy_hash,
    hash_password,
    password_problem,
    verify_password,
)
from chatctl.protocol import (
    HEADER_SIZE,
    PROTOCOL_VERSION,
    Ack,
    Bye,
    ChangeNick,
    DirectMessage,
    Error,
    ErrorCode,
    Event,
    Gap,
    Hello,
    History,
    HistoryEnd,
    Join,
    ListRooms,
    Members,
    Moderate,
    Notice,
    Part,
    Register,
    RoomList,
    Say,
    Tell,
    Welcome,
    Who,
    decode_body,
    encode,
    encode_ack,
    encode_message,
)
from chatctl.server.admission import LoginThrottle
from chatctl.server.config import DEFAULT_ROOM, AuthMode, Registration, ServerConfig
from chatctl.server.moderation import NOTICE_OF, Refusal, RoomRules
from chatctl.store.base import Store, StoredMessage, sender_key_of
from chatctl.store.registry import REGISTERED_MAX, MemoryRegistry, Registry, account_key

INSECURE = "passwords are accepted only over TLS or from this machine (loopback)"
NONCE_LENGTH = 22  # secrets.token_urlsafe(16)
TOKEN_LENGTH = NONCE_LENGTH + 16  # and 12 bytes of MAC in base64
REGISTER_COST = 10.0  # rate-meter tokens: it hashes a password and writes the registry
MODERATE_COST = 5.0  # a durable write of the room's settings
TELLS_KEPT = 100_000  # direct messages remembered for resends: ~15 MB at most


class Origin(NamedTuple):
    """Where a connection comes from, as the loop tells the hub with a Hello."""

    address: str = "-"  # "203.0.113.7:50312": named to a session taken over
    secure: bool = True  # TLS, or loopback: a password may be sent on it
    client: str = ""  # its client address (admission.client_key): failed logins count there


class Check(NamedTuple):
    """A password to check against a stored hash, or to hash (`stored` ""): key derivation,
    which the loop runs off its thread (verifier.py)."""

    cid: int
    password: str
    stored: str


class Pending(NamedTuple):
    """A Hello or Register waiting for its Check."""

    event: Hello | Register
    origin: Origin
    account: str  # the account's name: to log in to ("" if none has it), or to register


class Said(Protocol):
    """A Say as a cluster's shared log holds it (cluster/entries.py's SayEntry)."""

    @property
    def room(self) -> str: ...
    @property
    def ts(self) -> int: ...
    @property
    def nick(self) -> str: ...
    @property
    def text(self) -> str: ...
    @property
    def action(self) -> bool: ...
    @property
    def sender_key(self) -> str: ...
    @property
    def msg_id(self) -> str: ...


class Busy(Exception):
    """`offload` has no room for another Check now; the message says so."""


def check_now(check: Check) -> bool | str:
    """A Check done on the spot: what `Hub.offload` does unless the loop says otherwise."""
    if check.stored:
        return verify_password(check.password, check.stored)
    return hash_password(check.password)


class Delivery(msgspec.Struct, frozen=True, gc=False):
    """`data`, one encoded frame (or, from a SayRun, a run of Messages or of Acks), goes to
    every connection in `to` except `skip`.

    Two are built for every message on the hot path: a msgspec Struct is built in C, about
    three times faster than a named tuple, and gc=False keeps the collector away (it holds
    ints, bytes and, at most, a Welcome or Bye: never a cycle). Build it positionally.
    `control` is the event of a Welcome or Bye (these change the connection's state, and
    the loop logs them), so that the loop needs neither to decode `data` nor to encode the
    event again. `event` decodes `data`'s first frame again, for tests.
    """

    to: Sequence[int]
    data: bytes
    skip: int = -1
    control: Welcome | Bye | None = None

    @property
    def frame_type(self) -> int:
        return self.data[2]

    @property
    def event(self) -> Event:
        return decode_body(self.data[2], self.data[HEADER_SIZE:])


_NOTHING: list[Delivery] = []  # never appended to


class SayRun:
    """The answers to a run of one connection's Says, in order (Hub.handle_says): the frames
    of consecutive messages stored in the same room are joined, their Messages into one
    Delivery to the room (but the sender) and their Acks into one to the sender. The room's
    other members and the sender see the same bytes in the same order as with a Delivery per
    frame; any other answer (a refusal, a resend's Ack) closes the run first."""

    __slots__ = ("_acks", "_cid", "_messages", "_room", "out")

    def __init__(self, cid: int) -> None:
        self._cid = cid
        self.out: list[Delivery] = []
        self._room: Room | None = None
        self._messages: list[bytes] = []
        self._acks: list[bytes] = []

    def said(self, room: Room | None, message: bytes | None, ack: bytes) -> None:
        """A message stored in `room` (None: a room nobody is in), its frame and its Ack."""
        if room is not self._room:
            self._close()
            self._room = room
        if message is not None:
            self._messages.append(message)
        self._acks.append(ack)

    def add(self, deliveries: list[Delivery]) -> None:
        """Answers that are not part of the run: after what the run holds so far."""
        self._close()
        self.out += deliveries

    def close(self) -> list[Delivery]:
        """Everything, in order."""
        self._close()
        return self.out

    def _close(self) -> None:
        if self._acks:
            if self._messages:
                assert self._room is not None
                data = b"".join(self._messages)
                self.out.append(Delivery(self._room.targets, data, self._cid))
                self._messages = []
            self.out.append(Delivery((self._cid,), b"".join(self._acks)))
            self._acks = []


def deliver(to: Sequence[int], event: Event, skip: int = -1) -> Delivery:
    return Delivery(to, encode(event), skip)


def control(cid: int, event: Welcome | Bye) -> Delivery:
    """A Welcome or Bye for connection `cid`, encoded once: the loop sends these bytes."""
    return Delivery((cid,), encode(event), -1, event)


class Session:
    """A welcomed connection: its nick, its account ("" for a guest), where it connected
    from, its resume token and its rooms. On a node of a cluster, also the sessions of the
    other nodes (server/clusterhub.py): those have a negative `cid` (no connection here), no
    token, and their `node`; `since` numbers a session's stay on its node."""

    __slots__ = (
        "account",
        "cid",
        "key",
        "nick",
        "node",
        "origin",
        "rooms",
        "sender_key",
        "since",
        "token",
    )

    def __init__(self, cid: int, nick: str, token: str) -> None:
        self.cid = cid
        self.account = ""
        self.origin = Origin()
        self.nick = nick
        self.key = nick.casefold()
        self.token = token
        self.sender_key = sender_key_of(token)  # what the store keeps: never the token
        self.rooms: dict[str, None] = {}  # an ordered set
        self.node = ""
        self.since = 0

    @property
    def identity(self) -> str:
        """What room settings name it by: its account, or a guest's nick (moderation.py)."""
        return account_key(self.account or self.nick)


class Room:
    """A room's members: this server's connections (`members`), and on a node of a cluster
    the other nodes' sessions too (`remote`, by their negative cids): they count and are
    listed, but nothing is delivered to them here."""

    __slots__ = ("members", "name", "remote", "targets")

    def __init__(self, name: str) -> None:
        self.name = name
        self.members: dict[int, None] = {}
        self.remote: dict[int, None] = {}
        # An immutable snapshot of `members`, rebuilt on every change, so a Delivery can hold
        # it without copying per message.
        self.targets: tuple[int, ...] = ()

    def add(self, cid: int) -> None:
        if cid < 0:
            self.remote[cid] = None
            return
        self.members[cid] = None
        self.targets = tuple(self.members)

    def remove(self, cid: int) -> None:
        if cid < 0:
            del self.remote[cid]
            return
        del self.members[cid]
        self.targets = tuple(self.members)

    @property
    def size(self) -> int:
        return len(self.members) + len(self.remote)


def _any_cid_may(cid: int) -> bool:
    del cid
    return True


class Hub:
    """The chat rules. Besides the deliveries, after every `handle` call:

    - `last_cost` (float, in rate-meter tokens) is what the request just handled cost, for
      the loop to charge to the client's rate meter: 1.0 for any request (set without
      allocating, so a Say pays nothing for it); for a `Join` or `History` that replayed
      messages `1 + max(rows / 100, bytes / 65536)` (rows: Message frames replayed, bytes:
      their size); for a `ListRooms` or `Who`, `1 + entries / 1000` (rooms known, members),
      the work of sorting them.
    - `may_create_room(cid) -> bool`, set by the loop (default: always yes), is asked only
      when a request would create a room the server does not know yet (a first `Say` or
      `Join` to a new name), after the `total_rooms` cap; no gives `208 RATE_LIMITED`.
    - `room_count`: the rooms the server knows (stored history or members), kept as a
      counter: nothing per message is proportional to the number of rooms.
    """

    def __init__(
        self,
        config: ServerConfig,
        store: Store,
        registry: Registry | None = None,
        *,
        new_token: Callable[[], str] = lambda: secrets.token_urlsafe(16),
    ) -> None:
        self.config = config
        self.store = store
        self.registry: Registry = registry if registry is not None else MemoryRegistry()
        # As enums whatever the config was given (a test may pass "open").
        self.auth = AuthMode(config.auth)
        self.registration = Registration(config.registration)
        self.rules = RoomRules(self.registry)
        self.logins = LoginThrottle()
        self._secret = self.registry.secret()
        self._new_token = new_token
        # Key derivation: done on the spot unless the loop offloads it (a result now, or None
        # and `checked` later; Busy when it cannot take more). Logins and registrations
        # waiting for theirs, by connection: the loop reads none of their frames meanwhile.
        self.offload: Callable[[Check], bool | str | None] = check_now
        self.pending: dict[int, Pending] = {}
        # Recent direct messages, oldest first: (sender key, msg_id) -> (hash of recipient,
        # text and action; ts), for recognising resends (see _tell).
        self._tells: dict[tuple[str, str], tuple[int, int]] = {}
        self._guesses: dict[tuple[str, str], int] = {}  # (account, password) -> logins queued
        self.may_register: Callable[[int], bool] = _any_cid_may
        self.sessions: dict[int, Session] = {}
        # A cluster's sessions on no connection of this node, by negative cid (clusterhub.py).
        self.elsewhere: dict[int, Session] = {}
        self.nicks: dict[str, Session] = {}  # casefolded nick -> session
        self.tokens: dict[str, Session] = {}
        self.rooms: dict[str, Room] = {}  # rooms with members
        self._room_names: dict[str, str] = {}  # room name as sent -> normalised (a cache)
        self._next_suffix: dict[str, int] = {}  # casefolded nick -> next variant number to try
        # Any text allowed must fit in a Message frame a client accepts (max_frame), even when
        # every character is escaped (\u0001 is 6 bytes) and with the other fields around it.
        self.max_text = min(config.max_text, max((config.max_frame - 512) // 6, 1))
        self.replay_budget = max(config.max_output // 2, 4096)
        self.last_cost = 1.0
        self.may_create_room: Callable[[int], bool] = _any_cid_may
        # Set on a node of a cluster (server/replication.py): a Say that passed every check
        # goes to the shared log instead of the store; it comes back through `apply_say`.
        self.propose: Callable[[Session, str, Say, int], list[Delivery]] | None = None
        # A node of a cluster: rooms this node counted as created whose first message is still
        # on its way through the log.
        self.creating: dict[str, None] = {}
        self.room_count = len(store.rooms())
        # Rooms the server may know, 0: no cap.
        self.total_rooms = config.total_rooms if config.total_rooms > 0 else 1 << 62
        # The current request's replay_room (see handle), None outside a Join or History.
        self._replay_room: int | None = None
        # For the cheap test of Say's text: only a text longer than this may be too long.
        self._text_check_from = self.max_text // 4
        self.frame_budget = config.max_frame - 256  # for lists: room for the other fields
        self.limits = {
            "max_frame": config.max_frame,
            "max_text": self.max_text,
            "max_output": config.max_output,
            "max_rooms": config.max_rooms,
            "max_nick": NICK_MAX,
            "max_room_name": ROOM_MAX,
            "rate": round(config.rate),
            "burst": config.burst,
            "ping_interval": math.ceil(config.ping_interval),
            "idle_timeout": math.ceil(config.idle_timeout),
            "join_history": config.join_history,
            "replay_limit": config.replay_limit,
            "total_rooms": config.total_rooms,
            # What this server does with accounts (docs/protocol.md §6.6): 0 none (--auth
            # off), 1 optional, 2 required; and whether Register is open (1) or not (0).
            "accounts": {AuthMode.off: 0, AuthMode.optional: 1, AuthMode.required: 2}[self.auth],
            "registration": int(self.registration is Registration.open),
            # Exact values where the keys above are rounded (timers in milliseconds, rates
            # in thousandths a second), and the limits per client address (§6.5, §7).
            "ping_interval_ms": _ms(config.ping_interval),
            "idle_timeout_ms": _ms(config.idle_timeout),
            "handshake_timeout_ms": _ms(config.handshake_timeout),
            "rate_milli": _ms(config.rate),
            "max_per_address": config.max_per_ip,
            "connect_rate_milli": _ms(config.connect_rate),
            "connect_burst": config.connect_burst,
            "room_rate_milli": _ms(config.room_rate),
            "room_burst": config.room_burst,
            "retain_messages": config.retain_messages,
            "retain_age_ms": _ms(config.retain_age),
        }
        self._handlers: dict[type[Event], Callable[[Session, Event, int], list[Delivery]]] = {
            Say: self._say,  # type: ignore[dict-item]
            Tell: self._tell,  # type: ignore[dict-item]
            Join: self._join,  # type: ignore[dict-item]
            Part: self._part,  # type: ignore[dict-item]
            ChangeNick: self._change_nick,  # type: ignore[dict-item]
            Who: self._who,  # type: ignore[dict-item]
            ListRooms: self._list_rooms,
            History: self._history,  # type: ignore[dict-item]
            Register: self._register,  # type: ignore[dict-item]
            Moderate: self._moderate,  # type: ignore[dict-item]
        }

    # -- the two entry points ------------------------------------------------------------------

    def handle(
        self,
        cid: int,
        event: Event,
        now_ms: int,
        *,
        replay_room: int | None = None,
        origin: Origin | None = None,
    ) -> list[Delivery]:
        """The deliveries that follow from `event`, sent by connection `cid`; `last_cost`
        says what it cost.

        A Bye among them means: send it, then close that connection. `replay_room`, for a
        Join or History: how many more bytes the connection's output queue may take. The
        replay is cut to it (as well as to `replay_limit` and half of `max_output`), but
        always carries one message at least, so that paging progresses. None: no such cut.
        `origin`,
        with a Hello: where the connection comes from (default: a secure connection of
        unknown address).

        A login or registration may leave its connection in `pending` (its password is
        being checked off the loop): feed it nothing more until `checked` has answered.
        """
        self.last_cost = 1.0
        if type(event) is Hello:
            return self._hello(cid, event, origin or Origin(), now_ms)
        session = self.sessions.get(cid)
        if session is None:
            return []  # a connection that was replaced or never welcomed
        kind = type(event)
        handler = self._handlers.get(kind)
        if handler is None:
            return []  # Ping, Pong and Bye belong to the event loop
        rid: str = event.rid  # type: ignore[attr-defined]
        if len(rid) > MSG_ID_MAX:
            error = Error(
                code=ErrorCode.INVALID_REQUEST,
                message=f"a rid has at most {MSG_ID_MAX} characters",
                msg_id=getattr(event, "msg_id", "")[:MSG_ID_MAX],  # a Say's or Tell's
                rid=rid[:MSG_ID_MAX],
            )
            return [deliver((cid,), error)]
        if replay_room is None:
            out = handler(session, event, now_ms)
        else:
            self._replay_room = replay_room
            try:
                out = handler(session, event, now_ms)
            finally:
                self._replay_room = None
        if rid:
            return _answering(cid, rid, out, acked=kind is Say)
        return out

    def handle_say(self, cid: int, say: Say, now_ms: int) -> list[Delivery]:
        """`handle` for a Say without a rid, the bulk of all traffic: the same result without
        the dispatch on the event's type and the rid's checks."""
        self.last_cost = 1.0
        session = self.sessions.get(cid)
        if session is None:
            return []
        return self._say(session, say, now_ms)

    def handle_says(self, cid: int, says: list[Say], now_ms: int) -> list[Delivery]:
        """`handle_say` for each of `says` (Says without a rid, in the order they came from
        `cid`), answered by the same frames in the same order for every connection. A run of
        them stored in one room goes out as one Delivery of their Messages and one of their
        Acks, not two per message: at 1 -> 1 the deliveries cost as much as the rest of the
        message (docs/architecture.md, "Cost of a message")."""
        self.last_cost = 1.0
        session = self.sessions.get(cid)
        if session is None:
            return []
        run = SayRun(cid)
        for say in says:
            refused = self._say(session, say, now_ms, run)
            if refused:
                run.add(refused)
        return run.close()

    def disconnect(
        self, cid: int, reason: str, now_ms: int, *, clean: bool = False
    ) -> list[Delivery]:
        """Forget connection `cid`. Its rooms hear that it left (`clean`) or dropped."""
        pending = self.pending.pop(cid, None)
        if pending is not None:
            self._settle(pending)
        session = self.sessions.pop(cid, None)
        if session is None:
            return []
        del self.nicks[session.key]
        if self.tokens.get(session.token) is session:
            del self.tokens[session.token]
        out: list[Delivery] = []
        kind = "left" if clean else "dropped"
        for name in session.rooms:
            room = self.rooms[name]
            room.remove(cid)
            if not room.size:
                self._vacate(name)
            else:
                notice = Notice(
                    kind=kind, nick=session.nick, ts=now_ms, room=name, reason=clip_reason(reason)
                )
                out.append(deliver(room.targets, notice))
        return out

    def use_secret(self, secret: bytes) -> None:
        """Sign and check resume tokens with `secret` from now on, before anyone is admitted:
        the nodes of a cluster share one, so that a client resumes on any node and its resends
        are recognised there (server/replication.py)."""
        self._secret = secret

    def nick_of(self, cid: int) -> str:
        session = self.sessions.get(cid)
        return session.nick if session else ""

    # -- handshake and login -----------------------------------------------------------------

    def _hello(self, cid: int, hello: Hello, origin: Origin, now_ms: int) -> list[Delivery]:
        if hello.version < 1:  # the lower of the two versions is spoken; there is none below 1
            return [
                control(
                    cid,
                    Bye(
                        code=ErrorCode.UNSUPPORTED_VERSION,
                        reason=f"this server speaks protocol versions 1 to {PROTOCOL_VERSION}",
                    ),
                )
            ]
        if not hello.account:
            if self.auth is AuthMode.required:
                return [
                    _bye(cid, ErrorCode.AUTH_REQUIRED, "this server admits accounts only: log in")
                ]
            return self._welcome(cid, hello, origin, "", now_ms)
        # A login. Everything that can refuse it without the password comes first: a refused
        # attempt costs no key derivation.
        if self.auth is AuthMode.off:
            return [_bye(cid, ErrorCode.LOGIN_FAILED, "this server has no accounts (--auth off)")]
        if not origin.secure:
            return [_bye(cid, ErrorCode.LOGIN_FAILED, INSECURE)]
        keys = _login_keys(hello, origin)
        wait = self.logins.wait(keys, now_ms / 1000)
        if wait > 0:
            return [
                _bye(
                    cid,
                    ErrorCode.LOGIN_FAILED,
                    f"too many failed logins; try again in {math.ceil(wait)} s",
                )
            ]
        if len(hello.password) > PASSWORD_MAX or nick_problem(hello.account) is not None:
            # No account is named so, and no password is that long: a failed login, counted,
            # without a key derivation (and nothing that size is held while one waits).
            self.logins.failed(keys, now_ms / 1000)
            return [_bye(cid, ErrorCode.LOGIN_FAILED, "wrong account name or password")]
        account = self.registry.account(hello.account)
        stored = account.password_hash if account is not None else dummy_hash()
        name = account.name if account is not None else ""
        return self._check(Check(cid, hello.password, stored), Pending(hello, origin, name), now_ms)

    def _check(self, check: Check, pending: Pending, now_ms: int) -> list[Delivery]:
        """Run `check` (through `offload`): its outcome now, or later through `checked`."""
        try:
            result = self.offload(check)
        except Busy as exc:
            if type(pending.event) is Hello:
                return [_bye(check.cid, ErrorCode.LOGIN_FAILED, str(exc))]
            return [_refuse(check.cid, ErrorCode.REGISTRATION_REFUSED, str(exc))]
        if result is None:
            self.pending[check.cid] = pending
            if type(pending.event) is Hello:
                # A guess counts against its account from the moment it is made, until its
                # check says otherwise: guesses at one account sent together cannot all
                # slip past the throttle. The same guess made by many connections at once
                # counts once. The address's count waits for the outcome: a NAT's users
                # logging in to their accounts at once are not guesses (a burst of guesses
                # at many accounts from one address is bounded by the verifier's queue).
                guess = _guess(pending.event)
                if guess not in self._guesses:
                    self.logins.failed(
                        _login_keys(pending.event, pending.origin)[1:], now_ms / 1000
                    )
                self._guesses[guess] = self._guesses.get(guess, 0) + 1
            return []
        return self._finish(check.cid, pending, result, now_ms)

    def _settle(self, pending: Pending) -> bool:
        """A queued login check is over: whether its guess was counted as a failure."""
        if type(pending.event) is not Hello:
            return False
        guess = _guess(pending.event)
        left = self._guesses.pop(guess, 0) - 1
        if left > 0:
            self._guesses[guess] = left
        return True

    def checked(self, cid: int, result: bool | str, now_ms: int) -> list[Delivery]:
        """The outcome of a Check that `offload` queued: True/False for a password checked,
        the new hash for a password hashed. Nothing when the connection has gone since."""
        pending = self.pending.pop(cid, None)
        if pending is None:
            return []
        out = self._finish(cid, pending, result, now_ms, counted=self._settle(pending))
        if type(pending.event) is Register and pending.event.rid:
            return _answering(cid, pending.event.rid, out)
        return out

    def _finish(
        self, cid: int, pending: Pending, result: bool | str, now_ms: int, *, counted: bool = False
    ) -> list[Delivery]:
        event = pending.event
        if type(event) is Register:
            return self._registered(cid, pending, str(result), now_ms)
        hello: Hello = event  # type: ignore[assignment]
        keys = _login_keys(hello, pending.origin)
        if result is not True or not pending.account:
            self.logins.failed(keys[:1] if counted else keys, now_ms / 1000)
            return [_bye(cid, ErrorCode.LOGIN_FAILED, "wrong account name or password")]
        self.logins.succeeded(keys)
        return self._welcome(cid, hello, pending.origin, pending.account, now_ms)

    def _welcome(
        self, cid: int, hello: Hello, origin: Origin, account: str, now_ms: int
    ) -> list[Delivery]:
        """Admit a guest (`account` "") or a logged-in account: resume its session when the
        token is one this server gave to that account, else open a new one."""
        out: list[Delivery] = []
        token = hello.token
        valid = bool(token) and self._token_valid(token, account)
        old = self.tokens.get(token) if valid else None
        if old is not None and account_key(old.account) != account_key(account):
            old, valid = None, False  # a guest's token, and the guest has registered since
        if old is not None and old.cid != cid:
            # The session is still registered to another connection: this one takes over its
            # nick and rooms; the old one is told why, and by whom.
            who = f" (logged in as {account})" if account else ""
            out.append(
                control(
                    old.cid,
                    Bye(
                        code=ErrorCode.REPLACED,
                        reason=clip_reason(
                            f"your session was taken over by a new connection from "
                            f"{origin.address}{who}"
                        ),
                    ),
                )
            )
            self._move(old, cid)
            old.origin = origin
            session = old
        else:
            nick = hello.nick or account  # a login's nick defaults to its account's name
            problem = nick_problem(nick)
            if problem is not None:
                return [control(cid, Bye(code=ErrorCode.INVALID_NICK, reason=problem))]
            nick = self._claim(nick, account, now_ms, out)
            session = Session(cid, nick, token if valid else self._token_for(account))
            session.account = account
            session.origin = origin
            self.nicks[session.key] = session
            self.tokens[session.token] = session
        self.sessions[cid] = session
        out.append(self._welcomed(cid, hello.version, session))
        return out

    def _welcomed(self, cid: int, version: int, session: Session) -> Delivery:
        welcome = Welcome(
            protocol=min(version, PROTOCOL_VERSION),
            server=self.config.name,
            version=__version__,
            nick=session.nick,
            token=session.token,
            limits=self.limits,
            account=session.account,
        )
        return control(cid, welcome)

    def _claim(self, nick: str, account: str, now_ms: int, out: list[Delivery]) -> str:
        """The nick a new session asking for the valid `nick` gets: a guest gets a free
        variant of a nick that is taken or an account's; a login gets its account's name,
        whose guest holder is renamed to a variant (its notices go to `out`)."""
        reserved = self._reserved_for_other(nick, account)  # a registry lookup: once
        if reserved and account:
            nick = account
        holder = self.nicks.get(nick.casefold())
        if (
            holder is not None
            and account
            and not holder.account
            and (account_key(account) == nick.casefold())
        ):
            out += self._rename(holder, self._free_variant(holder.nick), now_ms)
        elif holder is not None or (reserved and not account):
            nick = self._free_variant(nick)
        return nick

    def _reserved_for_other(self, nick: str, account: str) -> bool:
        """Whether `nick` is an account's name other than `account`'s."""
        if self.auth is AuthMode.off:
            return False
        if account and account_key(account) == account_key(nick):
            return False
        return self.registry.account(nick) is not None

    def _token_for(self, account: str) -> str:
        """A new resume token: a random nonce and a MAC binding it to `account`, so that
        only the server makes tokens, and a token resumes nothing without its login."""
        nonce = self._new_token()
        return nonce + self._mac(nonce, account)

    def _mac(self, nonce: str, account: str) -> str:
        digest = hmac.new(
            self._secret, f"{nonce}\0{account_key(account)}".encode(), hashlib.sha256
        ).digest()
        return base64.urlsafe_b64encode(digest[:12]).decode("ascii")

    def _token_valid(self, token: str, account: str) -> bool:
        if len(token) != TOKEN_LENGTH or not token.isascii():
            return False
        return hmac.compare_digest(token[NONCE_LENGTH:], self._mac(token[:NONCE_LENGTH], account))

    # -- registration ------------------------------------------------------------------------

    def _register(self, session: Session, register: Register, now_ms: int) -> list[Delivery]:
        cid = session.cid
        self.last_cost = REGISTER_COST
        if self.auth is AuthMode.off:
            problem: str | None = "this server has no accounts (--auth off)"
        elif self.registration is not Registration.open:
            problem = "registration is closed on this server: its operator makes accounts"
        elif session.account:
            problem = f"you are already logged in as {session.account}"
        elif not session.origin.secure:
            problem = INSECURE
        elif self.registry.account(session.nick) is not None:
            problem = f"{quote(session.nick)} is already an account"
        elif self.registry.account_count() >= REGISTERED_MAX:
            problem = "this server takes no more registrations: ask its operator"
        else:
            problem = password_problem(register.password)
        if problem is None and not self.may_register(cid):
            problem = "registering accounts too fast"
        if problem is not None:
            return [_refuse(cid, ErrorCode.REGISTRATION_REFUSED, problem)]
        pending = Pending(register, session.origin, session.nick)
        return self._check(Check(cid, register.password, ""), pending, now_ms)

    def _registered(self, cid: int, pending: Pending, hashed: str, now_ms: int) -> list[Delivery]:
        session = self.sessions.get(cid)
        if session is None:
            return []
        name = pending.account
        if not hashed:
            return [
                _refuse(cid, ErrorCode.REGISTRATION_REFUSED, "the password could not be hashed")
            ]
        if session.nick != name or not self.registry.add_account(name, hashed, now_ms):
            return [
                _refuse(cid, ErrorCode.REGISTRATION_REFUSED, f"{quote(name)} is already an account")
            ]
        # The session keeps its token for now, but resuming it takes the account's login
        # from here on (see _welcome), which a reconnect then gets a new token with.
        session.account = name
        return [deliver((cid,), Notice(kind="registered", nick=name, ts=now_ms))]

    def _move(self, session: Session, cid: int) -> None:
        old = session.cid
        del self.sessions[old]
        session.cid = cid
        for name in session.rooms:
            room = self.rooms[name]
            room.remove(old)
            room.add(cid)

    def _free_variant(self, nick: str) -> str:
        """`nick` with the smallest free suffix from 2 to 9, or else the next one after the
        last handed out for it: a thousand clients asking for one nick must not cost a
        million lookups."""
        key = nick.casefold()
        n = 2
        while True:
            suffix = str(n)
            candidate = nick[: NICK_MAX - len(suffix)] + suffix
            if candidate.casefold() not in self.nicks and not self._reserved_for_other(
                candidate, ""
            ):
                if n >= 10:
                    if len(self._next_suffix) >= 10_000:
                        self._next_suffix.clear()
                    self._next_suffix[key] = n + 1
                return candidate
            n = max(n + 1, self._next_suffix.get(key, 10)) if n >= 9 else n + 1

    # -- messages ----------------------------------------------------------------------------

    def _check_text(self, cid: int, text: str, msg_id: str) -> list[Delivery] | None:
        if not msg_id:
            return [_refuse(cid, ErrorCode.INVALID_REQUEST, "a msg_id may not be empty")]
        if len(msg_id) > MSG_ID_MAX:
            return [
                deliver(
                    (cid,),
                    Error(
                        code=ErrorCode.INVALID_REQUEST,
                        message=f"a msg_id has at most {MSG_ID_MAX} characters",
                        msg_id=msg_id[:MSG_ID_MAX],
                    ),
                )
            ]
        if not text or text.isspace():
            return [
                deliver(
                    (cid,),
                    Error(code=ErrorCode.EMPTY_TEXT, message="the message is empty", msg_id=msg_id),
                )
            ]
        if len(text) > self._text_check_from and len(text.encode("utf-8")) > self.max_text:
            return [
                deliver(
                    (cid,),
                    Error(
                        code=ErrorCode.TEXT_TOO_LONG,
                        message=f"a message has at most {self.max_text} bytes of UTF-8 text",
                        msg_id=msg_id,
                    ),
                )
            ]
        return None

    def _say(
        self, session: Session, say: Say, now_ms: int, run: SayRun | None = None
    ) -> list[Delivery]:
        cid = session.cid
        name = self._room_names.get(say.room)
        if name is None:
            name = normalise_room(say.room)
            if name is None:
                return [_bad_room(cid, say.room, say.msg_id)]
            if len(self._room_names) >= 4096:
                self._room_names.clear()
            self._room_names[say.room] = name
        text = say.text
        msg_id = say.msg_id
        # The common case in one test; _check_text says what is wrong with any other.
        if (
            not text
            or not msg_id
            or len(text) > self._text_check_from
            or len(msg_id) > MSG_ID_MAX
            or text.isspace()
        ):
            refused = self._check_text(cid, text, msg_id)
            if refused is not None:
                return refused
        room = self.rooms.get(name)
        if name in self.rules.restricted and name not in session.rooms:
            problem = self.rules.entry_problem(name, session.identity, session.account)
            if problem is not None:
                return [_refuse(cid, ErrorCode.NOT_PERMITTED, problem, msg_id)]
        store = self.store
        # A node of a cluster looks for the first copy of a resend when it applies the log
        # (apply_say), on every node alike: once is enough.
        earlier = store.find(session.sender_key, msg_id) if self.propose is None else None
        if earlier is None and self._tells and (session.sender_key, msg_id) in self._tells:
            return [_reused(cid, msg_id)]  # the id of a direct message
        if earlier is not None:
            return [self._resent(cid, earlier, name, text, say.action, msg_id, say.rid)]
        if room is None and not store.head(name) and name not in self.creating:
            refused_room = self._create_room(session, name, msg_id)
            if refused_room is not None:
                return [refused_room]
            if self.propose is not None:
                self.creating[name] = None  # counted once, not again by the Says behind it
        if self.propose is not None:  # a node of a cluster: the shared log decides (see there)
            return self.propose(session, name, say, now_ms)
        return self._commit_say(
            name,
            now_ms,
            session.nick,
            text,
            say.action,
            session.sender_key,
            msg_id,
            cid,
            say.rid,
            run,
        )

    def _resent(
        self,
        cid: int,
        earlier: StoredMessage,
        name: str,
        text: str,
        action: bool,
        msg_id: str,
        rid: str,
    ) -> Delivery:
        """The answer to a Say whose msg_id this sender used for `earlier`: the same message
        again (a resend after a reconnect) is acknowledged again and delivered to nobody."""
        if earlier.room != name or earlier.text != text or earlier.action != action:
            return _reused(cid, msg_id)
        recipients = self._recipients(self.rooms.get(earlier.room), cid)
        return Delivery((cid,), encode_ack(msg_id, earlier.ts, recipients, name, earlier.seq, rid))

    def _commit_say(
        self,
        name: str,
        ts: int,
        nick: str,
        text: str,
        action: bool,
        sender_key: str,
        msg_id: str,
        cid: int,
        rid: str,
        run: SayRun | None = None,
    ) -> list[Delivery]:
        """Store a message as the room's next one and deliver it to the room's members but
        `cid`, with an Ack to `cid` (none for `cid` -1: a message of another node). With
        `run`, the two frames join it instead (and nothing is returned)."""
        room = self.rooms.get(name)
        seq = self.store.head(name) + 1
        # Positional: a named tuple builds about twice as fast without keywords.
        self.store.append(StoredMessage(name, seq, ts, nick, text, action, sender_key, msg_id))
        if room is None:
            recipients = 0
        else:
            members = room.members
            recipients = len(members) - (cid in members) + len(room.remote)
        message = None if room is None else encode_message(name, seq, ts, nick, text, action)
        if run is not None:
            run.said(room, message, encode_ack(msg_id, ts, recipients, name, seq, rid))
            return _NOTHING
        out = []
        if room is not None:
            out.append(Delivery(room.targets, message, cid))  # type: ignore[arg-type]
        if cid >= 0:
            out.append(Delivery((cid,), encode_ack(msg_id, ts, recipients, name, seq, rid)))
        return out

    def apply_say(self, said: Said, sender: Session | None, rid: str = "") -> list[Delivery]:
        """A Say read from a cluster's shared log, in the log's order, on every node alike:
        stored as the room's next message (so every node numbers it the same) and delivered
        to this node's members of the room. `sender`: the session that sent it, when it was
        sent to this node and is still connected (it gets the Ack). A msg_id its sender has
        already used is a resend that raced the first copy: nothing is stored."""
        cid = -1 if sender is None or self.sessions.get(sender.cid) is not sender else sender.cid
        name, msg_id = said.room, said.msg_id
        earlier = self.store.find(said.sender_key, msg_id)
        if earlier is not None:
            self.not_stored(name)
            if cid < 0:
                return []
            out = [self._resent(cid, earlier, name, said.text, said.action, msg_id, rid)]
            return _answering(cid, rid, out, acked=True) if rid else out
        if not self.store.head(name):  # the room's first message
            counted = name in self.creating or name in self.rooms  # when sent, or joined
            self.creating.pop(name, None)
            self.room_count += not counted
        return self._commit_say(
            name, said.ts, said.nick, said.text, said.action, said.sender_key, msg_id, cid, rid
        )

    def not_stored(self, name: str) -> None:
        """A Say this node proposed to a cluster's log was not stored after all (a resend, or
        Redis failed): the room it counted as created, if still empty, is not counted."""
        if name in self.creating and not self.store.head(name):
            del self.creating[name]
            if name not in self.rooms:
                self.room_count -= 1

    def _create_room(self, session: Session, name: str, msg_id: str = "") -> Delivery | None:
        """Count a room the server does not know yet (a logged-in creator owns it), or say
        why it may not be created."""
        cid = session.cid
        if self.room_count >= self.total_rooms:
            error = Error(
                code=ErrorCode.TOO_MANY_ROOMS,
                message=f"the server holds its maximum of {self.total_rooms} rooms",
                msg_id=msg_id,
            )
        elif not self.may_create_room(cid):
            error = Error(
                code=ErrorCode.RATE_LIMITED, message="creating rooms too fast", msg_id=msg_id
            )
        else:
            self.room_count += 1
            if session.account and name != DEFAULT_ROOM:
                # The room everyone lands in belongs to nobody: the first account to touch
                # it must not be able to make it private or ban the others.
                self._own(name, session.account)
            return None
        return deliver((cid,), error)

    def _own(self, name: str, account: str) -> None:
        """`account` creates room `name`: it owns it."""
        self.rules.created(name, account)

    def _vacate(self, name: str) -> None:
        """The last member left room `name`: forget it, and stop counting it unless it
        has history."""
        del self.rooms[name]
        if not self.store.head(name):
            self.room_count -= 1

    @staticmethod
    def _recipients(room: Room | None, cid: int) -> int:
        if room is None:
            return 0
        return room.size - (cid in room.members)

    def _tell(self, session: Session, tell: Tell, now_ms: int) -> list[Delivery]:
        """A direct message. Direct messages are not stored, so their resends are recognised
        from the last TELLS_KEPT sent (by sender and msg_id): the same message again is
        acknowledged again and not delivered; another one under a used msg_id is refused."""
        cid = session.cid
        refused = self._check_text(cid, tell.text, tell.msg_id)
        if refused is not None:
            return refused
        key = (session.sender_key, tell.msg_id)
        digest = tell_digest(tell.to, tell.text, tell.action)
        earlier = self._tells.get(key)
        if earlier is not None:
            if earlier[0] != digest:
                return [_reused(cid, tell.msg_id)]
            return [deliver((cid,), Ack(msg_id=tell.msg_id, ts=earlier[1], recipients=1))]
        if self.store.find(session.sender_key, tell.msg_id) is not None:
            return [_reused(cid, tell.msg_id)]  # the id of a room message
        target = self.nicks.get(tell.to.casefold())
        if target is None:
            return [
                _refuse(
                    cid, ErrorCode.NO_SUCH_NICK, f"nobody is called {quote(tell.to)}", tell.msg_id
                )
            ]
        self._tells[key] = (digest, now_ms)
        if len(self._tells) > TELLS_KEPT:
            del self._tells[next(iter(self._tells))]
        dm = DirectMessage(
            sender=session.nick, to=target.nick, ts=now_ms, text=tell.text, action=tell.action
        )
        ack = Ack(msg_id=tell.msg_id, ts=now_ms, recipients=1)
        return [deliver((target.cid,), dm), deliver((cid,), ack)]

    # -- rooms -------------------------------------------------------------------------------

    def _join(self, session: Session, join: Join, now_ms: int) -> list[Delivery]:
        """docs/protocol.md §6.2: a `joined` notice to every member, the joiner included;
        then, to the joiner, the replay and HistoryEnd, then Members. Joining a room one is
        already in repeats the last two steps only."""
        cid = session.cid
        name = normalise_room(join.room)
        if name is None:
            return [_bad_room(cid, join.room)]
        out: list[Delivery] = []
        room = self.rooms.get(name)
        if name not in session.rooms:
            if len(session.rooms) >= self.config.max_rooms:
                return [
                    deliver(
                        (cid,),
                        Error(
                            code=ErrorCode.TOO_MANY_ROOMS,
                            message=f"a connection may be in at most {self.config.max_rooms} rooms",
                        ),
                    )
                ]
            problem = self.rules.entry_problem(name, session.identity, session.account)
            if problem is not None:
                return [_refuse(cid, ErrorCode.NOT_PERMITTED, problem)]
            if room is None:
                if not self.store.head(name):
                    refused = self._create_room(session, name)
                    if refused is not None:
                        return [refused]
                room = self.rooms[name] = Room(name)
            room.add(cid)
            session.rooms[name] = None
            out.append(
                deliver(
                    room.targets, Notice(kind="joined", nick=session.nick, ts=now_ms, room=name)
                )
            )
        if join.after is not None:
            count = self.config.replay_limit
        else:
            count = self.config.join_history if join.history is None else join.history
        out += self._replay(cid, name, join.after, count)
        out.append(self._members(cid, name))
        return out

    def _part(self, session: Session, part: Part, now_ms: int) -> list[Delivery]:
        cid = session.cid
        name = normalise_room(part.room)
        if name is None:
            return [_bad_room(cid, part.room)]
        if name not in session.rooms:
            return [
                deliver(
                    (cid,),
                    Error(code=ErrorCode.NOT_IN_ROOM, message=f"you are not in #{name}"),
                )
            ]
        room = self.rooms[name]
        notice = Notice(
            kind="left", nick=session.nick, ts=now_ms, room=name, reason=clip_reason(part.reason)
        )
        # Everyone, the parting member included, hears it: that is the member's confirmation.
        out = [deliver(room.targets, notice)]
        self._leave(session, name)
        return out

    def _change_nick(self, session: Session, change: ChangeNick, now_ms: int) -> list[Delivery]:
        cid = session.cid
        problem = nick_problem(change.nick)
        if problem is not None:
            return [deliver((cid,), Error(code=ErrorCode.INVALID_NICK, message=problem))]
        key = change.nick.casefold()
        holder = self.nicks.get(key)
        if holder is not None and holder is not session:
            return [
                deliver(
                    (cid,),
                    Error(code=ErrorCode.NICK_IN_USE, message=f"{change.nick!r} is taken"),
                )
            ]
        if change.nick == session.nick:
            # Answered like any rename, to the member alone: nothing changed for the others.
            same = Notice(kind="renamed", nick=session.nick, ts=now_ms, new_nick=session.nick)
            return [deliver((cid,), same)]
        if key != session.key and self._reserved_for_other(change.nick, session.account):
            return [
                _refuse(
                    cid,
                    ErrorCode.NICK_RESERVED,
                    f"{quote(change.nick)} belongs to an account: log in to it to use it",
                )
            ]
        return self._rename(session, change.nick, now_ms)

    def _rename(self, session: Session, nick: str, now_ms: int) -> list[Delivery]:
        """Give `session` the free nick `nick`; everyone who shares a room with it hears it
        once, and so does the session."""
        old = session.nick
        del self.nicks[session.key]
        session.nick = nick
        session.key = nick.casefold()
        self.nicks[session.key] = session
        audience: dict[int, None] = {session.cid: None} if session.cid >= 0 else {}
        for name in session.rooms:
            audience.update(dict.fromkeys(self.rooms[name].targets))
        notice = Notice(kind="renamed", nick=old, ts=now_ms, new_nick=nick)
        return [deliver(tuple(audience), notice)]

    def _who(self, session: Session, who: Who, now_ms: int) -> list[Delivery]:
        del now_ms
        name = normalise_room(who.room)
        if name is None:
            return [_bad_room(session.cid, who.room)]
        refused = self._private(session, name)
        if refused is not None:
            return [refused]
        room = self.rooms.get(name)
        if room is not None:
            self.last_cost = 1.0 + room.size / 1000
        return [self._members(session.cid, name)]

    def _private(self, session: Session, name: str) -> Delivery | None:
        """The refusal of a look into private room `name` by a session that does not
        belong there, or None."""
        if name in session.rooms or self.rules.may_look(name, session.identity, session.account):
            return None
        return _refuse(session.cid, ErrorCode.NOT_PERMITTED, f"#{name} is private")

    def _members(self, cid: int, name: str) -> Delivery:
        """The member list, cut (alphabetically) to what fits in one frame of `max_frame`:
        a client rejects any larger frame, and a room may have more members than that."""
        room = self.rooms.get(name)
        if room is None:
            nicks = []
        else:
            nicks = [self.sessions[c].nick for c in room.members]
            nicks += [self.elsewhere[c].nick for c in room.remote]
        nicks.sort(key=str.casefold)
        budget = self.frame_budget
        for i, nick in enumerate(nicks):
            budget -= len(nick) * 2 + 3  # worst case: every character escaped
            if budget < 0:
                del nicks[i:]
                break
        settings = self.rules.settings.get(name)
        if settings is None:
            return deliver((cid,), Members(room=name, nicks=nicks))
        members = Members(
            room=name,
            nicks=nicks,
            topic=settings.topic,
            private=settings.private,
            owner=settings.owner,
            ops=sorted(settings.ops),
        )
        return deliver((cid,), members)

    def _list_rooms(self, session: Session, event: Event, now_ms: int) -> list[Delivery]:
        del event, now_ms
        # Rooms with stored history count too: they can be joined and read.
        rooms = dict.fromkeys(self.store.rooms(), 0)
        for name, room in self.rooms.items():
            rooms[name] = room.size
        for name, settings in self.rules.settings.items():
            if settings.private and name in rooms and self._private(session, name) is not None:
                del rooms[name]
        self.last_cost = 1.0 + len(rooms) / 1000
        # Cut to one frame like Members: the busiest rooms are kept.
        kept: dict[str, int] = {}
        budget = self.frame_budget
        for name, count in sorted(rooms.items(), key=lambda item: (-item[1], item[0])):
            budget -= len(name) + 24
            if budget < 0:
                break
            kept[name] = count
        return [deliver((session.cid,), RoomList(rooms=dict(sorted(kept.items()))))]

    def _history(self, session: Session, request: History, now_ms: int) -> list[Delivery]:
        del now_ms
        cid = session.cid
        name = normalise_room(request.room)
        if name is None:
            return [_bad_room(cid, request.room)]
        refused = self._private(session, name)
        if refused is not None:
            return [refused]
        return self._replay(cid, name, request.after, request.limit)

    # -- moderation --------------------------------------------------------------------------

    def _moderate(self, session: Session, request: Moderate, now_ms: int) -> list[Delivery]:
        """docs/protocol.md §6.6: the change, announced to the room's members (the actor
        included, whether or not it is in the room); a kicked or banned member hears it and
        is out; an invitee hears of its invitation wherever it is."""
        cid = session.cid
        self.last_cost = MODERATE_COST
        name = normalise_room(request.room)
        if name is None:
            return [_bad_room(cid, request.room)]
        return self._moderated(
            cid,
            session.nick,
            session.account,
            name,
            request.action,
            request.target,
            request.text,
            now_ms,
        )

    def _kick_target(self, name: str, target: str) -> str:
        """The nick a kick of `target` from room `name` puts out; raises Refusal."""
        victim = self.nicks.get(target.casefold())
        if victim is None or name not in victim.rooms:
            raise Refusal(f"{quote(target)} is not in #{name}", ErrorCode.NO_SUCH_NICK)
        if self.rules.owns(name, victim.account):
            raise Refusal(f"the owner of #{name} cannot be kicked or banned")
        return victim.nick

    def _moderated(
        self,
        cid: int,
        nick: str,
        account: str,
        name: str,
        action: str,
        target: str,
        text: str,
        now_ms: int,
    ) -> list[Delivery]:
        """A Moderate by `nick` (logged in as `account`) of connection `cid` (-1: of another
        node of a cluster, whose log brings it here), checked against the settings and done;
        the notices for this server's connections."""
        try:
            if action == "kick":
                target = self._kick_target(name, target)
            self.rules.moderate(name, account, action, target, text)
        except Refusal as refusal:
            return [_refuse(cid, refusal.code, str(refusal))] if cid >= 0 else []
        notice = Notice(
            kind=NOTICE_OF[action],
            nick=nick,
            ts=now_ms,
            room=name,
            target=target,
            reason=clip_reason(text) if action != "topic" else text,
        )
        room = self.rooms.get(name)
        audience: dict[int, None] = dict.fromkeys(room.targets if room else ())
        if cid >= 0:
            audience[cid] = None
        if action == "invite":
            invitee = self.nicks.get(account_key(target))
            if (
                invitee is not None
                and invitee.identity == account_key(target)
                and invitee.cid >= 0  # another node's session hears of it there
            ):
                audience[invitee.cid] = None
        out = [deliver(tuple(audience), notice)] if audience else []
        if action in ("kick", "ban") and room is not None:
            # Every server puts them out (a cluster's other nodes' members too, by their
            # negative cids): each applies the same change.
            key = account_key(target)
            members = [self.sessions[c] for c in room.members]
            members += [self.elsewhere[c] for c in room.remote]
            for victim in members:
                if key in (victim.key, victim.identity) and not self.rules.owns(
                    name, victim.account
                ):
                    self._leave(victim, name)
        return out

    def _leave(self, session: Session, name: str) -> None:
        room = self.rooms[name]
        room.remove(session.cid)
        del session.rooms[name]
        if not room.size:
            self._vacate(name)

    # -- history replay ----------------------------------------------------------------------

    def _replay(self, cid: int, room: str, after: int | None, count: int) -> list[Delivery]:
        """The replay for a Join or History (docs/protocol.md §6.4): the messages after
        `after`, or with `after` None the latest `count` (those after head - count), always
        oldest first, with the Gap of any asked for but no longer stored; then a HistoryEnd,
        whose head tells the client whether there is more: a replay stops at `replay_limit`
        messages, at the byte budget (half of max_output) and at the request's
        `replay_room`, and the client pages on from the last message it got. One message is
        replayed at least, so that paging always progresses (a client that pipelines
        requests it does not read becomes a slow consumer: one message each costs little to
        read). The store is asked for no more than that. Sets `last_cost`."""
        budget = self.replay_budget
        room_left = self._replay_room
        if room_left is not None and room_left < budget:
            budget = max(room_left, 1)
        to = (cid,)
        out: list[Delivery] = []
        head = self.store.head(room)
        if after is None:
            after = max(head - count, 0)
        limit = min(count, self.config.replay_limit)
        if limit > 0 and after < head:
            result = self.store.read(room, after, limit, budget)
            if result.gap is not None:
                out.append(deliver(to, Gap(room=room, first=result.gap[0], last=result.gap[1])))
            kept = _fit(to, result.messages, budget)
            if kept:
                size = sum(len(d.data) for d in kept)
                self.last_cost = 1.0 + max(len(kept) / 100, size / 65536)
                out += kept
        out.append(deliver(to, HistoryEnd(room=room, head=head)))
        return out


def _fit(to: tuple[int], messages: Iterable[StoredMessage], budget: int) -> list[Delivery]:
    """Replayed Message frames for `messages`, in their order, as many as fit in `budget`
    bytes, and one at least."""
    out: list[Delivery] = []
    for stored in messages:
        d = Delivery(to, _replayed(stored))
        budget -= len(d.data)
        if budget < 0 and out:
            break
        out.append(d)
    return out


def _replayed(stored: StoredMessage) -> bytes:
    """A stored message as a Message frame marked history."""
    return encode_message(
        stored.room, stored.seq, stored.ts, stored.sender, stored.text, stored.action, True
    )


# The frames that answer a request; with a rid, they carry it (docs/protocol.md §6.7).
_ANSWERS = frozenset(cls.TYPE for cls in (Notice, Ack, Members, RoomList, Gap, HistoryEnd, Error))


def _answering(cid: int, rid: str, out: list[Delivery], *, acked: bool = False) -> list[Delivery]:
    """`out`, the deliveries of a request with `rid` from `cid`, with the rid on every frame
    that answers it: those to `cid` alone, and `cid`'s own copy of a notice to a room (the
    others' copy goes without it). Only requests that carry a rid pay for this; a Say's Ack
    (`acked`) already has it, from the fast path."""
    answered: list[Delivery] = []
    for d in out:
        kind = d.data[2]
        if d.control is not None or kind not in _ANSWERS or cid not in d.to or d.skip == cid:
            answered.append(d)
            continue
        if acked and kind == Ack.TYPE:
            answered.append(d)
            continue
        event = d.event
        mine = encode(msgspec.structs.replace(event, rid=rid))
        if len(d.to) == 1:
            answered.append(Delivery(d.to, mine, d.skip))
        else:
            answered.append(Delivery(d.to, d.data, cid))
            answered.append(Delivery((cid,), mine))
    return answered


def tell_digest(to: str, text: str, action: bool) -> int:
    """What a direct message is recognised by when resent: the same on every node of a
    cluster and across restarts (a snapshot keeps it), unlike `hash` of a str."""
    data = f"{to.casefold()}\0{int(action)}{text}".encode("utf-8", "surrogatepass")
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


def _login_keys(hello: Hello, origin: Origin) -> tuple[str, str]:
    """What a login's failures count against: its client address and the account."""
    return (f"address {origin.client}", f"account {account_key(hello.account)}")


def _guess(hello: Hello) -> tuple[str, str]:
    return (account_key(hello.account), hello.password)


def _ms(value: float) -> int:
    """Seconds (or a rate a second) as a whole number of thousandths."""
    return round(value * 1000)


def _reused(cid: int, msg_id: str) -> Delivery:
    return _refuse(
        cid,
        ErrorCode.MSG_ID_REUSED,
        f"msg_id {quote(msg_id)} was already used for another message",
        msg_id,
    )


def _bye(cid: int, code: ErrorCode, reason: str) -> Delivery:
    return control(cid, Bye(code=code, reason=reason))


def _refuse(cid: int, code: ErrorCode, message: str, msg_id: str = "") -> Delivery:
    return deliver((cid,), Error(code=code, message=message, msg_id=msg_id[:MSG_ID_MAX]))


def _bad_room(cid: int, room: str, msg_id: str = "") -> Delivery:
    return _refuse(cid, ErrorCode.INVALID_ROOM, room_problem(room) or "", msg_id)
