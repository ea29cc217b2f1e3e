"""All configuration, read and validated in one place.

Names follow Probot's where Probot has one (APP_ID, PRIVATE_KEY, WEBHOOK_SECRET, ...). Values come from
the environment, then a `.env` file in the working directory; the environment wins. Every problem found
is reported at once, each with a sentence a maintainer can act on.
"""

from __future__ import annotations

import math
import os
import secrets
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from ipaddress import IPv4Network, IPv6Network, ip_network
from pathlib import Path
from urllib.parse import urlsplit

from cryptography.fernet import Fernet
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from dotenv import dotenv_values

from bot.reachability import unreachable_reason

WEBHOOK_PATH = "/api/v1/webhooks/github"
# The App's webhook URL in polling mode unless POLLING_HOOK_URL names one: GitHub refuses a hook URL it
# cannot reach over the public Internet (localhost, a private range), and names that do not resolve
# (example.invalid, .test). example.com is reserved for examples (RFC 2606), nobody's receiver, yet it
# resolves to public addresses, which GitHub accepts; the path says why it is there to whoever reads the
# App's settings. GitHub does POST each event's payload there (dashboard/templates/setup.html says so).
DEFAULT_POLLING_HOOK_URL = "https://example.com/codegenapp-polls-the-delivery-log"
DEFAULT_PORT = 3001
MAX_RETENTION_DAYS = 36500
GIB = 1024**3


