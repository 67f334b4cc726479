"""manners.Manners against a model: any triggers from any nicks in any channels, at any pace,
with the bot's replies going out at any latency, and time passing.

The model states the rules plainly, from the whole history rather than from running state:
- a trigger is *fast* when the bot's latest message in that channel to that nick, or to
  everyone there, went out less than `reaction_time` before it;
- a nick's streak is its fast triggers in a row since its last one at human speed; at
  `max_streak` it is ignored in that channel until quiet for `loop_window`;
- replies are paid from a token bucket; a question that finds no token (or a queue) waits,
  first come first served, up to the queue's limit; a cadence turn is skipped;
- a question held back is said so: once per guard episode per nick, once per backlog per
  channel.
And properties: nobody who speaks at human speed is ever held by the loop guard; a question
is never dropped without a notice in its episode; the rate is never exceeded.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from chatctl.bot.manners import Ask, Hold, Manners, Verdict

CHANNELS = ["#lobby", "#dev", "@carol"]
NICKS = ["alice", "Alice", "bob", "sage"]


@dataclass
class Partner:
    streak: int = 0
    guarded_at: float | None = None
    told: bool = False


@dataclass
class Model:
    reaction_time: float
    max_streak: int
    loop_window: float
    rate: float  # per minute
    burst: int
    queue_limit: int
    said: list[tuple[str, str | None, float]] = field(default_factory=list)
    partners: dict[tuple[str, str], Partner] = field(default_factory=dict)
    tokens: float = 0.0
    stamp: float = 0.0
    queue: list[tuple[int, Ask, float]] = field(default_factory=list)
    told_busy: set[str] = field(default_factory=set)
    told_full: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.tokens = float(self.burst)

    def fast(self, channel: str, nick: str, now: float) -> bool:
        times = [
            t
            for c, to, t in self.said
            if c == channel and (to is None or to.casefold() == nick.casefold())
        ]
        return bool(times) and now - max(times) < self.reaction_time

    def take(self, now: float) -> bool:
        if self.rate <= 0:
            return True
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate / 60)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False

    def taken(self, ask: Ask, now: float) -> None:
        self.said.append((ask.channel, ask.nick if ask.question else None, now))

    def offer(self, item: int, ask: Ask, now: float) -> tuple[str, Hold | None, bool]:
        """(what happens: "now", "later" or "held"; why; whether the bot says so)."""
        partner = None
        streak = 0
        if ask.nick is not None:
            partner = self.partners.setdefault((ask.channel, ask.nick.casefold()), Partner())
            if partner.guarded_at is not None:
                if now - partner.guarded_at <= self.loop_window:
                    partner.guarded_at = now
                    return self.loop(ask, partner)
                partner.guarded_at, partner.streak, partner.told = None, 0, False
            if self.fast(ask.channel, ask.nick, now):
                streak = partner.streak + 1
            else:
                partner.streak = 0
            if streak >= self.max_streak:
                partner.guarded_at = now
                return self.loop(ask, partner)
        if self.queue or not self.take(now):
            if not ask.question:
                return "held", Hold.RATE, False
            if len(self.queue) >= self.queue_limit:
                tell = ask.channel not in self.told_full
                self.told_full.add(ask.channel)
                return "held", Hold.FULL, tell
            self.queue.append((item, ask, now))
            if partner is not None:
                partner.streak = streak
            tell = ask.channel not in self.told_busy
            self.told_busy.add(ask.channel)
            return "later", Hold.RATE, tell
        if partner is not None:
            partner.streak = streak
        self.taken(ask, now)
        return "now", None, False

    def loop(self, ask: Ask, partner: Partner) -> tuple[str, Hold | None, bool]:
        tell = ask.question and not partner.told
        partner.told = partner.told or tell
        return "held", Hold.LOOP, tell

    def release(self, now: float) -> list[int]:
        out = []
        while self.queue and self.take(now):
            item, ask, _ = self.queue.pop(0)
            self.taken(ask, now)
            out.append(item)
        if out:
            left = {ask.channel for _, ask, _ in self.queue}
            self.told_busy &= left
            self.told_full &= left
        return out


class MannersMachine(RuleBasedStateMachine):
    @initialize(
        reaction_time=st.sampled_from([0.5, 1.5]),
        max_streak=st.integers(1, 3),
        rate=st.sampled_from([0.0, 6.0, 30.0]),
        burst=st.integers(1, 3),
        queue_limit=st.integers(1, 4),
    )
    def start(
        self, reaction_time: float, max_streak: int, rate: float, burst: int, queue_limit: int
    ) -> None:
        self.real: Manners[int] = Manners(
            reaction_time=reaction_time,
            max_streak=max_streak,
            loop_window=10.0,
            queue_limit=queue_limit,
            reply_rate=rate,
            burst=burst,
            now=0.0,
        )
        self.model = Model(
            reaction_time=reaction_time,
            max_streak=max_streak,
            loop_window=10.0,
            queue_limit=queue_limit,
            rate=rate,
            burst=burst,
        )
        self.now = 0.0
        self.next_item = 0
        self.pending: list[Ask] = []  # answers taken, their reply not sent yet
        self.replies: list[float] = []  # when each turn was taken (paid for)
        self.released: list[int] = []
        self.queued: list[int] = []
        # Per (channel, nick): whether every trigger so far came at human speed.
        self.human: dict[tuple[str, str], bool] = {}

    def _spoke(self, channel: str, to: str | None) -> None:
        self.real.spoke(channel, to, self.now)
        self.model.said.append((channel, to, self.now))

    @rule(
        channel=st.sampled_from(CHANNELS),
        nick=st.sampled_from(NICKS),
        question=st.booleans(),
        gap=st.floats(0.0, 4.0),
    )
    def trigger(self, channel: str, nick: str, question: bool, gap: float) -> None:
        self.now += gap
        item = self.next_item
        self.next_item += 1
        ask = Ask(channel=channel, nick=nick, question=question)
        key = (channel, nick.casefold())
        was_fast = self.model.fast(channel, nick, self.now)
        self.human[key] = self.human.get(key, True) and not was_fast
        expected = self.model.offer(item, ask, self.now)
        verdict = self.real.offer(item, ask, self.now)
        assert self._read(verdict) == expected, (verdict, expected)
        if verdict.hold is Hold.LOOP:
            # Only a nick that answered the bot at machine speed is ever taken for a bot.
            assert not self.human[key]
        if verdict.hold is not None:
            assert verdict.log and verdict.log[0].islower() and "_" not in verdict.log
        if verdict.now:
            self.replies.append(self.now)
            self.pending.append(ask)
        if verdict.later:
            self.queued.append(item)
        if verdict.notice is not None:
            assert len(verdict.notice) <= 120  # a few words
            self._spoke(channel, nick)  # the runner sends a notice at once

    @staticmethod
    def _read(verdict: Verdict) -> tuple[str, Hold | None, bool]:
        kind = "now" if verdict.now else "later" if verdict.later else "held"
        return kind, verdict.hold, verdict.notice is not None

    @precondition(lambda self: bool(self.pending))
    @rule(latency=st.floats(0.0, 3.0))
    def reply(self, latency: float) -> None:
        """The oldest answer taken goes out, `latency` seconds on."""
        self.now += latency
        ask = self.pending.pop(0)
        self._spoke(ask.channel, ask.nick if ask.question else None)

    @rule(gap=st.floats(0.0, 20.0))
    def wait(self, gap: float) -> None:
        self.now += gap
        got = [item for item, _ in self.real.release(self.now)]
        assert got == self.model.release(self.now)
        self.released += got
        self.replies += [self.now] * len(got)
        due = self.real.next_release()
        if self.model.queue:
            assert due is not None and due >= self.now
        else:
            assert due is None

    @invariant()
    def queue_is_bounded_and_first_come_first_served(self) -> None:
        if not hasattr(self, "real"):
            return
        assert self.real.waiting() == len(self.model.queue) <= self.model.queue_limit
        assert self.released == self.queued[: len(self.released)]

    @invariant()
    def rate_is_never_exceeded(self) -> None:
        if not hasattr(self, "real") or self.model.rate <= 0:
            return
        times = self.replies
        for i, start in enumerate(times):
            window = times[-1] - start
            allowed = self.model.burst + window * self.model.rate / 60
            assert len(times) - i <= math.floor(allowed + 1e-9)

    def teardown(self) -> None:
        if not hasattr(self, "real"):
            return
        # Everything queued is answered in time, in order, when its token comes.
        got: list[int] = []
        for _ in range(self.model.queue_limit + 1):
            due = self.real.next_release()
            if due is None:
                break
            got += [item for item, _ in self.real.release(due + 1e-6)]
        assert self.released + got == self.queued


TestMannersMachine = MannersMachine.TestCase
