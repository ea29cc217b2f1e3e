"""pytest fixtures for the fake GitHub; import them into tests/conftest.py."""

from __future__ import annotations

from collections.abc import AsyncIterator
from functools import cache

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.fakes.github import FakeGitHub

__all__ = ["app_private_key", "fake_github"]

APP_ID = 12345
_KEY_CACHE = "codegenapp/fake-github/app-private-key-pkcs1"


@cache
def generate_private_key_pem(tag: str = "app") -> str:
    """A 2048-bit RSA key as PKCS#1 PEM ("BEGIN RSA PRIVATE KEY", like the keys GitHub hands out),
    generated once per process and tag."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    ).decode()


def _loads_as_key(pem: object) -> bool:
    try:
        return isinstance(pem, str) and bool(serialization.load_pem_private_key(pem.encode(), password=None))
    except ValueError:
        return False


@pytest.fixture(scope="session")
def app_private_key(request: pytest.FixtureRequest) -> str:
    """The test GitHub App's private key (PEM). Kept in pytest's cache dir (.pytest_cache, not
    committed) so sessions do not regenerate it; a throwaway key, never a real one."""
    cache = getattr(request.config, "cache", None)  # None with -p no:cacheprovider
    if cache is not None and _loads_as_key(pem := cache.get(_KEY_CACHE, None)):
        return str(pem)
    pem = generate_private_key_pem()
    if cache is not None:
        cache.set(_KEY_CACHE, pem)
    return pem


@pytest.fixture
async def fake_github(app_private_key: str) -> AsyncIterator[FakeGitHub]:
    """A started FakeGitHub (app id 12345). After the test it must have seen no request GitHub
    would reject; a test that provokes such requests on purpose calls ``fake_github.take_errors()``."""
    fake = FakeGitHub(app_id=APP_ID, private_key_pem=app_private_key)
    await fake.start()
    try:
        yield fake
        fake.assert_clean()
    finally:
        await fake.close()
