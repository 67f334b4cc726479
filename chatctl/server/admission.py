"""Who may connect, and how much a client may do.

A client is an address, grouped by network (IPv4 /32 and IPv6 /64 by default: one customer
usually holds a whole /64), not a connection: its allowances are shared by its connections and
survive reconnects, so reconnecting never buys a fresh burst.

- The descriptor ceiling: `raise_fd_limit` and `connection_ceiling` (less FD_RESERVE), so that
  the connection limit ends in a polite Bye rather than a failed accept.
- `Client`: one address's connections, its `RateMeter` (every frame it sends, replays by their
  size), its connection rate and its room-creation rate.
- `Admission`, sans-IO (time is passed in): the table of clients (bounded: idle clients whose
  allowances are whole again are forgotten), connections in total and per client, why a new
  connection is refused, the refusal log line (at most one a second), and the pause of
  accepts when the process runs out of descriptors.
- `RateMeter`: one `chatctl.ratelimit.TokenBucket` plus strikes (refused frames, decaying at
  the allowed rate; more than a burst of them is flooding).
- `LoginThrottle`: failed logins per address and per account, with growing delays.
- `Refusals`: the short afterlife of refused connections (Bye, half-close, read and discard
  until the client closes), bounded in number and time. The one part that does I/O.

The loop asks `client(ip)` and `admit(client, now)` before it builds a peer, reports
`connected` and `disconnected`, and meters each frame with `client.meter`.
"""

from __future__ import annotations

import enum
import errno
import ipaddress
import itertools
import resource
import selectors

from chatctl.names import MSG_ID_MAX
from chatctl.protocol import Bye, Error, ErrorCode, encode
from chatctl.ratelimit import TokenBucket
from chatctl.server.config import ServerConfig
from chatctl.server.log import ServerLog
from chatctl.server.transport import Transport, drain

# A refused connection gets its Bye, a half-close and this long to close first (see Refusals);
# at most REFUSED_LINGER_MAX linger at once, so a flood of them holds a bounded number of
# descriptors for a bounded time.
REFUSED_GRACE = 1.0
REFUSED_LINGER_MAX = 128
REFUSAL_LOG_EVERY = 1.0  # seconds between "refused" log lines; the ones between are counted
# Descriptors the server needs besides its connections: listeners, selector, wake-up pair,
# the store's files, stdio, and the refused connections lingering.
FD_RESERVE = 64 + REFUSED_LINGER_MAX
ACCEPT_PAUSE = 1.0  # seconds without accepting once the process is out of descriptors
# Clients remembered at most; past it, the longest idle are forgotten first (an idle client
# whose allowances are whole again is forgotten at the next sweep anyway). About 400 bytes each.
MAX_CLIENTS = 100_000
SWEEP_BATCH = 5_000
_OUT_OF_RESOURCES = frozenset((errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM))


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


class Verdict(enum.IntEnum):
    """A rate meter's answer; false only for PASS."""

    PASS = 0
    LIMITED = 1  # refused, in an episode already reported
    LIMITED_FIRST = 2  # refused, the first of an episode: worth one log line
    FLOODING = 3  # refused, over a burst of times: close the connection


# Module constants: the hot path does not pay an enum class lookup per frame.
_PASS = Verdict.PASS
_LIMITED = Verdict.LIMITED
_LIMITED_FIRST = Verdict.LIMITED_FIRST
_FLOODING = Verdict.FLOODING


class RateMeter:
    """`rate` frames a second for one client, up to `burst` at once (a rate of 0: no limit).

    Refused frames are strikes. Strikes decay at the allowed rate over the time between one
    attempt and the next refused one, so only sustained excess builds up to more than a burst
    of them: flooding.
    """

    __slots__ = ("_bucket", "_last", "burst", "strikes")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self._bucket = TokenBucket(rate=rate, capacity=burst, now=now)
        self._last = now  # the time of the last attempt, for the strikes' decay
        self.burst = burst
        self.strikes = 0.0

    def take(self, now: float, cost: float = 1.0) -> Verdict:
        """Spend `cost` for a frame, or say how it is refused."""
        elapsed = now - self._last
        self._last = now
        bucket = self._bucket
        if bucket.take(now, cost):
            return _PASS
        strikes = self.strikes - elapsed * bucket.rate
        first = strikes <= 0.0  # one log line per episode, not one per refused frame
        self.strikes = strikes = (0.0 if first else strikes) + 1.0
        if strikes > self.burst:
            return _FLOODING
        return _LIMITED_FIRST if first else _LIMITED

    def charge(self, now: float, tokens: float) -> None:
        """Work beyond its frame that a request caused (a replay, a long list: the hub's
        `last_cost`), paid after the fact: the bucket may go below zero, so that repeated
        expensive requests are rate-limited too."""
        self._bucket.charge(now, tokens)

    def tokens(self, now: float) -> float:
        return self._bucket.tokens(now)

    def whole(self, now: float) -> bool:
        """Full again, and its strikes decayed: as if it had never been used."""
        bucket = self._bucket
        decayed = self.strikes - (now - self._last) * bucket.rate <= 0.0
        return decayed and bucket.tokens(now) >= bucket.capacity


