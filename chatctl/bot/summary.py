"""Summaries of a conversation: extractive offline, and a grounding check for a model's.

The extractive summary (`plan`, `summarise`) tells, in at most a third of the transcript's
characters (brain.summary_cap):
- a head: how many messages, from when to when, who spoke (and how often), and the topics:
  the words the conversation keeps coming back to, used by more than one person, as written;
- then, in the order they were said, the sentences that carry it, each quoted word for word
  (or its beginning, ending in "…") and attributed: decisions first ("let's", "we'll",
  "agreed", ...), questions nobody answered yet, each speaker's most telling sentence, then the
  best of the rest. A sentence is telling when it uses the words the conversation keeps
  coming back to (Luhn's idea); a near-repeat of one already chosen is left out.
Nothing is invented: every word of it is a count, a time, a nick, a label (decision, question
still open) or a quote from the lines. The bot's own lines are never reported; they only
show which questions were answered.

With a language model, `GroundedSummaries` wraps the backend: its summary is read whole,
checked against the lines (`grounding_problems`: every name, number, command or quoted word
it uses must be in them, most of its words must be the conversation's, and it must fit the
same cap), and replaced by the extractive one if it is not grounded, or if the model fails.
"""

from __future__ import annotations

import datetime as dt
import enum
import logging
import math
import re
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from chatctl.bot.backend import Backend, BackendError
from chatctl.bot.brain import ChatLine, Prompt, TurnKind, summary_cap
from chatctl.bot.knowledge import COMMON, STOPWORDS, stem, words
from chatctl.bot.manners import ELLIPSIS, clip, one_line

log = logging.getLogger("chatctl.bot")

QUOTE_MAX = 140  # characters of one quoted sentence at most (then its beginning and "…")
TOPICS_MAX = 4
SPEAKERS_NAMED = 5  # the head names this many speakers, then "and N others"
DUPLICATE = 0.5  # a sentence sharing this share of its words with a chosen one is a repeat

_SENTENCE = re.compile(r"(?<=[.!?])\s+")
_DECISION = re.compile(
    r"\b(let'?s|we'?ll|we will|we are going to|we're going to|decided|decision|agreed|"
    r"settled|go with|going with|the plan is|plan:|we should|ship it|it is)\b|^(ok|okay|fine|"
    r"yes|agreed|right)\b[,:]?\s+(let'?s|we|so|then)\b",
    re.I,
)
_COMMITMENT = re.compile(r"\b(i'?ll|i will|i can|i'm going to)\b", re.I)
_ANSWERISH = re.compile(
    r"^\s*(yes|yeah|yep|yup|no|nope|nah|sure|ok|okay|fine|agreed|right|true|exactly|\+1|👍|"
    r"i think|probably|maybe|it'?s|it is|because|use|try|you can|you need|not sure|dunno|"
    r"i don'?t know|me|i do|i can|that'?s|we)\b",
    re.I,
)
_FOLLOW_UP = 2  # the next lines: someone else speaking right after a question answers it
_ANSWER_WINDOW = 6  # lines after a question in which an answer is looked for


class Kind(enum.StrEnum):
    SAID = "said"
    QUESTION = "question"  # a question someone answered
    OPEN = "open question"  # a question nobody answered (yet)
    DECISION = "decision"


@dataclass(frozen=True, kw_only=True)
class Item:
    """One reported sentence: from line `line` of the summarised lines, said by `sender`."""

    line: int
    order: int  # the sentence's place in the whole conversation
    sender: str
    quote: str  # the sentence as said, or its beginning ending in "…"
    kind: Kind
    action: bool = False

    def render(self) -> str:
        if self.action:
            return f"* {self.sender} {self.quote}"
        label = {
            Kind.DECISION: ", decision",
            Kind.OPEN: " asked, still open",
            Kind.QUESTION: " asked",
        }.get(self.kind, "")
        return f'{self.sender}{label}: "{self.quote}"'


@dataclass(frozen=True, kw_only=True)
class Summary:
    text: str
    head: str
    items: tuple[Item, ...]
    topics: tuple[str, ...]
    speakers: tuple[str, ...]  # everyone whose lines were summarised, busiest first
    cap: int  # the length it had to fit


@dataclass(frozen=True, kw_only=True)
class _Sentence:
    line: int
    order: int
    sender: str
    text: str
    stems: frozenset[str]
    kind: Kind
    action: bool
    score: float = 0.0


def _surface_words(text: str) -> list[str]:
    return re.findall(r"[a-z][a-z0-9'-]*[a-z0-9]", text.lower())


def _clock(wall: float, tz: dt.tzinfo | None, *, day: bool = False) -> str:
    return dt.datetime.fromtimestamp(wall, tz).strftime("%a %H:%M" if day else "%H:%M")


