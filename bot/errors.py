"""Errors that say how the job that met them should end."""

from __future__ import annotations


class PermanentError(Exception):
    """Trying again cannot help (GitHub answered with a shape the app does not understand, say): the
    worker ends the job at once and keeps this error, instead of retrying it like a network fault."""


class GitHubUnavailable(Exception):
    """GitHub is failing (5xx answers, timeouts, unreachable) or asks the app to wait (a rate limit): not
    the job's fault. The worker tries the job again once GitHub may be asked again, without counting
    an attempt, until the job's outage budget (`GITHUB_OUTAGE_BUDGET_HOURS` since its first failure)
    is spent. `retry_after`: seconds until then, when the GitHub layer knows."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after
