"""Every relative link between the docs resolves."""

from __future__ import annotations

import re

from tests.support.kustomize import (
    ROOT,
)


def test_links_between_docs_resolve():
    pages = [*(ROOT / "docs").glob("*.md"), ROOT / "README.md", ROOT / "certs/README.md", ROOT / "manifests/README.md"]
    for page in pages:
        for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", page.read_text()):
            if "://" not in target:
                assert (page.parent / target).exists(), f"{page.relative_to(ROOT)} links to missing {target}"
