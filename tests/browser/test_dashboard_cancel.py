"""The dashboard's Cancel button in a real browser: offered on a running
process to a token that may write processes only, it cancels the process
with the reason typed, and the page shows the process and its steps ended,
a cancelled step with the progress it had reached (tests/browser/test_dashboard.py
has the stack, browser and helpers)."""

from playwright.sync_api import Page, expect

from tests.browser import test_dashboard as dashboard
from tests.browser.test_dashboard import Team, create, sign_in, update
from tests.support.stack import Stack
from tests.support.tokens import create_token

# The dashboard tests' fixtures, found by pytest under these names here too.
stack = dashboard.stack
browser = dashboard.browser
page = dashboard.page
team = dashboard.team


def test_a_process_cancelled_in_the_page_ends_with_its_steps(
    page: Page, stack: Stack, team: Team
) -> None:
    operator = create_token(stack.env, team.org_id, "processes:write", "operator")
    process_id = create(team, "Release 4.0")
    update(team, process_id, type="step_started", step="build")
    update(team, process_id, type="progress", step="build", message="Compiling", percent=30)
    sign_in(page, stack, operator)
    page.goto(f"{stack.http_url}/#/processes/{process_id}")
    expect(page.locator(".stream-state")).to_have_attribute("data-state", "live")

    page.get_by_label("Reason (optional)").fill("superseded by 4.0.1")
    page.get_by_role("button", name="Cancel process").click()

    facts = page.locator(".facts")
    expect(facts.locator(".chip")).to_have_text("cancelled")
    expect(facts).to_contain_text("superseded by 4.0.1")
    # A finished process offers no cancel, and its steps read as ended.
    expect(page.get_by_role("button", name="Cancel process")).to_have_count(0)
    build = page.locator('[data-step="build"]')
    expect(build.locator(".chip").first).to_have_text("cancelled")
    # Where it stopped: the progress the cancelled step had reached stays shown.
    expect(build.locator(".progress")).to_contain_text("30% Compiling")
    expect(page.locator('[data-step="test"] .chip').first).to_have_text("skipped")
    last_event = page.locator(".events tbody tr").last
    expect(last_event).to_contain_text("cancelled")
    expect(last_event).to_contain_text("superseded by 4.0.1")
    process = team.pipeline.get(f"/processes/{process_id}").json()
    assert (process["status"], process["reason"]) == ("cancelled", "superseded by 4.0.1")
    assert [entry["status"] for entry in process["timeline"]] == ["cancelled", "skipped", "skipped"]


def test_no_cancel_is_offered_to_a_token_that_may_not_write(
    page: Page, stack: Stack, team: Team
) -> None:
    process_id = create(team, "Release 4.1")
    sign_in(page, stack, team.alice)
    page.goto(f"{stack.http_url}/#/processes/{process_id}")

    expect(page.get_by_role("heading", name="Release 4.1")).to_be_visible()
    expect(page.locator(".stream-state")).to_have_attribute("data-state", "live")
    expect(page.get_by_role("button", name="Cancel process")).to_have_count(0)
