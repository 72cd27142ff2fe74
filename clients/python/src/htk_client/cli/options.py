"""What every network command shares: the connection options and how a
command runs on them, --json, its help's epilog (environment, exit statuses),
and the option types several commands take."""

import argparse
import json
import os
import sys
from collections.abc import Callable
from typing import Any

from rich.console import Console

from htk_client.rest import ApiError, JsonObject, Response, RestApi, Unreachable
from htk_client.text import safe
from htk_client.views import console

DEFAULT_URL = "http://localhost:8080"

# Exit statuses, as every command's help lists them.
EXIT_API_ERROR = 2
EXIT_UNREACHABLE = 3
EXIT_STATUSES = """\
exit status:
  0  success
  1  (watch --exit-status) the process failed
  2  the API refused the request (its message is printed on stderr), or bad usage
  3  htk could not be reached at the URL tried"""

ENVIRONMENT = f"""\
environment:
  HTK_URL    htk's address (default {DEFAULT_URL}); --url wins
  HTK_TOKEN  the API token (`htk token create`); --token wins"""

Handler = Callable[[RestApi, argparse.Namespace, Console], int]


def _connection() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(add_help=False)
    options = parser.add_argument_group("connection")
    options.add_argument("--url", help=f"htk's address (default: $HTK_URL, else {DEFAULT_URL})")
    options.add_argument("--token", help="the API token (default: $HTK_TOKEN)")
    return parser


def _output() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument(
        "--json", action="store_true", help="print the API's JSON response exactly, for scripts"
    )
    return parser


CONNECTION, OUTPUT = _connection(), _output()


def group(
    commands: "argparse._SubParsersAction[argparse.ArgumentParser]", name: str, summary: str
) -> "argparse._SubParsersAction[argparse.ArgumentParser]":
    """A command of the htk command (`processes`, `tasks`) whose actions call the API."""
    return commands.add_parser(
        name,
        help=f"{summary} (over the network)",
        description=f"{name.capitalize()} of your token's organization, through htk's API"
        " at $HTK_URL.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=f"{ENVIRONMENT}\n\n{EXIT_STATUSES}",
    ).add_subparsers(dest="action", required=True, metavar="ACTION")


def command(
    parent: "argparse._SubParsersAction[argparse.ArgumentParser]",
    name: str,
    handler: Handler,
    summary: str,
    description: str,
    examples: str,
    *,
    json_output: bool = True,
) -> argparse.ArgumentParser:
    """One action that calls the API: its help, its options, and its handler."""
    parser = parent.add_parser(
        name,
        help=summary,
        description=f"{summary}.\n\n{description}",
        epilog=f"examples:\n{examples}\n\n{ENVIRONMENT}\n\n{EXIT_STATUSES}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[CONNECTION, OUTPUT] if json_output else [CONNECTION],
    )
    parser.set_defaults(run=lambda args: run(handler, args))
    return parser


def run(handler: Handler, args: argparse.Namespace) -> int:
    """Runs `handler` on the API that the options and environment name;
    prints errors on stderr and returns the exit status."""
    url = args.url or os.environ.get("HTK_URL") or DEFAULT_URL
    token = args.token or os.environ.get("HTK_TOKEN")
    if not token:
        print("htk: no token: set HTK_TOKEN or pass --token", file=sys.stderr)
        return EXIT_API_ERROR
    api = RestApi(url, token)
    try:
        return handler(api, args, console(sys.stdout))
    except ApiError as error:
        print(f"htk: {safe(error)}", file=sys.stderr)
        return EXIT_API_ERROR
    except Unreachable as error:
        print(f"htk: {safe(error)}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except KeyboardInterrupt:
        return 130
    finally:
        api.close()


def print_json(args: argparse.Namespace, response: Response) -> bool:
    """Prints the response's JSON as the API sent it, if --json was given."""
    if not args.json:
        return False
    sys.stdout.write(response.text if response.text.endswith("\n") else response.text + "\n")
    return True


def query(args: argparse.Namespace, *names: str) -> dict[str, Any]:
    """The options among `names` that were given, by their API names."""
    return {name: getattr(args, name) for name in names if getattr(args, name) is not None}


def paging(parser: argparse.ArgumentParser, noun: str) -> None:
    parser.add_argument("--limit", type=int, help="page size, 1-200 (default 50)")
    parser.add_argument("--offset", type=int, help=f"how many matching {noun} to skip")
    parser.add_argument("--page-token", help="the next page, as the previous one gave it")


def idempotency_key(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--idempotency-key",
        metavar="KEY",
        help="retry safely: a repeat with the same key and request writes nothing again",
    )


def step_def(text: str) -> JsonObject:
    """`KEY[:LABEL[:human]]` as a step definition, read strictly: a third part
    that is not exactly `human` (`Human`, `humna`) is refused rather than read
    as an ordinary step, which would silently drop an approval gate."""
    key, *rest = text.split(":")
    if not key:
        raise argparse.ArgumentTypeError(f"a step needs a key, as KEY[:LABEL[:human]]: {text!r}")
    if len(rest) > 2 or (len(rest) == 2 and rest[1] != "human"):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not KEY[:LABEL[:human]]: after the label, only the word"
            " 'human' may follow (and a label cannot hold ':')"
        )
    # `KEY:human` is a human step labelled by its key, as it always was.
    human = rest[-1:] == ["human"]
    label = rest[0] if len(rest) == 2 or (rest and not human) else ""
    return {"key": key, "label": label or key, "human": human}


def key_value(noun: str, example: str) -> Callable[[str], tuple[str, str]]:
    """Reads `KEY=VALUE` as a `noun` (the value may hold `=`); the server checks the key."""

    def read(text: str) -> tuple[str, str]:
        key, equals, value = text.partition("=")
        if not key or not equals:
            raise argparse.ArgumentTypeError(f"a {noun} is KEY=VALUE, e.g. {example}: {text!r}")
        return key, value

    return read


label = key_value("label", "env=prod")


def json_object(text: str) -> JsonObject:
    try:
        value = json.loads(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"not JSON: {error}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError('must be a JSON object, e.g. \'{"image_tag": "v2"}\'')
    return value
