"""The operator's administration of a server's accounts: `chatctl accounts add|passwd|remove|list`.

The accounts live in the data directory's accounts.sqlite3 (store/registry_sqlite.py), which a
running server shares: these functions may run while it serves. `--data :memory:` is refused,
since such a server's accounts exist only inside its process. With `--data redis://...`, they
are a cluster's: a change is an entry of its log, which every node applies (cluster/accounts.py).

A name follows the nick rules (names.py), because an account reserves the nick of the same
name. A password is never a command-line argument (other users see those in `ps`): it comes
from $CHATCTL_PASSWORD when that is set; else, on a terminal, it is asked twice; else it is the
first line of stdin (`printf 'secret\\n' | chatctl accounts add alice`).
"""

from __future__ import annotations

import getpass
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TextIO

from chatctl.cluster.accounts import ClusterAccounts
from chatctl.errors import ChatctlError, ExitCode
from chatctl.names import nick_problem, quote
from chatctl.passwords import hash_password, password_problem
from chatctl.redis_url import is_redis, parse_redis_url
from chatctl.store.registry import Account, Registry
from chatctl.store.url import MEMORY, open_registry

PASSWORD_ENV = "CHATCTL_PASSWORD"

# A password, or how to get one: asked only once the name is known to be acceptable.
PasswordSource = str | Callable[[], str]


def read_password(name: str, *, stdin: TextIO | None = None) -> str:
    """The password for account `name`: $CHATCTL_PASSWORD when set; on a terminal, asked
    twice (the two must match); otherwise the first line of stdin, without its newline."""
    from_env = os.environ.get(PASSWORD_ENV)
    if from_env is not None:
        return from_env
    stream = sys.stdin if stdin is None else stdin
    try:
        if stream.isatty():
            first = getpass.getpass(f"Password for {name}: ")
            if getpass.getpass("Again: ") != first:
                raise ChatctlError("the two passwords differ; nothing was changed")
            return first
        line = stream.readline()
    except EOFError:
        raise ChatctlError("no password given; nothing was changed") from None
    except UnicodeDecodeError as exc:
        raise ChatctlError(f"the password is not valid text: {exc.reason}") from None
    if not line:
        raise ChatctlError(
            f"no password: give it as the first line of stdin, or in ${PASSWORD_ENV}"
        )
    return line.removesuffix("\n")


def add(data: str | None, name: str, password: PasswordSource) -> None:
    """Create account `name`; an error when one of that name (any case) exists."""
    if is_redis(data):
        _cluster_change(data, "add", name, password)
        return
    with _registry(data, name) as registry:
        existing = registry.account(name)
        if existing is not None:
            raise ChatctlError(f"account {quote(existing.name)} exists already")
        if not registry.add_account(name, _hash(password), int(time.time() * 1000)):
            raise ChatctlError(f"account {quote(name)} exists already")


def passwd(data: str | None, name: str, password: PasswordSource) -> None:
    """Give account `name` a new password; an error when there is no such account."""
    if is_redis(data):
        _cluster_change(data, "passwd", name, password)
        return
    with _registry(data, name) as registry:
        if registry.account(name) is None or not registry.set_password(name, _hash(password)):
            raise ChatctlError(f"no account {quote(name)}")


def remove(data: str | None, name: str) -> None:
    """Delete account `name`; an error when there is no such account."""
    if is_redis(data):
        _cluster_change(data, "remove", name, None)
        return
    with _registry(data, name) as registry:
        if not registry.remove_account(name):
            raise ChatctlError(f"no account {quote(name)}")


def list_accounts(data: str | None, *, json_out: bool = False, out: TextIO | None = None) -> None:
    """Print every account, by name: its name and creation time (ISO 8601, UTC), one a line;
    with `json_out`, one JSON array of {"name", "created", "created_ms"}."""
    if is_redis(data):
        with _cluster(data or "", None) as cluster:
            cluster.read()
            accounts = cluster.log.registry.accounts()
    else:
        with _registry(data, None) as registry:
            accounts = registry.accounts()
    stream = sys.stdout if out is None else out
    if json_out:
        rows = [{"name": a.name, "created": _iso(a), "created_ms": a.created_ms} for a in accounts]
        print(json.dumps(rows), file=stream)
        return
    width = max((len(a.name) for a in accounts), default=0)
    for account in accounts:
        print(f"{account.name:<{width}}  {_iso(account)}", file=stream)


# -- internals -------------------------------------------------------------------------------


@contextmanager
def _registry(data: str | None, name: str | None) -> Iterator[Registry]:
    """The registry `data` names, closed after. Refuses ':memory:' and, when `name` is given,
    a name that is not a valid nick, before anything is opened."""
    if data == MEMORY:
        raise ChatctlError(
            "--data :memory: holds no accounts to administer (a server's in-memory accounts "
            "exist only inside its process); give the server's data directory",
            ExitCode.USAGE,
        )
    _check_name(name)
    registry = open_registry(data)
    try:
        yield registry
    finally:
        registry.close()


@contextmanager
def _cluster(data: str, name: str | None) -> Iterator[ClusterAccounts]:
    """The accounts of the cluster `data` names, its connection closed after."""
    _check_name(name)
    cluster = ClusterAccounts(parse_redis_url(data))
    try:
        yield cluster
    finally:
        cluster.close()


def _cluster_change(
    data: str | None, action: str, name: str, password: PasswordSource | None
) -> None:
    """A change appended to the cluster's log. What it will find is checked first (before a
    password is asked for), and its outcome is read back: the log's order decides."""
    with _cluster(data or "", name) as cluster:
        cluster.read()
        existing = cluster.log.registry.account(name)
        if action == "add" and existing is not None:
            raise ChatctlError(f"account {quote(existing.name)} exists already")
        if action != "add" and existing is None:
            raise ChatctlError(f"no account {quote(name)}")
        refused = cluster.change(action, name, "" if password is None else _hash(password))
        if refused:
            raise ChatctlError(refused)


def _check_name(name: str | None) -> None:
    problem = None if name is None else nick_problem(name)
    if name is not None and problem is not None:
        raise ChatctlError(f"invalid account name {quote(name)}: {problem}", ExitCode.USAGE)


def _hash(password: PasswordSource) -> str:
    text = password if isinstance(password, str) else password()
    problem = password_problem(text)
    if problem is not None:
        raise ChatctlError(problem)
    return hash_password(text)


def _iso(account: Account) -> str:
    return datetime.fromtimestamp(account.created_ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
