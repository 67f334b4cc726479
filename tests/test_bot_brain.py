"""The bot's decisions without any IO: triggers, cadence, rate limit, loop guard, context."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from chatctl.bot.brain import Brain, ChatLine, SummaryRequest, Turn, TurnKind, parse_summary
from chatctl.bot.config import REACTION_TIME, BrainSettings


def make(now: float = 0.0, **settings: object) -> Brain:
    base: dict[str, object] = {"reply_rate": 0.0}  # no rate limit unless a test asks for one
    base.update(settings)
    return Brain(BrainSettings(**base), now=now)  # type: ignore[arg-type]


def say(brain: Brain, sender: str, text: str, now: float, room: str = "lobby") -> list[Turn]:
    return brain.observe(ChatLine(sender=sender, text=text, ts=now, room=room), now)


def dm(brain: Brain, sender: str, text: str, now: float) -> list[Turn]:
    return brain.observe(ChatLine(sender=sender, text=text, ts=now), now)


@pytest.mark.parametrize(
    ("text", "question"),
    [
        ("@ai how do I change my nick?", "how do I change my nick?"),
        ("ai: how do I change my nick?", "how do I change my nick?"),
        ("AI, what is /me?", "what is /me?"),
        ("hey @ai, summary", "hey summary"),
        ("@AI", ""),
    ],
)
def test_mentions_address_the_bot(text: str, question: str) -> None:
    brain = make()
    (turn,) = say(brain, "alice", text, 1.0)
    assert turn.room == "lobby" and turn.to is None
    assert turn.prompt.asker == "alice"
    assert turn.prompt.question == question.strip()


@pytest.mark.parametrize(
    "text", ["hello everyone", "email me at x@aix.org", "@aim test", "said ai: no", "maid: hi"]
)
def test_other_lines_do_not(text: str) -> None:
    assert say(make(), "alice", text, 1.0) == []


def test_direct_message_is_always_addressed() -> None:
    brain = make()
    (turn,) = dm(brain, "bob", "how do I leave a room?", 1.0)
    assert turn.to == "bob" and turn.room is None
    assert turn.prompt.kind is TurnKind.ANSWER
    assert turn.prompt.question == "how do I leave a room?"


def test_every_lines_cadence_counts_human_lines_since_the_bot_spoke() -> None:
    brain = make(every_lines=3)
    assert say(brain, "a", "one", 1) == []
    assert say(brain, "b", "two", 2) == []
    (turn,) = say(brain, "a", "three", 3)
    assert turn.prompt.kind is TurnKind.CHIME and turn.room == "lobby"
    assert [ln.text for ln in turn.prompt.context] == ["one", "two", "three"]
    brain.spoke(turn, "a remark", 3.5)
    assert say(brain, "a", "four", 4) == []
    assert say(brain, "bob", "five", 5) == []
    assert say(brain, "c", "six", 6) != []


def test_a_mention_resets_the_line_count() -> None:
    brain = make(every_lines=2)
    assert say(brain, "a", "one", 1) == []
    (turn,) = say(brain, "b", "@ai hi", 2)
    assert turn.prompt.kind is TurnKind.ANSWER
    assert say(brain, "a", "three", 3) == []


def test_every_seconds_fires_only_while_the_room_is_active() -> None:
    brain = make(every_seconds=10.0)
    assert brain.tick(100.0) == [] and brain.next_deadline() is None
    assert say(brain, "a", "hello", 100.0) == []
    assert brain.next_deadline() == 110.0
    assert brain.tick(109.9) == []
    (turn,) = brain.tick(110.0)
    assert turn.prompt.kind is TurnKind.CHIME
    # Quiet room: no further turns, however long we wait.
    assert brain.next_deadline() is None
    assert brain.tick(500.0) == []
    assert say(brain, "b", "back again", 600.0) == []
    assert [t.prompt.kind for t in brain.tick(610.0)] == [TurnKind.CHIME]


def answers(turns: list[Turn]) -> list[Turn]:
    """The turns that go to the backend (not the bot's notices)."""
    return [t for t in turns if t.text is None]


def notices(turns: list[Turn]) -> list[str]:
    return [t.text for t in turns if t.text is not None]


def test_rate_limit_queues_questions_and_says_so_once() -> None:
    brain = make(reply_rate=6.0, burst=2)  # one token every 10 s, two at once
    turns = [say(brain, f"user{i}", "@ai hi", 0.1 * i) for i in range(5)]
    assert [len(answers(t)) for t in turns] == [1, 1, 0, 0, 0]
    # The first question held back is told, in a few words, when its answer will come.
    assert notices(turns[2]) == [
        "user2: one moment: I answer at most 6 replies a minute, so yours comes in about 10 s."
    ]
    assert notices(turns[3]) == notices(turns[4]) == []  # once
    skips = brain.drain_skips()
    assert [(s.reason, s.sender, s.later) for s in skips] == [
        ("rate limit", f"user{i}", True) for i in (2, 3, 4)
    ]
    assert skips[0].message == (
        "holding user2's question in #lobby for about 10 s: the rate limit (6 replies a "
        "minute) is reached, 1 waiting; said so"
    )
    assert brain.skipped["rate limit"] == 0  # nothing was dropped
    # Then they are answered in turn, one per token, first come first.
    assert brain.next_deadline() == pytest.approx(10.0, abs=0.2)
    assert brain.tick(9.0) == []
    (released,) = brain.tick(10.2)
    assert released.prompt.asker == "user2" and released.waited == pytest.approx(10.0)
    assert [t.prompt.asker for t in brain.tick(20.2)] == ["user3"]
    assert [t.prompt.asker for t in brain.tick(30.2)] == ["user4"]
    assert brain.next_deadline() is None
    # The backlog is over; a new one is announced again.
    assert notices(say(brain, "a", "@ai hi", 31.0)) != []


def test_a_full_queue_turns_questions_away_and_says_so_once() -> None:
    brain = make(reply_rate=1.0, burst=1, queue_limit=2)
    assert answers(say(brain, "a", "@ai one", 0.0))
    assert notices(say(brain, "b", "@ai two", 0.1))  # queued, told
    assert not notices(say(brain, "c", "@ai three", 0.2))  # queued
    assert notices(say(brain, "d", "@ai four", 0.3)) == [
        "d: too many questions at once; please ask again in a minute."
    ]
    assert say(brain, "e", "@ai five", 0.4) == []
    assert brain.skipped["queue full"] == 2
    assert [t.prompt.asker for t in brain.tick(61.0)] == ["b"]


def test_cadence_turns_over_the_rate_limit_are_skipped_not_queued() -> None:
    brain = make(every_lines=1, reply_rate=6.0, burst=1)
    assert answers(say(brain, "alice", "one", 0.0))
    assert say(brain, "bob", "two", 5.0) == []  # a cadence turn: nobody asked, nothing said
    (skip,) = brain.drain_skips()
    assert skip.message == (
        "skipped a cadence turn in #lobby: the rate limit (6 replies a minute) is reached"
    )
    assert brain.next_deadline() is None


def test_never_answers_itself_or_bots() -> None:
    brain = make(every_lines=1, ignore=("eliza",))
    for sender in ("ai", "AI", "helperbot", "NewsBot", "eliza"):
        assert say(brain, sender, "@ai are you there?", 1.0) == []
        assert dm(brain, sender, "are you there?", 1.0) == []
    # Their lines are still context for a person's question.
    (turn,) = say(brain, "alice", "@ai what did helperbot say?", 2.0)
    assert "NewsBot" in {ln.sender for ln in turn.prompt.context}


def test_loop_guard_stops_a_fast_ping_pong_and_says_so_once() -> None:
    brain = make()  # reaction time 1.5 s, at most 2 machine-speed replies in a row
    answered = []
    said: list[str] = []
    now = 0.0
    for _ in range(8):
        turns = say(brain, "eliza", "@ai and what do you think?", now)
        answered.append(bool(answers(turns)))
        said += notices(turns)
        for turn in turns:
            brain.spoke(turn, turn.text or "I think so.", now + 0.1)
        now += 0.5
    assert answered == [True, True, False, False, False, False, False, False]
    assert said == [
        "eliza: you answer faster than anyone can read, so I'll pause our exchange for 10 s."
    ]
    skips = brain.drain_skips()
    assert [(s.reason, s.channel, s.sender) for s in skips] == [
        ("loop guard", "#lobby", "eliza")
    ] * 6
    assert skips[0].message == (
        "did not answer eliza in #lobby: eliza answered me within 1.5 s twice in a row, like a "
        "bot; not answering eliza there until it has been quiet for 10 s; said so"
    )
    assert skips[1].message == (
        "did not answer eliza in #lobby: still ignoring eliza there (it spoke again within 10 s)"
    )
    assert brain.drain_skips() == []
    # Quiet for a whole loop window: the nick may talk to the bot again.
    assert answers(say(brain, "eliza", "@ai hello again", now + 11.0))
    # Other people are not held up meanwhile.
    brain2 = make()
    for i in range(3):
        for turn in say(brain2, "eliza", "@ai ping", i * 0.2):
            brain2.spoke(turn, "pong", i * 0.2 + 0.05)
    assert answers(say(brain2, "alice", "@ai hello", 0.7))


def test_two_people_asking_in_turn_right_after_each_others_answers() -> None:
    """The issue's chat: bob and alice take turns, each asking about a second after the bot
    answered the other, one question a second for a minute. Nobody is answering the bot, so
    nobody is held back (no rate limit here)."""
    brain = make()
    now = 0.0
    for i in range(60):
        asker = "alice" if i % 2 else "bob"
        turns = say(brain, asker, f"@ai question {i}?", now)
        (turn,) = turns
        assert turn.text is None and turn.prompt.asker == asker
        brain.spoke(turn, f"{asker}: an answer", now + 0.05)
        now += 1.0  # the other asks 0.95 s after this answer: within the reaction time
    assert brain.drain_skips() == []


def test_a_person_answering_the_bot_twice_at_machine_speed_is_told() -> None:
    """The same rule for a person who really is that quick (rare): told once, not silently."""
    brain = make()
    (turn,) = say(brain, "alice", "@ai hi", 0.0)
    brain.spoke(turn, "hello", 0.1)
    (turn,) = say(brain, "alice", "@ai thanks", 0.5)  # fast: one in a row is allowed
    brain.spoke(turn, "you're welcome", 0.6)
    assert notices(say(brain, "alice", "@ai and?", 1.0))


def test_a_human_asking_quickly_gets_every_answer() -> None:
    # Four questions within about 6 s, each answered at once: the old guard (3 in 10 s)
    # silently dropped the fourth.
    brain = make(every_lines=1)
    now = 0.0
    for i in range(8):
        (turn,) = say(brain, "alice", f"@ai question {i}", now)
        brain.spoke(turn, "answer", now + 0.05)
        now += 1.8
    for i in range(8):
        (turn,) = dm(brain, "bob", f"question {i}", now)
        brain.spoke(turn, "answer", now + 0.05)
        now += 1.6
    assert brain.skipped["loop guard"] == 0 and brain.drain_skips() == []


def test_a_slow_backend_does_not_make_a_human_look_fast() -> None:
    brain = make()
    now = 0.0
    for _ in range(5):
        (turn,) = say(brain, "alice", "@ai explain", now)
        now += 8.0  # the model takes 8 s; the next question comes 2 s after the reply
        brain.spoke(turn, "a long answer", now)
        now += 2.0


def test_two_cadence_bots_do_not_keep_each_other_talking() -> None:
    one = make(nick="sage", every_lines=1)
    two = make(nick="oracle", every_lines=1)
    now = 0.0
    turns = say(one, "alice", "hello", now)  # a person starts it
    speakers = [one, two]
    said = 0
    for step in range(50):
        speaker, listener = speakers[step % 2], speakers[(step + 1) % 2]
        if not turns:
            break
        (turn,) = turns
        now += 0.05
        speaker.spoke(turn, "a remark", now)
        said += 1
        turns = say(listener, speaker.nick, "a remark", now)
    assert turns == [] and said <= 4
    assert [s.reason for s in one.drain_skips() + two.drain_skips()] == ["loop guard"]


def test_ignored_senders_and_the_rate_limit_are_reported() -> None:
    brain = make(reply_rate=6.0, burst=1, ignore=("eliza",))
    assert say(brain, "newsbot", "@ai hi", 0.0) == []
    assert say(brain, "newsbot", "just news", 0.0) == []  # not a trigger: nothing to report
    assert dm(brain, "eliza", "hi", 0.0) == []
    assert answers(say(brain, "alice", "@ai hi", 1.0))
    assert not answers(say(brain, "bob", "@ai hi", 4.0))
    assert [(s.reason, s.sender, s.message) for s in brain.drain_skips()] == [
        (
            "ignored sender",
            "newsbot",
            'did not answer newsbot in #lobby: its nick ends in "bot", so it is taken for a bot',
        ),
        (
            "ignored sender",
            "eliza",
            "did not answer eliza in direct messages with eliza: eliza is on the --ignore list",
        ),
        (
            "rate limit",
            "bob",
            "holding bob's question in #lobby for about 7 s: the rate limit (6 replies a "
            "minute) is reached, 1 waiting; said so",
        ),
    ]


@given(st.lists(st.floats(REACTION_TIME, 60.0), min_size=1, max_size=30), st.floats(0, 5))
def test_property_human_paced_triggers_are_never_guarded(gaps: list[float], latency: float) -> None:
    """Whatever the backend's latency, a person who answers no sooner than a reaction time
    after the bot's reply always gets an answer (with no rate limit)."""
    brain = make(every_lines=1)
    now = 0.0
    for gap in gaps:
        (turn,) = say(brain, "alice", "@ai and then?", now)
        now += latency
        brain.spoke(turn, "an answer", now)
        now += gap


@given(st.lists(st.floats(0.0, REACTION_TIME * 0.99), min_size=1, max_size=30))
def test_property_machine_speed_never_gets_more_than_max_streak(gaps: list[float]) -> None:
    brain = make()
    now = 100.0
    replies = 0
    for gap in gaps:
        turns = say(brain, "eliza", "@ai again", now)
        replies += len(answers(turns))
        for turn in turns:
            brain.spoke(turn, "again", now)
        now += gap
    assert replies <= 2


def test_summary_reads_mentions_as_questions_and_keeps_the_bots_answers_as_context() -> None:
    brain = make()
    (turn,) = say(brain, "alice", "@ai how do I change my nick?", 1.0)
    brain.spoke(turn, "like so", 1.5)
    (turn,) = say(brain, "bob", "@ai summary", 2.0)
    # The bot's answer shows the question was answered; the summary never reports it.
    assert [(ln.sender, ln.text) for ln in turn.prompt.context] == [
        ("alice", "how do I change my nick?"),
        ("ai", "like so"),
    ]


def test_context_window_has_a_count_and_a_character_budget() -> None:
    brain = make(context_messages=5, context_chars=100)
    for i in range(20):
        say(brain, "alice", f"line {i:02d}", float(i))
    (turn,) = say(brain, "bob", "@ai ?", 30.0)
    assert [ln.text for ln in turn.prompt.context] == [f"line {i:02d}" for i in range(15, 20)]
    say(brain, "carol", "x" * 60, 31.0)
    say(brain, "carol", "y" * 60, 32.0)
    (turn,) = say(brain, "bob", "@ai ?", 33.0)
    assert sum(len(ln.sender) + len(ln.text) + 2 for ln in turn.prompt.context) <= 100
    assert turn.prompt.context[-1].text == "y" * 60


def test_history_replay_is_context_but_never_a_trigger() -> None:
    brain = make(every_lines=1)
    line = ChatLine(sender="alice", text="@ai old question", ts=1.0, room="lobby", history=True)
    assert brain.observe(line, 1.0) == []
    assert brain.log("lobby") == [line]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("summary", SummaryRequest()),
        ("Summary 20", SummaryRequest(count=20)),
        ("summarise the last 15 messages", SummaryRequest(count=15)),
        ("summarize", SummaryRequest()),
        ("recap #dev", SummaryRequest(room="dev")),
        ("summary 5 of dev?", SummaryRequest(count=5, room="dev")),
        ("summary since 14:30", SummaryRequest(since=(14, 30))),
        ("summary since 9:05", SummaryRequest(since=(9, 5))),
        ("summary since 2pm", SummaryRequest(since=(14, 0))),
        ("summary since 12:15am", SummaryRequest(since=(0, 15))),
        ("summary since 14:30 UTC", SummaryRequest(since=(14, 30), utc=True)),
        ("summary @bob", SummaryRequest(nick="bob")),
        ("summary from bob", SummaryRequest(nick="bob")),
        ("tl;dr by @bob in #dev since 8:00", SummaryRequest(nick="bob", room="dev", since=(8, 0))),
        ("summary of the last 20 messages of #ops", SummaryRequest(count=20, room="ops")),
    ],
)
def test_summary_requests_parse(text: str, expected: SummaryRequest) -> None:
    assert parse_summary(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "summary of what happened yesterday at work",
        "how do I",
        "",
        "summary since lunch",
        "summary since 25:00",
        "summary since 14",  # a bare number is no time
        "summary 5 10",
    ],
)
def test_other_questions_are_not_summaries(text: str) -> None:
    assert parse_summary(text) is None


