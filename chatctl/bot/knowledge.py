"""A knowledge file split into sections and searched with BM25 (standard library only).

Markdown is split at its headings (a section is a heading and the text under it, with the
headings above it as its path); plain text is split at blank lines. A question is answered
with the best section only when the match is convincing: most of the question's informative
words must occur in it. Otherwise the caller says it does not know, rather than guess.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

STOPWORDS = frozenset(
    """a about after all also am an and any are as at be been before but by can could do does
    doing did for from get got has have having how i i'd i'm if in into is it its it's just
    me might more most my no not now of on one or our out please should so some such than
    that the their them then there these they this those to too up us use using want was we
    were what when where which while who whom why will with would you your yours hi hey
    there thank thanks tell know explain way ways see show happen happens happened myself
    yourself someone somebody something anyone thing things go goes going""".split()  # noqa: SIM905 (a word list reads better as text)
)

# Words people use for what the guide calls something else (applied to questions only).
SYNONYMS: dict[str, tuple[str, ...]] = {
    "nickname": ("nick",),
    "username": ("nick",),
    "rename": ("nick", "change"),
    "dm": ("direct", "message"),
    "pm": ("direct", "message"),
    "privately": ("direct",),
    "private": ("direct",),
    "whisper": ("direct", "message"),
    "channel": ("room",),
    "channels": ("room",),
    "leave": ("part", "leave"),
    "exit": ("quit", "exit"),
    "disconnect": ("quit",),
    "start": ("run", "start"),
    "launch": ("run",),
    "emote": ("me", "action"),
    "backlog": ("history",),
    "scrollback": ("history",),
    "missed": ("history", "summary", "missed"),
    "status": ("exit", "code"),
    "members": ("who", "members"),
    "older": ("history",),
    "old": ("history",),
    "earlier": ("history",),
    "previous": ("history",),
    "past": ("history",),
    "online": ("who",),
}

_APOSTROPHE = "\u2019"  # typographic apostrophe, as phones type it
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?|/[a-z]+")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_FENCE = re.compile(r"^\s*(```|~~~)")


def stem(word: str) -> str:
    """A deliberately light stemmer: enough that nick/nicks, change/changing/changed meet."""
    if word.startswith("/"):
        return word
    for suffix, keep in (("ies", "y"), ("ing", ""), ("ed", ""), ("es", ""), ("s", "")):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3 and not word.endswith("ss"):
            word = word[: len(word) - len(suffix)] + keep
            break
    if word.endswith("e") and len(word) > 3:
        word = word[:-1]
    return word


def words(text: str) -> list[str]:
    """Lower-cased, stop-word-free, stemmed words of `text`.

    A /command counts both whole and as its word, so "/part" matches "part" and "/part".
    """
    out: list[str] = []
    for w in _WORD.findall(text.lower().replace(_APOSTROPHE, "'")):
        if w.startswith("/"):
            out += [w, w[1:]]
        elif w not in STOPWORDS:
            out.append(stem(w))
    return out


def query_words(text: str) -> list[str]:
    out: list[str] = []
    for w in _WORD.findall(text.lower().replace(_APOSTROPHE, "'")):
        if w.startswith("/"):
            out += [w, w[1:]]
        elif w in SYNONYMS:
            out += [stem(x) for x in SYNONYMS[w]]
        elif w not in STOPWORDS:
            out.append(stem(w))
    # Keep order, drop repeats: BM25 sums over distinct query terms.
    return list(dict.fromkeys(out))


@dataclass(frozen=True, kw_only=True)
class Section:
    title: str
    path: tuple[str, ...]  # enclosing headings, outermost first, then the title
    body: str


def _plain(line: str) -> str:
    return line.replace("**", "").replace("__", "")


def parse_markdown(text: str) -> list[Section]:
    sections: list[Section] = []
    stack: list[tuple[int, str]] = []
    body: list[str] = []
    in_fence = False

    def flush() -> None:
        content = "\n".join(body).strip()
        if content and stack:
            path = tuple(t for _, t in stack)
            sections.append(Section(title=stack[-1][1], path=path, body=content))
        elif content:
            sections.append(Section(title="", path=(), body=content))

    for line in text.splitlines():
        if _FENCE.match(line):
            in_fence = not in_fence
            continue  # the fence markers themselves are not content
        heading = None if in_fence else _HEADING.match(line)
        if heading:
            flush()
            body = []
            level = len(heading[1])
            while stack and stack[-1][0] >= level:
                stack.pop()
            stack.append((level, _plain(heading[2])))
        else:
            body.append(_plain(line))
    flush()
    return sections


def parse_plain(text: str) -> list[Section]:
    sections = []
    for raw in re.split(r"\n\s*\n", text):
        block = raw.strip()
        if block:
            first = block.splitlines()[0].strip()
            sections.append(Section(title=first, path=(first,), body=block))
    return sections


def parse_knowledge(text: str, *, markdown: bool | None = None) -> list[Section]:
    """Sections of a knowledge file; Markdown when it has headings (or `markdown` says so)."""
    if markdown is None:
        markdown = any(_HEADING.match(line) for line in text.splitlines())
    return parse_markdown(text) if markdown else parse_plain(text)


@dataclass(frozen=True, kw_only=True)
class Hit:
    section: Section
    score: float
    coverage: float  # share of the question's information (by IDF) found in the section


class Index:
    """BM25 over sections; headings count extra, being what a section is about."""

    K1 = 1.5
    B = 0.75

    def __init__(self, sections: Iterable[Section]) -> None:
        self.sections = list(sections)
        self._tf: list[Counter[str]] = []
        for s in self.sections:
            # A section is about its own heading most, and about its parents' a little.
            heading = words(s.title) * 2 + words(" ".join(s.path[:-1]))
            self._tf.append(Counter(words(s.body) + heading))
        self._len = [sum(tf.values()) for tf in self._tf]
        self._avg = max(1.0, sum(self._len) / len(self._len)) if self._len else 1.0
        df: Counter[str] = Counter()
        for tf in self._tf:
            df.update(tf.keys())
        n = len(self.sections)
        self._idf = {w: math.log(1 + (n - c + 0.5) / (c + 0.5)) for w, c in df.items()}
        # A word the file never uses is as informative as its rarest word.
        self._unknown_idf = math.log(1 + (n + 0.5) / 0.5)

    def idf(self, word: str) -> float:
        return self._idf.get(word, self._unknown_idf)

    def search(self, question: str, limit: int = 3) -> list[Hit]:
        terms = query_words(question)
        if not terms or not self.sections:
            return []
        total = sum(self.idf(t) for t in terms)
        hits = []
        for i, tf in enumerate(self._tf):
            score = 0.0
            found = 0.0
            norm = self.K1 * (1 - self.B + self.B * self._len[i] / self._avg)
            for t in terms:
                f = tf.get(t, 0)
                if f:
                    score += self.idf(t) * f * (self.K1 + 1) / (f + norm)
                    found += self.idf(t)
            if score > 0:
                hits.append(Hit(section=self.sections[i], score=score, coverage=found / total))
        hits.sort(key=lambda h: (-h.score, -h.coverage))
        return hits[:limit]

    def answer(self, question: str, *, min_coverage: float = 0.5) -> Hit | None:
        """The best section if it covers enough of the question, else None (do not guess)."""
        hits = self.search(question, limit=1)
        if hits and hits[0].coverage >= min_coverage:
            return hits[0]
        return None
