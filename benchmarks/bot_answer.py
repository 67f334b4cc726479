"""The offline bot's answers to the question set in tests/data/bot_questions.tsv: top-1
section accuracy (tuned and held-out questions apart), the share of off-topic questions
answered "I don't know", and the time to answer one question.

    python -m benchmarks.bot_answer [--rounds 20] [--misses]

Timing: the whole offline reply (retrieval, choosing the sentences, clipping), as the bot's
worker runs it, for every question of the set, `--rounds` times after one warm-up round;
reported as the median, 99th percentile and maximum of wall-clock time and of the thread's
CPU time (on a busy machine the wall clock's tail is the scheduler's time slice, not ours),
and the slowest question. The guide's index is built once, at start-up, as the bot does;
its cost is reported apart.
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

from chatctl.bot.brain import Prompt, TurnKind
from chatctl.bot.offline import OfflineBackend

QUESTIONS = Path(__file__).resolve().parent.parent / "tests" / "data" / "bot_questions.tsv"
OFF_TOPIC = "-"


@dataclass(frozen=True, kw_only=True)
class Question:
    split: str  # "tune" or "held"
    expected: tuple[str, ...]  # acceptable section titles; empty: off-topic
    text: str

    @property
    def off_topic(self) -> bool:
        return not self.expected


def load_questions(path: Path = QUESTIONS) -> list[Question]:
    questions = []
    for raw in path.read_text(encoding="utf-8").splitlines():
        if not raw.strip() or raw.startswith("#"):
            continue
        split, expected, text = raw.split("\t")
        titles = () if expected == OFF_TOPIC else tuple(t.strip() for t in expected.split("|"))
        questions.append(Question(split=split, expected=titles, text=text))
    return questions


@dataclass(frozen=True, kw_only=True)
class Result:
    question: Question
    got: str | None  # the section answered from, or None for "I don't know"

    @property
    def right(self) -> bool:
        if self.question.off_topic:
            return self.got is None
        return self.got in self.question.expected


def evaluate(backend: OfflineBackend, questions: list[Question]) -> list[Result]:
    results = []
    for q in questions:
        hit = backend.index.answer(q.text)
        results.append(Result(question=q, got=None if hit is None else hit.section.title))
    return results


def share(results: list[Result]) -> float:
    return sum(r.right for r in results) / len(results) if results else 1.0


def scores(results: list[Result]) -> dict[str, tuple[float, int]]:
    """Accuracy (share, count) by group: on-topic tune/held/all, off-topic tune/held/all."""
    groups: dict[str, list[Result]] = {}
    for r in results:
        kind = "off-topic" if r.question.off_topic else "on-topic"
        for key in (f"{kind} {r.question.split}", f"{kind} all"):
            groups.setdefault(key, []).append(r)
    return {key: (share(rs), len(rs)) for key, rs in sorted(groups.items())}


def _prompt(question: str) -> Prompt:
    return Prompt(
        kind=TurnKind.ANSWER, bot_nick="ai", question=question, asker="alice", room="lobby"
    )


def time_answers(
    backend: OfflineBackend, questions: list[Question], rounds: int
) -> tuple[dict[str, list[float]], list[float]]:
    """Seconds per whole offline reply: wall clock per question, and CPU time, over `rounds`
    rounds."""
    prompts = {q.text: _prompt(q.text) for q in questions}
    for prompt in prompts.values():  # warm-up: stems cached as they would be in a running bot
        backend.reply(prompt)
    times: dict[str, list[float]] = {text: [] for text in prompts}
    cpu: list[float] = []
    for _ in range(rounds):
        for text, prompt in prompts.items():
            started, started_cpu = time.perf_counter(), time.thread_time()
            backend.reply(prompt)
            cpu.append(time.thread_time() - started_cpu)
            times[text].append(time.perf_counter() - started)
    return times, cpu


def _percentiles(values: list[float]) -> str:
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    median = statistics.median(ordered)
    return (
        f"median {median * 1000:.3f} ms, p99 {p99 * 1000:.3f} ms, max {ordered[-1] * 1000:.3f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--misses", action="store_true", help="list the tuned questions missed")
    args = parser.parse_args()

    started = time.perf_counter()
    backend = OfflineBackend.from_file(None)
    built = time.perf_counter() - started
    questions = load_questions()
    results = evaluate(backend, questions)
    for key, (value, count) in scores(results).items():
        what = "answered 'I don't know'" if key.startswith("off") else "top-1 section right"
        print(f"{key:<18} {value:6.1%} {what} ({count} questions)")
    if args.misses:
        for r in results:
            if not r.right and r.question.split == "tune":
                print(f"  miss: {r.question.text!r}: {r.got!r}, wanted {r.question.expected}")

    times, cpu = time_answers(backend, questions, args.rounds)
    flat = [t for ts in times.values() for t in ts]
    slowest = max(times, key=lambda q: statistics.median(times[q]))
    print(f"index built in {built * 1000:.1f} ms (start-up, once)")
    print(f"answer time over {len(flat)} replies, wall clock: {_percentiles(flat)}")
    print(f"answer time over {len(cpu)} replies, CPU time:   {_percentiles(cpu)}")
    print(
        f"slowest question: {slowest!r}, median {statistics.median(times[slowest]) * 1000:.3f} ms"
    )


if __name__ == "__main__":
    main()
