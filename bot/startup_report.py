"""The block `codegenapp serve` logs once at start: what runs and what is missing, for the operator.

Pure: `startup_report(facts)` turns the settings and what the start measured (the facts /health reports:
the sandbox's layers, the workspaces' disks, the browser) into lines; bot/app.py gathers the facts and
logs the block at INFO, and the rows a person must act on (setup mode's link included) at WARNING. Nothing here is ever shown on a page.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from bot.config import Settings
from bot.reachability import unreachable_reason

LABEL_WIDTH = 11

# The sandbox's layers worth naming (SandboxCapabilities.describe()["layers"]), in words.
SANDBOX_LAYERS = {
    "seccomp": "seccomp",
    "net_namespace": "network namespace",
    "user_network": "slirp4netns for setup's network",
    "dedicated_uid": "a uid of its own",
    "cgroup_memory": "memory cgroup",
    "cgroup_pids": "process cgroup",
}


@dataclass(frozen=True)
class StartupFacts:
    settings: Settings
    app_name: str | None = None  # the App's name (GET /app), else its slug if the dashboard registered it
    app_slug: str | None = None  # from GET /app: the App's page is GITHUB_URL/apps/SLUG
    app_refused: str | None = None  # why GitHub refused the App's credentials (GET /app answered 401 or 404)
    registered_here: bool = False  # the App in use was registered from the dashboard (else: the environment's)
    setup_token: str | None = None  # setup mode: the one-time token of the registration link
    sandbox: Mapping[str, Any] | None = None  # SandboxCapabilities.describe(), as /health reports it
    workspaces: Mapping[str, Any] | None = None  # RunVolumes.describe()
    browser: Mapping[str, Any] | None = None  # BrowserHealth.describe()
    runs_jobs: bool = True  # False: `serve --no-worker`, a `codegenapp worker` runs the jobs


@dataclass(frozen=True)
class StartupReport:
    """The block, split by who must read it: `info` (logged at INFO) holds the title and every row that
    is fine; `warnings` (logged at WARNING, empty when nothing needs doing) holds the rows a person must
    act on: a missing App and its one-time link, an unreachable PUBLIC_URL, a broken sandbox... Each row is
    in exactly one of the two, so with LOG_LEVEL=WARNING nothing to act on is lost and nothing shows twice."""
    info: list[str]
    warnings: list[str]


INFO_TITLE = "CodegenApp is starting:"
WARNING_TITLE = "CodegenApp needs attention:"


def startup_report(facts: StartupFacts) -> StartupReport:
    """The block's lines: a title, then one `label  value` line per fact, the URL to open last; the rows to
    act on go under a second title, logged at WARNING, in the same order."""
    settings = facts.settings
    rows = [
        ("GitHub App", app_line(facts), not settings.app_configured or facts.app_refused is not None),
        ("PUBLIC_URL", public_url_line(settings),
         settings.webhook_mode == "webhook" and unreachable_reason(settings.public_url) is not None),
        ("database", database_description(settings.database_url), False),  # load_settings refused a bad one
        ("login", login_line(settings), settings.app_configured and not oauth_ready(settings)),
        ("agents", agents_line(settings), bool(settings.codegen_api_key) != bool(settings.codegen_org_id)),
        ("sandbox", sandbox_line(facts.sandbox, facts.workspaces),
         facts.sandbox is not None and not facts.sandbox.get("sandboxed")),
        ("browser", browser_line(facts.browser, settings.chromium_path),
         facts.browser is not None and not facts.browser.get("found")),
        ("jobs", "run in this process" if facts.runs_jobs else "run by a separate `codegenapp worker`", False),
        ("open", open_line(settings, facts.setup_token), not settings.app_configured and bool(facts.setup_token)),
    ]

    def lines(title: str, *, problems: bool) -> list[str]:
        return [title] + [f"  {label:<{LABEL_WIDTH}} {value}" for label, value, problem in rows if problem == problems]

    warnings = lines(WARNING_TITLE, problems=True)
    return StartupReport(info=lines(INFO_TITLE, problems=False), warnings=warnings if len(warnings) > 1 else [])


def app_line(facts: StartupFacts) -> str:
    """`4242 (CodegenApp Acme, https://github.com/apps/codegenapp-acme, from the environment)`: the id,
    then what is known of the App's name and page, then where its settings come from."""
    settings = facts.settings
    if not settings.app_configured:
        return (f"not configured, setup mode ({', '.join(settings.missing_app_settings)} missing): "
                "webhooks answer 503 until an App is registered")
    about = [facts.app_name] if facts.app_name else []
    if facts.app_slug:
        about.append(f"{settings.github_url.rstrip('/')}/apps/{facts.app_slug}")
    about.append("registered from the dashboard" if facts.registered_here else "from the environment")
    refused = f": GitHub refused the App's credentials: {facts.app_refused}" if facts.app_refused else ""
    return f"{settings.app_id} ({', '.join(about)}){refused}"