def test_summary_takes_the_last_n_messages_without_requests() -> None:
    brain = make()
    for i in range(10):
        say(brain, "alice" if i % 2 else "bob", f"message {i}", float(i))
    (turn,) = say(brain, "carol", "@ai summary 4", 11.0)
    assert turn.prompt.kind is TurnKind.SUMMARY and turn.room == "lobby"
    assert [ln.text for ln in turn.prompt.context] == [f"message {i}" for i in range(6, 10)]
    brain.spoke(turn, "a summary", 11.5)
    say(brain, "erin", "one more", 11.8)
    (turn,) = say(brain, "dave", "@ai summary 2", 12.0)
    # The last 2 messages of people, and the bot's line between them as context.
    assert [ln.text for ln in turn.prompt.context] == ["message 9", "a summary", "one more"]
    texts = [ln.text for ln in turn.prompt.context]
    assert "@ai summary 4" not in texts and "summary 4" not in texts


def test_a_summary_is_capped_at_a_third_of_its_transcript() -> None:
    brain = make()
    for i in range(30):
        say(brain, "alice" if i % 2 else "bob", f"a fairly ordinary message number {i}", float(i))
    (turn,) = say(brain, "carol", "@ai summary", 40.0)
    chars = sum(len(ln.sender) + len(ln.text) + 3 for ln in turn.prompt.context)
    assert turn.prompt.max_chars == chars // 3
    (turn,) = say(brain, "carol", "@ai summary 1", 41.0)
    assert turn.prompt.max_chars == 120  # a floor for very short conversations


