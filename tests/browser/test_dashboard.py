"""The web dashboard in a real browser: Debian's chromium, headless, driven by
Playwright, against the real stack (`htk run`: Envoy serving the page and
the API on one port).

One stack and one browser for the module; each test has a fresh tab (its
own sessionStorage) and its own processes, in one organization (tokens are
made by the `htk` CLI, which is slow to start). The stack runs one worker,
so that killing it breaks the page's stream for certain.
"""

import gzip
import json
import re
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from htk.processes.v1 import process_service_pb2
from server.settings import CHECKOUT
from tests.chaos.helpers import kill_worker, wait_until
from tests.support.stack import Stack, running_stack
from tests.support.tokens import create_token

CHROMIUM = shutil.which("chromium")
SCREENSHOTS = CHECKOUT / "build" / "screenshots"
RENDER_REPORT = CHECKOUT / "build" / "dashboard-render.json"
MAX_FIRST_LOAD_GZIP_BYTES = 200 * 1024
# Generous, for a loaded machine: how long the page may take to show a change.
TIMEOUT_MS = 20_000
STEPS: list[dict[str, Any]] = [
    {"key": "build", "label": "Build"},
    {"key": "test", "label": "Test"},
    {"key": "review", "label": "Review", "human": True},
]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    env = {"HTK_WORKERS": "1", "HTK_HEARTBEAT_SECONDS": "1"}
    with running_stack(tmp_path_factory.mktemp("dashboard"), env=env) as running:
        yield running


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert CHROMIUM, "no chromium on PATH: `make setup` installs Debian's"
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    tab = context.new_page()
    tab.set_default_timeout(TIMEOUT_MS)
    expect.set_options(timeout=TIMEOUT_MS)
    refused: list[str] = []
    tab.on(
        "console",
        lambda message: (
            refused.append(message.text) if "Content Security" in message.text else None
        ),
    )
    yield tab
    context.close()
    assert not refused, f"the Content-Security-Policy refused: {refused}"


@dataclass
class Team:
    """An organization with a pipeline's token and a person's (alice)."""

    org_id: str
    pipeline: httpx.Client
    alice: str


@pytest.fixture(scope="module")
def team(stack: Stack) -> Iterator[Team]:
    org_id = f"dash-{uuid.uuid4().hex[:10]}"
    writer = create_token(stack.env, org_id, "processes:write", "pipeline")
    alice = create_token(stack.env, org_id, "tasks:complete", "alice")
    headers = {"Authorization": f"Bearer {writer}"}
    with httpx.Client(base_url=f"{stack.http_url}/api/v1", headers=headers, timeout=30) as client:
        yield Team(org_id, client, alice)


def create(
    team: Team, name: str, steps: list[dict[str, Any]] = STEPS, namespace: str = "deployments"
) -> str:
    response = team.pipeline.post(
        "/processes", json={"namespace": namespace, "name": name, "step_defs": steps}
    )
    response.raise_for_status()
    return str(response.json()["process_id"])


def update(team: Team, process_id: str, **fields: Any) -> None:
    team.pipeline.post(f"/processes/{process_id}/update", json=fields).raise_for_status()


def sign_in(page: Page, stack: Stack, token: str) -> None:
    page.goto(stack.http_url + "/")
    page.get_by_label("API token").fill(token)
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator(".org")).to_be_visible()


def stream_state(page: Page) -> str:
    return str(page.locator(".stream-state").get_attribute("data-state"))


def report(**figures: float | list[int]) -> None:
    """Adds figures to the render report (build/dashboard-render.json): printed
    and kept for people to read, never asserted (speed lives in bench/)."""
    RENDER_REPORT.parent.mkdir(parents=True, exist_ok=True)
    kept = json.loads(RENDER_REPORT.read_text()) if RENDER_REPORT.exists() else {}
    RENDER_REPORT.write_text(json.dumps(kept | figures) + "\n")
    print(f"\n{figures}")


