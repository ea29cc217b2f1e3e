"""What one resync does with a repository's open pull requests, as GitHub listed them: a pure function of
the listing and of what the store knows (the PRs already validated at their head, the PRs recorded as
open in the PR overview's table) and of how many validations the run may still start.

- A PR is validated when it is open, not a draft, and no validation of its head exists, in any state:
  exactly what `pull_request.synchronize` would have started had its delivery arrived (a draft waits for
  ready_for_review, as there). The most recently updated PRs go first: those are the ones people look at.
- Every listed PR the table does not hold as open, or holds from an older description, is recorded.
- A PR the table holds as open that the listing does not show was closed (its close event was missed),
  but only a complete listing says so: a listing cut short by an error proves nothing.
- The run's bound (RESYNC_MAX_STARTS) is shared fairly between installations (`installation_share`): one
  installation with a large backlog cannot take all of it; what one leaves unused goes to those after it.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from bot.github.types import ListedPull, PullRequest


def installation_share(remaining: int, installations_left: int) -> int:
    """How many validations the next installation may start: an equal share (rounded up) of what the run
    may still start among the installations not resynced yet, itself included."""
    if remaining <= 0 or installations_left <= 0:
        return 0
    return -(-remaining // installations_left)


def needs_validation(pull: PullRequest, validated: Collection[tuple[int, str]]) -> bool:
    """Open, not a draft, and no validation of this PR at this head."""
    return pull.is_open and not pull.draft and (pull.number, pull.head_sha) not in validated


@dataclass(frozen=True)
class RepositoryPlan:
    start: tuple[PullRequest, ...]  # to validate now, most recently updated first
    left_over: int  # PRs that need a validation beyond the run's budget: the next run's
    record: tuple[ListedPull, ...]  # to record in the PR overview's table
    close: dict[int, datetime]  # recorded open, not listed: number -> the updated_at recorded (to compare-and-set)

    @property
    def cut_short(self) -> bool:
        return self.left_over > 0


def _newest_first(listed: ListedPull) -> tuple[float, int]:
    updated = listed.updated_at.timestamp() if listed.updated_at is not None else float("-inf")
    return (-updated, -listed.pull.number)


def plan_repository(listed: Sequence[ListedPull], *, validated: Collection[tuple[int, str]],
                    tracked_open: Mapping[int, datetime], complete: bool, budget: int) -> RepositoryPlan:
    """`listed`: the open PRs GitHub listed (all of them when `complete`, else those read before the
    listing failed); `validated`: (number, head sha) of the validations stored for their heads;
    `tracked_open`: the table's open PRs (number -> recorded updated_at); `budget`: how many validations
    the run may still start."""
    ordered = sorted(listed, key=_newest_first)
    wanting = [item.pull for item in ordered if needs_validation(item.pull, validated)]
    budget = max(0, budget)
    record = tuple(item for item in ordered
                   if item.pull.number not in tracked_open
                   or item.updated_at is None or item.updated_at > tracked_open[item.pull.number])
    listed_numbers = {item.pull.number for item in listed}
    close = ({number: updated for number, updated in tracked_open.items() if number not in listed_numbers}
             if complete else {})
    return RepositoryPlan(start=tuple(wanting[:budget]), left_over=max(0, len(wanting) - budget),
                          record=record, close=close)
