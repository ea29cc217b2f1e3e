"""pipeline.repo_config: parsing `.github/codegenapp.yml` and merging it with the dashboard's settings."""

from __future__ import annotations

import random

import pytest
import yaml

from pipeline.repo_config.effective import EffectiveConfig, effective_config
from pipeline.repo_config.merge_queue_block import MergeQueueKeys, MergeQueueSettings
from pipeline.repo_config.parse import ConfigFileError, ProjectSettings, RepoConfig, docs_example, parse_repo_config
from pipeline.repo_config.steps import DEFAULT_ANALYSIS, AnalysisStep, Step, default_step_name, name_steps
from pipeline.repo_config.ui_block import UiConfig, UiPage, UiStep


def error(text: str) -> ConfigFileError:
    with pytest.raises(ConfigFileError) as caught:
        parse_repo_config(text)
    return caught.value


# --- parsing: the happy paths ----------------------------------------------------------------------

def test_empty_file_and_comment_only_file_give_all_defaults() -> None:
    for text in ("", "\n\n", "# nothing here\n", "---\n", "~\n", "null"):
        config = parse_repo_config(text)
        assert config == RepoConfig()
        assert config.present_keys == frozenset()


def test_every_key_is_parsed() -> None:
    config = parse_repo_config("""\
setup:
  - pip install -e .
  - npm ci
validate:
  - pytest -q
  - name: lint
    run: ruff check .
analysis:
  - run: ruff check --output-format sarif .
    format: sarif
  - name: semgrep
    run: semgrep --sarif -o out/semgrep.sarif
    output: ./out/semgrep.sarif
timeout_minutes: 45
auto_merge: {enabled: true, method: rebase}
cache_key: [package-lock.json, "**/requirements*.txt"]
env:
  NODE_ENV: test
  WORKERS: 4
  STRICT: false
setup_network: false
ui:
  start: npm start
  url: http://localhost:3000
""")
    assert config.setup == ("pip install -e .", "npm ci")
    assert config.validate == (Step("pytest", "pytest -q"), Step("lint", "ruff check ."))
    assert config.analysis == (
        AnalysisStep("ruff", "ruff check --output-format sarif .", "sarif", None),
        AnalysisStep("semgrep", "semgrep --sarif -o out/semgrep.sarif", "sarif", "out/semgrep.sarif"),
    )
    assert config.timeout_minutes == 45
    assert (config.auto_merge, config.merge_method) == (True, "rebase")
    assert config.cache_key == ("package-lock.json", "**/requirements*.txt")
    assert dict(config.env) == {"NODE_ENV": "test", "WORKERS": "4", "STRICT": "false"}
    assert config.setup_network is False
    assert config.ui == UiConfig(start="npm start", url="http://localhost:3000")
    assert config.present_keys == {"setup", "validate", "analysis", "timeout_minutes", "auto_merge",
                                   "cache_key", "env", "setup_network", "ui"}


def test_keys_not_written_stay_none_and_empty_lists_are_kept() -> None:
    config = parse_repo_config("setup: []\nenv: {}\n")
    assert config.setup == ()
    assert dict(config.env) == {}
    assert config.validate is None and config.timeout_minutes is None and config.auto_merge is None
    assert config.present_keys == {"setup", "env"}


def test_commands_are_kept_as_written() -> None:
    config = parse_repo_config("""\
validate:
  - true
  - 123
  - "echo 'a: b' # not a comment"
  - |
    set -e
    make test
setup: pip install .
""")
    assert [s.run for s in config.validate] == ["true", "123", "echo 'a: b' # not a comment",
                                                "set -e\nmake test"]
    assert config.setup == ("pip install .",)  # a single string is a one-item list


def test_env_values_keep_numbers_as_written_and_normalise_booleans() -> None:
    config = parse_repo_config("env:\n  PY: 3.10\n  OCT: 010\n  YES_: yes\n  OFF: Off\n  Q: 'x y'\n  E: ''\n")
    assert dict(config.env) == {"PY": "3.10", "OCT": "010", "YES_": "true", "OFF": "false", "Q": "x y", "E": ""}


