"""The webhook endpoint over real HTTP: verification, parsing, storage, acknowledgement."""

import asyncio
import json
import os

import pytest

from bot import metrics
from bot.events import wait_for
from tests.conftest import WEBHOOK_SECRET
from tests.ghfixtures import form_encoded_examples, load_webhook, require_fixtures, webhook_examples


def counter(metric, *labels) -> float:
    return (metric.labels(*labels) if labels else metric)._value.get()


def consistent_examples(fake_github, examples) -> list[tuple[str, str, dict]]:
    """The examples, each repository under one installation (GitHub's examples disagree), which the
    fake then knows with its repositories, as GitHub would."""
    installation_of: dict[str, int] = {}
    owners: dict[int, str] = {}
    loaded = []
    for event, name, path in examples:
        payload = json.loads(path.read_text())
        installation = payload.get("installation")
        full_name = (payload.get("repository") or {}).get("full_name")
        if isinstance(installation, dict) and isinstance(installation.get("id"), int) and full_name:
            installation["id"] = installation_of.setdefault(full_name, installation["id"])
            owners.setdefault(installation["id"], full_name.split("/")[0])
        loaded.append((event, name, payload))
    for installation_id, owner in owners.items():
        fake_github.add_installation(installation_id, owner,
                                     repos=[r for r, i in installation_of.items() if i == installation_id])
    return loaded


async def test_every_github_example_is_accepted_signed_and_refused_tampered(start_bot, fake_github) -> None:
    require_fixtures()
    bot = await start_bot(WEBHOOK_REFUSALS_PER_MINUTE="0")  # every tampered one gets its 401, not a 429
    examples = consistent_examples(fake_github, webhook_examples())
    assert len(examples) >= 100
    outcomes = []
    with bot.services.bus.subscribe() as events:
        for event, name, payload in examples:
            tampered = await bot.webhooks.send(event, payload, tamper=True)
            assert tampered.status == 401, (event, name, tampered)
            answer = await bot.webhooks.send(event, payload)
            assert answer.status == (200 if event == "ping" else 202), (event, name, answer)
            if event != "ping":
                outcomes.append(await wait_for(events, "job.finished", delivery_id=answer.body["delivery"]))
    failed = [(e.data["delivery_id"], e.data["outcome"]) for e in outcomes if e.data["outcome"] != "done"]
    assert failed == []
    assert await bot.store.deliveries.count() == len([e for e in examples if e[0] != "ping"])


async def test_form_encoded_deliveries_are_accepted(bot) -> None:
    require_fixtures()
    for event, name, path in form_encoded_examples():
        body = path.read_bytes()
        answer = await bot.webhooks.send(event, body, form_encoded=True)
        assert answer.status == (200 if event == "ping" else 202), (event, name, answer)


async def test_json_and_form_encoded_are_parsed_the_same(bot) -> None:
    payload = {"action": "opened", "zen": "ünïcode ✓", "installation": {"id": 5}}
    answer = await bot.webhooks.send("issues", payload, form_encoded=True)
    stored = await bot.store.deliveries.get(answer.body["delivery"])
    assert json.loads(stored.payload) == payload
    assert (stored.event, stored.action, stored.installation_id) == ("issues", "opened", 5)


async def test_duplicate_delivery_is_acknowledged_and_runs_once(bot) -> None:
    payload = {"action": "opened", "installation": {"id": 5}}
    before = counter(metrics.DUPLICATE_DELIVERIES)
    first, _ = await bot.deliver("issues", payload, delivery_id="same-id")
    again = await bot.webhooks.send("issues", payload, delivery_id="same-id")
    assert (first.status, again.status, again.body["status"]) == (202, 200, "duplicate")
    assert len(await bot.store.jobs.for_delivery("same-id")) == 1
    assert counter(metrics.DUPLICATE_DELIVERIES) == before + 1


async def test_concurrent_duplicates_run_once(bot) -> None:
    payload = {"action": "opened"}
    answers = await asyncio.gather(*(bot.webhooks.send("issues", payload, delivery_id="burst") for _ in range(20)))
    assert sorted(a.status for a in answers) == [200] * 19 + [202]
    assert len(await bot.store.jobs.for_delivery("burst")) == 1


