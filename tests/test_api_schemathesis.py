"""Schemathesis (its CLI, `schemathesis run`) against the JSON API as the test fixtures serve it on
127.0.0.1, from the document the app serves (`GET /api/v1/openapi.json`), with every check: no 5xx; only
documented statuses, content types, headers and bodies; schema-valid requests accepted and invalid ones
refused; 405 with `Allow` for methods a path does not have. The subprocess makes its calls while the
test's event loop serves them.

Path ids are either generated (mostly unknown ids: the 404s) or the seeded project's and validation's
(`[[operations]] parameters`), so that cases reach the handlers. The default run is bounded (coverage
and fuzzing phases, a few examples per operation: about 10 s); the slow-marked one runs every phase,
stateful sequences included, with more examples, both ways."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.api_support import api_token_for
from tests.pull_requests import open_pull_request, record_project, seed_validation

SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")


async def served_api(start_bot: Any, fake_github: Any) -> tuple[Any, str, dict[str, str]]:
    """The bot, an admin's API token, and the real ids per path prefix."""
    # Rate limits off and GitHub's writes unpaced: schemathesis is one client retrying validations fast.
    bot = await start_bot(API_REQUESTS_PER_MINUTE="0", GITHUB_WRITES_PER_MINUTE="100000",
                          GITHUB_WRITES_PER_HOUR="100000")
    scenario = open_pull_request(fake_github, config="validate:\n  - test -f app.py\n")
    project = await record_project(bot.store, scenario)
    token = await api_token_for(bot.store, fake_github, "alice", role="admin")
    validation = await seed_validation(bot.store, scenario, conclusion="success")
    await bot.services.worker.stop()  # runs and validations the calls start stay queued
    return bot, token, {"/api/v1/projects/": project.id, "/api/v1/validation/": validation.id}


def config(tmp_path: Path, ids: dict[str, str]) -> Path:
    """schemathesis.toml: each path's `id` fixed to the real one of its kind."""
    lines = []
    for prefix, value in ids.items():
        lines += ["[[operations]]", f"include-path-regex = {json.dumps('^' + prefix)}",
                  f"parameters = {{ \"path.id\" = {json.dumps(value)} }}", ""]
    path = tmp_path / "schemathesis.toml"
    path.write_text("\n".join(lines))
    return path


async def schemathesis_run(bot: Any, token: str, tmp_path: Path, *options: str,
                           config_file: Path | None = None) -> tuple[int, str]:
    if not SCHEMATHESIS.exists():
        pytest.skip(f"{SCHEMATHESIS} is missing: pip install -e '.[dev]'")
    before = ["--config-file", str(config_file)] if config_file is not None else []
    process = await asyncio.create_subprocess_exec(
        str(SCHEMATHESIS), *before, "run", f"{bot.url}/api/v1/openapi.json", "--url", bot.url,
        "--header", f"Authorization: Bearer {token}", "--checks", "all", "--seed", "1", "--workers", "1",
        "--no-color", "--generation-database", "none", "--output-truncate", "false", *options,
        cwd=tmp_path, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    output, _ = await asyncio.wait_for(process.communicate(), timeout=600)
    return process.returncode or 0, output.decode(errors="replace").replace(token, "[token]")


async def test_the_api_keeps_to_its_openapi_document(start_bot, fake_github, tmp_path) -> None:
    bot, token, ids = await served_api(start_bot, fake_github)
    code, output = await schemathesis_run(bot, token, tmp_path, "--phases", "coverage,fuzzing",
                                          "--max-examples", "5", config_file=config(tmp_path, ids))
    assert code == 0, output
    fake_github.take_errors()  # check runs of retried validations on random PRs: GitHub refuses them


@pytest.mark.slow
async def test_the_api_keeps_to_its_openapi_document_at_length(start_bot, fake_github, tmp_path) -> None:
    bot, token, ids = await served_api(start_bot, fake_github)
    for config_file in (config(tmp_path, ids), None):
        code, output = await schemathesis_run(bot, token, tmp_path, "--max-examples", "30",
                                              config_file=config_file)
        assert code == 0, output
    fake_github.take_errors()
