"""`codegenapp deliveries list|replay`: the operator's view of stored webhook deliveries and their replay
(pipeline/deliveries/replay.py), on the server, with the database. A replay is queued for the worker of
a running `serve` or `codegenapp worker`, which finds it at its next poll; it is audited as done by "cli"."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from bot.store import Store
from pipeline.deliveries.replay import DeliveryReplay, DeliveryView, ReplayRefused, UnknownDelivery

MAX_LIMIT = 1000

EXAMPLES = """\
examples:
  codegenapp deliveries list                         the newest 50, of every repository
  codegenapp deliveries list --failed --repo acme/widgets
  codegenapp deliveries replay 72d3162e-cc78-11e3-81ab-4c9367dc0958
"""


def _limit(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {value!r}") from None
    if not 1 <= number <= MAX_LIMIT:
        raise argparse.ArgumentTypeError(f"from 1 to {MAX_LIMIT}")
    return number


def add_commands(commands: Any) -> None:
    """The `deliveries` command and its actions, on the `codegenapp` parser's subcommands."""
    deliveries = commands.add_parser("deliveries", help="stored webhook deliveries: list them, replay one",
                                     epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    actions = deliveries.add_subparsers(dest="deliveries_command", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="the stored deliveries, newest first")
    listing.add_argument("--failed", action="store_true", help="only those whose handling failed (dead-lettered)")
    listing.add_argument("--repo", metavar="OWNER/REPO", help="only this repository's")
    listing.add_argument("--limit", type=_limit, default=50, metavar="N", help="at most N (default 50)")
    replay = actions.add_parser("replay", help="handle a stored delivery again (a new job for it)")
    replay.add_argument("id", metavar="ID", help="the delivery's id (X-GitHub-Delivery), as `list` shows it")


def table(views: list[DeliveryView]) -> str:
    """The deliveries as a table for a terminal; a failed one's error on a line of its own below it."""
    rows = [("ID", "RECEIVED (UTC)", "EVENT", "REPOSITORY", "PR", "STATUS", "SOURCE")]
    errors: dict[int, str] = {}
    for view in views:
        rows.append((view.id, f"{view.received_at:%Y-%m-%d %H:%M:%S}", view.what, view.repository or "-",
                     f"#{view.pr_number}" if view.pr_number else "-",
                     view.state_words + (f" (replayed {view.replayed}x)" if view.replayed else ""),
                     view.source_words))
        if view.error_summary:
            errors[len(rows) - 1] = view.error_summary
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for index, row in enumerate(rows):
        lines.append("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
        if index in errors:
            lines.append(f"    error: {errors[index]}")
    return "\n".join(lines) + "\n"


async def run(store: Store, args: argparse.Namespace, *, max_attempts: int) -> int:
    replays = DeliveryReplay(store, None, max_attempts=max_attempts)
    if args.deliveries_command == "list":
        repository_id = None
        if args.repo:
            project = await store.projects.get_project_by_name(args.repo)
            if project is None:
                print(f"codegenapp: no project for {args.repo} (see `codegenapp projects list`)", file=sys.stderr)
                return 1
            repository_id = project.github_repo_id
        views = await replays.page(repository_id=repository_id, failed=args.failed, limit=args.limit)
        if not views:
            print("no failed deliveries" if args.failed else "no deliveries stored yet")
            return 0
        print(table(views), end="")
        return 0
    try:
        replayed = await replays.replay(args.id, actor="cli")
    except (UnknownDelivery, ReplayRefused) as exc:
        print(f"codegenapp: {exc.args[0]}", file=sys.stderr)
        return 1
    view = replayed.delivery
    about = ", ".join(part for part in (view.repository, f"#{view.pr_number}" if view.pr_number else None) if part)
    print(f"queued job {replayed.job_id} to handle delivery {view.id} again: {view.what}"
          + (f" ({about})" if about else "") + "; a running worker picks it up")
    return 0
