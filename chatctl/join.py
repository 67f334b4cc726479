"""Placeholder until this command is built."""

from __future__ import annotations

from typing import Any

from chatctl.errors import NotBuilt


def run_join(**_: Any) -> int:
    raise NotBuilt("`chatctl join` is not built yet")
