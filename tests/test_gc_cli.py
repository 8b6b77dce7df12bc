"""`ccr-webhook gc` end to end: a real registry, a fake API server through a kubeconfig, output and exit codes."""

from __future__ import annotations

import json
import re

import pytest
import yaml

from tests.support.workloads import pod
from webhook.cli import main
from webhook.retention.plan import format_bytes
from webhook.testing.cosign import new_key, sign_image
from webhook.testing.sample_image import push_sample_image

pytestmark = pytest.mark.integration
REPOSITORY = "mirror/up/app"


@pytest.fixture
def client(empty_ccr_client):
    return empty_ccr_client


@pytest.fixture
def args(empty_ccr, cluster, tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "ccr": {"registry": empty_ccr.host, "endpoint": empty_ccr.url, "insecure": True},
                "upstreams": [{"registry": "up.io", "prefix": "mirror/up"}],
                "retention": {"enabled": True, "maxUnusedAge": "7d", "keepNewest": 1},
            }
        )
    )
    return ["gc", "--config", str(path), "--kubeconfig", str(cluster.write_kubeconfig()), "--sync-timeout", "10"]


@pytest.fixture
def images(client, cluster):
    """Three images; the oldest is in use by a Pod, the middle one is not, the newest is kept as the newest."""
    pushed = [
        push_sample_image(client, REPOSITORY, f"v{n}", [1500, 4000], seed=n, created=f"202{n}-01-01T00:00:00Z")
        for n in (1, 2, 3)
    ]
    cluster.create(pod("uses-v1", f"up.io/app:v1@{pushed[0].digest}"))
    return pushed


def test_without_an_age_override_a_fresh_process_evicts_nothing(args, images, client, capsys):
    assert main(args) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [re.sub(r"@sha256:[0-9a-f]{12} ", "@… ", line) for line in lines] == [
        f"kept          {REPOSITORY}@… v3 6.2 KiB (the default rule: among the newest 1 by build time)",
        f"kept          {REPOSITORY}@… v2 6.2 KiB (the default rule: unused for 0s, within maxUnusedAge 7d)",
        f"kept          {REPOSITORY}@… v1 6.2 KiB (in use)",
        "evicted 0 image(s), 0 B to be freed by the registry's garbage collection; kept 3",
    ]


def test_dry_run_prints_what_it_would_delete_with_sizes_and_deletes_nothing(args, images, client, capsys):
    assert main([*args, "--dry-run", "--max-unused-age", "0"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    size = format_bytes(images[1].total_bytes)  # every blob of it is its own: all of it is freed
    unused = re.fullmatch(
        rf"would delete  {REPOSITORY}@{images[1].digest[:19]} v2 {size} "
        r"\(the default rule: unused for (\d+)s, past maxUnusedAge 0s\)",
        lines[1],
    )
    assert unused, lines  # the age is however long the run took on this machine, a second or so
    assert lines[0].startswith(f"kept          {REPOSITORY}@{images[2].digest[:19]} v3")
    assert lines[2].startswith(f"kept          {REPOSITORY}@{images[0].digest[:19]} v1")
    assert lines[3:] == [f"would evict 1 image(s), {size} to be freed by the registry's garbage collection; kept 2"]
    assert client.has_manifest(REPOSITORY, images[1].digest)


def test_dry_run_says_which_signatures_and_referrers_go_or_stay_with_each_image(args, images, client, capsys):
    key = new_key()
    for image in images:
        sign_image(client, REPOSITORY, image.digest, key)
        sign_image(client, REPOSITORY, image.digest, key, bundle=True)
    assert main([*args, "--dry-run", "--max-unused-age", "0"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert (
        [line.split()[:2] for line in lines[:3]]
        == [  # three images: no signature listed as one
            ["kept", f"{REPOSITORY}@{images[2].digest[:19]}"],
            ["would", "delete"],
            ["kept", f"{REPOSITORY}@{images[0].digest[:19]}"],
        ]
    )
    assert all(" with its signature and 1 referrer (" in line for line in lines[:3])
    assert lines[3].startswith("would evict 1 image(s), ")


def test_deletes_and_reports_as_json(args, images, client, capsys):
    assert main([*args, "--max-unused-age", "0s", "-o", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    states = {
        image["tags"][0]: (image["state"], re.sub(r"\d+s,", "Ns,", image["reason"])) for image in report["images"]
    }
    assert states == {
        "v1": ("kept", "in use"),
        "v2": ("deleted", "the default rule: unused for Ns, past maxUnusedAge 0s"),
        "v3": ("kept", "the default rule: among the newest 1 by build time"),
    }
    assert not client.has_manifest(REPOSITORY, images[1].digest)
    assert sorted(client.list_tags(REPOSITORY)) == ["v1", "v3"]


def test_exit_codes_for_configuration_ccr_and_cluster_failures(args, images, empty_ccr, cluster, capsys, tmp_path):
    assert main(["gc", "--config", str(tmp_path / "missing.yaml")]) == 2
    with pytest.raises(SystemExit) as exited:
        main([*args, "--max-unused-age", "soon"])
    assert exited.value.code == 2
    empty_ccr.stop()
    assert main(args) == 1
    assert "ccr-webhook gc:" in capsys.readouterr().err
    empty_ccr.start()
    cluster.stop()
    assert main([*args[:-1], "1"]) == 1
    assert "could not list the cluster's workloads" in capsys.readouterr().err


def test_dry_run_names_the_rule_behind_every_image_and_the_bytes_against_the_budget(args, images, client, capsys):
    path = args[args.index("--config") + 1]
    with open(path) as handle:
        raw = yaml.safe_load(handle)
    size = images[0].total_bytes
    raw["retention"]["rules"] = [
        {"name": "releases", "repositories": ["mirror/up/*"], "keep": ["^v3$"], "keepNewest": 0}
    ]
    raw["retention"]["maxBytes"] = 2 * size
    with open(path, "w") as handle:
        yaml.safe_dump(raw, handle)
    assert main([*args, "--dry-run"]) == 0
    lines = [re.sub(r"@sha256:[0-9a-f]{12} ", "@… ", line) for line in capsys.readouterr().out.strip().splitlines()]
    assert (
        lines[0]
        == f"kept          {REPOSITORY}@… v3 {format_bytes(size)} (rule 1 (releases) keeps tags matching ^v3$ (v3))"
    )
    assert re.fullmatch(
        rf"would delete  {REPOSITORY}@… v2 {format_bytes(size)} \(over the storage budget of {format_bytes(2 * size)}, "
        r"least recently used first: last used \ds ago "
        r"\(rule 1 \(releases\): unused for \ds, within maxUnusedAge 7d\)\)",
        lines[1],
    ), lines[1]
    assert lines[2:] == [
        f"kept          {REPOSITORY}@… v1 {format_bytes(size)} (in use)",
        f"would evict 1 image(s), {format_bytes(size)} to be freed by the registry's garbage collection; kept 2",
        f"storage: {format_bytes(3 * size)} before, {format_bytes(2 * size)} after, budget {format_bytes(2 * size)}",
    ]
    assert client.has_manifest(REPOSITORY, images[1].digest)
