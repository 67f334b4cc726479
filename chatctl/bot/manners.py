"""The bot's manners, sans-IO: when to answer (the loop guard, the reply rate, a queue for
questions over it, and what to say when holding back: `Manners`), and fitting text into chat
frames (clipping, splitting, the Framer for streamed replies)."""

from __future__ import annotations

import collections
import enum
import math
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from chatctl.ratelimit import TokenBucket

T = TypeVar("T")

ELLIPSIS = "…"
SPEAKER_PREFIX_WINDOW = 40  # characters of a reply held back to look for a copied "nick:"


_SPACES = re.compile(r"\s+")


def one_line(text: str) -> str:
    """Collapse all whitespace, newlines included: `join` in a pipe prints one event a line."""
    return _SPACES.sub(" ", text).strip()


def clip(text: str, max_chars: int) -> str:
    """Cut `text` to at most `max_chars` characters, at a word boundary when one is near."""
    if len(text) <= max_chars:
        return text
    cut = text[: max(1, max_chars - len(ELLIPSIS))]
    space = cut.rfind(" ")
    if space >= len(cut) * 2 // 3:
        cut = cut[:space]
    return cut.rstrip() + ELLIPSIS


def _utf8_prefix(text: str, max_bytes: int) -> int:
    """Length in characters of the longest prefix of `text` that fits in `max_bytes` of UTF-8."""
    size = 0
    for i, ch in enumerate(text):
        size += len(ch.encode("utf-8", "surrogatepass"))
        if size > max_bytes:
            return i
    return len(text)


_SENTENCE_END = re.compile(r"[.!?;:]\s")


def split_frames(text: str, max_bytes: int) -> list[str]:
    """Split `text` into pieces of at most `max_bytes` UTF-8 bytes each (the server's max_text).

    Prefers a sentence end, then a space, and cuts inside a word only when it must. Joining the
    pieces with single spaces gives back the text with its whitespace collapsed.
    """
    if max_bytes < 4:
        raise ValueError("max_bytes must leave room for one character")
    rest = one_line(text)
    pieces: list[str] = []
    while rest:
        fit = _utf8_prefix(rest, max_bytes)
        if fit >= len(rest):
            pieces.append(rest)
            break
        head = rest[:fit]
        cut = fit
        # The last sentence end in the second half of the window, else the last space.
        window = head + rest[fit : fit + 1]
        sentence = max((m.start() for m in _SENTENCE_END.finditer(window)), default=-1)
        if sentence >= fit // 2:
            cut = sentence + 1
        else:
            space = head.rfind(" ")
            if space > 0:
                cut = space
        pieces.append(rest[:cut].rstrip())
        rest = rest[cut:].lstrip()
    return [p for p in pieces if p]


def strip_speaker(text: str, names: Iterable[str]) -> str:
    """Drop a leading "nick:" that a model copied from the transcript format, when the nick
    is one of `names` (the bot's own, or someone in the conversation)."""
    colon = text.find(":", 0, SPEAKER_PREFIX_WINDOW)
    if colon >= 0 and text[:colon].strip().lstrip("@").casefold() in {n.casefold() for n in names}:
        return text[colon + 1 :].lstrip()
    return text


# Streaming into a chat, where a message cannot be edited: send a frame at a natural boundary
# once it reads as a message of its own, or when the model pauses, never word by word.
FLUSH_AT = 80  # characters before a sentence or line end that make it worth a frame
IDLE_FLUSH = 1.0  # seconds without new text after which the complete words so far go out
IDLE_MIN = 20  # characters: the least an idle flush sends (a very slow model: not word by word)

# A line break, or a sentence end (not "3." in a list) followed by a space.
_BOUNDARY = re.compile(r"\n|(?<=[^\d\s][.!?…])\s")
_SPACE = re.compile(r"\s")


