"""The dashboard a team keeps open all day (issue 24): a list that reads at a
glance, the history of decided tasks, titles and links that survive a
reload, the live count of open tasks and its opt-in notification, and axe-core
finding nothing at WCAG 2.1 A and AA on every view, at 1280 and 375 px.

One stack and one browser for the module (test_dashboard.py's fixtures);
each test that counts tasks has an organization of its own, so that no
other test's tasks change its totals.
"""

import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from server.settings import CHECKOUT
from tests.browser import test_dashboard as dashboard
from tests.browser.test_dashboard import STEPS, TIMEOUT_MS, screenshot, sign_in
from tests.support.stack import Stack
from tests.support.tokens import create_token

# The dashboard tests' stack and browser, by name.
stack, browser = dashboard.stack, dashboard.browser

AXE = CHECKOUT / "dashboard" / "node_modules" / "axe-core" / "axe.min.js"
WCAG_21_AA = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]
# A zone an hour off UTC in winter: what the page says must be the browser's, not UTC.
TIME_ZONE = "Europe/Berlin"


@dataclass
class Org:
    """An organization of its own: a pipeline's token and two people's."""

    org_id: str
    pipeline: httpx.Client
    tokens: dict[str, str]

    def create(self, name: str, steps: list[dict[str, Any]] = STEPS, **fields: Any) -> str:
        body = {"namespace": "deployments", "name": name, "step_defs": steps} | fields
        response = self.pipeline.post("/processes", json=body)
        response.raise_for_status()
        return str(response.json()["process_id"])

    def update(self, process_id: str, **fields: Any) -> None:
        self.pipeline.post(f"/processes/{process_id}/update", json=fields).raise_for_status()

    def task_of(self, process_id: str, step: str = "review") -> str:
        timeline = self.pipeline.get(f"/processes/{process_id}").json()["timeline"]
        return str(next(entry["task_id"] for entry in timeline if entry["step"] == step))

    def decide(self, person: str, task_id: str, outcome: str, comment: str = "") -> None:
        response = self.pipeline.post(
            f"/tasks/{task_id}/complete",
            json={"outcome": outcome} | ({"comment": comment} if comment else {}),
            headers={"Authorization": f"Bearer {self.tokens[person]}"},
        )
        response.raise_for_status()


@contextmanager
def new_org(stack: Stack, org_id: str = "") -> Iterator[Org]:
    org_id = org_id or f"views-{uuid.uuid4().hex[:10]}"
    writer = create_token(stack.env, org_id, "processes:write", "ci-pipeline")
    tokens = {
        name: create_token(stack.env, org_id, "tasks:complete", name) for name in ("alice", "bob")
    }
    headers = {"Authorization": f"Bearer {writer}"}
    with httpx.Client(base_url=f"{stack.http_url}/api/v1", headers=headers, timeout=30) as client:
        yield Org(org_id, client, tokens)


@pytest.fixture
def org(stack: Stack) -> Iterator[Org]:
    with new_org(stack) as made:
        yield made


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 900}, timezone_id=TIME_ZONE)
    tab = context.new_page()
    tab.set_default_timeout(TIMEOUT_MS)
    expect.set_options(timeout=TIMEOUT_MS)
    refused: list[str] = []
    tab.on("console", lambda m: refused.append(m.text) if "Content Security" in m.text else None)
    yield tab
    context.close()
    assert not refused, f"the Content-Security-Policy refused: {refused}"


def started_seconds(org: Org, process_id: str) -> float:
    started = org.pipeline.get(f"/processes/{process_id}").json()["started_at"]
    return datetime.fromisoformat(started).timestamp()


def line_boxes(page: Page, selector: str) -> dict[str, int]:
    """How many line boxes each element matching `selector` is drawn on, by its text."""
    return dict(
        page.eval_on_selector_all(
            selector, "els => els.map(el => [el.textContent, el.getClientRects().length])"
        )
    )


