"""One run: start the worker processes, step them through set-up, load and drain, and merge
what they measured.

    parent                         worker (x --workers)
    ------                         ------
    <- spawned
    connect ->                     connect + set up its connections
    <- ready (connected, failed)
    go (epoch, warm-up end, end) ->
    <- progress (sent, delivered)  ... publish, receive, verify ...
    <- pub_done {pub: sent}        its publishers have finished
    expect [sent by publisher] ->  drain until complete, or idle for DRAIN_IDLE
    <- result
    close ->                       close the connections and exit
"""

from __future__ import annotations

import multiprocessing
import socket
import time
from collections.abc import Callable
from multiprocessing.connection import Connection as Pipe
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess
from typing import Any

from chatctl.bench.local import cpu_seconds, listening_pid, rss_bytes
from chatctl.bench.params import Scenario
from chatctl.bench.plan import Plan, WorkerResult
from chatctl.bench.results import RunResult, Server, merge
from chatctl.bench.worker import CONNECT_TIMEOUT, worker_main
from chatctl.errors import ChatctlError, ConnectFailed, TimedOut

START_LAG_NS = 20_000_000  # the go message reaches every worker before the epoch
STALL_TIMEOUT = 30.0  # no word from any worker, or no progress, for this long: give up

# (elapsed seconds, messages sent, messages delivered) for a live display
Progress = Callable[[float, int, int], None]


class WorkerFailed(ChatctlError):
    pass


