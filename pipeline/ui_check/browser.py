"""The UI check's Chromium in a bubblewrap sandbox of its own: Playwright's `executable_path` is a
small script (`write_launcher`, one per run) that execs this file, which execs

    bwrap <options> -- /usr/bin/chromium <Playwright's arguments>

It runs as `python3 -I` between Playwright and bwrap, importing only pipeline.sandbox.bwrap (for the
host's /usr layout) besides the standard library. What it does, in order:

- replaces the `--user-data-dir` Playwright passes (its own, in TMPDIR, which the browser's uid may not
  reach) by `--profile`: the profile directory the app made for the browser's uid (`BROWSER_UID`,
  61001: unprivileged, no passwd entry, distinct from the PR sandbox's 61000), in a place that uid can
  reach (pipeline/ui_check/browser_dir.py);
- as root, drops to that uid/gid with no supplementary groups, so bwrap runs *unprivileged* and every
  browser process is uid 61001 on the host (not root: a compromised renderer that escaped Chromium's
  own sandbox and bwrap's namespaces still lands as a nobody);
- execs bwrap with an allowlist of the filesystem (`bwrap_arguments`): read-only /usr, the /bin,
  /lib* links, the few /etc entries Chromium and fontconfig read, the fontconfig cache; a fresh
  /proc of its own pid namespace, a minimal /dev, tmpfs /tmp, /dev/shm and HOME; and read-write only
  the profile directory. Nothing of DATA_DIR (the App's key, the database, the encryption keys) or
  the app's working directory exists in there. A clean environment (`--clearenv`): the app's
  environment variables never reach the browser.

Playwright talks to Chromium over the inherited pipes on fds 3 and 4 (`--remote-debugging-pipe`):
they are not close-on-exec, and bwrap passes inherited fds through to the command untouched.

Network: with a relay directory (`--relay`, the normal case), the browser has a network namespace of
its own with only a loopback, where forwarder.py (started first, from the read-only relay
directory) listens on 127.0.0.1:`RELAY_PORT` - Chromium's proxy setting - and relays each connection
to the run's proxy, which listens on a Unix socket in that directory (see pipeline/ui_check/check.py). So the
browser can reach the proxy and nothing else: not the host's loopback services, not the network.
Without it, the browser shares the host's network namespace. Chromium's own sandbox stays on (no `--no-sandbox`): bwrap does not
pass `--disable-userns`, so Chromium can still create the user, pid and network namespaces it puts
its renderers in - a renderer has no network at all, only the browser's network service does.
"""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Sequence

if __name__ == "__main__":  # run as a script (`python3 -I`): the project root is three directories up
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pipeline.sandbox.bwrap import system_binds  # noqa: E402

BROWSER_UID = 61001
HOME = "/home/chromium"
PATH = "/usr/bin:/bin"
_ETC = ("fonts", "alternatives", "ssl/certs", "ssl/openssl.cnf", "ca-certificates", "ld.so.cache", "ld.so.conf",
        "ld.so.conf.d", "localtime", "timezone", "os-release", "mime.types", "chromium.d", "chromium")
_READ_ONLY = ("/var/cache/fontconfig",)
RELAY_MOUNT = "/run/codegenapp-ui"  # inside: the forwarder and the host proxy's socket, read-only
RELAY_PORT = 3128  # inside the browser's own network namespace: where its proxy setting points
FORWARDER_NAME = "forwarder.py"
PROXY_SOCKET = "proxy.sock"


def with_profile(argv: Sequence[str], profile: str) -> list[str]:
    """Chromium's arguments with `profile` as its only `--user-data-dir` (either spelling replaced)."""
    kept: list[str] = []
    skip_next = False
    for arg in argv:
        if skip_next:
            skip_next = False
        elif arg == "--user-data-dir":
            skip_next = True
        elif not arg.startswith("--user-data-dir="):
            kept.append(arg)
    return [*kept, f"--user-data-dir={profile}"]


