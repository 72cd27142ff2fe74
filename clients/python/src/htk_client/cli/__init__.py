"""htk: track multi-step processes (CI/CD pipelines, deploy scripts, agents).

`htk processes`, `htk tasks`, `htk webhooks` and `htk trust` talk to a running htk over the
network, as any client does (configured by HTK_URL and HTK_TOKEN); see `htk processes --help`.
Where the server is installed, it adds its own commands: `htk run` runs the
whole service here, `htk token` manages API tokens in its database.
"""

import argparse
import importlib.metadata
import sys

from htk_client.cli import processes, tasks, trust, webhooks

# Where other installed packages add commands to `htk`: each entry point is a
# function that takes the subparsers of `htk` and adds its commands, each
# with a `run` default that takes the parsed arguments and returns the exit
# status (or raises UsageError). The server adds `run`, `serve` and `token` this way.
COMMANDS_ENTRY_POINTS = "htk.commands"


class UsageError(Exception):
    """A command was called wrongly (its arguments, its settings): printed as
    the htk command's usage error, exit status 2."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="htk", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--version",
        action="version",
        version=f"htk {importlib.metadata.version('htk-client')}",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for entry_point in importlib.metadata.entry_points(group=COMMANDS_ENTRY_POINTS):
        entry_point.load()(commands)
    processes.add(commands)
    tasks.add(commands)
    webhooks.add(commands)
    trust.add(commands)
    args = parser.parse_args(argv)
    try:
        exit_status: int = args.run(args)
    except UsageError as error:
        parser.error(str(error))
    return exit_status


if __name__ == "__main__":
    sys.exit(main())
