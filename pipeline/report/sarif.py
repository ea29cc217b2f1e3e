"""Annotations from a SARIF 2.1.0 log (what an analysis step prints, e.g. `ruff check --output-format sarif`).

Results without a physical location, or whose file is outside the workspace, are dropped; a result
without a region is annotated on line 1 of its file. Pure: text in, annotations (pipeline/results.py) out.
"""

from __future__ import annotations

import json
import posixpath
import re
from typing import Any
from urllib.parse import unquote, urljoin, urlsplit

from pipeline.results import Annotation


class SarifError(ValueError):
    """The analysis step's output is not a SARIF 2.1.0 document this module can read."""


_SARIF_LEVELS = {"error": "failure", "warning": "warning", "note": "notice", "none": "notice"}


class _Sarif:
    """Reads one SARIF log; `where` paths in errors look like `runs[0].results[3].message`."""

    def __init__(self, workspace_prefix: str) -> None:
        prefix = workspace_prefix.removeprefix("file://")
        self.prefix = prefix.rstrip("/") + "/" if prefix.strip("/") else ""

    @staticmethod
    def obj(value: Any, where: str, optional: bool = False) -> dict[str, Any]:
        if value is None and optional:
            return {}
        if not isinstance(value, dict):
            raise SarifError(f"{where} must be an object")
        return value

    @staticmethod
    def array(value: Any, where: str) -> list[Any]:
        if value is None:
            return []
        if not isinstance(value, list):
            raise SarifError(f"{where} must be an array")
        return value

    @staticmethod
    def positive(value: Any, where: str) -> int | None:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise SarifError(f"{where} must be a positive integer, got {json.dumps(value)[:40]}")
        return value

    @staticmethod
    def string(value: Any, where: str) -> str | None:
        if value is not None and not isinstance(value, str):
            raise SarifError(f"{where} must be a string")
        return value

    def log(self, doc: Any) -> list[Annotation]:
        doc = self.obj(doc, "the SARIF log")
        version = doc.get("version")
        if version is not None and version != "2.1.0":
            raise SarifError(f"SARIF version {json.dumps(version)[:20]} is not supported (only 2.1.0)")
        if "runs" not in doc:
            raise SarifError('the SARIF log has no "runs"')
        annotations: list[Annotation] = []
        for r, run in enumerate(self.array(doc["runs"], "runs")):
            annotations += self.run(self.obj(run, f"runs[{r}]"), f"runs[{r}]")
        return annotations

    def run(self, run: dict[str, Any], where: str) -> list[Annotation]:
        driver = self.obj(self.obj(run.get("tool"), f"{where}.tool", True).get("driver"),
                          f"{where}.tool.driver", True)
        rules = [r if isinstance(r, dict) else {}
                 for r in self.array(driver.get("rules"), f"{where}.tool.driver.rules")]
        annotations = []
        for i, result in enumerate(self.array(run.get("results"), f"{where}.results")):
            at = f"{where}.results[{i}]"
            annotation = self.result(self.obj(result, at), at, run, rules)
            if annotation is not None:
                annotations.append(annotation)
        return annotations

    def rule(self, result: dict[str, Any], rules: list[dict[str, Any]],
             where: str) -> tuple[str | None, dict[str, Any]]:
        ref = self.obj(result.get("rule"), f"{where}.rule", True)
        rule_id = self.string(result.get("ruleId"), f"{where}.ruleId") or self.string(ref.get("id"), f"{where}.rule.id")
        index = result.get("ruleIndex", ref.get("index"))
        if isinstance(index, int) and not isinstance(index, bool) and 0 <= index < len(rules):
            return rule_id or self.string(rules[index].get("id"), f"{where}.rule"), rules[index]
        return rule_id, next((r for r in rules if rule_id is not None and r.get("id") == rule_id), {})

    def result(self, result: dict[str, Any], where: str, run: dict[str, Any],
               rules: list[dict[str, Any]]) -> Annotation | None:
        kind = result.get("kind", "fail")
        if kind in ("pass", "notApplicable") or result.get("baselineState") == "absent" or self.suppressed(result):
            return None
        rule_id, rule = self.rule(result, rules, where)
        level = result.get("level")
        if level is None:
            default = self.obj(rule.get("defaultConfiguration"), "rule.defaultConfiguration", True).get("level")
            level = "none" if kind != "fail" else default if isinstance(default, str) and default in _SARIF_LEVELS \
                else "warning"
        if not isinstance(level, str) or level not in _SARIF_LEVELS:
            raise SarifError(f"{where}.level must be error, warning, note or none, got {json.dumps(level)[:40]}")
        message = self.message(result, rule, rule_id, where)
        located = self.location(result, where, run)
        if located is None:
            return None
        path, lines, columns = located
        help_uri = rule.get("helpUri") if isinstance(rule.get("helpUri"), str) else None
        return Annotation(path=path, start_line=lines[0], end_line=lines[1], annotation_level=_SARIF_LEVELS[level],
                          message=message, title=rule_id, raw_details=help_uri,
                          start_column=columns[0], end_column=columns[1])

    def suppressed(self, result: dict[str, Any]) -> bool:
        suppressions = result.get("suppressions")
        return isinstance(suppressions, list) and any(
            isinstance(s, dict) and s.get("status", "accepted") == "accepted" for s in suppressions)

    def message(self, result: dict[str, Any], rule: dict[str, Any], rule_id: str | None, where: str) -> str:
        message = self.obj(result.get("message"), f"{where}.message")
        text = message.get("text")
        if not isinstance(text, str):
            text = message.get("markdown")
        if not isinstance(text, str) and isinstance(message.get("id"), str):
            strings = rule.get("messageStrings")
            entry = strings.get(message["id"]) if isinstance(strings, dict) else None
            text = entry.get("text") if isinstance(entry, dict) else None
        if not isinstance(text, str) or not text.strip():
            short = rule.get("shortDescription")
            text = short.get("text") if isinstance(short, dict) else None
        if not isinstance(text, str) or not text.strip():
            return rule_id or "(no message)"
        arguments = message.get("arguments")
        return _format_message(text, arguments if isinstance(arguments, list) else [])

    def location(self, result: dict[str, Any], where: str, run: dict[str, Any]
                 ) -> tuple[str, tuple[int, int], tuple[int | None, int | None]] | None:
        locations = self.array(result.get("locations"), f"{where}.locations")
        if not locations:
            return None
        at = f"{where}.locations[0]"
        physical = self.obj(self.obj(locations[0], at).get("physicalLocation"), f"{at}.physicalLocation", True)
        artifact = self.obj(physical.get("artifactLocation"), f"{at}.physicalLocation.artifactLocation", True)
        uri = self.uri(artifact, run, f"{at}.physicalLocation.artifactLocation")
        path = _repo_path(uri, self.prefix) if uri else None
        if path is None:
            return None
        lines, columns = self.region(physical.get("region"), f"{at}.physicalLocation.region")
        return path, lines, columns

    def uri(self, artifact: dict[str, Any], run: dict[str, Any], where: str) -> str | None:
        index = artifact.get("index")
        uri = self.string(artifact.get("uri"), f"{where}.uri")
        if uri is None and isinstance(index, int) and not isinstance(index, bool):
            artifacts = self.array(run.get("artifacts"), "artifacts")
            if 0 <= index < len(artifacts) and isinstance(artifacts[index], dict):
                location = artifacts[index].get("location")
                if isinstance(location, dict):
                    artifact = location
                    uri = self.string(location.get("uri"), f"artifacts[{index}].location.uri")
        base_id = artifact.get("uriBaseId")
        bases = run.get("originalUriBaseIds")
        if uri is not None and isinstance(base_id, str) and isinstance(bases, dict) and not urlsplit(uri).scheme:
            base = bases.get(base_id)
            base_uri = base.get("uri") if isinstance(base, dict) else None
            if isinstance(base_uri, str):
                uri = urljoin(base_uri if base_uri.endswith("/") else base_uri + "/", uri)
        return uri

    def region(self, region: Any, where: str) -> tuple[tuple[int, int], tuple[int | None, int | None]]:
        region = self.obj(region, where, True)
        start = self.positive(region.get("startLine"), f"{where}.startLine")
        if start is None:  # no region, or one given by character offsets: the file's first line
            return (1, 1), (None, None)
        end = self.positive(region.get("endLine"), f"{where}.endLine") or start
        if end < start:
            raise SarifError(f"{where}.endLine is before its startLine")
        first = self.positive(region.get("startColumn"), f"{where}.startColumn")
        last = self.positive(region.get("endColumn"), f"{where}.endColumn")
        if end != start or first is None:
            return (start, end), (None, None)
        # SARIF's endColumn is one past the last character; GitHub's end_column is the last one.
        return (start, end), (first, max(first, last - 1) if last is not None else None)


