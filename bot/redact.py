"""Masking of secret values in anything that leaves the process (logs, comments, check runs).

A known value is masked in these forms: as it is; URL-encoded (`%2F` and `+` for a space); each of its
lines of 16 characters or more (a PEM key leaks line by line); and base64, standard and URL-safe,
with or without padding, at each of the three byte alignments it can have inside a longer encoded
text (`printf "x%s" "$S" | base64` shifts it by one byte) and across line breaks (`base64` wraps
its output at 76 characters). Any other transformation (hex, reversed, split) is not recognized.

Text cut out of a longer text (the live tail of a step's output, the head and tail kept of a long
one) may hold part of a secret the cut went through: `redact_excerpt` masks that part too (or leaves
it out, when it is shorter than 4 characters and as likely a coincidence).

GitHub's own tokens (installation tokens, user tokens, personal access tokens) are masked by their
shape, whether or not the process knows them: an installation token is renewed every hour, so
matching by shape keeps the pattern from growing, and a token that leaked into a PR's output is
masked too.
"""

from __future__ import annotations

import base64
import bisect
import re
import threading
from collections.abc import Collection, Mapping, Sequence
from typing import Any, NamedTuple
from urllib.parse import quote, quote_plus

MASK = "***"
_MIN_SECRET_LENGTH = 4  # shorter values would mask ordinary words
GITHUB_TOKEN = re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{30,251}|github_pat_[A-Za-z0-9_]{22,247})\b")
_URL_SAFE = str.maketrans("+/", "-_")
_LINE_BREAK = re.compile(r"\r?\n")  # where an encoder may have wrapped its output


def _forms(value: str) -> set[str]:
    """The forms of `value` matched as they are."""
    forms = {value, quote(value, safe=""), quote_plus(value)}
    forms |= {line.strip() for line in value.splitlines() if len(line.strip()) >= 16}
    return {f for f in forms if len(f) >= _MIN_SECRET_LENGTH}