def client_key(ip: str, ipv4_prefix: int, ipv6_prefix: int) -> str:
    """The network `ip` counts in: "10.1.2.3" at /32, "2001:db8:1:2::/64" for any address of
    that /64. An IPv4-mapped IPv6 address counts as its IPv4 address."""
    try:
        address = ipaddress.ip_address(ip.partition("%")[0])
    except ValueError:
        return ip  # not an IP address (a Unix socket, say): itself
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if isinstance(address, ipaddress.IPv4Address):
        if ipv4_prefix >= 32:
            return str(address)
        return str(ipaddress.IPv4Network((address, ipv4_prefix), strict=False))
    if ipv6_prefix >= 128:
        return str(address)
    return str(ipaddress.IPv6Network((address, ipv6_prefix), strict=False))


class Client:
    """One client address (a network, see `client_key`): its connections and allowances."""

    __slots__ = ("connections", "connects", "key", "meter", "rooms")

    def __init__(self, key: str, config: ServerConfig, now: float) -> None:
        self.key = key
        self.connections = 0
        self.meter = RateMeter(config.rate, config.burst, now)
        self.connects = TokenBucket(
            rate=config.connect_rate, capacity=config.connect_burst, now=now
        )
        self.rooms = TokenBucket(rate=config.room_rate, capacity=config.room_burst, now=now)

    def idle(self, now: float) -> bool:
        """No connection, and every allowance whole again: nothing worth remembering."""
        return (
            self.connections == 0
            and self.meter.whole(now)
            and self.connects.tokens(now) >= self.connects.capacity
            and self.rooms.tokens(now) >= self.rooms.capacity
        )


