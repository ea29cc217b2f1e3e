"""Reading a YAML configuration safely into checked values: the text composed into nodes (nesting depth
bounded before the recursive composer sees it), and the shapes every key is made of (mappings with
known, unique keys; text; booleans; lists; relative paths; seconds), each problem a `ConfigFileError`
that names the file, the key and the line. The keys themselves are parse.py's.
"""

from __future__ import annotations

import difflib
import posixpath
import re
from collections.abc import Mapping, Sequence

import yaml
from yaml.constructor import SafeConstructor

CONFIG_PATH = ".github/codegenapp.yml"
MAX_LIST_ITEMS = 100
MAX_DEPTH = 64  # nesting levels in the whole file

STR_TAG = "tag:yaml.org,2002:str"
INT_TAG = "tag:yaml.org,2002:int"
FLOAT_TAG = "tag:yaml.org,2002:float"
BOOL_TAG = "tag:yaml.org,2002:bool"
NULL_TAG = "tag:yaml.org,2002:null"
TEXT_TAGS = frozenset({STR_TAG, INT_TAG, FLOAT_TAG, BOOL_TAG})


class ConfigFileError(Exception):
    """A problem in the configuration file; `str()` is the sentence to show, with the file and line."""

    def __init__(self, message: str, key: str | None = None, line: int | None = None, *,
                 path: str = CONFIG_PATH) -> None:
        self.message = message
        self.key = key
        self.line = line
        self.path = path
        super().__init__(f"{path} line {line}: {message}" if line is not None else f"{path}: {message}")


def _line(node: yaml.Node) -> int:
    return node.start_mark.line + 1


def describe(node: yaml.Node) -> str:
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if node.tag == NULL_TAG:
        return "nothing"
    value = str(node.value)
    value = value if len(value) <= 60 else value[:57] + "..."
    return '"' + value.replace("\n", "\\n") + '"'