def _base64_forms(value: str) -> set[str]:
    """The base64 text of `value` wherever it sits in an encoded stream: for each byte offset (0, 1, 2)
    the characters made of its bits alone, and the whole encoding of the value on its own (padded or
    not); standard and URL-safe alphabets."""
    raw = value.encode()
    whole = base64.b64encode(raw).decode()
    found = {whole, whole.rstrip("=")}
    for offset in range(3):
        encoded = base64.b64encode(bytes(offset) + raw).decode()
        # character i holds bits [6i, 6i+6): those inside the value's bits [8*offset, 8*(offset+len)) are its own
        found.add(encoded[-(-8 * offset // 6):8 * (offset + len(raw)) // 6])
    found |= {f.translate(_URL_SAFE) for f in found}
    return {f for f in found if len(f) >= _MIN_SECRET_LENGTH}


def _alternation(forms: set[str]) -> re.Pattern[str] | None:
    """One pattern for `forms`, built as a trie (a position is tried against the forms that begin with
    its character, not against each form), the longest match first (a form inside another is masked
    with it)."""
    if not forms:
        return None
    trie: dict[str, Any] = {}
    for form in forms:
        node = trie
        for char in form:
            node = node.setdefault(char, {})
        node[""] = {}  # a form ends here
    return re.compile(_trie_pattern(trie))


def _trie_pattern(node: dict[str, Any]) -> str:
    pieces = []
    while len(node) == 1 and "" not in node:  # a run without a fork: no group, no recursion
        (char, node), = node.items()
        pieces.append(re.escape(char))
    branches = [re.escape(char) + _trie_pattern(child) for char, child in node.items() if char]
    if branches:
        group = branches[0] if len(branches) == 1 else f"(?:{'|'.join(branches)})"
        pieces.append(f"(?:{group})?" if "" in node else group)  # greedy: the longer form first
    return "".join(pieces)


class _Unwrapped:
    """A text without its line breaks, and the way back to where its characters stand in the text
    (worked out when first asked: a match here is rare)."""

    def __init__(self, text: str) -> None:
        self.original = text
        self.text = _LINE_BREAK.sub("", text)
        self._breaks: list[int] | None = None  # where each line break was, in self.text
        self._removed: list[int] = []  # characters removed up to and with it

    def _in_text(self, index: int) -> int:
        if self._breaks is None:
            self._breaks, removed = [], 0
            for found in _LINE_BREAK.finditer(self.original):
                removed += len(found[0])
                self._breaks.append(found.end() - removed)
                self._removed.append(removed)
        before = bisect.bisect_right(self._breaks, index)
        return index + (self._removed[before - 1] if before else 0)

    def span_in_text(self, start: int, end: int) -> tuple[int, int]:
        return self._in_text(start), self._in_text(end - 1) + 1


class _Patterns(NamedTuple):
    every: re.Pattern[str] | None  # every form, matched in the text as it is
    encoded: re.Pattern[str] | None  # the base64 forms, matched in the text without its line breaks too


class Redactor:
    """A set of secret values; `redact(text)` replaces every form of each by `***`."""

    def __init__(self, values: list[str] | tuple[str, ...] = (), *, parent: Redactor | None = None) -> None:
        self._parent = parent  # its values are masked too, by its own patterns (compiled once, shared)
        self._lock = threading.Lock()
        self._forms: set[str] = set()
        self._encoded: set[str] = set()  # the base64 forms (also in _forms)
        self._patterns = _Patterns(None, None)
        self._stale = False
        for value in values:
            self.add(value)

    def add(self, value: str | None, *, ephemeral: bool = False) -> None:
        """Mask `value` from now on. `ephemeral` marks a short-lived credential: one shaped like a
        GitHub token is already masked by its shape and is not remembered."""
        if not value or len(value) < _MIN_SECRET_LENGTH:
            return
        if ephemeral and GITHUB_TOKEN.fullmatch(value):
            return
        encoded = _base64_forms(value)
        forms = _forms(value) | encoded
        with self._lock:
            if not forms <= self._forms:
                self._forms |= forms
                self._encoded |= encoded
                self._stale = True  # rebuilt by the next redact(), not once per value added

    def _current_patterns(self) -> _Patterns:
        with self._lock:
            if self._stale:
                self._patterns = _Patterns(_alternation(self._forms), _alternation(self._encoded))
                self._stale = False
            return self._patterns

    def _chain(self) -> list[_Patterns]:
        return (self._parent._chain() if self._parent else []) + [self._current_patterns()]

    def _all_forms(self) -> set[str]:
        with self._lock:
            forms = set(self._forms)
        return forms | self._parent._all_forms() if self._parent else forms

    def _spans(self, text: str) -> list[tuple[int, int]]:
        """Where a form of a secret stands in `text` (a base64 one possibly across line breaks)."""
        unwrapped = _Unwrapped(text) if "\n" in text else None
        spans: list[tuple[int, int]] = []
        for every, encoded in self._chain():
            if every is not None:
                spans += [match.span() for match in every.finditer(text)]
            if encoded is not None and unwrapped is not None:
                spans += [unwrapped.span_in_text(*match.span()) for match in encoded.finditer(unwrapped.text)]
        return spans

    def redact(self, text: str) -> str:
        if not text:
            return text
        spans = self._spans(text)
        return GITHUB_TOKEN.sub(MASK, _replace_spans(text, spans, 0, len(text)) if spans else text)

    def redact_excerpt(self, text: str, *, cut_start: bool = False, cut_end: bool = False) -> str:
        """`redact` for a piece of a longer text: where the piece was cut (`cut_start`, `cut_end`), the
        part of a secret the cut went through (its end at the start, its beginning at the end) is
        masked too when it is at least 4 characters long, and left out when shorter (likely a
        coincidence, as common as a word ending the way some secret begins)."""
        if not text or not (cut_start or cut_end):
            return self.redact(text)
        forms = self._all_forms()
        spans = self._spans(text)
        first, last = 0, len(text)
        if cut_start and (part := max((_suffix_at_start(text, f) for f in forms), default=0)):
            if part >= _MIN_SECRET_LENGTH:
                spans.append((0, part))
            else:
                first = part
        if cut_end and (part := max((_prefix_at_end(text, f) for f in forms), default=0)):
            if part >= _MIN_SECRET_LENGTH:
                spans.append((len(text) - part, len(text)))
            else:
                last = len(text) - part
        return GITHUB_TOKEN.sub(MASK, _replace_spans(text, spans, first, last))

    def redact_json(self, value: Any, *, keep: Collection[str] = ()) -> Any:
        """A copy of a JSON value (dicts, lists, strings...) with every string masked, except the values
        of the keys in `keep` (identifiers such as a sha or a path, which masking would break)."""
        if isinstance(value, str):
            return self.redact(value)
        if isinstance(value, Mapping):
            return {k: v if k in keep else self.redact_json(v, keep=keep) for k, v in value.items()}
        if isinstance(value, Sequence):
            return [self.redact_json(item, keep=keep) for item in value]
        return value

    def child(self, values: list[str] | tuple[str, ...] = ()) -> Redactor:
        """A redactor that masks this one's values, now and to come, plus `values` (e.g. one project's
        secrets); only those are compiled anew."""
        return Redactor(values, parent=self)


def _suffix_at_start(text: str, form: str) -> int:
    """How many characters at the start of `text` continue `form` from inside it (0: none)."""
    longest = 0
    i = form.find(text[0], 1)
    while i != -1:
        length = min(len(form) - i, len(text))
        if form.startswith(text[:length], i):
            longest = max(longest, length)
        i = form.find(text[0], i + 1)
    return longest


def _prefix_at_end(text: str, form: str) -> int:
    """How many characters at the end of `text` begin `form` without completing it (0: none)."""
    longest = 0
    j = form.rfind(text[-1], 0, len(form) - 1)
    while j != -1:
        length = min(j + 1, len(text))
        if form.startswith(text[len(text) - length:], j + 1 - length):
            longest = max(longest, length)
        j = form.rfind(text[-1], 0, j)
    return longest


def _replace_spans(text: str, spans: list[tuple[int, int]], first: int, last: int) -> str:
    """text[first:last] with each run of overlapping or touching spans replaced by one MASK."""
    pieces, position = [], first
    for start, end in sorted(spans):
        start, end = max(start, first), min(end, last)
        if start >= end:
            continue
        if start > position or not pieces:
            pieces += [text[position:start], MASK]
        position = max(position, end)
    return "".join(pieces) + text[position:last]


# The process-wide redactor: app keys, webhook secrets and installation tokens are added as they load.
PROCESS_REDACTOR = Redactor()