class Admission:
    """The limits on connections and on what clients send. Sans-IO: time is passed in."""

    def __init__(self, config: ServerConfig, journal: ServerLog) -> None:
        self.config = config
        self.journal = journal
        self.fd_limit = -1  # the soft RLIMIT_NOFILE once `reserve_descriptors` ran
        self.max_connections = config.max_connections  # bounded by fd_limit then
        self.connections = 0
        self.clients: dict[str, Client] = {}  # least recently connected first
        self._refusal_log_at = 0.0  # when the next "refused" log line may be written
        self._refusals_unlogged = 0
        self.accepts_paused_until = 0.0  # 0: accepting

    def reserve_descriptors(self) -> None:
        """Take every descriptor the process may have, and fit max_connections to them."""
        self.fd_limit = raise_fd_limit()
        self.max_connections = connection_ceiling(self.config.max_connections, self.fd_limit)

    def limits(self) -> dict[str, object]:
        """The limits enforced here, as the banner shows them."""
        config = self.config
        return {
            "rate": config.rate,
            "burst": config.burst,
            "client": f"IPv4 /{config.ipv4_prefix}, IPv6 /{config.ipv6_prefix}",
            "max_connections": self.max_connections,
            "max_per_ip": config.max_per_ip,
            "connect_rate": config.connect_rate,
            "connect_burst": config.connect_burst,
            "room_rate": config.room_rate,
            "room_burst": config.room_burst,
            "open_files": self.fd_limit,
        }

    # -- connections ---------------------------------------------------------------------------

    def client(self, ip: str, now: float) -> Client:
        """The client `ip` belongs to, remembered from before when it is known."""
        config = self.config
        key = client_key(ip, config.ipv4_prefix, config.ipv6_prefix)
        clients = self.clients
        found = clients.pop(key, None)
        if found is None:
            if len(clients) >= MAX_CLIENTS:
                self._forget_oldest()
            found = Client(key, config, now)
        clients[key] = found  # most recently connected last
        return found

    def admit(self, client: Client, now: float) -> str | None:
        """Why a new connection of `client` is refused, or None: welcome (and it is counted
        against the client's connection rate)."""
        if self.connections >= self.max_connections:
            return f"the server holds its maximum of {self.max_connections} connections"
        if client.connections >= self.config.max_per_ip:
            return f"{client.key} holds its maximum of {self.config.max_per_ip} connections"
        if not client.connects.take(now):
            return f"{client.key} connects too often (over {self.config.connect_rate:g} a second)"
        return None

    def connected(self, client: Client) -> None:
        self.connections += 1
        client.connections += 1

    def disconnected(self, client: Client) -> None:
        self.connections -= 1
        client.connections -= 1

    def may_create_room(self, client: Client, now: float) -> bool:
        return client.rooms.take(now)

    def sweep(self, now: float) -> int:
        """Forget idle clients whose allowances are whole again, looking at no more than
        SWEEP_BATCH of the least recently connected (the housekeeping timer runs this); how
        many were forgotten."""
        gone = [
            key
            for key, client in itertools.islice(self.clients.items(), SWEEP_BATCH)
            if client.idle(now)
        ]
        for key in gone:
            del self.clients[key]
        return len(gone)

    def _forget_oldest(self) -> None:
        """The table is full: forget the least recently connected client without connections,
        whatever it still owes (it must come back through the connection rate)."""
        for key, client in self.clients.items():
            if client.connections == 0:
                del self.clients[key]
                return

    def refused(self, addr: str, reason: str, now: float) -> None:
        """Log a refusal: one line per REFUSAL_LOG_EVERY seconds, so that a flood of refusals
        is not a flood of log lines. The line says how many were refused since the last one."""
        if now < self._refusal_log_at:
            self._refusals_unlogged += 1
            return
        more = self._refusals_unlogged
        self._refusals_unlogged = 0
        self._refusal_log_at = now + REFUSAL_LOG_EVERY
        also = f" ({more} more refused since the last line)" if more else ""
        self.journal.warning("refused", f"refused {addr}: {reason}{also}", peer=addr, more=more)

    def accept_failed(self, exc: OSError, now: float) -> bool:
        """True when `accept` failed for want of descriptors or memory: stop accepting for
        ACCEPT_PAUSE seconds instead of spinning on a listener that stays readable."""
        if exc.errno not in _OUT_OF_RESOURCES:
            return False
        self.journal.error(
            "accept_paused", f"accept failed ({exc.strerror}); pausing accepts for 1 s"
        )
        self.accepts_paused_until = now + ACCEPT_PAUSE
        return True

    def accepts_resume(self, now: float) -> bool:
        """True once, when accepts paused by `accept_failed` may go on."""
        if self.accepts_paused_until and now >= self.accepts_paused_until:
            self.accepts_paused_until = 0.0
            return True
        return False

    # -- what a connection may send -------------------------------------------------------------

    def over_rate(
        self, verdict: Verdict, addr: str, nick: str, msg_id: str, rid: str = ""
    ) -> bytes | None:
        """What a frame the meter refused gets: the Error frame to send, or None for
        flooding (the connection is to be closed). Logged once per episode."""
        rate = self.config.rate
        if verdict is _LIMITED_FIRST:
            self.journal.warning(
                "rate_limited", f"{addr} ({nick}) is over the rate limit of {rate:g}/s", peer=addr
            )
        if verdict is _FLOODING:
            self.journal.warning(
                "flooding", f"{addr} keeps sending over the rate limit: disconnected"
            )
            return None
        error = Error(
            code=ErrorCode.RATE_LIMITED,
            message=f"over the rate limit of {rate:g} frames a second",
            msg_id=msg_id[:MSG_ID_MAX],
            rid=rid[:MSG_ID_MAX],
        )
        return encode(error)


