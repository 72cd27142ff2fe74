"""The delivery attempt's HTTP client against a real receiver on 127.0.0.1:
the address check at the connection, a redirect that is not followed, and a
receiver that does not answer in time."""

import threading

import pytest

from server.domain.errors import InvalidArgument
from server.service.webhook_http import SendFailed, post
from tests.support.webhooks import receiver

HEADERS = {"content-type": "application/json", "webhook-id": "msg_1"}


async def test_the_host_is_checked_at_the_connection() -> None:
    with receiver() as inbox:
        # localhost resolves to loopback: refused unless private addresses are allowed.
        url = inbox.url("checked").replace("127.0.0.1", "localhost")
        with pytest.raises(InvalidArgument) as refused:
            await post(url, HEADERS, b"{}", timeout_seconds=5, allow_private=False)
        assert refused.value.field == "url"
        assert await post(url, HEADERS, b"{}", timeout_seconds=5, allow_private=True) == 200
        (arrival,) = inbox.received("checked")
    assert arrival.headers["webhook-id"] == "msg_1"
    assert arrival.headers["host"] == url.split("/")[2]


async def test_a_redirect_is_an_answer_not_followed() -> None:
    with receiver() as inbox:
        inbox.answer = lambda path, number: 302 if path == "moved" else 200
        status = await post(
            inbox.url("moved"), HEADERS, b"{}", timeout_seconds=5, allow_private=True
        )
        assert status == 302
        assert [arrival.path for arrival in inbox.arrivals] == ["moved"]


async def test_no_answer_in_time_is_a_failed_attempt() -> None:
    with receiver() as inbox:
        inbox.held["silent"] = threading.Event()
        try:
            with pytest.raises(SendFailed) as failed:
                await post(
                    inbox.url("silent"), HEADERS, b"{}", timeout_seconds=0.5, allow_private=True
                )
        finally:
            inbox.held["silent"].set()
    assert "no reply within 0.5 s" in str(failed.value)


async def test_a_closed_port_is_a_failed_attempt() -> None:
    with receiver() as inbox:
        url = inbox.url("gone")
    with pytest.raises(SendFailed) as failed:
        await post(url, HEADERS, b"{}", timeout_seconds=5, allow_private=True)
    assert "connection failed" in str(failed.value)