class Framer:
    """Chat frames from a reply that arrives in pieces, sans-IO: `feed` each piece with the
    time, call `idle` when `idle_at` has passed with nothing new, and `finish` at the end.

    The reply stops at `max_chars` characters (`full` then says so, and `finish` ends it in an
    ellipsis); each frame holds at most `max_bytes` of UTF-8; a leading "nick:" naming one of
    `names` is dropped. Joining the frames with spaces gives the reply, whitespace collapsed.
    """

    def __init__(
        self,
        *,
        max_chars: int,
        max_bytes: int,
        names: Iterable[str] = (),
        now: float = 0.0,
        flush_at: int = FLUSH_AT,
        idle_after: float = IDLE_FLUSH,
        idle_min: int = IDLE_MIN,
    ) -> None:
        if max_bytes < 4:
            raise ValueError("max_bytes must leave room for one character")
        self.max_chars = max_chars
        self.max_bytes = max_bytes
        self.flush_at = flush_at
        self.idle_after = idle_after
        self.idle_min = idle_min
        self.full = False  # the reply reached max_chars and more was coming
        self.pending = ""  # text received and not sent yet
        self._known = {n for n in names if n}
        self._head_checked = not self._known
        self._total = 0
        self._last = now
        self._idle_done = False  # `idle` ran since the last piece: nothing new to send

    def feed(self, chunk: str, now: float) -> list[str]:
        """A piece of the reply arrived: the frames ready to send."""
        if self.full or not chunk:
            return []
        self._last = now
        self._idle_done = False
        room = self.max_chars - self._total
        if len(chunk) > room:
            self.full = True
            chunk = chunk[:room]
        self.pending += chunk
        self._total += len(chunk)
        if not self._head_checked:
            if len(self.pending) < SPEAKER_PREFIX_WINDOW and not self.full:
                return []  # the reply may begin with a "nick:" to drop
            self._check_head()
        frames = self._take_full()
        if not self._at_limit():
            # Only a boundary at the start of this piece or before it: a reply that comes
            # whole (the offline backend, a server that does not stream) stays one message.
            before = len(self.pending) - len(chunk)
            ends = (m.end() for m in _BOUNDARY.finditer(self.pending) if m.start() <= before)
            cut = max(ends, default=0)
            if len(self.pending[:cut].strip()) >= self.flush_at:
                frames += self._take(cut)
        return frames

    def idle_at(self) -> float | None:
        """When `idle` would send something if no new text arrives first (None: never)."""
        if self._idle_done or self._at_limit() or len(self.pending.strip()) < self.idle_min:
            return None
        return self._last + self.idle_after

    def idle(self, now: float) -> list[str]:
        """No new text for a while: send the complete words so far, if there are enough."""
        due = self.idle_at()
        if due is None or now < due:
            return []
        self._idle_done = True  # whatever it sends now, only new text can change that
        if not self._head_checked:
            # Ahead of time, on the text so far: a slow model's copied "nick:" that has not
            # arrived whole by now is taken for text.
            self._check_head()
        cut = max((m.end() for m in _SPACE.finditer(self.pending)), default=0)
        if len(self.pending[:cut].strip()) < self.idle_min:
            return []
        return self._take(cut)

    def finish(self, *, cut: bool = False) -> list[str]:
        """The stream ended (or was `cut` short): the rest of the reply."""
        if not self._head_checked:
            self._check_head()
        tail = one_line(self.pending)
        self.pending = ""
        if (cut or self.full) and tail:
            tail += ELLIPSIS
        return split_frames(tail, self.max_bytes) if tail else []

    def _at_limit(self) -> bool:
        # Text up to exactly max_chars: hold the rest, so that if more arrives, the ellipsis
        # has a frame to end.
        return self.full or self._total >= self.max_chars

    def _check_head(self) -> None:
        self.pending = strip_speaker(self.pending, self._known)
        self._head_checked = True

    def _take(self, cut: int) -> list[str]:
        head, self.pending = self.pending[:cut], self.pending[cut:].lstrip()
        return split_frames(head, self.max_bytes)

    def _take_full(self) -> list[str]:
        """Frames that are full already: all but the last piece of what fits."""
        if len(self.pending.encode("utf-8", "surrogatepass")) <= self.max_bytes:
            return []  # as it is: its line breaks are boundaries
        frames = split_frames(self.pending, self.max_bytes)
        # Keep the last, partial frame; and the space it ended in, if any.
        self.pending = frames[-1] + (" " if self.pending[-1:].isspace() else "")
        return frames[:-1]