def test_auto_merge_forms() -> None:
    assert parse_repo_config("auto_merge: true").auto_merge is True
    assert parse_repo_config("auto_merge: off").auto_merge is False
    method_only = parse_repo_config("auto_merge: {method: squash}")
    assert (method_only.auto_merge, method_only.merge_method) == (None, "squash")
    assert parse_repo_config("auto_merge: {enabled: false}").merge_method is None


def test_timeout_accepts_decimal_digits_only() -> None:
    assert parse_repo_config("timeout_minutes: 360").timeout_minutes == 360
    assert parse_repo_config("timeout_minutes: '5'").timeout_minutes == 5
    for bad in ("0", "361", "ten", "10.5", "1:30", "0x1e", "true", "-5", "[10]", "1e2"):
        e = error(f"timeout_minutes: {bad}")
        assert e.key == "timeout_minutes" and e.line == 1, bad


def test_analysis_format_defaults_to_sarif_and_a_string_is_a_step() -> None:
    config = parse_repo_config("analysis:\n  - ruff check --output-format sarif .\n  - run: x\n")
    assert config.analysis == (AnalysisStep("ruff", "ruff check --output-format sarif ."),
                               AnalysisStep("x", "x"))
    assert AnalysisStep("ruff", "ruff check --output-format sarif .", "sarif") == DEFAULT_ANALYSIS


def test_bytes_and_byte_order_marks_are_accepted() -> None:
    assert parse_repo_config("\ufeffsetup: [a]").setup == ("a",)
    assert parse_repo_config(b"\xef\xbb\xbfsetup: [a]\n").setup == ("a",)
    e = error(b"setup: []\nvalidate: [\xff]\n")  # type: ignore[arg-type]
    assert str(e) == ".github/codegenapp.yml line 2: is not UTF-8 text"


UI_EXAMPLE = """\
ui:
  start: npm run serve
  url: http://127.0.0.1:8080
  ready_timeout_seconds: 30
  accessibility: enforce
  pages:
    - /about
    - path: /
      expect_text: Welcome
    - path: /login?next=%2F
      steps:
        - fill: {label: Email, value: a@example.com}
        - click: {role: button, name: Sign in}
        - click: Forgot password?
        - click: {text: Help}
        - expect_text: Signed in
        - wait_for: {text: Dashboard, timeout_seconds: 2.5}
        - wait_for: Ready
"""


def test_ui_block_is_typed() -> None:
    ui = parse_repo_config(UI_EXAMPLE).ui
    assert (ui.start, ui.url, ui.ready_timeout_seconds, ui.accessibility) == \
        ("npm run serve", "http://127.0.0.1:8080", 30, "enforce")
    assert [p.path for p in ui.pages] == ["/about", "/", "/login?next=%2F"]
    assert ui.pages[1].expect_text == "Welcome" and ui.pages[0].steps == ()
    assert ui.pages[2].steps == (
        UiStep("fill", label="Email", value="a@example.com"), UiStep("click", role="button", name="Sign in"),
        UiStep("click", text="Forgot password?"), UiStep("click", text="Help"), UiStep("expect_text", text="Signed in"),
        UiStep("wait_for", text="Dashboard", timeout_seconds=2.5), UiStep("wait_for", text="Ready", timeout_seconds=10))
    assert [s.describe() for s in ui.pages[2].steps[:3]] == \
        ['fill "Email"', 'click button "Sign in"', 'click "Forgot password?"']
    assert ui.page_url(ui.pages[2]) == "http://127.0.0.1:8080/login?next=%2F"


def test_ui_defaults() -> None:
    ui = parse_repo_config("ui: {start: python3 -m http.server 8000, url: 'http://localhost:8000/'}").ui
    assert ui == UiConfig(start="python3 -m http.server 8000", url="http://localhost:8000", pages=(UiPage("/"),),
                          ready_timeout_seconds=60, accessibility="report")


