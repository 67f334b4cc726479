"""Trust on first use for TLS clients (client/trust.py): real `chatctl serve --tls-self-signed`
servers, the CLI in subprocesses and the library with a confirm callback; property tests for
known_servers and fingerprints. XDG_CONFIG_HOME is a temporary directory in every test."""

from __future__ import annotations

import hashlib
import io
import os
import stat
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chatctl.address import format_addr
from chatctl.client import Client, Closed, Disconnected, Reconnected
from chatctl.client.connection import Backoff
from chatctl.client.trust import (
    ServerTrust,
    add_entry,
    client_context,
    entry,
    known_servers_path,
    lookup,
    parse_line,
    server_key,
)
from chatctl.errors import ChatctlError, ExitCode, Untrusted
from chatctl.fingerprint import certificate_fingerprint, format_fingerprint, parse_fingerprint
from chatctl.server.tls import fingerprint
from chatctl.ui.join import ask_trust
from tests.clients import wait_for
from tests.servers import ServeProcess, run_chatctl, serve_process, server_instance

BANNER = r"speaking TLS only: .*\((SHA256:[0-9A-F:]+)\)"


@pytest.fixture(autouse=True)
def config_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """known_servers under tmp_path, for this process and the chatctl it starts."""
    home = tmp_path / "config"
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home))
    for name in ("CHATCTL_TLS_FINGERPRINT", "CHATCTL_TLS_CA", "CHATCTL_HOST", "CHATCTL_PORT"):
        monkeypatch.delenv(name, raising=False)
    return home


@pytest.fixture
def known(config_home: Path) -> Path:
    path = known_servers_path()
    assert path == config_home / "chatctl" / "known_servers"
    return path


def self_signed(stack: ExitStack, data: Path, *args: str) -> tuple[ServeProcess, str, str]:
    """A `chatctl serve --tls-self-signed` process, its certificate in `data`, closed with
    `stack` (or earlier by its `stop`): the handle, its tls:// URL, its banner's fingerprint."""
    handle = stack.enter_context(serve_process("--tls-self-signed", "--data", str(data), *args))
    shown = handle.wait_for_line(BANNER).group(1)
    return handle, f"tls://{format_addr(handle.host, handle.port)}", shown


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[ServeProcess, str, str]]:
    with ExitStack() as stack:
        yield self_signed(stack, tmp_path / "data")


def one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    return lines[0]


# -- the command line --------------------------------------------------------------------------


def test_unknown_certificate_is_refused_in_a_script(
    server: tuple[ServeProcess, str, str], known: Path
) -> None:
    handle, url, shown = server
    done = run_chatctl("send", url, "hello")
    assert done.returncode == ExitCode.CONNECT
    line = one_line(done.stderr)
    assert line.startswith(f"chatctl: cannot trust {handle.host}:{handle.port}: self-signed")
    assert f"--tls-fingerprint {shown}" in line and "--tls-ca" in line
    # join in a pipe (no terminal to ask on) refuses the same way
    joined = run_chatctl("join", url, "--count", "1", "--timeout", "5")
    assert joined.returncode == ExitCode.CONNECT
    assert shown in one_line(joined.stderr)
    assert not known.exists()


def test_matching_fingerprint_is_accepted_and_remembered(
    server: tuple[ServeProcess, str, str], known: Path
) -> None:
    handle, url, shown = server
    typed = shown.removeprefix("SHA256:").replace(":", "").lower()  # any case, no colons
    done = run_chatctl("send", url, "pinned", "--tls-fingerprint", typed)
    assert done.returncode == 0, done.stderr
    assert known.read_text() == f"{handle.host}:{handle.port} {shown}\n"
    assert stat.S_IMODE(known.stat().st_mode) == 0o600
    assert stat.S_IMODE(known.parent.stat().st_mode) == 0o700
    again = run_chatctl("send", url, "remembered")  # no option: known_servers says yes
    assert again.returncode == 0, again.stderr
    assert known.read_text().count("\n") == 1  # remembered once


