"""Slash commands in PR comments, as a pure function of the text (tested without I/O).

A command is a line whose first character (after at most three spaces, which Markdown ignores) is
`/`, outside fenced code blocks (``` or ~~~, three or more, closed by the same kind at least as long),
indented code blocks (four spaces or a tab), block quotes (`>`, and the lines that continue a quoted
paragraph without a blank line: GitHub shows them inside the quote) and HTML comments. A comment may
hold several commands; each runs once, in order (a repeated identical line counts once).

Unknown words (`/lgtm`, `/assign`) are dropped: they may be meant for another bot. Known words with
bad arguments (`/merge foo`, `/auto-merge maybe`) come back with `error` set to the reply to give.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pipeline.repo_config.parse import MERGE_METHODS

MAX_COMMANDS = 10  # per comment; the rest are ignored
MAX_GOAL = 2000    # characters of an /agent goal

# canonical name -> (usage, what it does)
COMMANDS: dict[str, tuple[str, str]] = {
    "validate": ("/validate", "validate the current head again (alias: `/retest`)"),
    "cancel": ("/cancel", "cancel the running validation"),
    "merge": ("/merge [merge|squash|rebase]",
              "merge now, if the validation of the current head succeeded"),
    "auto-merge": ("/auto-merge on|off", "merge this PR by itself after its next successful validation"),
    "queue": ("/queue", "add this PR to the merge queue: it is tested on top of the base and the PRs ahead "
                        "of it, then merged"),
    "dequeue": ("/dequeue", "take this PR out of the merge queue"),
    "ok-to-test": ("/ok-to-test", "let the current head of a fork PR run (that commit only)"),
    "agent": ("/agent <goal>", "ask the coding agent to work on this PR"),
    "plan": ("/plan confirm|reject", "confirm or reject the agent's plan"),
    "help": ("/help", "list these commands"),
}
ALIASES = {"retest": "validate"}

_COMMAND_LINE = re.compile(r"/(?P<word>[A-Za-z][A-Za-z0-9_-]*)(?:[ \t]+(?P<rest>.*?))?[ \t]*\Z")
_FENCE_OPEN = re.compile(r"[ \t]*(?P<fence>`{3,}|~{3,})(?P<info>.*)\Z")
_INDENTED_CODE = re.compile(r"( {4}|\t| {0,3}\t)")
_QUOTE = re.compile(r" {0,3}>")


@dataclass(frozen=True)
class Command:
    name: str                 # canonical name (aliases resolved)
    args: tuple[str, ...]     # lower-cased words; /agent: the goal as written, one element
    line: int                 # 1-based line of the comment
    error: str | None = None  # set when the arguments are wrong: the reply, with the usage

    @property
    def usage(self) -> str:
        return COMMANDS[self.name][0]

    @property
    def goal(self) -> str:
        return self.args[0] if self.name == "agent" and self.args else ""


def _command(word: str, rest: str, line: int) -> Command | None:
    name = ALIASES.get(word.lower(), word.lower())
    if name not in COMMANDS:
        return None
    usage = COMMANDS[name][0]
    if name == "agent":
        goal = rest.strip()
        if not goal:
            return Command(name, (), line, f"`/agent` needs a goal. Usage: `{usage}`")
        return Command(name, (goal[:MAX_GOAL],), line)
    words = tuple(w.lower() for w in rest.split())
    if name == "help":
        return Command(name, (), line)
    if name == "merge":
        if len(words) > 1 or (words and words[0] not in MERGE_METHODS):
            return Command(name, words, line,
                           f"`/merge {rest.strip()}` is not a merge method. Usage: `{usage}`")
        return Command(name, words, line)
    if name == "plan":
        if len(words) != 1 or words[0] not in ("confirm", "reject"):
            given = f"`/plan {rest.strip()}`" if rest.strip() else "`/plan`"
            return Command(name, words, line, f"{given} needs `confirm` or `reject`. Usage: `{usage}`")
        return Command(name, words, line)
    if name == "auto-merge":
        if len(words) != 1 or words[0] not in ("on", "off"):
            given = f"`/auto-merge {rest.strip()}`" if rest.strip() else "`/auto-merge`"
            return Command(name, words, line, f"{given} needs `on` or `off`. Usage: `{usage}`")
        return Command(name, words, line)
    if words:
        return Command(name, words, line, f"`/{name}` takes no arguments. Usage: `{usage}`")
    return Command(name, (), line)


def parse_commands(body: str) -> list[Command]:
    """The commands of a comment body, in order (see the module docstring for the rules)."""
    commands: list[Command] = []
    seen: set[tuple[str, tuple[str, ...]]] = set()
    fence: str | None = None      # the opening fence while inside a fenced block
    in_comment = False            # inside <!-- ... -->
    quoting = False               # the previous line belonged to a quoted paragraph
    for number, raw in enumerate((body or "").replace("\r\n", "\n").replace("\r", "\n").split("\n"), start=1):
        line = raw.rstrip()
        if fence is not None:
            stripped = line.strip()
            if stripped.startswith(fence[0] * len(fence)) and not stripped.strip(fence[0]):
                fence = None
            continue
        if in_comment:
            in_comment = "-->" not in line
            continue
        if not line.strip():
            quoting = False
            continue
        opened = _FENCE_OPEN.match(line)
        if opened and not (opened["fence"][0] == "`" and "`" in opened["info"]):
            fence = opened["fence"]
            quoting = False
            continue
        if line.lstrip().startswith("<!--"):
            in_comment = "-->" not in line.lstrip()[4:]
            continue
        if _QUOTE.match(line):
            quoting = True
            continue
        if quoting or _INDENTED_CODE.match(line):
            continue  # a lazy continuation of the quote, or code
        found = _COMMAND_LINE.match(line.lstrip(" "))
        if found is None:
            continue
        command = _command(found["word"], found["rest"] or "", number)
        if command is None:
            continue
        key = (command.name, command.args)
        if key in seen:
            continue
        seen.add(key)
        commands.append(command)
        if len(commands) >= MAX_COMMANDS:
            break
    return commands


def help_text() -> str:
    lines = ["Commands (on their own line; anyone with write access to the repository may run them):", ""]
    lines += [f"- `{usage}`: {what}" for usage, what in COMMANDS.values()]
    lines += ["", "The check run's buttons do the same: **Re-run**, **Merge** and **Fix with agent**."]
    return "\n".join(lines)

