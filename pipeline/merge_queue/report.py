"""What the merge queue says on a PR: its "Merge queue" check run (title, summary, buttons), the one line
of the sticky comment and the comments when it leaves. Pure.

A check run's title is plain text; summaries and comments are Markdown, so what comes from elsewhere (a
step's name, a branch, GitHub's answer) goes in a code span or block, or is escaped."""

from __future__ import annotations

import dataclasses
import html
import math
import re
from typing import Any

from pipeline.merge_queue.decide import Position, prs_named
from pipeline.merge_queue.model import MERGE_STEP
from pipeline.report.text import code_block, code_span

QUEUE_CHECK_NAME = "Merge queue"
ACTION_DEQUEUE = "dequeue"
DEQUEUE_BUTTON = {"label": "Dequeue", "description": "Take this PR out of the merge queue",
                  "identifier": ACTION_DEQUEUE}
EXTERNAL_ID_PREFIX = "merge-queue:"
TITLE_LIMIT = 255
TAIL_CHARS = 3000  # of a failing step's output, shown on an ejected PR
_STATES = {"waiting": "waiting to be tested", "building": "getting ready to be tested{with}",
           "built": "about to be tested{with}", "testing": "being tested{with}",
           "retrying": "being tested{with}; running a failed step again",
           "failed": "failed{with}; finding out which PR caused it", "landing": "merging"}


def queue_external_id(base_ref: str, pr: int) -> str:
    return f"{EXTERNAL_ID_PREFIX}{base_ref}:{pr}"


def pr_of_external_id(external_id: str | None) -> int | None:
    """The PR of a "Merge queue" check run's external id (GitHub names no PR on a fork's check run)."""
    if not external_id or not external_id.startswith(EXTERNAL_ID_PREFIX):
        return None
    number = external_id.rsplit(":", 1)[-1]
    return int(number) if number.isdigit() else None


def ejection_report(check_run: dict[str, Any]) -> str | None:
    """What the "Merge queue" check run of an ejected PR says (the failing step, the PRs merged ahead, the
    output's tail), for its "Fix with agent" button; None for any other check run."""
    if check_run.get("name") != QUEUE_CHECK_NAME or pr_of_external_id(check_run.get("external_id")) is None:
        return None
    summary = (check_run.get("output") or {}).get("summary")
    return summary if isinstance(summary, str) and summary.strip() else None


def ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _state(position: Position, now: float | None, *, markdown: bool) -> str:
    if position.could_not_test:
        said = _MARKDOWN_SPECIAL.sub(r"\\\1", position.could_not_test) if markdown else position.could_not_test
        if position.retry_at is not None and position.state in ("testing", "retrying"):
            return f"could not be tested: {said}; trying again {_in_minutes(position.retry_at, now)}"
        return f"{_state(dataclasses.replace(position, could_not_test=None), now, markdown=markdown)} " \
               f"(the last try could not be tested: {said})"
    if position.state == "passed":
        ahead = position.position - 1
        return "passed, lands next" if not ahead else "passed, lands after the " + \
            ("PR ahead of it" if ahead == 1 else f"{ahead} PRs ahead of it")
    if position.state == "landing" and position.land_deferred:
        return "passed, waiting for a worker that has the tested commit to merge it (tested again if none can)"
    with_ = f" with {prs_named(position.tested_with)}" if position.tested_with else ""
    return _STATES.get(position.state, position.state).replace("{with}", with_)


def _in_minutes(at: float, now: float | None) -> str:
    if now is None:
        return "soon"
    minutes = max(1, math.ceil((at - now) / 60))
    return f"in {minutes} min"


def position_text(position: Position, base_ref: str, now: float | None = None) -> str:
    """"2nd in line for `main`: being tested with #12, #13" (Markdown: #12 links to the PR; a position
    written "#2" would link to PR 2). `now` (POSIX seconds): to say when an untested candidate is tried again."""
    return f"{ordinal(position.position)} in line for {code_span(base_ref)}: {_state(position, now, markdown=True)}"