def stream_frames(
    stream: Iterable[str], *, max_chars: int, max_bytes: int, names: Iterable[str] = ()
) -> Iterator[str]:
    """Chat frames from a stream of text pieces (a Framer without a clock: no idle flushes).

    The stream is closed once the reply reaches `max_chars`, so a model stops generating.
    """
    framer = Framer(max_chars=max_chars, max_bytes=max_bytes, names=names)
    try:
        for chunk in stream:
            yield from framer.feed(chunk, 0.0)
            if framer.full:
                break
    finally:
        close = getattr(stream, "close", None)
        if close is not None:
            close()
    yield from framer.finish()


# -- when to answer: the loop guard, the reply rate and the queue --------------------------------

QUEUE_LIMIT = 10  # questions waiting for the rate limit; more get "ask again in a minute"
TRACKED_LIMIT = 64  # nicks the guard remembers per channel (least recent dropped)
CHANNELS_LIMIT = 1024  # channels it remembers (rooms and direct-message peers)


class Hold(enum.StrEnum):
    """Why a turn was not taken at once."""

    IGNORED = "ignored sender"  # itself, a nick ending in "bot", or an --ignore nick
    LOOP = "loop guard"  # a machine-speed exchange with that nick
    RATE = "rate limit"  # over --reply-rate: a question waits its turn, a cadence is skipped
    FULL = "queue full"  # so many questions waiting that this one is turned away


@dataclass(frozen=True, kw_only=True)
class Ask:
    """A trigger, as the manners see it."""

    channel: str  # "#room", or "@nick" for one person's direct messages
    nick: str | None  # who triggered it (None: nobody in particular)
    question: bool  # someone asked (a mention, a direct message, a summary request); False
    # for the bot's own cadence (every N lines or seconds)


@dataclass(frozen=True, kw_only=True)
class Verdict:
    """What to do with a trigger: answer it `now`, `later` (`Manners.release` hands it back
    when its turn comes), or neither; `notice` is a few words to say at once, and `log` the
    English log line for anything but an answer at once."""

    now: bool = False
    later: bool = False
    hold: Hold | None = None
    notice: str | None = None
    log: str = ""


def where(channel: str) -> str:
    """A channel as a log line says it: "#lobby", "direct messages with bob"."""
    return channel if channel.startswith("#") else f"direct messages with {channel[1:]}"


@dataclass(kw_only=True)
class _Partner:
    """The loop guard's view of one nick in one channel."""

    streak: int = 0  # its answered triggers in a row that came at machine speed
    guarded_at: float | None = None  # its latest trigger while the guard ignores it
    told: bool = False  # the bot said it is holding back, in this guard episode


@dataclass(kw_only=True)
class _Channel:
    room_at: float = float("-inf")  # the bot's latest message to everyone (a cadence turn)
    # Casefolded nick -> the bot's latest message to that nick here (an answer, a notice).
    to: collections.OrderedDict[str, float] = field(default_factory=collections.OrderedDict)
    partners: collections.OrderedDict[str, _Partner] = field(
        default_factory=collections.OrderedDict
    )


@dataclass(frozen=True, kw_only=True)
class _Waiting(Generic[T]):
    item: T
    ask: Ask
    since: float


