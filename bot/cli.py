"""The `codegenapp` command (also `python -m bot`)."""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from aiohttp import web

from bot import migrate
from bot.app import SchemaOutOfDate, build_services, check_database, create_app, prepare_database, serving_at
from bot.config import ConfigError, Settings, load_settings
from bot import delivery_cli, status_cli
from bot.crypto import Crypto
from bot.db import Database, DatabaseUnusable, sqlite_file
from bot.logs import configure_logging
from bot.migrate import upgrade_in_child
from bot.store import InvalidSecret, Store
from pipeline.report.local import JSON_FORMAT, json_report
from pipeline.report.terminal import FORMATS, report_format, terminal_report, use_colour
from pipeline.sandbox.sandbox import SandboxUnavailable
from pipeline.validation.local_run import LocalRunError, validate_local
from pipeline.workspace.snapshots import SnapshotStore

log = logging.getLogger("codegenapp")

# The youngest generation is collected after this many allocations (Python's default: 700).
GC_YOUNG_THRESHOLD = 10_000


def settle_heap() -> None:
    """For a long-running process, once it has started: what start-up built (modules, SQLAlchemy's
    and aiohttp's structures, the services) lives as long as the process, so the cyclic garbage
    collector stops re-scanning it (`gc.freeze`), and young objects are collected less often.
    Measured under a burst of webhooks: a full collection paused the event loop for ~60 ms every
    ~2 s (the p99 of send -> check run); frozen, a full collection takes ~4 ms."""
    gc.set_threshold(GC_YOUNG_THRESHOLD, 20, 20)
    gc.freeze()


EXAMPLES = """\
examples:
  codegenapp serve                           run the web app and a worker (it prints the URL to open)
  codegenapp validate                        validate HEAD of the repository in the current directory
  codegenapp validate --base origin/main     ... with findings only on the lines changed since origin/main
  codegenapp validate --format json | jq .conclusion
  codegenapp projects list                   the repositories the App is installed on
  codegenapp deliveries list --failed        webhook deliveries whose handling failed
  codegenapp deliveries replay ID            handle a stored delivery again
  codegenapp status                          the workers alive and the job queue, from the database
  echo -n "$TOKEN" | codegenapp secrets set octo/widgets API_TOKEN

`codegenapp COMMAND --help` shows a command's options.
"""

