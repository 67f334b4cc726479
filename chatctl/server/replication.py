"""A node of a cluster (`serve --data redis://...`): every node's hub applies one shared log.

State-machine replication through one Redis stream (docs/cluster.md). A Say that passed every
check of this node's hub is not stored at once: `propose` queues it, and the loop's `flush`
appends everything queued in the turn as one stream entry (one XADD per turn). Every node,
this one included, reads the stream in order on a second connection (XREAD, blocking on
Redis's side only) and applies each entry to its hub (`Hub.apply_say`): the room's seq is the
entry's place among the room's entries, the same on every node, and each node delivers it to
its own members. The node that took the Say sends its Ack when it applies the entry: only
after Redis has it.

A connection's answers keep the order of its requests (docs/protocol.md §6.7): a Say's Ack
takes its place among them (`order`, answers.py) while the Say is on its way.

Proposals whose outcome is unknown (the writer's connection was lost before XADD's reply)
are settled by the log itself: a node's XADDs reach the stream in the order it sent them, so
when the node applies one of its own entries, every earlier proposal of its own still waiting
can no longer arrive. Such a proposal is answered with `214 UNAVAILABLE` (nothing stored, send
it again). After a reconnect with proposals in doubt, the node appends a `MarkEntry` to settle
them without waiting for the next message.

While either connection is down, or the reader has not caught up with the stream yet, the
node refuses Says with `214 UNAVAILABLE` and keeps serving everything else; both links
reconnect with backoff (cluster/link.py).

Sessions, nicks, rooms' members and direct messages go through the log the same way
(server/clusterhub.py proposes them through `submit`, and applies them): a request's answer
is made when the node reads its entry back. A connection's end must reach the log whatever
happens: it waits for Redis, and is sent again when it is lost. The node appends a beat (a
MarkEntry) when it has appended nothing for a fifth of the lease; a node whose entries stop
for a lease is gone (cluster/leases.py): every node drops its sessions at the same entry, and
a node that finds itself gone (it was cut off from Redis) closes its connections and goes on
under a new node id.

The log is trimmed behind snapshots (cluster/snapshot.py): a node loads the current one
before reading the log from its position, writes one when one falls due at an entry it
appended, and, since every stream entry names the one before it, notices when the entries it
needs next were trimmed (it fell behind): it then loads the snapshot again, as a new node.
"""

from __future__ import annotations

import functools
import itertools
import secrets
import selectors
import time
import traceback
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

import msgspec

from chatctl.cluster.entries import (
    APPEND,
    LAST,
    SETTINGS,
    STREAM,
    EndEntry,
    Entry,
    JoinEntry,
    MarkEntry,
    Read,
    SayEntry,
    TellEntry,
    encode_entries,
    read_entries,
)
from chatctl.cluster.leases import Leases, stream_ms
from chatctl.cluster.link import LinkState, RedisLink, Unavailable
from chatctl.cluster.resp import RedisError, Reply, command, command_ending_with
from chatctl.cluster.snapshot import (
    COMMIT,
    POINTER,
    WRITING_MS,
    Pointer,
    Snapshot,
    SnapshotPolicy,
    chunks_key,
    decode_snapshot,
    encode_snapshot,
    read_pointer,
)
from chatctl.errors import ChatctlError
from chatctl.names import MSG_ID_MAX
from chatctl.protocol import Bye, Error, ErrorCode, Say
from chatctl.redis_url import RedisUrl
from chatctl.server.answers import InOrder, Slot, answers
from chatctl.server.clusterhub import ClusterHub, Request
from chatctl.server.hub import Delivery, Session, control, deliver
from chatctl.server.hubstate import capture, restore
from chatctl.server.log import ServerLog

if TYPE_CHECKING:
    from chatctl.server.peer import Peer

