"""The bot's manners, sans-IO: fitting text into chat frames (the reply rate is a
chatctl.ratelimit.TokenBucket)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

ELLIPSIS = "…"
SPEAKER_PREFIX_WINDOW = 40  # characters of a reply held back to look for a copied "nick:"


_SPACES = re.compile(r"\s+")


def one_line(text: str) -> str:
    """Collapse all whitespace, newlines included: `join` in a pipe prints one event a line."""
    return _SPACES.sub(" ", text).strip()


def clip(text: str, max_chars: int) -> str:
    """Cut `text` to at most `max_chars` characters, at a word boundary when one is near."""
    if len(text) <= max_chars:
        return text
    cut = text[: max(1, max_chars - len(ELLIPSIS))]
    space = cut.rfind(" ")
    if space >= len(cut) * 2 // 3:
        cut = cut[:space]
    return cut.rstrip() + ELLIPSIS


def _utf8_prefix(text: str, max_bytes: int) -> int:
    """Length in characters of the longest prefix of `text` that fits in `max_bytes` of UTF-8."""
    size = 0
    for i, ch in enumerate(text):
        size += len(ch.encode("utf-8", "surrogatepass"))
        if size > max_bytes:
            return i
    return len(text)


_SENTENCE_END = re.compile(r"[.!?;:]\s")


def split_frames(text: str, max_bytes: int) -> list[str]:
    """Split `text` into pieces of at most `max_bytes` UTF-8 bytes each (the server's max_text).

    Prefers a sentence end, then a space, and cuts inside a word only when it must. Joining the
    pieces with single spaces gives back the text with its whitespace collapsed.
    """
    if max_bytes < 4:
        raise ValueError("max_bytes must leave room for one character")
    rest = one_line(text)
    pieces: list[str] = []
    while rest:
        fit = _utf8_prefix(rest, max_bytes)
        if fit >= len(rest):
            pieces.append(rest)
            break
        head = rest[:fit]
        cut = fit
        # The last sentence end in the second half of the window, else the last space.
        window = head + rest[fit : fit + 1]
        sentence = max((m.start() for m in _SENTENCE_END.finditer(window)), default=-1)
        if sentence >= fit // 2:
            cut = sentence + 1
        else:
            space = head.rfind(" ")
            if space > 0:
                cut = space
        pieces.append(rest[:cut].rstrip())
        rest = rest[cut:].lstrip()
    return [p for p in pieces if p]


def strip_speaker(text: str, names: Iterable[str]) -> str:
    """Drop a leading "nick:" that a model copied from the transcript format, when the nick
    is one of `names` (the bot's own, or someone in the conversation)."""
    colon = text.find(":", 0, SPEAKER_PREFIX_WINDOW)
    if colon >= 0 and text[:colon].strip().lstrip("@").casefold() in {n.casefold() for n in names}:
        return text[colon + 1 :].lstrip()
    return text


# Streaming into a chat, where a message cannot be edited: send a frame at a natural boundary
# once it reads as a message of its own, or when the model pauses, never word by word.
FLUSH_AT = 80  # characters before a sentence or line end that make it worth a frame
IDLE_FLUSH = 1.0  # seconds without new text after which the complete words so far go out
IDLE_MIN = 20  # characters: the least an idle flush sends (a very slow model: not word by word)

# A line break, or a sentence end (not "3." in a list) followed by a space.
_BOUNDARY = re.compile(r"\n|(?<=[^\d\s][.!?…])\s")
_SPACE = re.compile(r"\s")


class Framer:
    """Chat frames from a reply that arrives in pieces, sans-IO: `feed` each piece with the
    time, call `idle` when `idle_at` has passed with nothing new, and `finish` at the end.

    The reply stops at `max_chars` characters (`full` then says so, and `finish` ends it in an
    ellipsis); each frame holds at most `max_bytes` of UTF-8; a leading "nick:" naming one of
    `names` is dropped. Joining the frames with spaces gives the reply, whitespace collapsed.
    """

    def __init__(
        self,
        *,
        max_chars: int,
        max_bytes: int,
        names: Iterable[str] = (),
        now: float = 0.0,
        flush_at: int = FLUSH_AT,
        idle_after: float = IDLE_FLUSH,
        idle_min: int = IDLE_MIN,
    ) -> None:
        if max_bytes < 4:
            raise ValueError("max_bytes must leave room for one character")
        self.max_chars = max_chars
        self.max_bytes = max_bytes
        self.flush_at = flush_at
        self.idle_after = idle_after
        self.idle_min = idle_min
        self.full = False  # the reply reached max_chars and more was coming
        self.pending = ""  # text received and not sent yet
        self._known = {n for n in names if n}
        self._head_checked = not self._known
        self._total = 0
        self._last = now
        self._idle_done = False  # `idle` ran since the last piece: nothing new to send

    def feed(self, chunk: str, now: float) -> list[str]:
        """A piece of the reply arrived: the frames ready to send."""
        if self.full or not chunk:
            return []
        self._last = now
        self._idle_done = False
        room = self.max_chars - self._total
        if len(chunk) > room:
            self.full = True
            chunk = chunk[:room]
        self.pending += chunk
        self._total += len(chunk)
        if not self._head_checked:
            if len(self.pending) < SPEAKER_PREFIX_WINDOW and not self.full:
                return []  # the reply may begin with a "nick:" to drop
            self._check_head()
        frames = self._take_full()
        if not self._at_limit():
            # Only a boundary at the start of this piece or before it: a reply that comes
            # whole (the offline backend, a server that does not stream) stays one message.
            before = len(self.pending) - len(chunk)
            ends = (m.end() for m in _BOUNDARY.finditer(self.pending) if m.start() <= before)
            cut = max(ends, default=0)
            if len(self.pending[:cut].strip()) >= self.flush_at:
                frames += self._take(cut)
        return frames

    def idle_at(self) -> float | None:
        """When `idle` would send something if no new text arrives first (None: never)."""
        if self._idle_done or self._at_limit() or len(self.pending.strip()) < self.idle_min:
            return None
        return self._last + self.idle_after

    def idle(self, now: float) -> list[str]:
        """No new text for a while: send the complete words so far, if there are enough."""
        due = self.idle_at()
        if due is None or now < due:
            return []
        self._idle_done = True  # whatever it sends now, only new text can change that
        if not self._head_checked:
            # Ahead of time, on the text so far: a slow model's copied "nick:" that has not
            # arrived whole by now is taken for text.
            self._check_head()
        cut = max((m.end() for m in _SPACE.finditer(self.pending)), default=0)
        if len(self.pending[:cut].strip()) < self.idle_min:
            return []
        return self._take(cut)

    def finish(self, *, cut: bool = False) -> list[str]:
        """The stream ended (or was `cut` short): the rest of the reply."""
        if not self._head_checked:
            self._check_head()
        tail = one_line(self.pending)
        self.pending = ""
        if (cut or self.full) and tail:
            tail += ELLIPSIS
        return split_frames(tail, self.max_bytes) if tail else []

    def _at_limit(self) -> bool:
        # Text up to exactly max_chars: hold the rest, so that if more arrives, the ellipsis
        # has a frame to end.
        return self.full or self._total >= self.max_chars

    def _check_head(self) -> None:
        self.pending = strip_speaker(self.pending, self._known)
        self._head_checked = True

    def _take(self, cut: int) -> list[str]:
        head, self.pending = self.pending[:cut], self.pending[cut:].lstrip()
        return split_frames(head, self.max_bytes)

    def _take_full(self) -> list[str]:
        """Frames that are full already: all but the last piece of what fits."""
        if len(self.pending.encode("utf-8", "surrogatepass")) <= self.max_bytes:
            return []  # as it is: its line breaks are boundaries
        frames = split_frames(self.pending, self.max_bytes)
        # Keep the last, partial frame; and the space it ended in, if any.
        self.pending = frames[-1] + (" " if self.pending[-1:].isspace() else "")
        return frames[:-1]


def stream_frames(
    stream: Iterable[str], *, max_chars: int, max_bytes: int, names: Iterable[str] = ()
) -> Iterator[str]:
    """Chat frames from a stream of text pieces (a Framer without a clock: no idle flushes).

    The stream is closed once the reply reaches `max_chars`, so a model stops generating.
    """
    framer = Framer(max_chars=max_chars, max_bytes=max_bytes, names=names)
    try:
        for chunk in stream:
            yield from framer.feed(chunk, 0.0)
            if framer.full:
                break
    finally:
        close = getattr(stream, "close", None)
        if close is not None:
            close()
    yield from framer.finish()