def not_enabled(base_ref: str) -> str:
    """Why `/queue` does nothing, and how to turn the queue on (the file wins over the project's settings)."""
    return (f"the merge queue is not enabled for {code_span(base_ref)}: turn it on in the project's settings, or "
            f"with `merge_queue: true` in `.github/codegenapp.yml` on {code_span(base_ref)} (when the file sets "
            "it, the file wins)")


def queued_output(position: Position, base_ref: str, now: float | None = None) -> dict[str, str]:
    title = f"{ordinal(position.position)} in line for {base_ref}: {_state(position, now, markdown=False)}"
    return {"title": title[:TITLE_LIMIT],
            "summary": f"{position_text(position, base_ref, now)}.\n\n"
                       "Comment `/dequeue` or press Dequeue to take it out."}


def _plain(reason: str) -> str:
    """A reason (Markdown with code spans) as a plain-text title."""
    return reason.replace("`", "")


def ejected_output(reason: str, step: str, output_tail: str) -> dict[str, str]:
    summary = f"Taken out of the merge queue: {reason}."
    if step != MERGE_STEP:
        summary += f"\n\nFailing step: {code_span(step)}"
    if output_tail.strip():
        summary += "\n\n" + code_block(output_tail.strip()[-TAIL_CHARS:])
    return {"title": f"Ejected: {_plain(reason).removeprefix('it ')}"[:TITLE_LIMIT], "summary": summary}


def ejected_comment(base_ref: str, reason: str, step: str, output_tail: str) -> str:
    """The comment on an ejected PR: why, and the failing step's output folded."""
    comment = f"Ejected from the merge queue of {code_span(base_ref)}: {reason}."
    if output_tail.strip():
        what = "What git said" if step == MERGE_STEP else \
            f"Output of <code>{html.escape(' '.join(step.split())[:100])}</code>"
        tail = code_block(output_tail.strip()[-TAIL_CHARS:])
        comment += f"\n\n<details>\n<summary>{what}</summary>\n\n{tail}\n</details>\n"
    return comment


def removed_output(reason: str) -> dict[str, str]:
    return {"title": f"Taken out: {_plain(reason)}"[:TITLE_LIMIT], "summary": removed_comment(reason)}


def removed_comment(reason: str) -> str:
    return f"Taken out of the merge queue: {reason}."


def merge_refused(status: int, message: str) -> str:
    """GitHub's refusal of a merge (`PUT pulls/{n}/merge`) in words, for "GitHub refused to merge it: …"."""
    said = " ".join(message.split())[:200]
    quoted = f" (GitHub said “{said}”)" if said else ""
    if status == 405:
        return f"branch protection or the repository's merge settings do not allow it{quoted}"
    if status == 409:
        return f"its branch changed after it was tested{quoted}"
    return f"GitHub answered {status}{quoted}"


def landed_output(base_ref: str, merged_sha: str | None, pr: int, tested: tuple[int, ...]) -> dict[str, str]:
    """`tested`: the PRs of the candidate that passed (ahead of `pr`, `pr` and its batch)."""
    what = f" as {merged_sha[:7]}" if merged_sha else ""
    others = tuple(p for p in tested if p != pr)
    together = f" together with {prs_named(others)}" if others else ""
    return {"title": f"Merged into {base_ref}{what}"[:TITLE_LIMIT],
            "summary": f"Merged into {code_span(base_ref)}{what}: the merge queue tested it{together}."}


_MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]<>&~|])")


def landed_untested_output(base_ref: str, merged_sha: str, why: str) -> dict[str, str]:
    """GitHub merged the PR, but what `base_ref` got is not what the queue tested (someone pushed to it
    between the queue's check and the merge, say)."""
    return {"title": f"Merged into {base_ref} as {merged_sha[:7]}, but not the tree tested",
            "summary": f"Merged into `{base_ref}` as {merged_sha[:7]}, but {why}: the merge queue did not test "
                       f"what `{base_ref}` now holds. The PRs queued behind it are tested again on it."}


def queue_comment_line(text: str) -> str:
    """The sticky comment's one line about the queue (without its markers); `text` is Markdown."""
    return f"**Merge queue:** {text}"


def finished_line(title: str) -> str:
    """The sticky comment's line once the PR left the queue: its check run's (plain-text) title."""
    return queue_comment_line(_MARKDOWN_SPECIAL.sub(r"\\\1", title))
