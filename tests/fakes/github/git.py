"""``GitMixin``: git over smart HTTP (``git http-backend`` as CGI) for the real bare repositories made by
``git_repo()``, with GitHub's authentication; see the package docstring. A push updates the fake's
branches and the heads of open pulls on the pushed branch; a branch that moves (push or ``GitRepo``
commit) has the mergeability of its pulls recomputed (``_branches_moved``, ``merges.py``); a push to a
branch the App may not push to is declined (``_declined_push``, ``refs.py``). As on GitHub, the server
takes forced non-fast-forward pushes (git itself refuses them without ``--force``).

Unlike the resource modules, this one leans on others of the composed ``FakeGitHub``: credentials are
checked with ``_any_principal``/``_accessible_repo`` (``auth.py``), ``fail_next`` faults are taken with
``_take_fault`` (``server.py``), and ``add_pull_from_repo`` ends in ``add_pull`` (``pulls.py``)."""

from __future__ import annotations

import asyncio
import base64
import re
import tempfile
from pathlib import Path
from typing import Any

from aiohttp import web

from tests.fakes.github.common import Call, _GitHubError, _iso, _now, _reason, _RepoState
from tests.fakes.github.state import FakeState
from tests.gitrepos import GitRepo, git_env

_GIT_SERVICES = ("git-upload-pack", "git-receive-pack")
GIT_TIMEOUT_S = 60.0