def suggest(word: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f'; did you mean "{close[0]}"?' if close else ""


class NodeReader:
    """Checked values from the nodes of one file (`path`); every error names the key and the line."""

    def __init__(self, path: str) -> None:
        self.path = path

    def error(self, message: str, key: str | None, node: yaml.Node | None) -> ConfigFileError:
        return ConfigFileError(message, key, _line(node) if node is not None else None, path=self.path)

    def mapping_items(self, node: yaml.MappingNode, key: str | None, allowed: Sequence[str] | None,
                      what: str) -> list[tuple[str, yaml.Node, yaml.Node]]:
        """(name, key node, value node) of a mapping with plain, unique keys (from `allowed` if given)."""
        items: list[tuple[str, yaml.Node, yaml.Node]] = []
        first_line: dict[str, int] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == NULL_TAG:
                raise self.error(f"{what} keys must be plain names", key, key_node)
            name = key_node.value
            if key_node.tag == "tag:yaml.org,2002:merge":
                raise self.error(f"YAML merge keys (<<) are not supported in {what}", key, key_node)
            where = f" in {what}" if key is not None else ""
            if allowed is not None and name not in allowed:
                valid = ", ".join(f'"{a}"' for a in allowed)
                raise self.error(f'unknown key "{name}"{where}{suggest(name, allowed)} (valid keys: {valid})',
                                 key or name, key_node)
            if name in first_line:
                raise self.error(f'"{name}" is set twice{where} (first on line {first_line[name]})',
                                 key or name, key_node)
            first_line[name] = _line(key_node)
            items.append((name, key_node, value_node))
        return items

    def not_null(self, node: yaml.Node, key: str, empty: str | None) -> None:
        if not (isinstance(node, yaml.ScalarNode) and node.tag == NULL_TAG):
            return
        if empty is None:
            raise self.error(f'"{key}" has no value; give it its keys, or remove it', key, node)
        raise self.error(f'"{key}" has no value; write "{key}: {empty}" for none, or remove the key '
                         "to use the project's setting", key, node)

    def text(self, node: yaml.Node, key: str, what: str) -> str:
        """A non-empty string from a scalar written as text, number or boolean (as written)."""
        if not isinstance(node, yaml.ScalarNode) or node.tag not in TEXT_TAGS:
            raise self.error(f"{what} must be a string, got {describe(node)}", key, node)
        value = str(node.value).strip()
        if not value:
            raise self.error(f"{what} is empty", key, node)
        if "\0" in value:
            raise self.error(f"{what} contains a NUL character", key, node)
        return value

    def boolean(self, node: yaml.Node, key: str, what: str) -> bool:
        if not isinstance(node, yaml.ScalarNode) or node.tag != BOOL_TAG:
            raise self.error(f"{what} must be true or false, got {describe(node)}", key, node)
        return bool(SafeConstructor().construct_yaml_bool(node))

    def sequence(self, node: yaml.Node, key: str, what: str) -> list[yaml.Node]:
        """A list (a single string counts as a one-item list), at most MAX_LIST_ITEMS long."""
        if isinstance(node, yaml.ScalarNode) and node.tag == STR_TAG:
            return [node]
        if not isinstance(node, yaml.SequenceNode):
            raise self.error(f'"{key}" must be a list of {what}, got {describe(node)}', key, node)
        if len(node.value) > MAX_LIST_ITEMS:
            raise self.error(f'"{key}" has {len(node.value)} entries; the limit is {MAX_LIST_ITEMS}', key, node)
        return list(node.value)

    def relative_path(self, node: yaml.Node, key: str, what: str, *, glob: bool) -> str:
        value = self.text(node, key, what)
        if (value.startswith("/") or ".." in value.split("/") or (not glob and "\\" in value)
                or (not glob and posixpath.normpath(value) == ".")):
            raise self.error(f'{what} must be a path relative to the repository root (no leading "/", no ".."), '
                             f"got {describe(node)}", key, node)
        return value if glob else posixpath.normpath(value)

    def fields(self, node: yaml.Node, key: str, allowed: Sequence[str], what: str) -> dict[str, yaml.Node]:
        if not isinstance(node, yaml.MappingNode):
            raise self.error(f'"{key}" must be a mapping of {what}, got {describe(node)}', key, node)
        return {name: value for name, _, value in self.mapping_items(node, key, allowed, f'"{key}"')}

    def seconds(self, node: yaml.Node, key: str, maximum: int, *, whole: bool) -> float:
        pattern = r"[0-9]+" if whole else r"[0-9]+(\.[0-9]+)?"
        if (not isinstance(node, yaml.ScalarNode) or node.tag not in (INT_TAG, FLOAT_TAG, STR_TAG)
                or not re.fullmatch(pattern, node.value.strip()) or not 0 < float(node.value) <= maximum):
            kind = "a whole number of seconds between 1 and" if whole else "a number of seconds more than 0, at most"
            raise self.error(f'"{key}" must be {kind} {maximum}, got {describe(node)}', key, node)
        return float(node.value)

    def required_text(self, fields: Mapping[str, yaml.Node], name: str, key: str, node: yaml.Node) -> str:
        if name not in fields:
            raise self.error(f'"{key}" needs "{name}"', f"{key}.{name}", node)
        return self.text(fields[name], f"{key}.{name}", f'"{key}.{name}"')


def _check_depth(text: str, path: str) -> None:
    """Refuse deep nesting from the event stream (iterative; libyaml when available, as PyYAML's own
    scanner is slow on deep flow nesting), before the recursive composer sees it. Syntax errors are
    left to the composer, so that their wording does not depend on libyaml being installed."""
    depth = 0
    try:
        for event in yaml.parse(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
            if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
                depth += 1
                if depth > MAX_DEPTH:
                    line = event.start_mark.line + 1 if event.start_mark is not None else None
                    raise ConfigFileError(f"is nested more than {MAX_DEPTH} levels deep", None, line, path=path)
            elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
                depth -= 1
    except yaml.MarkedYAMLError as exc:
        if exc.problem and "nesting depth" in exc.problem:  # libyaml's own limit (1000 levels)
            line = exc.problem_mark.line + 1 if exc.problem_mark is not None else None
            raise ConfigFileError(f"is nested more than {MAX_DEPTH} levels deep", None, line, path=path) from None
    except (yaml.YAMLError, ValueError):  # e.g. libyaml cannot encode lone surrogates: PyYAML reports them
        pass


def compose(text: str, path: str) -> yaml.Node | None:
    """The YAML nodes of `text` (None for an empty document); a ConfigFileError naming the line for anything
    YAML cannot read."""
    try:
        _check_depth(text, path)
        return yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "unreadable"
        context = f" ({exc.context})" if exc.context and exc.problem else ""
        raise ConfigFileError(f"is not valid YAML: {problem}{context}", None,
                              mark.line + 1 if mark is not None else None, path=path) from None
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, max(exc.position, 0)) + 1
        code = exc.character if isinstance(exc.character, int) else ord(exc.character[:1] or "\0")
        raise ConfigFileError(f"is not valid YAML: it contains a character YAML does not allow (U+{code:04X})",
                              None, line, path=path) from None
    except yaml.YAMLError as exc:
        raise ConfigFileError(f"is not valid YAML: {exc}", None, None, path=path) from None
    except RecursionError:
        raise ConfigFileError("is not valid YAML: nested too deeply", None, None, path=path) from None