def test_the_list_reads_at_a_glance(page: Page, stack: Stack, org: Org) -> None:
    waiting = org.create("Release 3.1")
    for step in ("build", "test"):
        org.update(waiting, type="step_started", step=step)
        org.update(waiting, type="step_completed", step=step)
    org.update(waiting, type="step_started", step="review")
    quick = org.create("Quick check", STEPS[:1])
    org.update(quick, type="completed")
    broken = org.create("Nightly ETL", STEPS[:1])
    long_word = "x" * 300
    org.update(broken, type="failed", error=f"load failed:\nline 2: {long_word}\nline 3")
    sign_in(page, stack, org.tokens["alice"])

    row = page.locator(f'tr[data-process-id="{waiting}"]')
    expect(row.locator(".current-step")).to_have_text("Review")  # the label, not the key
    expect(row.locator(".chip.waiting")).to_have_text("waiting for approval (1)")
    expect(row.locator(".duration")).to_have_attribute("data-since", re.compile(r"^\d+$"))
    started = row.locator("time")
    expect(started).to_have_attribute("title", re.compile(r"\(Europe/Berlin, UTC\+01:00\)$"))
    # Screen readers read the moment, not "… ago".
    expect(started.locator(".visually-hidden")).to_have_text(str(started.get_attribute("title")))
    expect(started.locator("[aria-hidden=true]")).to_have_text(re.compile(r"ago$|^just now$"))
    # A run that took less than a second reads in milliseconds, not "0 s".
    expect(page.locator(f'tr[data-process-id="{quick}"] .duration')).to_have_text(
        re.compile(r"^\d{1,3} ms$")
    )
    chips = line_boxes(page, "tbody .chip")
    assert set(chips.values()) == {1}, chips
    expect(page).to_have_title("Processes · htk")

    # The failed run's error keeps its lines, and its long word wraps.
    page.goto(f"{stack.http_url}/#/processes/{broken}")
    error = page.locator(".facts .step-error")
    expect(error).to_have_text(f"load failed:\nline 2: {long_word}\nline 3")
    assert error.evaluate("el => getComputedStyle(el).whiteSpace") == "pre-wrap"
    assert page.evaluate("document.documentElement.scrollWidth") <= 1280
    expect(page).to_have_title("Nightly ETL (failed) · htk")

    # Durations read in their largest two units; the browser's clock runs on.
    # (Playwright for Python reads a number as seconds since the epoch.)
    start = started_seconds(org, waiting)
    page.clock.install(time=start)
    page.goto(f"{stack.http_url}/#/")
    page.clock.pause_at(start + 1)
    page.clock.fast_forward(98_500)
    expect(row.locator(".duration")).to_have_text("1 m 39 s")
    expect(row.locator("time [aria-hidden=true]")).to_have_text("1 m 39 s ago")
    page.clock.fast_forward((2 * 60 + 5) * 60_000 - 99_500)
    expect(row.locator(".duration")).to_have_text("2 h 5 m")


