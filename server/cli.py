"""The server's commands of `htk`: `htk run` runs the whole service here,
`htk serve` one gRPC worker, `htk token` manages API tokens in its
database, and `htk archive` reads what retention archived. The `htk`
command itself, and its network commands, are the Python client's
(clients/python); it finds these through the entry point "htk.commands"
that pyproject.toml declares.
"""

import argparse
import asyncio
import json
import sys
import textwrap
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

from htk_client.cli import UsageError, main
from htk_client.text import safe
from server import logs
from server.domain.errors import DomainError
from server.domain.processes import utc_now, validate_org_id
from server.domain.tokens import Scope, parse_scopes
from server.settings import Settings, SettingsError, documented

T = TypeVar("T")


def add_commands(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Adds `run`, `serve`, `token` and `archive` to the htk command."""
    run = commands.add_parser(
        "run",
        help="run PostgreSQL, the gRPC server and Envoy until stopped",
        description="Runs PostgreSQL (embedded unless DATABASE_URL is set), the gRPC server"
        " workers and Envoy in front of them, until stopped (Ctrl-C, SIGTERM).",
        epilog=settings_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    serve_command = commands.add_parser(
        "serve", help="run one gRPC server process alone (needs DATABASE_URL)"
    )
    serve_command.add_argument(
        "--listen",
        action="append",
        default=[],
        help="an address to serve on besides HTK_GRPC_PORT (htk run gives each worker its own)",
    )
    token = commands.add_parser("token", help="manage API tokens").add_subparsers(
        dest="action", required=True
    )
    create = token.add_parser("create", help="create a token and print it")
    create.add_argument("--org", required=True, help="organization id, created if new")
    create.add_argument(
        "--scopes",
        default="",
        help=f"comma-separated: {', '.join(Scope)} (none: read-only)",
    )
    create.add_argument(
        "--name", default="", help="who or what holds it; tasks it decides record it (required)"
    )
    listing = token.add_parser("list", help="list an organization's tokens")
    listing.add_argument("--org", required=True)
    revoke = token.add_parser("revoke", help="revoke a token by its id")
    revoke.add_argument("token_id", type=uuid.UUID)
    for action in (create, listing, revoke):
        action.add_argument(
            "--verbose",
            action="store_true",
            help="log what it does on stderr (database, migrations), as HTK_LOG_LEVEL would",
        )
    for parser in (run, serve_command, create, listing, revoke):
        parser.set_defaults(run=_run)
    archive = commands.add_parser(
        "archive", help="read the archive of deleted processes (HTK_ARCHIVE_DIR)"
    ).add_subparsers(dest="action", required=True)
    read = archive.add_parser(
        "read",
        help="print each archived process once, as JSON",
        description="Prints each process archived in FILE once, the last copy written"
        " (a crash may have archived one twice), as one JSON object per line:"
        ' {"process": GetProcess\'s JSON, "events": [every event], "archived_at": ...}.',
    )
    read.add_argument("file", type=Path, help="an archive file, e.g. 2026-12-06.jsonl.gz")
    read.add_argument("--process", help="print only this process (exit status 1 if absent)")
    read.set_defaults(run=_read_archive)


def _read_archive(args: argparse.Namespace) -> int:
    # Files only: no settings, database or server modules beyond these two.
    from server.domain.retention import read_back
    from server.storage.archive import read_lines

    try:
        records = read_back(read_lines(args.file))
    except OSError as error:
        print(f"htk: cannot read {args.file}: {error.strerror}", file=sys.stderr)
        return 1
    if args.process is not None:
        records = [r for r in records if r["process"]["process_id"] == args.process]
        if not records:
            print(f"htk: no process {safe(args.process)} in {args.file}", file=sys.stderr)
            return 1
    for record in records:
        print(json.dumps(record, ensure_ascii=False, separators=(",", ":")))
    return 0


def _run(args: argparse.Namespace) -> int:
    try:
        settings = Settings.from_env()
    except SettingsError as error:
        raise UsageError(str(error)) from None
    logs.configure(_log_level(settings, args), settings.log_format)
    # The server's modules are imported only here, by the commands that use
    # them: the network commands start in a fraction of the time.
    from server import stack
    from server.app import serve

    try:
        match args.command:
            case "run":
                return stack.Supervisor(settings).run()
            case "serve":
                if not settings.database_url:
                    raise UsageError("htk serve needs DATABASE_URL (htk run sets it)")
                asyncio.run(serve(settings, settings.database_url, args.listen))
                return 0
            case _:
                return _token_command(settings, args)
    except DomainError as error:
        print(f"htk: {error}", file=sys.stderr)
        return 2


def _log_level(settings: Settings, args: argparse.Namespace) -> str:
    """The token commands print their result alone, so that scripts can take
    it (`TOKEN=$(htk token create ...)`): they log only warnings unless asked."""
    if args.command != "token" or "log_level" in settings.model_fields_set:
        return settings.log_level
    return "INFO" if args.verbose else "WARNING"


def settings_help() -> str:
    """Every setting with its variable, default, values and meaning: the
    declarations docs/operating.md's configuration table is rendered from."""
    lines = ["settings (environment variables; an empty one means its default):"]
    for setting in documented():
        default = setting.default.replace("`", "").replace("(unset)", "unset")
        lines.append(f"  {setting.variable} (default: {default}; {setting.values})")
        lines += textwrap.wrap(
            setting.meaning.replace("`", ""),
            width=88,
            initial_indent=" " * 6,
            subsequent_indent=" " * 6,
            break_on_hyphens=False,
        )
    return "\n".join(lines)


def _token_command(settings: Settings, args: argparse.Namespace) -> int:
    from server.service.tokens import TokenService
    from server.storage.database import Database
    from server.storage.embedded import database_url
    from server.storage.migrate import upgrade_to_latest

    def with_tokens(action: Callable[[TokenService], Awaitable[T]]) -> T:
        with database_url(settings.database_url, settings.data_dir) as url:
            upgrade_to_latest(url)

            async def go() -> T:
                database = Database(url, pool_size=1)
                try:
                    return await action(TokenService(database, utc_now))
                finally:
                    await database.close()

            return asyncio.run(go())

    match args.action:
        case "create":
            org_id = validate_org_id(args.org)
            scopes = parse_scopes(args.scopes)
            _, token = with_tokens(lambda tokens: tokens.create(org_id, args.name, scopes))
            print(token)
        case "list":
            print(f"{'ID':36}  {'STATE':28}  {'SCOPES':30}  NAME")
            for info in with_tokens(lambda tokens: tokens.list(args.org)):
                if info.revoked_at:
                    state = f"revoked {info.revoked_at:%Y-%m-%dT%H:%M:%SZ}"
                elif info.expires_at:
                    ends = "expired" if info.expires_at <= utc_now() else "expires"
                    state = f"{ends} {info.expires_at:%Y-%m-%dT%H:%M:%SZ}"
                else:
                    state = "active"
                scope_list = ",".join(info.scopes) or "(read-only)"
                print(f"{info.token_id}  {state:28}  {scope_list:30}  {safe(info.name)}")
        case "revoke":
            if not with_tokens(lambda tokens: tokens.revoke(args.token_id)):
                print(f"htk: no token with id {args.token_id}", file=sys.stderr)
                return 1
            print(f"revoked {args.token_id}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