@pytest.mark.parametrize(("block", "key", "fragment"), [
    ("{url: 'http://localhost:1'}", "ui.start", '"ui" needs "start"'),
    ("{start: x}", "ui.url", '"ui" needs "url"'),
    ("{start: x, url: 'https://localhost'}", "ui.url", "must start with http://"),
    ("{start: x, url: 'http://example.com'}", "ui.url", "sandbox's loopback"),
    ("{start: x, url: 'http://localhost:8080/app'}", "ui.url", "only scheme, host and port"),
    ("{start: x, url: 'http://localhost:123456'}", "ui.url", "valid port"),
    ("{start: x, url: 'http://localhost', port: 1}", "ui", 'unknown key "port"'),
    ("{start: x, url: 'http://localhost', ready_timeout_seconds: 0}", "ui.ready_timeout_seconds", "between 1 and 600"),
    ("{start: x, url: 'http://localhost', ready_timeout_seconds: 1.5}", "ui.ready_timeout_seconds", "whole number"),
    ("{start: x, url: 'http://localhost', accessibility: strict}", "ui.accessibility", "report or enforce"),
    ("{start: x, url: 'http://localhost', pages: []}", "ui.pages", "1 to 50 pages"),
    ("{start: x, url: 'http://localhost', pages: [about]}", "ui.pages[1]", 'starting with "/"'),
    ("{start: x, url: 'http://localhost', pages: ['//evil.example/']}", "ui.pages[1]", 'starting with "/"'),
    ("{start: x, url: 'http://localhost', pages: [{expect_text: a}]}", "ui.pages[1].path", 'needs "path'),
    ("{start: x, url: 'http://localhost', pages: [{path: /, steps: [{fil: {label: a, value: b}}]}]}",
     "ui.pages[1].steps[1]", 'did you mean "fill"'),
    ("{start: x, url: 'http://localhost', pages: [{path: /, steps: [{fill: {label: a}}]}]}",
     "ui.pages[1].steps[1].fill.value", '"ui.pages[1].steps[1].fill" needs "value"'),
    ("{start: x, url: 'http://localhost', pages: [{path: /, steps: [{click: {role: buton, name: a}}]}]}",
     "ui.pages[1].steps[1].click.role", 'did you mean "button"'),
    ("{start: x, url: 'http://localhost', pages: [{path: /, steps: [{click: {role: button, text: a}}]}]}",
     "ui.pages[1].steps[1].click", "not both"),
    ("{start: x, url: 'http://localhost', pages: [{path: /, steps: [{expect_text: a, click: b}]}]}",
     "ui.pages[1].steps[1]", "one per step"),
    ("{start: x, url: 'http://localhost', pages: [{path: /, steps: [{wait_for: {text: a, timeout_seconds: -1}}]}]}",
     "ui.pages[1].steps[1].wait_for.timeout_seconds", "more than 0, at most 300"),
])
def test_invalid_ui_blocks_name_the_key(block: str, key: str, fragment: str) -> None:
    e = error(f"validate: ['true']\nui: {block}\n")
    assert e.key == key and e.line == 2, str(e)
    assert fragment in str(e) and f'"{key.split(".")[0]}' in str(e)


def test_ui_without_a_value_is_an_error() -> None:
    assert "give it its keys" in str(error("ui:\n"))


# --- parsing: errors name the line ----------------------------------------------------------------

# --- the merge queue block ------------------------------------------------------------------------------

def test_merge_queue_block_is_typed() -> None:
    config = parse_repo_config("merge_queue:\n  enabled: true\n  method: fast-forward\n  batch_size: 4\n"
                               "  max_parallel: 2\n  flaky_retries: 0\n")
    assert config.merge_queue == MergeQueueKeys(enabled=True, method="fast-forward", batch_size=4, max_parallel=2,
                                                flaky_retries=0)
    assert config.present_keys == {"merge_queue"}
    assert parse_repo_config("").merge_queue is None


def test_merge_queue_shorthand_and_partial_blocks() -> None:
    assert parse_repo_config("merge_queue: true").merge_queue == MergeQueueKeys(enabled=True)
    assert parse_repo_config("merge_queue: off").merge_queue == MergeQueueKeys(enabled=False)
    assert parse_repo_config("merge_queue: {batch_size: '8'}").merge_queue == MergeQueueKeys(batch_size=8)
    assert parse_repo_config("merge_queue: {}").merge_queue == MergeQueueKeys()
    for method in ("merge", "squash", "rebase", "fast-forward"):
        assert parse_repo_config(f"merge_queue: {{method: {method}}}").merge_queue.method == method


