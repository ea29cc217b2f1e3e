"""What the ingest benchmarks share: the recording fake GitHub with its installations, the signed
`pull_request.opened` deliveries sent to the app, and when each one's `in_progress` check run arrived.

Each delivery is a pull request of its own (a new head sha), which the fake knows: its validation finds
no config and ends neutral, without a checkout.
"""

from __future__ import annotations

import copy
import json
import sys
from collections.abc import Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.rawload import build_request  # noqa: E402
from bot.config import WEBHOOK_PATH  # noqa: E402
from tests.fakes.fixtures import generate_private_key_pem  # noqa: E402
from tests.fakes.github import FakeGitHub  # noqa: E402
from tests.ghfixtures import fixtures_dir  # noqa: E402
from tests.webhook_sender import github_headers  # noqa: E402

SECRET = "bench-webhook-secret"
APP_ID = 12345

Repository = tuple[int, str, int]  # installation id, full name, repository id


def base_payload() -> dict:
    directory = fixtures_dir()
    if directory is not None:
        return json.loads((directory / "webhooks" / "pull_request" / "opened.json").read_text())
    return {"action": "opened", "number": 1,
            "pull_request": {"number": 1, "head": {"sha": "0" * 40, "ref": "feature"},
                             "base": {"sha": "1" * 40, "ref": "main"}, "draft": False, "state": "open"},
            "repository": {"id": 1, "full_name": "octo/repo", "name": "repo", "owner": {"login": "octo"}},
            "sender": {"login": "octocat", "id": 1}}


async def start_fake(installations: int) -> tuple[FakeGitHub, str, list[Repository]]:
    """The fake GitHub, started, with `installations` installations of one repository each; and the
    App's private key."""
    key = generate_private_key_pem()
    fake = FakeGitHub(app_id=APP_ID, private_key_pem=key, validate_bodies=False)  # the tests check bodies
    await fake.start()
    repos = []
    for i in range(installations):
        full_name = f"org{i}/repo{i}"
        fake.add_installation(1000 + i, f"org{i}", repos=[full_name])
        repos.append((1000 + i, full_name, 500 + i))
    return fake, key, repos


def signed_deliveries(fake: FakeGitHub, repos: list[Repository], n: int, host: str,
                      first: int = 0) -> list[tuple[str, bytes]]:
    """`n` signed HTTP requests, round-robin over `repos`, each keyed by its head sha (`f"{i:040x}"`, i from
    `first`: a later batch to the same fake starts where the previous one ended)."""
    template = base_payload()
    requests = []
    for i in range(first, first + n):
        installation_id, full_name, repo_id = repos[i % len(repos)]
        payload = copy.deepcopy(template)
        payload["installation"] = {"id": installation_id, "node_id": "x"}
        payload["repository"].update(id=repo_id, full_name=full_name, name=full_name.split("/")[1])
        payload["repository"]["owner"]["login"] = full_name.split("/")[0]
        sha = f"{i:040x}"
        number = i + 1  # a PR of its own, which the fake knows: its validation finds nothing
        payload["number"] = number  # configured and ends neutral, without a checkout
        payload["pull_request"].update(number=number, state="open", draft=False)
        payload["pull_request"]["head"]["sha"] = sha
        payload["pull_request"]["head"]["repo"] = payload["pull_request"]["base"]["repo"] = {
            "id": repo_id, "full_name": full_name}
        fake.add_pull(full_name, number, head_sha=sha, base_sha="f" * 40)
        body = json.dumps(payload).encode()
        headers = github_headers("pull_request", body, secret=SECRET, payload=payload)
        requests.append((sha, build_request(host, WEBHOOK_PATH, headers, body)))
    return requests


def check_run_arrivals(calls: Iterable) -> dict[str, float]:
    """Head sha → when the fake received the first check run created for it (the `in_progress` one)."""
    first_call: dict[str, float] = {}
    for call in calls:
        if call.method == "POST" and call.path.endswith("/check-runs") and isinstance(call.json, dict):
            first_call.setdefault(call.json.get("head_sha", ""), call.at)
    return first_call
