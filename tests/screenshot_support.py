"""A project and validations whose UI check stored screenshots on disk, aged as a test needs (the
screenshot prune's tests: tests/test_screenshot_retention.py, tests/test_health_workers.py)."""

from __future__ import annotations

import uuid
from datetime import timedelta
from pathlib import Path

from sqlalchemy import update

from bot.models import ValidationState, utcnow
from bot.store import InstallationRef, RepoRef, Store
from pipeline.ui_check.screenshots import screenshots_dir


async def seed_project(store: Store) -> str:
    await store.projects.upsert_installation(InstallationRef(id=1, account_login="acme"))
    await store.projects.upsert_projects(1, [RepoRef(10, "acme/widgets")])
    return (await store.projects.get_project_by_name("acme/widgets")).id


async def validation_with_screenshots(store: Store, data_dir: Path, project_id: str, *, days_ago: float,
                                      pages: int = 2) -> tuple[str, list[Path]]:
    """A completed validation whose UI check stored `pages` screenshots, ended `days_ago`."""
    state = await store.validations.create(project_id=project_id, pr_number=7, head_sha="a" * 40)
    await store.validations.start(state.id)
    files = [f"{uuid.uuid4().hex}.png" for _ in range(pages)]
    shots = [{"path": f"/page{n}", "file": file, "width": 1280, "height": 800} for n, file in enumerate(files)]
    steps = [{"stage": "ui", "name": "UI check", "status": "passed", "detail": "", "duration_seconds": 1.0}]
    assert await store.validations.complete(state.id, conclusion="success", title="ok",
                                            results={"steps": steps, "screenshots": shots})
    when = utcnow() - timedelta(days=days_ago)
    stmt = (update(ValidationState).where(ValidationState.id == state.id)
            .values(created_at=when - timedelta(minutes=5), completed_at=when))
    await store.db.write(lambda conn: conn.execute(stmt))
    directory = screenshots_dir(data_dir, state.id)
    directory.mkdir(parents=True)
    paths = []
    for n, file in enumerate(files):
        (directory / file).write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(1000 * (n + 1)))
        paths.append(directory / file)
    return state.id, paths
