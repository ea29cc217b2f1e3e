"""pipeline.sandbox against the real bubblewrap and real processes (skipped, with the reason, without bwrap)."""

from __future__ import annotations

import asyncio
import math
import os
import shutil
import signal
import sqlite3
import tempfile
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import pytest

from pipeline.sandbox.bwrap import WORKSPACE_MOUNT
from pipeline.sandbox.cgroups import CGROUP_PARENT, CGROUP_ROOT
from pipeline.sandbox.limits import Limits, limit_notes
from pipeline.sandbox.network import TAP_DEVICE, default_route_via_tap
from pipeline.sandbox.sandbox import DEFAULT_SANDBOX_UID, NetworkUnavailable, Sandbox, SandboxUnavailable
from tests.conftest import BotUnderTest
from tests.sandbox_support import needs_bwrap

SLIRP_HOST_ALIAS = "10.0.2.2"  # slirp's address for the host's loopback, refused with --disable-host-loopback

BWRAP = shutil.which("bwrap")
SHORT = Limits(timeout_seconds=20)


@pytest.fixture(scope="module")
def probed() -> Sandbox:
    if BWRAP is None:
        pytest.skip("bubblewrap is not installed (apt-get install bubblewrap)")
    sandbox = asyncio.run(Sandbox.probe())
    if not sandbox.capabilities.sandboxed:
        pytest.skip(f"bubblewrap does not work here: {sandbox.capabilities.notes}")
    return sandbox


@pytest.fixture
def sandbox(probed: Sandbox) -> Sandbox:
    return probed


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    ws = tmp_path / "data" / "workspaces" / "pr-1"
    ws.mkdir(parents=True)
    (ws / "README.md").write_text("checked out\n")
    return ws


def marker() -> str:
    return f"sbxmark{uuid.uuid4().hex[:12]}"


