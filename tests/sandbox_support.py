"""The skip marker of the tests that need bubblewrap (the sandbox the validations run in)."""

from __future__ import annotations

import shutil

import pytest

needs_bwrap = pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap not installed: `make install`")
