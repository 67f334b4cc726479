"""Shared test settings: hypothesis profiles (ci keeps the suite to minutes, fuzz goes deep)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import trustme
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


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A test CA and a certificate for 127.0.0.1 and localhost, as files."""
    ca = trustme.CA()
    issued = ca.issue_cert("127.0.0.1", "localhost")
    where = tmp_path_factory.mktemp("pki")
    paths = {"cert": where / "cert.pem", "key": where / "key.pem", "ca": where / "ca.pem"}
    issued.cert_chain_pems[0].write_to_path(str(paths["cert"]))
    issued.private_key_pem.write_to_path(str(paths["key"]))
    ca.cert_pem.write_to_path(str(paths["ca"]))
    return {name: str(path) for name, path in paths.items()}