VALIDATE_EXAMPLES = """\
output:
  On a terminal, a coloured report (NO_COLOR=1 turns the colours off); piped, the Markdown the check run
  would show. --format chooses: text (the terminal form), markdown, or json (README: "Running it locally").

examples:
  codegenapp validate                        HEAD of the repository in the current directory
  codegenapp validate ../widgets --ref my-branch --base main
  codegenapp validate --config ci/validate.yml --no-snapshots
  codegenapp validate --format json > report.json
"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="codegenapp", epilog=EXAMPLES,
                                     description="CodegenApp: a GitHub App that validates pull requests in a "
                                                 "sandbox, merges them and runs coding agents.",
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the web app (and a worker, unless --no-worker)")
    serve.add_argument("--host", help="listen address (default HOST or 127.0.0.1)")
    serve.add_argument("--port", type=int, help="listen port (default PORT or 3001)")
    serve.add_argument("--no-worker", action="store_true", help="do not run jobs in this process")

    worker = commands.add_parser("worker", help="run a standalone worker")
    migrate_command = commands.add_parser("migrate", help="bring the database schema up to date")
    for command in (serve, worker, migrate_command):
        command.add_argument("--init", action="store_true",
                             help="accept an empty database although DATA_DIR holds the keys of an earlier start")

    projects = commands.add_parser("projects", help="projects (one per repository)")
    projects_commands = projects.add_subparsers(dest="projects_command", required=True, metavar="ACTION")
    listing = projects_commands.add_parser("list", help="list projects")
    listing.add_argument("--all", action="store_true", help="include archived projects")

    validate = commands.add_parser(
        "validate", help="run the validation pipeline on a local checkout and print the report the check run "
                         "would show",
        description="Validates a commit (not the uncommitted changes of the working tree) with the\n"
                    ".github/codegenapp.yml of that commit, in the sandbox.\n"
                    "Exit code: 0 passed, 1 failed, 2 could not run (no repository, an invalid config, no sandbox).",
        epilog=VALIDATE_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    validate.add_argument("path", nargs="?", default=".", help="a git repository (default: .)")
    validate.add_argument("--ref", default="HEAD", help="the commit to validate (default: HEAD)")
    validate.add_argument("--base", metavar="REF",
                          help="annotate only the lines changed since REF (its merge base), as on a pull request")
    validate.add_argument("--config", type=Path, metavar="FILE",
                          help="a config file instead of the validated commit's .github/codegenapp.yml")
    validate.add_argument("--no-snapshots", action="store_true",
                          help="run setup from scratch, neither restoring nor saving a snapshot (they are kept "
                               "in $XDG_CACHE_HOME/codegenapp/snapshots, by default ~/.cache/codegenapp/snapshots)")
    validate.add_argument("--unsandboxed", action="store_true",
                          help="run the commands without the sandbox (only for code you trust; no snapshots)")
    validate.add_argument("--format", choices=FORMATS, default=None,
                          help="text (coloured, for a terminal), markdown (the check run's) or json; default: text "
                               "on a terminal, markdown when piped")
    validate.add_argument("--screenshots", type=Path, metavar="DIR",
                          help="where the UI check's screenshots are kept, in a directory per commit (default: "
                               "$XDG_CACHE_HOME/codegenapp/screenshots)")

    secrets = commands.add_parser("secrets", help="project secrets (stored encrypted)")
    secrets_commands = secrets.add_subparsers(dest="secrets_command", required=True, metavar="ACTION")
    set_secret = secrets_commands.add_parser("set", help="set a secret; the value is read from standard input")
    set_secret.add_argument("repository", metavar="OWNER/REPO")
    set_secret.add_argument("name", metavar="NAME")
    delivery_cli.add_commands(commands)
    status_cli.add_command(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    if not (sys.argv[1:] if argv is None else argv):  # as git does: the help, and 1 since nothing was done
        parser.print_help()
        return 1
    args = parser.parse_args(argv)
    if args.command == "validate":
        return local_validation(args)
    try:
        # `status` only looks: keys generated into a fresh DATA_DIR would make the first `serve` refuse it.
        settings = load_settings(create_keys=args.command != "status")
    except ConfigError as exc:
        print(f"codegenapp: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.log_format)
    if args.command == "serve":
        return serve(settings, host=args.host, port=args.port, with_worker=not args.no_worker, init=args.init)
    commands = {"worker": run_worker, "migrate": run_migrate, "projects": list_projects, "secrets": set_secret,
                "deliveries": deliveries, "status": status}
    try:
        return asyncio.run(commands[args.command](settings, args))
    except KeyboardInterrupt:
        return 130
    except (DatabaseUnusable, SchemaOutOfDate) as exc:
        print(f"codegenapp: {exc}", file=sys.stderr)
        return 2


def serve(settings: Settings, *, host: str | None, port: int | None, with_worker: bool, init: bool = False) -> int:
    if settings.database_url.startswith("sqlite"):
        try:
            check_database(settings, init=init)  # before the migration makes an empty file look new
        except DatabaseUnusable as exc:
            print(f"codegenapp: {exc}", file=sys.stderr)
            return 2
        try:
            upgrade_in_child(settings.database_url)
        except subprocess.CalledProcessError:
            print("codegenapp: migrating the SQLite database failed (see above)", file=sys.stderr)
            return 2

    async def started(_app: web.Application) -> None:  # runs after the services have started
        settle_heap()

    settings = serving_at(settings, host=host, port=port)
    app = create_app(settings, with_worker=with_worker)
    app.on_startup.append(started)
    try:
        web.run_app(app, host=settings.host, port=settings.port, print=lambda line: log.info("%s", line.strip()),
                    access_log=None, shutdown_timeout=15)
    except (DatabaseUnusable, SchemaOutOfDate) as exc:
        print(f"codegenapp: {exc}", file=sys.stderr)
        return 2
    return 0


def local_validation(args: argparse.Namespace) -> int:
    """Needs no App and no database: only git, the repository and (normally) bubblewrap."""
    configure_logging("WARNING", "pretty")
    terminal = sys.stdout.isatty()
    try:
        snapshots = None if args.no_snapshots else SnapshotStore(snapshot_dir())
        result = asyncio.run(validate_local(Path(args.path), ref=args.ref, base=args.base, config_file=args.config,
                                            unsandboxed=args.unsandboxed, snapshots=snapshots,
                                            screenshots=args.screenshots or cache_dir() / "screenshots",
                                            notify=lambda line: print(f"codegenapp: {line}", file=sys.stderr)))
    except (LocalRunError, SandboxUnavailable, OSError) as exc:
        reason = (f"{exc.strerror}: {exc.filename}" if isinstance(exc, OSError) and exc.strerror and exc.filename
                  else str(exc))
        print(f"codegenapp: {reason}", file=sys.stderr)
        if report_format(args.format, terminal) == "json":  # a script piping to jq gets a document too
            print(json_error(reason), end="")
        return 2
    shown = report_format(args.format, terminal)
    if shown == "json":
        print(json_report(result.run), end="")
    elif shown == "text":
        print(terminal_report(result.run, colour=use_colour(os.environ, terminal),
                              width=shutil.get_terminal_size().columns), end="")
    else:
        print(result.text, end="")
    return result.exit_code


def json_error(message: str) -> str:
    """`validate --format json`'s document when the run could not start (exit 2): the report's "format"
    version and the reason, which stderr also shows (README: "Running it locally")."""
    return json.dumps({"format": JSON_FORMAT, "error": message}, indent=2, ensure_ascii=False) + "\n"


def cache_dir() -> Path:
    """The local command's own files: per user, as a cache (the app's are under DATA_DIR)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")) / "codegenapp"


