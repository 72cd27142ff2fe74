"""The dashboard's Webhooks page in a real browser: a token with
webhooks:manage creates a webhook (its secret shown once, with a copy
button), sees a delivery reach a real receiver in the delivery log, and
redelivers it; a token without the scope is told so. A stack of its own lets
webhooks call the receiver on 127.0.0.1 (tests/browser/test_dashboard.py has
the browser and helpers)."""

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Page, expect

from tests.browser import test_dashboard as dashboard
from tests.browser.test_dashboard import sign_in
from tests.support.stack import Stack, running_stack
from tests.support.tokens import create_token
from tests.support.webhooks import LOCAL_RECEIVERS, Receiver, receiver

browser = dashboard.browser
page = dashboard.page


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    env = {"HTK_WORKERS": "1", **LOCAL_RECEIVERS}
    with running_stack(Path(tmp_path_factory.mktemp("dashboard-hooks")), env=env) as running:
        yield running


@pytest.fixture
def inbox() -> Iterator[Receiver]:
    with receiver() as running:
        yield running


def _delivered(stack: Stack, token: str, webhook_id: str) -> bool:
    deliveries = httpx.get(
        f"{stack.http_url}/api/v1/webhooks/{webhook_id}/deliveries",
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    ).json()["deliveries"]
    return bool(deliveries) and deliveries[0]["status"] == "delivered"


def test_a_webhook_made_in_the_page_shows_its_deliveries_and_redelivers(
    page: Page, stack: Stack, inbox: Receiver
) -> None:
    org_id = f"dash-hooks-{time.monotonic_ns()}"
    manager = create_token(stack.env, org_id, "webhooks:manage", "ops")
    writer = create_token(stack.env, org_id, "processes:write", "pipeline")
    sign_in(page, stack, manager)
    page.get_by_role("link", name="Webhooks").click()

    page.get_by_label("URL").fill(inbox.url("dash"))
    page.get_by_label("Event types (comma-separated, * for all)").fill("process.created")
    page.get_by_role("button", name="Create webhook").click()

    secret = page.locator(".secret-value")
    expect(secret).to_contain_text("whsec_")
    expect(page.get_by_role("button", name="Copy secret")).to_be_visible()
    inbox.expect("dash", secret.inner_text())
    row = page.locator("tr[data-webhook-id]")
    expect(row).to_contain_text(inbox.url("dash"))
    expect(row).to_contain_text("process.created")
    webhook_id = str(row.get_attribute("data-webhook-id"))

    httpx.post(
        f"{stack.http_url}/api/v1/processes",
        headers={"Authorization": f"Bearer {writer}"},
        json={"namespace": "web", "name": "v1", "step_defs": [{"key": "build", "label": "B"}]},
        timeout=30,
    ).raise_for_status()
    (arrival,) = inbox.wait_for(lambda got: len(got) == 1, "dash")
    assert arrival.verified
    for _ in range(100):  # recorded just after the receiver answered
        if _delivered(stack, manager, webhook_id):
            break
        time.sleep(0.05)
    row.get_by_role("link").click()
    delivery = page.locator(f'tr[data-delivery-id="{arrival.webhook_id}"]')
    expect(delivery.locator(".chip")).to_have_text("delivered")
    expect(delivery).to_contain_text("process.created")

    delivery.get_by_role("button", name="Redeliver").click()
    _, again = inbox.wait_for(lambda got: len(got) == 2, "dash")
    assert again.webhook_id == arrival.webhook_id


def test_a_token_without_the_scope_is_told_so(page: Page, stack: Stack) -> None:
    reader = create_token(stack.env, f"dash-hooks-{time.monotonic_ns()}", "", "reader")
    sign_in(page, stack, reader)
    page.goto(f"{stack.http_url}/#/webhooks")
    expect(page.locator("main .note")).to_contain_text("webhooks:manage")
