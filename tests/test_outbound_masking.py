"""Every text the app writes to a check run or a comment passes through the masker in the GitHub layer,
whoever wrote it; and a step's output cut by the sandbox is masked across the cut."""

from __future__ import annotations

import json
from typing import Any

from bot.github.check_runs import CheckRuns
from bot.github.comments import Comments
from bot.redact import Redactor
from pipeline.sandbox.output import Output
from pipeline.sandbox.sandbox import RunResult
from pipeline.validation.stages import masked_output

SECRET = "project-secret-0123456789abcdef"


class _Recorder:
    """Stands in for gidgethub's GitHubAPI: records what would be sent."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str, Any]] = []

    async def post(self, url: str, *, data: Any) -> dict[str, Any]:
        self.sent.append(("POST", url, data))
        return {"id": 7}

    async def patch(self, url: str, *, data: Any) -> dict[str, Any]:
        self.sent.append(("PATCH", url, data))
        return {}


async def test_every_text_of_a_check_run_is_masked_and_no_identifier() -> None:
    gh = _Recorder()
    check_runs = CheckRuns(gh, "acme/widgets", app_id="1").masked(Redactor([SECRET]))  # type: ignore[arg-type]
    said = f"says {SECRET}"
    await check_runs.create(head_sha="a" * 40, details_url="https://app/validations/v1", external_id="v1",
                            title=said, summary=said)
    await check_runs.update(7, {"title": said, "summary": said, "text": said})
    await check_runs.complete(7, conclusion="failure", output={
        "title": said, "summary": said, "text": said,
        "annotations": [{"path": "app.py", "start_line": 1, "end_line": 1, "annotation_level": "failure",
                         "message": said, "title": said, "raw_details": said}],
        "images": [{"alt": said, "image_url": "https://app/shot.png", "caption": said}]},
        actions=[{"label": said, "description": said, "identifier": "rerun"}])
    await check_runs.add_annotations(7, title=said, summary=said, annotations=[
        {"path": "app.py", "start_line": 2, "end_line": 2, "annotation_level": "warning", "message": said}])
    await check_runs.cancel(7, said)
    everything = json.dumps([data for _, _, data in gh.sent])
    assert SECRET not in everything and everything.count("says ***") == 20
    created = gh.sent[0][2]
    assert (created["head_sha"], created["external_id"], created["details_url"], created["name"]) == \
        ("a" * 40, "v1", "https://app/validations/v1", "CodegenApp")
    completed = gh.sent[2][2]
    assert completed["output"]["images"][0]["image_url"] == "https://app/shot.png"
    assert completed["actions"][0]["identifier"] == "rerun"
    assert completed["output"]["annotations"][0]["path"] == "app.py"


async def test_a_comment_is_masked_but_for_the_marker_it_is_found_again_by() -> None:
    gh = _Recorder()
    redactor = Redactor([SECRET, "codegenapp"])  # a secret that the marker happens to contain
    comments = Comments(gh, "acme/widgets").masked(redactor)  # type: ignore[arg-type]
    await comments.create(1, f"<!-- codegenapp:validation -->\nfailed with {SECRET} (codegenapp)")
    await comments.edit(5, f"plain {SECRET}")
    assert [data["body"] for _, _, data in gh.sent] == [
        "<!-- codegenapp:validation -->\nfailed with *** (***)", "plain ***"]


def test_a_secret_cut_by_the_sandbox_keeping_head_and_tail_is_masked_on_both_sides() -> None:
    output = Output(max_bytes=400)  # keeps the first 100 bytes and the last 300
    output.feed(("h" * 90 + SECRET + "m" * 1000 + SECRET + "t" * 280).encode())
    result = RunResult(exit_code=1, timed_out=False, output=output.render(), output_truncated_bytes=output.dropped,
                       duration_seconds=1.0, signal=None)
    assert SECRET[:10] in result.output and SECRET[-20:] in result.output  # each side holds a part
    masked = masked_output(Redactor([SECRET]), result)
    assert masked.startswith("h" * 90 + "***\n… ") and f"omitted …\n***{'t' * 280}" in masked
