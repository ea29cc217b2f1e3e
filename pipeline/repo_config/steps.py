"""The steps a configuration runs (validate steps, analysis steps) and their names: a step's name
defaults to its command's first word (`pytest -q` -> "pytest"), or the first two for task runners
(`npm test`, `make lint`, `python -m mypy`; three for `npm run lint`), and repeated names are made
unique (" (2)", " (3)"). Pure.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass

MAX_STEP_NAME = 100

# Commands whose first word alone says little: the step is named after the next word as well.
RUNNERS = frozenset({"npm", "yarn", "pnpm", "bun", "npx", "pnpx", "make", "gmake", "cargo", "go", "poetry",
                     "uv", "uvx", "pdm", "hatch", "tox", "nox", "pipenv", "bundle", "rake", "mvn", "gradle",
                     "./gradlew", "./mvnw", "dotnet", "deno", "just", "task", "composer", "mix", "flutter",
                     "dart", "swift", "php", "pre-commit", "docker", "nix"})
# After a runner, these subcommands are followed by the interesting word (`npm run lint`).
RUN_SUBCOMMANDS = frozenset({"run", "exec", "x", "dlx", "run-script"})
PYTHON = re.compile(r"python(\d+(\.\d+)?)?\Z")


@dataclass(frozen=True)
class Step:
    """A validate step: `run` is a shell command run in the checkout's root; `name` labels it."""

    name: str
    run: str


@dataclass(frozen=True)
class AnalysisStep:
    """A step whose output is a report (SARIF) turned into annotations.

    The SARIF document is the step's stdout, or the file `output` (relative to the checkout's root) when
    given. A tool that exits non-zero because it found problems (ruff does) still produced a report.
    """

    name: str
    run: str
    format: str = "sarif"
    output: str | None = None


DEFAULT_ANALYSIS = AnalysisStep(name="ruff", run="ruff check --output-format sarif .", format="sarif")
"""An example analysis step (documented, not enabled by default)."""


def _words(command: str) -> list[str]:
    first = command.strip().split("\n", 1)[0]
    try:
        words = shlex.split(first, comments=True)
    except ValueError:
        words = first.split()
    while words and re.match(r"[A-Za-z_][A-Za-z0-9_]*=", words[0]):  # FOO=bar pytest
        words.pop(0)
    return words


def default_step_name(command: str) -> str:
    """A readable name for a command: `pytest -q` -> "pytest", `npm run lint` -> "npm run lint"."""
    words = _words(command)
    if not words:
        return ""
    first = words[0].removeprefix("./") if words[0] not in RUNNERS else words[0]
    rest = [w for w in words[1:] if not w.startswith("-")]
    if PYTHON.match(first) and len(words) > 2 and words[1] == "-m":
        name = f"{first} -m {words[2]}"
    elif first in RUNNERS and rest:
        name = f"{first} {rest[0]}"
        if rest[0] in RUN_SUBCOMMANDS and len(rest) > 1:
            name += f" {rest[1]}"
    else:
        name = first
    return name[:MAX_STEP_NAME]


def name_steps(items: Sequence[tuple[str | None, str]]) -> tuple[Step, ...]:
    """Steps from (name or None, command) pairs: missing names derived, repeated ones made unique."""
    steps: list[Step] = []
    seen: set[str] = set()
    for index, (name, command) in enumerate(items, start=1):
        base = name or default_step_name(command) or f"step {index}"
        unique, n = base, 1
        while unique in seen:
            n += 1
            unique = f"{base} ({n})"
        seen.add(unique)
        steps.append(Step(name=unique, run=command))
    return tuple(steps)
