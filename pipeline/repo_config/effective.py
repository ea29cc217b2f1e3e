"""What a run uses: the repository's `.github/codegenapp.yml` (a `RepoConfig`, parsed in parse.py) merged,
key by key, with the project's dashboard settings (`ProjectSettings`). Pure.

Precedence (per key)
--------------------

1. `/auto-merge on` or `/auto-merge off` commented on the pull request (auto-merge only);
2. the repository's `.github/codegenapp.yml` (read from the base branch);
3. the project's settings in the dashboard;
4. the defaults (the table in parse.py).

A key set in the file wins even when set to an empty list (`setup: []` runs no setup, even if the
dashboard has setup commands). `env` is merged per variable: the dashboard's variables, then the file's
(the file wins for a name set in both). `merge_queue` is merged per sub-key: file, then project, then
default (`merge_queue: {batch_size: 4}` leaves `enabled` to the project). Dashboard values that equal the
default (no commands, auto-merge off, no timeout) count as "not set". `EffectiveConfig.sources` says
where each key came from: "pull_request", "repository", "project" or "default" (and `env.NAME` for each
variable, `merge_queue.KEY` for each of the queue's sub-keys).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pipeline.repo_config.merge_queue_block import QUEUE_KEYS, MergeQueueKeys, MergeQueueSettings
from pipeline.repo_config.parse import ProjectSettings, RepoConfig
from pipeline.repo_config.steps import AnalysisStep, Step, name_steps
from pipeline.repo_config.ui_block import UiConfig

DEFAULT_TIMEOUT_MINUTES = 30
DEFAULT_MERGE_METHOD = "merge"


@dataclass(frozen=True)
class EffectiveConfig:
    """What a run uses, after precedence; `sources[key]` is where each value came from."""

    setup: tuple[str, ...] = ()
    validate: tuple[Step, ...] = ()
    analysis: tuple[AnalysisStep, ...] = ()
    timeout_minutes: int = DEFAULT_TIMEOUT_MINUTES
    auto_merge: bool = False
    merge_method: str = DEFAULT_MERGE_METHOD
    cache_key: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    setup_network: bool = True
    delete_branch_after_merge: bool = False
    merge_queue: MergeQueueSettings = MergeQueueSettings()
    ui: UiConfig | None = None
    sources: dict[str, str] = field(default_factory=dict)


def effective_config(repo: RepoConfig | None, project: ProjectSettings, *,
                     pr_auto_merge: bool | None = None) -> EffectiveConfig:
    """Merge per key: pull request command (auto-merge only) > repository file > dashboard > default."""
    repo = repo or RepoConfig()
    sources: dict[str, str] = {}

    def pick(key: str, from_repo: Any, from_project: Any, default: Any) -> Any:
        if from_repo is not None:
            sources[key] = "repository"
            return from_repo
        if from_project is not None:
            sources[key] = "project"
            return from_project
        sources[key] = "default"
        return default

    setup = pick("setup", repo.setup, project.setup_commands or None, ())
    project_steps = name_steps([(None, c) for c in project.validate_commands]) or None
    validate = pick("validate", repo.validate, project_steps, ())
    analysis = pick("analysis", repo.analysis, None, ())
    timeout = pick("timeout_minutes", repo.timeout_minutes, project.timeout_minutes, DEFAULT_TIMEOUT_MINUTES)
    if pr_auto_merge is not None:
        sources["auto_merge"] = "pull_request"
        auto_merge = pr_auto_merge
    else:
        auto_merge = pick("auto_merge", repo.auto_merge, True if project.auto_merge_enabled else None, False)
    merge_method = pick("merge_method", repo.merge_method, None, DEFAULT_MERGE_METHOD)
    cache_key = pick("cache_key", repo.cache_key, None, ())
    setup_network = pick("setup_network", repo.setup_network, None, True)
    delete_branch = pick("delete_branch_after_merge", repo.delete_branch_after_merge, None, False)
    ui = pick("ui", repo.ui, None, None)
    from_file, defaults = repo.merge_queue or MergeQueueKeys(), MergeQueueSettings()
    merge_queue = MergeQueueSettings(**{
        name: pick(f"merge_queue.{name}", getattr(from_file, name), getattr(project.merge_queue, name),
                   getattr(defaults, name))
        for name in QUEUE_KEYS})
    env, env_sources = _merge_env(repo.env, project.env)
    sources["env"] = "repository" if repo.env is not None else "project" if project.env else "default"
    sources.update(env_sources)
    return EffectiveConfig(setup=setup, validate=validate, analysis=analysis, timeout_minutes=timeout,
                           auto_merge=auto_merge, merge_method=merge_method, cache_key=cache_key, env=env,
                           setup_network=setup_network, delete_branch_after_merge=delete_branch,
                           merge_queue=merge_queue, ui=ui, sources=sources)


def _merge_env(repo: Mapping[str, str] | None,
               project: Mapping[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    env: dict[str, str] = {}
    sources: dict[str, str] = {}
    for origin, values in (("project", project), ("repository", repo or {})):
        for name, value in values.items():
            env[name] = value
            sources[f"env.{name}"] = origin
    return env, sources