def bwrap_arguments(*, chromium: str, argv: Sequence[str], uid: int, profile: str, relay: str | None = None,
                    relay_port: int = RELAY_PORT) -> list[str]:
    """bwrap's command line (without bwrap itself) for running `chromium argv` with `profile` writable.
    With `relay` (a directory holding forwarder.py and the host proxy's socket `proxy.sock`): a
    network namespace of its own, where the forwarder relays 127.0.0.1:`relay_port` to that socket."""
    if not os.path.isabs(profile) or os.path.normpath(profile) in ("/", "/tmp") or ".." in profile.split("/"):
        raise ValueError(f"refusing {profile!r} as the browser's profile directory")
    a = ["--unshare-net"] if relay is not None else []
    a += ["--unshare-user", "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
         "--die-with-parent", "--new-session", "--cap-drop", "ALL", "--uid", str(uid), "--gid", str(uid),
         "--hostname", "browser", *system_binds()]
    a += ["--proc", "/proc", "--dev", "/dev", "--perms", "1777", "--tmpfs", "/dev/shm",
          "--perms", "1777", "--tmpfs", "/tmp", "--perms", "0700", "--tmpfs", HOME, "--dir", "/etc"]
    for name in _ETC:
        a += ["--ro-bind-try", f"/etc/{name}", f"/etc/{name}"]
    for path in _READ_ONLY:
        a += ["--ro-bind-try", path, path]
    command = [chromium, *argv]
    if relay is not None:
        a += ["--ro-bind", relay, RELAY_MOUNT]
        # The forwarder is listening when `--detach` returns, before Chromium starts; Playwright's pipes
        # (fds 3 and 4) are Chromium's only.
        command = ["/bin/sh", "-c", f"/usr/bin/python3 -I {RELAY_MOUNT}/{FORWARDER_NAME} tcp:127.0.0.1:{relay_port} "
                   f'unix:{RELAY_MOUNT}/{PROXY_SOCKET} --detach 3>&- 4>&- && exec "$0" "$@"', *command]
    a += ["--bind", profile, profile, "--chdir", HOME, "--remount-ro", "/", "--clearenv",
          "--setenv", "PATH", PATH, "--setenv", "HOME", HOME, "--setenv", "LANG", "C.UTF-8",
          "--setenv", "TMPDIR", "/tmp", "--", *command]
    return a


def launcher_script(*, bwrap: str, chromium: str, uid: int, profile: str, relay: str | None = None,
                    python: str = sys.executable) -> str:
    """The executable Playwright starts (a shell script: `executable_path` takes no arguments)."""
    command = [python, "-I", os.path.abspath(__file__), "--bwrap", bwrap, "--chromium", chromium, "--uid", str(uid),
               "--profile", profile]
    if relay is not None:
        command += ["--relay", relay]
    return "#!/bin/sh\nexec " + " ".join(shlex.quote(c) for c in command) + ' -- "$@"\n'


def write_launcher(directory: str, **kwargs: object) -> str:
    """Writes `launcher_script(**kwargs)` as an executable file in `directory` (private to the app)."""
    path = os.path.join(directory, "chromium")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o700)
    with os.fdopen(fd, "w") as f:
        f.write(launcher_script(**kwargs))  # type: ignore[arg-type]
    return path


def main(args: Sequence[str]) -> None:
    options: dict[str, str] = {}
    rest = list(args)
    while rest and rest[0] != "--":
        options[rest[0].lstrip("-")] = rest[1]
        rest = rest[2:]
    uid = int(options["uid"])
    profile = options["profile"]
    argv = with_profile(rest[1:], profile)
    if os.geteuid() == 0:
        if uid == 0:
            sys.exit("codegenapp browser sandbox: refusing to run the browser as uid 0")
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)
    bwrap = options["bwrap"]
    os.execve(bwrap, [bwrap, *bwrap_arguments(chromium=options["chromium"], argv=argv, uid=uid, profile=profile,
                                                relay=options.get("relay"))],
              {"PATH": PATH, "LANG": "C.UTF-8"})


if __name__ == "__main__":
    main(sys.argv[1:])
