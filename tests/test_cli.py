"""The `codegenapp` command, run as a real process."""

import json
import os
import subprocess
from pathlib import Path

import aiohttp
import pytest

from bot.config import load_settings
from bot.crypto import Crypto
from bot.db import Database
from bot.store import InstallationRef, RepoRef, Store
from tests.cli_support import ServedApp, cli_env, codegenapp
from tests.sandbox_support import needs_bwrap


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return cli_env(tmp_path)


async def add_project(env: dict[str, str], full_name: str) -> None:
    settings = load_settings(env, dotenv_path=None)
    store = Store(Database(settings.database_url), Crypto(settings.encryption_key))
    try:
        await store.projects.upsert_installation(InstallationRef(id=1, account_login=full_name.split("/")[0]))
        await store.projects.upsert_projects(1, [RepoRef(77, full_name)])
    finally:
        await store.close()


async def test_migrate_then_projects_and_secrets(env: dict[str, str]) -> None:
    migrated = codegenapp("migrate", env=env)
    assert migrated.returncode == 0, migrated.stderr
    assert migrated.stdout.startswith("schema at ")
    assert "no projects yet" in codegenapp("projects", "list", env=env).stdout

    await add_project(env, "octo/widgets")
    listing = codegenapp("projects", "list", env=env)
    assert "octo/widgets" in listing.stdout and "active" in listing.stdout

    stored = codegenapp("secrets", "set", "octo/widgets", "API_TOKEN", env=env, stdin="s3cret-value\n")
    assert stored.returncode == 0, stored.stderr
    assert "s3cret-value" not in stored.stdout + stored.stderr
    settings = load_settings(env, dotenv_path=None)
    store = Store(Database(settings.database_url), Crypto(settings.encryption_key))
    try:
        project = await store.projects.get_project_by_name("octo/widgets")
        assert await store.projects.secret_values(project.id) == {"API_TOKEN": "s3cret-value"}  # one newline stripped
    finally:
        await store.close()

    bad_name = codegenapp("secrets", "set", "octo/widgets", "lower-case", env=env, stdin="x")
    assert bad_name.returncode == 1 and "must match [A-Z_][A-Z0-9_]*" in bad_name.stderr
    unknown = codegenapp("secrets", "set", "octo/nothing", "A", env=env, stdin="x")
    assert unknown.returncode == 1 and "no project for octo/nothing" in unknown.stderr


def test_bad_configuration_is_explained_and_nothing_starts(env: dict[str, str]) -> None:
    result = codegenapp("serve", env={**env, "PRIVATE_KEY": "nope", "APP_ID": "x", "PORT": "0"})
    assert result.returncode == 2
    assert "PRIVATE_KEY is not a PEM RSA private key" in result.stderr
    assert "APP_ID must be the App's numeric id, got 'x'" in result.stderr
    assert "PORT must be between 1 and 65535, got 0" in result.stderr


@pytest.mark.slow
async def test_serve_starts_without_an_app_and_stops_on_sigterm(env: dict[str, str]) -> None:
    app = await ServedApp(env).start(timeout=20)
    try:
        async with aiohttp.ClientSession() as session:
            async with session.post(f"{app.url}/api/v1/webhooks/github", data=b"{}") as response:
                assert response.status == 503
            async with session.get(f"{app.url}/health") as response:
                assert (await response.json())["app_configured"] is False
    finally:
        assert await app.terminate() == 0


def _git(path: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=path, check=True, capture_output=True,
                   env={"PATH": os.environ["PATH"], "GIT_AUTHOR_NAME": "a", "GIT_AUTHOR_EMAIL": "a@b",
                        "GIT_COMMITTER_NAME": "a", "GIT_COMMITTER_EMAIL": "a@b", "HOME": str(path)})


def _local_repo(path: Path, config: str, files: dict[str, str]) -> Path:
    path.mkdir()
    _git(path, "init", "-q")
    (path / ".github").mkdir()
    (path / ".github" / "codegenapp.yml").write_text(config)
    for name, content in files.items():
        (path / name).write_text(content)
    _git(path, "add", "-A")
    _git(path, "commit", "-qm", "init")
    return path


@needs_bwrap
def test_validate_a_local_checkout(tmp_path: Path, env: dict[str, str]) -> None:
    repo = _local_repo(tmp_path / "repo", "validate:\n  - test -f app.py\n  - name: style\n"
                                          "    run: \"echo 'E501 line too long'; exit 3\"\n", {"app.py": "x = 1\n"})
    result = codegenapp("validate", str(repo), env=env)
    assert result.returncode == 1, result.stderr
    assert result.stdout.startswith("style failed")
    assert "E501 line too long" in result.stdout
    (repo / "ok.yml").write_text("validate:\n  - test -f app.py\n")
    passing = codegenapp("validate", str(repo), "--config", str(repo / "ok.yml"), env=env)
    assert passing.returncode == 0 and "passed" in passing.stdout.splitlines()[0].lower()
    assert not (Path(env["DATA_DIR"])).exists()  # no App, no database, nothing written