# Stream entries per XREAD: with the batches' bounds below, a reply holds at most 16 entries
# of about 1 MiB of UTF-8 text each (or one message, under max_frame), far below what the
# link takes in one reply (resp.MAX_REPLY_BUFFER).
READ_COUNT = 16
BLOCK_MS = 2000  # how long Redis holds an XREAD with nothing new (under link.REPLY_TIMEOUT)
# Says sent to Redis and not yet applied: past this, Redis is not keeping up and new ones are
# refused (UNAVAILABLE) rather than queued without bound.
MAX_PENDING = 65_536
START_TIMEOUT = 30.0  # to reach Redis and read the whole log at start-up
# The key resume tokens are signed with, the same on every node: a client resumes anywhere.
# Whoever reads Redis can make tokens: Redis is as trusted as the nodes.
SECRET = b"chatctl:secret"
RETRY_READ = 1.0  # seconds before reading again after an error reply to XREAD
LOAD_TRIES = 5  # snapshots superseded while being loaded, in a row, before giving up
# One stream entry holds at most this many entries, and this many characters of text (or a
# single message): what a turn proposes past that goes into another XADD of the same turn.
BATCH_ENTRIES = 1024
BATCH_TEXT = 256 * 1024
# With --redis-replicas N, each XADD is followed by WAIT N WAIT_MS on the same connection:
# what this node proposed in it is acknowledged once N replicas have it too.
WAIT_MS = 1000
# Commands sent per turn or per read, encoded but for their last argument.
_xadd = command_ending_with(b"EVAL", APPEND, 2, STREAM, LAST)  # XADD, naming the entry before
_xread_now = command_ending_with(b"XREAD", b"COUNT", READ_COUNT, b"STREAMS", STREAM)
_xread_wait = command_ending_with(
    b"XREAD", b"COUNT", READ_COUNT, b"BLOCK", BLOCK_MS, b"STREAMS", STREAM
)


class Proposal(Slot):
    """A Say on its way through the log; its Ack or Error goes in its place (as a Slot)
    among its connection's answers."""

    __slots__ = ("cid", "msg_id", "rid", "room", "session", "unknown")

    def __init__(self, session: Session, room: str, msg_id: str, rid: str) -> None:
        self.out: list[Delivery] = []  # Slot's, set here: one is made per message
        self.done = False
        self.session = session
        self.cid = session.cid  # the connection that sent it
        self.room = room
        self.msg_id = msg_id
        self.rid = rid
        self.unknown = False  # the connection was lost before XADD's reply


class _Wait:
    """One XADD's WAIT: whether its reply has come (`known`) and what fell short (`failure`,
    "" when enough replicas had it); the answers to this node's entries in that XADD that
    were applied before it came (`held`), each (cid, its slot, its deliveries)."""

    __slots__ = ("failure", "held", "known", "numbers")

    def __init__(self, numbers: list[int]) -> None:
        self.numbers = numbers
        self.known = False
        self.failure = ""
        self.held: list[tuple[int, Proposal | Request, list[Delivery]]] = []