def _parse_cgi(output: bytes) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and body of a CGI response (headers end at the first empty line)."""
    for separator in (b"\r\n\r\n", b"\n\n"):
        head, found, body = output.partition(separator)
        if found:
            break
    else:
        return 502, {}, b"malformed CGI response\n"
    status, headers = 200, {}
    for line in head.decode("latin-1").splitlines():
        name, _, value = line.partition(":")
        if name.strip().lower() == "status":
            status = int(value.split()[0])
        elif name.strip():
            headers[name.strip()] = value.strip()
    return status, headers, body


class GitMixin(FakeState):
    """Git repositories and their smart HTTP endpoints (see the module docstring)."""

    # ------------------------------------------------------------------ git repositories

    @property
    def git_root(self) -> Path:
        """Where the bare repositories live: ``<git_root>/<owner>/<repo>.git`` (lower case)."""
        if self._git_root is None:
            self._require_started()
            self._git_root = Path(tempfile.mkdtemp(prefix="fakegithub-git-"))
        return self._git_root

    def git_repo(self, full_name: str) -> GitRepo:
        """The real git repository of ``full_name`` (created empty the first time; the repository must
        have been added with ``add_repo``/``add_installation`` or by ``add_pull`` for a fork)."""
        state = self._repo_state(full_name)
        key = state.full_name.lower()
        if key not in self._git_repos:
            owner, name = key.split("/")
            self._git_repos[key] = GitRepo.init(
                self.git_root / owner / f"{name}.git",
                default_branch=state.data["default_branch"],
                on_ref_update=lambda ref, sha: self._git_ref_updated(key, ref, sha),
            )
            # As on GitHub: refs/pull/* are advertised to fetches but cannot be pushed to.
            for setting, value in (
                ("receive.hideRefs", "refs/pull"),
                ("uploadpack.allowAnySHA1InWant", "true"),
                ("http.receivepack", "true"),
                ("gc.auto", "0"),
                ("core.logAllRefUpdates", "false"),
            ):
                self._git_repos[key].git("config", setting, value)
        return self._git_repos[key]

    def add_pull_from_repo(
        self,
        full_name: str,
        number: int,
        *,
        head_ref: str = "feature",
        base_ref: str = "main",
        head_full_name: str | None = None,
        **options: Any,
    ) -> dict[str, Any]:
        """``add_pull`` with ``head_sha``/``base_sha`` taken from the branches of the git repositories
        (the head branch from ``head_full_name``'s repository for a fork, which must exist then);
        ``refs/pull/{number}/head`` of the base repository is pointed at the head. ``options`` go to
        ``add_pull`` (``user_login``, ``draft``, ``title``...)."""
        base_git = self.git_repo(full_name)
        head_git = self.git_repo(head_full_name) if head_full_name is not None else base_git
        return self.add_pull(
            full_name,
            number,
            head_sha=head_git.rev_parse(f"refs/heads/{head_ref}"),
            base_sha=base_git.rev_parse(f"refs/heads/{base_ref}"),
            head_ref=head_ref,
            base_ref=base_ref,
            head_full_name=head_full_name,
            **options,
        )

    def _git_ref_updated(self, key: str, ref: str, sha: str | None) -> None:
        state = self._repos.get(key)
        if state is None or not ref.startswith("refs/heads/"):
            return
        branch = ref.removeprefix("refs/heads/")
        if sha is None:
            state.branches.pop(branch, None)
        else:
            state.branches[branch] = sha
        self._branches_moved(state, {branch})  # merges.py

    def _git_after_push(self, key: str) -> None:
        """Sync the fake's branches with the pushed repository, and move open pulls whose head branch moved."""
        state, git = self._repos.get(key), self._git_repos.get(key)
        if state is None or git is None:
            return
        heads = {ref.removeprefix("refs/heads/"): sha for ref, sha in git.refs("refs/heads/").items()}
        moved = {name for name in heads.keys() | state.branches.keys() if heads.get(name) != state.branches.get(name)}
        state.branches = dict(heads)  # the git repository is the truth once it is pushed to
        for (full, number), pull in self.pulls.items():
            if (
                pull["state"] == "open"
                and pull["head"]["repo"]["full_name"].lower() == key
                and heads.get(pull["head"]["ref"], pull["head"]["sha"]) != pull["head"]["sha"]
            ):
                pull["head"]["sha"] = heads[pull["head"]["ref"]]
                pull["updated_at"] = _iso(_now())
                self._git_point_pull_ref(self._repo_state(full), number, state, pull["head"]["sha"])
        self._branches_moved(state, moved)  # merges.py

    async def _serve_git(self, request: web.Request, call: Call, found: re.Match[str]) -> web.StreamResponse:
        service = request.query.get("service") if found["service"] == "info/refs" else found["service"]
        call.operation = service if service in _GIT_SERVICES else None
        full_name = f"{found['owner']}/{found['repo']}"
        state = self._repos.get(full_name.lower())
        if call.operation is None:
            call.errors.append("dumb HTTP git (info/refs without ?service=) is not served by GitHub")
            return self._git_text(403, "Dumb HTTP protocol is not supported.")
        if (request.method, found["service"]) not in (("GET", "info/refs"), ("POST", service)):
            call.errors.append(f"{request.method} is not how git calls {found['service']}")
            return self._git_text(405, "Method Not Allowed")
        push = service == "git-receive-pack"
        problem = self._git_access_problem(call, state, full_name, push=push)
        if problem is not None:
            return problem
        assert state is not None
        key = state.full_name.lower()
        if key not in self._git_repos:
            call.errors.append(f"{state.full_name} has no git repository: call fake.git_repo({state.full_name!r})")
            return self._git_text(404, "Repository not found.")
        fault = self._take_fault(call)
        if fault is not None:
            return web.Response(status=fault.status, text=_reason(fault.status), headers=fault.headers)
        body = await request.read()
        if push and request.method == "POST":
            declined = self._declined_push(call, state, body)  # refs.py
            if declined is not None:
                return declined
        owner, name = key.split("/")
        env = git_env(
            {
                "GIT_PROJECT_ROOT": str(self.git_root),
                "GIT_HTTP_EXPORT_ALL": "1",
                "PATH_INFO": f"/{owner}/{name}.git/{found['service']}",
                "REQUEST_METHOD": request.method,
                "QUERY_STRING": request.query_string,
                "CONTENT_TYPE": request.headers.get("Content-Type", ""),
                "CONTENT_LENGTH": str(len(body)),  # aiohttp has already undone chunking and gzip
                "REMOTE_USER": self._git_user(call) or "",
                "REMOTE_ADDR": request.remote or "127.0.0.1",
                "HTTP_GIT_PROTOCOL": request.headers.get("Git-Protocol", ""),
                "SERVER_PROTOCOL": "HTTP/1.1",
                "GATEWAY_INTERFACE": "CGI/1.1",
            }
        )
        process = await asyncio.create_subprocess_exec(
            "git",
            "http-backend",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
        )
        try:
            out, err = await asyncio.wait_for(process.communicate(body), GIT_TIMEOUT_S)
        except TimeoutError:
            process.kill()
            await process.wait()
            call.errors.append(f"git http-backend took more than {GIT_TIMEOUT_S}s")
            return self._git_text(504, "Gateway Timeout")
        status, headers, payload = _parse_cgi(out)
        if process.returncode != 0 or status >= 500:
            call.errors.append(f"git http-backend failed ({process.returncode}): {err.decode(errors='replace')}")
        if push and status == 200 and request.method == "POST":
            self._git_after_push(key)
        return web.Response(status=status, body=payload, headers=headers)

    def _git_access_problem(
        self, call: Call, state: _RepoState | None, full_name: str, *, push: bool
    ) -> web.Response | None:
        """None when the request may go on; else GitHub's answer (recording what GitHub would reject)."""
        challenge = self._git_text(401, "Invalid username or token.", {"WWW-Authenticate": 'Basic realm="GitHub"'})
        credential = self._git_credential(call.headers.get("authorization"))
        if credential is None:
            if state is not None and not state.data["private"] and not push:
                return None  # anonymous read of a public repository
            return challenge  # git's normal first step: it retries with credentials when it has some
        try:
            principal = self._any_principal(credential) if credential else None
        except _GitHubError as error:
            principal, detail = None, error.describe()
        else:
            detail = "the app's JWT is no git credential" if principal and principal.kind == "app" else ""
        if principal is None or principal.kind == "app":
            call.errors.append(f"git: bad credentials ({detail or 'empty password'})")
            return challenge
        call.installation_id = principal.installation_id
        try:
            visible = state is not None and self._accessible_repo(principal, full_name) is state
        except _GitHubError:
            visible = False
        if state is None or (not visible and state.data["private"]):
            call.errors.append(f"git: {full_name} does not exist or {principal.kind} cannot see it")
            return self._git_text(404, "Repository not found.")
        if push:
            info = self.tokens.get(credential)
            can_write = visible and (info is None or info["permissions"].get("contents") == "write")
            if not can_write:
                call.errors.append(f"git: push to {full_name} without contents: write")
                return self._git_text(403, f"Permission to {state.full_name}.git denied to {self._bot()['login']}.")
        return None

    @staticmethod
    def _git_credential(header: str | None) -> str | None:
        """The password of HTTP Basic auth ("" when malformed), None without an Authorization header."""
        if header is None:
            return None
        scheme, _, value = header.strip().partition(" ")
        if scheme.lower() != "basic":
            return ""
        try:
            user, _, password = base64.b64decode(value.strip(), validate=True).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return ""
        return password if user else ""

    def _git_user(self, call: Call) -> str | None:
        if call.installation_id is None:
            return None
        return self._bot()["login"]

    @staticmethod
    def _git_text(status: int, text: str, headers: dict[str, str] | None = None) -> web.Response:
        return web.Response(status=status, text=text + "\n", content_type="text/plain", headers=headers)
