"""Summaries: the extractive one on a corpus of realistic conversations and as properties
(length cap, time order, only real speakers, every reported line traceable), requests
`since HH:MM` and `@nick` through the brain and the offline backend, and the grounding check
that guards a language model's summary."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chatctl.bot.backend import BackendError
from chatctl.bot.brain import (
    SUMMARY_FLOOR,
    Brain,
    ChatLine,
    Prompt,
    TurnKind,
    summary_cap,
    transcript_chars,
)
from chatctl.bot.config import BrainSettings
from chatctl.bot.manners import ELLIPSIS, one_line
from chatctl.bot.offline import OfflineBackend
from chatctl.bot.summary import GroundedSummaries, Kind, Summary, grounding_problems, plan

UTC = dt.UTC
CORPUS = Path(__file__).parent / "data" / "bot_conversations"
_LINE = re.compile(r"(\d\d):(\d\d) (?:\* (\S+) (.*)|(\S+): (.*))$")


def load(path: Path) -> list[ChatLine]:
    """A conversation file: "HH:MM nick: text" or "HH:MM * nick action" a line, in order (a
    time earlier than the one before is the next day), stamped in UTC."""
    lines: list[ChatLine] = []
    day = 0
    previous: tuple[int, int] | None = None
    for raw in path.read_text(encoding="utf-8").splitlines():
        if not raw.strip() or raw.startswith("#"):
            continue
        m = _LINE.match(raw)
        assert m is not None, raw
        clock = (int(m[1]), int(m[2]))
        if previous is not None and clock < previous:
            day += 1
        previous = clock
        wall = dt.datetime(2026, 3, 2, *clock, tzinfo=UTC).timestamp() + day * 86400
        action = m[3] is not None
        lines.append(
            ChatLine(
                sender=m[3] if action else m[5],
                text=m[4] if action else m[6],
                ts=wall,
                room="dev",
                action=action,
                wall=wall,
            )
        )
    return lines


CONVERSATIONS = {path.stem: load(path) for path in sorted(CORPUS.glob("*.txt"))}
RELEASE = CONVERSATIONS["release_blocked"]


def check(summary: Summary, lines: list[ChatLine], *, max_chars: int = 1500) -> None:
    """What every summary must be: within its cap, in time order, naming only people who
    spoke (every one whose words it reports), and quoting only what they said."""
    text = summary.text
    people = [ln for ln in lines if ln.sender != "ai"]
    senders = {ln.sender for ln in people}
    assert len(text) <= summary.cap <= max_chars
    assert summary.cap == summary_cap(people, max_chars)
    order = [(item.line, item.order) for item in summary.items]
    assert order == sorted(order) and len(set(order)) == len(order)  # told in time order
    at = 0
    for item in summary.items:
        line = lines[item.line]
        assert item.sender == line.sender != "ai"  # said by whom it says, never by the bot
        assert item.quote.removesuffix(ELLIPSIS).rstrip() in one_line(line.text)  # traceable
        rendered = item.render()
        if not text.endswith(ELLIPSIS):  # a clipped summary may have lost its last item
            at = text.index(rendered, at)  # each reported line appears, in order
            at += len(rendered)
        assert re.search(rf"(?<![\w-]){re.escape(item.sender)}(?![\w-])", text)
    # The only names in it are the speakers': the head's and each item's.
    named = set(re.findall(r"(?:^|; )\*? ?([^\s:;,\"*]+)(?:,| asked|:)", text.split(". ", 1)[-1]))
    named |= set(re.findall(r"(?:from |, | and )([^\s(,.]+) \(\d+\)", summary.head))
    assert named - {"Topics"} <= senders, named - senders
    for topic in summary.topics:
        assert any(topic in ln.text.lower() for ln in people)


@pytest.mark.parametrize("name", CONVERSATIONS)
def test_corpus_summaries_are_short_ordered_and_true(name: str) -> None:
    lines = CONVERSATIONS[name]
    assert 20 <= len(lines) <= 200
    summary = plan(lines, room="dev", bot_nick="ai", tz=UTC)
    check(summary, lines)
    share = len(summary.text) / transcript_chars(lines)
    assert share <= 0.35, f"{name}: {share:.0%}"
    assert summary.items, "a summary says something"
    assert len({item.sender for item in summary.items}) >= 2  # who said what, not one voice
    first, last = lines[0], lines[-1]
    assert summary.text.startswith(f"Last {len(lines)} messages in #dev, ")
    clock = "%a %H:%M" if last.wall - first.wall >= 12 * 3600 else "%H:%M"
    span = [dt.datetime.fromtimestamp(ln.wall, UTC).strftime(clock) for ln in (first, last)]
    assert f"{span[0]} to {span[1]}" in summary.head


def test_the_release_conversation_reports_its_decision() -> None:
    summary = plan(CONVERSATIONS["release_blocked"], room="dev", bot_nick="ai", tz=UTC)
    decisions = [item for item in summary.items if item.kind is Kind.DECISION]
    assert any("carol writes the migration step" in item.quote for item in decisions)
    assert "migration" in summary.topics


def test_an_unanswered_question_is_reported_as_open() -> None:
    end = RELEASE[-1].wall
    lines = [
        *RELEASE,
        ChatLine(sender="erin", text="Who owns the payment sandbox these days?", ts=end + 60),
        ChatLine(sender="erin", text="anyone?", ts=end + 120),
    ]
    summary = plan(lines, bot_nick="ai")
    assert 'erin asked, still open: "Who owns the payment sandbox these days?"' in summary.text
    # Answered right away, it is a question like any other.
    answered = [*lines[:-1], ChatLine(sender="bob", text="the payments team", ts=end + 90)]
    assert "still open" not in plan(answered, bot_nick="ai").text


def test_the_bots_lines_show_answers_but_are_never_reported() -> None:
    lines = [
        ChatLine(sender="ann", text="How do I change my nick in the chat client?", ts=0),
        ChatLine(sender="ai", text="ann: Type /nick NEWNICK in the chat client.", ts=1),
        ChatLine(sender="ann", text="Great, the nick change worked in the chat client.", ts=2),
    ]
    summary = plan(lines, bot_nick="ai")
    assert all(item.sender == "ann" for item in summary.items)
    assert "still open" not in summary.text
    assert "ai" not in re.findall(r"\w+", summary.head)


def test_nothing_to_summarise_says_so() -> None:
    assert "Nothing to summarise" in plan([], room="dev").text
    bot_only = [ChatLine(sender="ai", text="hello", ts=0)]
    assert "Nothing to summarise" in plan(bot_only, bot_nick="ai").text


# -- properties --------------------------------------------------------------------------------

POOL = [ln.text for lines in CONVERSATIONS.values() for ln in lines]
NICKS = ["ann", "ben", "cleo", "dan", "eve", "fay"]


@st.composite
def conversations(draw: st.DrawFn, min_size: int = 20, max_size: int = 200) -> list[ChatLine]:
    """Conversations of realistic lines (from the corpus, or any text now and then), any
    speakers, with the bot's lines among them, stamped a few seconds to minutes apart."""
    size = draw(st.integers(min_size, max_size))
    texts = draw(
        st.lists(
            st.sampled_from(POOL) | st.text(min_size=1, max_size=80),
            min_size=size,
            max_size=size,
        )
    )
    senders = draw(st.lists(st.sampled_from([*NICKS, "ai"]), min_size=size, max_size=size))
    gaps = draw(st.lists(st.integers(1, 600), min_size=size, max_size=size))
    wall = 1_770_000_000.0
    lines = []
    for text, sender, gap in zip(texts, senders, gaps, strict=True):
        wall += gap
        lines.append(ChatLine(sender=sender, text=text, ts=wall, room="dev", wall=wall))
    return lines


