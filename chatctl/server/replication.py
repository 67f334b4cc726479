"""A node of a cluster (`serve --data redis://...`): every node's hub applies one shared log.

State-machine replication through one Redis stream (docs/cluster.md). A Say that passed every
check of this node's hub is not stored at once: `propose` appends it to the stream (an XADD,
queued; the loop sends everything queued once per turn). Every node, this one included,
reads the stream in order on a second connection (XREAD, blocking on Redis's side only) and
applies each entry to its hub (`Hub.apply_say`): the room's seq is the entry's place among
the room's entries, the same on every node, and each node delivers it to its own members. The
node that took the Say sends its Ack when it applies the entry: only after Redis has it.

Proposals whose outcome is unknown (the writer's connection was lost before XADD's reply)
are settled by the log itself: a node's XADDs reach the stream in the order it sent them, so
when the node applies one of its own entries, every earlier proposal of its own still waiting
can no longer arrive. Such a proposal is answered with `214 UNAVAILABLE` (nothing stored, send
it again). After a reconnect with proposals in doubt, the node appends a `MarkEntry` to settle
them without waiting for the next message.

While either connection is down, or the reader has not caught up with the stream yet, the
node refuses Says with `214 UNAVAILABLE` and keeps serving everything else; both links
reconnect with backoff (cluster/link.py).
"""

from __future__ import annotations

import functools
import itertools
import secrets
import selectors
import time
from collections.abc import Callable

from chatctl.cluster.entries import (
    FIELD,
    STREAM,
    Entry,
    MarkEntry,
    SayEntry,
    encode_entry,
    read_entries,
)
from chatctl.cluster.link import LinkState, RedisLink, Unavailable
from chatctl.cluster.resp import RedisError, Reply
from chatctl.cluster.url import RedisUrl
from chatctl.errors import ChatctlError
from chatctl.names import MSG_ID_MAX
from chatctl.protocol import Error, ErrorCode, Say
from chatctl.server.hub import Delivery, Hub, Session, deliver
from chatctl.server.log import ServerLog

READ_COUNT = 1024  # entries per XREAD
BLOCK_MS = 2000  # how long Redis holds an XREAD with nothing new (under link.REPLY_TIMEOUT)
# Says sent to Redis and not yet applied: past this, Redis is not keeping up and new ones are
# refused (UNAVAILABLE) rather than queued without bound.
MAX_PENDING = 65_536
START_TIMEOUT = 30.0  # to reach Redis and read the whole log at start-up
RETRY_READ = 1.0  # seconds before reading again after an error reply to XREAD


class Proposal:
    __slots__ = ("msg_id", "rid", "session", "unknown")

    def __init__(self, session: Session, msg_id: str, rid: str) -> None:
        self.session = session
        self.msg_id = msg_id
        self.rid = rid
        self.unknown = False  # the connection was lost before XADD's reply


