"""A real redis-server for tests, on a free port of 127.0.0.1, that a test may kill and start
again on the same port; and a blocking one-command client built on chatctl's own codec.

- `redis_server(tmp_path)`: a context manager yielding a `RedisServer` (skips the test when
  redis-server is not installed); killed at exit, and with the test process in any case.
- `RedisServer.kill()` (SIGKILL) / `.start()`: the same port, the same directory (with
  `aof=True`, what it had acknowledged survives: `appendfsync always`); `replica_of=PORT`
  makes it a replica of another.
- `redis_call(port, *args)`: one command, its reply (errors as values).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from chatctl.cluster.resp import Pipeline, Reply, command
from tests.servers import dies_with_parent, free_port
from tests.test_bench_run import wait_listening


class RedisServer:
    def __init__(
        self, directory: Path, *, aof: bool = False, replica_of: int | None = None
    ) -> None:
        self.port = free_port()
        self.directory = directory
        self.aof = aof
        self.replica_of = replica_of  # a replica of the Redis on this port
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def start(self) -> None:
        persistence = (
            ["--appendonly", "yes", "--appendfsync", "always"]
            if self.aof
            else ["--appendonly", "no"]
        )
        argv = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        if self.replica_of is not None:
            argv += ["--replicaof", "127.0.0.1", str(self.replica_of)]
        self.proc = subprocess.Popen(
            [*argv, *persistence, "--dir", str(self.directory)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=dies_with_parent(),  # noqa: PLW1509  (no lock taken; see tests/servers.py)
        )
        wait_listening(self.port, self.proc)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc = None


@contextmanager
def redis_server(
    directory: Path, *, aof: bool = False, replica_of: int | None = None
) -> Iterator[RedisServer]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    server = RedisServer(directory, aof=aof, replica_of=replica_of)
    server.start()
    try:
        yield server
    finally:
        server.kill()


def redis_call(port: int, *args: bytes | str | int, db: int = 0, timeout: float = 10.0) -> Reply:
    """One command on a new blocking connection (to database `db`); its reply."""
    pipeline: Pipeline[int] = Pipeline()
    if db:
        pipeline.send(command("SELECT", db), 1)
    pipeline.send(command(*args), 0)
    deadline = time.monotonic() + timeout
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(pipeline.data_to_send())
        while time.monotonic() < deadline:
            data = sock.recv(65536)
            if not data:
                break
            for tag, reply in pipeline.receive(data):
                if tag == 0:
                    return reply
    raise AssertionError(f"no reply to {args!r} from redis on port {port}")
