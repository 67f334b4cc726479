"""A knowledge file split into sections and searched with BM25, with stemming, synonyms and
typo tolerance; light enough to answer in well under a millisecond.

Markdown is split at its headings (a section is a heading and the text under it, with the
headings above it as its path); plain text is split at blank lines.

How a question meets a section:
- Words are lower-cased and stemmed with the Snowball English stemmer (Porter2), so
  "benchmarking", "benchmarks" and "benchmark" meet. `snowballstemmer` is pure Python (a
  wheel for every platform, nothing to compile); stems are cached, so a word costs one
  dictionary look-up after its first time. It uses PyStemmer's C code by itself when that is
  installed, but the cache makes that speed-up irrelevant here.
- `/commands` and `--options` are words of their own (and their parts are words too), so
  "what does --max-per-ip do" finds the section that names `--max-per-ip`.
- A small synonym table maps the words people use to the words the guide uses ("dm" to
  "direct message", "benchmark" to "bench", "lose" to "lost"). A word the file never uses and
  the table does not know may be a typo: a word of the file within one edit (two for long
  words) stands in for it ("chnage" -> "change").
- A section's heading counts four times, its parents' headings once more, and the commands
  and options in its code spans twice: they say what the section is about.
- A question is answered only when the match is convincing: the section must hold most of
  the question's information (its words weighted by IDF; a word the file never uses weighs as
  much as its rarest one). Otherwise the caller says it does not know, rather than guess.
"""

from __future__ import annotations

import functools
import math
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import snowballstemmer

STOPWORDS = frozenset(
    """a about after again all also am an and any anything are aren't as at be been before but
    by can can't cannot could couldn't do does doesn't doing did didn't don't for from get gets
    getting got has have haven't having how i i'd i'll i'm i've if in into is isn't it its it's
    just me might more most my no not now of on one or our out please should so some such than
    that that's the their them then there there's these they this those to too up us use used
    uses using want wants was wasn't we were what what's whats when where which while who whom
    why will with won't would you you're your yours hi hey hello thank thanks tell know explain
    way ways see show happen happens happened myself yourself someone somebody something anyone
    thing things go goes going come comes came possible able need needs needed like let lets
    ok okay sure well really still even else here via per""".split()  # noqa: SIM905 (a word list reads better as text)
)

# Everyday words a question may hold that say little about which section answers it. A word
# the file never uses normally weighs as much as its rarest word (so that "how do I install
# docker?" is not answered from the install section); one of these weighs little.
COMMON = frozenset(
    """new old big small good bad best better right wrong first last next other another same
    different many much few lot lots every each own whole only very quite enough sure true
    false easy hard quick quickly slow slowly fast long short high low full empty free open
    work works working worked make makes making made take takes taking took give gives giving
    gave put puts try tries trying tried start starts started ask asks asked
    answer answers say says said call calls called find finds found look looks looking help
    helps turn turns move moves change changes seem seems feel mean means meant accept
    accepts accepted allow allows allowed ignore ignores ignored happen support supports
    supported appear appears appeared instead actually always never sometimes often ever
    already yet anymore maybe probably again back away around together without within
    everyone everybody nobody nothing everything somewhere anywhere today tomorrow yesterday
    time times day days minute minutes second seconds hour hours week year
    people person thing part kind sort type example reason problem question idea""".split()  # noqa: SIM905 (a word list reads better as text)
)

# Example nicks: the guide's examples use them, a question naming a person says nothing
# about the topic ("how do I pm alice").
NAMES = frozenset(["alice", "bob", "carol", "dave", "erin", "eve", "frank", "mallory"])

