"""Where a repository's config comes from: `.github/codegenapp.yml` at a commit (or at the head of the
default branch, for the settings page), through the GitHub layer, and the project's dashboard settings
it is merged with."""

from __future__ import annotations

from bot.github.github_app import RepoGitHub
from bot.github.repos import NotAFile
from bot.models import Project
from pipeline.repo_config.parse import ConfigFileError, ProjectSettings, RepoConfig, parse_repo_config
from pipeline.repo_config.settings_sources import PROJECT_DEFAULTS, project_settings_of

CONFIG_PATH = ".github/codegenapp.yml"


async def read_repo_config(repo: RepoGitHub, ref: str | None) -> RepoConfig | None:
    """The repository's config file at `ref` (None: the default branch's head); None when there is
    none; ConfigFileError when invalid."""
    try:
        text = await repo.repos.file_text(CONFIG_PATH, ref)
    except NotAFile:
        raise ConfigFileError(f"{CONFIG_PATH} is not a file", None, None) from None
    return None if text is None else parse_repo_config(text, path=CONFIG_PATH)


def stored_settings(project: Project) -> dict[str, object]:
    """The project's dashboard settings as stored, by key (PROJECT_DEFAULTS' keys)."""
    return {**{key: getattr(project, key) for key in PROJECT_DEFAULTS}, "merge_queue": project.merge_queue}


def project_settings(project: Project) -> ProjectSettings:
    return project_settings_of(stored_settings(project))
