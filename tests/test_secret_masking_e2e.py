"""A project's secret never reaches GitHub or the database, whatever path it takes: end to end, from a
signed pull_request event through the real sandbox to the fake GitHub over HTTP, which records every
request body it was sent."""

import json

import pytest

from bot.events import wait_for
from tests.pull_requests import check_run, open_pull_request, record_project, validate
from tests.sandbox_support import needs_bwrap

pytestmark = needs_bwrap

SECRET = "tok-0123456789abcdef-SECRET-7788"  # 32 characters

# A linter that finds the token in the code it reads and says so, in every text SARIF lets it.
SARIF_QUOTING_THE_SECRET = '''\
import json, os
token = os.environ["API_TOKEN"]
result = {"ruleId": f"no-token-{token}", "level": "error",
          "message": {"text": f"hard-coded credential {token}"},
          "locations": [{"physicalLocation": {"artifactLocation": {"uri": "app.py"}, "region": {"startLine": 1}}}]}
rule = {"id": f"no-token-{token}", "helpUri": f"https://lint.example/{token}"}
print(json.dumps({"version": "2.1.0", "runs": [{"tool": {"driver": {"name": "lint", "rules": [rule]}},
                                                 "results": [result]}]}))
'''


def sent_to_github(fake_github) -> str:
    return json.dumps([call.json for call in fake_github.calls], ensure_ascii=False)


async def test_a_secret_in_a_sarif_finding_is_masked_in_its_annotation(bot, fake_github) -> None:
    config = "validate:\n  - 'true'\nanalysis:\n  - name: lint\n    run: python3 lint.py\n"
    scenario = open_pull_request(fake_github, config=config, base_files={"lint.py": SARIF_QUOTING_THE_SECRET})
    project = await record_project(bot.store, scenario)
    await bot.store.projects.set_secret(project.id, "API_TOKEN", SECRET)
    state = await validate(bot, scenario)
    [annotation] = check_run(fake_github, state)["annotations"]
    assert annotation["message"] == "hard-coded credential ***"
    assert annotation["title"] == "no-token-***" and annotation["raw_details"] == "https://lint.example/***"
    assert annotation["path"] == "app.py"
    assert SECRET not in sent_to_github(fake_github)


@pytest.mark.slow  # the live output shows at the first progress update, 3 s into the step
async def test_a_secret_cut_by_the_start_of_the_live_tail_is_not_shown_in_part(bot, fake_github) -> None:
    # The live tail is the last 8192 characters: the secret is printed so that 30 of its 32 are in it.
    command = 'printf %s "$API_TOKEN"; head -c 8162 /dev/zero | tr "\\\\0" x; sleep 4'
    scenario = open_pull_request(fake_github, config=f"validate:\n  - name: noisy\n    run: '{command}'\n")
    project = await record_project(bot.store, scenario)
    await bot.store.projects.set_secret(project.id, "API_TOKEN", SECRET)
    with bot.services.bus.subscribe() as events:
        await bot.webhooks.send("pull_request", scenario.payload("opened"))
        started = await wait_for(events, "validation.started", head_sha=scenario.head_sha)
        await wait_for(events, "validation.progress", validation_id=started.data["validation_id"], step="noisy",
                       has_output=True, timeout=30)
        live = (await bot.store.validations.get(started.data["validation_id"])).test_results["live"]
        await wait_for(events, "validation.completed", head_sha=scenario.head_sha, timeout=60)
    assert live["tail"].startswith("***xxx") and live["tail"].endswith("x")
    shown = [call.json["output"]["text"] for call in fake_github.calls_to("PATCH", "/repos/*/*/check-runs/*")
             if "Live output" in call.json.get("output", {}).get("text", "")]
    assert shown and all("***xxx" in text for text in shown)
    assert SECRET[2:] not in sent_to_github(fake_github) + json.dumps(live)
