import pytest

from bot.github.types import is_fork
from bot.github.repos import role_of
from pipeline.validation.gate import fork_gate, head_moved_on, wants_validation


def pr(**changes):
    base = {"state": "open", "draft": False, "head": {"repo": {"id": 1, "full_name": "o/r"}},
            "base": {"repo": {"id": 1, "full_name": "o/r"}}}
    base.update(changes)
    return base


@pytest.mark.parametrize("action, pull, expected", [
    ("opened", pr(), True),
    ("synchronize", pr(), True),
    ("reopened", pr(), True),
    ("ready_for_review", pr(), True),
    ("opened", pr(draft=True), False),
    ("synchronize", pr(state="closed"), False),
    ("labeled", pr(), False),
    ("closed", pr(), False),
])
def test_which_events_validate(action, pull, expected) -> None:
    assert wants_validation(action, pull) is expected


def test_forks() -> None:
    assert not is_fork(pr())
    assert is_fork(pr(head={"repo": {"id": 2, "full_name": "someone/r"}}))
    assert is_fork(pr(head={"repo": None}))  # the fork was deleted


def test_role_prefers_role_name() -> None:
    assert role_of({"permission": "write", "role_name": "maintain"}) == "maintain"
    assert role_of({"permission": "read"}) == "read"
    assert role_of({}) == "none"


@pytest.mark.parametrize("fork, role, approved, run, secrets", [
    (False, None, False, True, True),
    (False, "read", False, True, True),
    (True, "write", False, True, False),
    (True, "maintain", False, True, False),
    (True, "admin", False, True, False),
    (True, "read", False, False, False),
    (True, "triage", False, False, False),
    (True, None, False, False, False),
    (True, "read", True, True, False),
])
def test_fork_gate(fork, role, approved, run, secrets) -> None:
    gate = fork_gate(fork=fork, author_role=role, head_approved=approved)
    assert (gate.run, gate.with_secrets) == (run, secrets)


def test_a_head_the_pr_has_moved_on_from_is_not_validated() -> None:
    assert not head_moved_on("a" * 40, None, False)          # nothing recorded: nothing says so
    assert not head_moved_on("a" * 40, "a" * 40, True)       # still the open PR's head
    assert head_moved_on("a" * 40, "b" * 40, True)           # pushed to since
    assert head_moved_on("a" * 40, "a" * 40, False)          # closed since
