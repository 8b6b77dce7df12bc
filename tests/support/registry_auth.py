"""Registry `auth:` sections for the tests: htpasswd Basic auth (and, later, token auth)."""

from __future__ import annotations

from pathlib import Path

import bcrypt


def htpasswd_auth(workdir: Path, user: str, password: str) -> dict:
    """The registry `auth:` section for Basic auth with one user (bcrypt, as the registry requires)."""
    path = workdir / "htpasswd"
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()
    path.write_text(f"{user}:{hashed}\n")
    return {"htpasswd": {"realm": "ccr-tests", "path": str(path)}}
