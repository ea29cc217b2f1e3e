"""README.md, .env.example and app.yml stay true to the code."""

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def variables_read_by_config() -> set[str]:
    source = (ROOT / "bot" / "config.py").read_text()
    names = set(re.findall(r'values\.get\("([A-Z_]+)"', source))
    names |= set(re.findall(r'_[a-z]+\(values, "([A-Z_]+)"', source))  # _int, _bool, ...
    return names


def test_env_example_lists_exactly_the_variables_the_config_reads() -> None:
    example = {line.split("=", 1)[0] for line in (ROOT / ".env.example").read_text().splitlines()
               if re.match(r"^[A-Z_]+=", line)}
    assert example == variables_read_by_config()


def test_readme_documents_every_variable() -> None:
    readme = (ROOT / "README.md").read_text()
    missing = [name for name in variables_read_by_config() if f"`{name}`" not in readme]
    assert missing == []


def test_readme_names_the_two_commands_of_a_fresh_machine() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "make run" in readme and "make test" in readme


def test_app_manifest_subscribes_to_the_events_the_handlers_use() -> None:
    from handlers import router
    manifest = yaml.safe_load((ROOT / "app.yml").read_text())
    always_delivered = {"installation", "installation_repositories", "github_app_authorization"}
    handled = set(router._shallow_routes) | set(router._deep_routes)
    assert set(manifest["default_events"]) == handled - always_delivered
    assert manifest["public"] is False