class LoginThrottle:
    """Failed logins, per key (a client address, an account), with growing delays, sans-IO.

    The first FREE failures of a key cost nothing; after the k-th failure beyond them, the
    key must wait BASE * 2**(k-1) seconds (at most CAP) before its next attempt is even
    checked. A success clears its keys. Entries are forgotten once their delay has passed
    and FORGET seconds more have gone by without a failure; the table holds at most MAX keys
    (the oldest go first), so a flood of made-up account names cannot grow it."""

    FREE = 3
    BASE = 1.0
    CAP = 300.0
    FORGET = 900.0
    MAX = 100_000

    def __init__(self) -> None:
        self._failures: dict[str, tuple[int, float, float]] = {}  # key -> (count, until, last)

    def __len__(self) -> int:
        return len(self._failures)

    def wait(self, keys: tuple[str, ...], now: float) -> float:
        """Seconds before the next attempt for `keys` may be checked; 0 when it may now."""
        longest = 0.0
        for key in keys:
            entry = self._failures.get(key)
            if entry is not None:
                longest = max(longest, entry[1] - now)
        return longest

    def failed(self, keys: tuple[str, ...], now: float) -> None:
        failures = self._failures
        for key in keys:
            count, _, last = failures.pop(key, (0, 0.0, 0.0))
            if now - last > self.FORGET + self.CAP:
                count = 0
            count += 1
            beyond = count - self.FREE
            until = now + min(self.CAP, self.BASE * 2 ** (beyond - 1)) if beyond > 0 else now
            failures[key] = (count, until, now)  # re-inserted: the dict stays oldest first
        while len(failures) > self.MAX:
            del failures[next(iter(failures))]

    def succeeded(self, keys: tuple[str, ...]) -> None:
        for key in keys:
            self._failures.pop(key, None)

    def sweep(self, now: float) -> None:
        """Forget the keys whose last failure is long enough ago (oldest first)."""
        failures = self._failures
        while failures:
            key = next(iter(failures))
            if now - failures[key][2] <= self.FORGET + self.CAP:
                return
            del failures[key]


class Refused:
    """A refused connection, half-closed after its Bye, until `deadline`."""

    __slots__ = ("deadline", "fd", "transport")

    def __init__(self, transport: Transport, deadline: float) -> None:
        self.transport = transport
        self.fd = transport.fileno()
        self.deadline = deadline


class Refusals:
    """Refused connections on their way out. Each gets Bye(TOO_MANY_CONNECTIONS) and the same
    lingering close as any other connection: a client that already sent its Hello would
    otherwise get a reset, which can destroy the Bye. The loop's selector reports them
    readable (`readable`) and its timers end them at their deadline (`close`)."""

    def __init__(self, selector: selectors.BaseSelector, buf: bytearray) -> None:
        self._sel = selector
        self._buf = buf  # the loop's read buffer: what is read here is thrown away
        self._lingering: dict[int, Refused] = {}  # by descriptor, oldest first

    def __len__(self) -> int:
        return len(self._lingering)

    def refuse(self, transport: Transport, reason: str, now: float) -> Refused | None:
        """Say Bye and half-close; the entry to close at its deadline, or None when it is
        closed already. The oldest lingering refusal makes room for this one past the cap."""
        try:
            transport.send(encode(Bye(code=ErrorCode.TOO_MANY_CONNECTIONS, reason=reason)))
            transport.shutdown_write()
        except OSError:
            transport.close()
            return None
        if len(self._lingering) >= REFUSED_LINGER_MAX:
            self.close(next(iter(self._lingering.values())))
        entry = Refused(transport, now + REFUSED_GRACE)
        self._lingering[entry.fd] = entry
        self._sel.register(transport.sock, selectors.EVENT_READ, entry)
        return entry

    def readable(self, entry: Refused) -> None:
        if entry.transport.fileno() < 0:
            return  # closed earlier in this turn, to make room for a newer refusal
        if drain(entry.transport, self._buf):
            self.close(entry, drain_first=False)

    def close(self, entry: Refused, *, drain_first: bool = True) -> None:
        """Close a refused connection; `drain_first` reads what it sent since, so that the
        close is a FIN rather than a reset whenever it can be. Idempotent."""
        transport = entry.transport
        if transport.fileno() < 0:
            return
        del self._lingering[entry.fd]
        if drain_first:
            drain(transport, self._buf)
        try:
            self._sel.unregister(transport.sock)
        except (KeyError, ValueError):
            pass
        transport.close()

    def close_all(self) -> None:
        for entry in list(self._lingering.values()):
            self.close(entry)
