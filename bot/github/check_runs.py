"""The app's check run: the one place that creates, updates, completes and cancels it.

Every write here goes through the installation's paced sender (bot.github.client); a progress
update is coalesced with the next one of the same check run there.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from gidgethub import BadRequest
from gidgethub.abc import GitHubAPI

from bot.github.errors import field

CHECK_NAME = "CodegenApp"

Output = Mapping[str, Any]  # GitHub's check-run `output`: title, summary, text, annotations, images


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class CheckRuns:
    def __init__(self, gh: GitHubAPI, repository: str) -> None:
        self.gh = gh
        self.repository = repository
        self.path = f"/repos/{repository}/check-runs"

    async def create(self, *, head_sha: str, details_url: str, external_id: str, title: str, summary: str) -> int:
        """A new check run `in_progress` on `head_sha`; its id."""
        answer = await self.gh.post(self.path, data={
            "name": CHECK_NAME, "head_sha": head_sha, "status": "in_progress", "started_at": now(),
            "details_url": details_url, "external_id": external_id,
            "output": {"title": title, "summary": summary}})
        return int(field(answer, "id", f"POST {self.path}"))

    async def update(self, check_run_id: int, output: Output) -> None:
        """New output for a running check run (progress)."""
        await self.gh.patch(f"{self.path}/{check_run_id}", data={"output": dict(output)})

    async def complete(self, check_run_id: int, *, conclusion: str, output: Output,
                       actions: Sequence[Mapping[str, str]] | None = None) -> None:
        data: dict[str, Any] = {"status": "completed", "conclusion": conclusion, "completed_at": now(),
                                "output": dict(output)}
        if actions is not None:
            data["actions"] = [dict(action) for action in actions]
        await self.gh.patch(f"{self.path}/{check_run_id}", data=data)

    async def cancel(self, check_run_id: int, title: str,
                     actions: Sequence[Mapping[str, str]] | None = None) -> None:
        """Complete as `cancelled`, the title saying why (the summary repeats it)."""
        await self.complete(check_run_id, conclusion="cancelled", output={"title": title, "summary": f"{title}."},
                            actions=actions)

    async def add_annotations(self, check_run_id: int, *, title: str, summary: str,
                              annotations: Sequence[Mapping[str, Any]]) -> None:
        """More annotations for a check run (GitHub takes at most 50 a request; they add up)."""
        await self.gh.patch(f"{self.path}/{check_run_id}", data={
            "output": {"title": title, "summary": summary, "annotations": [dict(a) for a in annotations]}})

    async def for_ref(self, ref: str) -> list[dict[str, Any]]:
        """Every check run on a commit (any app's)."""
        return [run async for run in self.gh.getiter(f"/repos/{self.repository}/commits/{ref}/check-runs",
                                                     iterable_key="check_runs")]

    async def statuses(self, ref: str) -> list[dict[str, Any]]:
        """The commit's statuses (the older API); empty where the app may not read them (403, 404)."""
        try:
            combined = await self.gh.getitem(f"/repos/{self.repository}/commits/{ref}/status")
        except BadRequest as exc:
            if exc.status_code not in (403, 404):
                raise
            return []
        return list(combined.get("statuses") or []) if isinstance(combined, Mapping) else []
