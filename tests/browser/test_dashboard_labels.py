"""The dashboard's labels and links: chips in the list and on a process's
page, a click on one lists the processes that carry it, and "Open run ↗"
opens the process's url in a new tab that gets neither this page nor its
address. The stack, browser and organization are test_dashboard.py's."""

import re

from playwright.sync_api import Page, expect

from tests.browser import test_dashboard as dashboard
from tests.browser.test_dashboard import STEPS, Team, sign_in
from tests.support.stack import Stack

# The dashboard tests' fixtures, by name.
stack, browser, page, team = dashboard.stack, dashboard.browser, dashboard.page, dashboard.team
URL = "https://ci.example.com/acme/app/actions/runs/42"


def create_labelled(team: Team, name: str, labels: dict[str, str], url: str | None = None) -> str:
    body = {"namespace": "labelled", "name": name, "step_defs": STEPS[:1], "labels": labels}
    response = team.pipeline.post("/processes", json=body | ({"url": url} if url else {}))
    response.raise_for_status()
    return str(response.json()["process_id"])


def test_labels_are_chips_that_filter_and_the_url_opens_the_run(
    page: Page, stack: Stack, team: Team
) -> None:
    wanted = create_labelled(team, "Deploy api", {"env": "prod", "team": "payments"}, URL)
    other = create_labelled(team, "Deploy web", {"env": "staging", "team": "payments"})
    sign_in(page, stack, team.alice)
    page.get_by_label("Namespace").fill("labelled")
    page.get_by_role("button", name="Apply").click()
    expect(page.locator(".count")).to_have_text("1 to 2 of 2 processes")

    row = page.locator(f'tr[data-process-id="{wanted}"]')
    expect(row.locator(".chip.label")).to_have_text(["env=prod", "team=payments"])
    link = row.get_by_role("link", name="Open run ↗")
    expect(link).to_have_attribute("href", URL)
    expect(link).to_have_attribute("rel", "noopener noreferrer")
    expect(link).to_have_attribute("target", "_blank")
    # A process without a url has no link.
    expect(page.locator(f'tr[data-process-id="{other}"] .run-link')).to_have_count(0)

    row.get_by_role("link", name="env=prod").click()
    expect(page).to_have_url(re.compile(r"label=env%3Dprod"))
    expect(page.locator(".count")).to_have_text("1 to 1 of 1 processes")
    expect(page.locator("tbody tr")).to_have_count(1)
    expect(page.get_by_label("Labels")).to_have_value("env=prod")

    # Typed in the form: every label must match.
    page.get_by_label("Labels").fill("team=payments env=staging")
    page.get_by_role("button", name="Apply").click()
    expect(page.locator("tbody tr")).to_have_count(1)
    expect(page.locator(f'tr[data-process-id="{other}"]')).to_be_visible()

    page.goto(f"{stack.http_url}/#/processes/{wanted}")
    facts = page.locator(".facts")
    expect(facts.locator(".chip.label")).to_have_text(["env=prod", "team=payments"])
    expect(facts.get_by_role("link", name="Open run ↗")).to_have_attribute("href", URL)
    facts.get_by_role("link", name="team=payments").click()
    expect(page).to_have_url(re.compile(r"#/\?label=team%3Dpayments$"))
    expect(page.locator("tbody tr")).to_have_count(2)