def _names(items: Sequence[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def _answered(lines: Sequence[ChatLine], index: int, stems: frozenset[str]) -> bool:
    """Whether someone else answered the question on line `index` within a few lines."""
    asker = lines[index].sender.casefold()
    for distance, later in enumerate(lines[index + 1 : index + 1 + _ANSWER_WINDOW], 1):
        if later.sender.casefold() == asker:
            continue
        if distance <= _FOLLOW_UP or _ANSWERISH.match(later.text):
            return True
        if asker in later.text.casefold():
            return True
        if stems & set(words(later.text)):
            return True
    return False


def _sentences(lines: Sequence[ChatLine], people: Sequence[int]) -> list[_Sentence]:
    out: list[_Sentence] = []
    for i in people:
        line = lines[i]
        for part in _SENTENCE.split(one_line(line.text)):
            if not part:
                continue
            stems = frozenset(words(part))
            if part.endswith("?"):
                kind = Kind.QUESTION if _answered(lines, i, stems) else Kind.OPEN
            elif _DECISION.search(part):
                kind = Kind.DECISION
            else:
                kind = Kind.SAID
            out.append(
                _Sentence(
                    line=i,
                    order=len(out),
                    sender=line.sender,
                    text=part,
                    stems=stems,
                    kind=kind,
                    action=line.action,
                )
            )
    return out


def _score(sentences: list[_Sentence], nicks: set[str]) -> list[_Sentence]:
    """Luhn's measure: how much a sentence uses the words the conversation keeps coming back
    to (said on several lines), per square root of its length; decisions and open questions
    count extra, a sentence with fewer than two words of substance counts for nothing."""
    lines_with: Counter[str] = Counter()
    seen: set[tuple[int, str]] = set()
    for s in sentences:
        for w in s.stems:
            if (s.line, w) not in seen:
                seen.add((s.line, w))
                lines_with[w] += 1
    scored = []
    for s in sentences:
        content = [w for w in s.stems if w not in nicks]
        if len(content) < 2 or (s.kind == Kind.DECISION and len(content) < 3):
            score = 0.0  # "ok", "agreed", "sounds good": nothing to report
        else:
            weight = sum(lines_with[w] - 1 for w in content) + 0.5 * len(content)
            score = weight / math.sqrt(len(content) + 1)
            score += {Kind.DECISION: 1.0, Kind.OPEN: 1.0, Kind.QUESTION: 0.3}.get(s.kind, 0.0)
            if _COMMITMENT.search(s.text):
                score += 0.3  # who will do what
        scored.append(
            _Sentence(
                line=s.line,
                order=s.order,
                sender=s.sender,
                text=s.text,
                stems=s.stems,
                kind=s.kind,
                action=s.action,
                score=score,
            )
        )
    return scored


def _topics(lines: Sequence[ChatLine], people: Sequence[int], nicks: set[str]) -> list[str]:
    """The words several people keep using, most used first, as they wrote them."""
    speakers: dict[str, set[str]] = {}
    count: Counter[str] = Counter()
    surface: dict[str, Counter[str]] = {}
    for i in people:
        line = lines[i]
        for token in _surface_words(line.text):
            if (
                token in STOPWORDS
                or token in COMMON
                or len(token) < 4
                or token in nicks
                or token.isdigit()
            ):
                continue
            w = stem(token)
            count[w] += 1
            speakers.setdefault(w, set()).add(line.sender.casefold())
            surface.setdefault(w, Counter())[token] += 1
    ranked = sorted(
        (w for w in count if count[w] >= 2 and len(speakers[w]) >= 2),
        key=lambda w: (-len(speakers[w]) * count[w], w),
    )
    return [surface[w].most_common(1)[0][0] for w in ranked[:TOPICS_MAX]]


def _head(
    lines: Sequence[ChatLine],
    people: Sequence[int],
    counts: Counter[str],
    room: str | None,
    tz: dt.tzinfo | None,
    *,
    times: bool,
    per_speaker: bool,
    named: int,
) -> str:
    n = len(people)
    where = f" in #{room}" if room else ""
    walls = [lines[i].wall for i in people if lines[i].wall > 0]
    when = ""
    if times and walls:
        first, last = _clock(walls[0], tz), _clock(walls[-1], tz)
        if walls[-1] - walls[0] >= 12 * 3600:  # more than a day's clock can say
            first, last = _clock(walls[0], tz, day=True), _clock(walls[-1], tz, day=True)
        when = f", {first}" if first == last else f", {first} to {last}"
    speakers = [nick for nick, _ in counts.most_common()]
    shown = [f"{nick} ({counts[nick]})" if per_speaker else nick for nick in speakers[:named]]
    if len(speakers) > named:
        shown.append(f"{len(speakers) - named} other{'s' if len(speakers) - named > 1 else ''}")
    return f"Last {n} message{'s' if n != 1 else ''}{where}{when}, from {_names(shown)}."


def plan(
    lines: Sequence[ChatLine],
    *,
    max_chars: int = 1500,
    room: str | None = None,
    bot_nick: str = "",
    tz: dt.tzinfo | None = None,
) -> Summary:
    """The extractive summary of `lines`, with what it reports, within a third of the
    transcript (and `max_chars`)."""
    me = bot_nick.casefold()
    people = [i for i, line in enumerate(lines) if line.sender.casefold() != me or not me]
    where = f" in #{room}" if room else ""
    if not people:
        text = f"Nothing to summarise{where} yet: I have not seen any messages."
        return Summary(text=text, head=text, items=(), topics=(), speakers=(), cap=max_chars)
    cap = summary_cap([lines[i] for i in people], max_chars)
    counts = Counter(lines[i].sender for i in people)
    nicks = {n.casefold() for n in counts} | ({me} if me else set())
    speakers = tuple(nick for nick, _ in counts.most_common())

    # The head: the richest that leaves half the room for what was said, else the richest
    # that fits at all.
    heads = [
        _head(lines, people, counts, room, tz, times=t, per_speaker=p, named=n)
        for t, p, n in (
            (True, True, SPEAKERS_NAMED),
            (True, False, SPEAKERS_NAMED),
            (False, False, SPEAKERS_NAMED),
            (False, False, 3),
            (False, False, 1),
        )
    ]
    head = next(
        (h for h in heads if len(h) <= cap * 0.5),
        next((h for h in heads if len(h) <= cap), heads[-1]),
    )
    head = clip(head, cap)
    # Topics while they leave room for what was said (a short summary reports a line first).
    topics = _topics(lines, people, nicks)
    topic_text = f" Topics: {', '.join(topics)}." if topics else ""
    while topics and cap - len(head) - len(topic_text) < min(cap * 0.4, 120):
        topics = topics[:-1]
        topic_text = f" Topics: {', '.join(topics)}." if topics else ""

    sentences = _score(_sentences(lines, people), nicks)
    budget = cap - len(head) - len(topic_text) - 1
    chosen: dict[int, Item] = {}
    used = 0

    def consider(s: _Sentence) -> None:
        nonlocal used
        if s.order in chosen or s.score <= 0:
            return
        if any(
            len(s.stems & set(words(c.quote))) >= DUPLICATE * max(1, len(s.stems))
            for c in chosen.values()
        ):
            return
        quote = s.text if len(s.text) <= QUOTE_MAX else clip(s.text, QUOTE_MAX)
        item = Item(
            line=s.line, order=s.order, sender=s.sender, quote=quote, kind=s.kind, action=s.action
        )
        cost = len(item.render()) + 2
        if used + cost > budget:
            # Too long as it is: its beginning may still fit.
            room_left = budget - used - (len(item.render()) - len(quote)) - 2
            if room_left < 40:
                return
            item = Item(
                line=s.line,
                order=s.order,
                sender=s.sender,
                quote=clip(s.text, room_left),
                kind=s.kind,
                action=s.action,
            )
            cost = len(item.render()) + 2
        chosen[s.order] = item
        used += cost

    by_score = sorted(sentences, key=lambda s: (-s.score, s.order))
    for s in by_score:  # decisions and open questions first
        if s.kind in (Kind.DECISION, Kind.OPEN):
            consider(s)
    for nick in speakers:  # then who said what: each speaker's most telling sentence
        if all(c.sender != nick for c in chosen.values()):
            best = next((s for s in by_score if s.sender == nick), None)
            if best is not None:
                consider(best)
    for s in by_score:  # then the best of the rest
        consider(s)

    items = tuple(chosen[k] for k in sorted(chosen))
    body = "; ".join(item.render() for item in items)
    text = head + topic_text + (" " + body if body else "")
    return Summary(
        text=clip(text, cap),
        head=head,
        items=items,
        topics=tuple(topics),
        speakers=speakers,
        cap=cap,
    )


def summarise(
    lines: Sequence[ChatLine],
    *,
    max_chars: int = 1500,
    room: str | None = None,
    bot_nick: str = "",
    tz: dt.tzinfo | None = None,
) -> str:
    """A one-paragraph extractive summary of `lines` (see `plan`)."""
    return plan(lines, max_chars=max_chars, room=room, bot_nick=bot_nick, tz=tz).text


# -- a model's summary, checked ----------------------------------------------------------------

# Words a summary uses about a conversation that the conversation itself need not contain.
_META = frozenset(
    words(
        """summary summarise summarize conversation chat discussed discussion discuss talked
        talk mentioned mention said say says asked ask asking question questions answered
        answer replied reply suggested suggest proposed propose agreed agree decided decision
        plan planned noted note pointed point explained explain wondered wonder confirmed
        confirm raised raise open still unanswered topic topics also then later first finally
        meanwhile others everyone group team participants people someone they he she it their
        his her while about regarding whether wants wanted will would could should""".replace(
            "\n", " "
        )
    )
)
_NAMEISH = re.compile(r"(?<![\w'])(@?[A-Z][\w-]*|[#@/][\w-]+|--[\w-]+|\w*\d[\w.:-]*)")
_QUOTED = re.compile(r"[\"“]([^\"”]{3,})[\"”]")
GROUNDED_SHARE = 0.6  # of a summary's content words that must be the conversation's


def grounding_problems(
    summary: str, lines: Sequence[ChatLine], *, cap: int, bot_nick: str = ""
) -> list[str]:
    """Why `summary` is not grounded in `lines` (empty: it is). Checked: it fits `cap`; it
    names someone who spoke; every name, number, command and quoted phrase it uses appears in
    the lines; most of its content words are the conversation's."""
    problems: list[str] = []
    text = one_line(summary)
    if not text:
        return ["it is empty"]
    if len(text) > cap:
        problems.append(f"{len(text)} characters, over the cap of {cap}")
    me = bot_nick.casefold()
    people = [ln for ln in lines if ln.sender.casefold() != me or not me]
    transcript = "\n".join(f"{ln.sender}: {ln.text}" for ln in lines)
    folded = transcript.casefold()
    speakers = {ln.sender.casefold() for ln in people}
    if speakers and not any(
        re.search(rf"(?<![\w-]){re.escape(n)}(?![\w-])", text.casefold()) for n in speakers
    ):
        problems.append("it names nobody who spoke")
    sentence_starts = {m.end() for m in re.finditer(r"(^|[.!?:;]\s+)", text)}
    for m in _NAMEISH.finditer(text):
        token = m[1].rstrip(".:-")
        if not token or (m.start() in sentence_starts and token[0].isupper() and token.isalpha()):
            continue  # a capital at a sentence's start is no name
        if token.lower() in STOPWORDS or token in ("I", "OK"):
            continue
        if token.casefold().lstrip("@") not in folded:
            problems.append(f"{token!r} is not in the conversation")
    for m in _QUOTED.finditer(text):
        if one_line(m[1]).casefold().rstrip(ELLIPSIS + ".") not in one_line(transcript).casefold():
            problems.append(f"the quote {m[1]!r} is not in the conversation")
    said = set(words(transcript))
    content = [w for w in words(text) if w not in _META and not w.isdigit()]
    if content:
        share = sum(w in said for w in content) / len(content)
        if share < GROUNDED_SHARE:
            problems.append(f"only {share:.0%} of its words are the conversation's")
    return problems


class GroundedSummaries:
    """A backend whose summaries are checked against the lines they summarise (see
    `grounding_problems`) and replaced by the extractive one when they fail the check or the
    backend fails. Anything else passes through as it is, streamed."""

    def __init__(self, inner: Backend) -> None:
        self.inner = inner
        self.name = inner.name
        self.strip_speaker = inner.strip_speaker
        self.fallbacks = 0  # summaries replaced by the extractive one

    def complete(self, prompt: Prompt) -> Iterator[str]:
        if prompt.kind is not TurnKind.SUMMARY:
            yield from self.inner.complete(prompt)
            return
        extractive = summarise(
            prompt.context, max_chars=prompt.max_chars, room=prompt.room, bot_nick=prompt.bot_nick
        )
        try:
            text = one_line("".join(self.inner.complete(prompt)))
        except BackendError as exc:
            self.fallbacks += 1
            log.info(
                "the %s backend could not summarise (%s): sent the extractive summary",
                self.name,
                exc,
            )
            yield extractive
            return
        problems = grounding_problems(
            text, prompt.context, cap=prompt.max_chars, bot_nick=prompt.bot_nick
        )
        if problems:
            self.fallbacks += 1
            log.info(
                "the %s backend's summary was not grounded in the lines (%s): sent the "
                "extractive summary instead",
                self.name,
                "; ".join(problems[:3]),
            )
            yield extractive
            return
        yield text

    def cancel(self) -> None:
        cancel = getattr(self.inner, "cancel", None)
        if cancel is not None:
            cancel()

    def close(self) -> None:
        self.inner.close()
