"""Registry `auth:` sections for the tests (htpasswd Basic auth, token auth trusting a TokenIssuer), the test user,
and the client side: config.json entries and the check that no secret shows in an error."""

from __future__ import annotations

import base64
import json
import traceback
from pathlib import Path

import bcrypt

from tests.support.token_issuer import TokenIssuer

USER, PASSWORD = "alice", "pa55-w0rd-never-shown"
SECRETS = (PASSWORD, base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode())


def docker_config(path: Path, key: str, **entry: str) -> Path:
    """A docker config.json at `path` with one `auths` entry for `key`."""
    path.write_text(json.dumps({"auths": {key: entry}}))
    return path


def basic_entry(user: str = USER, password: str = PASSWORD) -> dict[str, str]:
    """A config.json `auths` entry holding Basic credentials."""
    return {"auth": base64.b64encode(f"{user}:{password}".encode()).decode()}


def assert_no_secret(error: BaseException, secrets: tuple[str, ...] = SECRETS) -> None:
    """Fail if any of `secrets` shows anywhere in `error`'s traceback."""
    text = "".join(traceback.format_exception(error))
    for secret in secrets:
        assert secret not in text


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
