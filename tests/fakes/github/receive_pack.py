"""The smart HTTP ``git-receive-pack`` exchange, just enough to refuse a push as GitHub does: read the
ref updates a push asks for, and write the report that declines them (``ng <ref> <reason>``, with
``remote: ...`` lines on the side band). Pure: bytes in, bytes out."""

from __future__ import annotations

from dataclasses import dataclass

_FLUSH = b"0000"
_MAX_SIDEBAND_DATA = 65515  # side-band-64k: 65520 bytes a packet, less the length and the band byte


@dataclass(frozen=True)
class RefUpdate:
    old: str
    new: str
    ref: str


def _pkt(data: bytes) -> bytes:
    return b"%04x" % (len(data) + 4) + data


def read_commands(body: bytes) -> tuple[list[RefUpdate], set[str]]:
    """The ref updates of a receive-pack request and the capabilities the client asked for."""
    updates, capabilities, at = [], set(), 0
    while at + 4 <= len(body):
        length = int(body[at : at + 4], 16)
        if length == 0:
            break
        line, at = body[at + 4 : at + length], at + length
        command, _, caps = line.rstrip(b"\n").partition(b"\0")
        if caps:
            capabilities.update(caps.decode().split())
        words = command.decode().split(" ", 2)
        if len(words) == 3:  # not "shallow <sha>" (a push from a shallow clone) or a push certificate
            updates.append(RefUpdate(*words))
    return updates, capabilities


def refusal(updates: list[RefUpdate], capabilities: set[str], reasons: dict[str, str], messages: list[str]) -> bytes:
    """The body of a receive-pack response that updated nothing: each ref ``ng`` with its reason
    (``reasons[ref]``, else "failed to update ref"), ``messages`` shown by git as ``remote: ...``."""
    report = _pkt(b"unpack ok\n") + b"".join(
        _pkt(f"ng {u.ref} {reasons.get(u.ref, 'failed to update ref')}\n".encode()) for u in updates
    ) + _FLUSH
    if not ({"side-band-64k", "side-band"} & capabilities):
        return report if {"report-status", "report-status-v2"} & capabilities else b""
    limit = _MAX_SIDEBAND_DATA if "side-band-64k" in capabilities else 995
    out = [_pkt(b"\x02" + f"{line}\n".encode()) for line in messages]
    out += [_pkt(b"\x01" + report[i : i + limit]) for i in range(0, len(report), limit)]
    return b"".join(out) + _FLUSH
