"""A project's settings page: each key with the value a run uses and where it comes from (the repository's
`.github/codegenapp.yml` at the default branch's head, the project's setting, or the default), the form
(Validation; Agents and merging) and the project's secrets (deleting one asks first). The file is kept
REPO_FILE_SECONDS per project (Services.repo_files), and the page says how long ago it was read.

The merge queue's sub-keys are form fields named `merge_queue.KEY`, checked with merge_queue_block's
bounds and stored together in Project.merge_queue (a sub-key at its default is not stored: it reads as
the default); a sub-key the file sets is shown read-only, like the other keys the file shares."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any
from urllib.parse import quote

import aiohttp
from aiohttp import web
from gidgethub import GitHubException

from bot import labels
from bot.errors import GitHubUnavailable, PermanentError
from bot.models import Project
from bot.services import REPO_FILE_SECONDS, Services
from bot.store import InvalidSecret
from bot.store.projects import MAX_SECRET_BYTES, SECRET_NAME
from dashboard import auth
from dashboard.rendering import render, services_of
from pipeline.repo_config.merge_queue_block import (QUEUE_BOUNDS, QUEUE_METHODS, MergeQueueSettings,
                                                    queue_value_problem)
from pipeline.repo_config.parse import ConfigFileError, RepoConfig
from pipeline.repo_config.reading import CONFIG_PATH, read_repo_config, stored_settings
from pipeline.repo_config.settings_sources import (FILE_KEY_OF, FILE_ONLY_KEYS, QUEUE_SETTING_KEYS, Resolved,
                                                   queue_keys_of, resolve_settings)

MAX_TEXT = 20_000  # repository rules, planning statement, agent command (characters)
MAX_COMMANDS = 50
MAX_COMMAND = 2_000
MAX_FIX_ATTEMPTS = 20
BACKEND_CHOICES = ("", "codegen", "local", "none")  # "" = the default (Codegen when configured)
LOCAL_NEEDS_COMMAND = "Agent command is needed when the agent backend is local"
FILE_READ_SECONDS = 5.0  # the page waits this long for GitHub, then shows the project's values

QUEUE_LABELS = {"merge_queue.enabled": "Merge queue", "merge_queue.method": "How the queue lands a PR",
                "merge_queue.batch_size": "PRs tested together (batch size)",
                "merge_queue.max_parallel": "Candidates tested at once",
                "merge_queue.flaky_retries": "Retries of a failing step (flaky)"}
QUEUE_DEFAULTS = asdict(MergeQueueSettings())  # sub-key -> its default (not stored)
FIELD_LABELS = {"setup_commands": "Setup commands", "validate_commands": "Validate commands",
                "auto_merge_enabled": "Auto-merge", **QUEUE_LABELS}
FILE_ONLY_LABELS = {"timeout_minutes": "Timeout", "merge_method": "Merge method",
                    "delete_branch_after_merge": "Delete the branch after merging",
                    "setup_network": "Network during setup", "analysis": "Analysis",
                    "cache_key": "Setup snapshot key", "env": "Environment variables", "ui": "UI check"}
MERGE_METHOD_WORDS = {"merge": "merge commit", "squash": "squash and merge", "rebase": "rebase and merge",
                      "fast-forward": "fast-forward to the tested commit"}


def _commands(raw: str, label: str, problems: list[str]) -> list[str]:
    commands = [line for line in raw.replace("\r\n", "\n").split("\n") if line.strip()]
    if len(commands) > MAX_COMMANDS:
        problems.append(f"{label}: at most {MAX_COMMANDS} commands, one a line")
    for command in commands:
        if len(command) > MAX_COMMAND:
            problems.append(f"{label}: a command is longer than {MAX_COMMAND} characters")
            break
    return commands


def parse_settings(form: Any) -> tuple[dict[str, Any], list[str]]:
    """The form's values, or the problems with them (a sentence each). Text is kept exactly as typed
    (browsers send a textarea's line breaks as CRLF; they are stored as LF)."""
    problems: list[str] = []
    values: dict[str, Any] = {}
    for key, label in (("repository_rules", "Repository rules"), ("planning_statement", "Planning statement"),
                       ("agent_command", "Agent command")):
        text = str(form.get(key, "")).replace("\r\n", "\n")
        if len(text) > MAX_TEXT:
            problems.append(f"{label} is {len(text)} characters long; the limit is {MAX_TEXT}")
        values[key] = text
    values["setup_commands"] = _commands(str(form.get("setup_commands", "")), "Setup commands", problems)
    values["validate_commands"] = _commands(str(form.get("validate_commands", "")), "Validate commands", problems)
    values["auto_merge_enabled"] = form.get("auto_merge_enabled") == "on"
    values["auto_confirm_plans"] = form.get("auto_confirm_plans") == "on"
    backend = str(form.get("agent_backend", ""))
    if backend not in BACKEND_CHOICES:
        problems.append("Agent backend must be one of: default, codegen, local, none")
    values["agent_backend"] = backend or None
    raw = str(form.get("max_fix_attempts", "3")).strip()
    if not raw.isdigit() or not 0 <= int(raw) <= MAX_FIX_ATTEMPTS:
        problems.append(f"Max fix attempts must be a whole number from 0 to {MAX_FIX_ATTEMPTS}, got {raw!r}")
    else:
        values["max_fix_attempts"] = int(raw)
    if values["agent_backend"] == "local" and not values["agent_command"].strip():
        problems.append(LOCAL_NEEDS_COMMAND)
    values.update(_queue_values(form, problems))
    return values, problems


def _queue_values(form: Any, problems: list[str]) -> dict[str, Any]:
    """The merge queue's sub-keys from the form (`merge_queue.KEY`): None for one at its default, or
    left empty; a value out of merge_queue_block's bounds is a problem."""
    values: dict[str, Any] = {}
    for key in QUEUE_SETTING_KEYS:
        name = key.removeprefix("merge_queue.")
        raw = str(form.get(key, "")).strip()
        if name == "enabled":
            value: Any = raw == "on"
        elif not raw:
            values[key] = None
            continue
        else:
            value = int(raw) if name in QUEUE_BOUNDS and raw.isascii() and raw.isdigit() and len(raw) < 6 else raw
        if queue_value_problem(name, value) is not None:
            if name == "method":
                problems.append(f"{QUEUE_LABELS[key]} must be one of: {', '.join(QUEUE_METHODS)}, got {raw[:40]!r}")
            else:
                low, high = QUEUE_BOUNDS[name]
                problems.append(f"{QUEUE_LABELS[key]} must be a whole number from {low} to {high}, got {raw[:40]!r}")
            continue
        values[key] = None if value == QUEUE_DEFAULTS[name] else value
    return values


def stored_queue_values(stored: Any) -> dict[str, Any]:
    """Project.merge_queue by `merge_queue.KEY`, as `_queue_values` makes them (None: not set, or the default)."""
    return {f"merge_queue.{name}": None if value == QUEUE_DEFAULTS[name] else value
            for name, value in asdict(queue_keys_of(stored)).items()}


def with_queue_object(values: dict[str, Any], stored: Any) -> dict[str, Any]:
    """`values` with the `merge_queue.KEY` values gathered into `merge_queue`, the object Project.merge_queue
    stores: the stored sub-keys, changed by those given (a key the file sets was taken out: it keeps its
    stored value); a sub-key at None is left out."""
    if not any(key in values for key in QUEUE_SETTING_KEYS):
        return values
    merged = {**stored_queue_values(stored), **{key: values[key] for key in QUEUE_SETTING_KEYS if key in values}}
    queue = {key.removeprefix("merge_queue."): value for key, value in merged.items() if value is not None}
    others = {key: value for key, value in values.items() if key not in QUEUE_SETTING_KEYS}
    return {**others, "merge_queue": queue or None}


def keep_file_keys(values: dict[str, Any], submitted: Mapping[str, Any], stored: Mapping[str, Any],
                   file_keys: set[str]) -> list[str]:
    """Take the keys the repository's file sets out of `values` (the stored value stays: the page does
    not offer them), and refuse a submitted change to one: it would be saved and silently ignored."""
    problems = []
    for key in sorted(file_keys):
        if key in submitted and values.get(key) != stored.get(key):
            problems.append(f"{FIELD_LABELS[key]} is set in {CONFIG_PATH} on the default branch: change it "
                            "there (a value saved here would be ignored)")
        values.pop(key, None)
    return problems


async def refuse_file_keys(services: Services, project: Project, values: dict[str, Any],
                           submitted: Mapping[str, Any]) -> tuple[RepoFile, list[str]]:
    """`keep_file_keys` against the file at the default branch's head: the form and the JSON API alike."""
    repo_file = await read_repo_file(services, project)
    stored = stored_settings(project)
    resolved = resolve_settings(repo_file.config, stored)
    return repo_file, keep_file_keys(values, submitted, {**stored, **stored_queue_values(project.merge_queue)},
                                     {key for key in (*FILE_KEY_OF, *QUEUE_SETTING_KEYS) if resolved[key].from_file})


# ---- the repository's file, as the page shows it ---------------------------------------------------

@dataclass(frozen=True)
class RepoFile:
    """`.github/codegenapp.yml` at the default branch's head: `status` is "found", "absent", "invalid"
    (`problem` says why) or "unreachable" (GitHub could not be asked; `problem` says why). `read_at`: when
    it was read (the cache's clock); `age`: how many seconds ago, when it came from the cache (else None)."""

    status: str
    config: RepoConfig | None = None
    problem: str = ""
    read_at: float = 0.0
    age: float | None = None


async def read_repo_file(services: Services, project: Project) -> RepoFile:
    """The file as read within the last REPO_FILE_SECONDS (services.repo_files, by project), or read now;
    a failed read is not kept, so the next view asks GitHub again."""
    cache = services.repo_files
    kept: RepoFile | None = cache.get(project.id)
    if kept is not None:
        return replace(kept, age=max(0.0, cache.timer() - kept.read_at))
    repo_file = await _read_repo_file(services, project)
    if repo_file.status != "unreachable":
        cache[project.id] = repo_file = replace(repo_file, read_at=cache.timer())
    return repo_file


async def _read_repo_file(services: Services, project: Project) -> RepoFile:
    if not services.github.configured or project.installation_id is None:
        return RepoFile("unreachable", problem="the GitHub App is not configured for this repository")
    try:
        repo = services.github.repo(project.installation_id, project.name)
        config = await asyncio.wait_for(read_repo_config(repo, None), FILE_READ_SECONDS)
    except ConfigFileError as exc:
        return RepoFile("invalid", problem=str(exc))
    except TimeoutError:
        return RepoFile("unreachable", problem=f"GitHub did not answer within {FILE_READ_SECONDS:.0f} seconds")
    except (GitHubUnavailable, GitHubException, PermanentError, aiohttp.ClientError, OSError) as exc:
        return RepoFile("unreachable", problem=str(exc) or type(exc).__name__)
    return RepoFile("absent") if config is None else RepoFile("found", config)


def read_ago(repo_file: RepoFile) -> str | None:
    """"read 12 s ago" for a file from the cache (a maintainer who just pushed knows the page may be behind)."""
    if repo_file.age is None:
        return None
    seconds = int(repo_file.age)
    return "read just now" if seconds < 1 else f"read {seconds} s ago"


def file_url(project: Project) -> str:
    """The file on GitHub, at the head of the default branch."""
    return f"{project.github_url}/blob/{quote(project.default_branch or 'HEAD', safe='/')}/{CONFIG_PATH}"


# ---- what the page shows -----------------------------------------------------------------------------

def shown_lines(key: str, value: Any) -> list[str]:
    """A resolved value as the lines a person reads (an empty list: nothing set)."""
    if key in ("setup_commands", "cache_key"):
        return list(value)
    if key in ("validate_commands", "analysis"):
        return [step.run for step in value]
    if key == "env":
        return [f"{name}={text}" for name, text in value.items()]
    if key == "timeout_minutes":
        return [f"{value} minutes"]
    if key in ("merge_method", "merge_queue.method"):
        return [MERGE_METHOD_WORDS.get(value, value)]
    if key == "setup_network":
        return ["allowed" if value else "no network"]
    if key == "ui":
        return [] if value is None else [f"{value.start} at {value.url}, "
                                         + ", ".join(page.path for page in value.pages)]
    if isinstance(value, bool):
        return ["on" if value else "off"]
    return [] if value is None else [str(value)]


CODE_KEYS = frozenset({"setup_commands", "validate_commands", "analysis", "cache_key", "env", "ui"})  # shown as code
EMPTY_WORDS = {"cache_key": "the usual manifests and lock files", "ui": "no UI check", "env": "none",
               "analysis": "none", "setup_commands": "no commands", "validate_commands": "no commands"}


MERGE_KEYS = ("merge_method", "delete_branch_after_merge")  # shown under "Agents and merging", the rest under Validation


def file_only_rows(resolved: Mapping[str, Resolved], keys: Sequence[str]) -> list[dict[str, Any]]:
    """The keys only the file sets, for the page's lists: label, key, lines (or the words for none; `code`:
    commands and names, shown as code), source."""
    return [{"key": key, "label": FILE_ONLY_LABELS[key], "lines": shown_lines(key, resolved[key].value),
             "code": key in CODE_KEYS, "empty": EMPTY_WORDS.get(key, "none"),
             "source": labels.setting_source(resolved[key].source)}
            for key in keys]


async def _settings_view(request: web.Request, project: Project, repo_file: RepoFile, *, status: int = 200,
                         problems: list[str] | None = None, form: dict[str, Any] | None = None,
                         message: str | None = None) -> web.Response:
    services = services_of(request)
    secrets_ = await services.store.projects.secret_names(project.id)
    resolved = resolve_settings(repo_file.config, stored_settings(project))
    codegen = bool(services.settings.codegen_api_key and services.settings.codegen_org_id)
    return await render(
        request, "settings.html", status=status, project=project, problems=problems or [], form=form,
        message=message, secrets=secrets_, repo_file=repo_file, config_path=CONFIG_PATH,
        file_url=file_url(project), resolved=resolved,
        sources={key: labels.setting_source(r.source) for key, r in resolved.items()},
        file_text={key: "\n".join(shown_lines(key, resolved[key].value)) for key in FILE_KEY_OF},
        empty_words=EMPTY_WORDS,
        file_only=file_only_rows(resolved, [key for key in FILE_ONLY_KEYS if key not in MERGE_KEYS]),
        merge_rows=file_only_rows(resolved, MERGE_KEYS),
        queue_labels=QUEUE_LABELS, queue_bounds=QUEUE_BOUNDS, queue_methods=QUEUE_METHODS,
        method_words=MERGE_METHOD_WORDS,
        read_ago=read_ago(repo_file),
        reread_seconds=int(REPO_FILE_SECONDS),
        default_backend="codegen" if codegen else "none",
        limits={"text": MAX_TEXT, "commands": MAX_COMMANDS, "command": MAX_COMMAND, "fix": MAX_FIX_ATTEMPTS,
                "secret_kib": MAX_SECRET_BYTES // 1024},
        backends=BACKEND_CHOICES)


async def _managed_project(request: web.Request) -> Project:
    return await auth.require_project(request, request.match_info["owner"], request.match_info["repo"],
                                      manage=True)


async def settings_page(request: web.Request) -> web.Response:
    project = await _managed_project(request)
    repo_file = await read_repo_file(services_of(request), project)
    return await _settings_view(request, project, repo_file, message=request.query.get("saved") and "Settings saved.")


async def save_settings(request: web.Request) -> web.Response:
    services = services_of(request)
    project = await _managed_project(request)
    form = await request.post()
    values, problems = parse_settings(form)
    repo_file, refused = await refuse_file_keys(services, project, values, form)
    problems += refused
    if problems:
        shown = {k: str(form.get(k, "")).replace("\r\n", "\n") for k in form if k != "csrf_token"}
        return await _settings_view(request, project, repo_file, status=400, problems=problems, form=shown)
    values = with_queue_object(values, project.merge_queue)
    changed = sorted(k for k, v in values.items() if getattr(project, k) != v)
    await services.store.projects.update_project(project.id, values)
    user = await auth.authenticate(request)
    await services.store.audit.record("project.settings.updated", actor=user.login if user else None,
                                      project_id=project.id, installation_id=project.installation_id,
                                      details={"changed": changed})
    services.bus.publish("project.status.updated", project_id=project.id, change="settings")
    raise web.HTTPSeeOther(f"/projects/{project.name}/settings?saved=1")


# ---- secrets -------------------------------------------------------------------------------------------

async def save_secret(request: web.Request) -> web.Response:
    services = services_of(request)
    project = await _managed_project(request)
    form = await request.post()
    name, value = str(form.get("name", "")).strip(), str(form.get("value", ""))
    problems = []
    if not SECRET_NAME.fullmatch(name):
        problems.append(f"Secret name {name!r} must be capital letters, digits and _, not starting with a digit")
    if len(value.encode()) > MAX_SECRET_BYTES:
        problems.append(f"Secret value is larger than {MAX_SECRET_BYTES // 1024} KiB")
    if not problems:
        try:
            replaced = name in {n for n, _ in await services.store.projects.secret_names(project.id)}
            await services.store.projects.set_secret(project.id, name, value)
        except InvalidSecret as exc:
            problems.append(str(exc))
    if problems:
        return await _settings_view(request, project, await read_repo_file(services, project), status=400,
                                    problems=problems)
    user = await auth.authenticate(request)
    await services.store.audit.record("project.secret.replaced" if replaced else "project.secret.added",
                                      actor=user.login if user else None, project_id=project.id,
                                      installation_id=project.installation_id, details={"name": name})
    raise web.HTTPSeeOther(f"/projects/{project.name}/settings?saved=1#secrets")


async def confirm_delete_secret(request: web.Request) -> web.Response:
    """The question before a secret is deleted (the settings page's Delete links here)."""
    project = await _managed_project(request)
    name = request.match_info["name"]
    if name not in {n for n, _ in await services_of(request).store.projects.secret_names(project.id)}:
        raise web.HTTPNotFound(text="no such secret")
    return await render(request, "secret_delete.html", project=project, secret=name)


async def delete_secret(request: web.Request) -> web.Response:
    services = services_of(request)
    project = await _managed_project(request)
    name = request.match_info["name"]
    if await services.store.projects.delete_secret(project.id, name):
        user = await auth.authenticate(request)
        await services.store.audit.record("project.secret.deleted", actor=user.login if user else None,
                                          project_id=project.id, installation_id=project.installation_id,
                                          details={"name": name})
    raise web.HTTPSeeOther(f"/projects/{project.name}/settings?saved=1#secrets")