# Sums the page's unexpected layout shifts (CLS) from now on into window.layoutShift.
OBSERVE_LAYOUT_SHIFT = """() => {
  window.layoutShift = 0;
  new PerformanceObserver((list) => {
    for (const shift of list.getEntries()) {
      if (!shift.hadRecentInput) window.layoutShift += shift.value;
    }
  }).observe({ type: "layout-shift" });
}"""
# The shifts so far, once the frames already drawn have reported theirs.
LAYOUT_SHIFT = """() => new Promise((resolve) =>
  requestAnimationFrame(() => requestAnimationFrame(() => resolve(window.layoutShift))))"""


def screenshot(page: Page, name: str, full_page: bool = True) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / name), full_page=full_page)


def test_the_page_is_served_with_strict_headers_and_a_small_first_load(stack: Stack) -> None:
    with httpx.Client(base_url=stack.http_url, timeout=30) as http:
        index = http.get("/")
        assert index.headers["content-type"] == "text/html; charset=utf-8"
        assert index.headers["cache-control"] == "no-cache"
        policy = index.headers["content-security-policy"]
        assert "default-src 'self'" in policy and "connect-src 'self'" in policy
        assert "unsafe-inline" not in policy
        assert index.headers["x-content-type-options"] == "nosniff"
        loaded = re.findall(r'(?:src|href)="(/assets/[^"]+)"', index.text)
        by_type = {path.rsplit(".", 1)[1]: path for path in loaded}
        assert set(by_type) == {"js", "css", "svg"}  # the script, its style, the tab's icon
        compressed = 0
        for path in loaded:
            asset = http.get(path)
            assert asset.headers["cache-control"] == "public, max-age=31536000, immutable"
            assert asset.headers["x-content-type-options"] == "nosniff"
            compressed += len(gzip.compress(asset.content))
        report(first_load_gzip_bytes=compressed)
        assert compressed < MAX_FIRST_LOAD_GZIP_BYTES
        # Envoy gzips them for browsers that take it.
        assert (
            http.get(by_type["js"], headers={"accept-encoding": "gzip"}).headers.get(
                "content-encoding"
            )
            == "gzip"
        )
        # Views live in the fragment: other paths are not the page.
        assert http.get("/processes").status_code == 404
        # The page's files only read, and say so as the API's paths do.
        for method, path in (("POST", "/"), ("PUT", by_type["js"]), ("DELETE", by_type["css"])):
            refused = http.request(method, path)
            assert (refused.status_code, refused.headers["allow"]) == (405, "GET, HEAD")
            assert (
                refused.json()["message"]
                == f"{method} is not allowed on this path; it takes GET, HEAD"
            )


def test_sign_in_keeps_the_token_in_the_tab_only(page: Page, stack: Stack, team: Team) -> None:
    sign_in(page, stack, team.alice)

    expect(page.locator(".org")).to_have_text(team.org_id)
    expect(page.locator(".token-name")).to_have_text("alice")
    assert page.evaluate("sessionStorage.getItem('htk.token')") == team.alice
    assert team.alice not in page.url
    assert not page.context.cookies()
    # A reload keeps the session (the tab's storage).
    page.reload()
    expect(page.locator(".token-name")).to_have_text("alice")


def test_a_refused_token_is_told_at_sign_in(page: Page, stack: Stack) -> None:
    page.goto(stack.http_url + "/")
    page.get_by_label("API token").fill("htk_not_a_real_token")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_contain_text("refused the token")


