"""`chatctl serve`: the event loop. One thread, non-blocking sockets, `selectors` (epoll).

The loop moves bytes, runs timers and ends connections. The decisions are elsewhere: hub.py
decides who receives what, admission.py who may connect and how much they may send;
transport.py carries a connection's bytes (plain TCP today) and opens the listeners; peer.py
holds a connection's state and output queue. Each loop turn:

1. read every ready connection (one large read), decode every complete frame, and feed each
   event to the hub, appending the encoded deliveries to the recipients' output queues;
2. `store.flush()`: everything appended this turn becomes durable before any ack leaves;
3. write: one `send` per connection with pending output (EVENT_WRITE is registered only while
   the kernel buffer is full), and disconnect consumers whose queue passed the high-water mark.

`Server` can be driven programmatically (tests run it in a thread): `bind()`, `run()`, and
`stop()`, which is safe from any thread and from a signal handler; main.py runs it for the CLI.

Kept as one module: a connection's life (accept, read, write, timers, the ways it
ends) is one state machine over the peer's flags, and splitting it would scatter those flags.
"""

from __future__ import annotations

import functools
import gc
import ipaddress
import itertools
import selectors
import socket
import time
import traceback
from typing import TYPE_CHECKING

from chatctl import __version__
from chatctl.address import format_addr
from chatctl.names import clip_reason
from chatctl.protocol import (
    NEED_DATA,
    Bye,
    Connection,
    ConnectionClosed,
    ErrorCode,
    Event,
    Hello,
    History,
    Join,
    Ping,
    Pong,
    RemoteProtocolError,
    Role,
    Say,
    SpeaksTls,
    State,
    Tell,
    Welcome,
    encode,
)
from chatctl.redis_url import RedisUrl, is_redis, parse_redis_url
from chatctl.server import heap
from chatctl.server.admission import (
    FD_RESERVE,
    REFUSED_LINGER_MAX,
    Admission,
    RateMeter,
    Refusals,
    Refused,
    Verdict,
    connection_ceiling,
    raise_fd_limit,
)
from chatctl.server.batch import Batch
from chatctl.server.config import ServerConfig
from chatctl.server.hub import Delivery, Hub, Origin
from chatctl.server.log import ServerLog
from chatctl.server.outbox import Outbox
from chatctl.server.peer import Peer
from chatctl.server.timers import Timers
from chatctl.server.tls import TlsSetup, TlsTransport, TransportFailed
from chatctl.server.transport import Listeners, drain
from chatctl.server.verifier import Verifier
from chatctl.store.base import Store
from chatctl.store.registry import Registry
from chatctl.store.url import open_registry, open_store

if TYPE_CHECKING:
    from chatctl.server.replication import Replication

# The limits' names where the tests and the CLI have always found them.
__all__ = [
    "FD_RESERVE",
    "REFUSED_LINGER_MAX",
    "Server",
    "connection_ceiling",
    "raise_fd_limit",
]

READ_CHUNK = 256 * 1024
ACCEPTS_PER_TURN = 256
CLOSE_GRACE = 2.0  # seconds a closing connection has to take its last bytes
SHUTDOWN_GRACE = 3.0
SHUTDOWN_LINGER = 0.5  # once every Bye is sent, how long to wait for clients to close first
FULL_GC_EVERY = 300.0  # seconds between full garbage collections (see Server.run)
# Frames one connection may have handled per loop turn: its fair share. The rest of what it
# sent waits in its buffer (and, meanwhile, in the kernel: it is not read) for the next turn.
FRAMES_PER_TURN = 1024
REGISTRY_WAIT_MS = 200
# What a client may send while its password is checked (a Hello and what it pipelined after
# it): past this, it is flooding.
PAUSED_INPUT_MAX = 64 * 1024
# What a client of a cluster node may send while waiting for the answer to a message that is
# on its way through the shared log (a Say pipelined after it never waits).
HELD_INPUT_MAX = 1024 * 1024
_LISTENER = object()
_WAKEUP = object()
_READ = selectors.EVENT_READ
_WRITE = selectors.EVENT_WRITE


