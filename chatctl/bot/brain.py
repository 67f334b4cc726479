"""The bot's decisions, sans-IO: chat lines and clock ticks in, turns (what to answer, where) out.

The brain owns every rule about *when* the bot speaks: mentions, direct messages, the
every-N-lines and every-N-seconds cadences, summaries on request, the reply-rate limit and the
loop guard. It keeps a bounded log of each room for context and summaries. It never touches a
socket, a thread or a clock: the runner passes `now` in, so tests drive it deterministically.

Loop guard (why the bot never ends up talking to a bot forever):
1. It never reacts to its own nick, to nicks ending in "bot" (any case), or to `ignore` nicks.
   Their lines still go into the context, they just never trigger anything.
2. Machine speed. A trigger (a mention, a direct message, or the line that completes a cadence)
   that arrives within `reaction_time` (1.5 s) of the bot's own last message in that channel (a
   room, or one person's direct messages) is a *fast* one: nobody reads a reply and types an
   answer that quickly, but another bot does. The bot keeps up a machine-speed exchange with
   one nick for at most `max_streak` (2) messages in a row: its own, then one reply to a fast
   trigger. The next fast trigger from that nick is skipped, and the nick is ignored in that
   channel until it has been quiet for `loop_window` seconds (each ignored trigger restarts
   that wait). A trigger at human speed ends its streak, so people asking question after
   question are never silenced by the guard, however many they ask.
3. The token bucket caps replies per minute overall, whatever triggered them.

Every trigger the brain passes over is reported as a Skip (`drain_skips`) for the log.
"""

from __future__ import annotations

import collections
import dataclasses
import enum
import re
from collections.abc import Iterable
from dataclasses import dataclass

from chatctl.bot.config import BrainSettings
from chatctl.ratelimit import TokenBucket

LOG_LIMIT = 200  # messages remembered per room, for summaries; the context window is smaller
DM_PEERS_LIMIT = 100  # direct-message conversations remembered at once (least recent dropped)
DM_LOG_LIMIT = 20
SKIPS_LIMIT = 100  # skips kept until the runner drains them (it does after every input)
PARTNERS_LIMIT = 32  # nicks the loop guard tracks per channel (least recent dropped)


@dataclass(frozen=True, kw_only=True)
class ChatLine:
    """One message as the bot saw it. `room` is None for a direct message."""

    sender: str
    text: str
    ts: float
    room: str | None = None
    action: bool = False
    history: bool = False  # a replay of a stored message: context only, never a trigger


class TurnKind(enum.StrEnum):
    ANSWER = "answer"  # someone asked the bot something
    SUMMARY = "summary"  # someone asked for a summary of recent messages
    CHIME = "chime"  # the cadence says: take part in the conversation


@dataclass(frozen=True, kw_only=True)
class Prompt:
    """What a backend gets: everything it needs to write one reply, nothing about sockets."""

    kind: TurnKind
    bot_nick: str
    question: str = ""  # the text addressed to the bot, the mention removed
    asker: str = ""
    context: tuple[ChatLine, ...] = ()  # oldest first; for SUMMARY, the lines to summarise
    room: str | None = None  # the room the conversation is in, if any
    max_chars: int = BrainSettings.max_reply


@dataclass(frozen=True, kw_only=True)
class Turn:
    """The brain's one action: answer `prompt` in `room`, or by direct message to `to`."""

    prompt: Prompt
    room: str | None = None
    to: str | None = None

    @property
    def channel(self) -> str:
        return channel_key(self.room, self.to)


def channel_key(room: str | None, peer: str | None) -> str:
    return f"#{room}" if room is not None else f"@{(peer or '').casefold()}"


@dataclass(kw_only=True)
class _Partner:
    """The loop guard's view of one nick in one channel."""

    streak: int = 0  # its triggers in a row that came at machine speed (and were answered)
    guarded_at: float | None = None  # its latest trigger while the guard ignores it


@dataclass(kw_only=True)
class _Channel:
    log: collections.deque[ChatLine]
    lines_since_spoke: int = 0  # human lines since the bot last spoke here (every-lines)
    due: float | None = None  # when the every-seconds cadence fires (None: no activity yet)
    spoke_at: float = float("-inf")  # when the bot last took a turn or spoke here
    # Casefolded nick -> the loop guard's record of the bot's replies to it here.
    partners: collections.OrderedDict[str, _Partner] = dataclasses.field(
        default_factory=collections.OrderedDict
    )
    last_sender: str = ""  # the latest person to speak here (the cadence's loop-guard key)


