"""``AuthMixin``: who is asking, as GitHub decides it: the app's JWT, installation tokens (ghs_, with
their repositories and expiry), user-to-server tokens (ghu_), anonymous access; and which repositories
a principal may see. Used by the request pipeline (``server.py``) and by git over HTTP (``git.py``)."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization

from tests.fakes.github.common import Call, _GitHubError, _now, _parse_iso, _Principal, _RepoState
from tests.fakes.github.rest import _Route
from tests.fakes.github.state import FakeState

MAX_JWT_LIFETIME_S = 600


@lru_cache(maxsize=8)
def _public_key_of(private_key_pem: str) -> Any:
    """Loading an RSA key checks it (~35 ms); tests create many fakes with the same key."""
    return serialization.load_pem_private_key(private_key_pem.encode(), password=None).public_key()


def _looks_like_jwt(credential: str) -> bool:
    return credential.count(".") == 2


def _auth_kind(template: str) -> str:
    if template.startswith("/app-manifests/"):
        return "none"  # the app does not exist yet, so there is no key to sign a JWT with
    if template == "/app" or template.startswith("/app/") or template == "/repos/{owner}/{repo}/installation":
        return "jwt"
    if template in ("/rate_limit", "/meta"):
        return "any"
    if template == "/user" or template.startswith("/user/"):
        return "user"
    return "installation"


class AuthMixin(FakeState):
    """Credentials and principals (see the module docstring)."""

    _public_key: Any  # the app's public key, set by FakeGitHub.__init__

    # ------------------------------------------------------------------ authentication

    def _authenticate(self, call: Call, route: _Route, params: dict[str, str]) -> tuple[_Principal, _RepoState | None]:
        if not call.headers.get("user-agent"):
            raise _GitHubError(
                403,
                "Request forbidden by administrative rules. Please make sure your request has a User-Agent header",
                record=True,
            )
        credential = self._credential(call.headers.get("authorization"))
        kind = _auth_kind(route.template)
        if kind == "none":
            principal = _Principal("anonymous")
        elif kind == "jwt":
            principal = self._app_principal(credential)
        elif kind == "user":
            principal = self._user_principal(credential)
        elif kind == "any":
            principal = _Principal("anonymous") if credential is None else self._any_principal(credential)
        else:
            principal = self._installation_principal(credential)
        call.installation_id = principal.installation_id
        if principal.kind == "app" and params.get("installation_id", "").isdigit():
            call.installation_id = int(params["installation_id"])
        repo = None
        if route.template.startswith("/repos/{owner}/{repo}") and kind != "jwt":
            repo = self._accessible_repo(principal, f"{params['owner']}/{params['repo']}")
        return principal, repo

    @staticmethod
    def _credential(header: str | None) -> str | None:
        if header is None:
            return None
        scheme, _, value = header.strip().partition(" ")
        if scheme.lower() not in ("token", "bearer") or not value.strip():
            raise _GitHubError(
                401, "Bad credentials", record=True, detail=f"malformed Authorization header {header[:20]!r}"
            )
        return value.strip()

    def _app_principal(self, credential: str | None) -> _Principal:
        if credential is None:
            raise _GitHubError(401, "Requires authentication", record=True, detail="this endpoint needs the app's JWT")
        if not _looks_like_jwt(credential):
            raise _GitHubError(
                401, "A JSON web token could not be decoded", record=True, detail="expected the app's JWT, got a token"
            )
        problem = self._jwt_problem(credential)
        if problem is not None:
            raise _GitHubError(401, problem, record=True, detail="JWT rejected")
        return _Principal("app")

    def _jwt_problem(self, token: str) -> str | None:
        try:
            claims = jwt.decode(
                token,
                self._public_key,
                algorithms=["RS256"],
                options={"require": ["iat", "exp", "iss"], "verify_iss": False},
            )
        except jwt.ExpiredSignatureError:
            return (
                "'Expiration time' claim ('exp') must be a numeric value representing the future time "
                "at which the assertion expires."
            )
        except jwt.ImmatureSignatureError:
            return "'Issued at' claim ('iat') must be an Integer representing a time in the past."
        except jwt.PyJWTError:
            return "A JSON web token could not be decoded"
        if str(claims["iss"]) != str(self.app_id):
            return "'Issuer' claim ('iss') must be the app's id: integration not found"
        try:
            lifetime = float(claims["exp"]) - float(claims["iat"])
        except (TypeError, ValueError):
            return "A JSON web token could not be decoded"
        if lifetime > MAX_JWT_LIFETIME_S:
            return "'Expiration time' claim ('exp') is too far in the future"
        return None

    def _installation_principal(self, credential: str | None) -> _Principal:
        if credential is None:
            raise _GitHubError(401, "Requires authentication", record=True, detail="no installation token")
        if _looks_like_jwt(credential):
            raise _GitHubError(
                403,
                "Resource not accessible by integration",
                record=True,
                detail="the app's JWT was used where an installation token is needed",
            )
        if credential in self.user_tokens:
            return self._user_principal(credential)
        info = self.tokens.get(credential)
        if info is None:
            raise _GitHubError(401, "Bad credentials", record=True, detail="unknown token")
        if _parse_iso(info["expires_at"]) <= _now():
            raise _GitHubError(401, "Bad credentials", record=True, detail="installation token expired")
        if info["installation_id"] not in self.installations:
            raise _GitHubError(401, "Bad credentials", record=True, detail="the installation was deleted")
        names = info.get("repository_names")
        allowed = None if names is None else frozenset(n.lower() for n in names)
        return _Principal("installation", installation_id=info["installation_id"], repositories=allowed)

    def _user_principal(self, credential: str | None) -> _Principal:
        if credential is None:
            raise _GitHubError(401, "Requires authentication", record=True, detail="no user token")
        info = self.user_tokens.get(credential)
        if info is None:
            if credential in self.tokens:
                raise _GitHubError(
                    403,
                    "Resource not accessible by integration",
                    record=True,
                    detail="installation token on a /user endpoint",
                )
            raise _GitHubError(401, "Bad credentials", record=True, detail="unknown user token")
        return _Principal("user", user_login=info["login"])

    def _any_principal(self, credential: str) -> _Principal:
        if _looks_like_jwt(credential):
            return self._app_principal(credential)
        if credential in self.user_tokens:
            return self._user_principal(credential)
        return self._installation_principal(credential)

    def _accessible_repo(self, principal: _Principal, full_name: str) -> _RepoState:
        repo = self._repos.get(full_name.lower())
        if repo is not None and repo.installation_id is not None:
            if principal.kind == "user":
                if repo.installation_id in self._user_installations(principal):
                    return repo
            elif repo.installation_id == principal.installation_id and (
                principal.repositories is None or repo.full_name.lower() in principal.repositories
            ):
                return repo
        who = f"installation {principal.installation_id}" if principal.kind == "installation" else principal.kind
        raise _GitHubError(404, "Not Found", record=True, detail=f"{who} cannot access {full_name}")
