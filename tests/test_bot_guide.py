"""The bot's knowledge stays in step with the real command line: every `chatctl ...` command
and `--option` the user guide (chatctl/data/guide.md) mentions exists, found by walking the
Typer app's click commands (no help text is parsed), and every /command it mentions is one
the chat client knows."""

from __future__ import annotations

import re
import shlex

import click
import pytest
import typer.main

from chatctl.bot.knowledge import Section, parse_markdown
from chatctl.bot.offline import default_guide
from chatctl.cli import app
from chatctl.ui.commands import COMMANDS

ROOT = typer.main.get_command(app)
GUIDE = default_guide()
SECTIONS = parse_markdown(GUIDE)

_SPAN = re.compile(r"`([^`]+)`")
_CHATCTL = re.compile(r"(?:^|(?<=[\s(|]))chatctl(?=\s|$)")
_OPTION = re.compile(r"(?<![\w-])(--?[A-Za-z][\w-]*)")
_SLASH = re.compile(r"(?<![\w/])/([a-z]+)\b")


def _options(command: click.Command) -> set[str]:
    """The options `command --help` lists (hidden ones are not mentioned there)."""
    names = {"--help", "-h"}
    for param in command.params:
        if isinstance(param, click.Option) and not param.hidden:
            names.update(param.opts)
            names.update(param.secondary_opts)
    return names


def resolve(words: list[str]) -> tuple[click.Command, list[str], list[str]]:
    """Walk `chatctl WORDS...` down the command groups: the command reached, its path, and the
    words after it. An unknown subcommand fails the test."""
    command: click.Command = ROOT
    path = ["chatctl"]
    rest = list(words)
    while isinstance(command, click.Group) and rest and not rest[0].startswith("-"):
        word = rest[0]
        if word.isupper():  # `chatctl COMMAND --help`: a placeholder for any command
            break
        sub = command.commands.get(word)
        assert sub is not None, f"`{' '.join([*path, word])}`: {word!r} is not a command"
        assert not sub.hidden, f"`{' '.join([*path, word])}` is hidden from --help"
        command, path, rest = sub, [*path, word], rest[1:]
    return command, path, rest


def _words(span: str) -> list[str]:
    try:
        return shlex.split(span)
    except ValueError:
        return span.split()


def invocations(text: str) -> list[list[str]]:
    """The `chatctl ...` invocations in the code spans of `text`, each as its words after
    `chatctl` (a span may hold several, e.g. after a pipe)."""
    found = []
    for span in _SPAN.findall(text):
        for m in _CHATCTL.finditer(span):
            tail = re.split(r"[|;&]", span[m.end() :], maxsplit=1)[0]
            found.append(_words(tail))
    return found


def section_commands(section: Section) -> list[click.Command]:
    """The commands a section is about: those it invokes; for a subsection that invokes none,
    its parent's; for a section about no command, every command."""
    for candidate in [section, *_parents(section)]:
        commands = [resolve(words)[0] for words in invocations(candidate.body)]
        commands = [c for c in commands if c is not ROOT]
        if commands:
            return commands
    return _all_commands(ROOT)


def _parents(section: Section) -> list[Section]:
    parents = []
    for depth in range(len(section.path) - 1, 0, -1):
        parents += [s for s in SECTIONS if s.path == section.path[:depth]]
    return parents


def _all_commands(group: click.Command) -> list[click.Command]:
    if not isinstance(group, click.Group):
        return [group]
    return [c for sub in group.commands.values() for c in _all_commands(sub)]


def test_the_guide_invokes_commands() -> None:
    """The test below has something to check: the guide is full of real invocations."""
    paths = {" ".join(resolve(words)[1]) for words in invocations(GUIDE)}
    assert {
        "chatctl serve",
        "chatctl join",
        "chatctl send",
        "chatctl bench",
        "chatctl bot",
        "chatctl accounts add",
    } <= paths


@pytest.mark.parametrize("section", SECTIONS, ids=[s.title for s in SECTIONS])
def test_every_command_and_option_in_the_guide_exists(section: Section) -> None:
    # Options inside a `chatctl CMD ...` span belong to CMD.
    for words in invocations(section.body):
        command, path, rest = resolve(words)
        known = _options(command)
        for word in rest:
            option = word.split("=", 1)[0]
            if _OPTION.fullmatch(option):
                assert option in known, f"`{' '.join(path)}` has no {option} (in `{words}`)"
    # An option on its own (`--every-lines N`) belongs to one of the section's commands.
    commands = section_commands(section)
    for span in _SPAN.findall(section.body):
        if _CHATCTL.search(span) or not span.startswith("-"):
            continue  # a chatctl invocation (above), or another program's (`pip install -e .`)
        for option in _OPTION.findall(span):
            owners = [c.name for c in commands if option in _options(c)]
            assert owners, (
                f"{section.title!r}: no command it is about ({', '.join(str(c.name) for c in commands)}) "
                f"has {option}"
            )


# The guide's example of a line that starts with a slash: `//etc` sends `/etc`.
NOT_COMMANDS = {"etc"}


def test_every_slash_command_in_the_guide_exists() -> None:
    mentioned = set()
    for span in _SPAN.findall(GUIDE):
        if "://" in span or span.startswith(("~", ".")):
            continue
        mentioned |= set(_SLASH.findall(span))
    assert {"join", "part", "msg", "nick", "quit"} <= mentioned
    unknown = mentioned - set(COMMANDS) - NOT_COMMANDS
    assert not unknown, f"the guide mentions /{', /'.join(sorted(unknown))}"


def test_the_guide_installs_from_a_clone_not_from_pypi() -> None:
    install = next(s for s in SECTIONS if s.title == "Install chatctl")
    assert "`pip install .`" in install.body
    assert "not on PyPI" in install.body
    # No instruction to install a package called chatctl from the index (the one mention
    # says it finds nothing).
    rest = GUIDE.replace("`pip install chatctl` finds nothing", "")
    assert not re.search(r"pip install ['\"]?chatctl\b", rest)


def test_the_resolver_rejects_what_does_not_exist() -> None:
    with pytest.raises(AssertionError):
        resolve(["serve-forever"])
    with pytest.raises(AssertionError):
        resolve(["accounts", "rename"])
    command, path, rest = resolve(["bot", "--every-lines", "3"])
    assert path == ["chatctl", "bot"] and rest == ["--every-lines", "3"]
    assert "--every-lines" in _options(command) and "--every-line" not in _options(command)
