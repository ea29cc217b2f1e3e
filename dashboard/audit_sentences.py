"""An audit event as a person reads it: a sentence with links to the PR (on GitHub), the validation or
the agent run it is about, e.g. "@alice merged #12 at `3f2a9c1` into main (squash) via /merge".

Pure: from the event's kind, actor and details. Every kind the app records has a sentence here (the
tests collect the kinds from the code); an unknown kind reads as words with its PR and run linked. No
raw value is shown: statuses and triggers go through bot/labels.py, free text (reasons, errors) is
masked (bot/redact.py) and cut short, and only the details named below are read, never the rest (the
agent settings' texts, for instance, are only named)."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from bot import labels
from bot.links import github_link
from bot.models import SUBJECT_PULL_REQUEST
from bot.redact import PROCESS_REDACTOR
from pipeline.commands.parse import COMMANDS
from pipeline.validation.buttons import ACTIONS
from pipeline.validation.subjects import subject_lead

MAX_TEXT = 200  # characters of a reason, an error or a title
MAX_LISTED = 5  # repositories or settings named before "and N more"


@dataclass(frozen=True)
class Part:
    """A piece of a sentence: text, a link (`href`), or a code-like value (`code`: a SHA, a name)."""

    text: str
    href: str | None = None
    code: bool = False


@dataclass(frozen=True)
class Sentence:
    parts: tuple[Part, ...]

    @property
    def text(self) -> str:
        return "".join(part.text for part in self.parts)


@dataclass(frozen=True)
class Where:
    """What links need: the project's name (owner/repo; None outside a project) and the GitHub web URL;
    `run_id`: the agent run whose page this is (not linked to itself)."""

    project: str | None
    github_url: str = "https://github.com"
    run_id: str | None = None


@dataclass(frozen=True)
class Event:
    action: str
    actor: str | None
    details: Mapping[str, Any]
    where: Where

    def text(self, key: str) -> str | None:
        value = self.details.get(key)
        return _short(value) if isinstance(value, str) and value.strip() else None

    def number(self, key: str) -> int | None:
        value = self.details.get(key)
        return value if isinstance(value, int) and not isinstance(value, bool) else None


Piece = Part | str | None
Describe = Callable[[Event], list[Piece]]


@dataclass(frozen=True)
class Kind:
    title: str   # the kind in the filter: "Merged"
    group: str   # a key of GROUPS
    describe: Describe


GROUPS = {
    "agent": "Agent runs",
    "validation": "Validations",
    "merge": "Merging",
    "command": "Commands and buttons",
    "settings": "Settings and secrets",
    "access": "Installation and access",
}
# groups whose events carry no project (they are not in a project's log)
PROJECTLESS_GROUPS = ("access",)


# ---- pieces ---------------------------------------------------------------------------------------------

def _short(text: str) -> str:
    text = " ".join(PROCESS_REDACTOR.redact(text).split())
    return text if len(text) <= MAX_TEXT else text[:MAX_TEXT - 1].rstrip() + "…"


def _who(event: Event) -> str:
    if event.actor == "cli":
        return "An operator (command line)"
    return f"@{event.actor}" if event.actor else "The app"


def _pr(event: Event, key: str = "pr") -> Piece:
    number = event.number(key)
    if number is None:
        return None
    text = f"#{number}"
    if event.where.project is None:
        return text
    href = github_link(f"{event.where.github_url.rstrip('/')}/{event.where.project}/pull/{number}",
                       event.where.github_url)
    return Part(text, href=href)


def _run(event: Event, text: str) -> Piece:
    run_id = event.text("run_id")
    if run_id is None or event.where.project is None or not run_id.isalnum() or run_id == event.where.run_id:
        return text
    return Part(text, href=f"/projects/{event.where.project}/runs/{run_id}")


def _validation(event: Event, text: str, key: str = "validation_id") -> Piece:
    validation_id = event.text(key)
    if validation_id is None or not validation_id.isalnum():
        return text
    return Part(text, href=f"/validations/{validation_id}")


def _sha(event: Event, key: str = "head_sha") -> Piece:
    sha = event.text(key)
    return Part(sha[:7], code=True) if sha else None


def _code(text: str | None) -> Piece:
    return Part(text, code=True) if text else None


def _on_pr(event: Event) -> list[Piece]:
    """" on #12", or what a merge queue's commit was validated for: " on the merge queue group for #12"."""
    pr = _pr(event)
    subject = event.text("subject")
    if pr and subject is not None and subject != SUBJECT_PULL_REQUEST:
        return [f" on the {subject_lead(subject)} ", pr]
    return [" on ", pr] if pr else []