@given(conversations(), st.integers(100, 3000))
def test_property_summary_is_bounded_ordered_and_traceable(
    lines: list[ChatLine], max_chars: int
) -> None:
    summary = plan(lines, room="dev", bot_nick="ai", max_chars=max_chars, tz=UTC)
    people = [ln for ln in lines if ln.sender != "ai"]
    if not people:
        return
    check(summary, lines, max_chars=max_chars)
    third = transcript_chars(people) / 3
    assert len(summary.text) <= max(SUMMARY_FLOOR, third)


@given(conversations(min_size=20, max_size=200).filter(lambda ls: len(ls) >= 20))
def test_property_realistic_conversations_stay_under_35_percent(lines: list[ChatLine]) -> None:
    realistic = [ln for ln in lines if ln.text in POOL and ln.sender != "ai"]
    if len(realistic) < 20:
        return
    summary = plan(realistic, bot_nick="ai")
    assert len(summary.text) <= 0.35 * transcript_chars(realistic)


# -- requests through the brain and the offline backend -----------------------------------------


def replay(brain: Brain, lines: list[ChatLine]) -> None:
    for line in lines:
        brain.observe(line, line.wall)


def ask_summary(brain: Brain, text: str, wall: float) -> str:
    request = ChatLine(sender="zoe", text=f"@ai {text}", ts=wall, room="dev", wall=wall)
    (turn,) = brain.observe(request, wall)
    assert turn.prompt.kind is TurnKind.SUMMARY
    return OfflineBackend.from_file(None).reply(turn.prompt)


