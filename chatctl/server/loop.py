"""`chatctl serve`: the event loop. One thread, non-blocking sockets, `selectors` (epoll).

The loop only moves bytes, runs timers and manages connections; hub.py decides who receives
what. Each loop turn:

1. read every ready socket (one large `recv`), decode every complete frame, and feed each
   event to the hub, appending the encoded deliveries to the recipients' output queues;
2. `store.flush()`: everything appended this turn becomes durable before any ack leaves;
3. write: one `send` per socket with pending output (EVENT_WRITE is registered only while the
   kernel buffer is full), and disconnect consumers whose queue passed the high-water mark.

`Server` can be driven programmatically (tests run it in a thread): `bind()`, `run()`, and
`stop()`, which is safe from any thread and from a signal handler.
"""

from __future__ import annotations

import errno
import gc
import heapq
import itertools
import os
import resource
import selectors
import signal
import socket
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from chatctl import __version__
from chatctl.errors import ChatctlError
from chatctl.protocol import (
    NEED_DATA,
    Bye,
    ConnectionClosed,
    Error,
    ErrorCode,
    Event,
    Hello,
    History,
    Join,
    Ping,
    Pong,
    RemoteProtocolError,
    Say,
    State,
    Tell,
    Welcome,
    encode,
)
from chatctl.server.config import ServerConfig
from chatctl.server.hub import Delivery, Hub
from chatctl.server.log import ServerLog
from chatctl.server.peer import Batch, Peer
from chatctl.store.base import Store
from chatctl.store.memory import MemoryStore
from chatctl.store.url import MEMORY, open_store

READ_CHUNK = 256 * 1024
ACCEPTS_PER_TURN = 256
CLOSE_GRACE = 2.0  # seconds a closing connection has to take its last bytes
SHUTDOWN_GRACE = 3.0
SHUTDOWN_LINGER = 0.5  # once every Bye is sent, how long to wait for clients to close first
# A refused connection gets its Bye, a half-close and this long to close first (see _refuse);
# at most REFUSED_LINGER_MAX linger at once, so a flood of them holds a bounded number of
# descriptors for a bounded time.
REFUSED_GRACE = 1.0
REFUSED_LINGER_MAX = 128
REFUSAL_LOG_EVERY = 1.0  # seconds between "refused" log lines; the ones between are counted
# Descriptors the server needs besides its connections: listeners, selector, wake-up pair,
# the store's files, stdio, and the refused connections lingering.
FD_RESERVE = 64 + REFUSED_LINGER_MAX
FULL_GC_EVERY = 300.0  # seconds between full garbage collections (see Server.run)
_LISTENER = object()
_WAKEUP = object()
_WELCOME = Welcome.TYPE
_BYE = Bye.TYPE
_READ = selectors.EVENT_READ
_WRITE = selectors.EVENT_WRITE


def raise_fd_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit; the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return soft


def connection_ceiling(requested: int, fd_limit: int) -> int:
    """The connections the server can hold with `fd_limit` descriptors (one each, less its own
    FD_RESERVE), so that the limit ends in a polite Bye rather than a failed accept."""
    if fd_limit == resource.RLIM_INFINITY or fd_limit < 0:
        return requested
    return max(1, min(requested, fd_limit - FD_RESERVE))


def _data_location(store: Store) -> str:
    """Where history lives, for the banner: the resolved directory, or :memory:."""
    if isinstance(store, MemoryStore):
        return MEMORY
    directory = getattr(store, "directory", None)
    if isinstance(directory, Path):
        return str(directory.resolve())
    return type(store).__name__


class _Refused:
    """A connection refused by the connection limits: its Bye is sent and it is half-closed;
    the server reads and discards until the client closes, or until `deadline`."""

    __slots__ = ("deadline", "fd", "sock")

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.deadline = deadline


