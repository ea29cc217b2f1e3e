"""The app's check run: the one place that creates, updates, completes and cancels it.

Every write here goes through the installation's paced sender (bot.github.client); a progress
update is coalesced with the next one of the same check run there. Every write is masked on its way
out (`_write`): each text of the body (titles, summaries, text, annotations, image captions, button
labels) passes through the redactor, the process's or the one given to `masked` (which knows a
project's secrets); identifiers (`_IDENTIFIERS`) are left alone.

A check run's `external_id` is the id of what it reports on (a validation). Creating one is made
idempotent by `create_once`: where an earlier try may have created it (a retried job after a process
was killed before it recorded the answer, or after GitHub's answer was lost: the client does not send
such a POST again), the app's runs on the head are looked through for that `external_id` first, and
the one found is adopted.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, NamedTuple
from urllib.parse import urlencode

from gidgethub import BadRequest
from gidgethub.abc import GitHubAPI

from bot.github.errors import field
from bot.redact import PROCESS_REDACTOR, Redactor

log = logging.getLogger(__name__)

CHECK_NAME = "CodegenApp"

Output = Mapping[str, Any]  # GitHub's check-run `output`: title, summary, text, annotations, images

# Values of a check-run body that name things rather than say them: masking would break the request.
_IDENTIFIERS = frozenset({"name", "head_sha", "details_url", "external_id", "status", "conclusion", "started_at",
                          "completed_at", "path", "annotation_level", "image_url", "identifier"})


class FoundRun(NamedTuple):
    """A check run as the app finds it again: its id and whether it is completed."""
    id: int
    completed: bool


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class CheckRuns:
    def __init__(self, gh: GitHubAPI, repository: str, *, app_id: str | None = None,
                 redactor: Redactor = PROCESS_REDACTOR) -> None:
        """`app_id`: this App's id, to tell its check runs from another app's of the same name."""
        self.gh = gh
        self.repository = repository
        self.path = f"/repos/{repository}/check-runs"
        self.app_id = app_id
        self.redactor = redactor

    def masked(self, redactor: Redactor) -> CheckRuns:
        """These check runs, every write masked by `redactor` (e.g. the process's plus a project's secrets)."""
        return CheckRuns(self.gh, self.repository, app_id=self.app_id, redactor=redactor)

    async def _write(self, method: str, url: str, data: Mapping[str, Any]) -> Any:
        masked = self.redactor.redact_json(dict(data), keep=_IDENTIFIERS)
        return await (self.gh.post if method == "POST" else self.gh.patch)(url, data=masked)

    async def create(self, *, head_sha: str, details_url: str, external_id: str, title: str, summary: str,
                     name: str = CHECK_NAME, actions: Sequence[Mapping[str, str]] | None = None) -> int:
        """A new check run `in_progress` on `head_sha`; its id. `name`: another of the app's check runs
        (the merge queue's) than the validation's."""
        data: dict[str, Any] = {
            "name": name, "head_sha": head_sha, "status": "in_progress", "started_at": now(),
            "details_url": details_url, "external_id": external_id,
            "output": {"title": title, "summary": summary}}
        if actions is not None:
            data["actions"] = actions
        answer = await self._write("POST", self.path, data)
        return int(field(answer, "id", f"POST {self.path}"))

    async def create_once(self, *, head_sha: str, details_url: str, external_id: str, title: str, summary: str,
                          look_first: bool) -> int:
        """The check run of `external_id` on `head_sha`, created at most once: with `look_first` (an
        earlier try may have created it) the one found is adopted instead."""
        if look_first and (found := await self.of(head_sha, external_id)):
            log.info("adopting check run %d of %s on %s", found[0].id, external_id, head_sha[:7])
            return found[0].id
        return await self.create(head_sha=head_sha, details_url=details_url, external_id=external_id,
                                 title=title, summary=summary)

    async def of(self, head_sha: str, external_id: str) -> list[FoundRun]:
        """This App's check runs on `head_sha` whose external_id is `external_id`, oldest first."""
        query = {"check_name": CHECK_NAME, "filter": "all", **({"app_id": self.app_id} if self.app_id else {})}
        url = f"/repos/{self.repository}/commits/{head_sha}/check-runs?{urlencode(query)}"
        found = [FoundRun(int(field(run, "id", f"GET {url}")), run.get("status") == "completed")
                 async for run in self.gh.getiter(url, iterable_key="check_runs")
                 if run.get("external_id") == external_id and run.get("name") == CHECK_NAME
                 and (self.app_id is None or str((run.get("app") or {}).get("id")) == str(self.app_id))]
        return sorted(found)

    async def get(self, check_run_id: int) -> FoundRun:
        answer = await self.gh.getitem(f"{self.path}/{check_run_id}")
        return FoundRun(int(field(answer, "id", f"GET {self.path}/{{id}}")),
                        field(answer, "status", f"GET {self.path}/{{id}}") == "completed")

    async def update(self, check_run_id: int, output: Output,
                     actions: Sequence[Mapping[str, str]] | None = None) -> None:
        """New output for a running check run (progress)."""
        data: dict[str, Any] = {"output": output}
        if actions is not None:
            data["actions"] = actions
        await self._write("PATCH", f"{self.path}/{check_run_id}", data)

    async def complete(self, check_run_id: int, *, conclusion: str, output: Output,
                       actions: Sequence[Mapping[str, str]] | None = None) -> None:
        data: dict[str, Any] = {"status": "completed", "conclusion": conclusion, "completed_at": now(),
                                "output": output}
        if actions is not None:
            data["actions"] = actions
        await self._write("PATCH", f"{self.path}/{check_run_id}", data)

    async def cancel(self, check_run_id: int, title: str,
                     actions: Sequence[Mapping[str, str]] | None = None) -> None:
        """Complete as `cancelled`, the title saying why (the summary repeats it)."""
        await self.complete(check_run_id, conclusion="cancelled", output={"title": title, "summary": f"{title}."},
                            actions=actions)

    async def add_annotations(self, check_run_id: int, *, title: str, summary: str,
                              annotations: Sequence[Mapping[str, Any]]) -> None:
        """More annotations for a check run (GitHub takes at most 50 a request; they add up)."""
        await self._write("PATCH", f"{self.path}/{check_run_id}", {
            "output": {"title": title, "summary": summary, "annotations": annotations}})

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
