"""Slash command parsing and the check run's buttons: pure functions, no I/O."""

import pytest

from pipeline.commands.parse import COMMANDS, Command, help_text, parse_commands
from pipeline.validation.buttons import ACTIONS, check_run_actions


def names(body: str) -> list[tuple[str, tuple[str, ...]]]:
    return [(c.name, c.args) for c in parse_commands(body) if c.error is None]


@pytest.mark.parametrize("body, expected", [
    ("/validate", [("validate", ())]),
    ("/retest", [("validate", ())]),
    ("/cancel", [("cancel", ())]),
    ("/merge", [("merge", ())]),
    ("/merge squash", [("merge", ("squash",))]),
    ("/MERGE Rebase", [("merge", ("rebase",))]),
    ("/auto-merge on", [("auto-merge", ("on",))]),
    ("/auto-merge OFF", [("auto-merge", ("off",))]),
    ("/ok-to-test", [("ok-to-test", ())]),
    ("/queue", [("queue", ())]),
    ("/Dequeue", [("dequeue", ())]),
    ("/queue\n/dequeue", [("queue", ()), ("dequeue", ())]),
    ("/help", [("help", ())]),
    ("/help me please", [("help", ())]),
    ("  /validate  ", [("validate", ())]),          # up to three spaces: still a paragraph in Markdown
    ("/validate\r\n/merge\r\n", [("validate", ()), ("merge", ())]),
])
def test_each_command(body, expected) -> None:
    assert names(body) == expected


def test_agent_keeps_the_rest_of_the_line_as_its_goal() -> None:
    [command] = parse_commands("/agent  Fix the flaky `test_login` and add a test  ")
    assert command.name == "agent" and command.goal == "Fix the flaky `test_login` and add a test"
    assert command.args == ("Fix the flaky `test_login` and add a test",)


def test_several_commands_in_one_comment_in_order_once_each() -> None:
    body = "Looks good.\n/validate\nthen\n/merge squash\n/validate\n/retest\n"
    assert names(body) == [("validate", ()), ("merge", ("squash",))]
    assert [c.line for c in parse_commands(body)] == [2, 4]


@pytest.mark.parametrize("body", [
    "```\n/merge\n```",
    "````\n```\n/merge\n```\n````",            # a shorter fence does not close a longer one
    "~~~\n/merge\n~~~",
    "~~~~~python\n/merge\n~~~~~",
    "```\n/merge",                               # an unclosed fence runs to the end
    "- item\n  ```\n  /merge\n  ```",            # a fence inside a list item
    "> /merge",
    "   > /merge",
    "> please do\n/merge",                       # a lazy continuation line belongs to the quote
    ">> /merge",
    "    /merge",                                # an indented code block
    "\t/merge",
    "<!--\n/merge\n-->",
    "<!-- /merge -->",
    "run `/merge` when green",                  # not at the start of the line
    "/merge.",                                   # not a word
    "/mergeable",
    "/queued",
    "> /queue",
    "```\n/dequeue\n```",
    "/lgtm",                                     # unknown: maybe another bot's
    "/assign @me",
    "//merge",
    "/ merge",
])
def test_commands_that_are_not_commands(body) -> None:
    assert parse_commands(body) == []


def test_code_and_quotes_end_where_markdown_ends_them() -> None:
    body = "```\n/cancel\n```\n/validate\n> quoted\n\n/merge\n~~~\n/cancel\n~~~~\n/help"
    assert names(body) == [("validate", ()), ("merge", ()), ("help", ())]
    assert names("```py\n/cancel\n``` \n/validate") == [("validate", ())]       # closing fence may have spaces
    assert names("```js```\n/validate") == [("validate", ())]                     # inline code, not a fence
    assert names("<!-- a\nb -->\n/validate") == [("validate", ())]


@pytest.mark.parametrize("body, error", [
    ("/merge foo", "`/merge foo` is not a merge method. Usage: `/merge [merge|squash|rebase]`"),
    ("/merge squash now", "`/merge squash now` is not a merge method"),
    ("/auto-merge maybe", "`/auto-merge maybe` needs `on` or `off`. Usage: `/auto-merge on|off`"),
    ("/auto-merge", "`/auto-merge` needs `on` or `off`"),
    ("/auto-merge on off", "needs `on` or `off`"),
    ("/agent", "`/agent` needs a goal. Usage: `/agent <goal>`"),
    ("/validate now", "`/validate` takes no arguments. Usage: `/validate`"),
    ("/retest please", "`/validate` takes no arguments"),
    ("/ok-to-test abc", "`/ok-to-test` takes no arguments"),
    ("/queue now", "`/queue` takes no arguments. Usage: `/queue`"),
    ("/dequeue 12", "`/dequeue` takes no arguments. Usage: `/dequeue`"),
])
def test_bad_arguments_come_back_with_the_usage(body, error) -> None:
    [command] = parse_commands(body)
    assert command.error is not None and error in command.error


def test_a_bad_command_does_not_hide_the_others() -> None:
    commands = parse_commands("/merge foo\n/validate")
    assert [(c.name, c.error is None) for c in commands] == [("merge", False), ("validate", True)]


def test_commands_per_comment_are_bounded() -> None:
    body = "\n".join(f"/agent goal {n}" for n in range(50))
    assert len(parse_commands(body)) == 10


def test_help_lists_every_command() -> None:
    text = help_text()
    for usage, _ in COMMANDS.values():
        assert f"`{usage}`" in text
    assert "/retest" in text and "write access" in text
    assert "- `/queue`: add this PR to the merge queue" in text and "- `/dequeue`: take this PR out of the merge queue" in text


def test_command_usage() -> None:
    assert Command("merge", (), 1).usage == "/merge [merge|squash|rebase]"


# ---- buttons ---------------------------------------------------------------------------------------

def identifiers(actions) -> list[str]:
    return [a["identifier"] for a in actions]


@pytest.mark.parametrize("conclusion, merge_allowed, agent, expected", [
    ("success", True, False, ["rerun", "merge"]),
    ("success", False, False, ["rerun"]),
    ("success", True, True, ["rerun", "merge"]),
    ("failure", True, False, ["rerun"]),
    ("failure", False, True, ["rerun", "fix"]),
    ("timed_out", False, True, ["rerun", "fix"]),
    ("cancelled", False, True, ["rerun"]),
    ("action_required", True, True, ["rerun"]),
])
def test_buttons_of_a_completed_check_run(conclusion, merge_allowed, agent, expected) -> None:
    assert identifiers(check_run_actions(conclusion, merge_allowed=merge_allowed, agent_configured=agent)) == expected


def test_buttons_fit_githubs_limits() -> None:
    assert len(ACTIONS) <= 3
    for identifier, (label, description) in ACTIONS.items():
        assert len(identifier) <= 20 and len(label) <= 20 and len(description) <= 40
