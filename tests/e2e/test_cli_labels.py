"""`htk processes create --label --link` and `htk processes list --label`
against the test stack: what a pipeline types, read back as the API shows it."""

import json

from tests.e2e.test_cli import Cli, htk  # noqa: F401 - the fixture, by name

URL = "https://ci.example.com/acme/app/actions/runs/42"


def test_a_pipeline_labels_and_links_its_run_and_lists_by_label(htk: Cli) -> None:  # noqa: F811
    create = ["processes", "create", "--namespace", "cli-labels", "--step", "build"]
    labelled = htk.ok(
        *create, "--name", "Deploy", "--label", "env=prod", "--label", "team=payments",
        "--link", URL,
    ).strip()  # fmt: skip
    htk.ok(*create, "--name", "Deploy staging", "--label", "env=staging")

    shown = json.loads(htk.ok("processes", "get", labelled, "--json"))
    assert (shown["labels"], shown["url"]) == ({"env": "prod", "team": "payments"}, URL)
    page = json.loads(
        htk.ok("processes", "list", "--label", "team=payments", "--label", "env=prod", "--json")
    )
    assert page["total"] == 1
    assert [process["process_id"] for process in page["processes"]] == [labelled]


def test_a_link_the_api_refuses_is_an_error_naming_url(htk: Cli) -> None:  # noqa: F811
    result = htk(
        "processes", "create", "--namespace", "cli-labels", "--name", "Deploy", "--step", "build",
        "--link", "javascript:alert(1)",
    )  # fmt: skip
    assert result.returncode == 2
    assert "url" in result.stderr
