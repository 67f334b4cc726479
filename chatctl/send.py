"""Placeholder until this command is built."""

from __future__ import annotations

from typing import Any

from chatctl.errors import NotBuilt


def run_send(**_: Any) -> int:
    raise NotBuilt("`chatctl send` is not built yet")
