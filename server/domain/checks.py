"""Checks of request values that every resource shares: a word from a fixed
set, free text, a namespace, an id in a path."""

import enum
import re
import uuid
from typing import TypeVar

from server.domain.errors import InvalidArgument, NotFound

_NAMESPACE_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9_.-]{0,98}[A-Za-z0-9])?")
# Halves of UTF-16 surrogate pairs: no text of valid Unicode holds one alone.
_SURROGATE = re.compile("[\ud800-\udfff]")

E = TypeVar("E", bound=enum.StrEnum)


def one_of(enum_type: type[enum.StrEnum]) -> str:
    return ", ".join(member.value for member in enum_type)


def parse_choice(enum_type: type[E], field_name: str, value: str) -> E:
    try:
        return enum_type(value)
    except ValueError:
        raise InvalidArgument(
            field_name, f"unknown value {value!r}; expected one of: {one_of(enum_type)}"
        ) from None


def check_text(field_name: str, value: str | None, max_length: int) -> None:
    if value is None:
        return
    if len(value) > max_length:
        raise InvalidArgument(field_name, f"must be at most {max_length} characters")
    # PostgreSQL text cannot hold NUL; refusing it here keeps it a 400.
    if "\x00" in value:
        raise InvalidArgument(field_name, "must not contain NUL characters")
    if _SURROGATE.search(value):
        raise InvalidArgument(field_name, "must be valid Unicode (it holds half a surrogate pair)")


def qualify_namespace(org_id: str, namespace: str) -> str:
    """Returns `<org>.<name>` for a bare `<name>` or for a name already in the org.

    The part before the first dot is the organization, so a namespace that
    names another organization is rejected rather than silently re-homed.
    """
    if not namespace:
        raise InvalidArgument("namespace", "is required")
    owner, dot, name = namespace.partition(".")
    if not dot:
        owner, name = org_id, namespace
    elif owner != org_id:
        raise InvalidArgument(
            "namespace",
            f"{namespace!r} is outside your organization; use {org_id}.<name> or a bare <name>",
        )
    if not _NAMESPACE_NAME.fullmatch(name):
        raise InvalidArgument(
            "namespace",
            "the name after the organization must be 1-100 letters, digits, '_', '-' or '.', "
            "starting and ending with a letter or digit",
        )
    return f"{owner}.{name}"


def parse_id(kind: str, text: str) -> uuid.UUID:
    """Reads the id of a `kind` ("process", "webhook"...) from a request's
    path; text that is no UUID names none, hence NotFound, which shows at
    most its first 100 characters."""
    try:
        return uuid.UUID(text)
    except ValueError:
        raise NotFound(f"{kind} {text[:100]!r} not found") from None
