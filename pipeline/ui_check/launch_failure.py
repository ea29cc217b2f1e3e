"""Why Chromium did not start, in terms an operator can act on, from Playwright's launch error: its
first line says little ("Target page, context or browser has been closed"); the browser's own stderr
(`[pid=N][err] ...` in the log that follows) and how the process ended say what went wrong. Pure."""

from __future__ import annotations

import re

_STDERR = re.compile(r"^\s*(?:- )?\[pid=\d+\]\[err\] (.*?)\s*$", re.M)
_EXIT = re.compile(r"<process did exit: exitCode=(\w+), signal=(\w+)>")
_MAX_LINE = 300
_OURS = ("codegenapp browser sandbox:", "bwrap:")
_HINTS = (
    (re.compile(r"Can't find source path .*Permission denied"),
     "the browser's uid cannot reach it: every directory above it must be searchable by others (o+x)"),
    (re.compile(r"namespace|uid map|setting up uid|unshare", re.I),
     "unprivileged user namespaces look disabled on this host: allow them (sysctl "
     "kernel.unprivileged_userns_clone=1; on Ubuntu also kernel.apparmor_restrict_unprivileged_userns=0)"),
    (re.compile(r"execvp .*No such file or directory|exec: .*not found"),  # bwrap's, or the relay's shell
     "CHROMIUM_PATH must be Debian's chromium, under /usr (apt-get install chromium)"),
    (re.compile(r"error while loading shared libraries"), "reinstall Debian's chromium package"),
    (re.compile(r"Socket path too long"), "set TMPDIR to a shorter path"),
)


def launch_failure(message: str) -> str:
    """One line: how Chromium ended, the line of its output that tells why, and what to do about it."""
    first = (message or "").strip().split("\n", 1)[0]
    if "Timeout" in first and "exceeded" in first:
        return f"Chromium did not start in time ({first[:_MAX_LINE]}): the host may be overloaded"
    telling = _telling_line(list(dict.fromkeys(_STDERR.findall(message or ""))))  # the call log repeats them
    if telling is not None:
        hint = next((advice for pattern, advice in _HINTS if pattern.search(telling)), None)
        return f"Chromium did not start: {telling[:_MAX_LINE]}" + (f" ({hint})" if hint else "")
    ended = _EXIT.search(message or "")
    if ended is None:
        return first[:_MAX_LINE]
    # Without a word from it, how it ended is all there is (a signal may be Playwright's, after it failed).
    how = f"exit code {ended.group(1)}" if ended.group(1) != "null" else f"signal {ended.group(2)}"
    return (f"Chromium stopped before it was ready without saying why ({how}): check that CHROMIUM_PATH is "
            "Debian's chromium and that `chromium --headless --version` works")


def _telling_line(lines: list[str]) -> str | None:
    """Ours and bwrap's first (they end the launch), then Chromium's fatal ones, then its last word."""
    for wanted in (lambda line: line.startswith(_OURS),
                   lambda line: "FATAL" in line or "error while loading" in line):
        found = [line for line in lines if wanted(line)]
        if found:
            return found[0]
    return lines[-1] if lines else None