class Replication:
    """This node's part in the cluster: two links to Redis, the proposals waiting for the log,
    and where the node has read the log to. `dispatch` takes the deliveries applying entries
    makes; `schedule(when)` asks the loop to call `tick` then."""

    def __init__(
        self,
        url: RedisUrl,
        hub: ClusterHub,
        selector: selectors.BaseSelector,
        journal: ServerLog,
        *,
        dispatch: Callable[[list[Delivery]], None],
        schedule: Callable[[float], None],
        resume: Callable[[Peer], None],
        gone: Callable[[], None] = lambda: None,
        node: str = "",
    ) -> None:
        self.url = url
        self.hub = hub
        self.journal = journal
        self.node = node or secrets.token_hex(6)
        self._dispatch = dispatch
        self._schedule = schedule
        self._on_gone = gone  # this node was found gone: the loop closes every connection
        # Each connection's answers in the order of its requests (answers.py): the loop
        # consults it for every frame of a connection with a request on its way.
        self.order: InOrder[Peer] = InOrder(
            dispatch, lambda cid: cid in hub.sessions or cid in hub.arriving, resume
        )
        lease_ms = round(hub.config.node_lease * 1000)
        self.leases = Leases(lease_ms)
        self._beat = lease_ms / 5000  # seconds without an entry of its own before a beat
        self._appended_at = 0.0  # when this node last sent an XADD (monotonic)
        self._ends: list[Request] = []  # connections' ends waiting for Redis
        self._ends_at = 0.0  # not retried before (monotonic): after an error reply, a pause
        self._losing = False  # closing every connection after losing its place (no ends)
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
        self.pending: dict[int, Proposal | Request] = {}  # by proposal number, in order
        # This turn's entries, not sent yet, and their proposal numbers (0 for a mark).
        self._batch: list[Entry] = []
        self._batch_numbers: list[int] = []
        self._batch_text = 0
        self._adding: deque[list[int]] = deque()  # the proposal numbers of each XADD in flight
        self.accepting = False  # both links ready and the log read: Says are taken
        self._numbers = itertools.count(1)
        self._wake_at: float | None = None
        self._read_again_at: float | None = None
        self._outage = ""  # why the node refuses Says now ("" while it takes them)
        # --redis-replicas: each XADD's WAIT, in the order of their replies, and the WAIT of
        # each of this node's entries not applied yet (by proposal number).
        self.replicas = hub.config.redis_replicas
        self._wait_command = command(b"WAIT", self.replicas, WAIT_MS)
        self._waits: deque[_Wait] = deque()
        self._wait_of: dict[int, _Wait] = {}
        self._replicas_short = False  # the last WAIT fell short (logged once per spell)
        # Snapshots (cluster/snapshot.py): when one falls due, and the one being loaded.
        self.policy = SnapshotPolicy(hub.config.snapshot_every)
        self._loading = True  # the reader loads the current snapshot before reading the log
        self._load_tries = 0  # holes and superseded snapshots since the reader last caught up
        self._chunks: list[Reply] = []
        self._broken = ""  # the log has a hole no snapshot covers: this node cannot go on
        self.loaded_from = b""  # the position of the snapshot loaded last
        self.snapshots_written = 0
        self.started = False
        hub.propose = self.propose
        hub.log = self

    # -- start, stop and the loop's calls ----------------------------------------------------

    def start(self, timeout: float = START_TIMEOUT) -> None:
        """Connect both links and apply the whole log, before the server accepts anyone.
        Raises ChatctlError when Redis cannot be reached or the log not read in time."""
        if self.hub.config.retain_age:
            raise ChatctlError(
                "--retain-age does not work with --data redis:// yet: nodes would forget "
                "messages at different times (use --retain-messages)"
            )
        settings = b"retain_messages=%d node_lease_ms=%d snapshot_every=%d" % (
            self.hub.config.retain_messages,
            self.leases.lease_ms,
            self.policy.every_entries,
        )
        self.writer.connect()
        self.reader.connect()
        deadline = time.monotonic() + timeout
        replies: list[Reply] = []
        asked = False
        while not (self.caught_up and len(replies) == 5):
            if self._broken:
                raise ChatctlError(f"Redis at {self.url}: {self._broken}")
            for link in (self.writer, self.reader):
                if link.state is LinkState.DOWN:
                    raise ChatctlError(f"cannot use Redis at {self.url}: {link.error}")
            if not asked and self.writer.ready_for_commands:
                asked = True
                self.writer.call(b"SET", SETTINGS, settings, b"NX", on_reply=replies.append)
                self.writer.call(b"GET", SETTINGS, on_reply=replies.append)
                self.writer.call(b"XINFO", b"STREAM", STREAM, on_reply=replies.append)
                secret = secrets.token_bytes(32)  # the first node's is everyone's
                self.writer.call(b"SET", SECRET, secret, b"NX", on_reply=replies.append)
                self.writer.call(b"GET", SECRET, on_reply=replies.append)
            left = deadline - time.monotonic()
            if left <= 0:
                raise ChatctlError(
                    f"Redis at {self.url}: the log was not read within {timeout:g} s "
                    f"({self.applied} entries applied)"
                )
            for key, mask in self._sel.select(min(left, 0.5)):
                if isinstance(key.data, RedisLink):
                    key.data.ready(mask)
            if self._read_again_at is not None and time.monotonic() >= self._read_again_at:
                self._read_again_at = None  # a load (or read) to try again: no tick() yet
                if self._loading:
                    self._load_snapshot()
                else:
                    self._read_next()
            self.flush()
        self._check(settings, replies[1], replies[2])
        shared = replies[4]
        if not isinstance(shared, bytes) or len(shared) < 32:
            raise ChatctlError(f"Redis at {self.url}: no usable {SECRET.decode()}: {shared!r:.80}")
        self.hub.use_secret(shared)
        self.started = True
        self._outage = ""
        self._update()
        self.journal.info(
            "cluster",
            f"node {self.node} of the cluster at {self.url}: "
            + (f"snapshot at {self.loaded_from.decode()} loaded, " if self.loaded_from else "")
            + f"{self.applied} log entries applied",
            node=self.node,
            applied=self.applied,
        )

    def _check(self, settings: bytes, stored: Reply, info: Reply) -> None:
        """Whether this node numbers messages as the others do: with the same settings (a
        resend is recognised as long as its first copy is stored). Whether it read the
        whole log since the snapshot it loaded, if any, is the reader's to check (`_hole`)."""
        if stored != settings:
            raise ChatctlError(
                f"the cluster at {self.url} runs with {stored!r}, this node with "
                f"{settings.decode()}: every node needs the same --retain-messages, "
                "--node-lease and --snapshot-every"
            )
        if isinstance(info, RedisError):
            if "no such key" in str(info):
                return  # a new cluster
            raise ChatctlError(f"Redis at {self.url}: XINFO STREAM failed: {info}")
        fields = dict(zip(info[::2], info[1::2], strict=True)) if isinstance(info, list) else {}
        if not isinstance(fields.get(b"entries-added"), int):  # Redis 7
            raise ChatctlError(
                f"Redis at {self.url} is older than 7.0 (XINFO STREAM: {info!r:.80})"
            )

    def flush(self) -> None:
        """Once per loop turn, before the store's flush: this turn's entries go in one XADD,
        and each link sends what it has queued."""
        if self._ends and self.accepting and time.monotonic() >= self._ends_at:
            ends, self._ends = self._ends, []
            for request in ends:
                self._resubmit(request)
        if self._batch and not self._held_back():
            self._send_batch()
        self.writer.flush()
        self.reader.flush()
        self._wake_later()

    def _held_back(self) -> bool:
        """With --redis-replicas, one XADD and its WAIT at a time: WAIT holds the writer's
        connection in Redis, so XADDs sent behind it would each wait out its timeout in
        turn. What comes meanwhile gathers in the next batch (refused once that is full)."""
        return bool(self.replicas and self._waits)

    def _room_for(self, text: int) -> bool:
        """Whether an entry with `text` characters of text fits in this turn's batch: when
        the batch is full it is sent first, unless held back (then: no room)."""
        if self._batch and (
            len(self._batch) >= BATCH_ENTRIES or self._batch_text + text > BATCH_TEXT
        ):
            if self._held_back():
                return False
            self._send_batch()
        return True

    def tick(self, now: float) -> None:
        """The loop's timer: reconnects, deadlines, a read to try again."""
        if self._wake_at is not None and self._wake_at <= now:
            self._wake_at = None  # that timer went off (an entry superseded by an earlier one
            # goes off later, finds a later _wake_at, and adds no timer)
        self.writer.tick(now)
        self.reader.tick(now)
        if self._read_again_at is not None and now >= self._read_again_at:
            self._read_again_at = None
            if self._loading:
                self._load_snapshot()
            else:
                self._read_next()
        if now >= self._appended_at + self._beat and self.writer.ready_for_commands:
            self._batch.append(MarkEntry(self.node, next(self._numbers)))  # the lease's beat
            self._batch_numbers.append(0)
            self._appended_at = now  # (sent by the flush that ends this turn)
        self._wake_later()

    def close(self) -> None:
        self.writer.close()
        self.reader.close()

    def _update(self) -> None:
        self.accepting = (
            self.writer.ready_for_commands and self.reader.ready_for_commands and self.caught_up
        )

    # -- proposing ---------------------------------------------------------------------------

    def number(self) -> int:
        """The next proposal number (ClusterHub's `Log`)."""
        return next(self._numbers)

    def submit(self, entry: Entry, request: Request) -> list[Delivery]:
        """ClusterHub's `Log.submit`: `entry` goes to the log, its answer comes when it is
        applied. A connection's end (cid -1) is never refused: it waits for Redis. A room's
        claim (cid -1 too) goes with the Join or Say behind it, or is dropped with it."""
        request.entry = entry
        text = len(entry.text) if type(entry) is TellEntry else 0
        if self._losing:
            return []  # its sessions are this node's old id's: dropped with its lease
        if request.cid < 0:
            if self.accepting and len(self.pending) < MAX_PENDING and self._room_for(text):
                self._queue(entry.p, request, entry)
            elif type(entry) is EndEntry:
                self._ends.append(request)  # it must reach the log: tried again at flush
            return []  # (a room's claim is dropped: the Join or Say behind it is refused)
        if not self.accepting:
            return request.refusal(self._outage or "starting")
        if len(self.pending) >= MAX_PENDING:
            return request.refusal("Redis is not keeping up")
        if not self._room_for(text):
            return request.refusal("the Redis replicas are not keeping up")
        self.order.later(request.cid, request)
        self._queue(entry.p, request, entry)
        return []

    def _queue(self, number: int, item: Proposal | Request, entry: Entry) -> None:
        self.pending[number] = item
        self._batch.append(entry)
        self._batch_numbers.append(number)
        if type(entry) is TellEntry:
            self._batch_text += len(entry.text)  # counted as a Say's is

    def _resubmit(self, request: Request) -> None:
        """A connection's end that did not reach the log goes again, under a new number."""
        entry = request.entry
        assert type(entry) is EndEntry
        if not self._room_for(0):
            self._ends.append(request)  # held back: at a later flush
            return
        request.entry = entry = msgspec.structs.replace(entry, node=self.node, p=self.number())
        request.unknown = False
        self._queue(entry.p, request, entry)

    def propose(self, session: Session, name: str, say: Say, now_ms: int) -> list[Delivery]:
        """The hub's `propose`: a Say it checked goes to the log; nothing is delivered yet."""
        text = say.text
        why = ""
        if not self.accepting:
            why = self._outage or "starting"
        elif len(self.pending) >= MAX_PENDING:
            why = "Redis is not keeping up"
        elif not self._room_for(len(text)):
            why = "the Redis replicas are not keeping up"
        if why:
            self.hub.not_stored(name)  # a room it was about to create is not made
            return [self._refusal(session.cid, say.msg_id, say.rid, why)]
        number = next(self._numbers)
        proposal = self.pending[number] = Proposal(session, name, say.msg_id, say.rid)
        self.order.later(session.cid, proposal)
        self._batch.append(
            SayEntry(
                self.node,
                number,
                now_ms,
                name,
                session.nick,
                session.sender_key,
                say.msg_id,
                text,
                say.action,
            )
        )
        self._batch_numbers.append(number)
        self._batch_text += len(text)
        return []

    def _send_batch(self) -> None:
        self._appended_at = time.monotonic()
        numbers = self._batch_numbers
        self._adding.append(numbers)  # first: a refusal calls _added at once
        payload = encode_entries(self._batch)
        self._batch, self._batch_numbers, self._batch_text = [], [], 0
        self.writer.call_encoded(_xadd(payload), self._added)
        if self.replicas:
            wait = _Wait(numbers)
            self._waits.append(wait)  # first, as above
            for number in numbers:
                if number:
                    self._wait_of[number] = wait
            self.writer.call_encoded(self._wait_command, self._waited)

    def _waited(self, reply: Reply) -> None:
        """WAIT's reply (in the order of the XADDs): how many replicas have everything this
        connection wrote. Short of --redis-replicas (its timeout passed), or no reply: the
        Says and Tells of that XADD are not acknowledged but refused (214), though the log
        has them; the resend the client makes is recognised and acknowledged then."""
        wait = self._waits.popleft()
        if isinstance(reply, int) and reply >= self.replicas:
            failure = ""
        elif isinstance(reply, int):
            failure = f"{reply} of {self.replicas} Redis replicas had it within {WAIT_MS} ms"
        else:
            why = str(reply) if isinstance(reply, RedisError) else f"{reply!r:.80}"
            failure = f"the Redis replicas were not heard from: {why}"
        if bool(failure) != self._replicas_short:
            self._replicas_short = bool(failure)
            if failure:
                self.journal.warning(
                    "cluster", f"messages are not acknowledged until replicated: {failure}"
                )
            else:
                self.journal.info("cluster", f"{self.replicas} Redis replicas keep up again")
        wait.known, wait.failure = True, failure
        for number in wait.numbers:
            if number not in self.pending:  # applied already, or never will be
                self._wait_of.pop(number, None)
        held, wait.held = wait.held, []
        for cid, item, out in held:
            self._answer(cid, item, out, wait)
        if self._batch and not self._waits:
            self._send_batch()  # what gathered behind it (sent by the loop's flush)

    def _answer(
        self, cid: int, item: Proposal | Request, out: list[Delivery], wait: _Wait | None
    ) -> None:
        """`item`'s answer `out` goes in its place among `cid`'s answers; with replicas to
        wait for, once they have it (or, for a Say or a Tell, a refusal if they fell short)."""
        if wait is not None:
            if not wait.known:
                wait.held.append((cid, item, out))
                return
            if wait.failure:
                msg_id = item.msg_id
                if msg_id or type(item) is Proposal:
                    error = Error(
                        code=ErrorCode.UNAVAILABLE,
                        message=f"not acknowledged ({wait.failure}): send it again (a resend "
                        "is recognised)",
                        msg_id=msg_id[:MSG_ID_MAX],
                        rid=item.rid,
                    )
                    out = [d for d in out if not answers(d, cid)] + [deliver((cid,), error)]
        self.order.answered(cid, item, out)

    def _added(self, reply: Reply) -> None:
        """XADD's reply: an id (the log has them: their Acks wait for the reader), or an
        error. Replies come in the order of the XADDs (`_adding`)."""
        numbers = self._adding.popleft()
        if not isinstance(reply, RedisError):
            return
        in_doubt = isinstance(reply, Unavailable) and reply.sent
        for number in numbers:
            proposal = self.pending.get(number)
            if proposal is None:
                continue  # applied already, or a mark
            if in_doubt:
                proposal.unknown = True  # it may be in the log: the log will say (_settle)
            else:
                del self.pending[number]
                self._fail(proposal, str(reply))

    def _fail(self, proposal: Proposal | Request, why: str) -> None:
        cid = proposal.cid
        if type(proposal) is Request:
            entry = proposal.entry
            if cid < 0:
                if type(entry) is not EndEntry:
                    return  # a room's claim: the Join or Say behind it fails with it
                # A connection's end must reach the log: again at a flush, a little later
                # (Redis answering every XADD with an error must not make a busy loop).
                self._ends.append(proposal)
                self._ends_at = time.monotonic() + RETRY_READ
                self._wake_later()
                return
            if type(entry) is JoinEntry:
                self.hub.not_stored(entry.room)
            self.order.answered(cid, proposal, proposal.refusal(why))
            self.hub.arriving.pop(cid, None)
            return
        assert type(proposal) is Proposal
        self.hub.not_stored(proposal.room)
        self.order.answered(cid, proposal, [self._refusal(cid, proposal.msg_id, proposal.rid, why)])

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
            self._wait_of.pop(first, None)
            self._fail(pending.pop(first), "the connection to Redis was lost")

    # -- reading the log ---------------------------------------------------------------------

    def _read_next(self) -> None:
        xread = _xread_wait if self.caught_up else _xread_now
        self.reader.call_encoded(xread(self.last_id), self._read)

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
        leases = self.leases
        for read in reads:
            if read.prev and read.prev != self.last_id:
                self._hole(read)
                return
            entries = read.entries
            node = entries[0].node if entries else None  # one XADD: one node's
            for gone in leases.advance(stream_ms(read.id), node):
                self._guarded(f"dropping node {gone}'s sessions", self._gone, gone, leases.clock)
            if read.problem:  # every node skips it alike
                self.journal.warning(
                    "cluster", f"log entry {read.id.decode(errors='replace')}: {read.problem}"
                )
            if node is not None and leases.is_gone(node):
                node = None  # appended after its node was found gone: every node skips it
                entries = []
            where = read.id.decode(errors="replace")
            for entry in entries:
                self._guarded(f"applying log entry {where}", self._apply, entry)
            self.last_id = read.id
            self.applied += 1
            if self.policy.due(read.size) and node == self.node:
                self._guarded(f"writing the snapshot at {where}", self._write_snapshot, read.id)
        if not self.caught_up and len(reads) < READ_COUNT:
            self.caught_up = True
            self._load_tries = 0
            self._update()
        self._read_next()

    def _guarded(self, what: str, action: Callable[..., None], *args: object) -> None:
        """`action(*args)`, where a bug costs that one step (logged), never the node: these
        run in a link's callback, straight from the event loop."""
        try:
            action(*args)
        except Exception as exc:
            self.journal.error(
                "internal_error",
                f"{what}: {type(exc).__name__}: {exc}",
                traceback=traceback.format_exc(),
            )

    def _apply(self, entry: Entry) -> None:
        proposal: Proposal | Request | None = None
        wait: _Wait | None = None
        if entry.node == self.node:
            pending = self.pending
            proposal = pending.pop(entry.p, None)
            if self._wait_of:
                wait = self._wait_of.pop(entry.p, None)
            if pending and next(iter(pending)) < entry.p:
                self._settle(entry.p)
        if type(entry) is MarkEntry:
            return
        try:
            self._apply_change(entry, proposal, wait)
        except Exception:
            # Its connection would wait for this answer for ever: it is closed instead.
            if proposal is not None and proposal.cid >= 0:
                bye = Bye(code=ErrorCode.SERVER_ERROR, reason="internal server error")
                self.order.answered(proposal.cid, proposal, [control(proposal.cid, bye)])
            raise

    def _apply_change(
        self, entry: Entry, proposal: Proposal | Request | None, wait: _Wait | None
    ) -> None:
        if type(entry) is not SayEntry:
            request: Request | None = proposal  # type: ignore[assignment]
            out = self.hub.apply(entry, request)
            if request is None or request.cid < 0:
                self._dispatch(out)
            else:
                self._answer(request.cid, request, out, wait)
            return
        say: SayEntry = entry
        if proposal is None:
            self._dispatch(self.hub.apply_say(say, None))
            return
        assert type(proposal) is Proposal
        cid = proposal.cid
        session = proposal.session
        # Its Ack goes to the connection that sent it (a connection that took its session
        # over since resends what it did not see acknowledged).
        out = self.hub.apply_say(say, session if session.cid == cid else None, proposal.rid)
        if wait is None:
            self.order.answered(cid, proposal, out)
        else:
            self._answer(cid, proposal, out, wait)

    def _gone(self, node: str, now_ms: int) -> None:
        """`node`'s lease ended at this place in the log: its sessions are dropped here as on
        every node. When it is this node (cut off from Redis for a lease), its connections
        are closed (their clients resume, here or elsewhere) and it goes on as a new node."""
        self._dispatch(self.hub.apply_gone(node, now_ms))
        if node != self.node:
            self.journal.info(
                "cluster", f"node {node} is gone: its sessions are dropped", node=node
            )
            return
        self._lose_place(
            f"this node ({node}) was found gone (no entry in the log for a lease)",
            "this server lost its place in the cluster",
        )

    def _lose_place(self, why: str, told: str) -> None:
        """This node's sessions are no longer its own in the cluster's state: it closes every
        connection (their clients resume, here or elsewhere) and goes on as a new node."""
        old, self.node = self.node, secrets.token_hex(6)
        self.journal.warning(
            "cluster",
            f"{why}: closing every connection, and going on as node {self.node}",
            node=self.node,
            old=old,
        )
        pending, self.pending = self.pending, {}
        self._wait_of.clear()
        self._batch, self._batch_numbers, self._batch_text = [], [], 0
        self._ends.clear()
        for proposal in pending.values():
            if proposal.cid >= 0:
                self._fail(proposal, told)
        self._losing = True
        try:
            self._on_gone()
        finally:
            self._losing = False

    # -- snapshots (cluster/snapshot.py) -----------------------------------------------------

    def _write_snapshot(self, position: bytes) -> None:
        """This node appended the stream entry at `position`, where a snapshot fell due: the
        state now (after applying it) goes to Redis, pipelined on the writer; the commit
        makes it current and trims the log below the previous one."""
        writer = self.writer
        if not writer.ready_for_commands:
            self.journal.warning("cluster", "a snapshot fell due while Redis is unavailable")
            return
        started = time.perf_counter()
        chunks = encode_snapshot(capture(self.hub, position, self.leases))
        spent = time.perf_counter() - started
        size = sum(map(len, chunks))
        key = chunks_key(position)
        # In one transaction: a writer killed while sending leaves nothing (Redis drops a
        # MULTI its client never finished), never chunks without their expiry.
        writer.call(b"MULTI", on_reply=_ignore)
        writer.call(b"DEL", key, on_reply=_ignore)
        for i, chunk in enumerate(chunks):
            writer.call(b"HSET", key, i, chunk, on_reply=_ignore)
        writer.call(b"PEXPIRE", key, WRITING_MS, on_reply=_ignore)
        writer.call(b"EXEC", on_reply=_ignore)
        committed = functools.partial(self._committed, position, size, spent)
        writer.call(
            b"EVAL", COMMIT, 3, POINTER, key, STREAM, position, len(chunks), size,
            on_reply=committed,
        )  # fmt: skip

    def _committed(self, position: bytes, size: int, spent: float, reply: Reply) -> None:
        where = position.decode(errors="replace")
        if reply == 1:
            self.snapshots_written += 1
            self.journal.info(
                "cluster",
                f"snapshot at {where} written ({size} bytes, built in {spent * 1000:.1f} ms); "
                "the log is trimmed below the one before it",
                position=where,
                bytes=size,
            )
        elif reply != 0:  # 0: a later one is current already
            self.journal.warning("cluster", f"the snapshot at {where} was not stored: {reply!r}")

    def _load_snapshot(self) -> None:
        """Read the current snapshot (if any) on the reader; the log is read from its
        position once it is loaded (`_loaded`)."""
        if self._load_tries > LOAD_TRIES:
            self._stop(
                f"no snapshot could be loaded and read on from in {LOAD_TRIES} tries (each was "
                "superseded, and the log trimmed, before this node read it)"
            )
            return
        self._chunks = []
        self.reader.call(b"HGETALL", POINTER, on_reply=self._pointed)

    def _pointed(self, reply: Reply) -> None:
        if isinstance(reply, Unavailable):
            return  # loaded again once the reader is back (_reader_up)
        if isinstance(reply, RedisError):
            self._load_later(reply)
            return
        pointer = read_pointer(reply)
        if isinstance(pointer, str):
            self._stop(f"the snapshot's pointer: {pointer}")
        elif pointer is None:
            if self._load_tries:  # after a hole
                self._stop(
                    "the log lost entries this node had not read (trimmed or deleted), and no "
                    "snapshot covers them: a node cannot rebuild the chat from it"
                )
                return
            self._loaded()
        else:
            key = chunks_key(pointer.id)
            for i in range(pointer.chunks):
                last = i == pointer.chunks - 1
                got = functools.partial(self._chunk, pointer, last)
                self.reader.call(b"HGET", key, i, on_reply=got)

    def _chunk(self, pointer: Pointer, last: bool, reply: Reply) -> None:
        if isinstance(reply, Unavailable):
            return
        self._chunks.append(reply)
        if not last:
            return
        chunks, self._chunks = self._chunks, []
        error = next((c for c in chunks if isinstance(c, RedisError)), None)
        if error is not None:
            self._load_later(error)
            return
        if not all(type(chunk) is bytes for chunk in chunks):
            self._load_tries += 1
            self._load_snapshot()  # superseded (and deleted) while it was read: the next one
            return
        snapshot = decode_snapshot(chunks)  # type: ignore[arg-type]
        if isinstance(snapshot, str):
            self._stop(f"the snapshot at {pointer.id.decode(errors='replace')}: {snapshot}")
            return
        self._loaded(snapshot)

    def _load_later(self, error: RedisError) -> None:
        """An error reply while loading the snapshot (Redis still loading its AOF after a
        restart, say): not the snapshot's fault; try again a little later."""
        self.journal.warning("cluster", f"loading the snapshot from {self.url}: {error}")
        self._read_again_at = time.monotonic() + RETRY_READ
        self._wake_later()

    def _loaded(self, snapshot: Snapshot | None = None) -> None:
        if snapshot is not None:
            try:
                restore(self.hub, self.leases, snapshot)
            except Exception as exc:  # a half-restored hub must not take part
                self.journal.error(
                    "internal_error",
                    f"loading the snapshot: {type(exc).__name__}: {exc}",
                    traceback=traceback.format_exc(),
                )
                self._stop(f"the snapshot at {snapshot.position} could not be loaded: {exc}")
                return
            self.last_id = self.loaded_from = snapshot.position.encode()
            self.policy.restart()
        self._loading = False
        self._read_next()

    def _hole(self, read: Read) -> None:
        """The next entry follows one this node never read: it fell behind the log's trim
        point. It loads the current snapshot again (its clients go: its state is replaced)."""
        behind = self.last_id.decode(errors="replace")
        why = (
            f"the log's entries after {behind} were trimmed before this node read them "
            f"(the next one follows {read.prev.decode(errors='replace')})"
        )
        self.caught_up = False
        self._update()
        self._loading = True
        self._load_tries += 1
        if self.loaded_from or self.applied:
            self._lose_place(why, "this server fell behind the cluster")
        self._load_snapshot()

    def _stop(self, why: str) -> None:
        """This node cannot rebuild the cluster's state: it takes nothing any more (and does
        not start)."""
        self._broken = why
        self._loading = True
        self.caught_up = False
        self._update()
        if self.started:  # else start() raises it
            self.journal.error("cluster", f"Redis at {self.url}: {why}")

    # -- links going down and up -------------------------------------------------------------

    def _down(self, which: str, reason: str) -> None:
        if not self._outage:
            self.journal.warning(
                "cluster",
                f"Redis unavailable ({which}: {reason}): refusing new messages, reconnecting",
                reason=reason,
            )
        self._outage = f"Redis is unavailable: {reason}"
        self._update()
        self._wake_later()

    def _reader_up(self) -> None:
        if self._loading:
            self._load_snapshot()
        else:
            self._read_next()  # from last_id: nothing written meanwhile is missed
        self._back()

    def _writer_up(self) -> None:
        if any(proposal.unknown for proposal in self.pending.values()):
            self._batch.append(MarkEntry(self.node, next(self._numbers)))
            self._batch_numbers.append(0)
        self._back()

    def _back(self) -> None:
        self._update()
        if self._outage and self.writer.ready_for_commands and self.reader.ready_for_commands:
            self._outage = ""
            self.journal.info("cluster", f"Redis at {self.url} is reachable again")

    def _wake_later(self) -> None:
        """Ask the loop for a `tick` at the earliest time a link or a retry needs one."""
        # The beat's time, while the writer can send it (it is back: the next flush asks).
        beat = self._appended_at + self._beat if self.writer.ready_for_commands else None
        times = [
            t
            for t in (
                self.writer.wake_at,
                self.reader.wake_at,
                self._read_again_at,
                beat,
                self._ends_at if self._ends else None,
            )
            if t
        ]
        if not times:
            return
        wake = min(times)
        if self._wake_at is None or wake < self._wake_at:
            self._wake_at = wake
            self._schedule(wake)


def _ignore(reply: Reply) -> None:
    """A reply the commit that follows settles (COMMIT checks that every chunk is there)."""
    del reply