def test_fingerprint_from_the_environment(
    server: tuple[ServeProcess, str, str], known: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, url, shown = server
    monkeypatch.setenv("CHATCTL_TLS_FINGERPRINT", shown)
    done = run_chatctl("send", url, "from the environment")
    assert done.returncode == 0, done.stderr
    assert shown in known.read_text()


def test_wrong_fingerprint_is_refused_showing_both(
    server: tuple[ServeProcess, str, str], known: Path
) -> None:
    handle, url, shown = server
    wrong = format_fingerprint(bytes(32))
    done = run_chatctl("send", url, "no", "--tls-fingerprint", wrong)
    assert done.returncode == ExitCode.CONNECT
    line = one_line(done.stderr)
    assert f"cannot trust {handle.host}:{handle.port}" in line
    assert shown in line and wrong in line
    assert not known.exists()


def test_malformed_fingerprint_or_plaintext_address_is_a_usage_error(
    server: tuple[ServeProcess, str, str],
) -> None:
    handle, url, _ = server
    done = run_chatctl("send", url, "x", "--tls-fingerprint", "SHA256:AB:CD")
    assert done.returncode == ExitCode.USAGE
    assert "is not a SHA-256 fingerprint" in one_line(done.stderr)
    plain = format_fingerprint(bytes(32))
    done = run_chatctl("send", f"{handle.host}:{handle.port}", "x", "--tls-fingerprint", plain)
    assert done.returncode == ExitCode.USAGE
    assert one_line(done.stderr) == "chatctl: --tls-fingerprint is for tls:// addresses"


def test_changed_certificate_is_refused_loudly(tmp_path: Path, known: Path) -> None:
    with ExitStack() as stack:
        first, url, old = self_signed(stack, tmp_path / "one")
        port = str(first.port)
        assert run_chatctl("send", url, "first", "--tls-fingerprint", old).returncode == 0
        first.stop()
        # The same port, a new self-signed certificate (another data directory).
        _, url2, new = self_signed(stack, tmp_path / "two", "--port", port)
        assert url2 == url and new != old
        done = run_chatctl("send", url, "second")
        assert done.returncode == ExitCode.CONNECT
        line = one_line(done.stderr)
        assert line.startswith(f"chatctl: REFUSED: the certificate of 127.0.0.1:{port} has CHANGED")
        assert f"remembered {old}" in line and f"presented {new}" in line
        assert f"delete the line for 127.0.0.1:{port} (line 1) in {known}" in line
        # Not even a pin of the new certificate overrides the remembered one.
        pinned = run_chatctl("send", url, "second", "--tls-fingerprint", new)
        assert pinned.returncode == ExitCode.CONNECT and "CHANGED" in pinned.stderr
        # Once the line is gone, the new certificate is a new server.
        known.write_text("")
        assert run_chatctl("send", url, "third", "--tls-fingerprint", new).returncode == 0


def test_bot_takes_the_fingerprint_option(server: tuple[ServeProcess, str, str]) -> None:
    _, url, shown = server
    wrong = format_fingerprint(bytes(32))
    done = run_chatctl("bot", url, "--tls-fingerprint", wrong)
    assert done.returncode == ExitCode.CONNECT
    assert shown in done.stderr and f"not {wrong} as --tls-fingerprint says" in done.stderr


def test_ca_verified_server_needs_no_known_servers(pki: dict[str, str], known: Path) -> None:
    with server_instance(tls_cert=pki["cert"], tls_key=pki["key"]) as (_, host, port):
        url = f"tls://{host}:{port}"
        done = run_chatctl("send", url, "by CA", "--tls-ca", pki["ca"])
        assert done.returncode == 0, done.stderr
        # A pin still applies to a certificate a CA vouches for.
        real = fingerprint(Path(pki["cert"]).read_bytes())
        wrong = format_fingerprint(bytes(32))
        refused = run_chatctl("send", url, "x", "--tls-ca", pki["ca"], "--tls-fingerprint", wrong)
        assert refused.returncode == ExitCode.CONNECT
        assert real in refused.stderr and wrong in refused.stderr
        pinned = run_chatctl("send", url, "y", "--tls-ca", pki["ca"], "--tls-fingerprint", real)
        assert pinned.returncode == 0, pinned.stderr
    assert not known.exists()  # only certificates no CA vouches for are remembered


# -- the library: the question, reconnects -----------------------------------------------------


class Answers:
    """A confirm callback that records its questions and answers `yes`."""

    def __init__(self, yes: bool) -> None:
        self.yes = yes
        self.asked: list[tuple[str, str]] = []

    def __call__(self, addr: str, fingerprint: str) -> bool:
        self.asked.append((addr, fingerprint))
        return self.yes


def test_confirm_yes_trusts_and_remembers(
    server: tuple[ServeProcess, str, str], known: Path
) -> None:
    handle, _, shown = server
    answers = Answers(yes=True)
    trust = ServerTrust(client_context(), confirm=answers)
    client = Client(handle.host, handle.port, nick="asked", tls=trust)
    try:
        client.connect()
    finally:
        client.close()
    assert answers.asked == [(f"{handle.host}:{handle.port}", shown)]
    assert lookup(known.read_text(), server_key(handle.host, handle.port)) is not None
    # Another process (a new ServerTrust) finds it in known_servers: no question.
    later = Answers(yes=False)
    client = Client(
        handle.host, handle.port, nick="later", tls=ServerTrust(client_context(), confirm=later)
    )
    try:
        client.connect()
    finally:
        client.close()
    assert later.asked == []


def test_confirm_no_refuses_and_remembers_nothing(
    server: tuple[ServeProcess, str, str], known: Path
) -> None:
    handle, _, shown = server
    answers = Answers(yes=False)
    client = Client(
        handle.host, handle.port, nick="no", tls=ServerTrust(client_context(), confirm=answers)
    )
    with pytest.raises(Untrusted, match=f"not trusted \\(its fingerprint is {shown}\\)"):
        client.connect()
    assert len(answers.asked) == 1
    assert not known.exists()


def test_reconnect_asks_once_and_refuses_a_changed_certificate(tmp_path: Path, known: Path) -> None:
    answers = Answers(yes=True)
    with ExitStack() as stack:
        first, _, old = self_signed(stack, tmp_path / "one")
        port = str(first.port)
        client = Client(
            first.host,
            first.port,
            nick="resumer",
            tls=ServerTrust(client_context(), confirm=answers),
            reconnect=True,
            backoff=Backoff(base=0.05, cap=0.2),
        )
        stack.callback(client.close)
        client.connect()
        known.unlink()  # from now on only the process's memory knows the certificate
        first.stop()
        wait_for(client, Disconnected)
        # The same server again (same certificate): the reconnect asks nothing.
        second, _, again = self_signed(stack, tmp_path / "one", "--port", port)
        assert again == old
        wait_for(client, Reconnected)
        assert len(answers.asked) == 1
        second.stop()
        wait_for(client, Disconnected)
        # Another certificate on the same port: refused, and the client gives up.
        _, _, new = self_signed(stack, tmp_path / "two", "--port", port)
        closed = wait_for(client, Closed)
        assert isinstance(closed.error, Untrusted)
        assert f"changed while connected: it was {old}, it is {new}" in str(closed.error)
        assert len(answers.asked) == 1


@pytest.mark.parametrize(
    ("typed", "expected"),
    [
        ("y\n", True),
        ("YES\n", True),
        ("\n", False),
        ("n\n", False),
        ("", False),
        ("what\ny\n", True),
    ],
)
def test_the_terminal_question(
    typed: str, expected: bool, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(typed))
    shown = format_fingerprint(bytes(range(32)))
    assert ask_trust("example.org:1060", shown) is expected
    err = capsys.readouterr().err
    assert "example.org:1060" in err and shown in err and "Trust this server? [y/N]" in err


def test_unwritable_known_servers_still_connects_with_a_pin(
    server: tuple[ServeProcess, str, str], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    handle, _, shown = server
    blocker = tmp_path / "file"
    blocker.write_text("")  # a file where the directory should be
    trust = ServerTrust(client_context(), pin=shown, known_servers=blocker / "known_servers")
    client = Client(handle.host, handle.port, nick="pinned", tls=trust)
    try:
        client.connect()
    finally:
        client.close()
    assert f"could not remember {handle.host}:{handle.port} in {blocker}" in caplog.text


def test_a_bad_pin_is_a_usage_error() -> None:
    with pytest.raises(ChatctlError) as caught:
        ServerTrust(client_context(), pin="SHA256:zz")
    assert caught.value.exit_code == ExitCode.USAGE


# -- properties: fingerprints and the known_servers text ----------------------------------------

digests = st.binary(min_size=32, max_size=32)


@given(digests)
def test_property_fingerprint_format(digest: bytes) -> None:
    shown = format_fingerprint(digest)
    pairs = shown.removeprefix("SHA256:").split(":")
    assert len(pairs) == 32 and all(len(p) == 2 and p == p.upper() for p in pairs)
    assert bytes.fromhex("".join(pairs)) == digest


@given(digests, st.booleans(), st.booleans(), st.booleans(), st.booleans())
def test_property_fingerprint_normalisation(
    digest: bytes, lower: bool, colons: bool, prefix: bool, spaces: bool
) -> None:
    canonical = format_fingerprint(digest)
    typed = canonical if prefix else canonical.removeprefix("SHA256:")
    if not colons:
        typed = typed.replace(":", "") if not prefix else "SHA256:" + digest.hex()
    typed = typed.lower() if lower else typed
    typed = f"  {typed}\n" if spaces else typed
    assert parse_fingerprint(typed) == canonical


@given(st.text(max_size=120))
def test_property_parse_fingerprint_takes_only_32_hex_pairs(text: str) -> None:
    try:
        parsed = parse_fingerprint(text)
    except ValueError:
        return
    digits = text.strip()
    if digits[:7].upper() == "SHA256:":
        digits = digits[7:]
    assert parsed == format_fingerprint(bytes.fromhex(digits.replace(":", "")))
    assert parse_fingerprint(parsed) == parsed


@given(st.binary(max_size=200))
def test_property_certificate_fingerprint_is_sha256(der: bytes) -> None:
    assert certificate_fingerprint(der) == format_fingerprint(hashlib.sha256(der).digest())


hosts = st.one_of(
    st.from_regex(r"[A-Za-z0-9][A-Za-z0-9.-]{0,30}", fullmatch=True),
    st.ip_addresses().map(str),
)
ports = st.integers(min_value=1, max_value=65535)
keys = st.builds(server_key, hosts, ports)
fingerprints = digests.map(format_fingerprint)
# Lines without line breaks (what splitlines splits on) that are no entry.
junk_lines = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp")), max_size=100
).filter(lambda line: parse_line(line) is None)


@given(keys, fingerprints)
def test_property_entry_round_trip(key: str, fp: str) -> None:
    assert parse_line(entry(key, fp)) == (key, fp)
    assert parse_line(f"  {entry(key, fp).upper()}\t") == (key, fp)  # case, spacing


@given(st.lists(junk_lines, max_size=8), keys, fingerprints, st.booleans())
def test_property_malformed_lines_are_kept_and_ignored(
    junk: list[str], key: str, fp: str, final_newline: bool
) -> None:
    text = "\n".join(junk) + ("\n" if final_newline else "")
    assert lookup(text, key) is None
    added = add_entry(text, key, fp)
    assert added.startswith(text)  # every line kept as it was
    before = text.splitlines()
    assert added.splitlines() == [*before, entry(key, fp)]
    found = lookup(added, key)
    assert found is not None and found.fingerprint == fp and found.line == len(before) + 1
    # The first entry for a server is the one that counts.
    other = format_fingerprint(hashlib.sha256(fp.encode()).digest())
    assert lookup(add_entry(added, key, other), key) == found


@given(keys, keys, fingerprints)
def test_property_entries_are_per_server(key: str, other: str, fp: str) -> None:
    text = add_entry("", key, fp)
    assert (lookup(text, other) is not None) == (other == key)


def test_known_servers_path_follows_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", "relative/ignored")
    assert known_servers_path() == Path.home() / ".config" / "chatctl" / "known_servers"
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    assert known_servers_path() == tmp_path / "chatctl" / "known_servers"
    assert os.path.isabs(known_servers_path())