# Words people use for what the guide calls something else (applied to questions only).
# Keys are matched by their stem, so "benchmarking" finds "benchmark".
SYNONYMS: dict[str, tuple[str, ...]] = {
    # nicks and people
    "nickname": ("nick",),
    "username": ("nick",),
    "name": ("nick",),
    "rename": ("nick", "renamed"),
    "handle": ("nick",),
    "alias": ("nick",),
    "user": ("nick", "people"),
    "person": ("nick", "people"),
    # direct messages
    "dm": ("direct message",),
    "pm": ("direct message",),
    "privately": ("direct",),
    "whisper": ("direct message",),
    "dms": ("direct message",),
    # rooms
    "channel": ("room",),
    "chan": ("room",),
    "chatroom": ("room",),
    "group": ("room",),
    "create": ("created", "make"),
    "exist": ("list", "every"),
    "members": ("who", "people"),
    "online": ("who",),
    "participants": ("who", "people"),
    # leaving
    "leave": ("part", "leave"),
    "exit": ("quit", "exit", "leave"),
    "disconnect": ("quit", "lost"),
    "logout": ("quit",),
    "close": ("quit",),
    # starting and stopping
    "start": ("run", "start"),
    "launch": ("run", "start"),
    "host": ("serve", "server"),
    "stop": ("ctrl", "stop"),
    "kill": ("ctrl", "stop"),
    "shutdown": ("ctrl", "stop"),
    # actions
    "emote": ("me", "action"),
    "emotes": ("me", "action"),
    # history
    "backlog": ("history",),
    "scrollback": ("history",),
    "scroll": ("history",),
    "older": ("history",),
    "old": ("history",),
    "earlier": ("history",),
    "previous": ("history",),
    "past": ("history",),
    "missed": ("missed", "history"),
    "saved": ("stored", "history"),
    "save": ("stored", "keep"),
    "persist": ("stored", "history"),
    "database": ("sqlite", "stored"),
    "disk": ("disk", "stored", "data"),
    "memory": ("memory",),
    "kept": ("keep", "retain"),
    "keep": ("keep", "stored"),
    "keeps": ("keep", "stored"),
    "retention": ("retain",),
    # connections
    "lose": ("lost", "drops"),
    "losing": ("lost", "drops"),
    "dropped": ("drops",),
    "offline": ("lost", "drops"),
    "wifi": ("connection",),
    "network": ("connection",),
    "automatically": ("itself",),
    "automatic": ("itself",),
    "backup": ("several", "next", "fail"),
    "failover": ("fail", "over", "several"),
    "fallback": ("fail", "next"),
    "redundant": ("several", "fail"),
    "multiple": ("several",),
    "remote": ("host",),
    # scripts and output
    "pipe": ("stdin", "scripts"),
    "script": ("scripts",),
    "shell": ("scripts",),
    "cron": ("scripts",),
    "bash": ("scripts",),
    "automate": ("scripts",),
    "output": ("format", "prints"),
    "events": ("event",),
    "machine": ("json",),
    "single": ("one",),
    "post": ("send",),
    # exit codes
    "status": ("exit", "code"),
    "errorlevel": ("exit", "code"),
    "returncode": ("exit", "code"),
    # errors
    "error": ("error", "wrong"),
    "problem": ("wrong",),
    "broken": ("wrong",),
    "fails": ("wrong", "fail"),
    "rejected": ("refused", "rejected"),
    "refused": ("refused",),
    "taken": ("taken",),
    "long": ("long", "max"),
    "length": ("max", "long"),
    "size": ("max",),
    "limit": ("limit", "max"),
    "throttle": ("rate",),
    "spam": ("ban", "rate"),
    "spammer": ("ban",),
    # security
    "ssl": ("tls",),
    "https": ("tls",),
    "encrypt": ("tls", "encrypt"),
    "encrypted": ("tls", "encrypt"),
    "encryption": ("tls", "encrypt"),
    "secure": ("tls",),
    "cert": ("certificate",),
    "certs": ("certificate",),
    "fingerprint": ("fingerprint",),
    "trust": ("trust",),
    "login": ("log", "account"),
    "case-insensitively": ("case-insensitively", "case"),
    "signin": ("log", "account"),
    "sign": ("log", "account"),
    "register": ("account", "register"),
    "signup": ("account", "register"),
    "password": ("password",),
    "passwords": ("password",),
    "reserve": ("reserved",),
    "require": ("required",),
    # moderation
    "moderate": ("moderation",),
    "moderator": ("operator", "op"),
    "admin": ("operator", "owner"),
    "mod": ("operator", "moderation"),
    "remove": ("kick", "remove"),
    "delete": ("remove",),
    "erase": ("remove",),
    "drop": ("remove", "drops"),
    "block": ("ban",),
    "mute": ("ban",),
    "invite-only": ("private", "invite"),
    "secret": ("private",),
    "subject": ("topic",),
    # bench
    "benchmark": ("bench", "measure"),
    "benchmarking": ("bench", "measure"),
    "perf": ("bench", "measure"),
    "performance": ("bench", "measure"),
    "throughput": ("bench",),
    "latency": ("bench",),
    "stress": ("load",),
    "speed": ("bench",),
    "fast": ("bench",),
    "compare": ("comparison", "target"),
    "nats": ("nats", "target"),
    "redis": ("redis", "target"),
    "results": ("results",),
    # the bot
    "ai": ("bot",),
    "assistant": ("bot",),
    "summary": ("summary",),
    "summarise": ("summary",),
    "summarize": ("summary",),
    "recap": ("summary",),
    "tldr": ("summary",),
    "llm": ("model", "backend"),
    "gpt": ("openai", "model"),
    "chatgpt": ("openai", "model"),
    "ollama": ("ollama", "openai"),
    "key": ("key",),
    "often": ("rate", "every"),
    "frequently": ("rate", "every"),
    # install
    "setup": ("install",),
    "installation": ("install",),
    "pypi": ("pip", "pypi"),
    "download": ("install",),
    # help
    "options": ("option", "help"),
    "flags": ("option", "help"),
    "flag": ("option",),
    "manual": ("help",),
    "docs": ("help",),
    "documentation": ("help",),
}

