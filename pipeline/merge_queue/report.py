"""What the merge queue says on a PR: its "Merge queue" check run (title, summary, buttons) and the one
line of the sticky comment. Pure."""

from __future__ import annotations

from pipeline.merge_queue.decide import Position, prs_named
from pipeline.report.text import code_block

QUEUE_CHECK_NAME = "Merge queue"
ACTION_DEQUEUE = "dequeue"
DEQUEUE_BUTTON = {"label": "Dequeue", "description": "Take this PR out of the merge queue",
                  "identifier": ACTION_DEQUEUE}
_STATES = {"waiting": "waiting for a free slot", "building": "building its candidate", "built": "built",
           "testing": "being tested", "failed": "failed; deciding", "retrying": "re-running a failing step",
           "passed": "passed; landing next", "landing": "landing"}


def position_text(position: Position, base_ref: str) -> str:
    """"#2 in the merge queue of main: being tested with #12, #13"."""
    with_ = f" with {prs_named(position.tested_with)}" if position.tested_with else ""
    state = _STATES.get(position.state, position.state)
    return f"#{position.position} in the merge queue of `{base_ref}`: {state}{with_}"


def queued_output(position: Position, base_ref: str) -> dict[str, str]:
    text = position_text(position, base_ref)
    return {"title": text.replace("`", ""), "summary": f"{text}.\n\nComment `/dequeue` or press Dequeue to take it out."}


def ejected_output(reason: str, step: str, output_tail: str) -> dict[str, str]:
    summary = f"Taken out of the merge queue: {reason}.\n\nFailing step: `{step}`"
    if output_tail.strip():
        summary += "\n\n" + code_block(output_tail.strip()[-3000:])
    return {"title": f"Ejected: `{step}` failed".replace("`", ""), "summary": summary}


def removed_output(reason: str) -> dict[str, str]:
    return {"title": "Left the merge queue", "summary": f"Taken out of the merge queue: {reason}."}


def landed_output(base_ref: str, merged_sha: str | None, prs: tuple[int, ...]) -> dict[str, str]:
    what = f" as {merged_sha[:7]}" if merged_sha else ""
    together = f" (tested with {prs_named(prs)})" if len(prs) > 1 else ""
    return {"title": f"Merged into {base_ref}{what}", "summary": f"Merged into `{base_ref}`{what}{together}, "
                                                                 "as tested by the merge queue."}


def queue_comment_line(text: str) -> str:
    """The sticky comment's one line about the queue (without its markers)."""
    return f"**Merge queue:** {text}"
