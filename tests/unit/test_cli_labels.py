"""`htk processes create --label --link` and `htk processes list --label`: what
they send, on a made-up API (the e2e tests run them against the real one)."""

import json

import httpx
import pytest

from htk_client.cli import main, options
from htk_client.rest import RestApi

PROCESS = {"process_id": "p-1", "status": "running"}


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[httpx.Request]:
    """The requests the command sends; each is answered with PROCESS in a page."""
    requests: list[httpx.Request] = []

    def serve(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        return httpx.Response(200, json=PROCESS | {"processes": [], "total": 0})

    def api(url: str, token: str) -> RestApi:
        return RestApi(url, token, transport=httpx.MockTransport(serve))

    monkeypatch.setattr(options, "RestApi", api)
    monkeypatch.setenv("HTK_TOKEN", "htk_test")
    return requests


def test_create_sends_labels_and_the_link_as_the_process_url(sent: list[httpx.Request]) -> None:
    argv = ["processes", "create", "--namespace", "deployments", "--name", "Deploy"]
    argv += ["--step", "build", "--label", "env=prod", "--label", "expr=a=b"]
    argv += ["--link", "https://ci.example.com/runs/42", "--url", "http://htk.test"]
    assert main(argv) == 0
    (request,) = sent
    assert str(request.url) == "http://htk.test/api/v1/processes"
    body = json.loads(request.content)
    assert body["labels"] == {"env": "prod", "expr": "a=b"}
    assert body["url"] == "https://ci.example.com/runs/42"


def test_create_without_labels_or_link_sends_neither(sent: list[httpx.Request]) -> None:
    assert main(["processes", "create", "--namespace", "d", "--name", "n", "--step", "b"]) == 0
    assert {"labels", "url"}.isdisjoint(json.loads(sent[0].content))


def test_list_sends_each_label_filter_as_its_own_parameter(sent: list[httpx.Request]) -> None:
    argv = ["processes", "list", "--label", "env=prod", "--label", "team=payments", "--json"]
    assert main(argv) == 0
    assert sent[0].url.params.get_list("label") == ["env=prod", "team=payments"]


@pytest.mark.parametrize("given", ["env", "=prod"])
def test_a_label_option_needs_key_equals_value(
    sent: list[httpx.Request], given: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["processes", "list", "--label", given])
    assert exited.value.code == 2
    assert "--label" in capsys.readouterr().err
    assert not sent