# Phrases read as one word before anything else ("log off" is quitting, not logging in).
PHRASES: dict[str, str] = {
    "log off": "quit",
    "log out": "quit",
    "sign off": "quit",
    "sign out": "quit",
    "logged off": "quit",
    "log in": "login",
    "logged in": "login",
    "sign in": "login",
    "sign up": "signup",
    "set up": "setup",
    "case sensitive": "case-insensitively",
    "load test": "bench",
    "stress test": "bench",
    "private message": "dm",
    "direct message": "direct message",
    "back up": "backup",
    "how many": "",
    "how much": "",
}
_PHRASE = re.compile(r"\b(" + "|".join(re.escape(p) for p in PHRASES) + r")\b")

TITLE_WEIGHT = 4  # a section's heading counts this many times
PARENT_WEIGHT = 1  # the headings above it, once each
CODE_WEIGHT = 2  # commands and options in its code spans, on top of the body
SYNONYM_WEIGHT = 0.9  # a synonym's match is almost as good as the word itself
TYPO_WEIGHT = 0.8  # a correction's, a little less

_APOSTROPHE = "\u2019"  # typographic apostrophe, as phones type it
_TOKEN = re.compile(r"--[a-z0-9][a-z0-9-]*|/[a-z]+|[a-z0-9]+(?:'[a-z]+)?")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_FENCE = re.compile(r"^\s*(```|~~~)")
_CODE = re.compile(r"`([^`]+)`")
_STEMMER = snowballstemmer.stemmer("english")


@functools.lru_cache(maxsize=16384)  # bounded: questions bring any words
def stem(word: str) -> str:
    """The Snowball (Porter2) stem of a lower-case word; /commands and --options as they are."""
    if word.startswith(("/", "-")):
        return word
    stemmed: str = _STEMMER.stemWord(word)
    return stemmed


def _tokens(text: str) -> Iterator[str]:
    """Lower-case tokens; a /command or --option also yields the words it is made of."""
    for token in _TOKEN.findall(text.lower().replace(_APOSTROPHE, "'")):
        if token.startswith("/"):
            yield token
            yield token[1:]
        elif token.startswith("--"):
            yield token
            yield from (p for p in token[2:].split("-") if p)
        else:
            yield token.removesuffix("'s")


def words(text: str) -> list[str]:
    """Stemmed words of `text` without stop words; /commands and --options whole and in parts,
    so "/part" matches "part" and "/part"."""
    return [stem(t) for t in _tokens(text) if t not in STOPWORDS]


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


# -- typo tolerance: a deletion index (SymSpell's idea) -------------------------------------------


def _deletes(word: str) -> set[str]:
    return {word[:i] + word[i + 1 :] for i in range(len(word))}


