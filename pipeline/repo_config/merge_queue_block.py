"""The `merge_queue:` block, as typed values: what one source sets (`MergeQueueKeys`: the file's, parsed
in parse.py, or the project's settings) and what the queue uses once effective.py has merged them per
sub-key (`MergeQueueSettings`). Pure.

```yaml
merge_queue:
  enabled: true
  method: merge          # merge | squash | rebase | fast-forward
  batch_size: 4          # PRs tested together as one candidate, 1-32
  max_parallel: 3        # candidates tested at once, 1-10
  flaky_retries: 1       # automatic re-runs of a failing step before its PR is ejected, 0-3
```

`merge_queue: true` (or `false`) is short for `{enabled: true}`.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

QUEUE_METHODS = ("merge", "squash", "rebase", "fast-forward")
# sub-key -> (lowest, highest) for the whole-number sub-keys
QUEUE_BOUNDS = {"batch_size": (1, 32), "max_parallel": (1, 10), "flaky_retries": (0, 3)}
QUEUE_KEYS = ("enabled", "method", *QUEUE_BOUNDS)


@dataclass(frozen=True)
class MergeQueueSettings:
    """What the queue uses (the defaults are the documented ones)."""

    enabled: bool = False
    method: str = "merge"
    batch_size: int = 1
    max_parallel: int = 3
    flaky_retries: int = 1


@dataclass(frozen=True)
class MergeQueueKeys:
    """The sub-keys one source sets; None: not set (the next source, or the default, applies).

    Raises ValueError for a value out of its bounds (the file's values are checked with their line first).
    """

    enabled: bool | None = None
    method: str | None = None
    batch_size: int | None = None
    max_parallel: int | None = None
    flaky_retries: int | None = None

    def __post_init__(self) -> None:
        for item in fields(self):
            value = getattr(self, item.name)
            if value is not None and (problem := queue_value_problem(item.name, value)):
                raise ValueError(problem)


def queue_value_problem(name: str, value: object) -> str | None:
    """Why `value` cannot be `merge_queue.<name>`, as a sentence without the value; None when it can."""
    where = f'"merge_queue.{name}"'
    if name == "enabled":
        return None if isinstance(value, bool) else f"{where} must be true or false"
    if name == "method":
        return None if value in QUEUE_METHODS else f"{where} must be merge, squash, rebase or fast-forward"
    low, high = QUEUE_BOUNDS[name]
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        return f"{where} must be a whole number between {low} and {high}"
    return None