class Server:
    def __init__(
        self,
        config: ServerConfig,
        *,
        journal: ServerLog | None = None,
        store: Store | None = None,
        registry: Registry | None = None,
    ) -> None:
        self.config = config
        self._registry = registry
        self.journal = (
            journal if journal is not None else ServerLog(config.log_level, config.log_format)
        )
        self._store = store
        self._listeners = Listeners()
        self.addresses = self._listeners.addresses
        self._sel = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._sel.register(self._wake_r, _READ, _WAKEUP)
        self._stop_requested = False
        self._cids = itertools.count(1)
        self.peers: dict[int, Peer] = {}
        self._outbox = Outbox(self.peers, config.max_output)
        self._enqueue = self._outbox.enqueue
        self._timers: Timers[Peer | Refused | Replication | None] = Timers()
        self._closed = 0  # connections closed since the last housekeeping
        self._more_input: list[Peer] = []  # connections with frames left over from this turn
        self._backlog: set[Peer] = set()  # connections whose kernel buffer is full (want_write)
        self._buf = bytearray(READ_CHUNK)
        self._view = memoryview(self._buf)
        self._now = time.monotonic()
        self._now_ms = int(time.time() * 1000)
        self._lingering = 0  # peers half-closed, waiting for the client to close
        self._next_full_gc = 0.0
        self.admission = Admission(config, self.journal)
        self._refusals = Refusals(self._sel, self._buf)
        self.hub: Hub | None = None
        self.tls: TlsSetup | None = None  # from the configuration, at bind()
        self.cluster: Replication | None = None  # a node of a cluster (--data redis://)

    # -- life cycle --------------------------------------------------------------------------

    def bind(self) -> list[tuple[str, int]]:
        """Open the listening sockets. Raises ChatctlError for a bad address or a port in use."""
        config = self.config
        if self.tls is None:
            from chatctl.server import tls

            self.tls = tls.setup(
                cert=config.tls_cert,
                key=config.tls_key,
                self_signed=config.tls_self_signed,
                data=config.data,
                hosts=config.hosts,
            )
        if self.tls is not None:
            self._listeners.wrap = functools.partial(TlsTransport, context=self.tls.context)
        self.admission.reserve_descriptors()
        return self._listeners.open(config.hosts, config.port)

    def stop(self) -> None:
        """Ask the loop to shut down gracefully. Safe from any thread or a signal handler."""
        self._stop_requested = True
        try:
            self._wake_w.send(b"\0")
        except OSError:
            pass  # the wakeup buffer is full (a wakeup is pending anyway) or already closed

    def run(self) -> None:
        """Serve until `stop()`, then shut down gracefully. `bind()` first."""
        if not self._listeners.socks:
            self.bind()
        config = self.config
        store = self._store
        if store is None:
            store = open_store(
                config.data,
                retain_messages=config.retain_messages,
                retain_age=config.retain_age,
            )
        self.store = store
        registry = self._registry
        if registry is None:
            # A short wait for `chatctl accounts` holding the file's write lock: the loop
            # must not stall long behind it.
            registry = open_registry(config.data, busy_timeout_ms=REGISTRY_WAIT_MS)
        self.registry = registry
        if is_redis(config.data):
            from chatctl.server.clusterhub import ClusterHub

            self.hub = ClusterHub(config, store, registry)
        else:
            self.hub = Hub(config, store, registry)
        self.hub.may_create_room = self._may_create_room
        self.hub.may_register = self._may_create_room  # the same allowance: what persists
        self._verifier = Verifier(self._wake_w, self._client_of)
        self.hub.offload = self._verifier.submit
        if is_redis(config.data):
            self._join_cluster(parse_redis_url(config.data or ""))
        self._listeners.watch(self._sel, _LISTENER)
        self.journal.banner(f"chatctl {__version__} server {config.name!r}", self.limits_in_force())
        for host, port in self.addresses:
            self.journal.listening(host, port, format_addr(host, port))
        for note in store.notes:
            self.journal.warning("store_repaired", note)
        if self.tls is not None:
            self.journal.info("tls", f"speaking TLS only: {self.tls.description}")
        self._schedule(time.monotonic() + config.trim_interval, None)
        thresholds = gc.get_threshold()
        # The history kept in memory is hundreds of thousands of long-lived objects: CPython's
        # automatic full collections would scan them all every few seconds under load (tens
        # of milliseconds of stall each). Young generations stay automatic; the full
        # collection runs from the housekeeping timer, every FULL_GC_EVERY seconds.
        gc.set_threshold(thresholds[0], thresholds[1], 1_000_000_000)
        self._next_full_gc = time.monotonic() + FULL_GC_EVERY
        try:
            self._loop()
            self._shutdown()
        finally:
            gc.set_threshold(*thresholds)
            self._listeners.close(self._sel)
            for peer in list(self.peers.values()):
                self._abort(peer)
            self._refusals.close_all()
            self._verifier.close()
            if self.cluster is not None:
                self.cluster.close()
            registry.close()
            store.close()
            self._sel.close()
            self._wake_r.close()
            self._wake_w.close()

    def _join_cluster(self, url: RedisUrl) -> None:
        """Become a node of the cluster at `url`: read the whole shared log before anyone is
        admitted (raises ChatctlError when Redis cannot be used)."""
        from chatctl.server.clusterhub import ClusterHub
        from chatctl.server.replication import Replication

        assert isinstance(self.hub, ClusterHub)
        cluster = Replication(
            url,
            self.hub,
            self._sel,
            self.journal,
            dispatch=self._dispatch,
            schedule=lambda when: self._timers.schedule(when, cluster),
            resume=self._resume,
            gone=self._node_gone,
        )
        self.cluster = cluster
        try:
            cluster.start()
        except BaseException:
            cluster.close()
            self._verifier.close()
            raise

    def _node_gone(self) -> None:
        """This node lost its place in the cluster (replication.py): every connection goes;
        its client resumes, here (under the node's new id) or at another node."""
        for peer in list(self.peers.values()):
            self._end(peer, ErrorCode.SERVER_SHUTDOWN, "this server lost its cluster: reconnect")

    def _resume(self, peer: Peer) -> None:
        """A connection whose frames waited for the cluster's answers: its turn comes next."""
        if not peer.closing and not peer.more_input:
            peer.more_input = True
            self._more_input.append(peer)

    @property
    def lingering_refusals(self) -> int:
        """Refused connections the server is still closing (at most REFUSED_LINGER_MAX)."""
        return len(self._refusals)

    def limits_in_force(self) -> dict[str, object]:
        """Every limit the running server enforces, as the banner shows it (after `run()`
        has opened the store): the exact configured values, not Welcome's rounded ones."""
        config = self.config
        assert self.hub is not None
        return {
            "hosts": ", ".join(config.hosts),
            "tls": "off" if self.tls is None else self.tls.description,
            **self.hub.limits,
            **self.admission.limits(),
            "total_output": config.total_output,
            "ping_interval": config.ping_interval,
            "idle_timeout": config.idle_timeout,
            "handshake_timeout": config.handshake_timeout,
            "data": self.store.location,
            "retain_messages": config.retain_messages,
            "retain_age": config.retain_age,
            "trim_interval": config.trim_interval,
        }

    # -- the loop ----------------------------------------------------------------------------

    def _loop(self) -> None:
        select = self._sel.select
        timers = self._timers
        outbox = self._outbox
        store = self.store
        cluster = self.cluster
        while not self._stop_requested:
            due = timers.next_at()
            more = self._more_input
            if more:
                ready = select(0.0)
            else:
                ready = select(None if due is None else max(due - time.monotonic(), 0.0))
            self._now = now = time.monotonic()
            self._now_ms = int(time.time() * 1000)
            for key, mask in ready:
                data = key.data
                if type(data) is Peer:
                    if mask & _READ:
                        self._read(data)
                    if mask & _WRITE:
                        outbox.schedule(data)
                elif data is _LISTENER:
                    self._accept(key.fileobj)  # type: ignore[arg-type]
                elif type(data) is Refused:
                    self._refusals.readable(data)
                elif data is _WAKEUP:
                    self._drain_wakeup()
                else:  # a cluster node's connection to Redis (server/replication.py)
                    data.ready(mask)
            if more:
                self._more_input = []
                for peer in more:
                    peer.more_input = False
                    if not peer.closing:
                        self._frames(peer)
            if due is not None and due <= now:
                self._run_timers(now)
            if cluster is not None:
                cluster.flush()
            store.flush()
            self._write_all()

    def _drain_wakeup(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except OSError:
            pass
        hub = self.hub
        assert hub is not None
        for cid, result in self._verifier.done():
            peer = self.peers.get(cid)
            try:
                self._dispatch(hub.checked(cid, result, self._now_ms))
            except Exception as exc:  # the registry failed (locked too long): this login only
                hub.pending.pop(cid, None)
                if peer is not None:
                    self._internal_error(peer, exc)
                continue
            if peer is not None and peer.paused and cid not in hub.pending:
                peer.paused = False
                if not peer.closing:
                    self._frames(peer)  # what it pipelined after the Hello or Register

    def _client_of(self, cid: int) -> str:
        peer = self.peers.get(cid)
        return peer.client.key if peer is not None else ""

    def _schedule(self, when: float, peer: Peer | Refused | Replication | None) -> None:
        """Run a check of `peer` (or the housekeeping, for None; the end of a refused
        connection's grace) at `when`. A peer has one live check at a time: scheduling a new
        one makes the older entry stale."""
        if type(peer) is Peer:
            peer.check_at = when
        self._timers.schedule(when, peer)

    def _run_timers(self, now: float) -> None:
        for when, peer in self._timers.due(now):
            if peer is None:
                self._housekeeping(now)
            elif peer is self.cluster:
                self.cluster.tick(now)
            elif type(peer) is Refused:
                self._refusals.close(peer)
            elif peer.check_at == when and peer.sock.fileno() >= 0:  # type: ignore[union-attr]
                self._check_peer(peer, now)  # type: ignore[arg-type]

    def _housekeeping(self, now: float) -> None:
        self._schedule(now + self.config.trim_interval, None)
        removed = self.store.trim(self._now_ms)
        if removed:
            self.journal.debug("trim", f"retention removed {removed} messages", removed=removed)
        if self.admission.accepts_resume(now):
            self._listeners.watch(self._sel, _LISTENER)
        self.admission.sweep(now)
        if self.hub is not None:
            self.hub.logins.sweep(self._now_ms / 1000)
        if self._closed:  # what they held is free now: give it back to the system
            self._closed = 0
            heap.release()
        if now >= self._next_full_gc:
            self._next_full_gc = now + FULL_GC_EVERY
            gc.collect()

    # -- connections -------------------------------------------------------------------------

    def _accept(self, lsock: socket.socket) -> None:
        config = self.config
        admission = self.admission
        now = self._now
        for _ in range(ACCEPTS_PER_TURN):
            try:
                transport, ip, port = self._listeners.accept(lsock)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if admission.accept_failed(exc, now):
                    self._listeners.watch(self._sel, None)  # until the housekeeping resumes
                return
            addr = format_addr(ip, port)
            client = admission.client(ip, now)
            refusal = admission.admit(client, now)
            if refusal is not None:
                admission.refused(addr, refusal, now)
                entry = self._refusals.refuse(transport, refusal, now)
                if entry is not None:
                    self._schedule(entry.deadline, entry)
                continue
            peer = Peer(
                next(self._cids),
                transport,
                ip,
                addr,
                now,
                max_frame=config.max_frame,
                client=client,
            )
            self.peers[peer.cid] = peer
            if isinstance(transport, TlsTransport):
                transport.on_backlog = functools.partial(self._tls_backlog, peer)
            admission.connected(client)
            self._sel.register(peer.sock, _READ, peer)
            self._schedule(now + config.handshake_timeout, peer)
            self.journal.debug("connect", f"connection from {addr}", peer=addr, cid=peer.cid)

    def _tls_backlog(self, peer: Peer) -> None:
        """A TLS read made ciphertext the kernel did not take (a handshake step): a write turn
        with an empty item, which flushes it and keeps EVENT_WRITE until it has gone."""
        if peer.lingering or peer.sock.fileno() < 0:
            return
        if not peer.out:
            peer.out.append(b"")
            peer.out_size = max(peer.out_size, 1)
        self._outbox.schedule(peer)

    def _read(self, peer: Peer) -> None:
        if peer.closing:
            if peer.lingering and drain(peer.transport, self._buf):
                self._abort(peer)
            return
        if peer.more_input:
            return  # what it sent earlier comes first (see FRAMES_PER_TURN)
        try:
            n = peer.transport.recv_into(self._buf, READ_CHUNK)
        except (BlockingIOError, InterruptedError):
            return
        except TransportFailed as exc:  # a TLS handshake failed: one line, nobody else hears
            self.journal.warning("tls", f"{peer.addr}: {exc}", peer=peer.addr)
            self._abort(peer)
            return
        except OSError as exc:
            self._lost(peer, f"connection lost ({exc.strerror or exc})")
            return
        peer.conn.receive_data(bytes(self._view[:n]) if n else b"")
        if peer.paused:
            if peer.conn.buffered > PAUSED_INPUT_MAX:
                self._end(peer, ErrorCode.FLOODING, "flooding while its login was checked")
            return
        self._frames(peer)

    def _frames(self, peer: Peer) -> None:
        try:
            self._handle_frames(peer)
        except RemoteProtocolError as exc:
            self._protocol_error(peer, exc)
        except Exception as exc:  # a bug must cost one connection, never the server
            self._internal_error(peer, exc)

    def _internal_error(self, peer: Peer, exc: Exception) -> None:
        self.journal.error(
            "internal_error",
            f"internal error handling {peer.addr}: {type(exc).__name__}: {exc}",
            peer=peer.addr,
            traceback=traceback.format_exc(),
        )
        self._end(peer, ErrorCode.SERVER_ERROR, "internal server error")

    def _handle_frames(self, peer: Peer) -> None:
        """The complete frames buffered, through the hub, up to the connection's share of the
        turn. Every frame is metered but a Hello and the Bye. Raises RemoteProtocolError."""
        conn = peer.conn
        hub = self.hub
        assert hub is not None
        now = self._now
        now_ms = self._now_ms
        meter = peer.meter if self.config.rate else None
        replay_room = self.config.max_output // 2
        order = None if self.cluster is None else self.cluster.order
        waiting = None if order is None else order.waiting
        # A standalone server hands the hub a run of Says at once (Hub.handle_says): before
        # anything else the connection sent after them, and before this returns.
        says: list[Say] | None = [] if order is None else None
        budget = FRAMES_PER_TURN
        try:
            while budget > 0:
                if says is not None:
                    run = conn.next_says(budget)
                    if run:
                        budget -= len(run)
                        peer.last_recv = now
                        peer.pinged = False
                        if meter is None:
                            says += run
                        elif self._metered_says(peer, run, says, meter, now_ms):
                            return  # it ended
                        continue
                budget -= 1
                if (
                    waiting
                    and peer.cid in waiting
                    and (conn.next_frame_type() != Say.TYPE or not peer.welcomed)
                ):
                    # A node of a cluster answers in order: what follows a request still on its
                    # way through the log waits for its answer (answers.py), but a welcomed
                    # connection's Says (their answers are held behind it).
                    if conn.buffered > HELD_INPUT_MAX:
                        self._end(
                            peer, ErrorCode.FLOODING, "flooding while its messages were stored"
                        )
                    else:
                        order.stalled(peer.cid, peer)  # type: ignore[union-attr]
                    return
                event = conn.next_event()
                if event is NEED_DATA:
                    return
                # Only whole frames count as life: a client dribbling bytes still goes idle.
                peer.last_recv = now
                peer.pinged = False
                kind = type(event)
                if says is not None:
                    if kind is Say and not event.rid:  # type: ignore[attr-defined]
                        # One next_says passed over (the state was being looked up anew).
                        say: Say = event  # type: ignore[assignment]
                        if meter is None:
                            says.append(say)
                        elif self._metered_says(peer, [say], says, meter, now_ms):
                            return
                        continue
                    if says:  # what came after them is answered after them
                        self._dispatch(hub.handle_says(peer.cid, says, now_ms))
                        says.clear()
                        if peer.ended:
                            return
                if kind is Bye:
                    reason = clip_reason(event.reason)  # type: ignore[attr-defined]
                    self._end(peer, None, reason or "quit", clean=True)
                    return
                if kind is ConnectionClosed:
                    self._end(peer, None, "connection lost")
                    return
                if meter is not None and kind is not Hello:
                    verdict = meter.take(now)
                    if verdict:
                        self._over_rate(peer, event, verdict)
                        if peer.ended:
                            return
                        continue
                if kind is Ping:
                    self._enqueue(peer, encode(Pong(token=event.token)))  # type: ignore[attr-defined]
                    continue
                if kind is Pong:
                    continue
                if kind is Say and not event.rid:  # type: ignore[attr-defined]
                    deliveries = hub.handle_say(peer.cid, event, now_ms)  # type: ignore[arg-type]
                elif kind is Hello:
                    origin = Origin(peer.addr, self._secure(peer), peer.client.key)
                    deliveries = hub.handle(peer.cid, event, now_ms, origin=origin)
                elif kind is History or kind is Join:
                    # A replay is cut to what the connection's queue can still take, before any
                    # of it is read: a pipeline of big requests cannot make its own reader huge.
                    room = max(replay_room - peer.out_size, 0)
                    deliveries = hub.handle(peer.cid, event, now_ms, replay_room=room)
                else:
                    deliveries = hub.handle(peer.cid, event, now_ms)
                if meter is not None and hub.last_cost > 1.0:
                    meter.charge(now, hub.last_cost - 1.0)
                if waiting and deliveries and peer.cid in waiting:
                    deliveries = order.hold(peer.cid, deliveries)  # type: ignore[union-attr]
                self._dispatch(deliveries)
                if peer.ended:
                    return
                if hub.pending and peer.cid in hub.pending:
                    peer.paused = True  # until its password is checked (_drain_wakeup)
                    return
        finally:
            if says:
                self._dispatch(hub.handle_says(peer.cid, says, now_ms))
        peer.more_input = True  # its share of this turn is used: the rest in the next one
        self._more_input.append(peer)

    def _metered_says(
        self, peer: Peer, run: list[Say], says: list[Say], meter: RateMeter, now_ms: int
    ) -> bool:
        """Add the Says of `run` the rate meter lets through to `says`; one it refuses is
        answered after the Says before it. Whether that ended the connection."""
        now = self._now
        for say in run:
            verdict = meter.take(now)
            if not verdict:
                says.append(say)
                continue
            if says:
                assert self.hub is not None
                self._dispatch(self.hub.handle_says(peer.cid, says, now_ms))
                says.clear()
            self._over_rate(peer, say, verdict)
            if peer.ended:
                return True
        return False

    @staticmethod
    def _secure(peer: Peer) -> bool:
        """Whether a password may travel on this connection: TLS, or loopback."""
        if isinstance(peer.transport, TlsTransport):
            return True
        try:
            return ipaddress.ip_address(peer.ip.partition("%")[0]).is_loopback
        except ValueError:
            return False

    def _may_create_room(self, cid: int) -> bool:
        peer = self.peers.get(cid)
        return peer is None or self.admission.may_create_room(peer.client, self._now)

    def _over_rate(self, peer: Peer, event: Event, verdict: Verdict) -> None:
        """A frame the rate meter refused: an Error for a request (a Ping or a Pong is just
        dropped: an Error would be an amplification), or the end for a flooder."""
        if verdict is not Verdict.FLOODING and type(event) in (Ping, Pong):
            return
        msg_id = event.msg_id if isinstance(event, (Say, Tell)) else ""
        rid: str = getattr(event, "rid", "")
        error = self.admission.over_rate(verdict, peer.addr, self._nick(peer), msg_id, rid)
        if error is None:
            self._end(peer, ErrorCode.FLOODING, "flooding")
        else:
            self._enqueue(peer, error)

    def _dispatch(self, deliveries: list[Delivery]) -> None:
        peers = self.peers
        outbox = self._outbox
        for d in deliveries:
            to = d.to
            if len(to) == 1:
                if d.control is not None:
                    peer = peers.get(to[0])
                    if peer is not None:
                        self._control(peer, d.control, d.data)
                elif to[0] != d.skip:
                    outbox.enqueue(peers[to[0]], d.data)
            else:
                outbox.to_room(to, d.data, d.skip)

    def _control(self, peer: Peer, event: Welcome | Bye, data: bytes) -> None:
        """A Welcome or Bye from the hub, `data` its frame: these change the connection's
        protocol state (told without encoding the event again)."""
        if type(event) is Welcome:
            peer.conn.sent(event)
            self._enqueue(peer, data)
            peer.welcomed = True
            self._schedule_keepalive(peer)
            self.journal.info(
                "hello", f"{peer.addr} is {event.nick}", peer=peer.addr, nick=event.nick
            )
        else:
            bye: Bye = event  # type: ignore[assignment]
            if bye.code == ErrorCode.LOGIN_FAILED:
                self.journal.warning("login_failed", f"{peer.addr}: {bye.reason}", peer=peer.addr)
            else:
                self.journal.info(
                    "bye", f"{peer.addr}: {bye.reason}", peer=peer.addr, code=int(bye.code)
                )
            self._end(peer, ErrorCode(bye.code), bye.reason, bye=(bye, data))

    # -- writing -----------------------------------------------------------------------------

    def _write_all(self) -> None:
        # Writing can end connections, and their rooms then hear of it: those notices are
        # written in this turn too, in another round.
        while True:
            while dirty := self._outbox.take_dirty():
                self._write(dirty)
            if not (self._backlog and self._limit_total_output()):
                return

    def _write(self, dirty: list[Peer]) -> None:
        high_water = self.config.max_output
        for peer in dirty:
            peer.scheduled = False
            if not peer.out or peer.sock.fileno() < 0:
                continue
            try:
                left = peer.write_once()
            except OSError as exc:
                self._lost(peer, f"connection lost ({exc.strerror or exc})")
                continue
            if left == 0:
                if peer.closing:
                    self._linger(peer)
                elif peer.want_write:
                    peer.want_write = False
                    self._backlog.discard(peer)
                    self._sel.modify(peer.sock, _READ, peer)
            elif left > high_water and not peer.closing:
                self._slow_consumer(peer)
            elif not peer.want_write:
                peer.want_write = True
                self._backlog.add(peer)
                self._sel.modify(peer.sock, _WRITE if peer.closing else _READ | _WRITE, peer)

    def _limit_total_output(self) -> bool:
        """Past `total_output` queued for all connections together, the biggest queues go
        first, as slow consumers: whoever reads slowest holds the most. True when some
        went (their rooms have notices to write)."""
        cap = self.config.total_output
        total = sum(peer.out_size for peer in self._backlog)
        if total <= cap:
            return False
        for peer in sorted(self._backlog, key=lambda p: p.out_size, reverse=True):
            if total <= cap:
                break
            total -= peer.out_size
            if not peer.closing:
                self._slow_consumer(peer, shed=True)
            else:
                self._abort(peer)
        return True

    def _slow_consumer(self, peer: Peer, *, shed: bool = False) -> None:
        limit = (
            f"the server's output is over its limit of {self.config.total_output} bytes"
            if shed
            else f"over the limit of {self.config.max_output}"
        )
        self.journal.warning(
            "slow_consumer",
            f"{peer.addr} ({self._nick(peer)}) reads too slowly: {peer.out_size} bytes queued, "
            f"{limit}; disconnected",
            peer=peer.addr,
            queued=peer.out_size,
        )
        # What it held is freed now, but for the rest of a frame the transport has taken part
        # of (one frame at most, copied out of the joined chunk that holds it): the Bye must
        # come after the end of that frame, never inside it.
        out = peer.out
        keep = peer.frame_left
        if keep:
            head = out[0]  # the rest of the partial send, which starts with that frame's end
            assert not isinstance(head, Batch)
            out[:] = [bytes(head[:keep])]
        else:
            out.clear()
        peer.out_size = keep
        # The Bye follows: it goes out if the client reads within the close grace, and the
        # connection is aborted at its end otherwise.
        self._end(peer, ErrorCode.SLOW_CONSUMER, "slow consumer")

    # -- timers: handshake, keepalive, closing -------------------------------------------------

    def _schedule_keepalive(self, peer: Peer) -> None:
        config = self.config
        interval = config.ping_interval or config.idle_timeout
        if interval:
            self._schedule(peer.last_recv + interval, peer)

    def _check_peer(self, peer: Peer, now: float) -> None:
        config = self.config
        if peer.closing:
            if now >= peer.born:  # `born` holds the close deadline once closing
                self._abort(peer)
            else:
                self._schedule(peer.born, peer)
            return
        if not peer.welcomed:
            deadline = peer.born + config.handshake_timeout
            if now >= deadline:
                self.journal.warning(
                    "handshake_timeout",
                    f"{peer.addr} sent no Hello within {config.handshake_timeout:g} s",
                    peer=peer.addr,
                )
                self._end(peer, ErrorCode.HANDSHAKE_TIMEOUT, "handshake timeout")
            else:
                self._schedule(deadline, peer)
            return
        silent = now - peer.last_recv
        if config.idle_timeout and silent >= config.idle_timeout:
            self.journal.info(
                "idle_timeout",
                f"{peer.addr} ({self._nick(peer)}) silent for {silent:.0f} s",
                peer=peer.addr,
            )
            self._end(peer, ErrorCode.IDLE_TIMEOUT, "idle timeout")
            return
        if config.ping_interval and silent >= config.ping_interval:
            if not peer.pinged:
                peer.pinged = True
                self._enqueue(peer, encode(Ping(token=int(now * 1000) & 0xFFFFFFFF)))
            next_check = peer.last_recv + (config.idle_timeout or 2 * config.ping_interval)
        else:
            next_check = peer.last_recv + (config.ping_interval or config.idle_timeout)
        self._schedule(max(next_check, now + 0.05), peer)

    # -- ending connections --------------------------------------------------------------------

    def _nick(self, peer: Peer) -> str:
        return (self.hub.nick_of(peer.cid) if self.hub else "") or "-"

    def _protocol_error(self, peer: Peer, exc: RemoteProtocolError) -> None:
        if isinstance(exc, SpeaksTls):  # one line, and the close: it cannot read a Bye
            self.journal.warning(
                "tls",
                f"{peer.addr}: a TLS client on a plaintext port (it should use chat://)",
                peer=peer.addr,
            )
            self._abort(peer)
            return
        self.journal.warning(
            "protocol_error",
            f"{peer.addr} ({self._nick(peer)}) broke the protocol: {exc}",
            peer=peer.addr,
            code=int(exc.code),
        )
        self._end(peer, exc.code, f"protocol error: {exc}")

    def _lost(self, peer: Peer, reason: str) -> None:
        self._end(peer, None, reason)
        self._abort(peer)

    def _end(
        self,
        peer: Peer,
        code: ErrorCode | None,
        reason: str,
        *,
        clean: bool = False,
        forget: bool = True,
        bye: tuple[Bye, bytes] | None = None,
    ) -> None:
        """Forget the connection in the hub (its rooms hear why), say Bye when `code` is given
        (`bye`: the hub's, already encoded), and close it once its output has drained (close
        flushes). Idempotent. At shutdown (`forget=False`) the hub is left alone: it is about
        to be thrown away, and forgetting each member of a big room one by one would cost
        O(members) each."""
        if peer.ended:
            return
        peer.ended = True
        nick = self._nick(peer)
        if forget and self.hub is not None:
            self._dispatch(self.hub.disconnect(peer.cid, reason, self._now_ms, clean=clean))
        if code is not None and peer.conn.state is not State.CLOSED:
            if bye is None:
                self._enqueue(peer, peer.conn.send(Bye(code=code, reason=reason)))
            else:
                peer.conn.sent(bye[0])
                self._enqueue(peer, bye[1])
        self.journal.info(
            "disconnect",
            f"{peer.addr} ({nick}) disconnected: {reason}",
            peer=peer.addr,
            reason=reason,
        )
        self._close(peer)

    def _close(self, peer: Peer) -> None:
        """Stop reading; close once the output queue has drained, or after a grace period."""
        if peer.closing:
            return
        peer.closing = True
        peer.born = self._now + CLOSE_GRACE  # reused as the close deadline
        self._schedule(peer.born, peer)
        if not peer.out:
            self._linger(peer)
        elif peer.want_write:  # stop reading; a scheduled peer is re-registered when written
            self._sel.modify(peer.sock, _WRITE, peer)

    def _linger(self, peer: Peer) -> None:
        """Everything is sent: half-close, then read and discard until the client closes too
        (or the close deadline). Closing with unread input would send a reset, which can
        destroy our last frames (the Bye) before a client that is still sending reads them."""
        if peer.lingering:
            return
        try:
            peer.transport.shutdown_write()
            self._sel.modify(peer.sock, _READ, peer)
        except (OSError, KeyError, ValueError):
            self._abort(peer)
            return
        peer.want_write = False
        self._backlog.discard(peer)
        peer.lingering = True
        self._lingering += 1

    def _abort(self, peer: Peer) -> None:
        """Close now, dropping any output. Idempotent."""
        transport = peer.transport
        if transport.fileno() < 0:
            return
        if not peer.ended:
            peer.ended = True
            if self.hub is not None:
                self._dispatch(self.hub.disconnect(peer.cid, "connection closed", self._now_ms))
        peer.closing = True
        self._backlog.discard(peer)
        if peer.lingering:
            peer.lingering = False
            self._lingering -= 1
        peer.out.clear()
        peer.out_size = 0
        try:
            self._sel.unregister(peer.sock)
        except (KeyError, ValueError):
            pass
        transport.close()
        # Its timers still hold the peer for up to --idle-timeout: drop what it had buffered
        # (a flooder's unread input is up to a read's worth) now, not when they go off.
        peer.conn = Connection(Role.SERVER)
        self._closed += 1
        del self.peers[peer.cid]
        self.admission.disconnected(peer.client)

    # -- shutdown ----------------------------------------------------------------------------

    def _shutdown(self) -> None:
        """Stop accepting, say Bye to everyone, flush the store, let the Byes drain."""
        self._listeners.close(self._sel)
        self._refusals.close_all()
        count = len(self.peers)
        self.journal.info("shutdown", f"shutting down: saying goodbye to {count} connections")
        self._now_ms = int(time.time() * 1000)
        for peer in list(self.peers.values()):
            # No "dropped" notices: everyone is leaving, and N^2 notices would only delay it.
            self._end(peer, ErrorCode.SERVER_SHUTDOWN, "server shutting down", forget=False)
        self.store.flush()
        now = time.monotonic()
        deadline = now + SHUTDOWN_GRACE
        while self.peers and now < deadline:
            self._write_all()
            if self._lingering == len(self.peers):
                # Every Bye is out: give clients a moment to close first, then go.
                deadline = min(deadline, now + SHUTDOWN_LINGER)
            for key, mask in self._sel.select(max(deadline - now, 0.0)):
                peer = key.data
                if type(peer) is not Peer:
                    continue
                if mask & _READ:
                    self._read(peer)
                if mask & _WRITE:
                    self._outbox.schedule(peer)
            now = time.monotonic()
        self.journal.info("stopped", "server stopped")
