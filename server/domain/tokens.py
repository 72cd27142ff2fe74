"""API tokens: their format, their digest, and the scopes they carry.

A token is `htk_` + 30 random base62 characters + a 6-character base62
CRC32 of that random part. The checksum lets the server reject a mistyped or
truncated token without touching the database. Only the SHA-256 digest of a
token is ever stored.
"""

import hashlib
import secrets
import string
import unicodedata
import uuid
import zlib
from dataclasses import dataclass
from datetime import datetime

# The scopes the protos name (deciding human steps, `tasks:complete`, is a
# person's, never implied by a pipeline's); offered here beside the tokens
# that hold them.
from server.domain.declared import Scope as Scope
from server.domain.errors import InvalidArgument, PermissionDenied

PREFIX = "htk_"
_ALPHABET = string.digits + string.ascii_letters
_RANDOM_LENGTH = 30
_CHECKSUM_LENGTH = 6
TOKEN_LENGTH = len(PREFIX) + _RANDOM_LENGTH + _CHECKSUM_LENGTH


# Creating and updating processes needs any one of these (per the API docs).
WRITE_SCOPES = frozenset({Scope.PROCESSES_WRITE, Scope.TASKS_CREATE})


@dataclass(frozen=True)
class Caller:
    """Who is calling: the organization, scopes and name of a valid token."""

    org_id: str
    scopes: frozenset[Scope]
    # What the token was created for (`htk token create --name`); recorded as
    # who completed a task.
    token_name: str
    # Which token it is, to forget or end what it opened once it is revoked.
    token_id: uuid.UUID
    # When the token stops working by itself (a trust policy's); None: never.
    expires_at: datetime | None = None

    def require_any(self, needed: frozenset[Scope]) -> None:
        if needed and not (self.scopes & needed):
            wanted = " or ".join(sorted(needed))
            raise PermissionDenied(f"this call needs a token with the scope {wanted}")


def _base62(number: int, width: int) -> str:
    digits = []
    for _ in range(width):
        number, remainder = divmod(number, len(_ALPHABET))
        digits.append(_ALPHABET[remainder])
    return "".join(reversed(digits))


def _checksum(body: str) -> str:
    return _base62(zlib.crc32(body.encode()), _CHECKSUM_LENGTH)


def generate_token() -> str:
    body = "".join(secrets.choice(_ALPHABET) for _ in range(_RANDOM_LENGTH))
    return PREFIX + body + _checksum(body)


def is_well_formed(token: str) -> bool:
    """Whether the token has htk's shape and a matching checksum."""
    if len(token) != TOKEN_LENGTH or not token.startswith(PREFIX):
        return False
    body = token[len(PREFIX) : len(PREFIX) + _RANDOM_LENGTH]
    checksum = token[len(PREFIX) + _RANDOM_LENGTH :]
    if any(char not in _ALPHABET for char in body + checksum):
        return False
    return secrets.compare_digest(checksum, _checksum(body))


def digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


MAX_TOKEN_NAME_LENGTH = 100
# The actor of what htk does by itself (a step's timeout), beside the token
# names that are the actors of calls: no token may take it, so that an
# event's actor tells htk from a person or pipeline.
SYSTEM_ACTOR = "htk"


# Scripts that write one language together, and so may mix in one name.
_SCRIPT_FAMILIES = {"HIRAGANA": "CJK", "KATAKANA": "CJK", "HANGUL": "CJK"}


def token_name(text: str) -> str:
    """A token's name, checked and in Unicode NFKC form: it is who
    `completed_by` says decided a task, and what the dashboard shows, so it
    must name someone, and not look like another's name. Names that differ
    only in case or width (`Alice`, and `alice` in fullwidth letters) have
    one `name_key`; a name that mixes scripts (a Cyrillic `a` in a Latin
    `alice`) is refused, as is one with invisible characters."""
    name = unicodedata.normalize("NFKC", text).strip()
    if not name:
        raise InvalidArgument("name", "must not be blank: tasks record it as completed_by")
    if len(name) > MAX_TOKEN_NAME_LENGTH:
        raise InvalidArgument("name", f"must be at most {MAX_TOKEN_NAME_LENGTH} characters")
    if not name.isprintable():
        raise InvalidArgument("name", "must not contain control characters (nor invisible ones)")
    if name_key(name) == name_key(SYSTEM_ACTOR):
        raise InvalidArgument(
            "name", f"{SYSTEM_ACTOR!r} is htk's own name, the actor of what it does by itself"
        )
    if len(scripts := _letter_scripts(name)) > 1:
        raise InvalidArgument(
            "name",
            f"mixes the scripts {', '.join(sorted(scripts))}; letters that look alike across"
            " scripts would let one name pass for another",
        )
    return name


def _letter_scripts(name: str) -> set[str]:
    """The scripts of the name's letters, as the first word of their Unicode
    names tells them (`LATIN`, `CYRILLIC`, `GREEK`, ...)."""
    scripts = set()
    for char in name:
        if unicodedata.category(char).startswith("L"):
            script = unicodedata.name(char, "UNKNOWN").split(" ")[0]
            scripts.add(_SCRIPT_FAMILIES.get(script, script))
    return scripts


def name_key(name: str) -> str:
    """What token names compare by: unique among an organization's active
    tokens. Case-folded after NFKC, and normalized again, since folding can
    undo the normal form."""
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", name).casefold())


def parse_scopes(text: str) -> frozenset[Scope]:
    """Parses a comma-separated scope list such as `processes:write,tasks:create`."""
    scopes = set()
    for name in filter(None, (part.strip() for part in text.split(","))):
        try:
            scopes.add(Scope(name))
        except ValueError:
            known = ", ".join(scope.value for scope in Scope)
            raise InvalidArgument("scopes", f"unknown scope {name!r} (known: {known})") from None
    return frozenset(scopes)
