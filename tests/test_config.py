import stat
from pathlib import Path

import pytest

from bot.config import ConfigError, load_settings


def load(tmp_path: Path, **env: str):
    return load_settings({"DATA_DIR": str(tmp_path / "data"), **env}, dotenv_path=None)


def test_defaults_without_an_app(tmp_path: Path) -> None:
    settings = load(tmp_path)
    assert not settings.app_configured
    assert settings.port == 3001
    assert settings.database_url == f"sqlite:///{tmp_path / 'data' / 'codegenapp.db'}"
    assert settings.public_url == "http://127.0.0.1:3001"
    assert settings.webhook_url == "http://127.0.0.1:3001/api/v1/webhooks/github"
    assert settings.missing_app_settings == ["APP_ID", "PRIVATE_KEY or PRIVATE_KEY_PATH", "WEBHOOK_SECRET"]


def test_generated_keys_are_private_and_stable(tmp_path: Path) -> None:
    first = load(tmp_path)
    for name in ("jwt-secret-key", "encryption-key"):
        mode = stat.S_IMODE((tmp_path / "data" / name).stat().st_mode)
        assert mode == 0o600, name
    second = load(tmp_path)
    assert (first.jwt_secret_key, first.encryption_key) == (second.jwt_secret_key, second.encryption_key)


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, APP_ID="my-app", PRIVATE_KEY="not a key", PORT="eighty", GITHUB_API_URL="ftp://x",
             LOG_FORMAT="xml", ENCRYPTION_KEY="short", DATABASE_URL="mysql://db")
    problems = caught.value.problems
    assert "PRIVATE_KEY is not a PEM RSA private key (expected the .pem file GitHub generated for the App)" in problems
    assert "APP_ID must be the App's numeric id, got 'my-app'" in problems
    assert "PORT must be a whole number, got 'eighty'" in problems
    assert "GITHUB_API_URL must be an http(s) URL, got 'ftp://x'" in problems
    assert "LOG_FORMAT must be json or pretty, got 'xml'" in problems
    assert any(p.startswith("ENCRYPTION_KEY must be a Fernet key") for p in problems)
    assert any(p.startswith("DATABASE_URL must be a sqlite:// or postgresql:// URL") for p in problems)
    assert len(problems) == 7


def test_private_key_path_and_escaped_newlines(tmp_path: Path, app_private_key: str) -> None:
    key_file = tmp_path / "app.pem"
    key_file.write_text(app_private_key)
    from_file = load(tmp_path, APP_ID="1", PRIVATE_KEY_PATH=str(key_file), WEBHOOK_SECRET="a,b")
    assert from_file.app_configured and from_file.webhook_secrets == ("a", "b")
    one_line = app_private_key.strip().replace("\n", "\\n")
    assert load(tmp_path, PRIVATE_KEY=one_line).private_key == from_file.private_key
    with pytest.raises(ConfigError, match="PRIVATE_KEY_PATH '/nonexistent.pem' cannot be read"):
        load(tmp_path, PRIVATE_KEY_PATH="/nonexistent.pem")


def test_dotenv_is_read_and_environment_wins(tmp_path: Path) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text("PORT=4000\nHOST=0.0.0.0\n")
    settings = load_settings({"DATA_DIR": str(tmp_path), "PORT": "5000"}, dotenv_path=dotenv)
    assert (settings.host, settings.port) == ("0.0.0.0", 5000)


def test_enterprise_api_url_keeps_its_path_and_postgres_urls_get_the_async_driver(tmp_path: Path) -> None:
    settings = load(tmp_path, GITHUB_API_URL="https://ghe.example.com/api/v3/",
                    DATABASE_URL="postgresql://u:p@127.0.0.1/db")
    assert settings.github_api_url == "https://ghe.example.com/api/v3"
    assert settings.database_url == "postgresql+asyncpg://u:p@127.0.0.1/db"


def test_secrets_are_not_in_repr(tmp_path: Path, app_private_key: str) -> None:
    settings = load(tmp_path, APP_ID="1", PRIVATE_KEY=app_private_key, WEBHOOK_SECRET="hunter2hunter2")
    assert "hunter2hunter2" not in repr(settings)
    assert "PRIVATE KEY" not in repr(settings)


def test_the_ui_checks_browser_is_debians_chromium_unless_set(tmp_path: Path) -> None:
    assert load(tmp_path).chromium_path == "/usr/bin/chromium"
    assert load(tmp_path, CHROMIUM_PATH="/opt/chromium/chrome").chromium_path == "/opt/chromium/chrome"


def test_setup_snapshots_leave_home_caches_out_unless_asked(tmp_path: Path) -> None:
    assert load(tmp_path).snapshot_home_caches is False
    assert load(tmp_path, SNAPSHOT_HOME_CACHES="true").snapshot_home_caches is True
    with pytest.raises(ConfigError, match="SNAPSHOT_HOME_CACHES must be true or false, got 'npm'"):
        load(tmp_path, SNAPSHOT_HOME_CACHES="npm")


def test_the_github_outage_budget_is_whole_hours(tmp_path: Path) -> None:
    assert load(tmp_path).github_outage_budget_hours == 6
    assert load(tmp_path, GITHUB_OUTAGE_BUDGET_HOURS="0").github_outage_budget_hours == 0
    with pytest.raises(ConfigError, match="GITHUB_OUTAGE_BUDGET_HOURS must be a whole number, got '1.5'"):
        load(tmp_path, GITHUB_OUTAGE_BUDGET_HOURS="1.5")


def test_the_abuse_limits_proxies_and_hook_allowlist(tmp_path: Path) -> None:
    from ipaddress import ip_network

    settings = load(tmp_path)
    assert (settings.login_requests_per_minute, settings.api_requests_per_minute,
            settings.webhook_refusals_per_minute) == (30, 600, 30)
    assert settings.trusted_proxies == () and settings.webhook_github_addresses_only is False
    settings = load(tmp_path, TRUSTED_PROXIES="10.0.0.0/8, ::1 ,192.0.2.7", WEBHOOK_GITHUB_ADDRESSES_ONLY="True",
                    API_REQUESTS_PER_MINUTE="0")
    assert settings.trusted_proxies == (ip_network("10.0.0.0/8"), ip_network("::1"), ip_network("192.0.2.7"))
    assert settings.webhook_github_addresses_only and settings.api_requests_per_minute == 0
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, TRUSTED_PROXIES="10.0.0.0/8,proxy.internal", WEBHOOK_GITHUB_ADDRESSES_ONLY="maybe",
             LOGIN_REQUESTS_PER_MINUTE="-1")
    assert caught.value.problems == [
        "LOGIN_REQUESTS_PER_MINUTE must be at least 0, got -1",
        "TRUSTED_PROXIES must be comma-separated IP addresses or CIDR ranges (10.0.0.0/8, ::1), got 'proxy.internal'",
        "WEBHOOK_GITHUB_ADDRESSES_ONLY must be true or false, got 'maybe'"]
