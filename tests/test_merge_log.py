"""Every merge outcome is one INFO line in the log (pipeline/merge/service.py `log_merge`): repository,
PR, head, method, who or what triggered it, and the result in words."""

from __future__ import annotations

import logging

import pytest

from tests.pull_requests import open_pull_request, seed_validation


def merge_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "pipeline.merge.service" and r.levelno == logging.INFO]


async def test_a_refused_and_a_done_merge_are_one_line_each(start_bot, fake_github, caplog) -> None:
    app = await start_bot()
    pr = open_pull_request(fake_github, config=None)
    fake_github.set_permission(pr.full_name, "wes", "write")
    caplog.set_level(logging.INFO, logger="pipeline.merge.service")
    sha7 = pr.head_sha[:7]

    running = await seed_validation(app.store, pr, conclusion=None)
    await app.deliver("issue_comment", pr.comment_payload("/merge", user="wes"))
    [refused] = merge_lines(caplog)
    assert refused == (f"{pr.full_name} PR #{pr.number} at {sha7} (method not chosen yet) by @wes via /merge: "
                       f"Not merging: the validation of {sha7} is still running.")

    assert await app.store.validations.start(running.id)
    assert await app.store.validations.complete(running.id, conclusion="success", title="ok", results={})
    await app.deliver("issue_comment", pr.comment_payload("/merge squash", user="wes"))
    [_, merged] = merge_lines(caplog)
    [merge] = fake_github.merges
    base = fake_github.pulls[(pr.full_name, pr.number)]["base"]["ref"]
    assert merged == (f"{pr.full_name} PR #{pr.number} at {sha7} (squash) by @wes via /merge: Merged into {base} "
                      f"as {merge['sha'][:7]}")
