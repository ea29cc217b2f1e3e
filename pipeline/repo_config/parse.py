"""The repository's `.github/codegenapp.yml` parsed and checked, and the project's dashboard settings checked.

Pure: `parse_repo_config` turns text into a `RepoConfig` (or a `ConfigFileError` naming the line; the
YAML shapes and the error are in nodes.py, the steps' names in steps.py); `ProjectSettings` holds what
the dashboard stores. effective.py merges the two, key by key (precedence). The caller reads the file
from the pull request's BASE commit, never the head: a pull request must not be able to change how
it is validated (its commands, network access, auto-merge) by editing the file it is validated with.

Configuration file (`.github/codegenapp.yml`)
---------------------------------------------

Every key is optional; an empty file (or no file) means "use the project's settings, then the defaults".
Unknown keys are an error, so a typo such as `timeout:` fails loudly instead of being ignored.

| Key | Value | Default |
| --- | --- | --- |
| `setup` | list of shell commands, run in order before validation; they may download dependencies | `[]` |
| `validate` | list of steps, each a command or `{name: ..., run: ...}`; run in the checkout's root, no network | `[]` |
| `analysis` | list of `{run: ..., format: sarif, name: ..., output: ...}`; findings become annotations | `[]` |
| `timeout_minutes` | whole minutes, 1-360, for the whole run (setup + validate + analysis) | `30` |
| `auto_merge` | `true`/`false`, or `{enabled: true/false, method: merge/squash/rebase}` | off, `merge` |
| `cache_key` | list of globs (relative to the repository root); their contents key the setup snapshot | the usual manifests and lock files |
| `env` | mapping `NAME: value` of non-secret variables; names match `[A-Z_][A-Z0-9_]*` | `{}` |
| `setup_network` | `true`/`false`: whether setup commands may use the network | `true` |
| `delete_branch_after_merge` | `true`/`false`: delete the PR's head branch after the app merges it (never a fork's) | `false` |
| `merge_queue` | `true`/`false`, or `{enabled, method, batch_size, max_parallel, flaky_retries}` (see below) | off, `merge`, 1, 3, 1 |
| `ui` | the UI check: `start`, `url`, `ready_timeout_seconds`, `pages`, `accessibility` (see below) | none |

Details:

* A command is the text as written (`- true` runs the shell builtin `true`); multi-line commands
  (`run: |`) are run as one shell script. A step's name defaults to the command's first word
  (`pytest -q` -> `pytest`), or the first two for task runners (`npm test`, `make lint`,
  `python -m mypy`, `cargo test`, ...; three for `npm run lint`-style commands); repeated names get
  " (2)", " (3)". A list key may also be given a single string (`setup: npm ci`); a list holds at most
  100 entries. Runs go checkout -> setup -> validate -> analysis; a step fails when it exits non-zero.
* `analysis`: `format` may be omitted (`sarif` is the only format). The SARIF document is read from the
  step's standard output, unless `output: path/to/file.sarif` (relative to the repository root, no
  `..`) names a file the step writes; then standard output is only shown as the step's log. Example, not
  enabled by default: `{run: "ruff check --output-format sarif .", format: sarif}` (`DEFAULT_ANALYSIS`).
* `env` values may be strings, numbers or booleans; numbers keep the text as written (`3.10` stays
  "3.10", not "3.1") and booleans become "true"/"false". Secrets do not belong here: the file is public.
* `auto_merge: {method: squash}` without `enabled` only chooses the method (used when auto-merge is
  turned on from the dashboard or with `/auto-merge on`). The default method is `merge`, GitHub's own
  default for the merge API. The method also applies to `/merge` and the Merge button, unless the
  command names one (`/merge squash`).
* `delete_branch_after_merge: true` deletes the head branch once the app has merged the PR (by
  auto-merge, `/merge` or the Merge button). A fork's branch is never touched: it is not ours.
* `merge_queue` (see pipeline/repo_config/merge_queue_block.py): `enabled` `true`/`false` (`false`; the
  bare `merge_queue: true` is short for it): the queue is on: `/queue` adds a PR to it, and auto-merge
  queues a green PR instead of merging it directly; `method` merge, squash, rebase or fast-forward
  (`merge`; fast-forward pushes the tested commit itself to the base); `batch_size` 1-32 (1): PRs tested
  together as one candidate; `max_parallel` 1-10 (3): candidates tested at once; `flaky_retries` 0-3
  (1): automatic re-runs of a failing step before its PR is ejected. Each sub-key has its own
  precedence: one the file leaves out comes from the project's settings, then the default. Errors name
  the sub-key as a path: `"merge_queue.batch_size" must be a whole number between 1 and 32, got "0"`.
* `ui` (see pipeline/repo_config/ui_block.py for an example): `start` (required) is the command that runs the app in
  the sandbox, in the foreground; `url` (required) is where it listens there, `http://` on 127.0.0.1,
  localhost or [::1], no path; `ready_timeout_seconds` 1-600 (60); `accessibility` report (default) or
  enforce; `pages` (default `[/]`, at most 50) are paths, or `{path, expect_text, steps}` with steps
  (at most 50) each one of `fill: {label, value}`, `click: {role, name}` / `click: {text}` / `click: text`,
  `expect_text: text`, `wait_for: {text, timeout_seconds}` / `wait_for: text` (10 s by default, at most
  300). Errors name the key as a path: `"ui.pages[2].steps[1].click.role" must be an ARIA role ...`.
* A key written with no value (`validate:`) is an error: write `validate: []` to run nothing, or remove
  the key to use the project's setting. Repeated keys, YAML merge keys (`<<`), files over 256 KiB and
  nesting deeper than 64 levels are errors too; `env` holds at most 200 variables.

Precedence (per key): see effective.py.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

import yaml

from pipeline.repo_config.merge_queue_block import (QUEUE_BOUNDS, QUEUE_KEYS, QUEUE_METHODS, MergeQueueKeys,
                                                    queue_value_problem)
from pipeline.repo_config.nodes import (BOOL_TAG, CONFIG_PATH, INT_TAG, NULL_TAG, STR_TAG, TEXT_TAGS, ConfigFileError,
                                        NodeReader, compose, describe, suggest)
from pipeline.repo_config.steps import MAX_STEP_NAME, AnalysisStep, Step, name_steps
from pipeline.repo_config.ui_block import (ACCESSIBILITY_MODES, DEFAULT_READY_TIMEOUT_SECONDS, DEFAULT_WAIT_SECONDS,
                                           LOOPBACK_HOSTS, MAX_PAGES, MAX_READY_TIMEOUT_SECONDS, MAX_STEPS,
                                           MAX_WAIT_SECONDS, ROLES, STEP_KINDS, UiConfig, UiPage, UiStep)

MAX_TIMEOUT_MINUTES = 360
MERGE_METHODS = ("merge", "squash", "rebase")
ANALYSIS_FORMATS = ("sarif",)
MAX_CONFIG_BYTES = 256 * 1024
MAX_ENV_VARIABLES = 200
ENV_NAME = re.compile(r"[A-Z_][A-Z0-9_]*\Z")

UI_KEYS = ("start", "url", "ready_timeout_seconds", "pages", "accessibility")
KEYS = ("setup", "validate", "analysis", "timeout_minutes", "auto_merge", "cache_key", "env",
        "setup_network", "delete_branch_after_merge", "merge_queue", "ui")


@dataclass(frozen=True)
class RepoConfig:
    """What the file says. `None` means "not set" (the project's setting or the default applies)."""

    setup: tuple[str, ...] | None = None
    validate: tuple[Step, ...] | None = None
    analysis: tuple[AnalysisStep, ...] | None = None
    timeout_minutes: int | None = None
    auto_merge: bool | None = None
    merge_method: str | None = None
    cache_key: tuple[str, ...] | None = None
    env: Mapping[str, str] | None = None
    setup_network: bool | None = None
    delete_branch_after_merge: bool | None = None
    merge_queue: MergeQueueKeys | None = None
    ui: UiConfig | None = None
    present_keys: frozenset[str] = frozenset()


@dataclass(frozen=True)
class ProjectSettings:
    """What the dashboard stores for a project. Lists become tuples; blank commands are dropped.

    Raises ValueError for a timeout outside 1-360 or an invalid variable name (the dashboard shows it).
    """

    setup_commands: tuple[str, ...] = ()
    validate_commands: tuple[str, ...] = ()
    auto_merge_enabled: bool = False
    env: Mapping[str, str] = field(default_factory=dict)
    timeout_minutes: int | None = None
    merge_queue: MergeQueueKeys = MergeQueueKeys()

    def __post_init__(self) -> None:
        object.__setattr__(self, "setup_commands", _clean_commands(self.setup_commands))
        object.__setattr__(self, "validate_commands", _clean_commands(self.validate_commands))
        env = {str(k): (str(v).lower() if isinstance(v, bool) else str(v)) for k, v in dict(self.env).items()}
        for name in env:
            if not ENV_NAME.match(name):
                raise ValueError(f"variable name {name!r} must match [A-Z_][A-Z0-9_]*")
        object.__setattr__(self, "env", MappingProxyType(env))
        minutes = self.timeout_minutes
        if minutes is not None and (isinstance(minutes, bool) or not isinstance(minutes, int)
                                    or not 1 <= minutes <= MAX_TIMEOUT_MINUTES):
            raise ValueError(f"timeout must be a whole number of minutes between 1 and {MAX_TIMEOUT_MINUTES}")


def _clean_commands(commands: Iterable[str]) -> tuple[str, ...]:
    if isinstance(commands, str):
        commands = commands.splitlines()
    return tuple(c.strip() for c in commands if c.strip())


class _Parser(NodeReader):
    """The file's keys, each read from its node."""

    def setup_network(self, node: yaml.Node, key: str) -> bool:
        return self.boolean(node, key, f'"{key}"')

    def flag(self, node: yaml.Node, key: str) -> bool:
        return self.boolean(node, key, f'"{key}"')

    def commands(self, node: yaml.Node, key: str) -> tuple[str, ...]:
        return tuple(self.text(item, key, f'each command in "{key}"')
                     for item in self.sequence(node, key, "commands"))

    def validate(self, node: yaml.Node, key: str) -> tuple[Step, ...]:
        items: list[tuple[str | None, str]] = []
        for item in self.sequence(node, key, "steps"):
            if isinstance(item, yaml.MappingNode):
                fields = {name: value for name, _, value in
                          self.mapping_items(item, key, ("name", "run"), f'a "{key}" step')}
                if "run" not in fields:
                    raise self.error(f'a "{key}" step needs "run: <command>"', key, item)
                items.append((self.step_name(fields.get("name"), key), self.text(fields["run"], key, '"run"')))
            else:
                items.append((None, self.text(item, key, f'each step in "{key}"')))
        return name_steps(items)

    def step_name(self, node: yaml.Node | None, key: str) -> str | None:
        if node is None:
            return None
        name = self.text(node, key, '"name"')
        if "\n" in name or len(name) > MAX_STEP_NAME:
            raise self.error(f'"name" must be one line of at most {MAX_STEP_NAME} characters', key, node)
        return name

    def analysis(self, node: yaml.Node, key: str) -> tuple[AnalysisStep, ...]:
        specs: list[tuple[str | None, str, str, str | None]] = []
        for item in self.sequence(node, key, "analysis steps"):
            if not isinstance(item, yaml.MappingNode):
                specs.append((None, self.text(item, key, f'each step in "{key}"'), "sarif", None))
                continue
            fields = {name: value for name, _, value in
                      self.mapping_items(item, key, ("name", "run", "format", "output"), f'an "{key}" step')}
            if "run" not in fields:
                raise self.error(f'an "{key}" step needs "run: <command>"', key, item)
            fmt = "sarif"
            if "format" in fields:
                fmt = self.text(fields["format"], key, '"format"').lower()
                if fmt not in ANALYSIS_FORMATS:
                    raise self.error(f'"format" must be sarif, got {describe(fields["format"])}', key, fields["format"])
            output = None
            if "output" in fields:
                output = self.relative_path(fields["output"], key, '"output"', glob=False)
            specs.append((self.step_name(fields.get("name"), key), self.text(fields["run"], key, '"run"'),
                          fmt, output))
        named = name_steps([(name, run) for name, run, _, _ in specs])
        return tuple(AnalysisStep(name=s.name, run=s.run, format=fmt, output=output)
                     for s, (_, _, fmt, output) in zip(named, specs, strict=True))

    def timeout(self, node: yaml.Node, key: str) -> int:
        return self.whole_number(node, key, 1, MAX_TIMEOUT_MINUTES, unit=" of minutes")

    def whole_number(self, node: yaml.Node, key: str, low: int, high: int, *, unit: str = "") -> int:
        """Decimal digits only (also quoted): YAML 1.1 would read `1:30` as 90 and `0x1e` as 30."""
        if (not isinstance(node, yaml.ScalarNode) or node.tag not in (INT_TAG, STR_TAG)
                or not re.fullmatch(r"[0-9]+", node.value.strip()) or not low <= int(node.value) <= high):
            raise self.error(f'"{key}" must be a whole number{unit} between {low} and {high}, got {describe(node)}',
                             key, node)
        return int(node.value)

    def auto_merge(self, node: yaml.Node, key: str) -> tuple[bool | None, str | None]:
        if not isinstance(node, yaml.MappingNode):
            return self.boolean(node, key, f'"{key}"'), None
        fields = {name: value for name, _, value in self.mapping_items(node, key, ("enabled", "method"), f'"{key}"')}
        enabled = self.boolean(fields["enabled"], key, '"enabled"') if "enabled" in fields else None
        method = None
        if "method" in fields:
            method = self.text(fields["method"], key, '"method"')
            if method not in MERGE_METHODS:
                raise self.error(f'"method" must be merge, squash or rebase, got {describe(fields["method"])}',
                                 key, fields["method"])
        return enabled, method

    def merge_queue(self, node: yaml.Node, key: str) -> MergeQueueKeys:
        if isinstance(node, yaml.ScalarNode) and node.tag == BOOL_TAG:
            return MergeQueueKeys(enabled=self.boolean(node, key, f'"{key}"'))
        if not isinstance(node, yaml.MappingNode):
            raise self.error(f'"{key}" must be true, false or a mapping of {", ".join(QUEUE_KEYS)}, '
                             f"got {describe(node)}", key, node)
        values: dict[str, Any] = {}
        for name, _, value in self.mapping_items(node, key, QUEUE_KEYS, f'"{key}"'):
            where = f"{key}.{name}"
            if name == "enabled":
                values[name] = self.boolean(value, where, f'"{where}"')
            elif name == "method":
                method = self.text(value, where, f'"{where}"')
                if problem := queue_value_problem(name, method):
                    raise self.error(f"{problem}, got {describe(value)}{suggest(method, QUEUE_METHODS)}", where, value)
                values[name] = method
            else:
                values[name] = self.whole_number(value, where, *QUEUE_BOUNDS[name])
        return MergeQueueKeys(**values)

    def cache_key(self, node: yaml.Node, key: str) -> tuple[str, ...]:
        return tuple(self.relative_path(item, key, f'each glob in "{key}"', glob=True)
                     for item in self.sequence(node, key, "file globs"))

    def env(self, node: yaml.Node, key: str) -> Mapping[str, str]:
        if not isinstance(node, yaml.MappingNode):
            raise self.error(f'"{key}" must be a mapping of NAME: value, got {describe(node)}', key, node)
        if len(node.value) > MAX_ENV_VARIABLES:
            raise self.error(f'"{key}" has {len(node.value)} variables; the limit is {MAX_ENV_VARIABLES}', key, node)
        values: dict[str, str] = {}
        for name, key_node, value in self.mapping_items(node, key, None, f'"{key}"'):
            if not ENV_NAME.match(name):
                raise self.error(f'variable name "{name}" in "{key}" must be upper case letters, digits and _ '
                                 "(not starting with a digit)", key, key_node)
            if not isinstance(value, yaml.ScalarNode) or value.tag not in TEXT_TAGS:
                raise self.error(f'"{name}" in "{key}" must be a string, number or true/false, got {describe(value)}',
                                 key, value)
            if "\0" in value.value:
                raise self.error(f'"{name}" in "{key}" contains a NUL character', key, value)
            if value.tag == BOOL_TAG:
                values[name] = "true" if self.boolean(value, key, name) else "false"
            else:
                values[name] = value.value
        return MappingProxyType(values)

    # the ui block: every message names the key as a path ("ui.pages[2].steps[1].click")

    def ui(self, node: yaml.Node, key: str) -> UiConfig:
        fields = self.fields(node, key, UI_KEYS, '"start", "url", "pages", ...')
        for required in ("start", "url"):
            if required not in fields:
                raise self.error(f'"{key}" needs "{required}"', f"{key}.{required}", node)
        pages: tuple[UiPage, ...] = (UiPage("/"),)
        if "pages" in fields:
            items = self.sequence(fields["pages"], f"{key}.pages", "pages")
            if not items or len(items) > MAX_PAGES:
                raise self.error(f'"{key}.pages" must list 1 to {MAX_PAGES} pages', f"{key}.pages", fields["pages"])
            pages = tuple(self.ui_page(item, f"{key}.pages[{i}]") for i, item in enumerate(items, start=1))
        accessibility = "report"
        if "accessibility" in fields:
            accessibility = self.text(fields["accessibility"], f"{key}.accessibility", f'"{key}.accessibility"')
            if accessibility not in ACCESSIBILITY_MODES:
                where = f"{key}.accessibility"
                raise self.error(f'"{where}" must be report or enforce, got {describe(fields["accessibility"])}', where,
                                 fields["accessibility"])
        ready = DEFAULT_READY_TIMEOUT_SECONDS
        if "ready_timeout_seconds" in fields:
            ready = int(self.seconds(fields["ready_timeout_seconds"], f"{key}.ready_timeout_seconds",
                                     MAX_READY_TIMEOUT_SECONDS, whole=True))
        return UiConfig(start=self.text(fields["start"], f"{key}.start", f'"{key}.start"'),
                        url=self.ui_url(fields["url"], f"{key}.url"), pages=pages, ready_timeout_seconds=ready,
                        accessibility=accessibility)

    def ui_url(self, node: yaml.Node, key: str) -> str:
        value = self.text(node, key, f'"{key}"')
        problem = None
        try:
            parts = urlsplit(value)
            parts.port  # noqa: B018 - raises ValueError for a bad port
        except ValueError:
            parts = None
            problem = "is not a URL with a valid port"
        if parts is not None:
            if parts.scheme != "http" or parts.hostname is None:
                problem = "must start with http://"
            elif parts.hostname.lower() not in LOOPBACK_HOSTS and not parts.hostname.startswith("127."):
                problem = ("must name the sandbox's loopback (127.0.0.1, localhost or [::1]): the app has no "
                           "other network")
            elif parts.path not in ("", "/") or parts.query or parts.fragment or parts.username or parts.password:
                problem = 'must be only scheme, host and port (page paths go under "pages")'
        if problem is not None:
            raise self.error(f'"{key}" {problem}, got {describe(node)}', key, node)
        assert parts is not None
        return f"http://{parts.netloc.lower()}"

    def ui_page(self, node: yaml.Node, key: str) -> UiPage:
        if isinstance(node, yaml.ScalarNode) and node.tag == STR_TAG:
            return UiPage(self.ui_path(node, key))
        fields = self.fields(node, key, ("path", "expect_text", "steps"), '"path", "expect_text" and "steps"')
        if "path" not in fields:
            raise self.error(f'"{key}" needs "path: /..."', f"{key}.path", node)
        steps: tuple[UiStep, ...] = ()
        if "steps" in fields:
            items = self.sequence(fields["steps"], f"{key}.steps", "steps")
            if len(items) > MAX_STEPS:
                raise self.error(f'"{key}.steps" has {len(items)} steps; the limit is {MAX_STEPS}',
                                 f"{key}.steps", fields["steps"])
            steps = tuple(self.ui_step(item, f"{key}.steps[{i}]") for i, item in enumerate(items, start=1))
        expect = self.text(fields["expect_text"], f"{key}.expect_text", f'"{key}.expect_text"') \
            if "expect_text" in fields else None
        return UiPage(self.ui_path(fields["path"], f"{key}.path"), expect, steps)

    def ui_path(self, node: yaml.Node, key: str) -> str:
        value = self.text(node, key, f'"{key}"')
        if not value.startswith("/") or value.startswith("//") or any(c.isspace() for c in value) \
                or len(value) > 2000:
            raise self.error(f'"{key}" must be a path on the app starting with "/" (no spaces), got {describe(node)}',
                             key, node)
        return value

    def ui_step(self, node: yaml.Node, key: str) -> UiStep:
        if not isinstance(node, yaml.MappingNode) or len(node.value) != 1:
            raise self.error(f'"{key}" must be one of {", ".join(STEP_KINDS)} (one per step), got {describe(node)}',
                             key, node)
        [(kind, _, value)] = self.mapping_items(node, key, STEP_KINDS, f'"{key}"')
        where = f"{key}.{kind}"
        if kind == "expect_text":
            return UiStep("expect_text", text=self.text(value, where, f'"{where}"'))
        if kind == "fill":
            fields = self.fields(value, where, ("label", "value"), "label and value")
            return UiStep("fill", label=self.required_text(fields, "label", where, value),
                          value=self.required_text(fields, "value", where, value))
        if kind == "wait_for":
            if isinstance(value, yaml.ScalarNode):
                return UiStep("wait_for", text=self.text(value, where, f'"{where}"'))
            fields = self.fields(value, where, ("text", "timeout_seconds"), "text and timeout_seconds")
            timeout = self.seconds(fields["timeout_seconds"], f"{where}.timeout_seconds", MAX_WAIT_SECONDS,
                                   whole=False) if "timeout_seconds" in fields else DEFAULT_WAIT_SECONDS
            return UiStep("wait_for", text=self.required_text(fields, "text", where, value), timeout_seconds=timeout)
        if isinstance(value, yaml.ScalarNode):
            return UiStep("click", text=self.text(value, where, f'"{where}"'))
        fields = self.fields(value, where, ("role", "name", "text"), "role and name, or text")
        if "text" in fields:
            if "role" in fields or "name" in fields:
                raise self.error(f'"{where}" takes role and name, or text, not both', where, value)
            return UiStep("click", text=self.text(fields["text"], f"{where}.text", f'"{where}.text"'))
        role = self.required_text(fields, "role", where, value)
        if role not in ROLES:
            raise self.error(f'"{where}.role" must be an ARIA role (button, link, checkbox, ...), got '
                             f'{describe(fields["role"])}{suggest(role, sorted(ROLES))}', f"{where}.role",
                             fields["role"])
        return UiStep("click", role=role, name=self.required_text(fields, "name", where, value))


# key -> (_Parser method, what to write for "none" in the error for a key without a value)
_KEY_PARSERS: dict[str, tuple[str, str | None]] = {
    "setup": ("commands", "[]"), "validate": ("validate", "[]"), "analysis": ("analysis", "[]"),
    "timeout_minutes": ("timeout", "30"), "auto_merge": ("auto_merge", "false"), "cache_key": ("cache_key", "[]"),
    "env": ("env", "{}"), "setup_network": ("setup_network", "true"),
    "delete_branch_after_merge": ("flag", "false"), "merge_queue": ("merge_queue", "false"), "ui": ("ui", None)}


def parse_repo_config(text: str | bytes, *, path: str = CONFIG_PATH) -> RepoConfig:
    """Parse and check the file's text (or UTF-8 bytes, as the contents API gives them); raises
    ConfigFileError (and nothing else) for any problem."""
    if isinstance(text, bytes):
        raw = text
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = raw.count(b"\n", 0, exc.start) + 1
            raise ConfigFileError("is not UTF-8 text", None, line, path=path) from None
    if len(text.encode("utf-8", "surrogatepass")) > MAX_CONFIG_BYTES:
        raise ConfigFileError(f"is larger than {MAX_CONFIG_BYTES // 1024} KiB", None, None, path=path)
    root = compose(text, path)
    if root is None or (isinstance(root, yaml.ScalarNode) and root.tag == NULL_TAG):
        return RepoConfig()
    parser = _Parser(path)
    if not isinstance(root, yaml.MappingNode):
        raise parser.error(f"must be a mapping of keys ({', '.join(KEYS)}), got {describe(root)}", None, root)
    values: dict[str, Any] = {}
    try:
        for key, _, node in parser.mapping_items(root, None, KEYS, "the file"):
            method, empty = _KEY_PARSERS[key]
            parser.not_null(node, key, empty)
            if key == "auto_merge":
                values["auto_merge"], values["merge_method"] = parser.auto_merge(node, key)
            else:
                values[key] = getattr(parser, method)(node, key)
    except RecursionError:
        raise ConfigFileError("is nested too deeply", None, None, path=path) from None
    return RepoConfig(**values, present_keys=frozenset(k for k in KEYS if k in values))


# --- documentation -------------------------------------------------------------------------------

def docs_example() -> str:
    """A commented example of the file, for the README (it parses: see the tests)."""
    return '''\
# .github/codegenapp.yml - read from the pull request's base branch.
# Every key is optional; unknown keys are an error.

# Commands run before validation; they may download dependencies. They always run; what they
# left is snapshotted and laid out first (a warm start) while the cache_key files are unchanged,
# so write them to be re-runnable (`test -d .venv || python -m venv .venv`).
setup:
  - python -m pip install -e '.[dev]'
setup_network: true          # setup may use the network (default); validate never does

cache_key:                   # files whose content keys the setup snapshot
  - pyproject.toml
  - "requirements*.txt"

# Each step runs in the checkout's root; a step fails the check when it exits non-zero.
validate:
  - pytest -q                # named "pytest"
  - name: types
    run: python -m mypy src
  - npm test                 # named "npm test"

# Tools whose SARIF report becomes annotations on the pull request's changed lines.
analysis:
  - run: ruff check --output-format sarif .
    format: sarif            # read from the step's standard output...
  - name: semgrep
    run: semgrep scan --sarif --output semgrep.sarif
    output: semgrep.sarif    # ...or from a file the step writes

timeout_minutes: 20          # for the whole run, 1-360 (default 30)

auto_merge:                  # off unless set; "/auto-merge on|off" on a pull request overrides it
  enabled: true
  method: squash             # merge (default), squash or rebase

merge_queue:                 # off unless set; "merge_queue: true" turns it on with the defaults
  enabled: true              # /queue (and auto-merge) queue a PR instead of merging it at once
  method: merge              # merge (default), squash, rebase or fast-forward
  batch_size: 4              # PRs tested together, 1-32 (default 1); a failing batch is split
  max_parallel: 3            # candidates tested at once, 1-10 (default 3)
  flaky_retries: 1           # re-runs of a failing step before its PR is ejected, 0-3 (default 1)

env:                         # non-secret variables for setup and validate
  PYTHONDONTWRITEBYTECODE: 1
  NODE_ENV: test
'''