def test_summary_since_a_time_covers_only_what_was_said_since() -> None:
    lines = CONVERSATIONS["incident"]
    brain = Brain(BrainSettings(reply_rate=0.0), now=0.0, tz=UTC)
    replay(brain, lines)
    morning = ask_summary(brain, "summary since 9:00 UTC", lines[-1].wall + 60)
    later = [ln for ln in lines if dt.datetime.fromtimestamp(ln.wall, UTC).hour >= 9]
    assert morning.startswith(f"Last {len(later)} messages in #dev, 09:00 to 10:12")
    assert "paula" not in morning.split(". ", 1)[0] or "paula" in {ln.sender for ln in later}
    assert "pager went off" not in morning  # said at 03:12
    assert len(morning) <= transcript_chars(later) / 3 + 1


def test_summary_of_one_nick_reports_only_them() -> None:
    lines = CONVERSATIONS["api_design"]
    brain = Brain(BrainSettings(reply_rate=0.0), now=0.0, tz=UTC)
    replay(brain, lines)
    text = ask_summary(brain, "summary @xavier", lines[-1].wall + 60)
    xavier = [ln for ln in lines if ln.sender == "xavier"]
    assert text.startswith(f"Last {len(xavier)} messages in #dev, ")
    assert "from xavier (7)" in text
    for other in ("victor", "uma", "tara", "wes"):
        assert f'{other}: "' not in text and f"{other} asked" not in text


# -- a language model's summary, grounded -------------------------------------------------------

CAP = summary_cap(RELEASE, 1500)
GOOD = (
    "alice said the release is blocked on the database migration of the users table; carol "
    "will build the index concurrently outside the transaction and bob reviews it after "
    "lunch; they ship today if the review is done by three, otherwise Thursday."
)


def test_a_faithful_summary_is_grounded() -> None:
    assert grounding_problems(GOOD, RELEASE, cap=CAP, bot_nick="ai") == []


@pytest.mark.parametrize(
    ("summary", "problem"),
    [
        (GOOD.replace("bob reviews", "Mallory reviews"), "'Mallory' is not in the conversation"),
        (GOOD.replace("by three", "by 5pm"), "'5pm' is not in the conversation"),
        (GOOD.replace("Thursday", "Friday"), "'Friday' is not in the conversation"),
        (GOOD + " Also: " + GOOD, "over the cap"),
        ("The team discussed things and agreed on a plan.", "names nobody who spoke"),
        (
            "alice and bob talked about quarterly revenue forecasts, marketing budgets, hiring "
            "targets and the office relocation to a bigger building downtown.",
            "words are the conversation's",
        ),
        ('alice said "we will rewrite everything in Rust"', "the quote"),
        ("", "empty"),
    ],
)
def test_an_ungrounded_summary_is_caught(summary: str, problem: str) -> None:
    problems = grounding_problems(summary, RELEASE, cap=CAP, bot_nick="ai")
    assert any(problem in p for p in problems), problems


class ScriptedModel:
    """A stand-in language-model backend that says what it is told to."""

    name = "scripted"
    strip_speaker = True

    def __init__(self, *replies: str | BackendError) -> None:
        self.replies = list(replies)

    def complete(self, prompt: Prompt) -> Iterator[str]:
        reply = self.replies.pop(0)
        if isinstance(reply, BackendError):
            raise reply
        yield from reply.split(" ")[:1]
        yield from (" " + w for w in reply.split(" ")[1:])

    def close(self) -> None:
        pass


SUMMARY_PROMPT = Prompt(
    kind=TurnKind.SUMMARY, bot_nick="ai", context=tuple(RELEASE), room="dev", max_chars=CAP
)


def test_a_grounded_model_summary_is_sent_as_it_is() -> None:
    backend = GroundedSummaries(ScriptedModel(GOOD))
    assert "".join(backend.complete(SUMMARY_PROMPT)) == GOOD
    assert backend.fallbacks == 0


@pytest.mark.parametrize(
    "reply",
    [
        GOOD.replace("bob", "Mallory"),
        "Everyone agreed to migrate to Kubernetes next quarter.",
        BackendError("HTTP 500"),
    ],
)
def test_an_ungrounded_or_failed_model_summary_falls_back_to_extractive(
    reply: str | BackendError,
) -> None:
    backend = GroundedSummaries(ScriptedModel(reply))
    text = "".join(backend.complete(SUMMARY_PROMPT))
    assert text == plan(RELEASE, room="dev", bot_nick="ai", max_chars=CAP).text
    assert backend.fallbacks == 1


def test_other_turns_pass_through_streamed() -> None:
    backend = GroundedSummaries(ScriptedModel("Paris is the capital."))
    question = Prompt(kind=TurnKind.ANSWER, bot_nick="ai", question="capital?", asker="bob")
    assert list(backend.complete(question)) == ["Paris", " is", " the", " capital."]