def _distance(a: str, b: str, limit: int) -> int:
    """Optimal string alignment distance (an adjacent swap is one edit), or limit + 1."""
    if abs(len(a) - len(b)) > limit:
        return limit + 1
    prev2: list[int] = []
    prev = list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        cur = [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            cost = 0 if a[i - 1] == b[j - 1] else 1
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                cur[j] = min(cur[j], prev2[j - 2] + 1)
        if min(cur) > limit:
            return limit + 1
        prev2, prev = prev, cur
    return prev[-1]


TYPO_MIN = 5  # shorter words are never corrected ("cats" is not a typo of "chats")
TYPO_TWO = 9  # words this long may be two edits away


class _Speller:
    """Words of the knowledge file within one edit (two for long words) of an unknown word."""

    def __init__(self, vocabulary: Iterable[str]) -> None:
        self.words = {w for w in vocabulary if len(w) >= TYPO_MIN - 1 and w.isalpha()}
        self._index: dict[str, set[str]] = {}
        for w in self.words:
            keys = _deletes(w) | {w}
            if len(w) >= TYPO_TWO - 1:
                keys |= {d2 for d in _deletes(w) for d2 in _deletes(d)}
            for key in keys:
                self._index.setdefault(key, set()).add(w)

    def suggest(self, word: str) -> list[str]:
        if len(word) < TYPO_MIN or not word.isalpha() or word in self.words:
            return []
        limit = 2 if len(word) >= TYPO_TWO else 1
        keys = _deletes(word) | {word}
        if limit == 2:
            keys |= {d2 for d in _deletes(word) for d2 in _deletes(d)}
        candidates = set().union(*(self._index.get(k, set()) for k in keys))
        scored = sorted((_distance(word, c, limit), c) for c in candidates)
        best = [c for d, c in scored if d <= limit]
        if not best:
            return []
        nearest = _distance(word, best[0], limit)
        return [c for c in best if _distance(word, c, limit) == nearest][:3]


# -- the index ----------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Term:
    """One word of a question, with what may stand for it: (stems, weight) pairs, the word's
    own stem first. A synonym may be a phrase ("dm": "direct message"): all its stems count."""

    word: str
    members: tuple[tuple[tuple[str, ...], float], ...]

    @property
    def own(self) -> str:
        return self.members[0][0][0]


@dataclass(frozen=True, kw_only=True)
class Hit:
    section: Section
    score: float
    coverage: float  # share of the question's information (by IDF) found in the section
    support: int = 0  # informative words of the question (not everyday ones) it holds
    terms: tuple[Term, ...] = ()  # the question, as the index read it


_SYNONYMS_BY_STEM = {
    stem(k): tuple(tuple(stem(w) for w in v.split()) for v in vs) for k, vs in SYNONYMS.items()
}
COMMON_WEIGHT = 1.0  # the most an everyday word weighs towards coverage (IDFs here: 0.1-4)
COMMON_FACTOR = 0.5  # and its share of a section's score
MIN_SUPPORT_IDF = 0.5  # a word found in most sections ("chatctl") supports nothing
TITLE_BONUS = 1.0  # a word of the question in a section's own heading: its IDF once more


def _command_words(span: str) -> list[str]:
    """The words of a code span that name a command or an option: /commands, --options and
    `chatctl SUBCOMMAND`, not placeholders (`/op ACCOUNT` is about /op, not accounts)."""
    out: list[str] = []
    tokens = span.split()
    for i, token in enumerate(tokens):
        if token.startswith(("/", "--")) or (i > 0 and tokens[i - 1] == "chatctl"):
            out += words(token)
    return out


class Index:
    """BM25 over weighted sections (headings and code spans count extra)."""

    K1 = 1.2
    B = 0.75

    def __init__(self, sections: Iterable[Section]) -> None:
        self.sections = list(sections)
        self._tf: list[Counter[str]] = []
        self._titles: list[set[str]] = []
        surface: set[str] = set()
        for s in self.sections:
            tf: Counter[str] = Counter(words(s.body))
            for span in _CODE.findall(s.body):
                for _ in range(CODE_WEIGHT - 1):
                    tf.update(_command_words(span))
            for _ in range(TITLE_WEIGHT):
                tf.update(words(s.title))
            for _ in range(PARENT_WEIGHT):
                tf.update(words(" ".join(s.path[:-1])))
            self._tf.append(tf)
            self._titles.append(set(words(s.title)))
            surface.update(_tokens(f"{s.title}\n{s.body}"))
        self._len = [sum(tf.values()) for tf in self._tf]
        self._avg = max(1.0, sum(self._len) / len(self._len)) if self._len else 1.0
        df: Counter[str] = Counter()
        for tf in self._tf:
            df.update(tf.keys())
        n = len(self.sections)
        self._idf = {w: math.log(1 + (n - c + 0.5) / (c + 0.5)) for w, c in df.items()}
        # A word the file never uses is as informative as its rarest word.
        self._unknown_idf = math.log(1 + (n + 0.5) / 0.5)
        # Typos of the file's words and of the synonyms' keys are corrected.
        self._speller = _Speller([*(w for w in surface if w not in STOPWORDS), *SYNONYMS])

    def idf(self, word: str) -> float:
        return self._idf.get(word, self._unknown_idf)

    def known(self, word: str) -> bool:
        return word in self._idf

    def terms(self, question: str) -> list[Term]:
        """The question's words, each with its synonyms or, if unknown, its likely spellings."""
        terms: dict[str, Term] = {}
        text = _PHRASE.sub(lambda m: PHRASES[m[1]], question.lower().replace(_APOSTROPHE, "'"))
        for token in _tokens(text):
            if token in STOPWORDS or token in NAMES:
                continue
            own = stem(token)
            if own in terms:
                continue
            members: list[tuple[tuple[str, ...], float]] = [((own,), 1.0)]
            synonyms = _SYNONYMS_BY_STEM.get(own, ())
            members += [(phrase, SYNONYM_WEIGHT) for phrase in synonyms if phrase != (own,)]
            if not synonyms and not self.known(own):
                for fix in self._speller.suggest(token):
                    fixed = stem(fix)
                    members += [((fixed,), TYPO_WEIGHT)]
                    members += [(p, TYPO_WEIGHT) for p in _SYNONYMS_BY_STEM.get(fixed, ())]
            terms[own] = Term(word=token, members=tuple(dict.fromkeys(members)))
        return list(terms.values())

    def weight(self, term: Term) -> float:
        """How much a term counts towards coverage: its own IDF if the file knows the word,
        else that of the best-known stand-in (a synonym or a correction), else little for an
        everyday word and the most for any other."""
        if term.word in COMMON:
            return min(COMMON_WEIGHT, self.idf(term.own))
        if self.known(term.own):
            return self.idf(term.own)
        known = [
            max(self.idf(s) for s in phrase)
            for phrase, _ in term.members[1:]
            if all(self.known(s) for s in phrase)
        ]
        if known:
            return max(known)
        return self._unknown_idf

    def _bm25(self, i: int, word: str) -> float:
        f = self._tf[i].get(word, 0)
        if not f:
            return 0.0
        norm = self.K1 * (1 - self.B + self.B * self._len[i] / self._avg)
        return self.idf(word) * f * (self.K1 + 1) / (f + norm)

    def search(self, question: str, limit: int = 3) -> list[Hit]:
        terms = tuple(self.terms(question))
        if not terms or not self.sections:
            return []
        weights = [self.weight(t) for t in terms]
        total = sum(weights)
        hits = []
        for i in range(len(self.sections)):
            score = 0.0
            found = 0.0
            support = 0
            title = self._titles[i]
            for term, weight in zip(terms, weights, strict=True):
                best = 0.0
                for phrase, factor in term.members:
                    parts = [self._bm25(i, w) for w in phrase]
                    if all(parts):
                        if all(w in title for w in phrase):
                            parts += [TITLE_BONUS * self.idf(w) for w in phrase]
                        best = max(best, factor * sum(parts))
                if term.word in COMMON:
                    best *= COMMON_FACTOR
                if best:
                    score += best
                    found += weight
                    support += term.word not in COMMON and weight >= MIN_SUPPORT_IDF
            if score > 0:
                hits.append(
                    Hit(
                        section=self.sections[i],
                        score=score,
                        coverage=found / total,
                        support=support,
                        terms=terms,
                    )
                )
        hits.sort(key=lambda h: (-h.score, -h.coverage))
        return hits[:limit]

    def answer(
        self, question: str, *, min_coverage: float = 0.5, min_support: int = 2
    ) -> Hit | None:
        """The best section if it covers enough of the question, else None (do not guess).

        Enough: half the question's information, or, when the question has a word the file
        never uses ("how do I run the server on all interfaces"), a third of it made of at
        least `min_support` informative words (an off-topic question meets the file in one
        word at most: "how do I install docker?")."""
        hits = self.search(question, limit=1)
        if not hits:
            return None
        hit = hits[0]
        if hit.coverage >= min_coverage:
            return hit
        if hit.coverage >= min_coverage * 2 / 3 and hit.support >= min_support:
            return hit
        return None

    def relevance(self, text: str, terms: Iterable[Term]) -> float:
        """How much of the question a piece of text (a sentence of a section) holds, by IDF."""
        have = set(words(text))
        score = 0.0
        for term in terms:
            score += max(
                (
                    factor * sum(self.idf(w) for w in phrase)
                    for phrase, factor in term.members
                    if all(w in have for w in phrase)
                ),
                default=0.0,
            )
        return score