@pytest.mark.parametrize("options, reason", [
    ({"secret": None}, "not signed"),
    ({"sha256": False, "sha1": True}, "only a sha1 signature"),
    ({"secret": "another-secret"}, "does not match"),
    ({"tamper": True}, "does not match"),
])
async def test_bad_signatures_are_refused_and_nothing_is_stored(bot, options, reason) -> None:
    before = counter(metrics.SIGNATURE_FAILURES)
    answer = await bot.webhooks.send("issues", {"action": "opened"}, delivery_id="refused", **options)
    assert answer.status == 401 and reason in answer.body["error"]
    assert await bot.store.deliveries.get("refused") is None
    assert counter(metrics.SIGNATURE_FAILURES) == before + 1


@pytest.mark.parametrize("signature", [
    "sha256=\u00e9",  # hmac.compare_digest refused to compare non-ASCII text: a TypeError, a 500
    "sha256=" + "\u00e9" * 64,
    "sha256=" + "g" * 64,
    "sha256=" + "a" * 63,
    "sha256=" + "a" * 65,
    "sha512=" + "a" * 64,
    "sha256",
])
async def test_a_malformed_signature_is_refused_not_a_500(bot, signature) -> None:
    from tests.webhook_sender import github_headers
    body = b'{"action": "opened"}'
    headers = github_headers("issues", body, secret=None, delivery_id="malformed-signature")
    headers["X-Hub-Signature-256"] = signature
    async with bot.webhooks.session.post(bot.webhooks.url, data=body, headers=headers) as response:
        assert response.status == 401
        assert "not of the form sha256=<64 hex digits>" in (await response.json())["error"]
    assert await bot.store.deliveries.get("malformed-signature") is None


async def test_any_configured_secret_is_accepted_for_rotation(start_bot) -> None:
    bot = await start_bot(WEBHOOK_SECRET=f"new-secret-abc,{WEBHOOK_SECRET}")
    assert (await bot.webhooks.send("issues", {"action": "x"})).status == 202
    assert (await bot.webhooks.send("issues", {"action": "x"}, secret="new-secret-abc")).status == 202


@pytest.mark.parametrize("body, headers, status, reason", [
    (b"{not json", {}, 400, "not valid JSON"),
    (b"[1, 2]", {}, 400, "not a JSON object"),
    (b"\xff\xfe", {}, 400, "not valid JSON"),
    (b"payload=%7B%7D&payload=%7B%7D", {"Content-Type": "application/x-www-form-urlencoded"}, 400, "exactly one"),
    (b"<xml/>", {"Content-Type": "application/xml"}, 415, "unsupported content type"),
    (b"{}", {"X-GitHub-Event": ""}, 400, "X-GitHub-Event"),
    (b"{}", {"X-GitHub-Delivery": "x" * 65}, 400, "X-GitHub-Delivery"),
    (b"{}", {"X-GitHub-Delivery": "d\u00e9livery"}, 400, "X-GitHub-Delivery"),
    (b"{}", {"X-GitHub-Event": "issues\tcomment"}, 400, "X-GitHub-Event"),
    (b"{}", {"X-GitHub-Event": "e" * 65}, 400, "X-GitHub-Event"),
    # Correctly signed, yet no GitHub id: 2^63 overflowed SQLite's INTEGER (a 500).
    (b'{"installation": {"id": 9223372036854775808}}', {}, 400, "installation.id"),
    (b'{"installation": {"id": 0}}', {}, 400, "installation.id"),
    (b'{"installation": {"id": -5}}', {}, 400, "installation.id"),
    (b'{"action": "' + b"a" * 65 + b'"}', {}, 400, "action"),
])
async def test_malformed_deliveries_get_a_reason_not_a_500(bot, body, headers, status, reason) -> None:
    from tests.webhook_sender import github_headers
    sent = github_headers("issues", body, secret=WEBHOOK_SECRET)
    sent.update(headers)
    async with bot.webhooks.session.post(bot.webhooks.url, data=body, headers=sent) as response:
        assert response.status == status
        assert reason in (await response.json())["error"]