def _at_sha(event: Event, word: str = " at ") -> list[Piece]:
    sha = _sha(event)
    return [word, sha] if sha else []


def _because(event: Event, key: str = "reason", joiner: str = ": ") -> list[Piece]:
    reason = event.text(key)
    return [joiner, reason] if reason else []


def _listing(names: list[str]) -> str:
    shown = ", ".join(names[:MAX_LISTED])
    return shown + (f" and {len(names) - MAX_LISTED} more" if len(names) > MAX_LISTED else "")


def _names(event: Event, key: str) -> list[str]:
    value = event.details.get(key)
    if isinstance(value, list):
        return [_short(str(v)) for v in value if isinstance(v, str | int)]
    return []


def _count(event: Event, key: str, one: str, many: str) -> list[Piece]:
    value = event.details.get(key)
    n = len(value) if isinstance(value, list) else event.number(key)
    if not n:
        return []
    return [f" ({n} {one if n == 1 else many})"]


def _asked_by(event: Event) -> list[Piece]:
    trigger = event.text("trigger")
    if event.actor is None and trigger is None:
        return []
    return [f" (asked {labels.triggered(trigger, event.actor)})" if trigger else f" (asked by @{event.actor})"]


# ---- the kinds --------------------------------------------------------------------------------------------

def _run_started(e: Event) -> list[Piece]:
    source = e.text("source")
    how = f" via {labels.agent_source(source)}" if source else None
    return [_who(e), " started an ", _run(e, "agent run"), *_on_pr(e), how]


def _run_updated(e: Event) -> list[Piece]:
    before, after = e.text("from"), e.text("to")
    if after is None:
        return ["The ", _run(e, "agent run"), " changed", *_because(e)]
    went = f" went from {labels.agent_status(before)} to " if before else " is now "
    return ["The ", _run(e, "agent run"), went, labels.agent_status(after), *_because(e)]


def _run_completed(e: Event) -> list[Piece]:
    fixes, status, reason = e.number("fix_attempts"), e.text("status"), e.text("reason")
    return ["The ", _run(e, "agent run"), " ended: ", labels.agent_status(status) if status else "ended",
            f" ({reason})" if reason else None,
            f" after {fixes} fix attempt{'s' if fixes != 1 else ''}" if fixes else None]


def _pr_created(e: Event) -> list[Piece]:
    run = _run(e, "agent run")
    return ["The agent opened ", _pr(e) or "a pull request", *((" (", run, ")") if isinstance(run, Part) else ())]


def _plan(decided: str) -> Describe:
    def describe(e: Event) -> list[Piece]:
        run = _run(e, "agent run")
        return [_who(e), f" {decided} the plan", *((" of the ", run) if isinstance(run, Part) else ())]

    return describe


def _validation_completed(e: Event) -> list[Piece]:
    return [_validation(e, "Validation"), " of ", _sha(e) or "a head", *_on_pr(e), ": ",
            labels.conclusion(e.text("conclusion")), *_because(e, "title", " · ")]


def _validation_superseded(e: Event) -> list[Piece]:
    return [_validation(e, "Validation"), " of ", _sha(e) or "a head", *_on_pr(e), " was stopped", *_because(e)]


def _validation_cancelled(e: Event) -> list[Piece]:
    reason = [] if e.actor else _because(e)
    return [_who(e), " cancelled the ", _validation(e, "validation"), " of ", _sha(e) or "a head", *_on_pr(e),
            *reason]


def _validation_retried(e: Event) -> list[Piece]:
    return [_who(e), " started a ", _validation(e, "new validation"), " of ", _pr(e) or "a pull request",
            " from the dashboard"]


