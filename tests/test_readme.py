"""The README is a user's front page: what it is, the two commands, install, configure, commands, one short
table of results; the benchmark narrative lives in docs/performance.md, with every figure the table quotes."""

from __future__ import annotations

import re

from tests.support.kustomize import ROOT

README = (ROOT / "README.md").read_text()
PERFORMANCE = (ROOT / "docs/performance.md").read_text()
SECTIONS = ["The two commands", "Install", "Configure", "Commands", "Results", "Development"]


def section(title: str) -> str:
    return README.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


def test_the_sections_a_user_looks_for_in_order_and_short():
    assert re.findall(r"^## (.+)$", README, re.MULTILINE) == SECTIONS
    assert len(README.split()) < 2000  # the narrative of every benchmark is in docs/performance.md


def test_the_two_commands_are_exactly_the_ones_ci_runs():
    block = re.search(r"```sh\n(.*?)```", section("The two commands"), re.DOTALL)[1]
    assert [line.split("#")[0].strip() for line in block.splitlines()] == ["./dev demo", "./dev test"]
    assert "./dev test" in (ROOT / ".ci/run").read_text()


def test_install_says_to_build_and_push_the_image_and_where_to_set_it():
    install = section("Install")
    assert re.search(r"docker build -t (\S+) \.\n\s*docker push \1\n", install)
    assert "manifests/images/images.yaml" in install and "kubectl apply -k manifests/base" in install


def test_every_figure_of_the_results_table_is_explained_in_docs_performance():
    table = [line for line in section("Results").splitlines() if line.startswith("| ") and "---" not in line]
    figures = {f for line in table for f in re.findall(r"[−-]?\d[\d,.]*(?:%|x\b| ms\b| req/s)", line)}
    assert len(table) >= 4 and len(figures) >= 8
    for figure in figures:
        assert figure in PERFORMANCE, f"{figure} is not in docs/performance.md"
    for heading in ("Deployment time on a WAN", "The first rollout through the CCR front"):
        assert f"## {heading}" in PERFORMANCE
