"""Placeholder until this command is built."""

from __future__ import annotations

from typing import Any

from chatctl.errors import NotBuilt


def run_bot(**_: Any) -> int:
    raise NotBuilt("`chatctl bot` is not built yet")