def public_url_line(settings: Settings) -> str:
    reason = unreachable_reason(settings.public_url)
    if settings.webhook_mode == "poll":
        where = f"GitHub cannot reach it ({reason})" if reason else "webhooks are not used"
        return (f"{settings.public_url}: {where}; polling mode: events are read from the App's delivery log "
                f"every {settings.poll_interval:g} s")
    if reason is None:
        return f"{settings.public_url}: GitHub sends webhooks to {settings.webhook_url}"
    return (f"{settings.public_url}: GitHub cannot reach it ({reason}), so no webhook will arrive; set PUBLIC_URL "
            "to an https address GitHub can reach (this server's public name, or a tunnel's)")


def database_description(url: str) -> str:
    """The database's kind and where it is, never a password: `SQLite at /data/codegenapp.db`,
    `PostgreSQL at db.example.com:5432/codegenapp as app`."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        return "a DATABASE_URL that cannot be read"
    if parsed.get_backend_name() == "sqlite":
        file = parsed.database
        return f"SQLite at {file}" if file and file != ":memory:" else "SQLite in memory (nothing is kept)"
    kind = "PostgreSQL" if parsed.get_backend_name() == "postgresql" else parsed.get_backend_name()
    where = (parsed.host or "the local socket") + (f":{parsed.port}" if parsed.port else "")
    database = f"/{parsed.database}" if parsed.database else ""
    user = f" as {parsed.username}" if parsed.username else ""
    return f"{kind} at {where}{database}{user}"


def oauth_ready(settings: Settings) -> bool:
    """Whether the dashboard's GitHub login can work: it needs both of the App's OAuth credentials."""
    return bool(settings.github_client_id and settings.github_client_secret)


def login_line(settings: Settings) -> str:
    if oauth_ready(settings):
        return "GitHub OAuth ready"
    if not settings.app_configured:
        return "after registration (the App's OAuth credentials come with it)"
    missing = [name for name, value in (("GITHUB_CLIENT_ID", settings.github_client_id),
                                        ("GITHUB_CLIENT_SECRET", settings.github_client_secret)) if not value]
    return f"not ready: set {' and '.join(missing)} (the App's OAuth credentials) to log in to the dashboard"


def agents_line(settings: Settings) -> str:
    missing = [name for name, value in (("CODEGEN_API_KEY", settings.codegen_api_key),
                                        ("CODEGEN_ORG_ID", settings.codegen_org_id)) if not value]
    local = "a project may choose a local command in its settings"
    if not missing:
        return f"Codegen (organization {settings.codegen_org_id}) by default; {local}"
    if len(missing) == 1:
        return f"Codegen needs {missing[0]} too; until then none by default; {local}"
    return f"none by default (set CODEGEN_API_KEY and CODEGEN_ORG_ID for Codegen); {local}"


def sandbox_line(sandbox: Mapping[str, Any] | None, workspaces: Mapping[str, Any] | None) -> str:
    if sandbox is None:
        return "not probed"
    if not sandbox.get("sandboxed"):
        notes = "; ".join(sandbox.get("notes") or ()) or "bubblewrap does not work here"
        verdict = ("commands run UNSANDBOXED" if sandbox.get("mode") == "unsandboxed"
                   else "PR code will not be run; validations fail saying so")
        return f"NOT working ({notes}): {verdict}"
    layers = sandbox.get("layers") or {}
    have = [words for key, words in SANDBOX_LAYERS.items() if layers.get(key)]
    lack = [words for key, words in SANDBOX_LAYERS.items() if not layers.get(key)]
    if workspaces is not None:
        (have if workspaces.get("bounded") else lack).append("size-limited workspaces")
    line = f"{sandbox.get('bwrap_version') or 'bubblewrap'}" + (f" with {', '.join(have)}" if have else "")
    return line + (f"; without {', '.join(lack)}" if lack else "")


def browser_line(browser: Mapping[str, Any] | None, chromium_path: str) -> str:
    if browser is None or browser.get("found"):
        return f"Chromium at {chromium_path} for the UI check (its first launch is checked in the background)"
    return f"Chromium not found at {chromium_path}: the UI check cannot run; install Debian's chromium or set CHROMIUM_PATH"


def open_line(settings: Settings, setup_token: str | None) -> str:
    base = settings.public_url.rstrip("/")
    if not settings.app_configured and setup_token:
        return f"{base}/?setup_token={setup_token}  (this link registers the GitHub App; it works once)"
    return f"{base}/  (the dashboard)"