def processes_matching(text: str) -> list[int]:
    """Host pids whose command line contains `text` (what `pgrep -f` does, without the pgrep process)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    if text.encode() in f.read():
                        found.append(int(entry))
            except OSError:
                pass
    return found


def own_cgroups() -> list[Path]:
    return [p for c in ("memory", "pids") for p in (CGROUP_ROOT / c / CGROUP_PARENT).glob(f"run-{os.getpid()}-*")]


class Chunks:
    """on_output collector that can wait (with a bound) until some text has been streamed."""

    def __init__(self) -> None:
        self.text = ""
        self.changed = asyncio.Event()

    async def __call__(self, chunk: str) -> None:
        self.text += chunk
        self.changed.set()

    async def wait_for(self, needle: str, timeout: float = 10) -> None:
        async with asyncio.timeout(timeout):
            while needle not in self.text:
                self.changed.clear()
                await self.changed.wait()


# ------------------------------------------------------------------------------------------- basics


@needs_bwrap
def test_probe_reports_layers(sandbox: Sandbox) -> None:
    caps = sandbox.capabilities
    described = caps.describe()
    assert described["mode"] == "bwrap" and described["sandboxed"] is True
    layers = described["layers"]
    for layer in ("user_namespace", "mount_namespace", "pid_namespace", "net_namespace", "capabilities_dropped",
                  "no_new_privs", "rlimits"):
        assert layers[layer] is True, layer
    if shutil.which("slirp4netns"):
        assert layers["user_network"] is True, caps.notes
        assert described["slirp4netns_version"].startswith("slirp4netns version")
    if os.geteuid() == 0:
        assert layers["dedicated_uid"] is True and caps.uid == DEFAULT_SANDBOX_UID
    try:
        import pyseccomp  # noqa: F401
    except ImportError:
        pass
    else:
        assert layers["seccomp"] is True, caps.notes
    print(caps.summary(), caps.notes)


@needs_bwrap
async def test_written_files_are_usable_by_the_app(sandbox: Sandbox, workspace: Path) -> None:
    result = await sandbox.run(
        "echo built > out.txt && mkdir -p locked/deep && echo x > locked/deep/f && chmod 000 locked/deep locked "
        "&& cat README.md && pwd && echo \"home=$HOME\"", workspace=workspace, limits=SHORT)
    assert result.exit_code == 0, result.output
    assert result.signal is None and not result.timed_out
    assert f"checked out\n{WORKSPACE_MOUNT}\nhome={WORKSPACE_MOUNT}\n" == result.output
    assert (workspace / "out.txt").read_text() == "built\n"
    shutil.rmtree(workspace)  # even the mode-000 directories
    assert not workspace.exists()


@needs_bwrap
async def test_exit_codes_and_signals(sandbox: Sandbox, workspace: Path) -> None:
    result = await sandbox.run("echo oops >&2; exit 3", workspace=workspace, limits=SHORT)
    assert (result.exit_code, result.signal, result.output) == (3, None, "oops\n")
    result = await sandbox.run("kill -TERM $$", workspace=workspace, limits=SHORT)
    assert (result.exit_code, result.signal) == (143, 15)


@needs_bwrap
async def test_background_jobs_do_not_outlive_the_command(sandbox: Sandbox, workspace: Path) -> None:
    mark = marker()
    result = await sandbox.run(f"sh -c 'sleep 1000; : {mark}' & echo started", workspace=workspace, limits=SHORT)
    assert result.exit_code == 0 and result.output == "started\n"
    assert result.duration_seconds < 5
    assert processes_matching(mark) == []
    assert own_cgroups() == []


# ---------------------------------------------------------------------------------------- isolation


@needs_bwrap
async def test_environment_is_clean(sandbox: Sandbox, workspace: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEBHOOK_SECRET", "host-secret")
    monkeypatch.setenv("PRIVATE_KEY_PATH", "/srv/app/key.pem")
    result = await sandbox.run(
        "env; echo ---; ls /proc | grep -E '^[0-9]+$' | tr '\\n' ' '; echo; echo ---; "
        "cat /proc/[0-9]*/environ | tr '\\0' '\\n'",
        workspace=workspace, env={"GIVEN": "by-caller", "TERM": "xterm"}, limits=SHORT)
    assert result.exit_code == 0, result.output
    env_part, pids_part, environs = result.output.split("---\n")
    env = dict(line.split("=", 1) for line in env_part.splitlines())
    assert env["GIVEN"] == "by-caller" and env["TERM"] == "xterm" and env["CI"] == "true"
    assert env["HOME"] == WORKSPACE_MOUNT and env["LANG"] == "C.UTF-8"
    assert "WEBHOOK_SECRET" not in env and "PRIVATE_KEY_PATH" not in env
    pids = [int(p) for p in pids_part.split()]
    assert pids and max(pids) < 50, pids  # only the sandbox's own pid namespace
    assert "host-secret" not in result.output and "PRIVATE_KEY_PATH" not in environs
    assert "by-caller" in environs


@needs_bwrap
async def test_data_dir_and_host_files_are_invisible(sandbox: Sandbox, workspace: Path, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    key = data_dir / "private-key.pem"
    key.write_text("-----BEGIN RSA PRIVATE KEY-----\nsecret\n")
    db = data_dir / "app.db"
    with sqlite3.connect(db) as conn:
        conn.execute("create table t (secret text)")
        conn.execute("insert into t values ('db-secret')")
    conn.close()
    script = (
        f"cat {key} {db} /etc/shadow /root/.bashrc 2>&1; "
        "ls / | tr '\\n' ' '; echo; "
        "ls /root /home /var /run /sys /opt 2>&1; echo FOUND:; "
        "find / -path /proc -prune -o -path /usr -prune -o \\( -name private-key.pem -o -name app.db \\) -print"
    )
    result = await sandbox.run(script, workspace=workspace, limits=SHORT)
    assert "secret" not in result.output
    assert f"cat: {key}: No such file or directory" in result.output
    assert f"cat: {db}: No such file or directory" in result.output
    top = next(line for line in result.output.splitlines() if line.startswith("bin "))
    assert set(top.split()) <= {"bin", "dev", "etc", "lib", "lib32", "lib64", "libx32", "proc", "sbin", "tmp", "usr",
                                "workspace"}
    for name in ("/root", "/home", "/var", "/run", "/sys", "/opt"):
        assert f"ls: cannot access '{name}': No such file or directory" in result.output
    assert result.output.split("FOUND:\n")[1] == ""


@needs_bwrap
async def test_unprivileged_and_read_only(sandbox: Sandbox, workspace: Path) -> None:
    script = (
        "id -u; grep -E '^(CapEff|CapPrm|NoNewPrivs|Seccomp):' /proc/self/status; "
        "touch /usr/x 2>&1; touch /x 2>&1; touch /etc/passwd 2>&1; "
        "touch /tmp/ok && echo tmp-writable; "
        "unshare -U true 2>&1 || echo no-nested-userns; "
        "unshare -n true 2>&1 || echo no-netns"
    )
    result = await sandbox.run(script, workspace=workspace, limits=SHORT)
    lines = result.output.splitlines()
    uid = int(lines[0])
    assert uid != 0
    if os.geteuid() == 0:
        assert uid == DEFAULT_SANDBOX_UID
    assert "CapEff:\t0000000000000000" in lines and "CapPrm:\t0000000000000000" in lines
    assert "NoNewPrivs:\t1" in lines
    if sandbox.capabilities.seccomp:
        assert "Seccomp:\t2" in lines
    assert "touch: cannot touch '/usr/x': Read-only file system" in lines
    assert "touch: cannot touch '/x': Read-only file system" in lines
    assert any(line.startswith("touch: cannot touch '/etc/passwd'") for line in lines)
    assert "tmp-writable" in lines and "no-nested-userns" in lines and "no-netns" in lines


@needs_bwrap
async def test_read_only_binds(sandbox: Sandbox, workspace: Path, tmp_path: Path) -> None:
    tools = tmp_path / "tools"
    tools.mkdir()
    (tools / "tool.sh").write_text("echo tool-ran\n")
    result = await sandbox.run(f"sh {tools}/tool.sh; touch {tools}/new 2>&1", workspace=workspace,
                               read_only_binds=[tools], limits=SHORT)
    assert result.output.startswith("tool-ran\n")
    assert "Read-only file system" in result.output
    link = tmp_path / "current-tools"
    link.symlink_to(tools)
    result = await sandbox.run(f"sh {link}/tool.sh", workspace=workspace, read_only_binds=[link], limits=SHORT)
    assert result.output == "tool-ran\n"  # visible at the path the caller gave
    with pytest.raises(ValueError):
        await sandbox.run("true", workspace=workspace, read_only_binds=[Path("/")])
    with pytest.raises(ValueError):
        await sandbox.run("true", workspace=workspace, read_only_binds=[Path("relative")])


async def _listener() -> tuple[asyncio.Server, int]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"hello-from-host\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


CONNECT = (
    "python3 -c \"import socket,sys\n"
    "try:\n"
    "    s = socket.create_connection(('127.0.0.1', int(sys.argv[1])), timeout=5)\n"
    "    print(s.recv(100).decode().strip())\n"
    "except OSError as e:\n"
    "    print('connect-failed', e.errno)\n"
    "\" {port}; cat /proc/net/dev | tail -n +3 | cut -d: -f1 | tr -d ' ' | tr '\\n' ' '"
)


@needs_bwrap
async def test_no_network_by_default(sandbox: Sandbox, workspace: Path) -> None:
    server, port = await _listener()
    async with server:
        result = await sandbox.run(CONNECT.format(port=port), workspace=workspace, limits=SHORT)
    first, interfaces = result.output.splitlines()
    assert first == "connect-failed 111"  # ECONNREFUSED: a private loopback only
    assert interfaces.split() == ["lo"]


REACH = """
import socket, sys
for target in sys.argv[1:]:
    host, port = target.rsplit(":", 1)
    try:
        s = socket.create_connection((host, int(port)), timeout=5)
        s.sendall(b"GET /health HTTP/1.0\\r\\n\\r\\n")
        print(target, "reached", s.recv(100)[:40])
    except OSError as e:
        print(target, "failed", e.errno)