def test_validate_refuses_without_a_config(tmp_path: Path, env: dict[str, str]) -> None:
    repo = tmp_path / "bare"
    _local_repo(repo, "validate: []\n", {})
    (repo / ".github" / "codegenapp.yml").unlink()
    subprocess.run(["git", "commit", "-qam", "drop"], cwd=repo, check=True, capture_output=True,
                   env={"PATH": os.environ["PATH"], "GIT_AUTHOR_NAME": "a", "GIT_AUTHOR_EMAIL": "a@b",
                        "GIT_COMMITTER_NAME": "a", "GIT_COMMITTER_EMAIL": "a@b"})
    result = codegenapp("validate", str(repo), env=env)
    assert result.returncode == 2 and "pass --config FILE" in result.stderr


def test_an_invalid_config_means_the_command_could_not_run(tmp_path: Path, env: dict[str, str]) -> None:
    repo = _local_repo(tmp_path / "repo", "validate:\n  - true\ntimeout_minutes: ten\n", {})
    result = codegenapp("validate", str(repo), env=env)
    assert result.returncode == 2 and result.stdout == ""
    assert "invalid configuration: .github/codegenapp.yml line 3" in result.stderr and "ten" in result.stderr


def _sarif(*findings: tuple[int, str]) -> str:
    results = [{"ruleId": "W1", "level": "warning", "message": {"text": text}, "locations": [
        {"physicalLocation": {"artifactLocation": {"uri": "app.py"}, "region": {"startLine": line}}}]}
        for line, text in findings]
    return json.dumps({"version": "2.1.0", "runs": [{"tool": {"driver": {"name": "lint"}}, "results": results}]})


SNAPSHOT_CONFIG = ("setup:\n  - mkdir -p .venv && touch .venv/ready\nvalidate:\n  - test -f .venv/ready\n"
                   "analysis:\n  - cat report.sarif\n")


@needs_bwrap
def test_validate_snapshots_per_user_annotates_changes_since_base_and_says_what_it_validates(
        tmp_path: Path, env: dict[str, str]) -> None:
    repo = _local_repo(tmp_path / "repo", SNAPSHOT_CONFIG,
                       {"app.py": "x = 1\n", "report.sarif": _sarif((1, "on an old line"), (2, "on a new line"))})
    first = codegenapp("validate", str(repo), env=env)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "with the .github/codegenapp.yml of that commit" in first.stderr and "uncommitted" not in first.stderr
    assert "setup saved as a snapshot" in first.stdout
    assert "app.py:1: warning: on an old line" in first.stdout and "app.py:2: warning: on a new line" in first.stdout
    assert list((tmp_path / "cache/codegenapp/snapshots").glob("??/*.json"))

    (repo / "app.py").write_text("x = 1\ny = 2\n")
    _git(repo, "commit", "-qam", "line 2")
    (repo / "app.py").write_text("uncommitted\n")
    second = codegenapp("validate", str(repo), "--base", "HEAD~1", env=env)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "| setup | `snapshot` | ✓ restored" in second.stdout
    assert "app.py:2: warning: on a new line" in second.stdout and "on an old line" not in second.stdout
    assert "uncommitted changes: they are not validated, only HEAD is" in second.stderr

    cold = codegenapp("validate", str(repo), "--no-snapshots", env=env)
    assert cold.returncode == 0 and "snapshot" not in cold.stdout


@needs_bwrap
def test_validate_works_with_tmpdir_on_another_file_system(tmp_path: Path, env: dict[str, str]) -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    repo = _local_repo(tmp_path / "repo", "validate:\n  - test -f app.py\n", {"app.py": "x = 1\n"})
    tmpdir = tmp_path / "tmpfs"
    tmpdir.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(tmpdir)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        assert os.stat(tmpdir).st_dev != os.stat(repo).st_dev
        result = codegenapp("validate", str(repo), env={**env, "TMPDIR": str(tmpdir)})
        assert result.returncode == 0, result.stderr
        assert os.listdir(tmpdir) == []  # the temporary checkout is gone
    finally:
        subprocess.run(["umount", str(tmpdir)], check=True)


def test_settle_heap_freezes_what_start_up_built_and_collects_young_objects_less_often() -> None:
    import gc

    from bot.cli import GC_YOUNG_THRESHOLD, settle_heap

    threshold = gc.get_threshold()
    try:
        settle_heap()
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold()[0] == GC_YOUNG_THRESHOLD > threshold[0]
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)
