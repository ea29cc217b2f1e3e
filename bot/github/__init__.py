"""The GitHub operations layer: every call the app makes to GitHub goes through here.

- `github_app.GitHubApp`: built once; hands out a `RepoGitHub` per repository (its installation's client),
  installation tokens for git, the manifest conversion and OAuth code exchange of the dashboard, and
  the signed-in user's view (`users.UserGitHub`), and `GET /meta`'s webhook addresses (`meta`).
- `pulls`, `check_runs`, `comments`, `repos`: the operations, with typed results for what the app
  reads (`types.PullRequest`). An answer without what the operation needs raises
  `errors.UnexpectedResponse`, which names the endpoint and the missing field; it is a
  `bot.errors.PermanentError`: the work ends at once (a dead job, a failed validation or agent run)
  instead of being retried. Check runs and comments mask every text they write (`bot.redact`;
  `RepoGitHub.masked` adds a project's secrets).
- `client`, `pacing` and `outage`: authentication, retries, rate limits, the pause of an installation's
  work while GitHub fails (`bot.errors.GitHubUnavailable`), and the paced writes under all of it.
"""
