"""``MetaMixin``: ``GET /meta``, GitHub's address ranges, answered anonymously (as GitHub does). What it
lists under ``hooks`` (the addresses webhooks come from) is ``hook_ranges``, which tests set; the rest
is the REST description's example."""

from __future__ import annotations

from tests.fakes.github.common import _handles, _Reply, _Request
from tests.fakes.github.state import FakeState


class MetaMixin(FakeState):
    hook_ranges: tuple[str, ...] = ("192.0.2.0/24",)  # TEST-NET-1: nobody's loopback

    @_handles("GET /meta")
    def _get_meta(self, request: _Request) -> _Reply:
        try:
            body = self.spec.example("GET", "/meta", 200) if self.spec is not None else {}
        except KeyError:
            body = {}
        return _Reply(200, {**body, "hooks": list(self.hook_ranges)})