"""
INTERFACES = "cat /proc/net/dev | tail -n +3 | cut -d: -f1 | tr -d ' ' | tr '\\n' ' '"


def needs_slirp4netns(sandbox: Sandbox) -> None:
    if not sandbox.capabilities.user_network:
        pytest.skip(f"no user-mode network here: {sandbox.capabilities.notes}")


@needs_bwrap
async def test_network_true_gets_its_own_network_without_the_hosts_loopback(
        sandbox: Sandbox, tmp_path: Path, bot: BotUnderTest) -> None:
    needs_slirp4netns(sandbox)
    workspace = tmp_path / "ws"  # the app keeps DATA_DIR's workspaces to itself
    workspace.mkdir()
    server, port = await _listener()
    app_port = urlsplit(bot.url).port
    async with aiohttp.ClientSession() as session, session.get(f"{bot.url}/health") as health:
        assert health.status in (200, 503)  # the app answers on the host
    targets = [f"{host}:{p}" for p in (port, app_port) for host in ("127.0.0.1", "localhost", SLIRP_HOST_ALIAS)]
    (workspace / "reach.py").write_text(REACH)
    async with server:
        result = await sandbox.run(f"python3 reach.py {' '.join(targets)}; {INTERFACES}", workspace=workspace,
                                   network=True, limits=SHORT)
    *attempts, interfaces = result.output.splitlines()
    assert [a.split()[:2] for a in attempts] == [[t, "failed"] for t in targets], result.output
    assert interfaces.split() == ["lo", TAP_DEVICE]  # its own namespace: a loopback of its own and slirp's tap


@needs_bwrap
async def test_network_true_cannot_reconfigure_its_network(sandbox: Sandbox, workspace: Path) -> None:
    needs_slirp4netns(sandbox)
    if shutil.which("ip") is None:
        pytest.skip("iproute2's `ip` is not installed")
    result = await sandbox.run(f"ip link set {TAP_DEVICE} down; ip addr add 10.0.2.2/24 dev lo; "
                               "cat /proc/net/route", workspace=workspace, network=True, limits=SHORT)
    assert result.output.count("Operation not permitted") == 2, result.output
    assert default_route_via_tap(result.output.split("\n", 2)[-1])


@needs_bwrap
async def test_network_true_refused_without_slirp4netns(workspace: Path) -> None:
    sandbox = await Sandbox.probe(slirp4netns="/nonexistent/slirp4netns")
    if not sandbox.capabilities.sandboxed:
        pytest.skip(f"bubblewrap does not work here: {sandbox.capabilities.notes}")
    described = sandbox.capabilities.describe()
    assert described["layers"]["user_network"] is False and described["slirp4netns"] is None
    assert any("slirp4netns" in note and "refused" in note for note in described["notes"]), described["notes"]
    with pytest.raises(NetworkUnavailable, match="apt-get install slirp4netns") as refused:
        await sandbox.run("echo ran > ran", workspace=workspace, network=True, limits=SHORT)
    assert "never shared" in str(refused.value)
    assert not (workspace / "ran").exists()
    assert (await sandbox.run("echo ok", workspace=workspace, limits=SHORT)).output == "ok\n"  # no network: fine


@needs_bwrap
async def test_a_failing_slirp4netns_is_noted_once_with_both_attempts() -> None:
    sandbox = await Sandbox.probe(slirp4netns="/bin/false")
    if not sandbox.capabilities.sandboxed:
        pytest.skip(f"bubblewrap does not work here: {sandbox.capabilities.notes}")
    [note] = [note for note in sandbox.capabilities.notes if note.startswith("network:")]
    assert note.startswith("network: slirp4netns gave the probe run no network (with --enable-seccomp: "
                           "slirp4netns failed (exit "), note
    assert "; without: slirp4netns failed (exit " in note and note.endswith("the host's network is never shared "
                                                                             "instead"), note
    assert "  " not in note and "NetworkUnavailable" not in note and "could not give" not in note


@needs_bwrap
async def test_slirp4netns_without_its_seccomp_filter_is_noted(sandbox: Sandbox) -> None:
    needs_slirp4netns(sandbox)
    folder = Path(tempfile.mkdtemp())  # the sandbox uid runs slirp4netns: not under tmp_path
    folder.chmod(0o755)
    wrapper = folder / "slirp4netns"
    wrapper.write_text('#!/bin/sh\ncase " $* " in *" --enable-seccomp "*) echo no seccomp >&2; exit 1;; esac\n'
                       f'exec {sandbox.capabilities.slirp4netns} "$@"\n')
    wrapper.chmod(0o755)
    try:
        probed = await Sandbox.probe(slirp4netns=str(wrapper))
    finally:
        shutil.rmtree(folder)
    assert probed.capabilities.user_network, probed.capabilities.notes
    [note] = [note for note in probed.capabilities.notes if note.startswith("network:")]
    assert note.startswith("network: slirp4netns runs without its own seccomp filter (with --enable-seccomp: "
                           "slirp4netns failed (exit "), note
    assert note.endswith("): no seccomp)"), note


@needs_bwrap
async def test_cancelling_a_network_run_stops_its_slirp4netns(sandbox: Sandbox, workspace: Path) -> None:
    needs_slirp4netns(sandbox)
    chunks = Chunks()
    task = asyncio.create_task(sandbox.run("echo ready; sleep 1000", workspace=workspace, network=True,
                                           on_output=chunks, limits=SHORT))
    await chunks.wait_for("ready")
    assert own_slirp4netns()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert own_slirp4netns() == []  # gone before CancelledError reached us


def own_processes(text: str, *, program: str | None = None) -> list[int]:
    """This test process's children still running (not zombies) whose command line contains `text` (and
    whose program is named `program`)."""
    found = []
    for pid in processes_matching(text):
        try:
            named = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
        if (program is None or os.path.basename(named) == program.encode()) \
                and fields.get("PPid", "").strip() == str(os.getpid()) and not fields.get("State", "").startswith("Z"):
            found.append(pid)
    return found


def own_slirp4netns() -> list[int]:
    """This test process's slirp4netns children still running (not zombies)."""
    return own_processes("slirp4netns", program="slirp4netns")


