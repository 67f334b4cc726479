"""Password key derivation off the event loop: a fixed pool of threads, never one per client.

scrypt takes ~40 ms of CPU and 16 MiB (passwords.py); run in the loop, one login would stall
every connection that long. `hashlib.scrypt` releases the GIL, so a few threads derive keys
while the loop goes on serving. The loop hands the hub's `Check`s to `submit` and, when woken
(the loop's wake-up socket), takes the outcomes from `done()` back to `Hub.checked`.

Bounds: at most QUEUE_MAX checks wait in all, and PER_CLIENT_MAX per client address (past
them `Busy`, which the client hears as a refused login); memory is POOL threads x 16 MiB.
The threads take checks round-robin across client addresses (FairQueue), so an address that
queues many delays only itself; a login still waiting at the handshake timeout is dropped.
Logins with the same password for the same account while one is being checked wait for that
check instead of queueing their own.

A password verified recently is remembered, as Dovecot's auth cache does: an HMAC of it under
a key that lives only in this process, per stored hash, for CACHE_TTL seconds. A client that
reconnects (or a fleet of bots sharing an account) logs in again in microseconds; a wrong
password is never cached and always pays the full derivation. Changing the password changes
the stored hash, which the cache is keyed on.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import socket
import threading
import time
from collections import deque
from collections.abc import Callable

from chatctl.server.hub import Busy, Check, check_now

POOL = max(1, min(2, os.cpu_count() or 1))
QUEUE_MAX = 4096
# A NAT, or a fleet of bots on one machine, may log in many accounts at once; and these are
# the guesses at many accounts one address can have in flight before failures count.
PER_CLIENT_MAX = 32
CACHE_TTL = 600.0
CACHE_MAX = 10_000


class FairQueue:
    """Checks waiting for a thread, served round-robin across client addresses: an address
    that queues many only waits longer itself, never the others' one login."""

    def __init__(self) -> None:
        self._by_client: dict[str, deque[Check]] = {}  # in turn order
        self._ready = threading.Condition()
        self._closed = False

    def put(self, client: str, check: Check) -> None:
        with self._ready:
            self._by_client.setdefault(client, deque()).append(check)
            self._ready.notify()

    def get(self) -> tuple[Check, str] | None:
        """The next check in turn, waiting for one; None once closed."""
        with self._ready:
            while not self._by_client and not self._closed:
                self._ready.wait()
            if self._closed:
                return None
            client = next(iter(self._by_client))
            checks = self._by_client.pop(client)
            check = checks.popleft()
            if checks:
                self._by_client[client] = checks  # to the back of the turn
            return check, client

    def close(self) -> None:
        with self._ready:
            self._closed = True
            self._ready.notify_all()


class Verifier:
    def __init__(self, wake: socket.socket, client_of: Callable[[int], str]) -> None:
        self._wake = wake
        self._client_of = client_of
        self._jobs = FairQueue()
        self._done: deque[tuple[Check, str, bool | str]] = deque()
        # Checks of one password against one hash in flight, with the other connections
        # waiting for the same answer (many clients of one account logging in at once).
        self._inflight: dict[tuple[str, bytes], list[int]] = {}
        self._waiting: dict[str, int] = {}  # client address -> checks queued or running
        self._queued = 0
        self._key = os.urandom(32)
        self._cache: dict[str, tuple[bytes, float]] = {}  # stored hash -> (HMAC, expiry)
        self._threads = [
            threading.Thread(target=self._work, name=f"chatctl-kdf-{i}", daemon=True)
            for i in range(POOL)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, check: Check) -> bool | str | None:
        """The hub's `offload`: True at once for a password verified recently, else None
        (queued; its outcome comes from `done`). Raises Busy past the bounds."""
        if check.stored:
            mac = self._mac(check.password)
            cached = self._cache.get(check.stored)
            fresh = cached is not None and cached[1] > time.monotonic()
            if fresh and hmac.compare_digest(cached[0], mac):  # type: ignore[index]
                return True
            waiting = self._inflight.get((check.stored, mac))
            if waiting is not None:
                waiting.append(check.cid)
                return None
            self._inflight[(check.stored, mac)] = []
        client = self._client_of(check.cid)
        if self._queued >= QUEUE_MAX:
            if check.stored:
                del self._inflight[(check.stored, mac)]
            raise Busy("the server is busy checking passwords; try again in a few seconds")
        if self._waiting.get(client, 0) >= PER_CLIENT_MAX:
            if check.stored:
                del self._inflight[(check.stored, mac)]
            raise Busy("too many logins at once from your address; try again in a few seconds")
        self._waiting[client] = self._waiting.get(client, 0) + 1
        self._queued += 1
        self._jobs.put(client, check)
        return None

    def done(self) -> list[tuple[int, bool | str]]:
        """The outcomes finished since the last call: (connection, result)."""
        out = []
        while self._done:
            check, client, result = self._done.popleft()
            self._queued -= 1
            left = self._waiting.pop(client, 1) - 1
            if left:
                self._waiting[client] = left
            out.append((check.cid, result))
            if check.stored:
                mac = self._mac(check.password)
                out.extend((cid, result) for cid in self._inflight.pop((check.stored, mac), ()))
                if result is True:
                    self._remember(check.stored, mac)
        return out

    def close(self) -> None:
        self._jobs.close()

    def _remember(self, stored: str, mac: bytes) -> None:
        cache = self._cache
        now = time.monotonic()
        if len(cache) >= CACHE_MAX:
            for old in [s for s, (_, expiry) in cache.items() if expiry <= now]:
                del cache[old]
            while len(cache) >= CACHE_MAX:
                del cache[next(iter(cache))]
        cache.pop(stored, None)
        cache[stored] = (mac, now + CACHE_TTL)

    def _mac(self, password: str) -> bytes:
        return hmac.new(
            self._key, password.encode("utf-8", "surrogatepass"), hashlib.sha256
        ).digest()

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            check, client = job
            try:
                result = check_now(check)
            except Exception:  # a malformed hash is a failed check, never a dead thread
                result = False if check.stored else ""
            self._done.append((check, client, result))
            try:
                self._wake.send(b"\1")
            except OSError:
                pass  # the wake-up buffer is full: a wake-up is pending anyway