def snapshot_dir() -> Path:
    return cache_dir() / "snapshots"


async def run_worker(settings: Settings, args: argparse.Namespace) -> int:
    services = await build_services(settings, with_worker=True, init=args.init)
    settle_heap()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    log.info("worker running; SIGTERM or Ctrl-C stops it after the running jobs finish")
    await stop.wait()
    log.info("stopping: running jobs have %g s to finish (SHUTDOWN_GRACE_SECONDS), the rest go back to the queue",
             settings.shutdown_grace_seconds)
    await services.close()
    return 0


async def run_migrate(settings: Settings, args: argparse.Namespace) -> int:
    check_database(settings, init=args.init)
    db = Database(settings.database_url)
    try:
        before = await migrate.current_revision(db)
        after = await migrate.upgrade(db)
    finally:
        await db.dispose()
    print(f"schema at {after}" + ("" if before == after else f" (was {before or 'empty'})"))
    return 0


async def _store(settings: Settings) -> Store:
    return Store(await prepare_database(settings), Crypto(settings.encryption_key), github_url=settings.github_url)


async def list_projects(settings: Settings, args: argparse.Namespace) -> int:
    store = await _store(settings)
    try:
        projects = await store.projects.list_projects(include_archived=args.all)
    finally:
        await store.close()
    if not projects:
        print("no projects yet: install the GitHub App on a repository")
        return 0
    width = max(len(p.name) for p in projects)
    print(f"{'REPOSITORY':<{width}}  {'INSTALLATION':>12}  STATE     ID")
    for p in projects:
        state = "archived" if p.archived_at else "active"
        print(f"{p.name:<{width}}  {p.installation_id or '-':>12}  {state:<8}  {p.id}")
    return 0


async def deliveries(settings: Settings, args: argparse.Namespace) -> int:
    store = await _store(settings)
    try:
        return await delivery_cli.run(store, args, max_attempts=settings.job_max_attempts)
    finally:
        await store.close()


async def status(settings: Settings, args: argparse.Namespace) -> int:
    async def open_store() -> Store:  # reads only: a SQLite file is neither made nor migrated by looking at it
        path = sqlite_file(settings.database_url)
        if path is not None and not path.exists():
            raise FileNotFoundError(f"no database at {path} yet: `codegenapp serve` or `codegenapp migrate` makes it")
        db = await prepare_database(settings, migrate_sqlite=False)
        # It decrypts nothing: without a key (none set or generated yet) a throwaway one does.
        return Store(db, Crypto(settings.encryption_key or Crypto.generate_key()), github_url=settings.github_url)

    return await status_cli.run(settings, args, open_store)


async def set_secret(settings: Settings, args: argparse.Namespace) -> int:
    value = sys.stdin.read()
    if value.endswith("\n"):
        value = value[:-1]
    store = await _store(settings)
    try:
        project = await store.projects.get_project_by_name(args.repository)
        if project is None:
            print(f"codegenapp: no project for {args.repository} (see `codegenapp projects list`)", file=sys.stderr)
            return 1
        try:
            await store.projects.set_secret(project.id, args.name, value)
        except InvalidSecret as exc:
            print(f"codegenapp: {exc}", file=sys.stderr)
            return 1
        await store.audit.record("secret.set", actor="cli", project_id=project.id,
                                 installation_id=project.installation_id, details={"name": args.name})
    finally:
        await store.close()
    print(f"secret {args.name} set for {args.repository}")
    return 0