# ------------------------------------------------------------------------------------------- limits


FORK_COUNT = (
    "python3 -c \"import os, time\n"
    "n = 0\n"
    "try:\n"
    "    while n < 10000:\n"
    "        if os.fork() == 0:\n"
    "            time.sleep(60); os._exit(0)\n"
    "        n += 1\n"
    "except OSError as e:\n"
    "    print('forks', n, 'errno', e.errno)\n"
    "\""
)


@needs_bwrap
async def test_process_limit_contains_forks(sandbox: Sandbox, workspace: Path) -> None:
    result = await sandbox.run(FORK_COUNT, workspace=workspace, limits=Limits(timeout_seconds=20, max_processes=32))
    words = result.output.split()
    assert words[:1] == ["forks"], result.output
    assert int(words[1]) < 32 and words[3] == "11"  # EAGAIN
    host = await asyncio.create_subprocess_exec("true")
    assert await host.wait() == 0  # the host can still fork
    assert own_cgroups() == []


@needs_bwrap
async def test_memory_hog_is_stopped(sandbox: Sandbox, workspace: Path) -> None:
    result = await sandbox.run(
        "python3 -c \"b = b'x' * (1024 ** 3); print('survived')\"", workspace=workspace,
        limits=Limits(timeout_seconds=20, memory_bytes=256 * 1024**2))
    assert "survived" not in result.output
    assert result.exit_code != 0
    assert "MemoryError" in result.output or result.signal == 9, result
    if sandbox.capabilities.cgroup_memory:
        assert "[sandbox] memory limit of 256 MiB exceeded" in result.output


