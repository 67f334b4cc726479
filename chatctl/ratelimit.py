"""One sans-IO token bucket for the server's rate limits, the client's pacing and the bot's
reply rate. Time is passed in (seconds, any monotonic origin), so tests drive it without
sleeping and the server reads its clock once per loop turn."""

from __future__ import annotations


class TokenBucket:
    """`rate` tokens a second up to `capacity` (at least 1), starting full; a rate of 0 means
    no limit. `charge` may take the bucket below zero: work paid for after the fact (a long
    replay, say) delays what comes next."""

    __slots__ = ("_stamp", "_tokens", "capacity", "rate")

    def __init__(self, *, rate: float, capacity: float, now: float) -> None:
        self.rate = rate
        self.capacity = max(1.0, capacity)
        self._tokens = self.capacity
        self._stamp = now

    def _refill(self, now: float) -> float:
        if now > self._stamp:
            self._tokens = min(self.capacity, self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now
        return self._tokens

    def take(self, now: float, cost: float = 1.0) -> bool:
        """Spend `cost` tokens if there are that many; False means: not now."""
        if self.rate <= 0:
            return True
        if self._refill(now) >= cost:
            self._tokens -= cost
            return True
        return False

    def charge(self, now: float, cost: float) -> None:
        """Spend `cost` tokens whether or not there are that many."""
        if self.rate > 0:
            self._refill(now)
            self._tokens -= cost

    def tokens(self, now: float) -> float:
        """The tokens available at `now` (negative while in debt)."""
        return self.capacity if self.rate <= 0 else self._refill(now)

    def wait_time(self, now: float, cost: float = 1.0) -> float:
        """Seconds until `take(cost)` would succeed; 0 when it would now."""
        if self.rate <= 0:
            return 0.0
        return max(0.0, (cost - self._refill(now)) / self.rate)
