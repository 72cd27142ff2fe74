"""Signing people in with the organization's identity provider: OpenID
Connect's authorization code flow with PKCE, `state` and `nonce`, handled by
the server so that the browser never sees the client secret.

The server keeps nothing between the two legs: what the second needs (the
PKCE verifier, the nonce, where the browser comes back to, until when) goes
out in `state`, sealed (AES-GCM) under a key derived from the client secret,
so that the browser carries it and can neither read the verifier nor
change any of it.
"""

import base64
import hashlib
import json
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode, urlsplit

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from server.domain import declared
from server.domain.errors import InvalidArgument, Unauthenticated
from server.domain.processes import validate_org_id
from server.domain.tokens import Scope, parse_scopes

# A sign-in must come back within this.
SIGN_IN_SECONDS = 600
_NONCE_BYTES = 12


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def group_scopes(text: str) -> dict[str, frozenset[Scope]]:
    """`group=scope[+scope],...` (HTK_OIDC_GROUP_SCOPES), e.g.
    `release-managers=tasks:complete,deployers=processes:write+tasks:create`."""
    mapping: dict[str, frozenset[Scope]] = {}
    for entry in filter(None, (part.strip() for part in text.split(","))):
        group, equals, scopes = entry.partition("=")
        if not group or not equals:
            raise ValueError(f"each entry is group=scope, not {entry!r}")
        try:
            given = parse_scopes(scopes.replace("+", ","))
            mapping[group] = mapping.get(group, frozenset()) | given
        except InvalidArgument as error:
            raise ValueError(error.problem) from None
    return mapping


@dataclass(frozen=True)
class Provider:
    """The identity provider as configured (HTK_OIDC_*)."""

    issuer: str
    client_id: str
    client_secret: str
    org_claim: str
    groups_claim: str
    scopes_of_groups: Mapping[str, frozenset[Scope]]
    token_hours: int

    def _sealer(self) -> AESGCM:
        key = HKDF(
            algorithm=hashes.SHA256(), length=32, salt=None, info=b"htk sign-in state"
        ).derive(self.client_secret.encode())
        return AESGCM(key)

    def start(self, authorization_endpoint: str, redirect_uri: str, now: datetime) -> str:
        """The provider's URL the browser goes to, with the sealed `state`."""
        _check_redirect(redirect_uri)
        verifier = _b64(secrets.token_bytes(32))
        nonce = _b64(secrets.token_bytes(16))
        sealed = {
            "verifier": verifier,
            "nonce": nonce,
            "redirect_uri": redirect_uri,
            "until": (now + timedelta(seconds=SIGN_IN_SECONDS)).timestamp(),
        }
        iv = os.urandom(_NONCE_BYTES)
        state = _b64(iv + self._sealer().encrypt(iv, json.dumps(sealed).encode(), None))
        challenge = _b64(hashlib.sha256(verifier.encode()).digest())
        query = urlencode(
            {
                "response_type": "code",
                "client_id": self.client_id,
                "redirect_uri": redirect_uri,
                "scope": "openid profile email",
                "state": state,
                "nonce": nonce,
                "code_challenge": challenge,
                "code_challenge_method": "S256",
            }
        )
        separator = "&" if "?" in authorization_endpoint else "?"
        return f"{authorization_endpoint}{separator}{query}"

    def open_state(self, state: str, redirect_uri: str, now: datetime) -> "PendingSignIn":
        """What `start` sealed in `state`; refuses a state it did not make,
        one for another page, and one past SIGN_IN_SECONDS."""
        try:
            raw = _unb64(state)
            opened = json.loads(
                self._sealer().decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], None)
            )
        except (InvalidTag, ValueError):
            raise Unauthenticated(
                "state: not a sign-in this server started; sign in again"
            ) from None
        if opened["redirect_uri"] != redirect_uri:
            raise Unauthenticated("state: the sign-in was started for another page")
        if opened["until"] <= now.timestamp():
            raise Unauthenticated("state: the sign-in took too long; sign in again")
        return PendingSignIn(verifier=opened["verifier"], nonce=opened["nonce"])

    def person(self, claims: Mapping[str, Any], nonce: str) -> "Person":
        """Who the verified ID token's `claims` name, in which organization,
        with the scopes of their groups."""
        if claims.get("nonce") != nonce:
            raise Unauthenticated("nonce: the ID token is not for this sign-in")
        audience = claims.get("aud")
        audiences = audience if isinstance(audience, list) else [audience]
        if self.client_id not in audiences:
            raise Unauthenticated("aud: the ID token is for another client")
        org = claims.get(self.org_claim)
        if not isinstance(org, str):
            raise Unauthenticated(f"{self.org_claim}: the ID token names no organization")
        try:
            org_id = validate_org_id(org)
        except InvalidArgument:
            raise Unauthenticated(
                f"{self.org_claim}: {org[:64]!r} is not an organization id"
            ) from None
        name = claims.get("name") or claims.get("email")
        if not isinstance(name, str) or not name.strip():
            raise Unauthenticated("name: the ID token carries neither `name` nor `email`")
        groups = claims.get(self.groups_claim) or []
        scopes = frozenset(
            scope
            for group in (groups if isinstance(groups, list) else [groups])
            if isinstance(group, str)
            for scope in self.scopes_of_groups.get(group, frozenset())
        )
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject:
            raise Unauthenticated("sub: the ID token names no subject")
        return Person(org_id=org_id, name=name.strip(), scopes=scopes, subject=subject)


@dataclass(frozen=True)
class PendingSignIn:
    """What the second leg of a sign-in needs, from its state."""

    verifier: str
    nonce: str


@dataclass(frozen=True)
class Person:
    """Who signed in: their organization, name, scopes and the provider's `sub`."""

    org_id: str
    name: str
    scopes: frozenset[Scope]
    subject: str


def check_finish(code: str, state: str, redirect_uri: str) -> None:
    """The second leg's fields, before anything is asked of the provider."""
    _check_length("code", code, declared.FINISH_SIGN_IN_REQUEST_CODE_MAX_LENGTH)
    _check_length("state", state, declared.FINISH_SIGN_IN_REQUEST_STATE_MAX_LENGTH)
    _check_redirect(redirect_uri)


def _check_length(field: str, value: str, max_length: int) -> None:
    if not value or len(value) > max_length:
        raise InvalidArgument(field, f"must be 1 to {max_length} characters")


def _check_redirect(redirect_uri: str) -> None:
    """The page the provider sends the browser back to: a URL of the
    dashboard (the provider also checks it against the client's)."""
    _check_length(
        "redirect_uri", redirect_uri, declared.START_SIGN_IN_REQUEST_REDIRECT_URI_MAX_LENGTH
    )
    url = urlsplit(redirect_uri)
    if url.scheme not in ("http", "https") or not url.hostname or url.fragment:
        raise InvalidArgument("redirect_uri", "must be the dashboard's http(s) URL, no fragment")