@pytest.mark.parametrize(("name", "low", "high"), [("batch_size", 1, 32), ("max_parallel", 1, 10),
                                                   ("flaky_retries", 0, 3)])
def test_merge_queue_numbers_have_bounds(name: str, low: int, high: int) -> None:
    for good in (low, high):
        assert getattr(parse_repo_config(f"merge_queue:\n  {name}: {good}\n").merge_queue, name) == good
    for bad in (low - 1, high + 1, "-1", "2.5", "0x2", "1:30", "true", "two", "[2]", "~"):
        e = error(f"# queue\nmerge_queue:\n  enabled: true\n  {name}: {bad}\n")
        assert (e.key, e.line) == (f"merge_queue.{name}", 4), bad
        assert f'"merge_queue.{name}" must be a whole number between {low} and {high}, got ' in str(e), bad


@pytest.mark.parametrize(("text", "key", "line", "fragment"), [
    ("merge_queue:\n  batchsize: 4\n", "merge_queue", 2,
     'unknown key "batchsize" in "merge_queue"; did you mean "batch_size"? (valid keys: "enabled", "method", '
     '"batch_size", "max_parallel", "flaky_retries")'),
    ("merge_queue: {method: fast_forward}", "merge_queue.method", 1,
     '"merge_queue.method" must be merge, squash, rebase or fast-forward, got "fast_forward"; '
     'did you mean "fast-forward"?'),
    ("merge_queue: {method: octopus}", "merge_queue.method", 1, 'fast-forward, got "octopus"'),
    ("merge_queue: {method: [merge]}", "merge_queue.method", 1, '"merge_queue.method" must be a string, got a list'),
    ("merge_queue:\n  enabled: 'yes'\n", "merge_queue.enabled", 2, '"merge_queue.enabled" must be true or false'),
    ("merge_queue: {enabled: 1}", "merge_queue.enabled", 1, '"merge_queue.enabled" must be true or false, got "1"'),
    ("merge_queue: 4", "merge_queue", 1, '"merge_queue" must be true, false or a mapping of enabled, method, '
     'batch_size, max_parallel, flaky_retries, got "4"'),
    ("merge_queue: [enabled]", "merge_queue", 1, "got a list"),
    ("merge_queue:\n", "merge_queue", 1, 'write "merge_queue: false" for none'),
    ("merge_queue:\n  batch_size: 2\n  batch_size: 3\n", "merge_queue", 3, '"batch_size" is set twice'),
    ("merge_qeue: true", "merge_qeue", 1, 'did you mean "merge_queue"?'),
])
def test_merge_queue_errors_name_the_key_path_and_line(text: str, key: str, line: int, fragment: str) -> None:
    e = error(text)
    assert (e.key, e.line) == (key, line), str(e)
    assert fragment in str(e)


def test_merge_queue_keys_check_values_given_in_code() -> None:
    """The project's settings build MergeQueueKeys without a file: the same bounds apply."""
    for bad in ({"batch_size": 0}, {"batch_size": 33}, {"max_parallel": 11}, {"flaky_retries": 4},
                {"flaky_retries": True}, {"method": "octopus"}, {"enabled": "yes"}, {"batch_size": 2.0}):
        with pytest.raises(ValueError, match="merge_queue"):
            MergeQueueKeys(**bad)
    with pytest.raises(ValueError, match="between 1 and 32"):
        ProjectSettings(merge_queue=MergeQueueKeys(batch_size=64))


def test_error_message_format_matches_the_documentation() -> None:
    e = error("# codegenapp\nsetup: []\nvalidate: [pytest]\ntimeout_minutes: ten\n")
    assert str(e) == ('.github/codegenapp.yml line 4: "timeout_minutes" must be a whole number of minutes '
                      'between 1 and 360, got "ten"')
    assert (e.key, e.line, e.path) == ("timeout_minutes", 4, ".github/codegenapp.yml")


