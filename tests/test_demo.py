"""The README's first command: the demo runs every part for real and says what happened."""

import pytest

from webhook.testing.demo import run_demo


@pytest.mark.integration
def test_demo_runs_end_to_end_and_every_claim_checks_out():
    lines = []
    assert run_demo(lines.append) == 0, "\n".join(lines)
    text = "\n".join(lines)
    assert "check: pinned to the digests the upstream serves (Docker-Content-Digest): yes" in text
    assert 'denied (403): container "web"' in text and 'container "tools"' in text
    assert "Warning: dry-run:" in text and "patch: none" in text
    assert "the CCR holds both (every platform, every blob verified): yes" in text
    assert "/mirror/demo/shop:1.4@sha256:" in text
    assert "check: rewritten to the front at once, with a warning that the image is cold: yes" in text
    assert "(mid-fetch: yes)" in text and "(1.00x the blobs)" in text
    assert "check: two nodes, one upstream fetch of every blob: yes" in text
    assert text.rstrip().endswith("Everything happened as described.")