def _replayed(e: Event) -> list[Piece]:
    what = e.text("event")
    page = f"/projects/{e.where.project}/deliveries" if e.where.project else None
    delivery = Part("a delivery", href=page) if page else "a delivery"
    return [_who(e), " replayed ", delivery, f" ({what[:1].lower()}{what[1:]})" if what else None, *_on_pr(e),
            ": it is handled again"]


def _dequeued(e: Event) -> list[Piece]:
    via = {"api": " through the API", "button": " with its check run's Dequeue button"}.get(e.text("source"),
                                                                                        " from the dashboard")
    return [_who(e), " took ", _pr(e) or "a pull request", " out of the merge queue", via]


def _landed_untested(e: Event) -> list[Piece]:
    base, merged = e.text("base_ref"), e.text("merged_sha")
    return ["The merge queue merged ", _pr(e) or "a pull request", f" into {base}" if base else None,
            f" as {merged[:7]}" if merged else None, ", but not the tree it tested", *_because(e, "why")]


def _announce_failed(e: Event) -> list[Piece]:
    base = e.text("base_ref")
    return ["The merge queue", f" of {base}" if base else None, " could not tell ", _pr(e) or "a pull request",
            " why it left the queue, and went on", *_because(e, "why")]


def _could_not_test(e: Event) -> list[Piece]:
    base = e.text("base_ref")
    return ["The merge queue", f" of {base}" if base else None, " could not test ", _pr(e) or "a pull request",
            " and tries again later", *_because(e, "why")]


def _merged(e: Event) -> list[Piece]:
    base, method = e.text("base"), e.text("method")
    return [_who(e), " merged ", _pr(e) or "a pull request", *_at_sha(e), f" into {base}" if base else None,
            f" ({method})" if method else None, f" via {labels.trigger(e.text('trigger'))}" if e.text("trigger")
            else None]


def _merge_failed(e: Event) -> list[Piece]:
    return ["Merging ", _pr(e) or "a pull request", *_at_sha(e), " failed", *_because(e, "error"), *_asked_by(e)]


def _merge_refused(e: Event) -> list[Piece]:
    return ["Did not merge ", _pr(e) or "a pull request", *_because(e), *_asked_by(e)]


def _branch_deleted(e: Event) -> list[Piece]:
    return ["Deleted the branch ", _code(e.text("branch")) or "", " of ", _pr(e) or "a pull request",
            " after merging it"]


def _auto_merge(e: Event) -> list[Piece]:
    on = e.details.get("auto_merge")
    return [_who(e), f" turned auto-merge {'on' if on else 'off'} for ", _pr(e) or "a pull request"]


def _refused(e: Event) -> list[Piece]:
    commands = _names(e, "commands")
    button = e.text("button")
    if commands:
        what = [" may not use ", _code(", ".join(f"/{c}" for c in commands))]
    elif button:
        what = [f" may not press {ACTIONS[button][0] if button in ACTIONS else labels.words(button)}"]
    else:
        what = [" was refused"]
    role, needed = e.text("role"), e.text("needed")
    why = f" (their access: {role or 'none'}; {needed} is needed)" if needed else ""
    return [_who(e), *what, *_on_pr(e), why]


def _command(name: str) -> Describe:
    def describe(e: Event) -> list[Piece]:
        args = _names(e, "args")
        shown = f"/{name}" if name == "agent" or not args else f"/{name} {' '.join(args)}"
        goal = [": ", args[0]] if name == "agent" and args else []
        error = " (not understood)" if e.text("error") else ""
        return [_who(e), " commented ", _code(shown), *_on_pr(e), error, *goal]

    return describe


def _button(identifier: str) -> Describe:
    return lambda e: [_who(e), f" pressed {ACTIONS[identifier][0]} on the check run", *_at_sha(e, " of "),
                      *_on_pr(e)]


def _approved(e: Event) -> list[Piece]:
    return [_who(e), " approved ", _sha(e) or "the head", " of ", _pr(e) or "a pull request", " to run (/ok-to-test)"]