async def test_oversized_body_is_refused(start_bot) -> None:
    bot = await start_bot(MAX_WEBHOOK_BYTES="1000")
    answer = await bot.webhooks.send("issues", {"action": "x", "pad": "y" * 2000})
    assert answer.status == 413


async def test_ping_is_answered_and_not_stored(bot) -> None:
    answer = await bot.webhooks.send("ping", {"zen": "Keep it logically awesome.", "hook_id": 1}, delivery_id="p")
    assert answer.status == 200 and answer.body["status"] == "pong"
    assert await bot.store.deliveries.get("p") is None


async def test_unknown_events_are_stored_and_ignored(bot) -> None:
    _, finished = await bot.deliver("made_up_event", {"action": "whatever"})
    assert finished.data["outcome"] == "done"


async def test_without_an_app_the_endpoint_says_what_to_configure(start_bot) -> None:
    bot = await start_bot(APP_ID=None, PRIVATE_KEY=None, WEBHOOK_SECRET=None)
    answer = await bot.webhooks.send("issues", {"action": "x"})
    assert answer.status == 503
    assert "set APP_ID, PRIVATE_KEY or PRIVATE_KEY_PATH, WEBHOOK_SECRET" in answer.body["error"]
    async with bot.webhooks.session.get(bot.url + "/") as response:
        assert "not configured" in await response.text()


async def test_health_and_metrics(bot) -> None:
    await bot.deliver("issues", load_webhook("issues", "opened") if _has_fixtures() else {"action": "opened"})
    async with bot.webhooks.session.get(bot.url + "/health") as response:
        health = await response.json()
    assert response.status == 200
    assert health["status"] == "ok" and health["database"]["ok"]
    workers = health["workers"]  # this process's worker, alive
    assert workers["alive"] == 1 and workers["live"][0]["id"] == workers["this_process"] == bot.services.worker.worker_id
    assert {"queued", "running", "dead", "ready_now", "oldest_ready_age_seconds", "by_kind"} <= set(health["queue"])
    assert health["sandbox"]["layers"]["net_namespace"] in (True, False)  # the probe's report is there
    browser = health["browser"]  # from a launch in the background: known now, or soon
    assert browser["found"] == os.access(browser["chromium"], os.X_OK)
    assert browser["status"] in ("checking", "ok", "failed")
    assert await asyncio.to_thread(bot.services.browser.wait, 90)  # then it is known, and says so
    async with bot.webhooks.session.get(bot.url + "/health") as response:
        browser = (await response.json())["browser"]
    assert browser["sandboxed"] == (browser["status"] == "ok" and "not_sandboxed_because" not in browser)
    if health["sandbox"]["mode"] != "bwrap":
        assert not browser.get("sandboxed")
    async with bot.webhooks.session.get(bot.url + "/metrics") as response:
        text = await response.text()
    for name in ("codegenapp_webhook_deliveries_total{event=\"issues\"}", "codegenapp_webhook_duplicates_total",
                 "codegenapp_webhook_signature_failures_total", "codegenapp_job_queue_depth{state=\"queued\"}",
                 "codegenapp_jobs_total{kind=\"webhook\",outcome=\"done\"}", "codegenapp_job_duration_seconds"):
        assert name in text, name
    assert "codegenapp_workers_live 1.0" in text  # refreshed at the scrape, like the queue's gauges
    assert "codegenapp_job_queue_oldest_ready_age_seconds " in text


def _has_fixtures() -> bool:
    from tests.ghfixtures import fixtures_dir
    return fixtures_dir() is not None


async def test_log_lines_of_a_job_carry_its_delivery_id_and_no_secret(bot) -> None:
    import io
    import logging

    from bot.logs import configure_logging
    stream = io.StringIO()
    handler = configure_logging("DEBUG", "json", stream=stream)
    try:
        await bot.deliver("issues", {"action": "opened", "installation": {"id": 5}}, delivery_id="traced-1")
        await bot.webhooks.send("issues", {"action": "opened"}, delivery_id="traced-2", secret="wrong-secret")
    finally:
        logging.getLogger().removeHandler(handler)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    handled = [line for line in lines if line["message"] == "handling issues.opened"]
    assert handled and handled[0]["delivery_id"] == "traced-1" and "job_id" in handled[0]
    assert WEBHOOK_SECRET not in stream.getvalue()
