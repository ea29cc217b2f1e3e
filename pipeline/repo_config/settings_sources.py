"""What the settings page shows: for each key, the value a run uses and where it comes from (the
repository's `.github/codegenapp.yml`, the project's setting in the dashboard, or the default). Pure.

The keys the file and the dashboard share (setup, validate, auto-merge) are resolved by
`effective_config` itself, with the project's settings built by `project_settings_of`, the same
function a validation and a merge use (reading.py), so the page shows exactly what a validation would
use. The dashboard-only keys (rules, planning, agents) come from the project, or are the default when
the stored value is the default. The merge queue's sub-keys (`merge_queue.KEY`) are resolved by
`effective_config` too, sub-key by sub-key: the file, then the project's `merge_queue` (Project.merge_queue),
then the default. The file-only keys (timeout, analysis, ...) come from the file or are the default.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pipeline.repo_config.effective import EffectiveConfig, effective_config
from pipeline.repo_config.merge_queue_block import QUEUE_KEYS, MergeQueueKeys
from pipeline.repo_config.parse import ProjectSettings, RepoConfig

FILE = "file"
PROJECT = "project"
DEFAULT = "default"
_SOURCE_OF_EFFECTIVE = {"repository": FILE, "project": PROJECT, "default": DEFAULT}

# The dashboard's settings (Project columns) and their defaults (the model's column defaults).
PROJECT_DEFAULTS: Mapping[str, Any] = {
    "setup_commands": (), "validate_commands": (), "repository_rules": "", "auto_merge_enabled": False,
    "auto_confirm_plans": False, "planning_statement": "", "agent_backend": None, "agent_command": "",
    "max_fix_attempts": 3,
}
# A dashboard setting the file can set too -> the file's key
FILE_KEY_OF: Mapping[str, str] = {"setup_commands": "setup", "validate_commands": "validate",
                                  "auto_merge_enabled": "auto_merge"}
# The merge queue's sub-keys: the file sets them, or the project's `merge_queue` object does
QUEUE_SETTING_KEYS = tuple(f"merge_queue.{name}" for name in QUEUE_KEYS)
# Keys only the file sets (shown read-only on the page, for the whole picture)
FILE_ONLY_KEYS = ("timeout_minutes", "merge_method", "delete_branch_after_merge", "setup_network", "analysis",
                  "cache_key", "env", "ui")


@dataclass(frozen=True)
class Resolved:
    """A key's value as a run uses it, and its source: FILE, PROJECT or DEFAULT."""

    value: Any
    source: str

    @property
    def from_file(self) -> bool:
        return self.source == FILE


def project_settings_of(stored: Mapping[str, Any]) -> ProjectSettings:
    """The dashboard settings a validation and a merge merge with the file (`stored`: Project columns)."""
    return ProjectSettings(setup_commands=tuple(stored.get("setup_commands") or ()),
                           validate_commands=tuple(stored.get("validate_commands") or ()),
                           auto_merge_enabled=bool(stored.get("auto_merge_enabled")),
                           merge_queue=queue_keys_of(stored.get("merge_queue")))


def queue_keys_of(stored: Any) -> MergeQueueKeys:
    """The project's `merge_queue` settings (Project.merge_queue: a JSON object, or None); a value out of
    bounds (stored before a bound changed) is not set."""
    if not isinstance(stored, Mapping):
        return MergeQueueKeys()
    try:
        return MergeQueueKeys(**{key: stored[key] for key in QUEUE_KEYS if stored.get(key) is not None})
    except (TypeError, ValueError):
        return MergeQueueKeys()


def resolve_settings(file: RepoConfig | None, stored: Mapping[str, Any],
                     defaults: Mapping[str, Any] = PROJECT_DEFAULTS) -> dict[str, Resolved]:
    """Every key of PROJECT_DEFAULTS, QUEUE_SETTING_KEYS and FILE_ONLY_KEYS -> its Resolved. `file`: the
    parsed file (None: no file, or it could not be read); `stored`: the project's settings as stored."""
    effective = effective_config(file, project_settings_of(stored))
    resolved: dict[str, Resolved] = {}
    for key, default in defaults.items():
        if key in FILE_KEY_OF:
            file_key = FILE_KEY_OF[key]
            resolved[key] = Resolved(getattr(effective, file_key), _SOURCE_OF_EFFECTIVE[effective.sources[file_key]])
        else:
            value = stored.get(key, default)
            resolved[key] = Resolved(default, DEFAULT) if value == default or value is None \
                else Resolved(value, PROJECT)
    for key in (*QUEUE_SETTING_KEYS, *FILE_ONLY_KEYS):
        resolved[key] = Resolved(_effective_value(effective, key), _SOURCE_OF_EFFECTIVE[effective.sources[key]])
    return resolved


def _effective_value(effective: EffectiveConfig, key: str) -> Any:
    """`key` of the effective config; a dotted key is a block's sub-key (`merge_queue.batch_size`)."""
    value: Any = effective
    for name in key.split("."):
        value = getattr(value, name)
    return value