def _settings(what: str, key: str | None) -> Describe:
    def describe(e: Event) -> list[Piece]:
        names = sorted(labels.words(str(k)) for k in (_names(e, key) if key else e.details.keys()))
        return [_who(e), f" changed {what}: {_listing(names)}" if names else f" saved {what} (nothing changed)"]

    return describe


def _secret(verb: str) -> Describe:
    return lambda e: [_who(e), f" {verb} the secret ", _code(e.text("name")) or "(unnamed)"]


def _installation(doing: str) -> Describe:
    return lambda e: [_who(e), f" {doing}", f" on {e.text('account')}" if e.text("account") else None,
                      *_count(e, "repositories", "repository", "repositories")]


def _expiry(e: Event) -> list[Piece]:
    expiry = e.text("expiry")  # "30 days", "No expiry"
    if not expiry:
        return []
    return [f" (expires after {expiry})" if expiry[:1].isdigit() else f" ({expiry[:1].lower()}{expiry[1:]})"]


def _repositories_added(e: Event) -> list[Piece]:
    names = _names(e, "repositories")
    return [_who(e), " added ", f"repositories to the App: {_listing(names)}" if names else "repositories to the App"]


_KINDS: dict[str, Kind] = {
    "agent.run.started": Kind("Agent run started", "agent", _run_started),
    "agent.plan.confirmed": Kind("Plan confirmed", "agent", _plan("confirmed")),
    "agent.plan.rejected": Kind("Plan rejected", "agent", _plan("rejected")),
    "agent.run.cancelled": Kind("Agent run cancelled", "agent",
                                lambda e: [_who(e), " cancelled the ", _run(e, "agent run")]),
    "agent.run.updated": Kind("Agent run changed", "agent", _run_updated),
    "agent.run.completed": Kind("Agent run ended", "agent", _run_completed),
    "pr.created": Kind("Agent opened a pull request", "agent", _pr_created),
    "validation.completed": Kind("Validation finished", "validation", _validation_completed),
    "validation.superseded": Kind("Validation stopped", "validation", _validation_superseded),
    "validation.cancelled": Kind("Validation cancelled", "validation", _validation_cancelled),
    "validation.retried": Kind("Validation retried", "validation", _validation_retried),
    "fork_gate.approved": Kind("Fork head approved", "validation", _approved),
    "merge.merged": Kind("Merged", "merge", _merged),
    "merge.failed": Kind("Merge failed", "merge", _merge_failed),
    "merge.refused": Kind("Merge refused", "merge", _merge_refused),
    "merge.branch_deleted": Kind("Branch deleted", "merge", _branch_deleted),
    "auto_merge.set": Kind("Auto-merge turned on or off", "merge", _auto_merge),
    "command.refused": Kind("Command refused", "command", _refused),
    "delivery.replayed": Kind("Delivery replayed", "command", _replayed),
    "merge_queue.dequeued": Kind("Dequeued from the merge queue", "command", _dequeued),
    "merge_queue.landed_untested": Kind("Merged, but not the tested tree", "merge", _landed_untested),
    "merge_queue.announce_failed": Kind("Merge queue could not tell a PR", "merge", _announce_failed),
    "merge_queue.could_not_test": Kind("Merge queue could not test", "merge", _could_not_test),
    **{f"command.{name}": Kind(f"{usage.split()[0]} command", "command", _command(name))
       for name, (usage, _) in COMMANDS.items()},
    **{f"button.{identifier}": Kind(f"{label} button", "command", _button(identifier))
       for identifier, (label, _) in ACTIONS.items()},
    "project.settings.updated": Kind("Settings changed", "settings", _settings("the settings", "changed")),
    "project.agent_settings": Kind("Agent settings changed", "settings", _settings("the agent settings", None)),
    "project.secret.added": Kind("Secret added", "settings", _secret("added")),
    "project.secret.replaced": Kind("Secret replaced", "settings", _secret("replaced")),
    "project.secret.deleted": Kind("Secret deleted", "settings", _secret("deleted")),
    "secret.set": Kind("Secret set from the command line", "settings", _secret("set")),
    "installation.created": Kind("App installed", "access", _installation("installed the App")),
    "installation.new_permissions_accepted": Kind("New permissions accepted", "access",
                                                  _installation("accepted the App's new permissions")),
    "installation.unsuspend": Kind("App unsuspended", "access", _installation("unsuspended the App")),
    "installation.suspend": Kind("App suspended", "access", _installation("suspended the App")),
    "installation.deleted": Kind("App uninstalled", "access",
                                 lambda e: [_who(e), " uninstalled the App",
                                            *_count(e, "archived_projects", "project archived", "projects archived")]),
    "installation_repositories.added": Kind("Repositories added", "access", _repositories_added),
    "installation_repositories.removed": Kind(
        "Repositories removed", "access",
        lambda e: [_who(e), " removed repositories from the App",
                   *_count(e, "archived_projects", "project archived", "projects archived")]),
    "github_app_authorization.revoked": Kind(
        "Authorization revoked", "access",
        lambda e: [_who(e), " revoked their authorization of the App",
                   *_count(e, "tokens_forgotten", "token forgotten", "tokens forgotten")]),
    "dashboard.login": Kind("Logged in", "access", lambda e: [_who(e), " logged in to the dashboard"]),
    "dashboard.logout": Kind("Logged out", "access", lambda e: [_who(e), " logged out of the dashboard"]),
    "api_token.created": Kind("API token created", "access",
                              lambda e: [_who(e), " created the API token ", _code(e.text("name")) or "(unnamed)",
                                         *_expiry(e)]),
    "app.registered": Kind("App registered", "access",
                           lambda e: ["The GitHub App ", _code(e.text("slug")) or "", " was registered"]),
}
KINDS: Mapping[str, Kind] = _KINDS


