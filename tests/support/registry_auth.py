"""Registry `auth:` sections for the tests: htpasswd Basic auth, and token auth trusting a TokenIssuer."""

from __future__ import annotations

from pathlib import Path

import bcrypt

from tests.support.token_issuer import TokenIssuer


def htpasswd_auth(workdir: Path, user: str, password: str) -> dict:
    """The registry `auth:` section for Basic auth with one user (bcrypt, as the registry requires)."""
    path = workdir / "htpasswd"
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()
    path.write_text(f"{user}:{hashed}\n")
    return {"htpasswd": {"realm": "ccr-tests", "path": str(path)}}


def token_auth(workdir: Path, issuer: TokenIssuer) -> dict:
    """The registry `auth:` section trusting `issuer`'s JWTs (its certificate written as the root bundle)."""
    path = workdir / "token-root.pem"
    path.write_bytes(issuer.keypair.cert_pem)
    return {
        "token": {
            "realm": issuer.realm,
            "service": issuer.service,
            "issuer": issuer.issuer,
            "rootcertbundle": str(path),
        }
    }
