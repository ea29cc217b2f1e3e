"""Where a repository's config comes from: `.github/codegenapp.yml` at a commit, through the GitHub
layer, and the project's dashboard settings it is merged with."""

from __future__ import annotations

from bot.github.github_app import RepoGitHub
from bot.github.repos import NotAFile
from bot.models import Project
from pipeline.repo_config.parse import ConfigFileError, ProjectSettings, RepoConfig, parse_repo_config

CONFIG_PATH = ".github/codegenapp.yml"


async def read_repo_config(repo: RepoGitHub, ref: str) -> RepoConfig | None:
    """The repository's config file at `ref` (None when there is none); ConfigFileError when invalid."""
    try:
        text = await repo.repos.file_text(CONFIG_PATH, ref)
    except NotAFile:
        raise ConfigFileError(f"{CONFIG_PATH} is not a file", None, None) from None
    return None if text is None else parse_repo_config(text, path=CONFIG_PATH)


def project_settings(project: Project) -> ProjectSettings:
    return ProjectSettings(setup_commands=tuple(project.setup_commands or ()),
                           validate_commands=tuple(project.validate_commands or ()),
                           auto_merge_enabled=project.auto_merge_enabled)