def test_decided_tasks_are_kept_filtered_and_linked(page: Page, stack: Stack, org: Org) -> None:
    decisions = [("alice", "approved"), ("alice", "rejected"), ("bob", "approved")]
    for number, (person, outcome) in enumerate(decisions):
        process_id = org.create(f"Deploy {number}", [STEPS[2]])
        org.update(process_id, type="step_started", step="review")
        org.decide(person, org.task_of(process_id), outcome, comment=f"line 1\nline {number}")
    still_open = org.create("Deploy open", [STEPS[2]])
    org.update(still_open, type="step_started", step="review")
    sign_in(page, stack, org.tokens["alice"])
    badge = page.locator(".top .badge")
    expect(badge).to_have_text("1")

    page.get_by_role("link", name="Tasks").click()
    expect(page).to_have_title("Tasks (1 open) · htk")
    page.get_by_role("link", name="Decided").click()
    expect(page).to_have_title("Decided tasks · htk")
    count = page.locator(".count")
    expect(count).to_have_text("1 to 3 of 3 tasks")
    # Newest first, each with who decided, how, and the comment's lines.
    cards = page.locator(".task")
    expect(cards.first).to_contain_text("Deploy 2")
    expect(cards.first.locator(".task-summary")).to_contain_text("approved by bob")
    expect(cards.last.locator("q.comment")).to_have_text("line 1\nline 0")

    page.get_by_label("Outcome").select_option("rejected")
    page.get_by_role("button", name="Apply").click()
    expect(count).to_have_text("1 to 1 of 1 tasks")
    expect(cards).to_contain_text(["Deploy 1"])
    # The view is its address: a reload shows the same.
    page.reload()
    expect(count).to_have_text("1 to 1 of 1 tasks")
    expect(page.get_by_label("Outcome")).to_have_value("rejected")

    page.get_by_label("Outcome").select_option("")
    page.get_by_label("Decided by", exact=True).fill("bob")
    page.get_by_role("button", name="Apply").click()
    expect(page).to_have_url(re.compile(r"#/tasks/decided\?by=bob$"))
    expect(count).to_have_text("1 to 1 of 1 tasks")
    page.get_by_label("Decided by", exact=True).fill("nobody")
    page.get_by_role("button", name="Apply").click()
    expect(count).to_contain_text("No task matches.")
    # Expired and cancelled tasks have no outcome or decider to filter by.
    page.get_by_label("Ended").select_option("expired")
    expect(page.get_by_label("Decided by", exact=True)).to_be_disabled()
    expect(page.get_by_label("Outcome")).to_be_disabled()

    # The header's count follows new tasks live, on any view.
    another = org.create("Deploy another", [STEPS[2]])
    org.update(another, type="step_started", step="review")
    expect(badge).to_have_text("2")
    page.get_by_role("link", name="Open", exact=True).click()
    expect(page).to_have_title("Tasks (2 open) · htk")


# Records the notifications the page raises, through the browser's own Notification.
RECORD_NOTIFICATIONS = """
window.notified = [];
window.asked = 0;
const Real = window.Notification;
window.Notification = class extends Real {
  constructor(title, options) { super(title, options); window.notified.push(title); }
  static requestPermission() { window.asked += 1; return Real.requestPermission(); }
};
"""


def test_a_new_open_task_notifies_once_allowed_and_never_asks_unprompted(
    browser: Browser, stack: Stack, org: Org
) -> None:
    allowed = browser.new_context(permissions=["notifications"])
    allowed.add_init_script(RECORD_NOTIFICATIONS)
    page = allowed.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    sign_in(page, stack, org.tokens["alice"])
    expect(page.locator(".stream-state")).to_have_attribute("data-state", "live")
    # Allowed already: nothing to ask.
    expect(page.get_by_role("button", name="Notify me of new tasks")).to_have_count(0)
    process_id = org.create("Hotfix 7.0.1", [STEPS[2]])
    org.update(process_id, type="step_started", step="review")
    page.wait_for_function("() => window.notified.length === 1")
    assert page.evaluate("window.notified") == ["Hotfix 7.0.1: Review"]
    allowed.close()

    unasked = browser.new_context()
    unasked.add_init_script(RECORD_NOTIFICATIONS)
    page = unasked.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    sign_in(page, stack, org.tokens["alice"])
    ask = page.get_by_role("button", name="Notify me of new tasks")
    expect(ask).to_be_visible()
    assert page.evaluate("[window.asked, Notification.permission]") == [0, "default"]
    ask.click()
    page.wait_for_function("() => window.asked === 1")
    unasked.close()


def axe_violations(page: Page) -> list[str]:
    """What axe-core finds at WCAG 2.1 A and AA, one line per failing node."""
    if not page.evaluate("'axe' in window"):
        page.evaluate(AXE.read_text() + "\n;0")
    found = page.evaluate(
        "tags => axe.run(document, {runOnly: {type: 'tag', values: tags}})"
        ".then(r => r.violations.flatMap(v => v.nodes.map(n => `${v.id}: ${n.target}`)))",
        WCAG_21_AA,
    )
    return [str(line) for line in found]


