"""Extractive summaries of a conversation: who took part, and the sentences that carry it.

Luhn's idea, kept small: a sentence matters when it uses the words the conversation keeps
coming back to. Every speaker gets their most telling sentence (so the summary names who said
what), then the best remaining sentences fill the space left, and all are told in order.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from chatctl.bot.brain import ChatLine
from chatctl.bot.knowledge import words
from chatctl.bot.manners import clip, one_line

_SENTENCE = re.compile(r"(?<=[.!?])\s+")


@dataclass(frozen=True, kw_only=True)
class _Sentence:
    order: int
    sender: str
    text: str
    score: float
    question: bool
    action: bool


def _sentences(lines: Sequence[ChatLine]) -> list[_Sentence]:
    freq: Counter[str] = Counter()
    for line in lines:
        freq.update(set(words(line.text)))
    out: list[_Sentence] = []
    for line in lines:
        for part in _SENTENCE.split(one_line(line.text)):
            if not part:
                continue
            ws = words(part)
            # Words said more than once in the conversation carry it; long rambles do not win
            # just by being long.
            weight = sum(freq[w] - 1 for w in ws) + 0.5 * len(set(ws))
            score = weight / math.sqrt(len(ws) + 1)
            out.append(
                _Sentence(
                    order=len(out),
                    sender=line.sender,
                    text=part,
                    score=score + (0.5 if part.endswith("?") else 0.0),
                    question=part.endswith("?"),
                    action=line.action,
                )
            )
    return out


def _names(speakers: Sequence[str]) -> str:
    if len(speakers) <= 1:
        return "".join(speakers)
    return ", ".join(speakers[:-1]) + " and " + speakers[-1]


def _told(s: _Sentence, limit: int) -> str:
    text = clip(s.text, limit)
    if s.action:
        return f"{s.sender} {text}"
    verb = "asked" if s.question else "said"
    return f'{s.sender} {verb} "{text}"'


def summarise(lines: Sequence[ChatLine], *, max_chars: int = 1500, room: str | None = None) -> str:
    """A one-paragraph summary of `lines` in at most `max_chars` characters."""
    where = f" in #{room}" if room else ""
    if not lines:
        return f"Nothing to summarise{where} yet: I have not seen any messages."
    counts = Counter(line.sender for line in lines)
    speakers = [nick for nick, _ in counts.most_common()]
    head = (
        f"Last {len(lines)} message{'s' if len(lines) != 1 else ''}{where}, from "
        f"{_names([f'{n} ({counts[n]})' for n in speakers])}: "
    )
    sentences = _sentences(lines)
    budget = max(40, max_chars - len(head))
    per_sentence = max(40, min(200, budget // max(1, min(len(speakers), 6))))

    chosen: dict[int, _Sentence] = {}
    used = 0
    # First each speaker's best sentence, most active speakers first.
    for nick in speakers:
        best = max((s for s in sentences if s.sender == nick), key=lambda s: s.score, default=None)
        if best is None:
            continue  # said nothing but whitespace
        cost = len(_told(best, per_sentence)) + 2
        if used + cost > budget:
            break
        chosen[best.order] = best
        used += cost
    # Then the best of the rest, while they fit.
    for s in sorted(sentences, key=lambda s: -s.score):
        if s.order in chosen:
            continue
        cost = len(_told(s, per_sentence)) + 2
        if used + cost > budget:
            continue
        chosen[s.order] = s
        used += cost
    body = "; ".join(_told(chosen[k], per_sentence) for k in sorted(chosen))
    left_out = [n for n in speakers if all(s.sender != n for s in chosen.values())]
    tail = f"; also {_names(left_out)}" if left_out else ""
    text = head + body + tail
    return clip(text if text.endswith(('."', '?"', '!"', ".")) else text + ".", max_chars)