@needs_bwrap
async def test_file_size_limit(sandbox: Sandbox, workspace: Path) -> None:
    result = await sandbox.run("head -c 5000000 /dev/zero > big; echo rc=$?", workspace=workspace,
                               limits=Limits(timeout_seconds=20, max_file_bytes=1024**2))
    assert (workspace / "big").stat().st_size == 1024**2
    assert "rc=0" not in result.output


@needs_bwrap
async def test_wall_clock_timeout_kills_everything(sandbox: Sandbox, workspace: Path) -> None:
    mark = marker()
    result = await sandbox.run(f"sh -c 'sleep 1000; : {mark}' & echo looping; while :; do :; done; : {mark}",
                               workspace=workspace, limits=Limits(timeout_seconds=0.5))
    assert result.timed_out and result.exit_code is None and result.signal == 9
    assert result.output.startswith("looping\n")
    assert "[sandbox] wall-clock timeout of 0.5 s exceeded" in result.output
    assert 0.5 <= result.duration_seconds < 5
    assert processes_matching(mark) == []
    assert own_cgroups() == []


@needs_bwrap
async def test_output_cap_keeps_head_and_tail(sandbox: Sandbox, workspace: Path) -> None:
    result = await sandbox.run("seq 1 100000; echo FINAL-ERROR >&2", workspace=workspace,
                               limits=Limits(timeout_seconds=20, max_output_bytes=4000))
    total = len("".join(f"{i}\n" for i in range(1, 100001))) + len("FINAL-ERROR\n")
    assert result.output.startswith("1\n2\n3\n")
    assert result.output.endswith("99999\n100000\nFINAL-ERROR\n")
    assert result.output_truncated_bytes == total - 4000
    assert f"\n… {total - 4000} bytes omitted …\n" in result.output


