"""Why a validate or analysis step may have failed: it tried the network, which it has not by design
(only setup may download; pipeline/sandbox). A pure function of the step's output, so every report
(the check run, the comment, the validation page, `codegenapp validate`) can say the same.

The signs are what resolvers, curl, git, pip, npm, Go, Rust and apt print when a name does not resolve,
a connection is refused or no route exists. "Connection refused" also comes from a test whose local
service is not running, so the note says what it saw and suggests, rather than asserts.
"""

from __future__ import annotations

import re

NETWORK_STAGES = ("validate", "analysis")

_SIGNS = re.compile("|".join([
    r"Temporary failure in name resolution",
    r"Name or service not known",
    r"No address associated with hostname",
    r"nodename nor servname provided",
    r"Could not resolve host",
    r"Could not resolve hostname",
    r"getaddrinfo (?:failed|ENOTFOUND|EAI_AGAIN)",
    r"\bENOTFOUND\b",
    r"\bEAI_AGAIN\b",
    r"failed to lookup address information",
    r"dial tcp: lookup",
    r"Temporary failure resolving",
    r"Connection refused",
    r"\bECONNREFUSED\b",
    r"Network is unreachable",
    r"\bENETUNREACH\b",
    r"Failed to establish a new connection",  # pip / urllib3
    r"NewConnectionError",
]), re.IGNORECASE)


def network_note(stage: str, status: str, output: str) -> str:
    """The note for a step that failed (or timed out) in a stage without network, when its output shows
    a failed network access; "" otherwise."""
    if stage not in NETWORK_STAGES or status not in ("failed", "timed_out"):
        return ""
    found = _SIGNS.search(output)
    if found is None:
        return ""
    return (f"This step has no network by design: {stage} steps run offline (only loopback), and its output "
            f"shows a failed network access (“{found.group(0)}”). Move downloads (pip install, "
            "npm ci, fetching data) to setup, which has the network, and start any service the step needs "
            "within the step.")