def _format_addr(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class Server:
    def __init__(
        self, config: ServerConfig, *, journal: ServerLog | None = None, store: Store | None = None
    ) -> None:
        self.config = config
        self.journal = (
            journal if journal is not None else ServerLog(config.log_level, config.log_format)
        )
        self._store = store
        self.addresses: list[tuple[str, int]] = []
        self._listeners: list[socket.socket] = []
        self._sel = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._sel.register(self._wake_r, _READ, _WAKEUP)
        self._stop_requested = False
        self._cids = itertools.count(1)
        self.peers: dict[int, Peer] = {}
        self._per_ip: dict[str, int] = {}
        self._dirty: list[Peer] = []
        self._batches: dict[int, Batch] = {}  # id(recipients) -> this turn's open batch
        self._open_batches: list[Batch] = []
        self._timers: list[tuple[float, int, Peer | _Refused | None]] = []
        self._timer_seq = itertools.count()
        self._buf = bytearray(READ_CHUNK)
        self._view = memoryview(self._buf)
        self._now = time.monotonic()
        self._now_ms = int(time.time() * 1000)
        self._accept_paused_until = 0.0
        self._lingering = 0  # peers half-closed, waiting for the client to close
        self._next_full_gc = 0.0
        self._refused: dict[int, _Refused] = {}  # by descriptor, oldest first
        self._refusal_log_at = 0.0  # when the next "refused" log line may be written
        self._refusals_unlogged = 0
        self.fd_limit = -1  # the soft RLIMIT_NOFILE once bound
        self.max_connections = config.max_connections  # bounded by fd_limit in bind()
        self.hub: Hub | None = None

    # -- life cycle --------------------------------------------------------------------------

    def bind(self) -> list[tuple[str, int]]:
        """Open the listening sockets. Raises ChatctlError for a bad address or a port in use."""
        self.fd_limit = raise_fd_limit()
        self.max_connections = connection_ceiling(self.config.max_connections, self.fd_limit)
        port = self.config.port
        try:
            for host in self.config.hosts:
                for sock in self._listen(host, port):
                    self._listeners.append(sock)
                    bound = sock.getsockname()
                    self.addresses.append((bound[0], bound[1]))
                    port = bound[1]  # with --port 0, every address shares the first one's port
        except BaseException:
            self._close_listeners()
            raise
        return self.addresses

    def _listen(self, host: str, port: int) -> list[socket.socket]:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        except (socket.gaierror, UnicodeError) as exc:
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise ChatctlError(f"cannot listen on {host!r}: bad address ({why})") from None
        seen: set[tuple[object, ...]] = set()
        out: list[socket.socket] = []
        for family, kind, proto, _, sockaddr in infos:
            if sockaddr in seen:
                continue
            seen.add(sockaddr)
            sock = socket.socket(family, kind, proto)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                sock.bind(sockaddr)
                sock.listen(4096)
                sock.setblocking(False)
            except OSError as exc:
                sock.close()
                for s in out:
                    s.close()
                where = _format_addr(str(sockaddr[0]), int(sockaddr[1]))
                raise ChatctlError(f"cannot listen on {where}: {exc.strerror or exc}") from None
            out.append(sock)
        return out

    def stop(self) -> None:
        """Ask the loop to shut down gracefully. Safe from any thread or a signal handler."""
        self._stop_requested = True
        try:
            self._wake_w.send(b"\0")
        except OSError:
            pass  # the wakeup buffer is full (a wakeup is pending anyway) or already closed

    def run(self) -> None:
        """Serve until `stop()`, then shut down gracefully. `bind()` first."""
        if not self._listeners:
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
        self.hub = Hub(config, store)
        for sock in self._listeners:
            self._sel.register(sock, _READ, _LISTENER)
        self.journal.banner(f"chatctl {__version__} server {config.name!r}", self.limits_in_force())
        for host, port in self.addresses:
            self.journal.listening(host, port, _format_addr(host, port))
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
            self._close_listeners()
            for peer in list(self.peers.values()):
                self._abort(peer)
            self._close_all_refused()
            store.close()
            self._sel.close()
            self._wake_r.close()
            self._wake_w.close()

    @property
    def lingering_refusals(self) -> int:
        """Refused connections the server is still closing (at most REFUSED_LINGER_MAX)."""
        return len(self._refused)

    def limits_in_force(self) -> dict[str, object]:
        """Every limit the running server enforces, as the banner shows it (after `run()`
        has opened the store): the exact configured values, not Welcome's rounded ones."""
        config = self.config
        assert self.hub is not None
        return {
            "hosts": ", ".join(config.hosts),
            **self.hub.limits,
            "rate": config.rate,
            "ping_interval": config.ping_interval,
            "idle_timeout": config.idle_timeout,
            "handshake_timeout": config.handshake_timeout,
            "max_connections": self.max_connections,
            "max_per_ip": config.max_per_ip,
            "open_files": self.fd_limit,
            "data": _data_location(self.store),
            "retain_messages": config.retain_messages,
            "retain_age": config.retain_age,
            "trim_interval": config.trim_interval,
        }

    def _close_listeners(self) -> None:
        for sock in self._listeners:
            try:
                self._sel.unregister(sock)
            except (KeyError, ValueError):
                pass
            sock.close()
        self._listeners.clear()

    # -- the loop ----------------------------------------------------------------------------

    def _loop(self) -> None:
        select = self._sel.select
        timers = self._timers
        store = self.store
        while not self._stop_requested:
            timeout = max(timers[0][0] - time.monotonic(), 0.0) if timers else None
            ready = select(timeout)
            self._now = now = time.monotonic()
            self._now_ms = int(time.time() * 1000)
            for key, mask in ready:
                data = key.data
                if type(data) is Peer:
                    if mask & _READ:
                        self._read(data)
                    if mask & _WRITE and not data.scheduled:
                        data.scheduled = True
                        self._dirty.append(data)
                elif data is _LISTENER:
                    self._accept(key.fileobj)  # type: ignore[arg-type]
                elif type(data) is _Refused:
                    self._discard_refused(data)
                else:
                    self._drain_wakeup()
            if timers and timers[0][0] <= now:
                self._run_timers(now)
            store.flush()
            if self._dirty:
                self._write_all()

    def _drain_wakeup(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except OSError:
            pass

    def _schedule(self, when: float, peer: Peer | _Refused | None) -> None:
        """Run a check of `peer` (or the housekeeping, for None; the end of a refused
        connection's grace) at `when`. A peer has one live check at a time: scheduling a new
        one makes the older entry stale."""
        if type(peer) is Peer:
            peer.check_at = when
        heapq.heappush(self._timers, (when, next(self._timer_seq), peer))

    def _run_timers(self, now: float) -> None:
        timers = self._timers
        while timers and timers[0][0] <= now:
            when, _, peer = heapq.heappop(timers)
            if peer is None:
                self._housekeeping(now)
            elif type(peer) is _Refused:
                if peer.sock.fileno() >= 0:
                    self._close_refused(peer)
            elif peer.check_at == when and peer.sock.fileno() >= 0:  # type: ignore[union-attr]
                self._check_peer(peer, now)  # type: ignore[arg-type]

    def _housekeeping(self, now: float) -> None:
        self._schedule(now + self.config.trim_interval, None)
        removed = self.store.trim(self._now_ms)
        if removed:
            self.journal.debug("trim", f"retention removed {removed} messages", removed=removed)
        if self._accept_paused_until and now >= self._accept_paused_until:
            self._resume_accepting()
        if now >= self._next_full_gc:
            self._next_full_gc = now + FULL_GC_EVERY
            gc.collect()

    # -- connections -------------------------------------------------------------------------

    def _accept(self, lsock: socket.socket) -> None:
        config = self.config
        for _ in range(ACCEPTS_PER_TURN):
            try:
                sock, address = lsock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    # Out of descriptors: stop accepting for a moment instead of spinning.
                    self.journal.error(
                        "accept_paused", f"accept failed ({exc.strerror}); pausing accepts for 1 s"
                    )
                    self._pause_accepting()
                return
            ip, port = str(address[0]), int(address[1])
            addr = _format_addr(ip, port)
            refusal = None
            if len(self.peers) >= self.max_connections:
                refusal = f"the server holds its maximum of {self.max_connections} connections"
            elif self._per_ip.get(ip, 0) >= config.max_per_ip:
                refusal = f"{ip} holds its maximum of {config.max_per_ip} connections"
            if refusal is not None:
                self._refuse(sock, addr, refusal)
                continue
            sock.setblocking(False)
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
            peer = Peer(
                next(self._cids),
                sock,
                ip,
                addr,
                self._now,
                max_frame=config.max_frame,
                burst=config.burst,
            )
            self.peers[peer.cid] = peer
            self._per_ip[ip] = self._per_ip.get(ip, 0) + 1
            self._sel.register(sock, _READ, peer)
            self._schedule(self._now + config.handshake_timeout, peer)
            self.journal.debug("connect", f"connection from {addr}", peer=addr, cid=peer.cid)

    def _refuse(self, sock: socket.socket, addr: str, reason: str) -> None:
        """Bye(TOO_MANY_CONNECTIONS), then the same lingering close as any other: a client
        that already sent its Hello would otherwise get a reset, which can destroy the Bye.
        The oldest lingering refusal is closed to make room for a new one past the cap."""
        self._log_refusal(addr, reason)
        try:
            sock.setblocking(False)
            sock.send(encode(Bye(code=ErrorCode.TOO_MANY_CONNECTIONS, reason=reason)))
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            sock.close()
            return
        if len(self._refused) >= REFUSED_LINGER_MAX:
            self._close_refused(next(iter(self._refused.values())))
        entry = _Refused(sock, self._now + REFUSED_GRACE)
        self._refused[entry.fd] = entry
        self._sel.register(sock, _READ, entry)
        self._schedule(entry.deadline, entry)

    def _log_refusal(self, addr: str, reason: str) -> None:
        """One log line per REFUSAL_LOG_EVERY seconds: a flood of refusals is not a flood of
        log lines. The line says how many were refused since the last one."""
        if self._now < self._refusal_log_at:
            self._refusals_unlogged += 1
            return
        more = self._refusals_unlogged
        self._refusals_unlogged = 0
        self._refusal_log_at = self._now + REFUSAL_LOG_EVERY
        also = f" ({more} more refused since the last line)" if more else ""
        self.journal.warning("refused", f"refused {addr}: {reason}{also}", peer=addr, more=more)

    def _discard_refused(self, entry: _Refused) -> None:
        if entry.sock.fileno() < 0:
            return  # closed earlier in this turn (to make room for a newer refusal)
        if self._discard_read(entry.sock):
            self._close_refused(entry, drain=False)

    def _close_refused(self, entry: _Refused, *, drain: bool = True) -> None:
        """Close a refused connection; `drain` first reads what it sent since, so that the
        close is a FIN rather than a reset whenever it can be. Idempotent."""
        if entry.sock.fileno() < 0:
            return
        del self._refused[entry.fd]
        if drain:
            self._discard_read(entry.sock)
        try:
            self._sel.unregister(entry.sock)
        except (KeyError, ValueError):
            pass
        entry.sock.close()

    def _close_all_refused(self) -> None:
        for entry in list(self._refused.values()):
            self._close_refused(entry)

    def _pause_accepting(self) -> None:
        self._accept_paused_until = self._now + 1.0
        for sock in self._listeners:
            try:
                self._sel.unregister(sock)
            except (KeyError, ValueError):
                pass

    def _resume_accepting(self) -> None:
        self._accept_paused_until = 0.0
        for sock in self._listeners:
            try:
                self._sel.register(sock, _READ, _LISTENER)
            except (KeyError, ValueError):
                pass

    def _read(self, peer: Peer) -> None:
        if peer.closing:
            if peer.lingering:
                self._discard_input(peer)
            return
        try:
            n = peer.sock.recv_into(self._buf, READ_CHUNK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._lost(peer, f"connection lost ({exc.strerror or exc})")
            return
        conn = peer.conn
        conn.receive_data(bytes(self._view[:n]) if n else b"")
        try:
            self._handle_frames(peer)
        except RemoteProtocolError as exc:
            self._protocol_error(peer, exc)
        except Exception as exc:  # a bug must cost one connection, never the server
            self.journal.error(
                "internal_error",
                f"internal error handling {peer.addr}: {type(exc).__name__}: {exc}",
                peer=peer.addr,
                traceback=traceback.format_exc(),
            )
            self._end(peer, ErrorCode.SERVER_ERROR, "internal server error")

    def _handle_frames(self, peer: Peer) -> None:
        """Every complete frame buffered, through the hub. Raises RemoteProtocolError."""
        conn = peer.conn
        hub = self.hub
        assert hub is not None
        now_ms = self._now_ms
        while True:
            event = conn.next_event()
            if event is NEED_DATA:
                return
            # Only whole frames count as life: a client dribbling bytes still goes idle.
            peer.last_recv = self._now
            peer.pinged = False
            kind = type(event)
            if kind is Ping:
                self._enqueue(peer, encode(Pong(token=event.token)))  # type: ignore[attr-defined]
                continue
            if kind is Pong:
                continue
            if kind is Bye:
                self._end(peer, None, event.reason[:200] or "quit", clean=True)  # type: ignore[attr-defined]
                return
            if kind is ConnectionClosed:
                self._end(peer, None, "connection lost")
                return
            if kind is not Hello and self.config.rate and not self._take_token(peer, event):
                if peer.ended:
                    return
                continue
            deliveries = hub.handle(peer.cid, event, now_ms)
            if (kind is History or kind is Join) and len(deliveries) > 100:
                # A long replay costs a token per hundred messages, paid after the fact (the
                # bucket may go below zero), so repeated big replays are rate-limited too.
                peer.tokens -= len(deliveries) / 100
            self._dispatch(deliveries)
            if peer.ended:
                return

    def _take_token(self, peer: Peer, event: Event) -> bool:
        """The token bucket: False (and an Error, or a disconnect) when over the rate."""
        config = self.config
        now = self._now
        elapsed = now - peer.refill_at
        peer.refill_at = now
        tokens = peer.tokens + elapsed * config.rate
        tokens = min(tokens, config.burst)
        if tokens >= 1.0:
            peer.tokens = tokens - 1.0
            return True
        peer.tokens = tokens
        # Rejections decay at the allowed rate: only sustained excess builds up to a burst.
        strikes = max(peer.strikes - elapsed * config.rate, 0.0)
        if strikes == 0.0:  # one log line per episode, not one per refused frame
            self.journal.warning(
                "rate_limited",
                f"{peer.addr} ({self._nick(peer)}) is over the rate limit of {config.rate:g}/s",
                peer=peer.addr,
            )
        peer.strikes = strikes = strikes + 1.0
        if strikes > config.burst:
            self.journal.warning(
                "flooding", f"{peer.addr} keeps sending over the rate limit: disconnected"
            )
            self._end(peer, ErrorCode.FLOODING, "flooding")
            return False
        msg_id = event.msg_id if isinstance(event, (Say, Tell)) else ""
        error = Error(
            code=ErrorCode.RATE_LIMITED,
            message=f"over the rate limit of {config.rate:g} messages a second",
            msg_id=msg_id[:64],
        )
        self._enqueue(peer, encode(error))
        return False

    def _dispatch(self, deliveries: list[Delivery]) -> None:
        peers = self.peers
        batches = self._batches
        for d in deliveries:
            to = d.to
            if len(to) == 1:
                kind = d.data[2]
                if kind in (_WELCOME, _BYE):
                    peer = peers.get(to[0])
                    if peer is not None:
                        self._control(peer, d)
                elif to[0] != d.skip:
                    self._enqueue(peers[to[0]], d.data)
                continue
            # A room's frames of this turn share one Batch (see peer.py).
            batch = batches.get(id(to))
            if batch is None or batch.targets is not to or not batch.open:
                batch = self._new_batch(to)
            batch.add(d.data, d.skip)

    def _new_batch(self, to: Sequence[int]) -> Batch:
        batch = Batch(to)
        self._batches[id(to)] = batch
        self._open_batches.append(batch)
        peers = self.peers
        dirty = self._dirty
        for cid in to:
            peer = peers[cid]
            out = peer.out
            if out:
                last = out[-1]
                if type(last) is Batch:
                    # That batch must not grow any more: its later frames would overtake ours.
                    last.open = False
            out.append(batch)
            if not peer.scheduled and not peer.want_write:
                peer.scheduled = True
                dirty.append(peer)
        return batch

    def _close_batches(self) -> None:
        """End of the turn's processing: batches stop growing; their members' queue sizes
        grow by them, and a member over the high-water mark is looked at in the write phase."""
        peers = self.peers
        high_water = self.config.max_output
        for batch in self._open_batches:
            batch.open = False
            size = batch.size
            for cid in batch.targets:
                peer = peers.get(cid)
                if peer is None:
                    continue
                peer.out_size += size
                if peer.out_size > high_water and not peer.scheduled:
                    peer.scheduled = True
                    self._dirty.append(peer)
        self._open_batches.clear()
        self._batches.clear()

    def _control(self, peer: Peer, d: Delivery) -> None:
        """A Welcome or Bye from the hub: these change the connection's protocol state."""
        event = d.event
        if type(event) is Welcome:
            self._enqueue(peer, peer.conn.send(event))
            peer.welcomed = True
            self._schedule_keepalive(peer)
            self.journal.info(
                "hello", f"{peer.addr} is {event.nick}", peer=peer.addr, nick=event.nick
            )
        else:
            bye: Bye = event  # type: ignore[assignment]
            self.journal.info(
                "bye", f"{peer.addr}: {bye.reason}", peer=peer.addr, code=int(bye.code)
            )
            self._end(peer, ErrorCode(bye.code), bye.reason)

    def _enqueue(self, peer: Peer, data: bytes) -> None:
        out = peer.out
        if out and type(out[-1]) is Batch and out[-1].open:
            out[-1].add_private(data, peer.cid)  # keeps its place among the room's frames
        else:
            out.append(data)
        peer.out_size += len(data)
        if not peer.scheduled and (not peer.want_write or peer.out_size > self.config.max_output):
            peer.scheduled = True
            self._dirty.append(peer)

    # -- writing -----------------------------------------------------------------------------

    def _write_all(self) -> None:
        if self._open_batches:
            self._close_batches()
        dirty = self._dirty
        self._dirty = []
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
                    self._sel.modify(peer.sock, _READ, peer)
            elif left > high_water and not peer.closing:
                self._slow_consumer(peer)
            elif not peer.want_write:
                peer.want_write = True
                self._sel.modify(peer.sock, _WRITE if peer.closing else _READ | _WRITE, peer)

    def _slow_consumer(self, peer: Peer) -> None:
        self.journal.warning(
            "slow_consumer",
            f"{peer.addr} ({self._nick(peer)}) reads too slowly: {peer.out_size} bytes queued, "
            f"over the limit of {self.config.max_output}; disconnected",
            peer=peer.addr,
            queued=peer.out_size,
        )
        peer.out.clear()
        peer.out_size = 0
        if peer.aligned:
            self._end(peer, ErrorCode.SLOW_CONSUMER, "slow consumer")
            # Its kernel buffer is full, so the Bye may not get through; try once, then drop.
            try:
                peer.write_once()
            except OSError:
                pass
        else:
            # Part of a frame is already in the kernel: a Bye after it would arrive as garbage
            # inside that frame, so the client only sees the stream end (mid-frame).
            self._end(peer, None, "slow consumer")
        self._abort(peer)

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
    ) -> None:
        """Forget the connection in the hub (its rooms hear why), say Bye when `code` is given,
        and close it once its output has drained (close flushes). Idempotent. At shutdown
        (`forget=False`) the hub is left alone: it is about to be thrown away, and forgetting
        each member of a big room one by one would cost O(members) each."""
        if peer.ended:
            return
        peer.ended = True
        nick = self._nick(peer)
        if forget and self.hub is not None:
            self._dispatch(self.hub.disconnect(peer.cid, reason, self._now_ms, clean=clean))
        if code is not None and peer.conn.state is not State.CLOSED:
            self._enqueue(peer, peer.conn.send(Bye(code=code, reason=reason)))
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
            peer.sock.shutdown(socket.SHUT_WR)
            self._sel.modify(peer.sock, _READ, peer)
        except (OSError, KeyError, ValueError):
            self._abort(peer)
            return
        peer.want_write = False
        peer.lingering = True
        self._lingering += 1

    def _discard_input(self, peer: Peer) -> None:
        if self._discard_read(peer.sock):
            self._abort(peer)

    def _discard_read(self, sock: socket.socket) -> bool:
        """One read of input nobody will look at; True once the client has closed (or the
        connection failed)."""
        try:
            return sock.recv_into(self._buf, READ_CHUNK) == 0
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:
            return True

    def _abort(self, peer: Peer) -> None:
        """Close now, dropping any output. Idempotent."""
        sock = peer.sock
        if sock.fileno() < 0:
            return
        if not peer.ended:
            peer.ended = True
            if self.hub is not None:
                self._dispatch(self.hub.disconnect(peer.cid, "connection closed", self._now_ms))
        peer.closing = True
        if peer.lingering:
            peer.lingering = False
            self._lingering -= 1
        peer.out.clear()
        peer.out_size = 0
        try:
            self._sel.unregister(sock)
        except (KeyError, ValueError):
            pass
        sock.close()
        del self.peers[peer.cid]
        left = self._per_ip[peer.ip] - 1
        if left:
            self._per_ip[peer.ip] = left
        else:
            del self._per_ip[peer.ip]

    # -- shutdown ----------------------------------------------------------------------------

    def _shutdown(self) -> None:
        """Stop accepting, say Bye to everyone, flush the store, let the Byes drain."""
        self._close_listeners()
        self._close_all_refused()
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
            if self._dirty:
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
                if mask & _WRITE and not peer.scheduled:
                    peer.scheduled = True
                    self._dirty.append(peer)
            now = time.monotonic()
        self.journal.info("stopped", "server stopped")


def serve(config: ServerConfig) -> int:
    """Run the server in this (main) thread until SIGINT or SIGTERM. Exit status 0."""
    server = Server(config)
    server.bind()
    stopping = False

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        del frame
        if stopping:
            os._exit(128 + signum)  # a second signal: exit at once
        stopping = True
        server.stop()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        server.run()
    except ChatctlError:
        raise
    except Exception as exc:  # the store failing (a full disk, say): log it all, exit in one line
        server.journal.error(
            "fatal", f"the server stopped: {exc}", traceback=traceback.format_exc()
        )
        raise ChatctlError(f"the server stopped on an internal error: {exc}") from None
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0
