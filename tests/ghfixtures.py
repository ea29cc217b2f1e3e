"""Where the GitHub fixture data (webhook examples, REST description) lives.

The data is never copied into the project. It is read from ``../shared/fixtures/github``
(next to the project root, as on the dev machines and in CI) or, in a clone without
``../shared``, from ``.cache/github-fixtures`` built by ``tools/fetch_github_fixtures.py``.
Tests that need it call :func:`require_fixtures` (or a helper that does), which skips with a
reason when neither exists. This module does not import pytest at import time, so tools can use it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED_DIR = PROJECT_ROOT.parent / "shared" / "fixtures" / "github"
CACHE_DIR = PROJECT_ROOT / ".cache" / "github-fixtures"
SKIP_REASON = (
    "GitHub fixtures not found: no ../shared/fixtures/github and no .cache/github-fixtures "
    "(run tools/fetch_github_fixtures.py)"
)

# The REST operations the bot uses: exactly `info.x-subset.operations` of rest-api-subset.json.
# FakeGitHub routes by this list when no REST description is available.
# tools/fetch_github_fixtures.py uses it too.
REST_OPERATIONS: tuple[str, ...] = (
    "GET /app",
    "POST /app/installations/{installation_id}/access_tokens",
    "GET /app/installations",
    "GET /app/installations/{installation_id}",
    "GET /app/hook/deliveries",
    "GET /app/hook/deliveries/{delivery_id}",
    "POST /app/hook/deliveries/{delivery_id}/attempts",
    "GET /installation/repositories",
    "GET /user",
    "GET /user/installations",
    "GET /user/installations/{installation_id}/repositories",
    "GET /repos/{owner}/{repo}",
    "GET /repos/{owner}/{repo}/pulls/{pull_number}",
    "GET /repos/{owner}/{repo}/pulls",
    "GET /repos/{owner}/{repo}/pulls/{pull_number}/files",
    "PUT /repos/{owner}/{repo}/pulls/{pull_number}/merge",
    "PUT /repos/{owner}/{repo}/pulls/{pull_number}/update-branch",
    "POST /repos/{owner}/{repo}/check-runs",
    "PATCH /repos/{owner}/{repo}/check-runs/{check_run_id}",
    "GET /repos/{owner}/{repo}/check-runs/{check_run_id}",
    "GET /repos/{owner}/{repo}/commits/{ref}/check-runs",
    "POST /repos/{owner}/{repo}/check-suites",
    "POST /repos/{owner}/{repo}/check-suites/{check_suite_id}/rerequest",
    "POST /repos/{owner}/{repo}/issues/{issue_number}/comments",
    "PATCH /repos/{owner}/{repo}/issues/comments/{comment_id}",
    "GET /repos/{owner}/{repo}/issues/{issue_number}/comments",
    "POST /repos/{owner}/{repo}/issues/comments/{comment_id}/reactions",
    "GET /repos/{owner}/{repo}/collaborators/{username}/permission",
    "GET /repos/{owner}/{repo}/contents/{path}",
    "POST /repos/{owner}/{repo}/statuses/{sha}",
    "GET /repos/{owner}/{repo}/branches/{branch}/protection",
    "POST /repos/{owner}/{repo}/hooks",
    "GET /repos/{owner}/{repo}/hooks",
    "GET /rate_limit",
    "POST /repos/{owner}/{repo}/pulls",
    "PATCH /repos/{owner}/{repo}/pulls/{pull_number}",
    "GET /repos/{owner}/{repo}/pulls/{pull_number}/commits",
    "POST /app-manifests/{code}/conversions",
    "DELETE /repos/{owner}/{repo}/git/refs/{ref}",
    "GET /repos/{owner}/{repo}/git/ref/{ref}",
    "GET /repos/{owner}/{repo}/compare/{basehead}",
    "POST /repos/{owner}/{repo}/issues/{issue_number}/labels",
    "DELETE /repos/{owner}/{repo}/issues/{issue_number}/labels/{name}",
    "DELETE /repos/{owner}/{repo}/issues/comments/{comment_id}",
    "GET /repos/{owner}/{repo}/commits/{ref}/status",
    "GET /repos/{owner}/{repo}/commits/{ref}/check-suites",
    "GET /repos/{owner}/{repo}/check-suites/{check_suite_id}",
    "GET /repos/{owner}/{repo}/installation",
    "GET /repos/{owner}/{repo}/branches/{branch}",
    "POST /repos/{owner}/{repo}/git/refs",
    "PATCH /repos/{owner}/{repo}/git/refs/{ref}",
    "POST /repos/{owner}/{repo}/merges",
    "GET /repos/{owner}/{repo}/git/commits/{commit_sha}",
    "GET /repos/{owner}/{repo}/pulls/{pull_number}/reviews",
    "GET /meta",
)


def fixtures_dir() -> Path | None:
    """The fixture directory: ../shared first, then the local cache; None when neither exists."""
    for candidate in (SHARED_DIR, CACHE_DIR):
        if candidate.is_dir():
            return candidate
    return None


def require_fixtures() -> Path:
    """The fixture directory, or skip the calling test with a reason."""
    found = fixtures_dir()
    if found is None:
        import pytest

        pytest.skip(SKIP_REASON)
    return found


def _examples(subdir: str, suffix: str) -> list[tuple[str, str, Path]]:
    root = fixtures_dir()
    if root is None or not (root / subdir).is_dir():
        return []
    return sorted(
        (path.parent.name, path.name.removesuffix(suffix), path) for path in (root / subdir).glob(f"*/*{suffix}")
    )


def webhook_examples() -> list[tuple[str, str, Path]]:
    """``(event, name, path)`` for every ``webhooks/<event>/<name>.json``, sorted.

    Empty (not a skip) when there are no fixtures, so it can feed ``pytest.mark.parametrize``
    at collection time: pytest then reports the test as skipped for an empty parameter set.
    """
    return _examples("webhooks", ".json")


def form_encoded_examples() -> list[tuple[str, str, Path]]:
    """``(event, name, path)`` for every raw ``webhooks-form-encoded/<event>/<name>.txt`` body."""
    return _examples("webhooks-form-encoded", ".txt")


def load_webhook(event: str, name: str = "payload") -> dict[str, Any]:
    """The payload of ``webhooks/<event>/<name>.json``; ``name`` is the action, e.g. ``"opened"``
    or ``"opened.2"``, or ``"payload"`` for actionless events. Skips when there are no fixtures."""
    path = require_fixtures() / "webhooks" / event / f"{name}.json"
    if not path.is_file():
        raise FileNotFoundError(f"no webhook example {event}/{name}.json in {path.parent}")
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def find_rest_spec() -> Path | None:
    """rest-api-subset.json if there are fixtures, else None (no skip)."""
    root = fixtures_dir()
    if root is None or not (root / "rest-api-subset.json").is_file():
        return None
    return root / "rest-api-subset.json"


def rest_spec_path() -> Path:
    """rest-api-subset.json: GitHub's OpenAPI description of the operations the bot uses.
    Skips when there are no fixtures."""
    path = require_fixtures() / "rest-api-subset.json"
    if not path.is_file():
        import pytest

        pytest.skip(f"{path} is missing (rebuild with tools/fetch_github_fixtures.py --force)")
    return path