def test_custom_path_appears_in_the_message() -> None:
    with pytest.raises(ConfigFileError) as caught:
        parse_repo_config("nope: 1", path="ci/other.yml")
    assert str(caught.value).startswith('ci/other.yml line 1: unknown key "nope"')


def test_unknown_keys_are_errors_with_a_suggestion() -> None:
    e = error("validate: [pytest]\n\ntimeout: 10\n")
    assert e.line == 3 and e.key == "timeout"
    assert 'unknown key "timeout"; did you mean "timeout_minutes"?' in str(e)
    assert 'did you mean "validate"' in str(error("validat: [x]"))
    e = error("validate:\n  - run: pytest\n    comand: x\n")
    assert e.line == 3 and 'unknown key "comand" in a "validate" step' in str(e)
    assert "unknown key" in str(error("auto_merge: {enabled: true, strategy: squash}"))


def test_invalid_yaml_reports_the_parsers_line() -> None:
    e = error("setup:\n  - a\nvalidate: [b\ntimeout_minutes: 3\n")
    assert "is not valid YAML" in str(e)
    assert e.line is not None and e.line >= 3
    e = error("setup:\n  - a\n\tvalidate: x\n")
    assert e.line == 3 and "is not valid YAML" in str(e)
    e = error("a: 1\n---\nb: 2\n")  # two documents
    assert "is not valid YAML" in str(e) and e.line == 2


def test_non_mapping_document_is_an_error() -> None:
    for text, got in (("- pytest\n", "a list"), ("pytest -q", '"pytest -q"'), ("42", '"42"')):
        e = error(text)
        assert e.line == 1 and e.key is None
        assert str(e).startswith(".github/codegenapp.yml line 1: must be a mapping of keys") and got in str(e)


def test_keys_without_values_are_errors_that_say_what_to_write() -> None:
    e = error("setup: []\nvalidate:\n")
    assert e.line == 2 and e.key == "validate"
    assert 'write "validate: []" for none, or remove the key' in str(e)
    assert 'write "env: {}"' in str(error("env:"))
    assert 'write "auto_merge: false"' in str(error("auto_merge: ~"))


def test_duplicate_keys_are_errors() -> None:
    e = error("setup: [a]\nvalidate: [b]\nsetup: [c]\n")
    assert e.line == 3 and '"setup" is set twice (first on line 1)' in str(e)
    e = error("env:\n  A: 1\n  A: 2\n")
    assert e.line == 3 and "set twice" in str(e)


@pytest.mark.parametrize(("text", "line", "fragment"), [
    ("validate: {run: pytest}", 1, '"validate" must be a list of steps, got a mapping'),
    ("validate: true", 1, '"validate" must be a list of steps, got "true"'),
    ("validate:\n  - pytest\n  - [nested]\n", 3, "must be a string, got a list"),
    ("validate:\n  -\n", 2, "must be a string, got nothing"),
    ("validate:\n  - ''\n", 2, "is empty"),
    ("validate:\n  - name: x\n", 2, 'needs "run: <command>"'),
    ('validate:\n  - "a\\0b"\n', 2, "NUL"),
    ("validate:\n  - name: \"a\\nb\"\n    run: x\n", 2, "one line"),
    ("setup: [{run: x}]", 1, "must be a string, got a mapping"),
    ("analysis: [{run: x, format: json}]", 1, '"format" must be sarif, got "json"'),
    ("analysis: [{run: x, output: /tmp/x}]", 1, "relative to the repository root"),
    ("analysis: [{run: x, output: a/../../x}]", 1, "relative to the repository root"),
    ("analysis: [{run: x, output: ./}]", 1, "relative to the repository root"),
    ("analysis: [{format: sarif}]", 1, 'needs "run: <command>"'),
    ("auto_merge: yes please", 1, '"auto_merge" must be true or false'),
    ("auto_merge: {method: fast-forward}", 1, '"method" must be merge, squash or rebase'),
    ("auto_merge: {enabled: 'true'}", 1, '"enabled" must be true or false'),
    ("cache_key: [../secrets]", 1, "relative to the repository root"),
    ("cache_key: {a: b}", 1, "must be a list of file globs"),
    ("env: [A]", 1, "must be a mapping of NAME: value"),
    ("env:\n  lower_case: x\n", 2, 'variable name "lower_case"'),
    ("env:\n  1ABC: x\n", 2, 'variable name "1ABC"'),
    ("env:\n  A: {b: c}\n", 2, "must be a string, number or true/false"),
    ("env:\n  A: ~\n", 2, "must be a string, number or true/false, got nothing"),
    ("setup_network: 1", 1, '"setup_network" must be true or false'),
    ("ui: [a]", 1, '"ui" must be a mapping'),
    ("ui:\n  start: x\n  url: http://localhost\n  pages:\n    - path: /\n      steps:\n        - expect_text: [a]\n",
     7, '"ui.pages[1].steps[1].expect_text" must be a string'),
    ("<<: {setup: [a]}", 1, "merge keys"),
    ("? [a, b]\n: 1\n", 1, "keys must be plain names"),
    ("a\x01: 1", 1, "U+0001"),
])
def test_invalid_values(text: str, line: int, fragment: str) -> None:
    e = error(text)
    assert e.line == line, str(e)
    assert fragment in str(e)