# ------------------------------------------------------------------------------ streaming, cancelling


@needs_bwrap
async def test_output_streams_while_running(sandbox: Sandbox, workspace: Path) -> None:
    os.mkfifo(workspace / "go")
    chunks = Chunks()
    task = asyncio.create_task(sandbox.run("echo started; read line < go; echo \"got $line\"",
                                           workspace=workspace, on_output=chunks, limits=SHORT))
    await chunks.wait_for("started\n")
    assert not task.done()  # the output arrived while the command was still blocked

    def release() -> None:
        with open(workspace / "go", "w") as fifo:
            fifo.write("go\n")

    await asyncio.to_thread(release)
    result = await asyncio.wait_for(task, 20)
    assert result.output == chunks.text == "started\ngot go\n"


@needs_bwrap
async def test_failing_on_output_does_not_break_the_run(sandbox: Sandbox, workspace: Path) -> None:
    async def broken(chunk: str) -> None:
        raise RuntimeError("check run update failed")

    result = await sandbox.run("echo hi; exit 4", workspace=workspace, on_output=broken, limits=SHORT)
    assert (result.exit_code, result.output) == (4, "hi\n")


@needs_bwrap
async def test_cancellation_kills_the_tree(sandbox: Sandbox, workspace: Path) -> None:
    mark = marker()
    chunks = Chunks()
    task = asyncio.create_task(sandbox.run(
        f"sh -c 'sleep 1000; : {mark}' & sh -c 'sleep 1000; : {mark}' & echo ready; sleep 1000; : {mark}",
        workspace=workspace, on_output=chunks, limits=SHORT))
    await chunks.wait_for("ready")
    assert len(processes_matching(mark)) >= 3
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert processes_matching(mark) == []  # gone before CancelledError reached us
    assert own_cgroups() == []


