"""What the GitHub layer raises besides gidgethub's own errors."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bot.errors import PermanentError


class UnexpectedResponse(PermanentError):
    """GitHub answered 2xx with a body that lacks what the operation reads. Not retried: the same
    request gets the same answer. The message names the endpoint, what was missing and what came."""

    def __init__(self, endpoint: str, missing: str, body: Any) -> None:
        self.endpoint = endpoint
        self.missing = missing
        super().__init__(f"{endpoint} answered without {missing}: got {describe(body)}")


def describe(body: Any) -> str:
    """A short description of a body for an error message: its keys, never its values."""
    if isinstance(body, Mapping):
        keys = sorted(str(k) for k in body)
        shown = ", ".join(keys[:12]) + (", ..." if len(keys) > 12 else "")
        return f"an object with keys [{shown}]" if keys else "an empty object"
    if isinstance(body, list):
        return f"a list of {len(body)}"
    return "null" if body is None else type(body).__name__


def field(body: Any, path: str, endpoint: str) -> Any:
    """`body["a"]["b"]` for path "a.b", or UnexpectedResponse naming the endpoint and the path."""
    value = body
    for part in path.split("."):
        if not isinstance(value, Mapping) or value.get(part) is None:
            raise UnexpectedResponse(endpoint, f"`{path}`", body)
        value = value[part]
    return value