def test_limits_guard_against_huge_or_recursive_documents() -> None:
    e = error("validate:\n" + "".join(f"  - step{i}\n" for i in range(101)))
    assert "the limit is 100" in str(e)
    assert "larger than 256 KiB" in str(error("# " + "x" * 300_000))
    e = error("ui: {start: x, url: 'http://localhost', pages: &a [*a]}")
    assert "nested" in str(e) or "must be" in str(e)
    many = "".join(f"    - /p{i}\n" for i in range(51))
    assert "1 to 50 pages" in str(error(f"ui:\n  start: x\n  url: http://localhost\n  pages:\n{many}"))
    deep = error("setup: []\nui: " + "[" * 5000 + "]" * 5000)
    assert "nested more than 64 levels deep" in str(deep) and deep.line == 2
    deep = error("ui:\n" + "".join("  " * i + f"k{i}:\n" for i in range(1, 200)))
    assert "nested more than 64 levels deep" in str(deep)


def test_random_garbage_only_ever_raises_config_file_error() -> None:
    rng = random.Random(1234)
    alphabet = "abc:-[]{}&*!|>'\"#%@`\n\t ,?~0123456789\\\x00\x07\u00e9\u2028\ud800"
    fragments = ["setup:", "validate:", "- ", "  ", "env:", "ui:", "timeout_minutes:", "&a ", "*a", "!!str ",
                 "!!python/object:os.system ", "{", "}", "[", "]", "\n", "name:", "run:", "auto_merge:", "<<: "]
    for _ in range(1500):
        if rng.random() < 0.5:
            text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 60)))
        else:
            text = "".join(rng.choice(fragments + list(alphabet)) for _ in range(rng.randint(0, 40)))
        try:
            parse_repo_config(text)
        except ConfigFileError as exc:
            assert str(exc).startswith(".github/codegenapp.yml")
            assert exc.line is None or exc.line >= 1


def test_python_tags_are_never_constructed() -> None:
    e = error("ui:\n  start: !!python/object/apply:os.system ['true']\n  url: http://localhost\n")
    assert '"ui.start" must be a string' in str(e)  # plain data: the tag is not constructed, nothing is called
    assert "must be a string" in str(error("validate: [!!python/name:os.system x]"))


# --- step names ------------------------------------------------------------------------------------

@pytest.mark.parametrize(("command", "name"), [
    ("pytest -q", "pytest"),
    ("npm test", "npm test"),
    ("npm run lint -- --fix", "npm run lint"),
    ("yarn lint", "yarn lint"),
    ("pnpm exec vitest", "pnpm exec vitest"),
    ("make -j4 check", "make check"),
    ("make", "make"),
    ("python -m pytest tests", "python -m pytest"),
    ("python3.11 -m mypy src", "python3.11 -m mypy"),
    ("python script.py", "python"),
    ("cargo test --all", "cargo test"),
    ("go vet ./...", "go vet"),
    ("uv run pytest", "uv run pytest"),
    ("./scripts/check.sh --fast", "scripts/check.sh"),
    ("CI=1 FOO=bar pytest", "pytest"),
    ("tox -e py311", "tox py311"),
    ("set -e\nmake test", "set"),
    ("echo 'unbalanced", "echo"),
    ("# only a comment", ""),
])
def test_default_step_names(command: str, name: str) -> None:
    assert default_step_name(command) == name