class Manners(Generic[T]):
    """Whether the bot answers a trigger now, later or not at all, sans-IO (`now` is passed in).

    The loop guard tells a bot from a person by cadence and by who is being answered. A
    trigger is *fast* when it comes less than `reaction_time` after the bot's latest message
    to that nick, or to everyone (a cadence turn): an answer to that quick is a machine's, not
    a person's, who reads and types. A message sent right after the bot answered someone else
    is not fast: its sender was not answering the bot. The bot keeps up a machine-speed
    exchange with one nick for at most `max_streak` messages in a row (its own, then replies
    to fast triggers); the next fast trigger is held back and the nick ignored in that channel
    until it has been quiet for `loop_window` seconds. A trigger at human speed ends the
    streak. If the held-back trigger was a question, the bot says so, once per episode.

    The rate limit: a token bucket of `reply_rate` a minute, `burst` at once. A question over
    it waits in a queue (first come, first answered, at most `queue_limit`) and the channel is
    told once that answers will come late; a cadence turn over it is skipped.
    """

    def __init__(
        self,
        *,
        reaction_time: float,
        max_streak: int,
        loop_window: float,
        reply_rate: float,
        burst: int,
        now: float,
        queue_limit: int = QUEUE_LIMIT,
    ) -> None:
        self.reaction_time = reaction_time
        self.max_streak = max_streak
        self.loop_window = loop_window
        self.reply_rate = reply_rate
        self.queue_limit = queue_limit
        self._bucket = TokenBucket(rate=reply_rate / 60.0, capacity=burst, now=now)
        self._channels: collections.OrderedDict[str, _Channel] = collections.OrderedDict()
        self._queue: collections.deque[_Waiting[T]] = collections.deque()
        self._told_busy: set[str] = set()  # channels told, in this backlog, that answers wait
        self._told_full: set[str] = set()  # channels told to ask again later
        self._clock = now

    # -- what the bot said ----------------------------------------------------------------------

    def spoke(self, channel: str, to: str | None, now: float) -> None:
        """The bot spoke in `channel`, to `to` (None: to everyone there)."""
        chan = self._channel(channel)
        if to is None:
            chan.room_at = max(chan.room_at, now)
            return
        key = to.casefold()
        chan.to[key] = max(chan.to.pop(key, float("-inf")), now)
        while len(chan.to) > TRACKED_LIMIT:
            chan.to.popitem(last=False)

    def fast(self, channel: str, nick: str, now: float) -> bool:
        """Whether `nick` speaking now is quick enough to be a machine answering the bot."""
        chan = self._channels.get(channel)
        if chan is None:
            return False
        last = max(chan.room_at, chan.to.get(nick.casefold(), float("-inf")))
        return now - last < self.reaction_time

    # -- triggers -------------------------------------------------------------------------------

    def ignored(self, ask: Ask, why: str) -> Verdict:
        """A trigger from a nick the bot never answers (`why`: its nick ends in "bot", ...)."""
        return Verdict(
            hold=Hold.IGNORED,
            log=f"did not answer {ask.nick} in {where(ask.channel)}: {why}",
        )

    def offer(self, item: T, ask: Ask, now: float) -> Verdict:
        """A trigger arrived: answer `item` now, queue it, or hold it back."""
        self._clock = max(self._clock, now)
        chan = self._channel(ask.channel)
        partner: _Partner | None = None
        streak = 0
        if ask.nick is not None:
            partner = self._partner(chan, ask.nick)
            if partner.guarded_at is not None:
                if now - partner.guarded_at <= self.loop_window:
                    partner.guarded_at = now  # still at it: the wait starts again
                    return self._loop(ask, partner, first=False)
                partner.guarded_at = None
                partner.streak = 0
                partner.told = False
            if self.fast(ask.channel, ask.nick, now):
                streak = partner.streak + 1
            else:
                partner.streak = 0
            # The bot's message this reacts to opened the streak, so it holds max_streak - 1
            # fast replies.
            if streak >= self.max_streak:
                partner.guarded_at = now
                return self._loop(ask, partner, first=True)
        if self._queue or not self._bucket.take(now):
            return self._over_rate(item, ask, partner, streak, now)
        if partner is not None:
            partner.streak = streak
        self._taken(ask, now)
        return Verdict(now=True)

    def release(self, now: float) -> list[tuple[T, float]]:
        """The queued items whose turn has come, first come first, with how long each waited."""
        self._clock = max(self._clock, now)
        out: list[tuple[T, float]] = []
        while self._queue and self._bucket.take(now):
            waiting = self._queue.popleft()
            self._taken(waiting.ask, now)
            out.append((waiting.item, now - waiting.since))
        if out:
            waiting_in = {w.ask.channel for w in self._queue}
            self._told_busy &= waiting_in
            self._told_full &= waiting_in
        return out

    def next_release(self) -> float | None:
        """When `release` next hands something back (None: nothing is waiting)."""
        if not self._queue:
            return None
        return self._clock + self._bucket.wait_time(self._clock)

    def waiting(self) -> int:
        return len(self._queue)

    # -- helpers --------------------------------------------------------------------------------

    def _channel(self, channel: str) -> _Channel:
        chan = self._channels.pop(channel, None) or _Channel()
        self._channels[channel] = chan  # most recent last
        while len(self._channels) > CHANNELS_LIMIT:
            self._channels.popitem(last=False)
        return chan

    def _partner(self, chan: _Channel, nick: str) -> _Partner:
        key = nick.casefold()
        partner = chan.partners.pop(key, None) or _Partner()
        chan.partners[key] = partner
        while len(chan.partners) > TRACKED_LIMIT:
            chan.partners.popitem(last=False)
        return partner

    def _taken(self, ask: Ask, now: float) -> None:
        # Taking the turn counts as speaking: the reply follows as fast as the backend can.
        self.spoke(ask.channel, ask.nick if ask.question else None, now)

    def _to(self, ask: Ask) -> str:
        """How a notice addresses the asker: by name in a room, not in a direct message."""
        return f"{ask.nick}: " if ask.channel.startswith("#") and ask.nick else ""

    def _loop(self, ask: Ask, partner: _Partner, *, first: bool) -> Verdict:
        place = where(ask.channel)
        if first:
            times = {1: "once", 2: "twice"}.get(self.max_streak, f"{self.max_streak} times")
            log = (
                f"did not answer {ask.nick} in {place}: {ask.nick} answered me within "
                f"{self.reaction_time:g} s {times} in a row, like a bot; not answering "
                f"{ask.nick} there until it has been quiet for {self.loop_window:g} s"
            )
        else:
            log = (
                f"did not answer {ask.nick} in {place}: still ignoring {ask.nick} there "
                f"(it spoke again within {self.loop_window:g} s)"
            )
        notice = None
        if ask.question and not partner.told:
            partner.told = True
            notice = (
                f"{self._to(ask)}you answer faster than anyone can read, so I'll pause our "
                f"exchange for {self.loop_window:g} s."
            )
            log += "; said so"
        return Verdict(hold=Hold.LOOP, notice=notice, log=log)

    def _over_rate(
        self, item: T, ask: Ask, partner: _Partner | None, streak: int, now: float
    ) -> Verdict:
        place = where(ask.channel)
        rate = f"{self.reply_rate:g} replies a minute"
        if not ask.question:
            why = "questions are waiting" if self._queue else f"the rate limit ({rate}) is reached"
            return Verdict(hold=Hold.RATE, log=f"skipped a cadence turn in {place}: {why}")
        if len(self._queue) >= self.queue_limit:
            notice = None
            log = (
                f"did not answer {ask.nick} in {place}: {len(self._queue)} questions are "
                f"already waiting for the rate limit ({rate})"
            )
            if ask.channel not in self._told_full:
                self._told_full.add(ask.channel)
                notice = f"{self._to(ask)}too many questions at once; please ask again in a minute."
                log += "; asked them to ask again"
            return Verdict(hold=Hold.FULL, notice=notice, log=log)
        self._queue.append(_Waiting(item=item, ask=ask, since=now))
        if partner is not None:
            partner.streak = streak
        wait = self._bucket.wait_time(now, cost=len(self._queue))
        log = (
            f"holding {ask.nick}'s question in {place} for about {math.ceil(wait):.0f} s: "
            f"the rate limit ({rate}) is reached, {len(self._queue)} waiting"
        )
        notice = None
        if ask.channel not in self._told_busy:
            self._told_busy.add(ask.channel)
            notice = (
                f"{self._to(ask)}one moment: I answer at most {rate}, so yours comes in "
                f"about {max(1, math.ceil(wait)):.0f} s."
            )
            log += "; said so"
        return Verdict(later=True, hold=Hold.RATE, notice=notice, log=log)
