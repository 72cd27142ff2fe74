"""Labels and the link of a process: what create accepts, what a list filter reads."""

from datetime import UTC, datetime
from uuid import uuid4

import pytest

from server.domain.errors import InvalidArgument
from server.domain.processes import Process, StepDef, list_query, new_process, stored_bytes
from server.domain.processes.labels import (
    MAX_LABEL_FILTERS,
    MAX_LABEL_VALUE_LENGTH,
    MAX_LABELS,
    MAX_URL_LENGTH,
    check_labels,
    check_url,
    label_filters,
)
from server.domain.tokens import Caller

NOW = datetime(2026, 3, 1, tzinfo=UTC)


def created(labels: dict[str, str] | None = None, url: str | None = None) -> Process:
    return new_process(
        org_id="acme",
        namespace="deployments",
        name="Deploy",
        step_defs=[StepDef("build", "Build", human=False)],
        now=NOW,
        created_by=Caller("acme", frozenset(), "ci-pipeline", uuid4()),
        labels=labels,
        url=url,
    )


@pytest.mark.parametrize(
    "key", ["env", "a", "app.kubernetes.io/name", "team_1", "x" * 63, "0-9", "ci/run-id"]
)
def test_label_keys_take_the_kubernetes_shape(key: str) -> None:
    assert check_labels({key: "v"}) == {key: "v"}


@pytest.mark.parametrize(
    "key", ["", "Env", "-env", "env-", "env.", "/a", "x" * 64, "a b", "é", "a=b", "a\x00"]
)
def test_a_malformed_label_key_is_refused_naming_it(key: str) -> None:
    with pytest.raises(InvalidArgument) as raised:
        check_labels({key: "v"})
    assert raised.value.field == (f"labels.{key}" if key else "labels")


def test_label_values_are_bounded_text() -> None:
    assert check_labels({"a": "", "b": "x" * MAX_LABEL_VALUE_LENGTH})["a"] == ""
    for value in ("x" * (MAX_LABEL_VALUE_LENGTH + 1), "nul\x00"):
        with pytest.raises(InvalidArgument) as raised:
            check_labels({"env": value})
        assert raised.value.field == "labels.env"


def test_at_most_32_labels_and_they_read_back_sorted() -> None:
    labels = {f"k{index:02}": "v" for index in reversed(range(MAX_LABELS))}
    assert list(check_labels(labels)) == sorted(labels)
    with pytest.raises(InvalidArgument) as raised:
        check_labels(labels | {"one-more": "v"})
    assert raised.value.field == "labels"


@pytest.mark.parametrize(
    "url",
    [
        "https://ci.example.com/acme/app/actions/runs/42",
        "http://localhost:8080/runs/1?attempt=2#log",
        "HTTPS://EXAMPLE.COM",
        "https://[::1]:8443/x",
        "https://example.com/a%20b",
    ],
)
def test_an_absolute_http_url_is_taken_as_sent(url: str) -> None:
    assert check_url(url) == url


@pytest.mark.parametrize(
    "url",
    [
        "javascript:alert(1)",
        "data:text/html,<script>alert(1)</script>",
        "/runs/42",
        "runs/42",
        "//example.com/runs",
        "ftp://example.com/",
        "https://",
        "https:///path",
        "http:example.com",
        " https://example.com",
        "https://example.com/a b",
        "https://example.com/\n",
        "https://[nope/",
        "https://" + "a" * (MAX_URL_LENGTH - 7),
        "",
    ],
)
def test_anything_but_an_absolute_http_url_is_refused_naming_url(url: str) -> None:
    with pytest.raises(InvalidArgument) as raised:
        check_url(url)
    assert raised.value.field == "url"


def test_a_new_process_keeps_its_labels_and_url_within_its_budget() -> None:
    bare = created()
    process = created(labels={"team": "payments", "env": "prod"}, url="https://ci.example/1")
    assert process.labels == {"env": "prod", "team": "payments"}
    assert process.url == "https://ci.example/1"
    grown = stored_bytes(process) - stored_bytes(bare)
    assert grown == len("teampaymentsenvprod") + len("https://ci.example/1")
    with pytest.raises(InvalidArgument, match="url"):
        created(url="javascript:alert(1)")


def test_label_filters_are_key_value_pairs_split_at_the_first_equals() -> None:
    assert label_filters(["team=payments", "env=prod", "expr=a=b", "empty="]) == (
        ("empty", ""),
        ("env", "prod"),
        ("expr", "a=b"),
        ("team", "payments"),
    )


@pytest.mark.parametrize("given", [["env"], ["=prod"], ["Env=prod"], ["env=a", "env=b"]])
def test_a_malformed_label_filter_is_refused_naming_label(given: list[str]) -> None:
    with pytest.raises(InvalidArgument) as raised:
        label_filters(given)
    assert raised.value.field == "label"


def test_at_most_32_label_filters() -> None:
    with pytest.raises(InvalidArgument):
        label_filters([f"k{index}=v" for index in range(MAX_LABEL_FILTERS + 1)])


def test_a_page_token_belongs_to_its_label_filters() -> None:
    plain, labelled = list_query("acme"), list_query("acme", label=["env=prod"])
    reordered = list_query("acme", label=["team=a", "env=prod"])
    assert plain.filters_fingerprint() != labelled.filters_fingerprint()
    assert (
        reordered.filters_fingerprint()
        == list_query("acme", label=["env=prod", "team=a"]).filters_fingerprint()
    )