_SUMMARY = re.compile(
    r"^\s*(?:summary|summari[sz]e|recap|tl;?dr)\b"
    r"(?:\s+(?:of\s+)?(?:the\s+)?(?:last\s+)?(?P<count>\d{1,6})(?:\s+(?:messages|lines))?)?"
    r"(?:\s+(?:of|in|for)?\s*#?(?P<room>[^\s?.!]+))?\s*[?.!]*\s*$",
    re.IGNORECASE,
)


@dataclass(frozen=True, kw_only=True)
class SummaryRequest:
    count: int | None
    room: str | None


def parse_summary(question: str) -> SummaryRequest | None:
    """`summary`, `summary 20`, `summarise the last 20 messages`, `summary #dev` -> a request."""
    m = _SUMMARY.match(question)
    if m is None:
        return None
    count = int(m["count"]) if m["count"] else None
    return SummaryRequest(count=count, room=m["room"])


@dataclass(frozen=True, kw_only=True)
class Skip:
    """A trigger the brain passed over, and why (the runner logs each)."""

    reason: str  # "ignored sender", "loop guard" or "rate limit"
    channel: str
    sender: str
    kind: TurnKind


def is_botlike(nick: str) -> bool:
    return nick.casefold().endswith("bot")


class Brain:
    def __init__(self, settings: BrainSettings, *, now: float) -> None:
        self.settings = settings
        self.nick = settings.nick
        self._ignore = {n.casefold() for n in settings.ignore}
        self._rooms: dict[str, _Channel] = {}
        self._peers: collections.OrderedDict[str, _Channel] = collections.OrderedDict()
        self._bucket = TokenBucket(
            rate=settings.reply_rate / 60.0, capacity=settings.burst, now=now
        )
        self.skipped: collections.Counter[str] = collections.Counter()
        self._skips: collections.deque[Skip] = collections.deque(maxlen=SKIPS_LIMIT)
        self._mention = self._compile_mention()

    # -- identity -----------------------------------------------------------------------------

    def rename(self, nick: str) -> None:
        """The server assigned (or changed) the bot's nick."""
        self.nick = nick
        self._mention = self._compile_mention()

    def _compile_mention(self) -> re.Pattern[str]:
        nick = re.escape(self.nick)
        # "@ai ..." anywhere, or "ai: ..." / "ai, ..." at the start.
        return re.compile(rf"(?:^|(?<=\s))@{nick}(?![\w-])[,:]?|^\s*{nick}\s*[:,](?=\s|$)", re.I)

    def is_self(self, nick: str) -> bool:
        return nick.casefold() == self.nick.casefold()

    def ignores(self, nick: str) -> bool:
        """Never triggered by: itself, bot-like nicks, the ignore list."""
        return self.is_self(nick) or is_botlike(nick) or nick.casefold() in self._ignore

    def addressed(self, text: str) -> str | None:
        """The question if `text` addresses the bot, with the mention removed; else None."""
        if self._mention.search(text) is None:
            return None
        return " ".join(self._mention.sub(" ", text).split())

    # -- state --------------------------------------------------------------------------------

    def rooms(self) -> list[str]:
        return list(self._rooms)

    def _room(self, room: str) -> _Channel:
        chan = self._rooms.get(room)
        if chan is None:
            chan = _Channel(log=collections.deque(maxlen=LOG_LIMIT))
            self._rooms[room] = chan
        return chan

    def _peer(self, nick: str) -> _Channel:
        key = nick.casefold()
        chan = self._peers.pop(key, None)
        if chan is None:
            chan = _Channel(log=collections.deque(maxlen=DM_LOG_LIMIT))
        self._peers[key] = chan
        while len(self._peers) > DM_PEERS_LIMIT:
            self._peers.popitem(last=False)
        return chan

    def log(self, room: str) -> list[ChatLine]:
        return list(self._room(room).log)

    def drain_skips(self) -> list[Skip]:
        """The triggers passed over since the last call, oldest first."""
        skips = list(self._skips)
        self._skips.clear()
        return skips

    def _skip(self, reason: str, channel: str, sender: str, kind: TurnKind) -> list[Turn]:
        self.skipped[reason] += 1
        self._skips.append(Skip(reason=reason, channel=channel, sender=sender, kind=kind))
        return []

    # -- inputs -------------------------------------------------------------------------------

    def observe(self, line: ChatLine, now: float) -> list[Turn]:
        """A room message or direct message arrived. Returns what to say, if anything."""
        if line.room is None:
            return self._observe_direct(line, now)
        chan = self._room(line.room)
        if self.is_self(line.sender):
            # The server echoed our own message; `spoke` already recorded it.
            return []
        chan.log.append(line)
        if line.history:
            return []
        if self.ignores(line.sender):
            if self.addressed(line.text) is not None:
                return self._skip("ignored sender", f"#{line.room}", line.sender, TurnKind.ANSWER)
            return []
        chan.last_sender = line.sender
        chan.lines_since_spoke += 1
        if self.settings.every_seconds is not None and chan.due is None:
            chan.due = now + self.settings.every_seconds

        question = self.addressed(line.text)
        if question is not None:
            return self._admit(chan, self._addressed_turn(line, question), line.sender, now)
        every = self.settings.every_lines
        if every is not None and chan.lines_since_spoke >= every:
            # The loop guard covers cadences too: two bots on --every-lines 1 would
            # otherwise keep each other talking.
            return self._admit(chan, self._chime(line.room), line.sender, now)
        return []

    def _observe_direct(self, line: ChatLine, now: float) -> list[Turn]:
        if self.ignores(line.sender):
            if self.is_self(line.sender):
                return []
            return self._skip(
                "ignored sender", channel_key(None, line.sender), line.sender, TurnKind.ANSWER
            )
        chan = self._peer(line.sender)
        chan.log.append(line)
        question = self.addressed(line.text)
        if question is None:
            question = line.text.strip()
        summary = parse_summary(question)
        room = None if summary is None else self._summary_room(summary.room)
        if summary is not None and room is not None:
            turn = self._summary_turn(room, summary.count, asker=line.sender, to=line.sender)
        else:
            # A summary of a room we do not know is answered as a question, without context.
            context = (
                () if summary is not None else tuple(self._window(chan.log, upto=len(chan.log) - 1))
            )
            turn = Turn(
                prompt=Prompt(
                    kind=TurnKind.ANSWER,
                    bot_nick=self.nick,
                    question=question,
                    asker=line.sender,
                    context=context,
                    max_chars=self.settings.max_reply,
                ),
                to=line.sender,
            )
        return self._admit(chan, turn, line.sender, now)

    def tick(self, now: float) -> list[Turn]:
        """Time passed: fire the every-N-seconds cadence of rooms that have been active."""
        turns: list[Turn] = []
        for room, chan in self._rooms.items():
            if chan.due is not None and now >= chan.due:
                chan.due = None
                turns += self._admit(chan, self._chime(room), chan.last_sender or None, now)
        return turns

    def next_deadline(self) -> float | None:
        """When `tick` next has something to do (None: only a new message can change that)."""
        dues = [c.due for c in self._rooms.values() if c.due is not None]
        return min(dues) if dues else None

    def spoke(self, turn: Turn, text: str, now: float) -> None:
        """The runner sent `text` for `turn`: remember it as part of the conversation."""
        line = ChatLine(sender=self.nick, text=text, ts=now, room=turn.room)
        if turn.room is not None:
            chan = self._room(turn.room)
        elif turn.to is not None:
            chan = self._peer(turn.to)
        else:
            return
        chan.log.append(line)
        # Reaction time counts from when the reply went out, not from when it was asked for:
        # a slow backend must not make quick human follow-ups look like a bot loop.
        chan.spoke_at = max(chan.spoke_at, now)

    # -- turns --------------------------------------------------------------------------------

    def _addressed_turn(self, line: ChatLine, question: str) -> Turn:
        assert line.room is not None
        summary = parse_summary(question)
        if summary is not None:
            room = self._summary_room(summary.room) or line.room
            return self._summary_turn(room, summary.count, asker=line.sender, room_out=line.room)
        chan = self._room(line.room)
        return Turn(
            prompt=Prompt(
                kind=TurnKind.ANSWER,
                bot_nick=self.nick,
                question=question,
                asker=line.sender,
                context=tuple(self._window(chan.log, upto=len(chan.log) - 1)),
                room=line.room,
                max_chars=self.settings.max_reply,
            ),
            room=line.room,
        )

    def _summary_room(self, named: str | None) -> str | None:
        if named is not None:
            for room in self._rooms:
                if room.casefold() == named.casefold():
                    return room
            return None
        # Unnamed: the room with the latest message.
        latest = max(
            ((c.log[-1].ts, room) for room, c in self._rooms.items() if c.log), default=None
        )
        return latest[1] if latest else None

    def _summary_turn(
        self,
        room: str,
        count: int | None,
        *,
        asker: str,
        room_out: str | None = None,
        to: str | None = None,
    ) -> Turn:
        chan = self._room(room)
        wanted = max(1, min(count or self.settings.summary_default, LOG_LIMIT))
        lines = [
            self._without_mention(ln)
            for ln in chan.log
            if not (self.is_self(ln.sender) or self._is_request(ln))
        ]
        return Turn(
            prompt=Prompt(
                kind=TurnKind.SUMMARY,
                bot_nick=self.nick,
                question=f"summary of the last {wanted} messages",
                asker=asker,
                context=tuple(lines[-wanted:]),
                room=room,
                max_chars=self.settings.max_reply,
            ),
            room=room_out,
            to=to,
        )

    def _without_mention(self, line: ChatLine) -> ChatLine:
        """`@ai how do I ...?` reads as `how do I ...?` in a summary."""
        question = self.addressed(line.text)
        return line if not question else dataclasses.replace(line, text=question)

    def _is_request(self, line: ChatLine) -> bool:
        """A line addressed to the bot ("@ai summary") is not conversation worth summarising."""
        question = self.addressed(line.text)
        return question is not None and parse_summary(question) is not None

    def _chime(self, room: str) -> Turn:
        chan = self._room(room)
        return Turn(
            prompt=Prompt(
                kind=TurnKind.CHIME,
                bot_nick=self.nick,
                context=tuple(self._window(chan.log, upto=len(chan.log))),
                room=room,
                max_chars=self.settings.max_reply,
            ),
            room=room,
        )

    def _window(self, log: Iterable[ChatLine], *, upto: int) -> list[ChatLine]:
        """The newest lines of `log[:upto]` within the message count and character budget."""
        lines = list(log)[:upto]
        picked: list[ChatLine] = []
        budget = self.settings.context_chars
        for line in reversed(lines[-self.settings.context_messages :]):
            cost = len(line.sender) + len(line.text) + 2
            if cost > budget:
                break
            budget -= cost
            picked.append(line)
        picked.reverse()
        return picked

    def _admit(self, chan: _Channel, turn: Turn, asker: str | None, now: float) -> list[Turn]:
        """Apply the loop guard and the rate limit to a turn the triggers produced."""
        partner: _Partner | None = None
        streak = 0
        if asker is not None:
            who = asker.casefold()
            partner = chan.partners.pop(who, None) or _Partner()
            chan.partners[who] = partner  # most recent last
            while len(chan.partners) > PARTNERS_LIMIT:
                chan.partners.popitem(last=False)
            if partner.guarded_at is not None:
                if now - partner.guarded_at <= self.settings.loop_window:
                    partner.guarded_at = now  # still at it: the wait starts again
                    return self._skip("loop guard", turn.channel, asker, turn.prompt.kind)
                partner.guarded_at = None
                partner.streak = 0
            if now - chan.spoke_at < self.settings.reaction_time:
                streak = partner.streak + 1
            # The bot's message this reacts to opened the streak, so it holds max_streak - 1
            # fast replies.
            if streak >= self.settings.max_streak:
                partner.guarded_at = now
                return self._skip("loop guard", turn.channel, asker, turn.prompt.kind)
        if not self._bucket.take(now):
            return self._skip("rate limit", turn.channel, asker or "-", turn.prompt.kind)
        chan.lines_since_spoke = 0
        chan.due = None
        # Taking the turn counts as speaking: the reply follows as fast as the backend can.
        chan.spoke_at = max(chan.spoke_at, now)
        if partner is not None:
            partner.streak = streak
        return [turn]


__all__ = [
    "Brain",
    "ChatLine",
    "Prompt",
    "Skip",
    "Turn",
    "TurnKind",
]