def _format_message(text: str, arguments: list[Any]) -> str:
    """SARIF message placeholders: {0} -> arguments[0]; {{ and }} are literal braces."""
    def replace(match: re.Match[str]) -> str:
        if match[1] is None:
            return match[0][0]
        index = int(match[1])
        return str(arguments[index]) if index < len(arguments) else match[0]
    return re.sub(r"\{\{|\}\}|\{(\d+)\}", replace, text)


def _repo_path(uri: str, prefix: str) -> str | None:
    """A repository-relative path from a SARIF artifact URI, or None when it is outside the workspace."""
    parts = urlsplit(uri)
    if parts.scheme == "file":
        path = unquote(parts.path)
    elif parts.scheme and len(parts.scheme) > 1:
        return None
    else:
        path = unquote(uri)
    if prefix and path.startswith(prefix):
        path = path[len(prefix):]
    if path.startswith("/") or not path or "\0" in path:
        return None
    path = posixpath.normpath(path)
    if path in (".", "..") or path.startswith("../"):
        return None
    return path


def parse_sarif(text: str, *, workspace_prefix: str = "") -> list[Annotation]:
    """Annotations from a SARIF 2.1.0 log (e.g. `ruff check --output-format sarif`).

    URIs lose `file://` and `workspace_prefix` (e.g. "/workspace/"); results outside it, without a
    location, passed, suppressed or absent from the baseline are dropped. Levels: error -> failure,
    warning -> warning, note/none -> notice (a result without a level takes its rule's default, then
    "warning"). The title is the rule id; raw_details the rule's help URI. Raises SarifError (only)
    for anything that is not SARIF 2.1.0.
    """
    if not isinstance(text, str):
        raise SarifError("the SARIF log must be text")
    if not text.strip():
        raise SarifError("the output is empty (expected a SARIF log)")
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SarifError(f"the output is not JSON ({exc.msg} at line {exc.lineno} column {exc.colno}); "
                         'if the tool prints more than the SARIF log, write it to a file and set "output:"') from None
    except RecursionError:
        raise SarifError("the SARIF log is nested too deeply") from None
    try:
        return _Sarif(workspace_prefix).log(doc)
    except RecursionError:  # pragma: no cover - json.loads already bounds the depth
        raise SarifError("the SARIF log is nested too deeply") from None
