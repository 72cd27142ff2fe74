"""`htk trust create|list|delete`: the trust policies that let CI jobs trade
their OIDC token for a short-lived htk token (docs/identity.md)."""

import argparse
import sys

from rich.console import Console

from htk_client.cli.options import command, group, key_value, print_json
from htk_client.rest import RestApi
from htk_client.text import safe
from htk_client.views import trust_policies_table

GITHUB_ACTIONS = "https://token.actions.githubusercontent.com"


def add(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Adds `trust` and its actions to the htk command."""
    trust = group(commands, "trust", "manage the trust policies of CI jobs (tokens:manage)")
    create = command(
        trust,
        "create",
        _create,
        "Trust a CI's jobs to exchange their OIDC token for an htk token",
        "The token needs the scope tokens:manage. Prints the policy's id (the policy with\n"
        "--json). A job whose token matches gets a token with --scopes for --ttl seconds.",
        f"  htk trust create --name 'app main' --issuer {GITHUB_ACTIONS} \\\n"
        "      --audience htk --subject 'repo:acme/app:ref:refs/heads/main' \\\n"
        "      --claim repository_owner=acme --scopes processes:write --ttl 900",
    )
    create.add_argument("--name", required=True, help="what it is for; names the tokens it issues")
    create.add_argument("--issuer", default=GITHUB_ACTIONS, help="the CI's OIDC issuer URL")
    create.add_argument("--audience", required=True, help="the `aud` the job asks its CI for")
    create.add_argument(
        "--subject", required=True, help="the job's `sub`; a trailing * matches any rest"
    )
    create.add_argument(
        "--claim",
        dest="claims",
        action="append",
        default=[],
        type=key_value("claim", "repository_owner=acme"),
        metavar="NAME=VALUE",
        help="a claim the job's token must carry with this value; repeat for more",
    )
    create.add_argument("--scopes", default="", help="comma-separated scopes of its tokens")
    create.add_argument("--ttl", type=int, help="seconds its tokens live (1-3600; default 900)")
    command(
        trust,
        "list",
        _list,
        "List the organization's trust policies",
        "The token needs the scope tokens:manage.",
        "  htk trust list\n  htk trust list --json",
    )
    delete = command(
        trust,
        "delete",
        _delete,
        "Delete a trust policy and revoke the tokens it issued",
        "The token needs the scope tokens:manage. Prints how many tokens were revoked.",
        "  htk trust delete $POLICY",
    )
    delete.add_argument("policy_id", metavar="POLICY_ID")


def _create(api: RestApi, args: argparse.Namespace, out: Console) -> int:
    body = {
        "name": args.name,
        "issuer": args.issuer,
        "audience": args.audience,
        "subject": args.subject,
        "claims": dict(args.claims),
        "scopes": [scope.strip() for scope in args.scopes.split(",") if scope.strip()],
    }
    if args.ttl is not None:
        body["token_ttl_seconds"] = args.ttl
    policy = api.create_trust_policy(body)
    if not print_json(args, policy):
        print(safe(policy.json.get("policy_id")))
    return 0


def _list(api: RestApi, args: argparse.Namespace, out: Console) -> int:
    listing = api.list_trust_policies()
    if not print_json(args, listing):
        out.print(trust_policies_table(listing.json))
    return 0


def _delete(api: RestApi, args: argparse.Namespace, out: Console) -> int:
    deleted = api.delete_trust_policy(args.policy_id)
    if not print_json(args, deleted):
        revoked = deleted.json.get("revoked_tokens", 0)
        print(safe(f"deleted {args.policy_id}; revoked {revoked} token(s)"), file=sys.stderr)
    return 0
