"""The merge queue's state as a JSON-able document and back (bot/store/merge_queue.py stores it). Pure.

Generic over the frozen dataclasses of model.py: each field is encoded by its value (tuples become
lists) and decoded by its type hint, so a field added to the model needs nothing here. A field missing
from a stored document (written before the field existed) takes the field's default.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from functools import cache
from typing import Any, TypeVar

from pipeline.merge_queue.model import Queue

T = TypeVar("T")


def encode(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: encode(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (tuple, list)):
        return [encode(item) for item in value]
    return value


def decode(kind: Any, data: Any) -> Any:
    """`data` (as `encode` made it) as a value of the type `kind`."""
    if data is None:
        return None
    if dataclasses.is_dataclass(kind):
        hints = _hints(kind)
        return kind(**{name: decode(hints[name], data[name]) for name in hints if name in data})
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        return decode(next(a for a in args if a is not type(None)), data)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(decode(args[0], item) for item in data)
        return tuple(decode(a, item) for a, item in zip(args, data, strict=True))
    if kind is float:
        return float(data)
    return data


@cache
def _hints(cls: type) -> dict[str, Any]:
    names = {f.name for f in dataclasses.fields(cls)}
    return {name: hint for name, hint in typing.get_type_hints(cls).items() if name in names}


def queue_to_document(queue: Queue) -> dict[str, Any]:
    document: dict[str, Any] = encode(queue)
    return document


def queue_from_document(document: dict[str, Any]) -> Queue:
    queue: Queue = decode(Queue, document)
    return queue
