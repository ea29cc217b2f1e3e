"""The GitHub App registration made from the dashboard (the manifest flow), kept under DATA_DIR.

`DATA_DIR/registration.json` (mode 0600) holds the App's id, slug, page and OAuth client id in clear and
every secret of it (private key, webhook secret, OAuth client secret) Fernet-encrypted with
ENCRYPTION_KEY. A file, not a table: the setup page needs it before anything else is configured, and the
CLI's `worker` reads it the same way. Environment variables, when set, win over it (`apply`).

The one-time setup token (`DATA_DIR/setup-token`, mode 0600) guards the registration page while no App
is configured: only who can read DATA_DIR or the server's log may register the App.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import secrets
import stat
from dataclasses import asdict, dataclass
from pathlib import Path

from bot.config import Settings
from bot.crypto import Crypto
from bot.models import utcnow

log = logging.getLogger(__name__)

REGISTRATION_FILE = "registration.json"
SETUP_TOKEN_FILE = "setup-token"


@dataclass(frozen=True)
class Registration:
    app_id: str
    slug: str
    html_url: str
    client_id: str | None
    private_key: str
    webhook_secret: str
    client_secret: str | None
    owner: str | None = None
    registered_at: str = ""

    @property
    def install_url(self) -> str:
        return self.html_url.rstrip("/") + "/installations/new"

    def __repr__(self) -> str:  # never the secrets
        return f"Registration(app_id={self.app_id!r}, slug={self.slug!r})"


_SECRET_FIELDS = ("private_key", "webhook_secret", "client_secret")


def _write_private(path: Path, text: str) -> None:
    """Atomically replace `path` with `text`, mode 0600 from the start."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, stat.S_IRUSR | stat.S_IWUSR)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.replace(temporary, path)


def save(settings: Settings, registration: Registration) -> None:
    crypto = Crypto(settings.encryption_key)
    record = asdict(registration)
    for name in _SECRET_FIELDS:
        value = record.pop(name)
        record[f"{name}_encrypted"] = crypto.encrypt(value) if value else None
    record["registered_at"] = record["registered_at"] or utcnow().isoformat()
    _write_private(settings.data_dir / REGISTRATION_FILE, json.dumps(record, indent=2) + "\n")


def load(settings: Settings) -> Registration | None:
    path = settings.data_dir / REGISTRATION_FILE
    if not path.is_file():
        return None
    record = json.loads(path.read_text())
    crypto = Crypto(settings.encryption_key)
    for name in _SECRET_FIELDS:
        token = record.pop(f"{name}_encrypted", None)
        record[name] = crypto.decrypt(token) if token else None
    known = set(Registration.__dataclass_fields__)
    return Registration(**{k: v for k, v in record.items() if k in known})


def apply(settings: Settings, registration: Registration | None = None) -> Settings:
    """Settings with the stored registration filling what the environment left unset (the environment
    wins, value by value)."""
    registration = registration if registration is not None else load(settings)
    if registration is None:
        return settings
    changes: dict[str, object] = {}
    if not settings.app_id:
        changes["app_id"] = registration.app_id
    if not settings.private_key:
        changes["private_key"] = registration.private_key
    if not settings.webhook_secrets:
        changes["webhook_secrets"] = (registration.webhook_secret,)
    if not settings.github_client_id and registration.client_id:
        changes["github_client_id"] = registration.client_id
    if not settings.github_client_secret and registration.client_secret:
        changes["github_client_secret"] = registration.client_secret
    return settings.with_overrides(**changes) if changes else settings


def ensure_setup_token(settings: Settings) -> str:
    """The one-time setup token, created (mode 0600) when there is none yet."""
    path = settings.data_dir / SETUP_TOKEN_FILE
    if path.is_file() and (token := path.read_text().strip()):
        return token
    token = secrets.token_urlsafe(24)
    _write_private(path, token + "\n")
    return token


def check_setup_token(settings: Settings, given: str | None) -> bool:
    path = settings.data_dir / SETUP_TOKEN_FILE
    if not given or not path.is_file():
        return False
    return hmac.compare_digest(path.read_text().strip().encode(), given.encode())


def discard_setup_token(settings: Settings) -> None:
    (settings.data_dir / SETUP_TOKEN_FILE).unlink(missing_ok=True)