def run_plan(plan: Plan, *, server_pid: int | None, progress: Progress | None) -> RunResult:
    for t in plan.targets:
        try:
            socket.getaddrinfo(t.host, t.port, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise ConnectFailed(f"cannot resolve {t.host}: {exc}") from None
    ctx = multiprocessing.get_context("spawn")
    shares = [s for s in plan.shares() if s]
    pipes: list[Pipe] = []
    procs: list[BaseProcess] = []
    # The servers measured: the one started for the run, or each local target's (the nodes of
    # a cluster on this machine add up; one that is gone by the end of the run is left out).
    pids = [server_pid] if server_pid is not None else []
    if server_pid is None:
        local = [t for t in plan.targets if t.host in ("127.0.0.1", "::1", "localhost")]
        pids = [pid for t in local if (pid := listening_pid(t.port)) is not None]
    rss_before = _rss(pids)
    started = time.monotonic()
    clean = False
    try:
        for share in shares:
            parent_end, child_end = ctx.Pipe()
            proc = ctx.Process(target=worker_main, args=(plan, share, child_end), daemon=True)
            proc.start()
            child_end.close()
            pipes.append(parent_end)
            procs.append(proc)
        _gather(pipes, "spawned")
        _broadcast(pipes, ("connect",))
        # Set-up has its own deadline in each worker (CONNECT_TIMEOUT, longer for many).
        per_conn = plan.target.adapter.setup_per_conn
        wait = STALL_TIMEOUT + CONNECT_TIMEOUT + 2 * len(plan.clients) * per_conn
        ready = _gather(pipes, "ready", wait)
        connected = sum(r[1] for r in ready)
        failed = sum(r[2] for r in ready)
        if failed and plan.params.scenario is not Scenario.connect:
            first_error = next(r[3] for r in ready if r[3])
            raise ConnectFailed(
                f"{failed} of {connected + failed} bench connections failed: {first_error}"
            )
        rss_after = _rss(pids)
        cpu_before = _cpu(pids)
        if plan.params.scenario is Scenario.connect:
            _broadcast(pipes, ("stop",))
        else:
            _drive(plan, pipes, progress, started)
        parts: list[WorkerResult] = [r[1] for r in _gather(pipes, "result")]
        cpu_after = _cpu(pids)
        cpu = sum(
            after - before
            for pid, before in cpu_before.items()
            if (after := cpu_after.get(pid)) is not None
        )
        sent = sum(sum(w.sent) for w in parts)
        rss_after = max(rss_after, _rss(pids))
        _broadcast(pipes, ("stop",))
        elapsed = time.monotonic() - started
        per_conn = (rss_after - rss_before) // connected if connected and rss_after else 0
        server = Server(
            pid=pids[0] if pids else 0,
            rss_before=rss_before,
            rss_after=rss_after,
            per_connection=max(per_conn, 0),
            cpu_s=cpu,
            cpu_per_message_ns=int(cpu * 1e9 / sent) if sent else 0,
        )
        clean = True
        return merge(plan, parts, elapsed_s=elapsed, server=server)
    finally:
        for worker in procs:
            if not clean:
                worker.kill()  # it may be waiting for a step that will not come
            worker.join(timeout=10)
            if worker.is_alive():
                worker.kill()
                worker.join(timeout=5)
        for pipe in pipes:
            pipe.close()


def _rss(pids: list[int]) -> int:
    return sum(rss_bytes(pid) for pid in pids)


def _cpu(pids: list[int]) -> dict[int, float]:
    """CPU seconds of each server still there to ask."""
    return {pid: cpu for pid in pids if (cpu := cpu_seconds(pid)) is not None}


def _drive(plan: Plan, pipes: list[Pipe], progress: Progress | None, started: float) -> None:
    params = plan.params
    epoch = time.monotonic_ns() + START_LAG_NS
    warm = epoch + int(params.warmup * 1e9)
    end = warm + int(params.duration * 1e9) if not params.messages else 0
    _broadcast(pipes, ("go", epoch, warm, end))
    sent_by_pub = [0] * plan.n_pubs
    pub_done: set[int] = set()
    counters = dict.fromkeys(range(len(pipes)), (0, 0))
    moved = time.monotonic()
    while len(pub_done) < len(pipes):
        if time.monotonic() - moved > STALL_TIMEOUT:
            raise TimedOut(
                f"nothing sent or delivered for {STALL_TIMEOUT:.0f} s: the target stalled"
            )
        for i, msg in _receive(pipes, timeout=0.25):
            if msg[0] == "progress":
                if counters[i] != (msg[1], msg[2]):
                    moved = time.monotonic()
                counters[i] = (msg[1], msg[2])
            elif msg[0] == "pub_done":
                pub_done.add(i)
                for pub, sent in msg[1].items():
                    sent_by_pub[pub] = sent
        if progress is not None:
            progress(
                time.monotonic() - started,
                sum(c[0] for c in counters.values()),
                sum(c[1] for c in counters.values()),
            )
    _broadcast(pipes, ("expect", sent_by_pub))


def _broadcast(pipes: list[Pipe], msg: tuple[Any, ...]) -> None:
    for pipe in pipes:
        pipe.send(msg)


def _receive(pipes: list[Pipe], timeout: float) -> list[tuple[int, tuple[Any, ...]]]:
    out = []
    for pipe in wait(pipes, timeout=timeout):
        assert isinstance(pipe, Pipe)
        i = pipes.index(pipe)
        try:
            msg = pipe.recv()
        except EOFError:
            raise WorkerFailed(f"bench worker {i} exited unexpectedly") from None
        if msg[0] == "error":
            raise WorkerFailed(f"bench worker {i} failed: {msg[1]}")
        out.append((i, msg))
    return out


def _gather(pipes: list[Pipe], kind: str, wait: float = STALL_TIMEOUT) -> list[tuple[Any, ...]]:
    """The next `kind` message of every worker, in worker order; progress is skipped. Gives up
    after `wait` seconds without a word from any worker."""
    got: dict[int, tuple[Any, ...]] = {}
    deadline = time.monotonic() + wait
    while len(got) < len(pipes):
        if time.monotonic() > deadline:
            raise WorkerFailed(f"bench workers sent no {kind!r} within {wait:.0f} s")
        for i, msg in _receive(pipes, timeout=0.5):
            deadline = time.monotonic() + wait  # a worker that still reports is alive
            if msg[0] == kind:
                got[i] = msg
    return [got[i] for i in range(len(pipes))]
