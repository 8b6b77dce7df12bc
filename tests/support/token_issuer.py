"""A Docker token service for the tests: checks Basic credentials (or a refresh token), issues ES256 JWTs.

The distribution registry trusts it through `auth: token:` (see registry_auth.token_auth): it verifies each
JWT's signature against the self-signed certificate carried in the token's `x5c` header and listed in the
registry's rootcertbundle. Every request is recorded so tests can count how often clients come back.

It can be made hostile: `echo_status` answers every request with that status and an error body echoing
everything it was sent (the Authorization header, its decoded password, the form with a refresh token, in
raw, JSON-escaped and URL-encoded forms), and `answered_expires_in` replaces the `expires_in` it states
(NaN and infinities written as the bare literals Python's json allows).
"""

from __future__ import annotations

import base64
import json
import secrets
import time
import urllib.parse
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from tests.support.loopback_server import LoopbackServer, QuietHandler
from webhook.tls import generate_ca


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass(frozen=True)
class TokenRequest:
    """One request the issuer answered: who asked (None: anonymous), for which scopes, granted or not."""

    user: str | None
    scopes: tuple[str, ...]
    method: str
    granted: bool


class TokenIssuer(LoopbackServer):
    """A threaded token server on 127.0.0.1; `users` are user -> password, `refresh_tokens` token -> user."""

    def __init__(
        self,
        users: dict[str, str],
        *,
        refresh_tokens: dict[str, str] | None = None,
        service: str = "ccr-tests-registry",
        issuer: str = "ccr-tests-issuer",
        expires_in: int = 300,
        anonymous_pull: bool = True,
    ) -> None:
        self.users = users
        self.refresh_tokens = refresh_tokens or {}
        self.service = service
        self.issuer = issuer
        self.expires_in = expires_in
        self.anonymous_pull = anonymous_pull
        self.requests: list[TokenRequest] = []
        self.issued: list[str] = []  # every token handed out, for tests that look for leaks
        self.echo_status: int | None = None
        self.answered_expires_in: Any = None  # None: the lifetime of the JWT
        self.keypair = generate_ca("ccr-tests token issuer")
        self._key = serialization.load_pem_private_key(self.keypair.key_pem, password=None)
        der = x509.load_pem_x509_certificate(self.keypair.cert_pem).public_bytes(serialization.Encoding.DER)
        self._x5c = base64.b64encode(der).decode()
        super().__init__(self._handler_class())

    @property
    def realm(self) -> str:
        return f"http://127.0.0.1:{self.port}/token"

    def hits(self, scope: str) -> int:
        """How many granted token requests named `scope`."""
        return sum(1 for request in self.requests if request.granted and scope in request.scopes)

    def sign(self, subject: str, scopes: tuple[str, ...], anonymous: bool) -> str:
        """A JWT granting `scopes` (anonymous: pull only), as distribution's token auth expects."""
        access = []
        for scope in scopes:
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            granted = [action for action in actions.split(",") if action == "pull" or not anonymous]
            access.append({"type": kind, "name": name, "actions": granted})
        now = int(time.time())
        header = {"typ": "JWT", "alg": "ES256", "x5c": [self._x5c]}
        claims = {
            "iss": self.issuer,
            "sub": subject,
            "aud": self.service,
            "exp": now + self.expires_in,
            "nbf": now - 10,
            "iat": now,
            "jti": secrets.token_hex(8),
            "access": access,
        }
        signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        r, s = decode_dss_signature(self._key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
        return f"{signing_input}.{_b64url(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"

    def _authenticate(
        self, method: str, authorization: str | None, form: dict[str, list[str]]
    ) -> tuple[bool, str | None]:
        """(accepted, user): a refresh token for POST, Basic for GET, or anonymous (user None) if allowed."""
        if method == "POST":
            user = self.refresh_tokens.get((form.get("refresh_token") or [""])[0])
            return user is not None, user
        if authorization and authorization.startswith("Basic "):
            user, _, password = base64.b64decode(authorization[6:]).decode().partition(":")
            return self.users.get(user) == password, user
        return self.anonymous_pull, None

    def _handler_class(self) -> type[QuietHandler]:
        issuer = self

        class Handler(QuietHandler):
            def do_GET(self) -> None:
                self._answer(urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query))

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length).decode()
                self._answer(urllib.parse.parse_qs(raw), raw)

            def _answer(self, form: dict[str, list[str]], raw: str = "") -> None:
                if issuer.echo_status is not None:
                    self._echo(form, raw)
                    return
                scopes = tuple(scope for value in form.get("scope", []) for scope in value.split(" ") if scope)
                accepted, user = issuer._authenticate(self.command, self.headers.get("Authorization"), form)
                issuer.requests.append(TokenRequest(user, scopes, self.command, accepted))
                if not accepted:
                    self._json(401, {"errors": [{"code": "UNAUTHORIZED", "message": "bad credentials"}]})
                    return
                token = issuer.sign(user or "anonymous", scopes, anonymous=user is None)
                issuer.issued.append(token)
                stated = issuer.expires_in if issuer.answered_expires_in is None else issuer.answered_expires_in
                self._json(200, {"token": token, "access_token": token, "expires_in": stated})

            def _echo(self, form: dict[str, list[str]], raw: str) -> None:
                """An error answer repeating what was sent, as careless token services do."""
                authorization = self.headers.get("Authorization") or ""
                decoded = base64.b64decode(authorization[6:]).decode() if authorization.startswith("Basic ") else ""
                said = f"bad request {authorization} user:password={decoded} form={form} raw={raw} path={self.path}"
                self._json(issuer.echo_status, {"errors": [{"code": "DENIED", "message": said, "detail": said}]})

            def _json(self, status: int, document: dict) -> None:
                self._raw(status, json.dumps(document).encode())

            def _raw(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        return Handler