def _unknown(e: Event) -> list[Piece]:
    words = labels.words(e.action)
    said = [f"{_who(e)}: {words}" if e.actor else words[:1].upper() + words[1:], *_on_pr(e)]
    if e.text("run_id"):
        said += [" (", _run(e, "agent run"), ")"]
    return said


def sentence(action: str, actor: str | None, details: Mapping[str, Any] | None, where: Where) -> Sentence:
    """The event as a sentence (an unknown kind as words, with its PR and agent run linked)."""
    event = Event(action, actor, details if isinstance(details, Mapping) else {}, where)
    kind = KINDS.get(action)
    pieces = kind.describe(event) if kind else _unknown(event)
    parts = tuple(p if isinstance(p, Part) else Part(p) for p in pieces if p)
    return Sentence(parts)


def kind_title(action: str) -> str:
    kind = KINDS.get(action)
    if kind:
        return kind.title
    words = labels.words(action)
    return words[:1].upper() + words[1:]


def kinds_of_group(group: str) -> list[str]:
    return [action for action, kind in KINDS.items() if kind.group == group]


def slug(action: str) -> str:
    """A kind as the filter names it in the address: its title's words (`merge-refused`), not its event name."""
    return "-".join(re.findall(r"[a-z0-9]+", kind_title(action).lower()))


_BY_SLUG = {slug(action): action for action in KINDS}
assert len(_BY_SLUG) == len(KINDS), "two kinds with the same title"


def filter_choices(*, project: bool = True) -> list[tuple[str, str, list[tuple[str, str]]]]:
    """The kind filter's options: (group, its title, [(a kind's slug, its title)]); a project's log has
    no installation-wide events."""
    return [(group, title, [(slug(action), KINDS[action].title) for action in kinds_of_group(group)])
            for group, title in GROUPS.items() if not (project and group in PROJECTLESS_GROUPS)]


def selected_actions(choice: str | None) -> list[str] | None:
    """The kinds a filter value selects: a group's, one kind's (by its slug, or by its event name for a
    kind this module does not know), or None (all)."""
    if not choice:
        return None
    if choice in GROUPS:
        return kinds_of_group(choice)
    return [_BY_SLUG.get(choice, choice)]


def choice_title(choice: str) -> str:
    """The words of a filter value: a group's title, a kind's title."""
    if choice in GROUPS:
        return GROUPS[choice]
    return kind_title(_BY_SLUG.get(choice, choice))
