"""make_backend: the backend a BotConfig names, each imported only when chosen (httpx and
llama-cpp-python are slow to import, and the offline backend needs neither). A language
model's summaries are checked against the lines (summary.GroundedSummaries)."""

from __future__ import annotations

from typing import assert_never

from chatctl.bot.backend import Backend
from chatctl.bot.config import BackendName, BotConfig


def make_backend(config: BotConfig, *, system: str | None) -> Backend:
    """Build `config.backend`; `system` is the system prompt, already read from any @FILE."""
    match config.backend:
        case BackendName.offline:
            from chatctl.bot.offline import OfflineBackend

            return OfflineBackend.from_file(config.knowledge)
        case BackendName.openai:
            from chatctl.bot.openai_compat import OpenAIBackend, api_key_from_env
            from chatctl.bot.summary import GroundedSummaries

            return GroundedSummaries(
                OpenAIBackend(
                    base_url=config.base_url,
                    model=config.model,
                    api_key=api_key_from_env(),
                    system=system,
                    timeout=config.reply_timeout,
                )
            )
        case BackendName.local:
            from chatctl.bot.local import LocalBackend
            from chatctl.bot.summary import GroundedSummaries

            return GroundedSummaries(LocalBackend(model_path=config.model, system=system))
        case _:
            assert_never(config.backend)
