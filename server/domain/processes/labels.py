"""A process's labels and link: how they are checked on create, and how a
list asks for the processes that carry some labels.

Labels follow the shape teams know from Kubernetes and CI systems (`env`,
`team`, `app.kubernetes.io/name`), so that the same keys can be copied over;
the link is rendered as a link by dashboards, hence only http(s) URLs.
"""

import re
import urllib.parse
from collections.abc import Mapping, Sequence

from server.domain import declared
from server.domain.checks import check_text
from server.domain.errors import InvalidArgument

MAX_LABELS = declared.CREATE_PROCESS_REQUEST_LABELS_MAX_ITEMS
MAX_LABEL_FILTERS = declared.LIST_PROCESSES_REQUEST_LABEL_MAX_ITEMS
MAX_LABEL_KEY_LENGTH = 63
MAX_LABEL_VALUE_LENGTH = 256
MAX_URL_LENGTH = declared.CREATE_PROCESS_REQUEST_URL_MAX_LENGTH
LABEL_KEY = re.compile(
    rf"[a-z0-9](?:[a-z0-9._/-]{{0,{MAX_LABEL_KEY_LENGTH - 2}}}[a-z0-9])?", re.ASCII
)
_KEY_RULE = (
    f"must be 1-{MAX_LABEL_KEY_LENGTH} lowercase letters, digits, '.', '_', '/' or '-',"
    " starting and ending with a letter or digit"
)
_URL_PREFIXES = ("https://", "http://")
# What a URL may hold besides letters and digits (RFC 3986's unreserved,
# reserved and '%'): no spaces or control characters, which browsers would
# strip or reinterpret, so what is stored is what a link goes to.
_URL_CHARACTERS = re.compile(r"[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]+")


def check_labels(labels: Mapping[str, str]) -> dict[str, str]:
    """The labels of a new process, or InvalidArgument naming the bad one."""
    if len(labels) > MAX_LABELS:
        raise InvalidArgument("labels", f"at most {MAX_LABELS} labels are allowed")
    for key, value in labels.items():
        _check_key(f"labels.{key}" if key else "labels", key)
        check_text(f"labels.{key}", value, MAX_LABEL_VALUE_LENGTH)
    # Sorted by key: a process reads back the same however they were sent.
    return dict(sorted(labels.items()))


def _check_key(where: str, key: str) -> None:
    if not LABEL_KEY.fullmatch(key):
        raise InvalidArgument(where, f"key {key!r} {_KEY_RULE}")


def check_url(url: str | None) -> str | None:
    """The link of a new process: an absolute http(s) URL with a host."""
    if url is None:
        return None
    if len(url) > MAX_URL_LENGTH:
        raise InvalidArgument("url", f"must be at most {MAX_URL_LENGTH} characters")
    if not _URL_CHARACTERS.fullmatch(url):
        raise InvalidArgument(
            "url", "must be a URL without spaces or control characters (percent-encode them)"
        )
    if not url.lower().startswith(_URL_PREFIXES):
        raise InvalidArgument("url", "must be an absolute https:// or http:// URL")
    try:
        host = urllib.parse.urlsplit(url).hostname
    except ValueError:  # e.g. a bracketed host that is no IPv6 address
        host = None
    if not host:
        raise InvalidArgument("url", "must name a host, as in https://ci.example.com/runs/42")
    return url


def label_filters(filters: Sequence[str]) -> tuple[tuple[str, str], ...]:
    """ListProcesses' `label` filters (`key=value` each), sorted by key."""
    if len(filters) > MAX_LABEL_FILTERS:
        raise InvalidArgument("label", f"at most {MAX_LABEL_FILTERS} label filters are allowed")
    wanted: dict[str, str] = {}
    for text in filters:
        key, equals, value = text.partition("=")
        if not equals:
            raise InvalidArgument("label", f"{text!r} must be key=value")
        _check_key("label", key)
        check_text("label", value, MAX_LABEL_VALUE_LENGTH)
        if key in wanted:
            raise InvalidArgument(
                "label", f"key {key!r} is given twice; a process has one value per key"
            )
        wanted[key] = value
    return tuple(sorted(wanted.items()))
