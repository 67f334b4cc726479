"""The store's one error type."""

from __future__ import annotations

from chatctl.errors import ChatctlError


class StoreError(ChatctlError):
    """The history store cannot be opened or written: the data directory is the problem."""