class Replication:
    """This node's part in the cluster: two links to Redis, the proposals waiting for the log,
    and where the node has read the log to. `dispatch` takes the deliveries applying entries
    makes; `schedule(when)` asks the loop to call `tick` then."""

    def __init__(
        self,
        url: RedisUrl,
        hub: Hub,
        selector: selectors.BaseSelector,
        journal: ServerLog,
        *,
        dispatch: Callable[[list[Delivery]], None],
        schedule: Callable[[float], None],
        node: str = "",
    ) -> None:
        self.url = url
        self.hub = hub
        self.journal = journal
        self.node = node or secrets.token_hex(6)
        self._dispatch = dispatch
        self._schedule = schedule
        self.writer = RedisLink(
            "writer",
            url,
            selector,
            on_up=self._writer_up,
            on_down=functools.partial(self._down, "writer"),
        )
        self.reader = RedisLink(
            "reader",
            url,
            selector,
            on_up=self._reader_up,
            on_down=functools.partial(self._down, "reader"),
        )
        self._sel = selector
        self.last_id = b"0-0"  # the last stream id applied
        self.caught_up = False  # the reader has reached the end of the log once
        self.applied = 0  # entries applied since start, for the log and the tests
        self.pending: dict[int, Proposal] = {}  # by proposal number, in order
        self._numbers = itertools.count(1)
        self._wake_at: float | None = None
        self._read_again_at: float | None = None
        self._outage = ""  # why the node refuses Says now ("" while it takes them)
        hub.propose = self.propose

    # -- start, stop and the loop's calls ----------------------------------------------------

    def start(self, timeout: float = START_TIMEOUT) -> None:
        """Connect both links and apply the whole log, before the server accepts anyone.
        Raises ChatctlError when Redis cannot be reached or the log not read in time."""
        self.writer.connect()
        self.reader.connect()
        deadline = time.monotonic() + timeout
        while not (self.caught_up and self.writer.ready_for_commands):
            for link in (self.writer, self.reader):
                if link.state is LinkState.DOWN:
                    raise ChatctlError(f"cannot use Redis at {self.url}: {link.error}")
            left = deadline - time.monotonic()
            if left <= 0:
                raise ChatctlError(
                    f"Redis at {self.url}: the log was not read within {timeout:g} s "
                    f"({self.applied} entries applied)"
                )
            for key, mask in self._sel.select(min(left, 0.5)):
                if isinstance(key.data, RedisLink):
                    key.data.ready(mask)
            self.flush()
        self._outage = ""
        self.journal.info(
            "cluster",
            f"node {self.node} of the cluster at {self.url}: {self.applied} log entries applied",
            node=self.node,
            applied=self.applied,
        )

    def flush(self) -> None:
        """Once per loop turn, before the store's flush: send what each link has queued."""
        self.writer.flush()
        self.reader.flush()
        self._wake_later()

    def tick(self, now: float) -> None:
        """The loop's timer: reconnects, deadlines, a read to try again."""
        self._wake_at = None
        self.writer.tick(now)
        self.reader.tick(now)
        if self._read_again_at is not None and now >= self._read_again_at:
            self._read_again_at = None
            self._read_next()
        self._wake_later()

    def close(self) -> None:
        self.writer.close()
        self.reader.close()

    @property
    def available(self) -> bool:
        return self.writer.ready_for_commands and self.reader.ready_for_commands and self.caught_up

    # -- proposing ---------------------------------------------------------------------------

    def propose(self, session: Session, name: str, say: Say, now_ms: int) -> list[Delivery]:
        """The hub's `propose`: a Say it checked goes to the log; nothing is delivered yet."""
        if not self.available:
            return [self._refusal(session.cid, say.msg_id, say.rid, self._outage or "starting")]
        if len(self.pending) >= MAX_PENDING:
            return [self._refusal(session.cid, say.msg_id, say.rid, "Redis is not keeping up")]
        number = next(self._numbers)
        entry = SayEntry(
            self.node,
            number,
            now_ms,
            name,
            session.nick,
            session.sender_key,
            say.msg_id,
            say.text,
            say.action,
        )
        self.pending[number] = Proposal(session, say.msg_id, say.rid)
        self._append(entry, number)
        return []

    def _append(self, entry: Entry, number: int) -> None:
        payload = encode_entry(entry)
        on_reply = functools.partial(self._added, number)
        self.writer.call(b"XADD", STREAM, b"*", FIELD, payload, on_reply=on_reply)

    def _added(self, number: int, reply: Reply) -> None:
        """XADD's reply: an id (the log has it: its Ack waits for the reader), or an error."""
        proposal = self.pending.get(number)
        if proposal is None or not isinstance(reply, RedisError):
            return  # applied already, or a mark, or in the log now
        if isinstance(reply, Unavailable) and reply.sent:
            proposal.unknown = True  # it may be in the log: the log will say (see _settle)
            return
        del self.pending[number]
        self._fail(proposal, str(reply))

    def _fail(self, proposal: Proposal, why: str) -> None:
        session = proposal.session
        if self.hub.sessions.get(session.cid) is session:
            self._dispatch([self._refusal(session.cid, proposal.msg_id, proposal.rid, why)])

    @staticmethod
    def _refusal(cid: int, msg_id: str, rid: str, why: str) -> Delivery:
        error = Error(
            code=ErrorCode.UNAVAILABLE,
            message=f"the message was not stored ({why}): send it again later",
            msg_id=msg_id[:MSG_ID_MAX],
            rid=rid,
        )
        return deliver((cid,), error)

    def _settle(self, number: int) -> None:
        """This node's entry `number` was applied: its earlier proposals still waiting never
        reached the log (its XADDs reach it in the order they were sent), and never will."""
        pending = self.pending
        while pending:
            first = next(iter(pending))
            if first >= number:
                return
            self._fail(pending.pop(first), "the connection to Redis was lost")

    # -- reading the log ---------------------------------------------------------------------

    def _read_next(self) -> None:
        if self.caught_up:
            args: tuple[bytes | int, ...] = (b"COUNT", READ_COUNT, b"BLOCK", BLOCK_MS)
        else:
            args = (b"COUNT", READ_COUNT)
        self.reader.call(b"XREAD", *args, b"STREAMS", STREAM, self.last_id, on_reply=self._read)

    def _read(self, reply: Reply) -> None:
        if isinstance(reply, Unavailable):
            return  # the reader reads again from last_id once it is back (on_up)
        try:
            if isinstance(reply, RedisError):
                raise ValueError(f"XREAD failed: {reply}")
            reads = read_entries(reply)
        except ValueError as exc:
            self.journal.error("cluster", f"reading the log at {self.url}: {exc}")
            self._read_again_at = time.monotonic() + RETRY_READ
            self._wake_later()
            return
        for read in reads:
            self.last_id = read.id
            self.applied += 1
            if read.entry is None:  # every node skips it alike
                self.journal.warning(
                    "cluster", f"log entry {read.id.decode(errors='replace')}: {read.problem}"
                )
                continue
            self._apply(read.entry)
        if not self.caught_up and len(reads) < READ_COUNT:
            self.caught_up = True
        self._read_next()

    def _apply(self, entry: Entry) -> None:
        mine = entry.node == self.node
        proposal = self.pending.pop(entry.p, None) if mine else None
        if mine:
            self._settle(entry.p)
        if type(entry) is MarkEntry:
            return
        say: SayEntry = entry  # type: ignore[assignment]
        sender = None if proposal is None else proposal.session
        rid = "" if proposal is None else proposal.rid
        self._dispatch(self.hub.apply_say(say, sender, rid))

    # -- links going down and up -------------------------------------------------------------

    def _down(self, which: str, reason: str) -> None:
        if not self._outage:
            self.journal.warning(
                "cluster",
                f"Redis unavailable ({which}: {reason}): refusing new messages, reconnecting",
                reason=reason,
            )
        self._outage = f"Redis is unavailable: {reason}"
        self._wake_later()

    def _reader_up(self) -> None:
        self._read_next()  # from last_id: nothing written meanwhile is missed
        self._back()

    def _writer_up(self) -> None:
        if any(proposal.unknown for proposal in self.pending.values()):
            self._append(MarkEntry(self.node, next(self._numbers)), 0)
        self._back()

    def _back(self) -> None:
        if self._outage and self.writer.ready_for_commands and self.reader.ready_for_commands:
            self._outage = ""
            self.journal.info("cluster", f"Redis at {self.url} is reachable again")

    def _wake_later(self) -> None:
        """Ask the loop for a `tick` at the earliest time a link or a retry needs one."""
        times = [t for t in (self.writer.wake_at, self.reader.wake_at, self._read_again_at) if t]
        if not times:
            return
        wake = min(times)
        if self._wake_at is None or wake < self._wake_at:
            self._wake_at = wake
            self._schedule(wake)