UTC = dt.UTC
NOON = dt.datetime(2026, 5, 4, 12, 0, tzinfo=UTC).timestamp()


def at(brain: Brain, sender: str, text: str, minutes: float, room: str = "lobby") -> list[Turn]:
    """A room line stamped `minutes` after noon UTC by the server."""
    wall = NOON + minutes * 60
    line = ChatLine(sender=sender, text=text, ts=minutes * 60, room=room, wall=wall)
    return brain.observe(line, minutes * 60)


def test_summary_since_a_time_and_of_one_nick() -> None:
    brain = Brain(BrainSettings(reply_rate=0.0, summary_default=2), now=0.0, tz=UTC)
    at(brain, "alice", "before noon-thirty", 10)
    at(brain, "bob", "the deploy is at three", 31)
    at(brain, "alice", "then I will prepare the release notes", 40)
    at(brain, "bob", "and I will tell the customers", 50)
    (turn,) = at(brain, "carol", "@ai summary since 12:30", 55)
    assert [ln.text for ln in turn.prompt.context] == [
        "the deploy is at three",
        "then I will prepare the release notes",
        "and I will tell the customers",
    ]  # all since 12:30, not only summary_default
    (turn,) = at(brain, "carol", "@ai summary since 12:45pm", 56)
    assert [ln.sender for ln in turn.prompt.context] == ["bob"]
    (turn,) = at(brain, "carol", "@ai summary @alice", 57)
    assert [ln.text for ln in turn.prompt.context] == [
        "before noon-thirty",
        "then I will prepare the release notes",
    ]
    (turn,) = at(brain, "carol", "@ai summary of what bob said", 58)
    assert turn.prompt.kind is TurnKind.ANSWER  # not a request: a question
    (turn,) = at(brain, "carol", "@ai summary from bob since 12:45 UTC", 59)
    assert [ln.text for ln in turn.prompt.context] == ["and I will tell the customers"]
    # A time later than now is yesterday's: everything (the question to the bot included).
    (turn,) = at(brain, "carol", "@ai summary since 13:30", 60)
    assert len(turn.prompt.context) == 5
    assert turn.prompt.question == "summary of the messages since 13:30"