def test_step_names_are_made_unique_and_never_empty() -> None:
    steps = name_steps([(None, "pytest -q"), (None, "pytest -x"), ("pytest (2)", "echo"), (None, "pytest"),
                        (None, "# comment"), ("lint", "ruff"), ("lint", "flake8")])
    assert [s.name for s in steps] == ["pytest", "pytest (2)", "pytest (2) (2)", "pytest (3)", "step 5",
                                       "lint", "lint (2)"]


# --- project settings ------------------------------------------------------------------------------

def test_project_settings_normalise_and_check_their_values() -> None:
    settings = ProjectSettings(setup_commands=["pip install .", "  ", ""], validate_commands="pytest\n\nruff .\n",
                               env={"A": 1})
    assert settings.setup_commands == ("pip install .",)
    assert settings.validate_commands == ("pytest", "ruff .")
    assert dict(settings.env) == {"A": "1"}
    with pytest.raises(ValueError, match="between 1 and 360"):
        ProjectSettings(timeout_minutes=0)
    with pytest.raises(ValueError, match="between 1 and 360"):
        ProjectSettings(timeout_minutes=True)
    with pytest.raises(ValueError, match="must match"):
        ProjectSettings(env={"bad-name": "x"})


# --- effective configuration: precedence -----------------------------------------------------------

PROJECT = ProjectSettings(setup_commands=("pip install -e .",), validate_commands=("pytest -q", "pytest -x"),
                          auto_merge_enabled=True, env={"A": "project", "B": "project"}, timeout_minutes=15)


def test_defaults_when_nothing_is_set() -> None:
    config = effective_config(None, ProjectSettings())
    assert config == EffectiveConfig(sources=config.sources)
    assert (config.timeout_minutes, config.merge_method, config.auto_merge, config.setup_network) == (
        30, "merge", False, True)
    assert config.validate == () and config.ui is None and config.env == {}
    assert set(config.sources.values()) == {"default"}


def test_project_settings_apply_when_the_file_does_not_set_a_key() -> None:
    config = effective_config(parse_repo_config(""), PROJECT)
    assert config.setup == ("pip install -e .",)
    assert config.validate == (Step("pytest", "pytest -q"), Step("pytest (2)", "pytest -x"))
    assert config.timeout_minutes == 15
    assert config.auto_merge is True
    assert config.env == {"A": "project", "B": "project"}
    assert {k: config.sources[k] for k in ("setup", "validate", "timeout_minutes", "auto_merge", "env")} == {
        "setup": "project", "validate": "project", "timeout_minutes": "project", "auto_merge": "project",
        "env": "project"}
    assert config.sources["analysis"] == config.sources["merge_method"] == "default"


def test_the_file_wins_over_the_project_even_with_empty_values() -> None:
    repo = parse_repo_config("setup: []\nvalidate: [make test]\ntimeout_minutes: 90\nauto_merge: false\n"
                             "env: {B: repo, C: repo}\nsetup_network: false\n")
    config = effective_config(repo, PROJECT)
    assert config.setup == ()
    assert config.validate == (Step("make test", "make test"),)
    assert config.timeout_minutes == 90
    assert config.auto_merge is False
    assert config.setup_network is False
    assert config.env == {"A": "project", "B": "repo", "C": "repo"}
    assert config.sources["setup"] == config.sources["validate"] == config.sources["auto_merge"] == "repository"
    assert (config.sources["env"], config.sources["env.A"], config.sources["env.B"], config.sources["env.C"]) == (
        "repository", "project", "repository", "repository")


