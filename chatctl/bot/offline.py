"""The default backend: no model, no network, instant. Honest about what it is.

It answers questions from a knowledge file (chatctl's user guide unless told otherwise) by
retrieval (knowledge.py), summarises conversations extractively (summary.py), and says plainly
when it does not know.

An answer is built from the best section: its heading, then the sentences (or list items) of
it that hold most of the question, in the section's order, within about ANSWER_CHARS; if none
of those quotes a command or option (a `code span`), the most relevant one that does is added,
so the answer says what to type.
"""

from __future__ import annotations

import importlib.resources
import re
from collections.abc import Iterator
from pathlib import Path

from chatctl.bot.brain import ChatLine, Prompt, TurnKind
from chatctl.bot.knowledge import Hit, Index, Section, parse_knowledge
from chatctl.bot.manners import clip, one_line
from chatctl.bot.summary import summarise
from chatctl.errors import ChatctlError

GUIDE = "guide.md"
ANSWER_CHARS = 420  # an answer's length aimed at: a few sentences, not the whole section

_GREETING = re.compile(
    r"^\s*(hi|hello|hey|yo|hiya|good (morning|afternoon|evening))( there)?\s*[!.]*\s*$", re.I
)
_THANKS = re.compile(r"^\s*(thanks|thank you|thx|ty|cheers)\b", re.I)
_HELP = re.compile(r"^\s*(help|\?|what can you do\??|who are you\??)\s*$", re.I)


def default_guide() -> str:
    """chatctl's user guide, shipped inside the package so it works after `pip install`."""
    return (importlib.resources.files("chatctl") / "data" / GUIDE).read_text(encoding="utf-8")


_SENTENCE_END = re.compile(r"(?<=[.!?;:])\s+(?=[A-Z`\"(0-9-])")


def units(section: Section) -> list[str]:
    """A section's text as chat-ready pieces, in order: each list item, each sentence of a
    paragraph; links reduced to their text, list marks dropped."""
    out: list[str] = []
    paragraph: list[str] = []

    def flush() -> None:
        if paragraph:
            text = one_line(" ".join(paragraph))
            out.extend(p for p in _SENTENCE_END.split(text) if p)
            paragraph.clear()

    for raw in section.body.splitlines():
        line = raw.strip()
        line = re.sub(r"\[([^\]]+)\]\([^)]*\)", r"\1", line)  # [text](link) -> text
        if not line or line.startswith(("|---", "<!--")):
            flush()
            continue
        item = re.match(r"^[-*+]\s+(.*)", line)
        if item:
            flush()
            paragraph.append(item[1])
        elif raw[:1].isspace() and paragraph:
            paragraph.append(line)  # a list item's continuation
        else:
            paragraph.append(line)
    flush()
    return out


def build_answer(index: Index, hit: Hit, max_chars: int) -> str:
    """The heading of `hit`'s section, and its pieces that answer the question."""
    title = hit.section.title
    pieces = units(hit.section)
    budget = min(max_chars, ANSWER_CHARS) - len(title) - 3
    if sum(len(p) + 1 for p in pieces) <= budget:
        chosen = list(range(len(pieces)))
    else:
        scores = [index.relevance(p, hit.terms) for p in pieces]
        order = sorted(range(len(pieces)), key=lambda i: (-scores[i], i))
        chosen = []
        used = 0
        for i in order:
            if chosen and (scores[i] <= 0 or used + len(pieces[i]) + 1 > budget):
                continue
            chosen.append(i)
            used += len(pieces[i]) + 1
        if not any("`" in pieces[i] for i in chosen):
            quoting = [i for i in order if "`" in pieces[i]]
            if quoting:
                chosen.append(quoting[0])
        chosen.sort()
    body = " ".join(pieces[i] for i in chosen) if pieces else ""
    return clip(f"{title} — {body}" if title else body, max_chars)


class OfflineBackend:
    name = "offline"
    strip_speaker = False

    def __init__(self, knowledge: str, *, source: str = "the chatctl user guide") -> None:
        self.index = Index(parse_knowledge(knowledge))
        self.source = source

    @classmethod
    def from_file(cls, path: str | Path | None) -> OfflineBackend:
        if path is None:
            return cls(default_guide())
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ChatctlError(f"cannot read knowledge file {path}: {exc}") from None
        return cls(text, source=Path(path).name)

    def complete(self, prompt: Prompt) -> Iterator[str]:
        yield self.reply(prompt)

    def close(self) -> None:
        pass

    def reply(self, prompt: Prompt) -> str:
        if prompt.kind is TurnKind.SUMMARY:
            return summarise(
                prompt.context,
                max_chars=prompt.max_chars,
                room=prompt.room,
                bot_nick=prompt.bot_nick,
            )
        if prompt.kind is TurnKind.CHIME:
            return self._chime(prompt)
        return self._answer(prompt)

    def _answer(self, prompt: Prompt) -> str:
        question = prompt.question.strip()
        to = f"{prompt.asker}: " if prompt.asker and prompt.room else ""
        if not question or _HELP.match(question):
            return to + self._about(prompt.bot_nick)
        if _GREETING.match(question):
            return to + f"Hello! {self._about(prompt.bot_nick)}"
        found = self.answer_text(question, prompt.max_chars - len(to))
        if found is not None:
            return to + found
        if _THANKS.match(question):
            return to + "You're welcome."
        return to + clip(
            f"I don't know. I am the offline bot: I can only answer from {self.source}, "
            f"and nothing in it matches that. Try /help, or ask @{prompt.bot_nick} summary.",
            prompt.max_chars - len(to),
        )

    def answer_text(self, question: str, max_chars: int) -> str | None:
        hit = self.index.answer(question)
        if hit is None:
            return None
        return build_answer(self.index, hit, max_chars)

    def _about(self, nick: str) -> str:
        return (
            f"I am {nick}, an offline bot (no language model). Ask me about chatctl, e.g. "
            f'"@{nick} how do I change my nick?", or say "@{nick} summary" (or "summary 20") '
            "for a recap of the room."
        )

    def _chime(self, prompt: Prompt) -> str:
        """The cadence fired: answer an open question if the guide can; otherwise a recap."""
        since: list[ChatLine] = []
        for line in reversed(prompt.context):
            if line.sender.casefold() == prompt.bot_nick.casefold():
                break
            since.append(line)
        since.reverse()
        for line in reversed(since):
            if line.text.rstrip().endswith("?"):
                found = self.answer_text(line.text, prompt.max_chars - len(line.sender) - 2)
                if found is not None:
                    return f"{line.sender}: {found}"
                break
        return summarise(
            since or prompt.context,
            max_chars=prompt.max_chars,
            room=prompt.room,
            bot_nick=prompt.bot_nick,
        )
