"""Placeholder until this command is built."""

from __future__ import annotations

from chatctl.config import ServerConfig
from chatctl.errors import NotBuilt


def serve(config: ServerConfig) -> int:
    raise NotBuilt(f"`chatctl serve` is not built yet ({config.port})")