def test_the_list_filters_pages_and_follows_changes(page: Page, stack: Stack, team: Team) -> None:
    batch = [
        create(team, f"Batch job {number:02}", STEPS[:1], namespace="batch") for number in range(55)
    ]
    for process_id in batch[:3]:
        update(team, process_id, type="completed")
    sign_in(page, stack, team.alice)
    page.get_by_label("Namespace").fill("batch")
    page.get_by_role("button", name="Apply").click()

    expect(page.locator(".count")).to_have_text("1 to 50 of 55 processes")
    expect(page.locator("tbody tr")).to_have_count(50)
    expect(page.locator("tbody tr").first).to_contain_text("Batch job 54")
    renders = page.evaluate(
        "performance.getEntriesByName('process-list-render').map(entry => entry.duration)"
    )
    report(rows=50, render_ms=renders[0])
    screenshot(page, "processes.png")

    page.get_by_role("link", name="Next page →").click()
    expect(page.locator(".count")).to_have_text("51 to 55 of 55 processes")
    expect(page.locator("tbody tr")).to_have_count(5)

    page.get_by_label("Status").select_option("completed")
    page.get_by_label("Sort").select_option("oldest")
    page.get_by_role("button", name="Apply").click()
    expect(page.locator(".count")).to_have_text("1 to 3 of 3 processes")
    expect(page.locator("tbody tr").first).to_contain_text("Batch job 00")

    page.get_by_label("Status").select_option("")
    page.get_by_label("Search").fill("nightly")
    page.get_by_role("button", name="Apply").click()
    expect(page.locator(".count")).to_have_text("No processes match.")
    # Live: a new process appears, and its status changes, without a reload.
    page.evaluate("window.notReloaded = true")
    expect(page.locator(".stream-state")).to_have_attribute("data-state", "live")
    nightly = create(team, "Nightly build", namespace="batch")
    expect(page.locator(f'tr[data-process-id="{nightly}"]')).to_contain_text("running")
    update(team, nightly, type="failed", error="out of disk")
    expect(page.locator(f'tr[data-process-id="{nightly}"]')).to_contain_text("failed")
    assert page.evaluate("window.notReloaded")


def test_a_process_shows_its_timeline_and_follows_updates(
    page: Page, stack: Stack, team: Team
) -> None:
    process_id = create(team, "Deploy v2.1.0")
    update(team, process_id, type="step_started", step="build", detail="Building image")
    update(team, process_id, type="progress", step="build", message="Compiling", percent=40)
    sign_in(page, stack, team.alice)
    page.get_by_role("link", name="Deploy v2.1.0").click()

    expect(page.get_by_role("heading", name="Deploy v2.1.0")).to_be_visible()
    expect(page.locator(".lane")).to_have_count(3)
    build = page.locator('[data-step="build"]')
    expect(build).to_contain_text("40% Compiling")
    expect(page.locator(".bar.status-running")).to_have_count(1)
    expect(page.locator(".stream-state")).to_have_attribute("data-state", "live")
    page.evaluate("window.notReloaded = true")
    page.evaluate(OBSERVE_LAYOUT_SHIFT)

    update(
        team,
        process_id,
        type="step_completed",
        step="build",
        detail="Build successful",
        data={"image_tag": "v2.1.0-abc123"},
    )
    expect(build.locator(".chip")).to_have_text("completed")
    expect(build.locator(".data")).to_contain_text('"image_tag": "v2.1.0-abc123"')
    expect(page.locator(".events tbody tr")).to_have_count(3)
    # Who did it: the pipeline's token, by name.
    expect(page.locator(".events tbody tr").last.locator(".actor")).to_have_text("pipeline")
    assert page.evaluate("window.notReloaded")
    report(live_update_layout_shift=page.evaluate(LAYOUT_SHIFT))


def test_a_task_approved_in_the_page_completes_its_step(
    page: Page, stack: Stack, team: Team
) -> None:
    process_id = create(team, "Release 3.0")
    for step in ("build", "test"):
        update(team, process_id, type="step_started", step=step)
        update(team, process_id, type="step_completed", step=step)
    update(team, process_id, type="step_started", step="review")
    sign_in(page, stack, team.alice)
    page.goto(f"{stack.http_url}/#/processes/{process_id}")

    review = page.locator('[data-step="review"]')
    expect(review.locator(".task-summary")).to_contain_text("waiting for a person")
    screenshot(page, "process.png")
    comment = review.get_by_label("Comment (optional)")
    comment.fill("Ship it")
    # A live update while typing keeps the comment and the keyboard's focus.
    update(team, process_id, type="progress", step="review", message="Reviewer pinged")
    expect(review).to_contain_text("Reviewer pinged")
    expect(comment).to_be_focused()
    expect(comment).to_have_value("Ship it")
    review.get_by_role("button", name="Approve").click()

    expect(review.locator(".task-summary")).to_contain_text("approved by alice")
    expect(review.locator(".chip").first).to_have_text("completed")
    step = team.pipeline.get(f"/processes/{process_id}").json()["timeline"][2]
    assert (step["status"], step["completed_by"], step["detail"]) == (
        "completed",
        "alice",
        "Ship it",
    )


