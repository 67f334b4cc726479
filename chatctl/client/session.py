"""The client's rules, sans-IO: rooms, acknowledgements and the resume after a reconnect.

`ClientSession` is to the client what the hub is to the server: inputs are the application's
requests (`join`, `part`, `send_message`, `register`), the server's events (`receive`) and the life of
the connection (`hello`, `welcomed`, `connection_lost`, `abandon`); outputs are frames to
send, in order, and events for the application, each exactly once. No socket, thread or clock
is involved, so tests drive it against a model server; `Client` (connection.py) runs it
over a real connection, under one lock.

The rules:

- Rooms and sequence numbers: the rooms we are in (canonical names, `chatctl.names.room_key`)
  and, per room, the highest sequence number delivered since its join's HistoryEnd said where
  the stream starts, so that a resume asks for exactly what came after it.
- Acknowledgements: every Say/Tell stays pending until its Ack (Delivered) or its Error
  (Refused); after a reconnect the pending ones are sent again with the same `msg_id`, and
  the server acknowledges a message it already stored without storing it twice.
- Resume: after a Welcome, rooms parted but not yet confirmed are parted again (a server that
  kept the session would keep us in them; its answers are not news), every room is rejoined with
  `Join(after=last seq)`, then the pending messages are re-sent. The replay comes in pages
  (the server's `replay_limit`); `_CatchUp` asks for the next one until the hole up to the
  live stream is filled. Live messages that arrive meanwhile are held back until then, so the
  application sees every room in order; what the resume recovers is delivered unmarked
  (history=False: the stream simply goes on), and our own messages in it are left out, since
  their Delivered stand for them.
- Requests are matched to their answers by request id (`rid`, docs/protocol.md §6.7), never
  by order: each Join and Part carries a fresh one, and every answer to it carries it back.
- Joins: a room asked for with `join` is not one of `rooms` until the server confirms it: an
  answer to its Join that is not an Error (the `joined` notice about us, or the HistoryEnd)
  confirms it; an Error with its rid refuses it (the Error says why), and the room is
  forgotten. `joining(room)` says whether the answer is awaited. A Join not answered when the
  connection drops is sent again after the next Welcome.
- Parts: our `left` notice or an Error (NOT_IN_ROOM) with the Part's rid answers it.
- Login: the account and password go in every Hello, the first and each reconnect's. A
  `register` that the server confirms (Notice "registered") makes this session's nick its
  account, with that password, for the Hellos that follow. A Notice that we were kicked or
  banned from a room drops the room: a reconnect must not rejoin it.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TypeVar

import msgspec

from chatctl.client.events import AnyEvent, Delivered, Refused
from chatctl.errors import ChatctlError
from chatctl.names import room_key
from chatctl.protocol import (
    PROTOCOL_VERSION,
    Ack,
    Error,
    ErrorCode,
    Event,
    Gap,
    Hello,
    History,
    HistoryEnd,
    Join,
    LocalProtocolError,
    Message,
    Notice,
    Part,
    Ping,
    Pong,
    Register,
    Say,
    Tell,
    Welcome,
    encode,
)

_DEFAULT_REPLAY_LIMIT = 1000  # a page, when the Welcome does not say (docs/protocol.md)

F = TypeVar("F", bound=Event)


@dataclass(frozen=True, slots=True)
class Actions:
    """What to do after an input: `send` these frames to the server, then `emit` these events
    to the application, each list in order."""

    send: list[Event] = field(default_factory=list)
    emit: list[AnyEvent] = field(default_factory=list)


class _CatchUp:
    """A room's resume: replayed pages (Message(history=True), maybe a Gap, HistoryEnd) fill
    in from `cursor`, while live messages already flow from `live_min` on (they are `held`
    until the hole before them is filled). A page can stop short of HistoryEnd.head (the
    server's replay limit), so the next one is asked for until the hole up to the live stream
    is filled. Replays of what came live are dropped."""

    def __init__(self, cursor: int) -> None:
        self.cursor = cursor  # everything up to here has been delivered, in order
        self.live_min: int | None = None
        self.live_max = 0
        self.progressed = False
        self.held: list[Message] = []

    def live(self, seq: int) -> None:
        if self.live_min is None or seq < self.live_min:
            self.live_min = seq
        self.live_max = max(self.live_max, seq)

    def replayed(self, seq: int) -> bool:
        """Take a replayed message; False when it is a duplicate."""
        if seq <= self.cursor or (self.live_min is not None and seq >= self.live_min):
            return False
        self.cursor, self.progressed = seq, True
        return True

    def gap(self, gap: Gap) -> Gap | None:
        """Take a Gap: what of it is news (none of what was delivered, nor of the live
        stream, which came after all), or None."""
        last = gap.last if self.live_min is None else min(gap.last, self.live_min - 1)
        if last <= self.cursor:
            return None
        news = msgspec.structs.replace(gap, first=max(gap.first, self.cursor + 1), last=last)
        self.cursor, self.progressed = last, True
        return news

    def more(self, head: int) -> bool:
        """After a page: is there a hole left to ask for? (Never loops without progress.)"""
        target = head if self.live_min is None else min(head, self.live_min - 1)
        more = self.cursor < target and self.progressed
        self.progressed = False
        return more


@dataclass(slots=True)
class _Joining:
    """A join waiting for its answer: the Join's `history`, and the rid of the Join sent on
    this connection ("" while not sent on this connection yet)."""

    history: int | None
    rid: str = ""


def _checked(frame: F) -> F:
    """`frame`, once it is known to encode: a request the session keeps (and re-sends after
    every reconnect) must fail now, in the caller, not later on the reader thread."""
    try:
        encode(frame)
    except LocalProtocolError as exc:
        raise ChatctlError(f"cannot send that: {exc}") from None
    return frame


class ClientSession:
    """One client's rules across any number of connections. See the module docstring."""

    def __init__(
        self,
        nick: str,
        *,
        rooms: Iterable[str] = (),
        history: int | None = None,
        token: str = "",
        account: str = "",
        password: str = "",
    ) -> None:
        self.nick = nick  # asked for in the Hello; then the server's, renames included
        self.token = token  # resume token, from the last Welcome
        # The login every Hello carries ("" for a guest); a confirmed `register` sets both.
        self.account = account
        self.password = password
        self._registering: str | None = None  # the password of a Register in flight
        self.welcome: Welcome | None = None
        self.online = False  # between a Welcome and the loss of that connection
        self._history = history  # for Join(history=) where there is nothing to resume
        self._rooms: dict[str, None] = dict.fromkeys(map(room_key, rooms))  # ordered set
        self._last_seq: dict[str, int] = {}
        self._catchup: dict[str, _CatchUp] = {}  # rooms being resumed on this connection
        # Rooms parted while being resumed: the rest of the resume's answer is not news.
        self._leaving: set[str] = set()
        # Rooms parted whose Part has not been answered yet: it may be lost with the
        # connection, and a server that kept our session (resume token) would keep us in them,
        # so it is sent again after every Welcome until an answer comes.
        self._parted: dict[str, None] = {}
        # The Parts in flight on this connection, by rid: the room, and whether the
        # application asked for it (a re-send's answer is not news to it).
        self._parts: dict[str, tuple[str, bool]] = {}
        self._pending: dict[str, Say | Tell] = {}  # by msg_id, in the order sent
        # Rooms asked for but not confirmed yet, with their Join's history and rid.
        self._joining: dict[str, _Joining] = {}
        self._rids = itertools.count(1)

    @property
    def rooms(self) -> tuple[str, ...]:
        return tuple(self._rooms)

    @property
    def limits(self) -> dict[str, int]:
        return dict(self.welcome.limits) if self.welcome else {}

    @property
    def unacked(self) -> int:
        """Messages neither acknowledged nor refused yet."""
        return len(self._pending)

    def last_seq(self, room: str) -> int | None:
        """The highest sequence number delivered (received or acknowledged) in `room`."""
        return self._last_seq.get(room_key(room))

    def joining(self, room: str) -> bool:
        """Whether a join of `room` waits for the server's answer."""
        return room_key(room) in self._joining

    def parting(self, room: str) -> bool:
        """Whether a part of `room` waits for the server's answer."""
        return room_key(room) in self._parted

    # -- the connection's life ---------------------------------------------------------------

    def hello(self) -> Hello:
        return Hello(
            version=PROTOCOL_VERSION,
            nick=self.nick,
            token=self.token,
            account=self.account,
            password=self.password if self.account else "",
        )

    def welcomed(self, welcome: Welcome) -> list[Event]:
        """The frames that start a connection: part again the rooms whose Part was not
        answered, rejoin every room (asking for what was missed where there is a sequence number to
        resume from), then re-send every message not yet acknowledged."""
        self.welcome, self.nick, self.token = welcome, welcome.nick, welcome.token
        if welcome.account:
            self.account = welcome.account  # as the server spells it
        self.online = True
        out: list[Event] = [self._part_frame(room, "", asked=False) for room in self._parted]
        for room in self._rooms:
            after = self._last_seq.get(room)
            if after is None:
                out.append(Join(room=room, history=self._history))
            else:
                self._catchup[room] = _CatchUp(cursor=after)
                out.append(Join(room=room, after=after))
        for room in list(self._joining):
            out.extend(self._join_frames(room))
        out.extend(self._pending.values())
        return out

    def connection_lost(self) -> None:
        """The connection is gone. Pages in flight and live messages held back are dropped:
        the next Welcome resumes every room from what was delivered."""
        self.online = False
        self._catchup.clear()
        self._leaving.clear()
        self._parts.clear()
        self._joining = {room: _Joining(j.history) for room, j in self._joining.items()}

    def abandon(self) -> None:
        """The connection is lost for good: the messages never acknowledged are forgotten,
        and so are the joins never answered."""
        self.connection_lost()
        self._pending.clear()
        self._joining.clear()

    # -- the application's requests -----------------------------------------------------------

    def join(self, room: str, *, history: int | None = None) -> list[Event]:
        """Join `room`: one of `rooms` (and remembered across reconnects) once the server
        confirms it. Joining a room we are in asks for its replay and members again."""
        room = room_key(room)
        frame = _checked(Join(room=room, history=history))
        self._parted.pop(room, None)
        if room in self._rooms:
            return [frame] if self.online else []
        self._joining[room] = _Joining(history)
        return self._join_frames(room)

    def _rid(self) -> str:
        return f"c{next(self._rids)}"

    def _join_frames(self, room: str) -> list[Event]:
        """The Join, with a fresh rid for its answer (nothing while offline)."""
        if not self.online:
            return []
        joining = self._joining[room] = _Joining(self._joining[room].history, self._rid())
        return [Join(room=room, history=joining.history, rid=joining.rid)]

    def _part_frame(self, room: str, reason: str, *, asked: bool) -> Part:
        rid = self._rid()
        self._parts[rid] = (room, asked)
        return Part(room=room, reason=reason, rid=rid)

    def _joined_by(self, rid: str) -> str | None:
        """The room whose Join on this connection carries `rid`, if one waits for it."""
        if rid:
            for room, joining in self._joining.items():
                if joining.rid == rid:
                    return room
        return None

    def _confirm(self, room: str, rid: str) -> None:
        """An answer to our Join of `room` (not an Error): the server has us in it."""
        if self._joined_by(rid) == room:
            del self._joining[room]
            self._rooms[room] = None

    def part(self, room: str, reason: str = "") -> list[Event]:
        room = room_key(room)
        frame = _checked(Part(room=room, reason=reason))
        self._rooms.pop(room, None)
        self._joining.pop(room, None)
        self._last_seq.pop(room, None)
        if self._catchup.pop(room, None) is not None:
            self._leaving.add(room)
        self._parted[room] = None
        if not self.online:
            return []
        return [self._part_frame(room, frame.reason, asked=True)]

    def register(self, password: str) -> list[Event]:
        """Make the current nick an account with `password`. Once the server confirms it,
        the session logs in with them on every reconnect."""
        if self.account:
            raise ChatctlError(f"you are already logged in as {self.account}")
        frame = _checked(Register(password=password))
        if not self.online:
            raise ChatctlError("not connected: register once the connection is back")
        self._registering = password
        return [frame]

    def send_message(self, request: Say | Tell) -> list[Event]:
        """Send a message; it stays pending (and is re-sent after a reconnect) until the
        server answers it. While offline it only waits for the next Welcome."""
        self._pending[request.msg_id] = _checked(request)
        return [request] if self.online else []

    # -- the server's events ------------------------------------------------------------------

    def receive(self, event: Event) -> Actions:
        """Take one event from the server, after the Welcome. Bye is the connection's (it
        ends it); a Pong answers nothing here (a keepalive's)."""
        if isinstance(event, Message):
            return Actions(emit=self._on_message(event))
        if isinstance(event, Ack):
            return Actions(emit=self._on_ack(event))
        if isinstance(event, HistoryEnd):
            self._confirm(event.room, event.rid)  # (a resumed session sends no notice)
            return self._on_history_end(event)
        if isinstance(event, Ping):
            return Actions(send=[Pong(token=event.token)])
        if isinstance(event, Pong):
            return Actions()
        if isinstance(event, Error):
            return Actions(emit=self._on_error(event))
        if isinstance(event, Gap):
            if event.room in self._leaving:
                return Actions()
            catchup = self._catchup.get(event.room)
            if catchup is not None:
                news = catchup.gap(event)
                self._last_seq[event.room] = catchup.cursor
                return Actions(emit=[] if news is None else [news])
        elif isinstance(event, Notice) and event.kind in ("kicked", "banned"):
            if self._is_me(event.target):
                self._drop_room(event.room)
        elif isinstance(event, Notice) and event.kind == "registered":
            # To the registrant alone: `nick` is now our account.
            if self._registering is not None:
                self.account, self.password = event.nick, self._registering
                self._registering = None
        elif isinstance(event, Notice) and event.nick.casefold() == self.nick.casefold():
            if event.kind == "renamed":
                self.nick = event.new_nick
            elif event.kind == "left":
                self._part_answered(event.rid)
            elif event.kind == "joined":
                self._confirm(event.room, event.rid)  # the replay and Members follow
        return Actions(emit=[event])

    def _is_me(self, name: str) -> bool:
        """Whether a moderation target names us: our nick, or our account."""
        key = name.casefold()
        return bool(key) and key in (self.nick.casefold(), self.account.casefold())

    def _drop_room(self, room: str) -> None:
        """The server put us out of `room` (a kick or a ban): forget it, as a Part would,
        with no Part to send."""
        room = room_key(room)
        self._rooms.pop(room, None)
        self._last_seq.pop(room, None)
        if self._catchup.pop(room, None) is not None:
            self._leaving.add(room)  # the rest of its resume is not news

    def _seen(self, room: str, seq: int) -> None:
        """Advance a room's sequence number. Only from the one its join's HistoryEnd set: what
        comes before that (a message still in flight from before a Part, say) need not
        follow on from anything we delivered, and resuming from it could skip messages."""
        last = self._last_seq.get(room)
        if last is not None and seq > last:
            self._last_seq[room] = seq

    def _on_message(self, message: Message) -> list[AnyEvent]:
        if message.room in self._leaving:
            return []
        catchup = self._catchup.get(message.room)
        if catchup is None:
            self._seen(message.room, message.seq)
            return [message]
        if not message.history:
            catchup.live(message.seq)
            catchup.held.append(message)
            return []
        if not catchup.replayed(message.seq):
            return []  # a duplicate of what came live
        self._last_seq[message.room] = catchup.cursor  # a reconnect now resumes from here
        if message.sender.casefold() == self.nick.casefold():
            return []  # ours, unacknowledged when we dropped: its Delivered stands for it
        # Missed while away, not old history: the stream simply continues.
        return [msgspec.structs.replace(message, history=False)]

    def _on_history_end(self, end: HistoryEnd) -> Actions:
        """Finish a resume (held live messages follow what it recovered), or ask for its next
        page."""
        if end.room in self._leaving:
            self._leaving.discard(end.room)
            return Actions()
        catchup = self._catchup.get(end.room)
        if catchup is None:
            if end.room in self._rooms:  # where the room's stream starts (0 counts: empty)
                self._last_seq[end.room] = max(end.head, self._last_seq.get(end.room, 0))
            return Actions(emit=[end])
        if end.head < catchup.cursor:
            # The server lost the room's history (a `--data :memory:` restart): its numbering
            # starts again, so resume from its head next time, not from our old cursor.
            del self._catchup[end.room]
            self._last_seq[end.room] = max(end.head, catchup.live_max)
            return Actions(emit=[*catchup.held, end])
        if catchup.more(end.head):
            page = self.limits.get("replay_limit", _DEFAULT_REPLAY_LIMIT)
            return Actions(send=[History(room=end.room, after=catchup.cursor, limit=page)])
        del self._catchup[end.room]
        self._seen(end.room, max(end.head, catchup.live_max))
        return Actions(emit=[*catchup.held, end])

    def _on_ack(self, ack: Ack) -> list[AnyEvent]:
        catchup = self._catchup.get(ack.room)
        if catchup is not None:
            # A re-sent message may have been stored before the drop: its seq says nothing
            # about where the live stream starts.
            catchup.live_max = max(catchup.live_max, ack.seq)
        elif ack.seq:
            self._seen(ack.room, ack.seq)
        request = self._pending.pop(ack.msg_id, None)
        if request is None:
            return []  # a second ack of a duplicate: it was delivered once already
        return [Delivered(request=request, ack=ack, nick=self.nick)]

    def _on_error(self, error: Error) -> list[AnyEvent]:
        if error.code == ErrorCode.REGISTRATION_REFUSED:
            self._registering = None
        if error.msg_id:
            request = self._pending.pop(error.msg_id, None)
            if request is not None:
                return [Refused(request=request, error=error)]
        elif error.rid in self._parts:
            # For a re-sent Part this only says that the server had forgotten us there.
            asked = self._parts[error.rid][1]
            self._part_answered(error.rid)
            if not asked:
                return []
        else:
            refused = self._joined_by(error.rid)
            if refused is not None:
                del self._joining[refused]  # the Error says why
        return [error]

    def _part_answered(self, rid: str) -> None:
        """Forget a Part once answered, and the room as parted once no later Part for it is
        in flight: the server has us out of it."""
        answered = self._parts.pop(rid, None)
        if answered is None:
            return
        room = answered[0]
        if all(parted != room for parted, _ in self._parts.values()):
            self._parted.pop(room, None)


__all__ = ["Actions", "ClientSession"]