class ConfigError(Exception):
    """One or more configuration problems; `problems` holds a sentence for each."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid configuration:\n" + "\n".join(f"  - {p}" for p in problems))


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    database_url: str
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    public_url: str = ""
    app_id: str | None = None
    private_key: str | None = field(default=None, repr=False)
    webhook_secrets: tuple[str, ...] = field(default=(), repr=False)
    github_client_id: str | None = None
    github_client_secret: str | None = field(default=None, repr=False)
    github_api_url: str = "https://api.github.com"
    github_url: str = "https://github.com"
    jwt_secret_key: str = field(default="", repr=False)
    encryption_key: str = field(default="", repr=False)
    codegen_api_url: str = "https://api.codegen.com"
    codegen_api_key: str | None = field(default=None, repr=False)
    codegen_org_id: str | None = None
    log_level: str = "INFO"
    log_format: str = "pretty"
    max_webhook_bytes: int = 25 * 1024 * 1024
    github_writes_per_minute: int = 80
    github_writes_per_hour: int = 500
    # On PostgreSQL, one process at a time sends an installation's writes, under a lease of this many seconds
    # (bot/github/write_lanes.py): a process that dies holding it is taken over after this. Each write's
    # HTTP timeout is half of it.
    github_write_lease_seconds: float = 20.0
    worker_concurrency: int = 8
    webhook_concurrency: int = 32
    job_max_attempts: int = 5
    job_lease_seconds: float = 60.0
    # A stopping `serve` or `worker` (SIGTERM) lets its running jobs finish this long, then hands the rest
    # back to the queue for another worker (untried: no attempt spent).
    shutdown_grace_seconds: float = 10.0
    # Seconds between a worker's claims when nothing woke it: only the fallback. A queued job wakes the
    # workers at once (in-process; across processes on PostgreSQL by NOTIFY, bot/event_bridge.py), and a
    # worker wakes itself when a job it retries comes due. The poll finds what no wake-up announces: jobs
    # whose worker died (their lease, JOB_LEASE_SECONDS, expired), another worker's retries coming due, a
    # wake-up lost while a connection was down. 5 s keeps those prompt at a fifth of the old 1 s claims.
    job_poll_interval: float = 5.0
    github_outage_budget_hours: int = 6  # a job waits out GitHub failing this long after its first failure
    resync_interval: float = 3600.0  # seconds between resyncs of open pull requests (pipeline/resync); 0: off
    resync_max_starts: int = 50  # validations one resync may start at most
    merge_queue_sweep_interval: float = 60.0  # seconds between jobs for every active merge queue; 0: off
    # How events arrive (pipeline/deliveries): "webhook" (GitHub POSTs them; the App's delivery log is swept
    # at start and every sweep_interval seconds, 0: never) or "poll" (the log is read every poll_interval).
    webhook_mode: str = "webhook"
    sweep_interval: float = 300.0
    sweep_first_lookback: float = 3600.0  # seconds the first sweep of a new database looks back in the log
    poll_interval: float = 5.0
    polling_hook_url: str = DEFAULT_POLLING_HOOK_URL  # where GitHub POSTs the events in polling mode
    chromium_path: str = "/usr/bin/chromium"  # the UI check's browser (Debian's; never a downloaded one)
    screenshot_retention_days: int = 30  # the UI check's screenshots are deleted this long after a run; 0: never
    snapshot_home_caches: bool = False  # setup snapshots keep package managers' download caches (~/.npm, ...)
    # Disk: each run's workspace is a filesystem of this size (pipeline/workspace/volumes.py); /health fails
    # below min_free on DATA_DIR, and a run starts only when that much stays free after it took its own.
    run_disk_limit_bytes: int = 4 * GIB
    min_free_disk_bytes: int = 1 * GIB
    generated_keys_found: bool = False  # DATA_DIR held the keys an earlier start generated (bot/db.py)
    # Abuse from outside (bot/guard/): per-client requests a minute (0: no limit), proxies whose
    # X-Forwarded-For is believed, and the optional allowlist of GitHub's webhook addresses.
    login_requests_per_minute: int = 30
    api_requests_per_minute: int = 600
    webhook_refusals_per_minute: int = 30
    trusted_proxies: tuple[IPv4Network | IPv6Network, ...] = ()
    webhook_github_addresses_only: bool = False

    @property
    def app_configured(self) -> bool:
        return bool(self.app_id and self.private_key and self.webhook_secrets)

    @property
    def missing_app_settings(self) -> list[str]:
        names = [("APP_ID", self.app_id), ("PRIVATE_KEY or PRIVATE_KEY_PATH", self.private_key),
                 ("WEBHOOK_SECRET", self.webhook_secrets)]
        return [name for name, value in names if not value]

    @property
    def webhook_url(self) -> str:
        return self.public_url.rstrip("/") + WEBHOOK_PATH

    @property
    def secret_values(self) -> list[str]:
        """Every configured secret, for the log redactor."""
        values = [self.private_key, self.github_client_secret, self.jwt_secret_key, self.encryption_key,
                  self.codegen_api_key, *self.webhook_secrets]
        return [v for v in values if v]

    def with_overrides(self, **changes: object) -> "Settings":
        return replace(self, **changes)


def _read_environment(environ: Mapping[str, str] | None, dotenv_path: Path | None) -> dict[str, str]:
    values: dict[str, str] = {}
    if dotenv_path is not None and dotenv_path.is_file():
        values.update({k: v for k, v in dotenv_values(dotenv_path).items() if v is not None})
    values.update(os.environ if environ is None else environ)
    return {k: v for k, v in values.items() if v != ""}


def _check_private_key(pem: str) -> str | None:
    try:
        key = load_pem_private_key(pem.encode(), password=None)
    except (ValueError, TypeError):
        return "PRIVATE_KEY is not a PEM RSA private key (expected the .pem file GitHub generated for the App)"
    if not isinstance(key, RSAPrivateKey):
        return "PRIVATE_KEY is not a PEM RSA private key (it is a different key type)"
    return None


def _check_url(name: str, value: str) -> str | None:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return f"{name} must be an http(s) URL, got {value!r}"
    return None


def _int(values: dict[str, str], name: str, default: int, problems: list[str], *, minimum: int = 1) -> int:
    raw = values.get(name)
    if raw is None:
        return default
    try:
        number = int(raw)
    except ValueError:
        problems.append(f"{name} must be a whole number, got {raw!r}")
        return default
    if number < minimum:
        problems.append(f"{name} must be at least {minimum}, got {number}")
    return number


def _gib(values: dict[str, str], name: str, default: int, problems: list[str], *, minimum: float) -> int:
    """A size given in GiB (fractions allowed), in bytes."""
    raw = values.get(name)
    if raw is None:
        return default
    gib = _finite(raw)
    if gib is None:
        problems.append(f"{name} must be a number of GiB (such as 4 or 0.5), got {raw!r}")
        return default
    if gib < minimum:
        problems.append(f"{name} must be at least {minimum:g} GiB, got {raw}")
        return default
    return int(gib * GIB)


def _finite(raw: str) -> float | None:
    """`raw` as a finite number (fractions allowed), or None."""
    try:
        number = float(raw)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _seconds(values: dict[str, str], name: str, default: float, problems: list[str], *, minimum: float) -> float:
    """A duration in seconds (fractions allowed)."""
    seconds = _finite(raw) if (raw := values.get(name)) is not None else default
    if seconds is None or seconds < minimum:
        problems.append(f"{name} must be a number of seconds of at least {minimum:g}, got {raw!r}")
        return default
    return seconds


def _polling_hook_url(values: dict[str, str], problems: list[str]) -> str:
    """POLLING_HOOK_URL: an https URL GitHub can reach (it refuses to register any other)."""
    url = (values.get("POLLING_HOOK_URL") or "").strip() or DEFAULT_POLLING_HOOK_URL
    if urlsplit(url).scheme != "https":
        problems.append(f"POLLING_HOOK_URL must be an https URL, got {url!r}")
    elif (why := unreachable_reason(url)) is not None:
        problems.append(f"POLLING_HOOK_URL must be an address GitHub can reach, not {why}: got {url!r}")
    else:
        return url
    return DEFAULT_POLLING_HOOK_URL


def _webhook_mode(values: dict[str, str], public_url: str, problems: list[str]) -> str:
    """WEBHOOK_MODE, or by default (unset or empty, as `WEBHOOK_MODE=` in .env) "poll" when GitHub cannot
    reach PUBLIC_URL (bot/reachability.py)."""
    raw = values.get("WEBHOOK_MODE")
    mode = (raw or "").strip().lower()
    if not mode:
        return "poll" if unreachable_reason(public_url) is not None else "webhook"
    if mode not in ("webhook", "poll"):
        problems.append(f"WEBHOOK_MODE must be webhook or poll, got {raw!r}")
        return "webhook"
    return mode


def _bool(values: dict[str, str], name: str, default: bool, problems: list[str]) -> bool:
    raw = values.get(name)
    if raw is None:
        return default
    word = raw.strip().lower()
    if word in ("1", "true", "yes", "on"):
        return True
    if word in ("0", "false", "no", "off"):
        return False
    problems.append(f"{name} must be true or false, got {raw!r}")
    return default


def _networks(values: dict[str, str], name: str, problems: list[str]) -> tuple[IPv4Network | IPv6Network, ...]:
    networks = []
    for entry in (e.strip() for e in values.get(name, "").split(",")):
        if not entry:
            continue
        try:
            networks.append(ip_network(entry, strict=False))
        except ValueError:
            problems.append(f"{name} must be comma-separated IP addresses or CIDR ranges "
                            f"(10.0.0.0/8, ::1), got {entry!r}")
    return tuple(networks)


def load_or_create_key(path: Path, make: callable) -> str:  # type: ignore[valid-type]
    """Read a generated key from DATA_DIR, or create it with mode 0600."""
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    value = make()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, stat.S_IRUSR | stat.S_IWUSR)
    with os.fdopen(fd, "w") as handle:
        handle.write(value + "\n")
    return value


def load_settings(environ: Mapping[str, str] | None = None, *, dotenv_path: Path | None = Path(".env"),
                  create_keys: bool = True) -> Settings:
    """Build Settings from the environment (and `.env`), or raise ConfigError listing every problem."""
    values = _read_environment(environ, dotenv_path)
    problems: list[str] = []

    data_dir = Path(values.get("DATA_DIR", "./data")).expanduser().resolve()
    database_url = values.get("DATABASE_URL") or f"sqlite:///{data_dir / 'codegenapp.db'}"
    if not database_url.startswith(("sqlite://", "postgresql+asyncpg://")):
        if database_url.startswith(("postgres://", "postgresql://")):
            database_url = "postgresql+asyncpg://" + database_url.split("://", 1)[1]
        elif database_url.startswith("sqlite+"):
            database_url = "sqlite://" + database_url.split("://", 1)[1]
        else:
            problems.append("DATABASE_URL must be a sqlite:// or postgresql:// URL, "
                            f"got {database_url.split('://', 1)[0]!r}")

    host = values.get("HOST", "127.0.0.1")
    port = _int(values, "PORT", DEFAULT_PORT, problems)
    if not 0 < port < 65536:
        problems.append(f"PORT must be between 1 and 65535, got {port}")

    private_key = values.get("PRIVATE_KEY")
    key_path = values.get("PRIVATE_KEY_PATH")
    if private_key is None and key_path is not None:
        try:
            private_key = Path(key_path).expanduser().read_text()
        except OSError as exc:
            problems.append(f"PRIVATE_KEY_PATH {key_path!r} cannot be read: {exc.strerror}")
    if private_key is not None:
        # Probot lets the key be given with literal "\n" sequences in one line.
        private_key = private_key.replace("\\n", "\n").strip() + "\n"
        if problem := _check_private_key(private_key):
            problems.append(problem)

    app_id = values.get("APP_ID")
    if app_id is not None and not app_id.isdigit():
        problems.append(f"APP_ID must be the App's numeric id, got {app_id!r}")

    webhook_secrets = tuple(s.strip() for s in values.get("WEBHOOK_SECRET", "").split(",") if s.strip())

    github_api_url = values.get("GITHUB_API_URL", "https://api.github.com").rstrip("/")
    github_url = values.get("GITHUB_URL", "https://github.com").rstrip("/")
    for name, url in (("GITHUB_API_URL", github_api_url), ("GITHUB_URL", github_url)):
        if problem := _check_url(name, url):
            problems.append(problem)

    public_url = values.get("PUBLIC_URL", f"http://{host}:{port}").rstrip("/")
    if problem := _check_url("PUBLIC_URL", public_url):
        problems.append(problem)

    log_level = values.get("LOG_LEVEL", "INFO").upper()
    if log_level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        problems.append(f"LOG_LEVEL must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL, got {log_level!r}")
    log_format = values.get("LOG_FORMAT", "pretty").lower()
    if log_format not in ("json", "pretty"):
        problems.append(f"LOG_FORMAT must be json or pretty, got {log_format!r}")

    screenshot_retention_days = _int(values, "SCREENSHOT_RETENTION_DAYS", 30, problems, minimum=0)
    if screenshot_retention_days > MAX_RETENTION_DAYS:
        problems.append(f"SCREENSHOT_RETENTION_DAYS must be at most {MAX_RETENTION_DAYS} (100 years), "
                        f"got {screenshot_retention_days}; 0 keeps screenshots forever")

    encryption_key = values.get("ENCRYPTION_KEY")
    if encryption_key is not None:
        try:
            Fernet(encryption_key.encode())
        except (ValueError, TypeError):
            problems.append("ENCRYPTION_KEY must be a Fernet key (32 url-safe base64-encoded bytes); "
                            "unset it to have one generated into DATA_DIR")

    settings = Settings(
        data_dir=data_dir,
        database_url=database_url,
        host=host,
        port=port,
        public_url=public_url,
        app_id=app_id,
        private_key=private_key,
        webhook_secrets=webhook_secrets,
        github_client_id=values.get("GITHUB_CLIENT_ID"),
        github_client_secret=values.get("GITHUB_CLIENT_SECRET"),
        github_api_url=github_api_url,
        github_url=github_url,
        codegen_api_url=values.get("CODEGEN_API_URL", "https://api.codegen.com").rstrip("/"),
        codegen_api_key=values.get("CODEGEN_API_KEY"),
        codegen_org_id=values.get("CODEGEN_ORG_ID"),
        log_level=log_level,
        log_format=log_format,
        max_webhook_bytes=_int(values, "MAX_WEBHOOK_BYTES", 25 * 1024 * 1024, problems),
        github_writes_per_minute=_int(values, "GITHUB_WRITES_PER_MINUTE", 80, problems),
        github_writes_per_hour=_int(values, "GITHUB_WRITES_PER_HOUR", 500, problems),
        github_write_lease_seconds=_seconds(values, "GITHUB_WRITE_LEASE_SECONDS", 20.0, problems, minimum=1.0),
        worker_concurrency=_int(values, "WORKER_CONCURRENCY", 8, problems),
        webhook_concurrency=_int(values, "WEBHOOK_CONCURRENCY", 32, problems),
        job_max_attempts=_int(values, "JOB_MAX_ATTEMPTS", 5, problems),
        job_lease_seconds=float(_int(values, "JOB_LEASE_SECONDS", 60, problems, minimum=2)),
        shutdown_grace_seconds=float(_int(values, "SHUTDOWN_GRACE_SECONDS", 10, problems, minimum=0)),
        job_poll_interval=_seconds(values, "JOB_POLL_INTERVAL", 5.0, problems, minimum=0.1),
        github_outage_budget_hours=_int(values, "GITHUB_OUTAGE_BUDGET_HOURS", 6, problems, minimum=0),
        resync_interval=float(_int(values, "RESYNC_INTERVAL", 3600, problems, minimum=0)),
        resync_max_starts=_int(values, "RESYNC_MAX_STARTS", 50, problems, minimum=1),
        merge_queue_sweep_interval=float(_int(values, "MERGE_QUEUE_SWEEP_INTERVAL", 60, problems, minimum=0)),
        webhook_mode=_webhook_mode(values, public_url, problems),
        sweep_interval=float(_int(values, "SWEEP_INTERVAL", 300, problems, minimum=0)),
        sweep_first_lookback=float(_int(values, "SWEEP_FIRST_LOOKBACK", 3600, problems, minimum=0)),
        poll_interval=_seconds(values, "POLL_INTERVAL", 5.0, problems, minimum=0.1),
        polling_hook_url=_polling_hook_url(values, problems),
        chromium_path=values.get("CHROMIUM_PATH", "/usr/bin/chromium"),
        screenshot_retention_days=screenshot_retention_days,
        snapshot_home_caches=_bool(values, "SNAPSHOT_HOME_CACHES", False, problems),
        run_disk_limit_bytes=_gib(values, "RUN_DISK_LIMIT_GIB", 4 * GIB, problems, minimum=0.01),
        min_free_disk_bytes=_gib(values, "MIN_FREE_DISK_GIB", 1 * GIB, problems, minimum=0),
        login_requests_per_minute=_int(values, "LOGIN_REQUESTS_PER_MINUTE", 30, problems, minimum=0),
        api_requests_per_minute=_int(values, "API_REQUESTS_PER_MINUTE", 600, problems, minimum=0),
        webhook_refusals_per_minute=_int(values, "WEBHOOK_REFUSALS_PER_MINUTE", 30, problems, minimum=0),
        trusted_proxies=_networks(values, "TRUSTED_PROXIES", problems),
        webhook_github_addresses_only=_bool(values, "WEBHOOK_GITHUB_ADDRESSES_ONLY", False, problems),
    )
    if problems:
        raise ConfigError(problems)

    jwt_file, encryption_file = data_dir / "jwt-secret-key", data_dir / "encryption-key"
    found = jwt_file.exists() or encryption_file.exists()
    if create_keys:
        jwt_secret = values.get("JWT_SECRET_KEY") or load_or_create_key(jwt_file, lambda: secrets.token_urlsafe(48))
        enc_key = encryption_key or load_or_create_key(encryption_file, lambda: Fernet.generate_key().decode())
    else:  # what is set or was generated before, "" for the rest: nothing is written (`codegenapp status`)
        jwt_secret = values.get("JWT_SECRET_KEY") or _existing_key(jwt_file)
        enc_key = encryption_key or _existing_key(encryption_file)
    return replace(settings, jwt_secret_key=jwt_secret, encryption_key=enc_key, generated_keys_found=found)


def _existing_key(path: Path) -> str:
    return path.read_text().strip() if path.exists() else ""
