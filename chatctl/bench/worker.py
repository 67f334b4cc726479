"""One load-generator process: many non-blocking sockets on one selector, never a thread per
simulated client.

The parent talks to a worker over a pipe (see runner.py). A worker connects and sets up its
share of the connections, reports ready, and then runs one loop: publishers write batches
while their window allows, and every readable socket is read into one round buffer that
scan.py checks in a single pass.

About 600 lines, kept as one: the worker's loop and the per-connection state it drives.
"""

from __future__ import annotations

import contextlib
import errno
import math
import resource
import selectors
import socket
import ssl
import time
from collections import deque
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection as Pipe
from typing import Any

import numpy as np

from chatctl.bench.adapters import MAX_SETUP_REPLY, Adapter, PingAnswers, Setup, SetupFailed
from chatctl.bench.histogram import Histogram
from chatctl.bench.plan import ConnSpec, Plan, WorkerResult
from chatctl.bench.scan import (
    RoomSeq,
    RoundBuffer,
    Segments,
    Verifier,
    find_payloads,
)
from chatctl.bench.tls import TlsClosed, TlsPipe, explain, make_context, recv_plain

ROUND_BUF = 8 * 1024 * 1024
MAX_READ = 256 * 1024
SETUP_READ = 64 * 1024
CONNECT_PARALLEL = 256  # connects in flight: more only overflows the server's accept backlog
CONNECT_TIMEOUT = 10.0
BATCH = 64  # publishes built and written at once, with one send timestamp
BATCHES_PER_TURN = 16  # batches a publisher may write per turn of the loop
DELIVERIES_IN_FLIGHT = 262_144  # at most this many (messages in flight x their receivers)
BYTES_IN_FLIGHT = 32 * 1024 * 1024  # ... and this many bytes of them (large messages)
PROGRESS_EVERY = 0.25
KEEPALIVE_EVERY = 10.0
DRAIN_IDLE = 3.0  # seconds without a new delivery after publishing ends: the rest is lost
NS = 1_000_000_000
GOODBYE_WITHIN = 3.0  # seconds to leave a live server's rooms cleanly at the end
FAREWELL_WITHIN = 1024  # bytes at the end of a read searched for a server's closing words
RESUME_WITHIN = 20.0  # seconds a connection keeps trying the other nodes of a cluster
RETRY_PAUSE = 0.2  # seconds between two passes over a cluster's nodes that all failed


class Conn:
    __slots__ = (
        "acked",
        "answers",
        "blocked",
        "clear",
        "closed",
        "first_measured",
        "first_ns",
        "give_up_at",
        "last_ns",
        "limit",
        "make",
        "moving",
        "msg_len",
        "node",
        "pending",
        "phase",
        "pub_done",
        "resumed",
        "retry_at",
        "room_seq",
        "seq",
        "setup",
        "sock",
        "spec",
        "sub",
        "t_start",
        "tail",
        "tls",
        "token",
        "tries",
        "unacked",
    )

    def __init__(self, spec: ConnSpec, sub: int) -> None:
        self.spec = spec
        self.sub = sub  # local subscriber index, -1 if this connection is not verified
        self.sock: socket.socket | None = None
        self.setup: Setup | None = None
        self.t_start = 0
        self.tail = b""
        self.pending = b""
        self.blocked = False
        self.closed = False
        self.tls: TlsPipe | None = None  # with a TLS target
        self.answers: PingAnswers | None = None  # an adapter's per-connection ping answers
        self.clear: bytes | None = None  # what the server says in clear before TLS starts
        # publisher state
        self.make: Callable[[int, int], bytes] | None = None
        self.seq = 0
        self.acked = 0
        self.first_measured = -1  # first sequence number inside the measured window
        self.limit = -1  # sequence number to stop at, once known
        self.first_ns = 0
        self.last_ns = 0
        self.pub_done = False
        self.phase = 0  # ns: at a fixed rate, publishers' schedules are spread over one period
        # on a cluster (several targets): what moving to another node and resuming takes
        self.node = spec.node  # the target connected to
        self.token = ""  # the session's resume token
        self.room_seq = RoomSeq()  # a subscriber's place in its room
        self.unacked: deque[tuple[int, bytes]] = deque()  # (first seq, bytes) of sent batches
        self.msg_len = 0  # the bytes of one publish (all of a publisher's are as long)
        self.moving = False  # connecting to another node, or waiting to
        self.resumed = False  # has moved at least once
        self.tries = 0  # nodes tried in the current pass over the list
        self.retry_at = 0  # ns: when a connection waiting after a failed pass tries again
        self.give_up_at = 0  # ns: when a moving connection stops trying


