"""The bot's decisions, sans-IO: chat lines and clock ticks in, turns (what to answer, where) out.

The brain owns every rule about *when* the bot speaks: mentions, direct messages, the
every-N-lines and every-N-seconds cadences, summaries on request, the reply-rate limit and the
loop guard. It keeps a bounded log of each room for context and summaries. It never touches a
socket, a thread or a clock: the runner passes `now` in, so tests drive it deterministically.

Loop guard and rate limit: manners.Manners decides whether a trigger is answered now, later
(a question over the rate limit waits in a queue) or not at all, and what the bot says when
it holds back. The brain never reacts to its own nick, to nicks ending in "bot" (any case),
or to `ignore` nicks; their lines still go into the context, they just never trigger anything.

Every trigger the brain passes over or holds back is reported as a Skip (`drain_skips`), with
its log line in English.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import enum
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from chatctl.bot.config import BrainSettings
from chatctl.bot.manners import Ask, Hold, Manners, Verdict

LOG_LIMIT = 200  # messages remembered per room, for summaries; the context window is smaller
DM_PEERS_LIMIT = 100  # direct-message conversations remembered at once (least recent dropped)
DM_LOG_LIMIT = 20
SKIPS_LIMIT = 100  # skips kept until the runner drains them (it does after every input)
SUMMARY_SHARE = 1 / 3  # a summary is at most this share of the transcript's characters
SUMMARY_FLOOR = 120  # characters a summary of a very short conversation may still take


@dataclass(frozen=True, kw_only=True)
class ChatLine:
    """One message as the bot saw it. `room` is None for a direct message."""

    sender: str
    text: str
    ts: float
    room: str | None = None
    action: bool = False
    history: bool = False  # a replay of a stored message: context only, never a trigger
    wall: float = 0.0  # Unix time (the server's stamp) in seconds; 0 when unknown


class TurnKind(enum.StrEnum):
    ANSWER = "answer"  # someone asked the bot something
    SUMMARY = "summary"  # someone asked for a summary of recent messages
    CHIME = "chime"  # the cadence says: take part in the conversation
    NOTICE = "notice"  # a few words of the bot's own (it is holding back): Turn.text


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
    """The brain's one action: answer `prompt` in `room`, or by direct message to `to`; or,
    when `text` is set, say that as it is (a notice, no backend)."""

    prompt: Prompt
    room: str | None = None
    to: str | None = None
    text: str | None = None
    waited: float = 0.0  # seconds it waited in the rate limit's queue

    @property
    def channel(self) -> str:
        return channel_key(self.room, self.to)

    @property
    def addressee(self) -> str | None:
        """Who the reply is to (None: everyone in the room, a cadence turn)."""
        if self.to is not None:
            return self.to
        return None if self.prompt.kind is TurnKind.CHIME else self.prompt.asker or None


def channel_key(room: str | None, peer: str | None) -> str:
    return f"#{room}" if room is not None else f"@{(peer or '').casefold()}"


@dataclass(kw_only=True)
class _Channel:
    log: collections.deque[ChatLine]
    lines_since_spoke: int = 0  # human lines since the bot last spoke here (every-lines)
    due: float | None = None  # when the every-seconds cadence fires (None: no activity yet)
    last_sender: str = ""  # the latest person to speak here (the cadence's loop-guard key)


_SUMMARY = re.compile(r"^\s*(?:summary|summari[sz]e|recap|tl;?dr)\b(?P<rest>.*)$", re.I | re.S)
_FILLER = frozenset(["the", "last", "messages", "message", "lines", "line", "please", "me"])
_NUMBER = re.compile(r"\d{1,6}")
_NAME = re.compile(r"[^\s#@?.!,]+")
_TIME = re.compile(r"(?P<h>\d{1,2})(?::(?P<m>\d{2}))?(?P<ampm>am|pm)?", re.I)


@dataclass(frozen=True, kw_only=True)
class SummaryRequest:
    count: int | None = None  # the last N messages
    room: str | None = None  # of this room
    nick: str | None = None  # what this nick said
    since: tuple[int, int] | None = None  # since this hour and minute (the bot's clock)
    utc: bool = False  # `since` is in UTC


def _clock_time(token: str) -> tuple[int, int] | None:
    """ "14:30", "9:05", "2pm", "2:30pm" -> (hour, minute); None if it is not a time."""
    m = _TIME.fullmatch(token)
    if m is None or (m["m"] is None and m["ampm"] is None):
        return None  # a bare number is a count, not a time
    hour, minute = int(m["h"]), int(m["m"] or 0)
    if m["ampm"]:
        if not 1 <= hour <= 12:
            return None
        hour = hour % 12 + (12 if m["ampm"].lower() == "pm" else 0)
    if hour > 23 or minute > 59:
        return None
    return hour, minute


def parse_summary(question: str) -> SummaryRequest | None:
    """`summary`, `summary 20`, `summarise the last 20 messages`, `summary #dev`,
    `summary since 14:30`, `summary @bob` (and combinations) -> a request; None for anything
    else ("summary of what happened yesterday" is a question, not a request)."""
    m = _SUMMARY.match(question)
    if m is None:
        return None
    tokens = re.sub(r"[?.!]+\s*$", "", m["rest"].strip()).replace(",", " ").split()
    count: int | None = None
    room: str | None = None
    nick: str | None = None
    since: tuple[int, int] | None = None
    utc = False
    i = 0
    while i < len(tokens):
        token, low = tokens[i], tokens[i].lower()
        following = tokens[i + 1] if i + 1 < len(tokens) else ""
        if _NUMBER.fullmatch(token) and count is None:
            count = int(token)
        elif token.startswith("#") and _NAME.fullmatch(token[1:]) and room is None:
            room = token[1:]
        elif token.startswith("@") and _NAME.fullmatch(token[1:]) and nick is None:
            nick = token[1:]
        elif low == "since" and since is None and _clock_time(following) is not None:
            since = _clock_time(following)
            i += 1
            if i + 1 < len(tokens) and tokens[i + 1].lower() == "utc":
                utc = True
                i += 1
        elif low in ("from", "by") and nick is None and _NAME.fullmatch(following.lstrip("@")):
            nick = following.lstrip("@")
            i += 1
        elif low in ("of", "in", "for"):
            # "of the last 20 messages", "of #dev", "in dev": a bare word here names a room.
            if (
                room is None
                and following
                and following.lower() not in _FILLER
                and not _NUMBER.fullmatch(following)
                and not following.startswith(("#", "@"))
                and _NAME.fullmatch(following)
                and following.lower() not in ("since", "from", "by")
            ):
                room = following
                i += 1
        elif low not in _FILLER:
            return None
        i += 1
    return SummaryRequest(count=count, room=room, nick=nick, since=since, utc=utc)


def transcript_chars(lines: Iterable[ChatLine]) -> int:
    """The characters of `lines` read as a transcript, one "nick: text" a line."""
    return sum(len(line.sender) + len(line.text) + 3 for line in lines)


def summary_cap(lines: Sequence[ChatLine], max_chars: int) -> int:
    """The longest a summary of `lines` may be: a third of the transcript (SUMMARY_FLOOR for a
    very short one: room to say who spoke), and never more than `max_chars`."""
    return min(max_chars, max(SUMMARY_FLOOR, int(transcript_chars(lines) * SUMMARY_SHARE)))


def since_threshold(request_wall: float, hour: int, minute: int, tz: dt.tzinfo | None) -> float:
    """The Unix time of the latest HH:MM (in `tz`, None: local time) at or before
    `request_wall`."""
    asked = dt.datetime.fromtimestamp(request_wall, tz)
    at = asked.replace(hour=hour, minute=minute, second=0, microsecond=0)
    if at > asked:
        at -= dt.timedelta(days=1)
    return at.timestamp()


@dataclass(frozen=True, kw_only=True)
class Skip:
    """A trigger the brain passed over or held back, and why (the runner logs `message`)."""

    reason: str  # a manners.Hold: "ignored sender", "loop guard", "rate limit", "queue full"
    channel: str
    sender: str
    kind: TurnKind
    message: str = ""  # the log line, in English
    later: bool = False  # it waits in the queue and will be answered


def is_botlike(nick: str) -> bool:
    return nick.casefold().endswith("bot")


class Brain:
    def __init__(self, settings: BrainSettings, *, now: float, tz: dt.tzinfo | None = None) -> None:
        self.settings = settings
        self.nick = settings.nick
        self.tz = tz  # the clock `summary since HH:MM` reads (None: the machine's local time)
        self._ignore = {n.casefold() for n in settings.ignore}
        self._rooms: dict[str, _Channel] = {}
        self._peers: collections.OrderedDict[str, _Channel] = collections.OrderedDict()
        self.manners: Manners[Turn] = Manners(
            reaction_time=settings.reaction_time,
            max_streak=settings.max_streak,
            loop_window=settings.loop_window,
            reply_rate=settings.reply_rate,
            burst=settings.burst,
            queue_limit=settings.queue_limit,
            now=now,
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

    def _why_ignored(self, nick: str) -> str:
        if nick.casefold() in self._ignore:
            return f"{nick} is on the --ignore list"
        return 'its nick ends in "bot", so it is taken for a bot'

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

    def _skip(self, verdict: Verdict, channel: str, sender: str, kind: TurnKind) -> list[Turn]:
        reason = str(verdict.hold)
        if not verdict.later:
            self.skipped[reason] += 1
        self._skips.append(
            Skip(
                reason=reason,
                channel=channel,
                sender=sender,
                kind=kind,
                message=verdict.log,
                later=verdict.later,
            )
        )
        return []

    def _ignored(self, channel: str, sender: str) -> list[Turn]:
        verdict = self.manners.ignored(
            Ask(channel=channel, nick=sender, question=True), self._why_ignored(sender)
        )
        return self._skip(verdict, channel, sender, TurnKind.ANSWER)

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
                return self._ignored(f"#{line.room}", line.sender)
            return []
        chan.last_sender = line.sender
        chan.lines_since_spoke += 1
        if self.settings.every_seconds is not None and chan.due is None:
            chan.due = now + self.settings.every_seconds

        question = self.addressed(line.text)
        if question is not None:
            turn = self._addressed_turn(line, question)
            return self._admit(chan, turn, line.sender, now, question=True)
        every = self.settings.every_lines
        if every is not None and chan.lines_since_spoke >= every:
            # The loop guard covers cadences too: two bots on --every-lines 1 would
            # otherwise keep each other talking.
            return self._admit(chan, self._chime(line.room), line.sender, now, question=False)
        return []

    def _observe_direct(self, line: ChatLine, now: float) -> list[Turn]:
        if self.ignores(line.sender):
            if self.is_self(line.sender):
                return []
            return self._ignored(channel_key(None, line.sender), line.sender)
        chan = self._peer(line.sender)
        chan.log.append(line)
        question = self.addressed(line.text)
        if question is None:
            question = line.text.strip()
        summary = parse_summary(question)
        room = None if summary is None else self._summary_room(summary.room)
        if summary is not None and room is not None:
            turn = self._summary_turn(room, summary, line, to=line.sender)
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
        return self._admit(chan, turn, line.sender, now, question=True)

    def tick(self, now: float) -> list[Turn]:
        """Time passed: questions whose turn has come in the rate limit's queue, then the
        every-N-seconds cadence of rooms that have been active."""
        turns = [
            dataclasses.replace(turn, waited=waited) for turn, waited in self.manners.release(now)
        ]
        for room, chan in self._rooms.items():
            if chan.due is not None and now >= chan.due:
                chan.due = None
                chime = self._chime(room)
                turns += self._admit(chan, chime, chan.last_sender or None, now, question=False)
        return turns

    def next_deadline(self) -> float | None:
        """When `tick` next has something to do (None: only a new message can change that)."""
        dues = [c.due for c in self._rooms.values() if c.due is not None]
        release = self.manners.next_release()
        if release is not None:
            dues.append(release)
        return min(dues) if dues else None

    def spoke(self, turn: Turn, text: str, now: float) -> None:
        """The runner sent `text` for `turn`: remember it as part of the conversation."""
        if turn.room is not None:
            chan = self._room(turn.room)
        elif turn.to is not None:
            chan = self._peer(turn.to)
        else:
            return
        # No clock here: the bot's line is stamped with the latest server time it has seen.
        wall = chan.log[-1].wall if chan.log else 0.0
        chan.log.append(ChatLine(sender=self.nick, text=text, ts=now, room=turn.room, wall=wall))
        # Reaction time counts from when the reply went out, not from when it was asked for:
        # a slow backend must not make quick human follow-ups look like a bot loop.
        self.manners.spoke(turn.channel, turn.addressee, now)

    # -- turns --------------------------------------------------------------------------------

    def _addressed_turn(self, line: ChatLine, question: str) -> Turn:
        assert line.room is not None
        summary = parse_summary(question)
        if summary is not None:
            room = self._summary_room(summary.room) or line.room
            return self._summary_turn(room, summary, line, room_out=line.room)
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
        request: SummaryRequest,
        asked: ChatLine,
        *,
        room_out: str | None = None,
        to: str | None = None,
    ) -> Turn:
        """A summary of `room` as `request` asks: the last N messages (default
        summary_default), or all remembered since HH:MM or by a nick. The bot's own lines come
        along as context (they show which questions were answered) but are never summarised;
        requests for summaries are left out."""
        chan = self._room(room)
        lines = [
            self._without_mention(ln)
            for ln in chan.log
            if not self._is_request(ln) and ln is not asked
        ]
        what = "messages"
        if request.since is not None:
            wall = asked.wall or max((ln.wall for ln in lines), default=0.0)
            hour, minute = request.since
            tz = dt.UTC if request.utc else self.tz
            threshold = since_threshold(wall, hour, minute, tz)
            lines = [ln for ln in lines if ln.wall >= threshold]
            what += f" since {hour:02d}:{minute:02d}{' UTC' if request.utc else ''}"
        if request.nick is not None:
            nick = request.nick.casefold()
            lines = [ln for ln in lines if ln.sender.casefold() == nick]
            what = f"{request.nick}'s {what}"
        default = LOG_LIMIT if request.since or request.nick else self.settings.summary_default
        wanted = max(1, min(request.count or default, LOG_LIMIT))
        people = [i for i, ln in enumerate(lines) if not self.is_self(ln.sender)]
        first = people[-wanted] if len(people) >= wanted else (people[0] if people else len(lines))
        context = tuple(lines[first:])
        last = f"last {wanted} " if request.count or default != LOG_LIMIT else ""
        cap = summary_cap(
            [ln for ln in context if not self.is_self(ln.sender)], self.settings.max_reply
        )
        return Turn(
            prompt=Prompt(
                kind=TurnKind.SUMMARY,
                bot_nick=self.nick,
                question=f"summary of the {last}{what}",
                asker=asked.sender,
                context=context,
                room=room,
                max_chars=cap,
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

    def _admit(
        self, chan: _Channel, turn: Turn, asker: str | None, now: float, *, question: bool
    ) -> list[Turn]:
        """The manners decide: answer now, later (queued), or hold back (maybe saying so)."""
        ask = Ask(channel=turn.channel, nick=asker, question=question)
        verdict = self.manners.offer(turn, ask, now)
        out: list[Turn] = []
        if verdict.now or verdict.later:
            chan.lines_since_spoke = 0
            chan.due = None
        if verdict.now:
            out.append(turn)
        else:
            self._skip(verdict, turn.channel, asker or "-", turn.prompt.kind)
        if verdict.notice is not None:
            out.append(self._notice(turn, asker, verdict.notice))
        return out

    def _notice(self, turn: Turn, asker: str | None, text: str) -> Turn:
        prompt = Prompt(kind=TurnKind.NOTICE, bot_nick=self.nick, asker=asker or "", room=turn.room)
        return Turn(prompt=prompt, room=turn.room, to=turn.to, text=text)


__all__ = [
    "Brain",
    "ChatLine",
    "Hold",
    "Prompt",
    "Skip",
    "SummaryRequest",
    "Turn",
    "TurnKind",
]
