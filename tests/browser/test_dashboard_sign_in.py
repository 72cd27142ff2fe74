"""Signing in to the dashboard with a real identity provider (the npm
package oidc-provider on 127.0.0.1, tests/support/oidc_provider.mjs), in
Debian's chromium: the provider's login and consent pages, back to the
dashboard as that person, a task approved that then shows the person's name
as `completed_by`, and sign-out revoking the token."""

import json
import subprocess
import time
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import httpx
import pytest
from playwright.sync_api import Page, expect

from server.settings import CHECKOUT
from tests.browser.test_dashboard import TIMEOUT_MS, browser, page  # noqa: F401 - fixtures
from tests.support.stack import Stack, free_port, running_stack
from tests.support.tokens import create_token

CLIENT_ID = "htk-dashboard"
CLIENT_SECRET = uuid.uuid4().hex
ORG = f"sso-{uuid.uuid4().hex[:10]}"
PERSON = {
    "name": "Alice Example",
    "email": "alice@example.com",
    "org": ORG,
    "groups": ["release-managers", "everyone"],
}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    http_port, provider_port = free_port(), free_port()
    issuer = f"http://127.0.0.1:{provider_port}"
    provider = subprocess.Popen(
        [
            "node",
            str(CHECKOUT / "tests" / "support" / "oidc_provider.mjs"),
            str(provider_port),
            CLIENT_ID,
            CLIENT_SECRET,
            f"http://127.0.0.1:{http_port}/",
            json.dumps(PERSON),
        ],
        cwd=CHECKOUT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_for(f"{issuer}/.well-known/openid-configuration")
        env = {
            "HTK_WORKERS": "1",
            "HTK_HTTP_PORT": str(http_port),
            "HTK_OIDC_ISSUER": issuer,
            "HTK_OIDC_CLIENT_ID": CLIENT_ID,
            "HTK_OIDC_CLIENT_SECRET": CLIENT_SECRET,
            "HTK_OIDC_GROUP_SCOPES": "release-managers=tasks:complete",
        }
        with running_stack(tmp_path_factory.mktemp("sign-in"), env=env) as running:
            yield running
    finally:
        provider.terminate()
        provider.wait(timeout=30)


def _wait_for(url: str) -> None:
    """Until the provider answers, a bounded number of tries."""
    for _ in range(300):
        try:
            if httpx.get(url, timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    pytest.fail(f"the identity provider never answered at {url}")


def test_a_person_signs_in_with_the_provider_approves_a_task_and_signs_out(
    page: Page,  # noqa: F811 - the fixture
    stack: Stack,
) -> None:
    writer = create_token(stack.env, ORG, "processes:write")
    with httpx.Client(
        base_url=f"{stack.http_url}/api/v1",
        headers={"Authorization": f"Bearer {writer}"},
        timeout=30,
    ) as pipeline:
        sign_in_approve_and_sign_out(page, stack, pipeline)


def test_a_sign_in_this_tab_did_not_start_is_refused_without_finishing_it(
    page: Page,  # noqa: F811 - the fixture
    stack: Stack,
) -> None:
    # Someone else's sign-in, which the server did start: its state is good.
    started = httpx.post(
        f"{stack.http_url}/api/v1/sign-in:start",
        json={"redirect_uri": f"{stack.http_url}/"},
        timeout=30,
    )
    state = parse_qs(urlsplit(started.json()["authorization_url"]).query)["state"][0]
    finishing: list[str] = []
    page.on(
        "request",
        lambda request: finishing.append(request.url) if "sign-in:finish" in request.url else None,
    )
    # The link such a person would send: back from the provider with their code.
    page.goto(f"{stack.http_url}/?code=their-code&state={quote(state)}")
    expect(page.get_by_text("This sign-in was not started in this tab")).to_be_visible(
        timeout=TIMEOUT_MS
    )
    assert finishing == []
    expect(page.locator(".token-name")).to_have_count(0)


def sign_in_approve_and_sign_out(tab: Page, stack: Stack, pipeline: httpx.Client) -> None:
    steps: list[dict[str, Any]] = [{"key": "review", "label": "Review", "human": True}]
    created = pipeline.post(
        "/processes", json={"namespace": "releases", "name": "Release 4.0", "step_defs": steps}
    )
    process_id = created.json()["process_id"]
    pipeline.post(
        f"/processes/{process_id}/update", json={"type": "step_started", "step": "review"}
    ).raise_for_status()

    tab.goto(stack.http_url + "/")
    tab.get_by_role("button", name="Sign in with 127.0.0.1").click()
    # The provider's own pages: any login and password, then consent.
    tab.locator('input[name="login"]').fill("alice")
    tab.locator('input[name="password"]').fill("any password")
    tab.locator('button[type="submit"]').click()
    tab.get_by_role("button", name="Continue").click()

    expect(tab.locator(".token-name")).to_have_text("Alice Example", timeout=TIMEOUT_MS)
    expect(tab.locator(".org")).to_have_text(ORG)
    assert "code=" not in tab.url and "state=" not in tab.url
    tab.goto(f"{stack.http_url}/#/processes/{process_id}")
    review = tab.locator('[data-step="review"]')
    expect(review.locator(".task-summary")).to_contain_text("waiting for a person")
    review.get_by_role("button", name="Approve").click()
    expect(review.locator(".task-summary")).to_contain_text("approved by Alice Example")
    step = pipeline.get(f"/processes/{process_id}").json()["timeline"][0]
    assert (step["status"], step["completed_by"]) == ("completed", "Alice Example")

    token = tab.evaluate("sessionStorage.getItem('htk.token')")
    assert pipeline.get("/caller", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    tab.get_by_role("button", name="Sign out").click()
    expect(tab.get_by_role("button", name="Sign in with 127.0.0.1")).to_be_visible()
    # Refused within the promised second: the worker's token cache hears of
    # the revocation by its notification, after the commit.
    refused_by = time.monotonic() + 1
    while (
        status := pipeline.get("/caller", headers={"Authorization": f"Bearer {token}"}).status_code
    ) == 200 and time.monotonic() < refused_by:
        time.sleep(0.05)
    assert status == 401