def test_summary_by_direct_message_names_a_room() -> None:
    brain = make()
    say(brain, "alice", "in lobby", 1.0)
    say(brain, "bob", "in dev", 2.0, room="dev")
    (turn,) = dm(brain, "carol", "summary #lobby", 3.0)
    assert turn.to == "carol" and turn.prompt.room == "lobby"
    assert [ln.text for ln in turn.prompt.context] == ["in lobby"]
    (turn,) = dm(brain, "carol", "summary", 4.0)
    assert turn.prompt.room == "dev"  # the most recently active room


def test_rename_follows_the_assigned_nick() -> None:
    brain = make()
    brain.rename("ai2")
    assert say(brain, "alice", "@ai hi", 1.0) == []
    assert say(brain, "alice", "@ai2 hi", 2.0) != []
    assert say(brain, "ai2", "@ai2 echo", 3.0) == []


# -- the brain as a state machine ---------------------------------------------------------------

NICKS = ["alice", "bob", "ai", "newsbot", "eliza"]
TEXTS = ["hello", "@ai hi", "ai: what?", "@ai summary", "@ai summary 3", "ok", "@ai"]


class BrainMachine(RuleBasedStateMachine):
    """Whatever arrives, in any order: the brain never answers itself or a bot, never exceeds
    its rate, and its context always fits the budget."""

    RATE = 6.0  # per minute
    BURST = 2

    @initialize(every_lines=st.none() | st.integers(1, 4))
    def start(self, every_lines: int | None) -> None:
        self.now = 0.0
        self.brain = Brain(
            BrainSettings(
                every_lines=every_lines,
                every_seconds=5.0,
                reply_rate=self.RATE,
                burst=self.BURST,
                context_messages=4,
                context_chars=120,
                ignore=("eliza",),
            ),
            now=0.0,
        )
        self.turn_times: list[float] = []

    def _check(self, turns: list[Turn], sender: str | None) -> None:
        if sender is not None and turns:
            assert sender in ("alice", "bob")
        for turn in turns:
            if turn.text is not None:  # a notice: costs no token, sent once per episode
                assert turn.prompt.kind is TurnKind.NOTICE
                self.brain.spoke(turn, turn.text, self.now)
                continue
            self.turn_times.append(self.now)
            ctx = turn.prompt.context
            if turn.prompt.kind is not TurnKind.SUMMARY:
                assert len(ctx) <= 4
                assert sum(len(ln.sender) + len(ln.text) + 2 for ln in ctx) <= 120
            if turn.prompt.kind is TurnKind.ANSWER and sender is not None:
                assert turn.prompt.asker == sender
            self.brain.spoke(turn, "reply", self.now)

    @rule(
        sender=st.sampled_from(NICKS),
        text=st.sampled_from(TEXTS) | st.text(max_size=40),
        room=st.sampled_from(["lobby", "dev"]),
    )
    def message(self, sender: str, text: str, room: str) -> None:
        self._check(say(self.brain, sender, text, self.now, room), sender)

    @rule(sender=st.sampled_from(NICKS), text=st.sampled_from(TEXTS))
    def direct(self, sender: str, text: str) -> None:
        turns = dm(self.brain, sender, text, self.now)
        self._check(turns, sender)
        assert all(t.to == sender for t in turns)

    @rule(seconds=st.floats(0.0, 30.0))
    def wait(self, seconds: float) -> None:
        self.now += seconds
        self._check(self.brain.tick(self.now), None)

    @invariant()
    def rate_is_bounded(self) -> None:
        # In any window of W seconds: at most BURST + W * rate turns. Windows that end at an
        # earlier turn were checked when that turn was the latest.
        times = self.turn_times
        for i, start in enumerate(times):
            window = times[-1] - start
            assert len(times) - i <= self.BURST + window * self.RATE / 60.0 + 1e-9


TestBrainMachine = BrainMachine.TestCase


PLAIN = st.text(st.characters(blacklist_characters="@:,", codec="utf-8"), max_size=80)


@given(PLAIN)
def test_property_mention_is_stripped_from_the_question(question: str) -> None:
    assert make().addressed(f"@ai {question}") == " ".join(question.split())


@given(st.text(max_size=200))
def test_property_text_without_the_nick_is_never_addressed(text: str) -> None:
    if "ai" not in text.casefold():
        assert make().addressed(text) is None