def test_a_task_rejected_from_the_inbox_fails_its_step(
    page: Page, stack: Stack, team: Team
) -> None:
    process_id = create(team, "Migrate billing", [STEPS[2]])
    update(team, process_id, type="step_started", step="review")
    sign_in(page, stack, team.alice)
    page.get_by_role("link", name="Tasks").click()

    card = page.locator(".task", has_text="Migrate billing")
    expect(card).to_be_visible()
    screenshot(page, "tasks.png")
    comment = card.get_by_label("Comment (optional)")
    card.get_by_role("button", name="Reject").click()
    # Rejecting asks first, with the comment focused for the reason.
    expect(card.locator(".confirm")).to_contain_text("Reject this task?")
    expect(comment).to_be_focused()
    comment.fill("Not on a Friday")
    card.get_by_role("button", name="Confirm reject").click()

    expect(card).to_have_count(0)
    step = team.pipeline.get(f"/processes/{process_id}").json()["timeline"][0]
    assert (step["status"], step["error"]) == ("failed", "rejected: Not on a Friday")
    assert step["completed_by"] == "alice"


def test_a_killed_worker_shows_reconnecting_then_catches_up(
    page: Page, stack: Stack, team: Team
) -> None:
    process_id = create(team, "Chaos run")
    update(team, process_id, type="step_started", step="build")
    sign_in(page, stack, team.alice)
    page.goto(f"{stack.http_url}/#/processes/{process_id}")
    expect(page.locator(".stream-state")).to_have_attribute("data-state", "live")

    kill_worker(stack, 0)
    expect(page.locator(".stream-state")).to_have_attribute("data-state", "reconnecting")
    # Updates while the page is cut off, as soon as the restarted worker takes them.
    for percent in (20, 40, 60):
        progress = {"type": "progress", "step": "build", "percent": percent}

        def accepted(progress: dict[str, Any] = progress) -> bool:
            return team.pipeline.post(f"/processes/{process_id}/update", json=progress).is_success

        wait_until(accepted, timeout=30, what="the restarted worker", interval=0.2)

    expect(page.locator(".stream-state")).to_have_attribute("data-state", "live")
    expect(page.locator('[data-step="build"]')).to_contain_text("60%")
    logged = team.pipeline.get(f"/processes/{process_id}/events").json()["events"]
    seqs = [
        int(seq)
        for seq in page.locator(".events tbody tr").evaluate_all(
            "rows => rows.map(row => row.dataset.seq)"
        )
    ]
    assert seqs == [event["seq"] for event in logged] == [1, 2, 3, 4]


def test_a_revoked_token_returns_to_sign_in(page: Page, stack: Stack, team: Team) -> None:
    token = create_token(stack.env, team.org_id, "", "short-lived")
    sign_in(page, stack, token)
    expect(page.locator(".stream-state")).to_have_attribute("data-state", "live")
    listing = stack.htk("token", "list", "--org", team.org_id).stdout
    (token_id,) = [line.split()[0] for line in listing.splitlines() if "short-lived" in line]
    assert stack.htk("token", "revoke", token_id).returncode == 0

    # Each change makes the list read again, with the revoked token.
    def signed_out() -> bool:
        create(team, "After revocation", STEPS[:1])
        return page.get_by_label("API token").is_visible()

    wait_until(signed_out, timeout=30, what="the sign-in form", interval=0.5)
    expect(page.get_by_role("alert")).to_contain_text("refused the token")
    assert page.evaluate("sessionStorage.getItem('htk.token')") is None


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        ("namespace=elsewhere.deployments", "'elsewhere.deployments' is outside your organization"),
        ("status=paused", "status"),
    ],
)
def test_a_filter_the_api_refuses_shows_its_reason_not_reconnecting(
    page: Page, stack: Stack, team: Team, query: str, reason: str
) -> None:
    sign_in(page, stack, team.alice)
    page.goto(f"{stack.http_url}/#/?{query}")

    expect(page.get_by_role("alert")).to_contain_text(reason)
    expect(page.locator(".stream-state")).to_have_attribute("data-state", "refused")
    expect(page.locator(".stream-state")).to_have_text("Not live")