def raise_nofile_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def worker_main(plan: Plan, specs: list[ConnSpec], pipe: Pipe) -> None:
    """Process entry point."""
    raise_nofile_limit()
    worker = Worker(plan, specs, pipe)
    try:
        worker.run()
    except KeyboardInterrupt:
        pass  # Ctrl-C reaches the whole process group; the parent reports it
    except EOFError:
        pass  # the parent is gone
    except Exception as exc:  # reported to the parent, which turns it into a ChatctlError
        with contextlib.suppress(OSError):
            pipe.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        worker.close_all()


class Worker:
    def __init__(self, plan: Plan, specs: list[ConnSpec], pipe: Pipe) -> None:
        self.plan = plan
        self.params = plan.params
        self.adapter: Adapter = plan.target.adapter
        self.pipe = pipe
        self.sel = selectors.DefaultSelector()
        sub_ids = [s.sub for s in specs if s.sub >= 0]
        local = {g: i for i, g in enumerate(sub_ids)}
        self.sub_ids = sub_ids
        self.conns = [Conn(s, local.get(s.sub, -1)) for s in specs]
        self.pubs = [c for c in self.conns if c.spec.pub >= 0]
        if self.params.rate:
            for c in self.pubs:
                c.phase = int(c.spec.pub * NS / (self.params.rate * max(plan.n_pubs, 1)))
        self.n_subs = len(sub_ids)
        self.verifier = Verifier(n_subs=self.n_subs, n_pubs=max(plan.n_pubs, 1))
        self.hist = Histogram()
        self.connect_hist = Histogram()
        self.result = WorkerResult(sub_ids=sub_ids, pub_ids=[c.spec.pub for c in self.pubs])
        # Several targets are the nodes of one cluster: a connection whose node goes away
        # moves to the next and resumes there, when the server can resume.
        self.resume = self.adapter.resume if len(plan.targets) > 1 else None
        self.addrs: list[tuple[Any, ...]] = []
        self.movers: set[Conn] = set()  # connections moving to another node
        self.waiting: set[Conn] = set()  # ... of which those pausing after a failed pass
        self.round = RoundBuffer(ROUND_BUF, MAX_READ)
        self.scratch = memoryview(bytearray(SETUP_READ))  # plaintext during set-up
        self.tls_context: ssl.SSLContext | None = None
        self.rr = 0
        self.measured = np.zeros(self.n_subs, dtype=np.int64)
        self.first_ns = np.zeros(self.n_subs, dtype=np.int64)
        self.last_ns = np.zeros(self.n_subs, dtype=np.int64)
        self.sub_closed = np.zeros(self.n_subs, dtype=bool)
        self.epoch = 0
        self.warm_rel = 0
        self.end_ns = 0
        self.publishing = False
        self.pump_timeout = 0.05  # seconds until a publisher can send again
        # The adapter's window is for the whole run: many publishers share it, so that what is
        # queued in the server (and so the latency at full speed) does not grow with their
        # number. At least two acks' worth each, or a NATS publisher could never send.
        # With a large fan-out or large messages, fewer messages already keep the server busy:
        # the deliveries in flight, and their bytes, are capped too (below Redis's default
        # 32 MiB output limit for a subscriber).
        a = self.adapter
        pubs = max(plan.n_pubs, 1)
        fanout = plan.deliveries_per_message()
        self.window = max(
            2 * a.ack_every,
            min(
                a.window // pubs,
                DELIVERIES_IN_FLIGHT // (pubs * fanout),
                BYTES_IN_FLIGHT // (pubs * fanout * self.params.size),
            ),
        )
        self.pubs_reported = False
        self.expected: np.ndarray[Any, np.dtype[np.int64]] | None = None
        self.finished = False
        self.last_progress_ns = 0
        self.last_delivery_ns = 0
        self.last_keepalive_ns = 0
        self.last_check_delivered = -1
        self.unfinished_pings: set[Conn] = set()  # connections in the middle of a PING line

    # -- set-up --------------------------------------------------------------------------------

    def run(self) -> None:
        # Connect only when every worker is up, so that connect rates are rates of overlap.
        self.pipe.send(("spawned",))
        self.wait_for("connect")
        self.connect_all()
        r = self.result
        self.pipe.send(("ready", r.connected, r.failed, r.first_error))
        self.sel.register(self.pipe.fileno(), selectors.EVENT_READ, None)
        self.last_keepalive_ns = time.monotonic_ns()
        while not self.finished:
            self.step()
        self.finish()
        # Hold every connection until the parent has measured what it needs and says stop.
        self.wait_for("stop")
        if not self.plan.target.launched:
            self.say_goodbye()

    def say_goodbye(self) -> None:
        """On a live server: part every room and say Bye (the adapter's goodbye), then read
        until the server closes, so that nothing unread makes our close a reset that could
        lose them. Bounded by GOODBYE_WITHIN; a launched server is simply stopped instead."""
        goodbye = self.adapter.goodbye
        if goodbye is None:
            return
        live = [c for c in self.conns if not c.closed and not c.moving and c.sock is not None]
        for c in live:
            self.write(c, goodbye(c.spec.room))
        deadline = time.monotonic() + GOODBYE_WITHIN
        while (left := deadline - time.monotonic()) > 0:
            live = [c for c in live if not c.closed]
            if not live:
                return
            for key, _ in self.sel.select(min(left, 0.1)):
                c = key.data
                if not isinstance(c, Conn) or c.closed or c.sock is None:
                    continue
                self.flush(c)
                try:
                    data = c.sock.recv(MAX_READ)
                except (BlockingIOError, ssl.SSLWantReadError):
                    continue
                except OSError:
                    data = b""
                if not data:
                    self.close(c)

    def connect_all(self) -> None:
        t = self.plan.target
        self.addrs = [
            socket.getaddrinfo(x.host, x.port, type=socket.SOCK_STREAM)[0]
            for x in self.plan.targets
        ]
        if t.tls:
            self.tls_context = make_context(t.tls_ca)
        todo = deque(self.conns)
        inflight: set[Conn] = set()
        allowance = len(self.conns) * self.adapter.setup_per_conn
        deadline = time.monotonic() + CONNECT_TIMEOUT + allowance
        first = last = 0
        parallel = self.adapter.connect_parallel or CONNECT_PARALLEL
        while todo or inflight:
            while todo and len(inflight) < parallel:
                c = todo.popleft()
                c.setup = self.adapter.setup(
                    name=c.spec.name, room=c.spec.room, sub=c.spec.sub >= 0, pub=c.spec.pub >= 0
                )
                c.t_start = time.monotonic_ns()
                first = first or c.t_start
                try:
                    self.start_connect(c)
                except OSError as exc:
                    self.fail(c, str(exc))
                    continue
                inflight.add(c)
            for key, mask in self.sel.select(0.1):
                c = key.data
                if c not in inflight:
                    self.discard_input(c)
                    continue
                try:
                    if self.advance_setup(c, mask):
                        inflight.discard(c)
                        last = time.monotonic_ns()
                        self.connect_hist.record(np.array([last - c.t_start], dtype=np.int64))
                        self.result.connected += 1
                except ssl.SSLError as exc:
                    inflight.discard(c)
                    self.fail(c, explain(exc, t.address))
                except (OSError, SetupFailed) as exc:
                    inflight.discard(c)
                    self.fail(c, str(exc))
            if time.monotonic() > deadline:
                for c in inflight:
                    limit = CONNECT_TIMEOUT + allowance
                    self.fail(c, f"set-up not finished in {limit:.0f} s")
                inflight.clear()
                for c in todo:
                    self.fail(c, "not attempted: set-up timed out")
                todo.clear()
        self.result.connect_first_ns, self.result.connect_last_ns = first, last
        self.result.connect_hist = self.connect_hist.to_wire()

    def start_connect(self, c: Conn) -> None:
        """Open c's socket to its node and start connecting; its set-up follows in
        advance_setup. OSError when that fails at once."""
        t, info = self.plan.targets[c.node], self.addrs[c.node]
        sock = socket.socket(info[0], info[1], info[2])
        c.sock = sock
        if self.adapter.answers is not None:
            c.answers = self.adapter.answers()
        if self.tls_context is not None:
            c.tls = TlsPipe(self.tls_context, t.host)
            if self.adapter.tls_after is not None:
                c.clear = b""
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        err = sock.connect_ex(info[4])
        if err not in (0, errno.EINPROGRESS):
            sock.close()
            raise OSError(f"connect to {t.address}: {errno.errorcode.get(err, err)}")
        self.sel.register(sock, selectors.EVENT_WRITE, c)

    def advance_setup(self, c: Conn, mask: int) -> bool:
        """Move one connection's set-up along; True once it is ready."""
        sock, setup, tls = c.sock, c.setup, c.tls
        assert sock is not None and setup is not None
        if mask & selectors.EVENT_WRITE:
            err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                raise OSError(err, f"connect: {errno.errorcode.get(err, err)}")
            if tls is None:
                sock.sendall(setup.first)
            elif c.clear is None:
                sock.sendall(tls.handshake())  # the ClientHello
            self.sel.modify(sock, selectors.EVENT_READ, c)
            return False
        data = sock.recv(tls.read_size(SETUP_READ) if tls is not None else SETUP_READ)
        if not data:
            if tls is not None and not tls.ready and c.clear is None:
                address = self.plan.targets[c.node].address
                raise SetupFailed(
                    f"{address} closed the connection in the TLS handshake: it does not speak "
                    "TLS, or not to this bench"
                )
            raise SetupFailed("the server closed the connection during set-up")
        if tls is not None:
            data = self.setup_tls(c, tls, data)
            if not data:
                return False
        out, done = setup.feed(data)
        if out:
            sock.sendall(tls.encrypt(out) if tls is not None else out)
        if done:
            c.token = setup.token
            if not c.moving:
                c.room_seq.last = c.room_seq.field = setup.head
            c.setup = None
            if c.spec.pub >= 0:
                c.make = self.adapter.publisher(
                    pub=c.spec.pub, room=c.spec.room or "", size=self.params.size
                )
                c.msg_len = len(c.make(0, 0))
        return done

    def setup_tls(self, c: Conn, tls: TlsPipe, data: bytes) -> bytes:
        """Raw bytes during set-up over TLS: the server's words in clear before the handshake
        (if the adapter has any), the handshake, then the plaintext of what follows."""
        sock, setup = c.sock, c.setup
        assert sock is not None and setup is not None
        if c.clear is not None:
            after = self.adapter.tls_after
            assert after is not None
            clear = c.clear + data
            at = clear.find(after)
            if at < 0:
                if len(clear) > MAX_SETUP_REPLY:
                    raise SetupFailed(f"no {after!r} before TLS in {MAX_SETUP_REPLY} bytes")
                c.clear = clear
                return b""
            c.clear = None
            data = clear[at + len(after) :]
            sock.sendall(tls.handshake())
        if not tls.ready:
            out, ready = tls.step(data)
            if out:
                sock.sendall(out)
            if not ready:
                return b""
            sock.sendall(tls.encrypt(setup.first))
            data = b""  # records after the handshake's are still in the SSLObject
        try:
            n = tls.decrypt(data, self.scratch)
        except TlsClosed:
            raise SetupFailed("the server closed the connection during set-up") from None
        out = tls.output()
        if out:
            sock.sendall(out)
        return bytes(self.scratch[:n])

    def fail(self, c: Conn, message: str) -> None:
        self.result.failed += 1
        self.result.first_error = self.result.first_error or message
        self.close(c)
        c.pub_done = True

    def discard_input(self, c: Conn) -> None:
        """Before the run, a ready connection only receives notices: read and drop them."""
        assert c.sock is not None
        try:
            if c.tls is not None:
                if not recv_plain(c.sock, c.tls, self.scratch):
                    self.close(c)
            elif not c.sock.recv(65536):
                self.close(c)
        except BlockingIOError:
            pass
        except OSError:
            self.close(c)

    def close(self, c: Conn) -> None:
        if c.sock is not None and not c.closed:
            with contextlib.suppress(KeyError, ValueError, OSError):
                self.sel.unregister(c.sock)
            c.sock.close()
        c.closed = True

    def close_all(self) -> None:
        for c in self.conns:
            self.close(c)

    # -- the loop ------------------------------------------------------------------------------

    def wait_for(self, what: str) -> None:
        while True:
            msg = self.pipe.recv()
            if msg[0] == what:
                return

    def control(self) -> None:
        while self.pipe.poll():
            msg = self.pipe.recv()
            if msg[0] == "go":
                self.epoch, warm_ns, self.end_ns = msg[1], msg[2], msg[3]
                self.warm_rel = warm_ns - self.epoch
                self.publishing = True
                if self.params.rate:
                    # The schedule is known: the measured window starts with this message.
                    for c in self.pubs:
                        start = math.ceil((self.warm_rel - c.phase) * self.params.rate / NS)
                        c.first_measured = start
                        if self.params.messages:
                            c.limit = start + self.params.messages
            elif msg[0] == "expect":
                self.set_expected(msg[1])
            elif msg[0] == "stop":
                self.finished = True

    def step(self) -> None:
        timeout = self.pump_timeout if self.publishing else 0.05
        if 0 < timeout < 0.002 and not self.n_subs and self.params.rate:
            # epoll sleeps in whole milliseconds, rounded up: a publisher that reads nothing
            # but acks sleeps the rest exactly, so no message leaves late by the timer's fault.
            time.sleep(timeout)
            timeout = 0.0
        readable = []
        for key, mask in self.sel.select(timeout):
            c = key.data
            if c is None:
                self.control()
                continue
            if c.moving:
                self.advance_move(c, mask)
                continue
            if mask & selectors.EVENT_WRITE:
                self.flush(c)
            if mask & selectors.EVENT_READ:
                readable.append(c)
        if readable:
            self.read_round(readable)
        now = time.monotonic_ns()
        if self.publishing:
            self.pump(now)
        self.periodic(now)

    def can_write(self, c: Conn) -> bool:
        return not (c.pub_done or c.blocked or c.closed or c.moving)

    def periodic(self, now: int) -> None:
        if self.movers:
            for c in [c for c in self.movers if now > c.give_up_at]:
                self.give_up(c)  # even one whose connect hangs
            for c in [c for c in self.waiting if now >= c.retry_at]:
                self.waiting.discard(c)
                self.try_node(c, now)
        if now - self.last_progress_ns > PROGRESS_EVERY * NS:
            self.last_progress_ns = now
            sent = sum(c.seq for c in self.pubs)
            self.pipe.send(("progress", sent, int(self.verifier.delivered.sum())))
        keepalive = self.adapter.keepalive
        if keepalive and now - self.last_keepalive_ns > KEEPALIVE_EVERY * NS:
            self.last_keepalive_ns = now
            for c in self.conns:
                if not c.closed and not c.moving:
                    self.write(c, keepalive)
        if self.publishing and not self.pubs_reported and all(c.pub_done for c in self.pubs):
            self.pubs_reported = True
            self.pipe.send(("pub_done", {c.spec.pub: c.seq for c in self.pubs}))
        if self.expected is not None:
            self.check_complete(now)

    # -- publishing ----------------------------------------------------------------------------

    def pump(self, now: int) -> None:
        rate = self.params.rate
        window = self.window
        every = self.adapter.ack_every
        rel = now - self.epoch
        if rel < 0:
            self.pump_timeout = -rel / NS
            return
        # Sleep in select until the next message is due, or at most 50 ms (acks wake us early).
        wake = 0.05
        for c in self.pubs:
            if self.end_ns and now >= self.end_ns:
                c.pub_done = True  # even one still blocked on a full socket
            if not self.can_write(c):
                continue
            # Several batches per turn of the loop: a publisher sharing its worker with many
            # subscribers would otherwise be held to one batch per receive round.
            for _ in range(BATCHES_PER_TURN):
                if not self.send_batch(c, rel, now):
                    break
                now = time.monotonic_ns()
                rel = now - self.epoch
            if rate:
                # the next one's due time
                wake = min(wake, max(0.0, (c.phase + c.seq * NS / rate - rel) / NS))
            elif self.can_write(c) and c.seq - c.acked * every < window:
                wake = 0.0
        self.pump_timeout = wake

    def send_batch(self, c: Conn, rel: int, now: int) -> bool:
        """Write the next batch of one publisher, as far as its window, schedule and limit
        allow; whether anything was written."""
        rate = self.params.rate
        if not rate and c.first_measured < 0 and rel >= self.warm_rel:
            c.first_measured = c.seq
            if self.params.messages:
                c.limit = c.seq + self.params.messages
        n = min(BATCH, self.window - (c.seq - c.acked * self.adapter.ack_every))
        if rate:
            n = min(n, int((rel - c.phase) * rate / NS) + 1 - c.seq)
        if c.limit >= 0:
            if c.seq >= c.limit:
                c.pub_done = True
                return False
            n = min(n, c.limit - c.seq)
        if n <= 0 or not self.can_write(c):
            return False
        make = c.make
        assert make is not None
        seq = c.seq
        if rate:
            # Stamp each message with the time it was due, not when it left: a generator that
            # falls behind then shows as latency (no coordinated omission).
            step = NS / rate
            phase = c.phase
            data = b"".join([make(s, phase + int(s * step)) for s in range(seq, seq + n)])
        else:
            data = b"".join([make(s, rel) for s in range(seq, seq + n)])
        if c.first_measured >= 0 and seq + n > c.first_measured:
            c.first_ns = c.first_ns or now
        c.seq = seq + n
        if self.resume is not None:
            c.unacked.append((seq, data))  # sent again on another node if its own goes away
        self.write(c, data)
        return True

    def write(self, c: Conn, data: bytes) -> None:
        if c.closed or c.moving:
            return
        if c.tls is not None:
            try:
                data = c.tls.encrypt(data)
            except ssl.SSLError:
                self.lost_connection(c)
                return
        self.send_raw(c, data)

    def send_raw(self, c: Conn, data: bytes) -> None:
        """Bytes as they go on the wire (ciphertext with TLS), after anything still pending."""
        if c.closed or c.moving:
            return
        if c.pending:
            c.pending += data
            return
        assert c.sock is not None
        try:
            sent = c.sock.send(data)
        except BlockingIOError:
            sent = 0
        except OSError:
            self.lost_connection(c)
            return
        if sent < len(data):
            c.pending = data[sent:]
            c.blocked = True
            self.sel.modify(c.sock, selectors.EVENT_READ | selectors.EVENT_WRITE, c)

    def flush(self, c: Conn) -> None:
        if c.closed or c.moving or not c.pending:
            return
        assert c.sock is not None
        try:
            sent = c.sock.send(c.pending)
        except BlockingIOError:
            return
        except OSError:
            self.lost_connection(c)
            return
        c.pending = c.pending[sent:]
        if not c.pending:
            c.blocked = False
            self.sel.modify(c.sock, selectors.EVENT_READ, c)

    def lost_connection(self, c: Conn) -> None:
        if not c.closed and not self.finished:
            self.result.disconnects += 1
            if self.resume is not None and c.token:
                self.move(c)
                return
        if c.sub >= 0:
            self.sub_closed[c.sub] = True
            self.last_check_delivered = -1  # look at completeness again
        self.close(c)
        c.pub_done = True

    # -- moving to another node of a cluster ---------------------------------------------------

    def move(self, c: Conn) -> None:
        """c's node went away: connect to the next node of the list and resume there (a
        subscriber from the last message it got, a publisher sending again what was not
        acknowledged). Nodes that fail are passed over; after a pass where all failed, a
        pause; after RESUME_WITHIN, the connection is given up (what it misses counts lost)."""
        now = time.monotonic_ns()
        if not c.moving:
            c.moving = c.resumed = True
            c.give_up_at = now + int(RESUME_WITHIN * NS)
            c.tries = 0
            self.movers.add(c)
        self.drop_socket(c)
        c.tail, c.pending, c.blocked, c.clear, c.tls = b"", b"", False, None, None
        self.unfinished_pings.discard(c)
        c.node = (c.node + 1) % len(self.addrs)
        c.tries += 1
        if c.tries > len(self.addrs):  # a whole pass failed
            c.tries = 0
            c.retry_at = now + int(RETRY_PAUSE * NS)
            self.waiting.add(c)
            return
        self.try_node(c, now)

    def try_node(self, c: Conn, now: int) -> None:
        if now > c.give_up_at:
            self.give_up(c)
            return
        resume = self.resume
        assert resume is not None
        sub = c.spec.sub >= 0
        c.setup = resume(c.spec.name, c.spec.room, c.token, c.room_seq.last, sub)
        try:
            self.start_connect(c)
        except OSError:
            self.move(c)

    def advance_move(self, c: Conn, mask: int) -> None:
        setup = c.setup
        try:
            done = self.advance_setup(c, mask)
        except (OSError, ssl.SSLError, SetupFailed):
            self.move(c)
            return
        if not done:
            return
        assert setup is not None
        c.moving = False
        self.movers.discard(c)
        self.result.reconnects += 1
        self.last_check_delivered = -1  # look at completeness again
        if c.sub >= 0:
            c.room_seq.last = c.room_seq.field = setup.after
            c.tail = setup.rest
            self.take_replayed(c, setup.replayed)
        if c.unacked:  # whatever is not known to be stored, again, with the same msg_ids
            first = c.unacked[0][0]
            data = b"".join(d for _, d in c.unacked)[(c.acked - first) * c.msg_len :]
            self.write(c, data)

    def take_replayed(self, c: Conn, replayed: Sequence[tuple[int, int]]) -> None:
        """Verify what a moving subscriber read in History pages before it rejoined (not its
        own messages, which it does not otherwise receive); no latency is taken of them."""
        n_pubs = self.verifier.n_pubs
        mine = [(pub, seq) for pub, seq in replayed if pub != c.spec.pub and pub < n_pubs]
        if not mine:
            return
        pubs, seqs = zip(*mine, strict=True)
        subs = np.full(len(mine), c.sub, dtype=np.int64)
        self.verifier.feed(subs, np.array(pubs, dtype=np.int64), np.array(seqs, dtype=np.int64))
        self.last_delivery_ns = time.monotonic_ns()

    def give_up(self, c: Conn) -> None:
        self.drop_socket(c)
        c.moving = False
        self.movers.discard(c)
        self.waiting.discard(c)
        self.result.failed += 1
        self.result.first_error = self.result.first_error or (
            f"no node of the cluster took the connection back within {RESUME_WITHIN:.0f} s"
        )
        c.closed = True
        if c.sub >= 0:
            self.sub_closed[c.sub] = True
            self.last_check_delivered = -1
        c.pub_done = True

    def drop_socket(self, c: Conn) -> None:
        if c.sock is not None:
            with contextlib.suppress(KeyError, ValueError, OSError):
                self.sel.unregister(c.sock)
            c.sock.close()
            c.sock = None

    # -- receiving -----------------------------------------------------------------------------

    def read_round(self, readable: list[Conn]) -> None:
        start = self.rr % len(readable)
        self.rr += 1
        rnd = self.round
        rnd.clear()
        seg_conns: list[Conn] = []
        for c in readable[start:] + readable[:start]:
            if rnd.full:
                break  # the rest stay readable for the next round
            if c.closed or c.moving:
                continue
            assert c.sock is not None
            try:
                if c.tls is None:
                    n = c.sock.recv_into(rnd.slot(c.tail))
                else:
                    n = recv_plain(c.sock, c.tls, rnd.slot(c.tail))
                    out = c.tls.output()
                    if out:
                        self.send_raw(c, out)
            except BlockingIOError:
                continue
            except OSError:
                n = 0
            if n == 0:
                self.lost_connection(c)
                continue
            c.tail = rnd.commit(n, time.monotonic_ns())
            seg_conns.append(c)
        if not seg_conns:
            return
        self.count_acks(seg_conns)
        if self.n_subs:
            times = np.asarray(rnd.times, dtype=np.int64)
            self.take_payloads(rnd.array(), rnd.segments(), seg_conns, times)
        farewell = self.adapter.farewell
        if farewell is not None and not self.result.server_said:
            # A server's last words end its stream: look only near the end of each read.
            for i in range(len(seg_conns)):
                start, end = rnd.fresh[i], rnd.ends[i]
                at = rnd.buf.find(farewell, max(start, end - FAREWELL_WITHIN), end)
                if at >= 0:  # keep the first reason a server gave for closing a connection
                    self.result.server_said = self.adapter.farewell_text(bytes(rnd.buf[at:end]))
                    break
        ping = self.adapter.ping
        if ping is not None:
            hits = rnd.segments_with(ping)
            if self.adapter.answers is None:
                for i in hits:
                    self.write(seg_conns[i], self.adapter.pong)
            else:
                self.answer_pings(seg_conns, hits)

    def answer_pings(self, seg_conns: list[Conn], hits: list[int]) -> None:
        """Pings whose answer repeats their token: the segments with a new PING, and those
        of connections whose last PING line has not ended yet, go to their PingAnswers."""
        rnd = self.round
        todo = set(hits)
        if self.unfinished_pings:
            todo.update(i for i, c in enumerate(seg_conns) if c in self.unfinished_pings)
        for i in sorted(todo):
            c = seg_conns[i]
            answers = c.answers
            assert answers is not None
            reply = answers.feed(*rnd.segment(i))
            if answers.partial is None:
                self.unfinished_pings.discard(c)
            else:
                self.unfinished_pings.add(c)
            if reply:
                self.write(c, reply)

    def count_acks(self, conns: list[Conn]) -> None:
        ack, refused, rnd = self.adapter.ack, self.adapter.refused, self.round
        for i, c in enumerate(conns):
            if c.spec.pub >= 0:
                acks = rnd.count_new(i, ack)
                if acks and c.first_measured >= 0:
                    # A publisher's measured window ends when its last message is acknowledged.
                    c.last_ns = rnd.times[i]
                c.acked += acks
                if c.unacked:
                    self.forget_acked(c)
                if refused is not None:
                    self.result.refused += rnd.count_new(i, refused)

    @staticmethod
    def forget_acked(c: Conn) -> None:
        """Drop the sent batches whose every message is acknowledged."""
        unacked, size, acked = c.unacked, c.msg_len, c.acked
        while unacked and unacked[0][0] + len(unacked[0][1]) // size <= acked:
            unacked.popleft()

    def take_payloads(
        self,
        arr: np.ndarray[Any, Any],
        segs: Segments,
        conns: list[Conn],
        times: np.ndarray[Any, np.dtype[np.int64]],
    ) -> None:
        found = find_payloads(arr, segs)
        if self.resume is not None:
            self.track_rooms(found.seg, found.pos, conns)
        if len(found.seg) == 0:
            return
        seg_sub = np.array([c.sub for c in conns], dtype=np.int64)
        sub = seg_sub[found.seg]
        # Only verified connections, and only publishers that exist: a payload naming another
        # (a corrupted or hostile stream) is not counted, so whatever it replaced shows as lost.
        mine = (sub >= 0) & (found.pub < self.verifier.n_pubs)
        if self.resume is not None:
            # A connection that resumed on another node replays its room from where it was,
            # its own messages included, which it does not otherwise receive.
            own = np.array([c.spec.pub if c.resumed else -1 for c in conns], dtype=np.int64)
            mine &= found.pub != own[found.seg]
        if not mine.all():
            found_seg, sub = found.seg[mine], sub[mine]
            pub, seq, ts = found.pub[mine], found.seq[mine], found.ts[mine]
        else:
            found_seg, pub, seq, ts = found.seg, found.pub, found.seq, found.ts
        self.verifier.feed(sub, pub, seq)
        measured = ts >= self.warm_rel
        if self.publishing and len(sub):
            self.last_delivery_ns = int(times[-1])
        if not measured.any():
            return
        self.hist.record(times[found_seg[measured]] - self.epoch - ts[measured])
        self.measured += np.bincount(sub[measured], minlength=self.n_subs)
        # One segment per connection per round, in time order: per-subscriber first and last
        # delivery times are set from segments, not from every payload.
        seg_hit = np.bincount(found_seg[measured], minlength=len(conns)) > 0
        s, t = seg_sub[seg_hit], times[seg_hit]
        self.last_ns[s] = t
        self.first_ns[s] = np.where(self.first_ns[s] == 0, t, self.first_ns[s])

    def track_rooms(
        self, seg: np.ndarray[Any, Any], pos: np.ndarray[Any, Any], conns: list[Conn]
    ) -> None:
        """Each subscriber's place in its room (see scan.RoomSeq), from this round."""
        last = np.full(len(conns), -1, dtype=np.int64)
        if len(seg):
            ends = np.append(seg[1:] != seg[:-1], True)  # payloads are in buffer order
            last[seg[ends]] = pos[ends]
        rnd = self.round
        for i, c in enumerate(conns):
            if c.spec.sub >= 0:
                c.room_seq.feed(rnd.buf, rnd.starts[i], rnd.ends[i], int(last[i]))

    # -- the end -------------------------------------------------------------------------------

    def set_expected(self, sent_by_pub: list[int]) -> None:
        sent = np.asarray(sent_by_pub, dtype=np.int64)
        expected = np.zeros((self.n_subs, self.verifier.n_pubs), dtype=np.int64)
        clients = {c.index: c for c in self.plan.clients}
        by_sub = {c.sub: c for c in self.plan.clients if c.sub >= 0}
        for i, g in enumerate(self.sub_ids):
            for p in self.plan.expected_pubs(clients[by_sub[g].index]):
                expected[i, p] = sent[p]
        self.expected = expected
        self.last_delivery_ns = max(self.last_delivery_ns, time.monotonic_ns())

    def check_complete(self, now: int) -> None:
        assert self.expected is not None
        delivered = int(self.verifier.delivered.sum())
        if delivered != self.last_check_delivered:
            self.last_check_delivered = delivered
            # A subscriber whose connection is gone will get nothing more: it counts as done.
            done = (self.verifier.unique() >= self.expected).all(axis=1) | self.sub_closed
            if done.all():
                self.finished = True
                return
        live_subs = not self.sub_closed.all()
        idle = now - self.last_delivery_ns > DRAIN_IDLE * NS and not self.movers
        if not live_subs or idle:
            self.finished = True

    def finish(self) -> None:
        r = self.result
        v = self.verifier
        if self.n_subs:
            expected = (
                self.expected
                if self.expected is not None
                else np.zeros((self.n_subs, v.n_pubs), dtype=np.int64)
            )
            unique = v.unique()
            got = np.minimum(unique, expected)
            r.delivered = v.delivered.tolist()
            r.unique = got.sum(axis=1).tolist()
            r.expected = expected.sum(axis=1).tolist()
            # Arrivals beyond what was expected of a publisher count as duplicates.
            r.duplicated = (v.duplicated + (unique - got).sum(axis=1)).tolist()
            r.reordered = v.reordered.tolist()
            r.measured = self.measured.tolist()
            r.first_ns = self.first_ns.tolist()
            r.last_ns = self.last_ns.tolist()
        r.latency_hist = self.hist.to_wire()
        r.sent = [c.seq for c in self.pubs]
        r.pub_measured = [
            max(0, c.seq - c.first_measured) if c.first_measured >= 0 else 0 for c in self.pubs
        ]
        r.pub_first_ns = [c.first_ns for c in self.pubs]
        r.pub_last_ns = [c.last_ns for c in self.pubs]
        self.pipe.send(("result", r))
