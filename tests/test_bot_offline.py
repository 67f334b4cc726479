"""The offline backend: retrieval from the user guide, extractive summaries, honesty."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chatctl.bot.brain import ChatLine, Prompt, TurnKind
from chatctl.bot.knowledge import Index, parse_knowledge, parse_markdown, stem, words
from chatctl.bot.offline import OfflineBackend, default_guide
from chatctl.bot.summary import summarise
from chatctl.errors import ChatctlError

GUIDE = OfflineBackend.from_file(None)


def ask(question: str, backend: OfflineBackend = GUIDE, max_chars: int = 1500) -> str:
    prompt = Prompt(
        kind=TurnKind.ANSWER,
        bot_nick="ai",
        question=question,
        asker="alice",
        room="lobby",
        max_chars=max_chars,
    )
    return "".join(backend.complete(prompt))


@pytest.mark.parametrize(
    ("question", "section"),
    [
        ("how do I change my nick?", "Change your nick"),
        ("How can I rename myself?", "Change your nick"),
        ("how do I send a direct message?", "Send a direct message"),
        ("how do I DM someone", "Send a direct message"),
        ("how do I start the server?", "Run the server"),
        ("what are the exit codes of send?", "Exit codes of chatctl send"),
        ("what does exit code 4 mean?", "Exit codes of chatctl send"),
        ("what does /me do?", "Send an action with /me"),
        ("how do I see older messages?", "History and missed messages"),
        ("where is history stored?", "Where history is stored"),
        ("what happens if my connection drops?", "Lost connection and reconnecting"),
        ("how do I install chatctl?", "Install chatctl"),
        ("which bot backends are there?", "Bot backends"),
        ("how do I compare with redis?", "Measure the server with chatctl bench"),
        ("how do I leave a room?", "Leave a room or quit the chat"),
        ("how do I quit?", "Leave a room or quit the chat"),
        ("how do I send a line starting with a slash?", "Commands in the chat"),
        ("how do I run the bot?", "Run the chat bot"),
        ("how can I get a summary of what I missed?", "History and missed messages"),
    ],
)
def test_retrieval_answers_from_the_right_section(question: str, section: str) -> None:
    hit = GUIDE.index.answer(question)
    assert hit is not None, question
    assert hit.section.title == section
    assert ask(question).startswith(f"alice: {section} — ")


@pytest.mark.parametrize(
    "question",
    ["what is the capital of France?", "recommend a good pizza place", "quantum entanglement"],
)
def test_says_plainly_when_it_does_not_know(question: str) -> None:
    assert GUIDE.index.answer(question) is None
    assert "I don't know" in ask(question)


def test_greeting_and_help_explain_what_it_is() -> None:
    assert "offline bot" in ask("hello")
    assert "summary" in ask("")


def test_answers_respect_max_chars() -> None:
    assert len(ask("how do I change my nick?", max_chars=80)) <= 80


def test_guide_ships_in_the_package() -> None:
    guide = default_guide()
    for command in ("/join", "/part", "/rooms", "/who", "/nick", "/msg", "/me", "/quit", "/help"):
        assert command in guide
    assert "/history N" in guide


def test_custom_knowledge_file_plain_text(tmp_path: Path) -> None:
    path = tmp_path / "faq.txt"
    path.write_text(
        "Opening hours\nWe are open from nine to five on weekdays.\n\n"
        "Parking\nVisitors park behind the building, level two.\n",
        encoding="utf-8",
    )
    backend = OfflineBackend.from_file(path)
    assert "behind the building" in ask("where can visitors park?", backend)
    assert "faq.txt" in ask("what is the meaning of life?", backend)


def test_missing_knowledge_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ChatctlError, match="cannot read knowledge file"):
        OfflineBackend.from_file(tmp_path / "nope.md")


def test_markdown_sections_keep_their_heading_path_and_skip_code_headings() -> None:
    sections = parse_markdown(
        "# Top\nintro\n## Child\n```\n# not a heading\n```\ntext\n### Empty\n## Other\nmore\n"
    )
    assert [(s.title, s.path) for s in sections] == [
        ("Top", ("Top",)),
        ("Child", ("Top", "Child")),
        ("Other", ("Top", "Other")),
    ]
    assert "# not a heading" in sections[1].body


def test_stemming_brings_forms_together() -> None:
    assert stem("changing") == stem("changed") == stem("change") == stem("changes")
    assert stem("nicks") == stem("nick")
    assert words("Use /part to leave") == ["/part", "part", "leav"]


@given(st.text(max_size=400), st.text(max_size=80))
def test_property_any_knowledge_and_question_never_crash(knowledge: str, question: str) -> None:
    index = Index(parse_knowledge(knowledge))
    for hit in index.search(question):
        assert hit.score > 0 and 0 < hit.coverage <= 1 + 1e-9


# -- summaries ---------------------------------------------------------------------------------

CONVERSATION = [
    ("alice", "The release is blocked on the database migration."),
    ("bob", "I can finish the migration tonight."),
    ("carol", "Who reviews the migration before the release?"),
    ("alice", "I will review it tomorrow morning."),
    ("bob", "ok"),
    ("dave", "Lunch anyone?"),
]


def lines(pairs: list[tuple[str, str]]) -> list[ChatLine]:
    return [ChatLine(sender=s, text=t, ts=float(i), room="dev") for i, (s, t) in enumerate(pairs)]


def test_summary_names_who_said_what_in_a_third_of_the_space() -> None:
    conversation = lines(CONVERSATION)
    summary = summarise(conversation, room="dev")
    assert summary.startswith("Last 6 messages in #dev, from alice, bob, carol and dave.")
    assert len(summary) <= 120  # a third of 280 characters, or the floor for short ones
    assert 'alice: "The release is blocked on the database migration."' in summary


def test_a_longer_summary_reports_more_and_in_order() -> None:
    summary = summarise(lines(CONVERSATION * 4), room="dev")
    assert len(summary) <= sum(len(s) + len(t) + 3 for s, t in CONVERSATION * 4) / 3
    assert summary.startswith("Last 24 messages in #dev, from alice (8), bob (8), carol (4)")
    assert "Topics: migration, release" in summary
    # Told in order, each line once at most.
    quoted = re.findall(r'"([^"]+)"', summary)
    assert len(quoted) == len(set(quoted)) >= 2


def test_summary_fits_the_budget_and_still_names_people() -> None:
    summary = summarise(lines(CONVERSATION * 10), max_chars=200)
    assert len(summary) <= 200
    assert "alice" in summary and "bob" in summary


def test_summary_of_nothing_says_so() -> None:
    assert "Nothing to summarise" in summarise([], room="dev")


def test_summary_through_the_backend() -> None:
    prompt = Prompt(
        kind=TurnKind.SUMMARY, bot_nick="ai", context=tuple(lines(CONVERSATION * 3)), room="dev"
    )
    summary = "".join(GUIDE.complete(prompt))
    assert summary.startswith("Last 18 messages in #dev, from alice (6), bob (6)")
    assert 'alice: "The release is blocked on the database migration."' in summary


def test_chime_answers_an_open_question_or_recaps() -> None:
    context = lines([("alice", "hi all"), ("bob", "how do I change my nick?")])
    prompt = Prompt(kind=TurnKind.CHIME, bot_nick="ai", context=tuple(context), room="lobby")
    assert GUIDE.reply(prompt).startswith("bob: Change your nick")
    context = lines([("alice", "nice weather"), ("bob", "indeed it is")])
    prompt = Prompt(kind=TurnKind.CHIME, bot_nick="ai", context=tuple(context), room="lobby")
    assert GUIDE.reply(prompt).startswith("Last 2 messages in #lobby")


@given(
    st.lists(
        st.tuples(st.sampled_from(["alice", "bob", "carol"]), st.text(min_size=1, max_size=120)),
        min_size=1,
        max_size=30,
    ),
    st.integers(60, 2000),
)
def test_property_summary_is_bounded_and_names_the_busiest_speaker(
    pairs: list[tuple[str, str]], max_chars: int
) -> None:
    summary = summarise(lines(pairs), max_chars=max_chars)
    assert len(summary) <= max_chars
    counts = {n: sum(1 for s, _ in pairs if s == n) for n in {s for s, _ in pairs}}
    busiest = max(counts, key=lambda n: (counts[n], -[s for s, _ in pairs].index(n)))
    assert busiest in summary