def test_a_page_past_the_end_says_so_and_links_to_the_first(
    page: Page, stack: Stack, team: Team
) -> None:
    create(team, "Somewhere in the list")
    sign_in(page, stack, team.alice)
    page.goto(f"{stack.http_url}/#/?offset=100000")

    expect(page.locator(".count")).to_have_text("No processes on this page. Go to the first page")
    expect(page.locator("tbody tr")).to_have_count(0)
    page.get_by_role("link", name="Go to the first page").click()
    expect(page.locator(".count")).to_contain_text("1 to ")


def test_the_inbox_pages_like_the_list(page: Page, stack: Stack, team: Team) -> None:
    for number in range(2):
        process_id = create(team, f"Inbox page {number}", [STEPS[2]])
        update(team, process_id, type="step_started", step="review")
    sign_in(page, stack, team.alice)
    page.goto(f"{stack.http_url}/#/tasks")
    count = page.locator(".count")
    expect(count).to_contain_text(re.compile(r"^1 to \d+ of \d+ open tasks$"))
    total = int(str(count.text_content()).rsplit(" of ", 1)[1].split()[0])

    page.goto(f"{stack.http_url}/#/tasks?offset=1")
    expect(count).to_have_text(f"2 to {total} of {total} open tasks")
    expect(page.locator(".task")).to_have_count(total - 1)
    page.get_by_role("link", name="← Previous page").click()
    expect(count).to_have_text(f"1 to {total} of {total} open tasks")


def test_a_stream_ending_with_unauthenticated_in_band_signs_out_at_once(
    page: Page, stack: Stack, team: Team
) -> None:
    # The server ends a revoked token's stream with an in-band error, then
    # the same status: here without revoking, so that only the stream's
    # message can sign the page out.
    ended = process_service_pb2.WatchProcessesResponse()
    ended.error.code = 16  # UNAUTHENTICATED
    ended.error.message = "the token was revoked"
    message = ended.SerializeToString()
    trailer = b"grpc-status: 16\r\ngrpc-message: the token was revoked\r\n"
    body = (
        b"\x00"
        + len(message).to_bytes(4, "big")
        + message
        + b"\x80"
        + len(trailer).to_bytes(4, "big")
        + trailer
    )
    page.route(
        "**/htk.processes.v1.ProcessService/WatchProcesses",
        lambda route: route.fulfill(
            status=200, headers={"content-type": "application/grpc-web+proto"}, body=body
        ),
    )
    page.goto(stack.http_url + "/")
    page.get_by_label("API token").fill(team.alice)
    page.get_by_role("button", name="Sign in").click()

    # Signed in (the token is good), then out as soon as the stream says so.
    expect(page.get_by_role("alert")).to_contain_text("refused the token")
    expect(page.get_by_label("API token")).to_be_visible()
    assert page.evaluate("sessionStorage.getItem('htk.token')") is None


def test_a_reload_while_the_api_is_unreachable_keeps_the_token(
    page: Page, stack: Stack, team: Team
) -> None:
    sign_in(page, stack, team.alice)
    page.route("**/htk.processes.v1.ProcessService/GetCaller", lambda route: route.abort())
    page.reload()

    expect(page.get_by_role("alert")).to_contain_text("Could not sign in")
    assert page.evaluate("sessionStorage.getItem('htk.token')") == team.alice
    page.unroute("**/htk.processes.v1.ProcessService/GetCaller")
    page.reload()
    expect(page.locator(".token-name")).to_have_text("alice")


def test_a_malformed_process_address_says_no_such_process(
    page: Page, stack: Stack, team: Team
) -> None:
    sign_in(page, stack, team.alice)
    page.goto(f"{stack.http_url}/#/processes/%E0")

    expect(page.get_by_role("heading", name="No such process")).to_be_visible()
    expect(page.get_by_role("alert")).to_contain_text("not valid percent-encoding")


def test_the_page_reads_at_phone_width(page: Page, stack: Stack, team: Team) -> None:
    process_id = create(team, "A process with a rather long name, to wrap on a phone")
    update(team, process_id, type="step_started", step="build", detail="Working")
    page.set_viewport_size({"width": 375, "height": 800})
    sign_in(page, stack, team.alice)
    page.goto(f"{stack.http_url}/#/processes/{process_id}")
    expect(page.locator(".lane")).to_have_count(3)
    screenshot(page, "process-375.png")
    assert page.evaluate("document.documentElement.scrollWidth") <= 375