def test_pull_request_command_overrides_auto_merge_from_everywhere() -> None:
    repo = parse_repo_config("auto_merge: {enabled: false, method: squash}")
    on = effective_config(repo, PROJECT, pr_auto_merge=True)
    assert (on.auto_merge, on.merge_method, on.sources["auto_merge"]) == (True, "squash", "pull_request")
    off = effective_config(parse_repo_config("auto_merge: true"), PROJECT, pr_auto_merge=False)
    assert (off.auto_merge, off.sources["auto_merge"]) == (False, "pull_request")
    assert effective_config(None, ProjectSettings(), pr_auto_merge=None).auto_merge is False


def test_method_only_mapping_keeps_the_project_switch() -> None:
    config = effective_config(parse_repo_config("auto_merge: {method: rebase}"), PROJECT)
    assert (config.auto_merge, config.merge_method) == (True, "rebase")
    assert (config.sources["auto_merge"], config.sources["merge_method"]) == ("project", "repository")


def test_merge_queue_defaults_and_precedence_per_sub_key() -> None:
    assert effective_config(None, ProjectSettings()).merge_queue == MergeQueueSettings(
        enabled=False, method="merge", batch_size=1, max_parallel=3, flaky_retries=1)
    project = ProjectSettings(merge_queue=MergeQueueKeys(enabled=True, method="squash", batch_size=8))
    config = effective_config(parse_repo_config("merge_queue: {batch_size: 2, flaky_retries: 0}"), project)
    assert config.merge_queue == MergeQueueSettings(enabled=True, method="squash", batch_size=2, max_parallel=3,
                                                    flaky_retries=0)
    assert {k: v for k, v in config.sources.items() if k.startswith("merge_queue.")} == {
        "merge_queue.enabled": "project", "merge_queue.method": "project", "merge_queue.batch_size": "repository",
        "merge_queue.max_parallel": "default", "merge_queue.flaky_retries": "repository"}
    off = effective_config(parse_repo_config("merge_queue: false"), project)  # the file's false beats the project
    assert (off.merge_queue.enabled, off.sources["merge_queue.enabled"]) == (False, "repository")
    assert off.merge_queue.batch_size == 8
    # the queue's method is its own: auto_merge's method does not leak into it, nor the other way round
    mixed = effective_config(parse_repo_config("auto_merge: {method: rebase}\nmerge_queue: true\n"), ProjectSettings())
    assert (mixed.merge_method, mixed.merge_queue.method) == ("rebase", "merge")


def test_repository_only_keys_and_ui_copy() -> None:
    repo = parse_repo_config("analysis: [ruff check --output-format sarif .]\ncache_key: [uv.lock]\n"
                             "ui: {start: make serve, url: 'http://localhost:8000'}\n")
    config = effective_config(repo, PROJECT)
    assert config.analysis[0].run == "ruff check --output-format sarif ."
    assert config.cache_key == ("uv.lock",)
    assert config.ui == UiConfig(start="make serve", url="http://localhost:8000") and config.ui is repo.ui  # frozen
    assert config.sources["analysis"] == config.sources["cache_key"] == config.sources["ui"] == "repository"


# --- documentation ---------------------------------------------------------------------------------

def test_docs_example_parses_and_uses_every_documented_feature() -> None:
    text = docs_example()
    config = parse_repo_config(text)
    assert config.present_keys == {"setup", "setup_network", "cache_key", "validate", "analysis",
                                   "timeout_minutes", "auto_merge", "merge_queue", "env"}
    assert [s.name for s in config.validate] == ["pytest", "types", "npm test"]
    assert config.analysis[1].output == "semgrep.sarif"
    assert config.env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert "#" in text and yaml.safe_load(text)["timeout_minutes"] == 20
    effective = effective_config(config, ProjectSettings())
    assert (effective.auto_merge, effective.merge_method) == (True, "squash")
    assert effective.merge_queue == MergeQueueSettings(enabled=True, batch_size=4)


def test_module_docstrings_document_every_key_and_the_precedence() -> None:
    import pipeline.repo_config.effective as effective
    import pipeline.repo_config.parse as module
    for key in ("setup", "validate", "analysis", "timeout_minutes", "auto_merge", "cache_key", "env",
                "setup_network", "delete_branch_after_merge", "merge_queue", "ui"):
        assert f"`{key}`" in module.__doc__ or key in module.__doc__
    assert "Precedence" in effective.__doc__
