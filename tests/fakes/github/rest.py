"""GitHub's REST description (``RestSpec``, loaded once per file by ``load_rest_spec``) and the router
that matches a request path to one of its operations (``_Router``); request bodies are validated against
it here. Knows nothing of the fake's state."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import orjson
from openapi_schema_validator import OAS30Validator, oas30_format_checker
from referencing import Registry, Specification

_HTTP_METHODS = ("get", "put", "post", "patch", "delete")
# Path parameters that GitHub lets contain "/" (file paths, refs, branch names, "base...head").
_MULTI_SEGMENT_PARAMS = {"path": ".*", "ref": ".+", "branch": ".+", "basehead": ".+"}


def _pointer(*parts: str) -> str:
    return "/" + "/".join(p.replace("~", "~0").replace("/", "~1") for p in parts)


class RestSpec:
    """GitHub's REST description: operations, body validators and response examples.

    Loaded once per file per process (``load_rest_spec``); validators are built lazily, once per
    operation, and shared by every FakeGitHub.
    """

    _URI = "urn:codegenapp:github-rest-description"

    def __init__(self, doc: dict[str, Any]) -> None:
        self.doc = doc
        # OPAQUE: plain JSON-pointer resolution, no `id` scanning of GitHub's schemas.
        resource = Specification.OPAQUE.create_resource(doc)
        self._registry: Registry[Any] = Registry().with_resource(self._URI, resource)
        self._validators: dict[tuple[str, str], Any] = {}
        self._examples: dict[tuple[str, str, int], Any] = {}

    def operations(self) -> list[tuple[str, str]]:
        return [
            (method.upper(), template)
            for template, item in self.doc.get("paths", {}).items()
            for method in item
            if method in _HTTP_METHODS
        ]

    def operation(self, method: str, template: str) -> dict[str, Any] | None:
        found = self.doc.get("paths", {}).get(template, {}).get(method.lower())
        return found if isinstance(found, dict) else None

    def resolve(self, node: Any) -> Any:
        while isinstance(node, dict) and "$ref" in node:
            target: Any = self.doc
            for part in node["$ref"].removeprefix("#/").split("/"):
                target = target[part.replace("~1", "/").replace("~0", "~")]
            node = target
        return node

    def body_errors(self, method: str, template: str, body: Any, *, present: bool) -> list[str]:
        operation = self.operation(method, template)
        if operation is None or "requestBody" not in operation:
            return []
        request_body = self.resolve(operation["requestBody"])
        if not present:
            return ["a request body is required"] if request_body.get("required") else []
        validator = self._validator(method, template, operation)
        if validator is None:
            return []
        return [_format_validation_error(e) for e in sorted(validator.iter_errors(body), key=lambda e: list(e.path))]

    def _validator(self, method: str, template: str, operation: dict[str, Any]) -> Any:
        key = (method, template)
        if key not in self._validators:
            ref = operation["requestBody"].get("$ref")
            base = ref.removeprefix("#") if ref else _pointer("paths", template, method.lower(), "requestBody")
            content = self.resolve(operation["requestBody"]).get("content", {})
            self._validators[key] = (
                OAS30Validator(
                    {"$ref": f"{self._URI}#{base}{_pointer('content', 'application/json', 'schema')}"},
                    registry=self._registry,
                    format_checker=oas30_format_checker,
                )
                if "schema" in content.get("application/json", {})
                else None
            )
        return self._validators[key]

    def success_status(self, method: str, template: str) -> int | None:
        operation = self.operation(method, template) or {}
        codes = sorted(int(c) for c in operation.get("responses", {}) if c.isdigit() and c.startswith("2"))
        return codes[0] if codes else None

    def example(self, method: str, template: str, status: int) -> Any:
        """A deep copy of the first example of that response; KeyError when there is none."""
        key = (method, template, status)
        if key not in self._examples:
            found = self._find_example(method, template, status)
            self._examples[key] = found if found is KeyError else orjson.dumps(found)
        if self._examples[key] is KeyError:
            raise KeyError(key)
        return orjson.loads(self._examples[key])  # a fresh copy; ~50x faster than copy.deepcopy

    def _find_example(self, method: str, template: str, status: int) -> Any:
        operation = self.operation(method, template) or {}
        response = self.resolve(operation.get("responses", {}).get(str(status), {}))
        content = response.get("content", {})
        media: dict[str, Any] = content.get("application/json") or next(iter(content.values()), {})
        if media.get("examples"):
            return self.resolve(next(iter(media["examples"].values()))).get("value", KeyError)
        return media.get("example", KeyError)


def _format_validation_error(error: Any) -> str:
    where = "/".join(str(p) for p in error.absolute_path) or "(body)"
    text = f"{where}: {error.message}"
    if error.context:
        reasons = sorted({sub.message for sub in error.context})
        text += " [" + "; ".join(reasons)[:400] + "]"
    return text


@lru_cache(maxsize=4)
def load_rest_spec(path: Path) -> RestSpec:
    return RestSpec(json.loads(path.read_text(encoding="utf-8")))


@dataclass(frozen=True)
class _Route:
    method: str
    template: str
    regex: re.Pattern[str]
    literal_segments: int

    @property
    def name(self) -> str:
        return f"{self.method} {self.template}"


def _compile_template(template: str) -> re.Pattern[str]:
    pieces = re.split(r"\{(\w+)\}", template)
    regex = "".join(
        re.escape(piece) if i % 2 == 0 else f"(?P<{piece}>{_MULTI_SEGMENT_PARAMS.get(piece, '[^/]+')})"
        for i, piece in enumerate(pieces)
    )
    return re.compile(regex)


class _Router:
    def __init__(self, operations: Iterable[tuple[str, str]]) -> None:
        routes = [
            _Route(method, template, _compile_template(template), sum("{" not in s for s in template.split("/")))
            for method, template in operations
        ]
        # The most literal template wins: ".../branches/{branch}/protection" before ".../branches/{branch}".
        self._routes = sorted(routes, key=lambda r: -r.literal_segments)

    def match(self, method: str, path: str) -> tuple[_Route, dict[str, str]] | None:
        for route in self._routes:
            if route.method == method and (found := route.regex.fullmatch(path)):
                return route, found.groupdict()
        return None


def _parse_operations(operations: Iterable[str]) -> list[tuple[str, str]]:
    return [(op.split(" ", 1)[0], op.split(" ", 1)[1]) for op in operations]
