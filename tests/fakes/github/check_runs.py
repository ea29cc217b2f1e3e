"""``CheckRunsMixin``: check runs (and their check suites: one per repository and head sha) and commit
statuses with the combined status."""

from __future__ import annotations

from typing import Any

from tests.fakes.github.common import _copy, _GitHubError, _handles, _iso, _node_id, _now, _Reply, _RepoState, _Request
from tests.fakes.github.state import FakeState

_INTERNAL_RUN_KEYS = ("annotations", "actions", "images")


class CheckRunsMixin(FakeState):
    """Check runs, check suites, commit statuses (see the module docstring)."""

    # ------------------------------------------------------------------ handlers: commit statuses

    @_handles("POST /repos/{owner}/{repo}/statuses/{sha}")
    def _create_status(self, request: _Request) -> _Reply:
        repo, sha, body = request.repository, request.params["sha"], request.body
        number = next(self._ids["status"])
        status = self._example("POST", "/repos/{owner}/{repo}/statuses/{sha}", 201)
        now = _iso(_now())
        status.update(
            url=f"{self.api_url}/repos/{repo.full_name}/statuses/{sha}",
            avatar_url=None,
            id=number,
            node_id=_node_id("StatusContext", number),
            state=body["state"],
            description=body.get("description"),
            target_url=body.get("target_url"),
            context=body.get("context", "default"),
            created_at=now,
            updated_at=now,
            creator=self._bot(),
        )
        self.statuses.append({**status, "sha": sha, "repository": repo.full_name})
        return _Reply(201, status)

    @_handles("GET /repos/{owner}/{repo}/commits/{ref}/status")
    def _get_combined_status(self, request: _Request) -> _Reply:
        repo = request.repository
        sha = self._resolve_sha(repo, request.params["ref"])
        latest: dict[str, dict[str, Any]] = {}
        for status in self.statuses:
            if status["repository"] == repo.full_name and status["sha"] == sha:
                latest[status["context"]] = {k: v for k, v in status.items() if k not in ("sha", "repository")}
        states = {s["state"] for s in latest.values()}
        state = (
            "failure"
            if states & {"failure", "error"}
            else "pending"
            if not states or "pending" in states
            else "success"
        )
        combined = self._example("GET", "/repos/{owner}/{repo}/commits/{ref}/status", 200)
        combined.update(
            state=state,
            statuses=list(latest.values()),
            sha=sha,
            total_count=len(latest),
            repository=_copy(repo.data),
            commit_url=f"{self.api_url}/repos/{repo.full_name}/commits/{sha}",
            url=f"{self.api_url}/repos/{repo.full_name}/commits/{sha}/status",
        )
        return _Reply(200, combined)

    # ------------------------------------------------------------------ handlers: check runs

    @_handles("POST /repos/{owner}/{repo}/check-runs")
    def _create_check_run(self, request: _Request) -> _Reply:
        repo, body = request.repository, request.body
        conclusion = body.get("conclusion")
        status = "completed" if conclusion is not None else body.get("status", "queued")
        _require_conclusion(status, conclusion, body)
        number = next(self._ids["check_run"])
        api, now = f"{self.api_url}/repos/{repo.full_name}", _iso(_now())
        run = self._example("POST", "/repos/{owner}/{repo}/check-runs", 201)
        run.pop("deployment", None)
        head_sha = body["head_sha"]
        suite = self._suites.setdefault((repo.full_name, head_sha), next(self._ids["check_suite"]))
        run.update(
            id=number,
            node_id=_node_id("CheckRun", number),
            head_sha=head_sha,
            external_id=body.get("external_id", ""),
            url=f"{api}/check-runs/{number}",
            html_url=f"{self.base_url}/{repo.full_name}/runs/{number}",
            details_url=body.get("details_url", f"{self.base_url}/apps/{self.app_slug}"),
            status=status,
            conclusion=conclusion,
            started_at=body.get("started_at", now),
            completed_at=body.get("completed_at", now if status == "completed" else None),
            output={
                "title": None,
                "summary": None,
                "text": None,
                "annotations_count": 0,
                "annotations_url": f"{api}/check-runs/{number}/annotations",
            },
            name=body["name"],
            check_suite={"id": suite},
            app=self._app_dict(),
            pull_requests=self._check_run_pulls(repo, head_sha),
            annotations=[],
            actions=list(body.get("actions", [])),
            images=[],
        )
        self._apply_output(run, body.get("output"))
        self.check_runs[number] = run
        self._run_repo[number] = repo.full_name
        return _Reply(201, self._public_run(run))

    @_handles("PATCH /repos/{owner}/{repo}/check-runs/{check_run_id}")
    def _update_check_run(self, request: _Request) -> _Reply:
        run, body = self._check_run(request), request.body
        conclusion = body.get("conclusion", run["conclusion"])
        status = "completed" if "conclusion" in body else body.get("status", run["status"])
        _require_conclusion(status, conclusion, body)
        for key in ("name", "details_url", "external_id", "started_at", "completed_at"):
            if key in body:
                run[key] = body[key]
        run.update(status=status, conclusion=conclusion)
        if status == "completed" and not run.get("completed_at"):
            run["completed_at"] = _iso(_now())
        if "actions" in body:
            run["actions"] = list(body["actions"])
        self._apply_output(run, body.get("output"))
        return _Reply(200, self._public_run(run))

    @_handles("GET /repos/{owner}/{repo}/check-runs/{check_run_id}")
    def _get_check_run(self, request: _Request) -> _Reply:
        return _Reply(200, self._public_run(self._check_run(request)))

    @_handles("GET /repos/{owner}/{repo}/commits/{ref}/check-runs")
    def _list_check_runs(self, request: _Request) -> _Reply:
        repo, query = request.repository, request.query
        sha = self._resolve_sha(repo, request.params["ref"])
        runs = [
            run
            for number, run in sorted(self.check_runs.items(), reverse=True)
            if self._run_repo[number] == repo.full_name
            and run["head_sha"] == sha
            and query.get("check_name") in (None, run["name"])
            and query.get("status") in (None, run["status"])
            and query.get("app_id") in (None, str(run["app"]["id"]))
        ]
        if query.get("filter", "latest") == "latest":
            newest: dict[str, dict[str, Any]] = {}
            for run in runs:
                newest.setdefault(run["name"], run)
            runs = list(newest.values())
        public = [self._public_run(run) for run in runs]
        return self._paginate(request, public, lambda page, total: {"total_count": total, "check_runs": page})

    def _check_run(self, request: _Request) -> dict[str, Any]:
        number = request.int_param("check_run_id")
        if self._run_repo.get(number) != request.repository.full_name:
            raise _GitHubError(404, "Not Found")
        return self.check_runs[number]

    def _check_run_pulls(self, repo: _RepoState, head_sha: str) -> list[dict[str, Any]]:
        def ref(side: dict[str, Any]) -> dict[str, Any]:
            return {
                "ref": side["ref"],
                "sha": side["sha"],
                "repo": {"id": side["repo"]["id"], "url": side["repo"]["url"], "name": side["repo"]["name"]},
            }

        return [
            {
                "url": pull["url"],
                "id": pull["id"],
                "number": pull["number"],
                "head": ref(pull["head"]),
                "base": ref(pull["base"]),
            }
            for pull in (self.pulls[(repo.full_name, n)] for n in self._pull_numbers_by_repo.get(repo.full_name, ()))
            if pull["state"] == "open"
            and pull["head"]["sha"] == head_sha
            and pull["head"]["repo"]["full_name"] == repo.full_name
        ]

    @staticmethod
    def _apply_output(run: dict[str, Any], output: dict[str, Any] | None) -> None:
        if not output:
            return
        for key in ("title", "summary", "text"):
            if key in output:
                run["output"][key] = output[key]
        run["annotations"].extend(_copy(output.get("annotations", [])))
        run["images"].extend(_copy(output.get("images", [])))
        run["output"]["annotations_count"] = len(run["annotations"])

    @staticmethod
    def _public_run(run: dict[str, Any]) -> dict[str, Any]:
        return _copy({k: v for k, v in run.items() if k not in _INTERNAL_RUN_KEYS})


def _require_conclusion(status: str, conclusion: object, body: dict) -> None:
    """GitHub's 422 for a completed check run without a conclusion."""
    if (status == "completed" or body.get("completed_at")) and conclusion is None:
        raise _GitHubError(
            422,
            "Invalid request.",
            record=True,
            errors=["`conclusion` is required when `status` is `completed` or `completed_at` is given"],
        )
