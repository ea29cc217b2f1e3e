"""Where the UI check's screenshots live and how they are reached.

Stored with the validation: `DATA_DIR/validations/<validation id>/screenshots/<token>.png`, the token
128 random bits. Served without a login at `/validations/<validation id>/screenshots/<token>.png`
(so GitHub can show them): the address itself is the secret, like the details page's. Deleted
SCREENSHOT_RETENTION_DAYS after the run ended (pipeline/ui_check/retention.py); the address then answers 404.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from urllib.parse import urlsplit

FILE_NAME = re.compile(r"[0-9a-f]{32}\.png\Z")
SCREENSHOTS = "screenshots"


def screenshots_root(data_dir: Path) -> Path:
    """Everything the UI check stores, and the only tree the retention prune deletes in."""
    return data_dir / "validations"


def screenshots_dir(data_dir: Path, validation_id: str) -> Path:
    return screenshots_root(data_dir) / validation_id / SCREENSHOTS


def screenshot_url(public_url: str, validation_id: str, file: str) -> str:
    return f"{public_url.rstrip('/')}/validations/{validation_id}/screenshots/{file}"


def screenshot_file(data_dir: Path, validation_id: str, file: str) -> Path | None:
    """The stored file for a request, or None when the name is not one the check writes."""
    if not FILE_NAME.match(file) or not re.fullmatch(r"[0-9a-f]{32}", validation_id):
        return None
    path = screenshots_dir(data_dir, validation_id) / file
    return path if path.is_file() else None


def publicly_reachable(public_url: str) -> bool:
    """Whether GitHub could fetch images from the app: not a loopback or private address."""
    host = (urlsplit(public_url).hostname or "").lower()
    if not host or host == "localhost" or host.endswith(".localhost"):
        return False
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return True
    return address.is_global
