"""`chatctl bot`: an AI participant in the chat (offline by default).

brain.py decides when to speak (sans-IO); backend.py is the interface the offline, openai and
local backends implement; runner.py connects the two to the chat through chatctl.client.
"""

from __future__ import annotations

from typing import Any


def run_bot(**kwargs: Any) -> int:
    """Run the bot until interrupted; the keyword arguments are the `chatctl bot` options."""
    from chatctl.bot.runner import run_bot as run

    return run(**kwargs)
