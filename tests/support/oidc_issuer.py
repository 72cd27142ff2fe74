"""A real OpenID issuer on 127.0.0.1 for the token exchange's tests: it serves
OpenID Connect Discovery and its JWKS over HTTP, and signs tokens as a CI
(GitHub Actions' claims) would, with keys it can rotate.

It also makes the forgeries an attacker would try: `alg: none`, and HS256
keyed with the issuer's public key. And it is a provider people sign in with:
a test "logs a person in" (`authorize`, what the provider's login page would
do), and its token endpoint trades the code for an ID token, checking the
client's secret and the PKCE verifier.
"""

import base64
import hashlib
import hmac
import json
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass
class Issuer:
    """The issuer at `url`; `keys` are those its JWKS publishes, the last one signing."""

    url: str
    keys: list[RSAKey | ECKey] = field(default_factory=list)
    # How many times its JWKS was fetched.
    jwks_fetches: int = 0
    # What its discovery document says, where a test makes it lie.
    discovery: dict[str, Any] = field(default_factory=dict)
    # The bytes it serves as its JWKS instead, where a test makes it hostile.
    raw_jwks: bytes | None = None
    # The clients people sign in to: id -> secret.
    clients: dict[str, str] = field(default_factory=dict)
    # Codes given out and not yet used: what each will put in its ID token.
    codes: dict[str, dict[str, Any]] = field(default_factory=dict)

    def authorize(self, authorization_url: str, person: Mapping[str, Any]) -> str:
        """What the login page does once `person` (their claims) signs in:
        the `code` the browser comes back with, for the request's client,
        nonce and PKCE challenge."""
        query = dict(parse_qsl(urlsplit(authorization_url).query))
        assert query["response_type"] == "code" and query["code_challenge_method"] == "S256"
        assert query["client_id"] in self.clients
        code = uuid.uuid4().hex
        self.codes[code] = {"query": query, "person": dict(person)}
        return code

    def redeem(
        self, form: Mapping[str, str], client: tuple[str, str]
    ) -> tuple[int, dict[str, Any]]:
        """The token endpoint: the ID token for a code, once."""
        if self.clients.get(client[0]) != client[1]:
            return 401, {"error": "invalid_client"}
        granted = self.codes.pop(form.get("code", ""), None)
        if granted is None or granted["query"]["redirect_uri"] != form.get("redirect_uri"):
            return 400, {"error": "invalid_grant"}
        challenge = _b64(hashlib.sha256(form.get("code_verifier", "").encode()).digest())
        if challenge != granted["query"]["code_challenge"]:
            return 400, {"error": "invalid_grant"}
        claims = {"aud": client[0], "nonce": granted["query"]["nonce"], **granted["person"]}
        id_token = self.token(**claims)
        return 200, {"id_token": id_token, "token_type": "Bearer", "access_token": "unused"}

    def rotate(self, *, keep_old: bool = False, kind: str = "RSA") -> None:
        """Signs with a new key from now on, published beside the old ones
        or instead of them."""
        key: RSAKey | ECKey = (
            RSAKey.generate_key(2048, parameters={"kid": uuid.uuid4().hex, "use": "sig"})
            if kind == "RSA"
            else ECKey.generate_key("P-256", parameters={"kid": uuid.uuid4().hex, "use": "sig"})
        )
        self.keys = [*self.keys, key] if keep_old else [key]

    @property
    def signing_key(self) -> RSAKey | ECKey:
        return self.keys[-1]

    def jwks(self) -> dict[str, Any]:
        return {"keys": [key.as_dict(private=False) for key in self.keys]}

    def claims(self, **overrides: Any) -> dict[str, Any]:
        """A GitHub Actions job's claims, valid now, with `overrides`."""
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.url,
            "aud": "htk",
            "sub": "repo:acme/app:ref:refs/heads/main",
            "repository": "acme/app",
            "repository_owner": "acme",
            "ref": "refs/heads/main",
            "iat": now,
            "nbf": now,
            "exp": now + 300,
        }
        claims.update(overrides)
        return {name: value for name, value in claims.items() if value is not None}

    def token(self, **overrides: Any) -> str:
        """A token the issuer signs with its current key (claims: see `claims`)."""
        key = self.signing_key
        alg = "RS256" if isinstance(key, RSAKey) else "ES256"
        return jwt.encode({"alg": alg, "kid": key.kid}, self.claims(**overrides), key)

    def unsigned_token(self, **overrides: Any) -> str:
        """`alg: none`: claims anyone could write."""
        header = {"alg": "none", "kid": self.signing_key.kid, "typ": "JWT"}
        payload = json.dumps(self.claims(**overrides)).encode()
        return f"{_b64(json.dumps(header).encode())}.{_b64(payload)}."

    def hs256_with_public_key(self, **overrides: Any) -> str:
        """HS256 keyed with the issuer's public key (which anyone can fetch):
        accepted by a verifier that lets the token pick the algorithm."""
        # By hand: joserfc itself refuses a public key as an HMAC secret.
        public_pem = self.signing_key.as_pem(private=False)
        header = {"alg": "HS256", "kid": self.signing_key.kid}
        payload = json.dumps(self.claims(**overrides)).encode()
        signed = f"{_b64(json.dumps(header).encode())}.{_b64(payload)}"
        mac = hmac.new(public_pem, signed.encode(), hashlib.sha256).digest()
        return f"{signed}.{_b64(mac)}"


@contextmanager
def running_issuer() -> Iterator[Issuer]:
    """An issuer serving discovery and its JWKS on a free loopback port."""
    issuer = Issuer(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/.well-known/openid-configuration":
                self._json(
                    {
                        "issuer": issuer.url,
                        "jwks_uri": f"{issuer.url}/jwks",
                        "authorization_endpoint": f"{issuer.url}/authorize",
                        "token_endpoint": f"{issuer.url}/token",
                        "id_token_signing_alg_values_supported": ["RS256", "ES256"],
                        **issuer.discovery,
                    }
                )
            elif self.path == "/jwks":
                issuer.jwks_fetches += 1
                if issuer.raw_jwks is None:
                    self._json(issuer.jwks())
                else:
                    self._body(issuer.raw_jwks)
            else:
                self.send_error(404)

        def do_POST(self) -> None:
            if self.path != "/token":
                self.send_error(404)
                return
            length = int(self.headers.get("content-length", "0"))
            form = dict(parse_qsl(self.rfile.read(length).decode()))
            _, _, credentials = (self.headers.get("authorization") or "").partition(" ")
            user, _, secret = base64.b64decode(credentials).decode().partition(":")
            status, answer = issuer.redeem(form, (unquote(user), unquote(secret)))
            self._json(answer, status)

        def _json(self, document: Mapping[str, Any], status: int = 200) -> None:
            self._body(json.dumps(document).encode(), status)

        def _body(self, body: bytes, status: int = 200) -> None:
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # quiet tests

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    issuer.url = f"http://127.0.0.1:{server.server_address[1]}"
    issuer.rotate()
    # A short poll: each issuer's shutdown waits for one.
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield issuer
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
