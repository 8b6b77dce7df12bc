"""Writing the serving pair to disk, replaced whole and only when it changes, so a reloading server picks it up."""

from __future__ import annotations

import os
from pathlib import Path

from webhook.tls.renewal import TLSMaterial


def write_serving_files(directory: str | os.PathLike[str], material: TLSMaterial) -> bool:
    """Write tls.key, tls.crt and ca.crt into `directory` if they differ; True if anything changed.

    Each file is replaced by a rename, so a reader never sees half a file. Every changed file is written
    to its temporary first and the renames follow one another, key first: a reader can still catch the
    new key beside the old certificate, but only between two renames (a reloading server keeps its old
    pair until the two agree).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    staged: list[tuple[Path, Path]] = []
    try:
        for name, content, mode in (
            ("tls.key", material.serving.key_pem, 0o600),
            ("tls.crt", material.serving.cert_pem, 0o644),
            ("ca.crt", material.ca_bundle, 0o644),
        ):
            path = directory / name
            if path.exists() and path.read_bytes() == content:
                continue
            temporary = directory / f".{name}.tmp"
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
            with os.fdopen(fd, "wb") as handle:
                handle.write(content)
            staged.append((temporary, path))
        for temporary, path in staged:
            os.replace(temporary, path)
    finally:
        for temporary, _path in staged:
            if temporary.exists():
                temporary.unlink()
    return bool(staged)