def test_every_view_passes_axe_at_wcag_21_aa(page: Page, stack: Stack) -> None:
    # Realistic names, for the screenshots people see in the README.
    with new_org(stack, "northwind") as org:
        checked: dict[str, list[str]] = {}

        def check(view: str, shot: str = "") -> None:
            checked[view] = axe_violations(page)
            if shot:
                screenshot(page, shot)

        page.goto(stack.http_url + "/")
        expect(page.get_by_label("API token")).to_be_visible()
        check("sign-in")
        sign_in(page, stack, org.tokens["alice"])
        expect(page.locator(".count")).to_contain_text("No processes yet")
        check("list, empty")

        checkout = org.create(
            "Deploy checkout-api v2.14.0",
            [
                {"key": "build", "label": "Build image"},
                {"key": "test", "label": "Integration tests"},
                {"key": "approve", "label": "Approve production rollout", "human": True},
                {"key": "rollout", "label": "Roll out to eu-west-1"},
            ],
            labels={"env": "prod", "team": "payments"},
            url="https://ci.northwind.example/checkout-api/runs/8812",
        )
        org.update(checkout, type="step_started", step="build", detail="docker build")
        org.update(checkout, type="step_completed", step="build", data={"image": "v2.14.0-9f3c1a"})
        org.update(checkout, type="step_started", step="test")
        org.update(checkout, type="step_completed", step="test", detail="412 passed")
        org.update(checkout, type="step_started", step="approve")
        etl = org.create("Nightly ETL: orders → warehouse", STEPS[:2], namespace="data")
        org.update(etl, type="step_started", step="build")
        org.update(etl, type="progress", step="build", percent=64, message="Loading 2026-12-06")
        certs = org.create("Rotate TLS certificates", STEPS[:1], namespace="platform")
        org.update(certs, type="step_started", step="build")
        org.update(
            certs,
            type="failed",
            error="certbot: rate limited by the ACME server\nretry after 2026-12-08T00:00Z",
        )
        released = org.create("Release mobile app 5.2 (iOS)", [STEPS[2]], namespace="mobile")
        org.update(released, type="step_started", step="review")
        org.decide("bob", org.task_of(released), "approved", "Store screenshots checked")
        org.update(released, type="completed", summary="Submitted to the App Store")

        page.goto(f"{stack.http_url}/#/")
        expect(page.locator("tbody tr")).to_have_count(4)
        check("list, full", "list.png")
        page.goto(f"{stack.http_url}/#/processes/{etl}")
        expect(page.locator('[data-step="build"]')).to_contain_text("64%")
        check("process, running", "process-running.png")
        page.goto(f"{stack.http_url}/#/processes/{certs}")
        expect(page.locator(".facts .step-error")).to_be_visible()
        check("process, failed", "process-failed.png")
        page.goto(f"{stack.http_url}/#/processes/{checkout}")
        expect(page.locator(".task-actions")).to_be_visible()
        check("process, human step")
        # The README's picture: copied to docs/dashboard.png by hand when the
        # look changes (a test run must not change committed files).
        screenshot(page, "readme.png", full_page=False)
        page.locator(".task-actions").get_by_role("button", name="Reject").click()
        check("process, confirming a rejection")
        page.goto(f"{stack.http_url}/#/tasks")
        expect(page.locator(".task")).to_have_count(1)
        check("tasks, open", "tasks-open.png")
        page.goto(f"{stack.http_url}/#/tasks/decided")
        expect(page.locator(".task")).to_have_count(1)
        check("tasks, decided", "tasks-decided.png")

        page.set_viewport_size({"width": 375, "height": 800})
        page.goto(f"{stack.http_url}/#/")
        expect(page.locator("tbody tr")).to_have_count(4)
        check("list, 375 px", "list-375.png")
        assert page.evaluate("document.documentElement.scrollWidth") <= 375
        page.goto(f"{stack.http_url}/#/processes/{checkout}")
        expect(page.locator(".task-actions")).to_be_visible()
        check("process, 375 px", "process-375.png")
        assert page.evaluate("document.documentElement.scrollWidth") <= 375

    assert {view: found for view, found in checked.items() if found} == {}
