"""Shared test settings: hypothesis profiles (ci keeps the suite to minutes, fuzz goes deep)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, settings

from chatctl.client.connection import Client
from tests.clients import joined
from tests.servers import running_server

settings.register_profile(
    "ci", max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("dev", max_examples=50, deadline=None)
settings.register_profile(
    "fuzz", max_examples=20_000, deadline=None, suppress_health_check=list(HealthCheck)
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))


@pytest.fixture
def server() -> Iterator[tuple[str, int]]:
    """A real server, in-process on a free port of 127.0.0.1."""
    with running_server() as addr:
        yield addr


@pytest.fixture
def watcher(server: tuple[str, int]) -> Iterator[Client]:
    """A client in #lobby of `server`, its join replay consumed."""
    with joined(server, "watcher", "lobby") as client:
        yield client