async def test_a_cancellation_arriving_as_the_process_starts_does_not_leak_it(
        sandbox: Sandbox, workspace: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The task is cancelled while it waits for the spawn, whose result is ready: asyncio then drops
    the result for the CancelledError, so the process handle is lost unless the start is guarded."""
    import pipeline.sandbox.sandbox as sandbox_module

    mark = marker()
    real_exec = sandbox_module.start_process
    outer: list[asyncio.Task] = []

    async def exec_then_cancel(*args, **kwargs):  # type: ignore[no-untyped-def]
        started = await real_exec(*args, **kwargs)
        outer[0].cancel()  # the run is cancelled just as its process has started...
        await asyncio.sleep(0)  # ...while the start is still awaiting
        return started

    monkeypatch.setattr(sandbox_module, "start_process", exec_then_cancel)
    task = asyncio.create_task(sandbox.run(f"sleep 1000; : {mark}", workspace=workspace, limits=SHORT))
    outer.append(task)
    with pytest.raises(asyncio.CancelledError):
        await task
    assert processes_matching(mark) == []
    assert own_cgroups() == []


# ------------------------------------------------------------------------------------ no bubblewrap


async def test_without_bwrap_it_refuses(workspace: Path) -> None:
    sandbox = await Sandbox.probe(bwrap="/nonexistent/bwrap")
    caps = sandbox.capabilities
    assert not caps.sandboxed and caps.describe()["mode"] == "unavailable"
    assert any("/nonexistent/bwrap" in note for note in caps.notes)
    with pytest.raises(SandboxUnavailable, match="bubblewrap"):
        await sandbox.run("touch should-not-exist", workspace=workspace)
    assert not (workspace / "should-not-exist").exists()


async def test_without_bwrap_allow_unsandboxed_runs(workspace: Path, monkeypatch: pytest.MonkeyPatch,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("WEBHOOK_SECRET", "host-secret")
    sandbox = await Sandbox.probe(bwrap="/nonexistent/bwrap", allow_unsandboxed=True)
    assert sandbox.capabilities.describe()["mode"] == "unsandboxed"
    mark = marker()
    result = await sandbox.run(f"sh -c 'sleep 1000; : {mark}' & env; pwd; echo made > f; exit 5",
                               workspace=workspace, env={"GIVEN": "1"}, limits=SHORT)
    assert result.exit_code == 5
    assert "GIVEN=1" in result.output and "CI=true" in result.output
    assert f"HOME={workspace.resolve()}" in result.output and "host-secret" not in result.output
    assert (workspace / "f").read_text() == "made\n"
    assert "SANDBOX DISABLED" in caplog.text
    assert processes_matching(mark) == []  # the process group is killed after the command


async def test_unsandboxed_timeout(workspace: Path) -> None:
    sandbox = await Sandbox.probe(bwrap="/nonexistent/bwrap", allow_unsandboxed=True)
    mark = marker()
    result = await sandbox.run(f"sh -c 'sleep 1000; : {mark}' & while :; do :; done", workspace=workspace,
                               limits=Limits(timeout_seconds=0.3))
    assert result.timed_out and result.exit_code is None
    assert processes_matching(mark) == []


def test_never_as_root_uid() -> None:
    if os.geteuid() != 0:
        with pytest.raises(ValueError):
            Sandbox(uid=os.getuid() + 1)
    else:
        with pytest.raises(ValueError):
            Sandbox(uid=0)


def test_limits_validation() -> None:
    with pytest.raises(ValueError):
        Limits(timeout_seconds=0)
    with pytest.raises(ValueError):
        Limits(cpu_seconds=0)


def test_the_cpu_limit_follows_the_time_budget() -> None:
    cpus = len(os.sched_getaffinity(0))
    assert Limits(timeout_seconds=1800).cpu_limit == 1800 * cpus  # timeout_minutes: 30, not a fixed 600
    assert Limits(timeout_seconds=2.5).cpu_limit == math.ceil(2.5 * cpus)
    assert Limits(timeout_seconds=1800, cpu_seconds=7).cpu_limit == 7  # given: as given


def test_a_cpu_limit_that_ended_the_command_is_named() -> None:
    budget = Limits(timeout_seconds=3)
    [note] = limit_notes(budget, timed_out=False, events={}, signal_number=signal.SIGXCPU)
    assert note.strip() == (f"[sandbox] CPU time limit of {budget.cpu_limit} CPU-seconds per process, the 3 s "
                            f"time budget on {len(os.sched_getaffinity(0))} CPU(s), exceeded: the kernel stopped "
                            "the process (SIGXCPU)")
    assert limit_notes(budget, timed_out=False, events={}, signal_number=signal.SIGKILL) == []
    assert "wall-clock" in limit_notes(budget, timed_out=True, events={}, signal_number=signal.SIGKILL)[0]


@needs_bwrap
async def test_a_command_gets_the_cpu_limit_of_its_time_budget(sandbox: Sandbox, workspace: Path) -> None:
    limits = Limits(timeout_seconds=900)
    result = await sandbox.run("grep 'Max cpu time' /proc/self/limits", workspace=workspace, limits=limits)
    assert result.output.split()[3:5] == [str(limits.cpu_limit), str(limits.cpu_limit + 1)], result.output


# ------------------------------------------------------------------------------------------- slow


@needs_bwrap
@pytest.mark.slow
async def test_shell_fork_bomb_is_contained(sandbox: Sandbox, workspace: Path) -> None:
    mark = marker()
    chunks = Chunks()
    task = asyncio.create_task(sandbox.run(f"bomb() {{ bomb | bomb & }}; bomb; sleep 1000; : {mark}",
                                           workspace=workspace, on_output=chunks,
                                           limits=Limits(timeout_seconds=3, max_processes=64)))
    await chunks.wait_for("fork")  # "Cannot fork": the limit is being hit while the bomb runs
    host = await asyncio.create_subprocess_exec("true")
    assert await host.wait() == 0  # meanwhile the host can still fork
    result = await task
    # Killed at the timeout, or (when even the top shell's own forks fail) given up with an error:
    # either way it is stopped, and nothing of it is left (below).
    assert result.timed_out or (result.exit_code != 0 and "Cannot fork" in result.output)
    host = await asyncio.create_subprocess_exec("true")
    assert await host.wait() == 0
    assert processes_matching(mark) == []
    assert own_cgroups() == []


@needs_bwrap
@pytest.mark.slow
async def test_cpu_seconds_limit(sandbox: Sandbox, workspace: Path) -> None:
    result = await sandbox.run("while :; do :; done", workspace=workspace,
                               limits=Limits(timeout_seconds=20, cpu_seconds=1))
    assert not result.timed_out and result.signal in (24, 9)  # SIGXCPU at the soft limit
    assert result.duration_seconds < 10
    assert "[sandbox] CPU time limit of 1 CPU-second per process exceeded" in result.output, result.output


@needs_bwrap
async def test_no_file_descriptors_or_mounts_leak(sandbox: Sandbox, workspace: Path, tmp_path: Path) -> None:
    extra = tmp_path / "extra"
    extra.mkdir()
    result = await sandbox.run("ls /proc/self/fd | tr '\\n' ' '", workspace=workspace, read_only_binds=[extra],
                               env={"TOKEN": "given-secret"}, limits=SHORT)
    # 0-2 plus the directory ls itself is reading: no O_PATH fd of the workspace, no memfds
    assert result.output.split() == ["0", "1", "2", "3"]
    with open("/proc/self/mountinfo") as f:
        assert "codegenapp-sandbox" not in f.read()  # the bind staging stayed in the child's own namespace


@needs_bwrap
async def test_concurrent_runs_are_independent(sandbox: Sandbox, tmp_path: Path) -> None:
    workspaces = []
    for i in range(6):
        ws = tmp_path / f"ws{i}"
        ws.mkdir()
        workspaces.append(ws)
    results = await asyncio.gather(*(
        sandbox.run(f"echo {i} > mine; ls", workspace=ws, limits=SHORT) for i, ws in enumerate(workspaces)))
    assert [r.output for r in results] == ["mine\n"] * 6
    assert [(ws / "mine").read_text() for ws in workspaces] == [f"{i}\n" for i in range(6)]


# ------------------------------------------------------------------------------------ background


@needs_bwrap
async def test_background_runs_during_the_block_and_is_killed_after(sandbox: Sandbox, workspace: Path) -> None:
    mark = marker()
    chunks = Chunks()
    async with sandbox.background(f"sh -c 'sleep 1000; : {mark}' & echo up; sleep 1000; : {mark}",
                                  workspace=workspace, on_output=chunks, limits=SHORT) as process:
        await chunks.wait_for("up")
        assert process.running and process.exit_code is None
        assert len(processes_matching(mark)) >= 2
    assert processes_matching(mark) == []
    assert not process.running and process.exit_code == 137
    assert "up" in process.output()
    assert own_cgroups() == []


@needs_bwrap
async def test_background_is_killed_when_the_task_is_cancelled(sandbox: Sandbox, workspace: Path) -> None:
    mark = marker()
    chunks = Chunks()
    blocked = asyncio.Event()

    async def hold() -> None:
        async with sandbox.background(f"echo up; sleep 1000; : {mark}", workspace=workspace, on_output=chunks,
                                      limits=SHORT):
            blocked.set()
            await asyncio.Event().wait()

    task = asyncio.create_task(hold())
    await asyncio.wait_for(blocked.wait(), 10)
    await chunks.wait_for("up")
    assert processes_matching(mark)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert processes_matching(mark) == []  # gone before CancelledError reached us


@needs_bwrap
async def test_background_has_no_network_and_its_timeout_kills_it(sandbox: Sandbox, workspace: Path) -> None:
    script = ("python3 -c 'import socket\ntry:\n socket.create_connection((\"1.1.1.1\", 53), timeout=2)\n"
              " print(\"reached\")\nexcept OSError as e:\n print(\"no route\", e.errno)'; sleep 1000")
    async with sandbox.background(script, workspace=workspace, limits=Limits(timeout_seconds=3)) as process:
        await asyncio.wait_for(process.wait(), 15)  # the timeout, not the block, ended it
    assert "no route" in process.output() and "reached" not in process.output()
    assert process.exit_code == 137
