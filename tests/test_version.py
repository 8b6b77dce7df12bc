"""One version, from the package metadata: `--version`, build_info in every process, the image label, the CHANGELOG."""

from __future__ import annotations

import re
from importlib.metadata import version
from pathlib import Path

from webhook.admission.metrics import Metrics
from webhook.front.metrics import FrontMetrics
from webhook.version import VERSION
from webhook.warmer.metrics import WarmerMetrics

ROOT = Path(__file__).resolve().parent.parent


def test_the_version_is_the_package_metadata_s():
    assert VERSION == version("ccr-webhook") != "0+unknown"


def test_every_process_exposes_its_version_as_build_info():
    wanted = f'ccr_webhook_build_info{{version="{VERSION}"}} 1.0'
    for text in (
        WarmerMetrics(lambda: 0, lambda: 0).exposition()[0].decode(),
        FrontMetrics().exposition().decode(),
        Metrics().exposition()[0].decode(),
    ):
        assert wanted in text.splitlines()


def test_the_image_is_labelled_with_the_version():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(rf"^ARG VERSION={re.escape(VERSION)}$", dockerfile, re.MULTILINE), "ARG VERSION = pyproject's"
    final_stage = dockerfile[dockerfile.rindex("\nFROM ") :].replace("\\\n", " ")  # continuation lines joined
    assert re.search(r"^ARG VERSION=", final_stage, re.MULTILINE), "declared in the stage that labels"
    assert re.search(r'^LABEL .*org\.opencontainers\.image\.version="\$\{VERSION\}"', final_stage, re.MULTILINE)


def test_the_changelog_keeps_a_changelog_with_an_unreleased_section():
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert changelog.startswith("# Changelog\n")
    assert "https://keepachangelog.com/" in changelog
    assert re.search(r"^## \[Unreleased\]$", changelog, re.MULTILINE)
