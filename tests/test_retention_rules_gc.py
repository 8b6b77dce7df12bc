"""Retention rules and the storage budget against a real distribution registry holding generated images with real
tags and build times, usage from the in-memory API server through the real kubernetes client: what each rule keeps,
what the budget evicts (least recently used first, never an image in use), the metrics, the writers' budget check."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.support.clock import Clock
from tests.support.retention import retention_config, watched_usage
from tests.support.waiting import wait_until
from tests.support.workloads import deployment, pod
from webhook.registry.errors import RegistryUnavailable
from webhook.retention.budget import StoredBytes, budget_refusal
from webhook.retention.inventory import read_inventory
from webhook.retention.metrics import RetentionMetrics
from webhook.retention.plan import format_bytes, unique_bytes
from webhook.retention.run import Retention
from webhook.testing.sample_image import push_sample_image

pytestmark = pytest.mark.integration

DAY = 86400.0
START = 1_700_000_000.0
APP, CI = "mirror/up/app", "mirror/up/ci/app"
LAYERS = [3000, 20000]


@pytest.fixture
def clock():
    return Clock(START)


@pytest.fixture
def usage(cluster, empty_ccr, clock):
    with watched_usage(cluster, empty_ccr, clock) as usage:
        yield usage


def push(client, repository, tags, year, seed):
    """An image built in `year` under every tag of `tags` (the first pushed with the image, the rest pointed at it)."""
    image = push_sample_image(client, repository, tags[0], LAYERS, seed=seed, created=f"{year}-03-01T00:00:00Z")
    manifest = client.get_manifest(repository, image.digest)
    for tag in tags[1:]:
        client.put_manifest(repository, tag, manifest.data, manifest.media_type)
    return image


def stays(client, repository, image) -> bool:
    return client.has_manifest(repository, image.digest)


def run(config, client, usage, clock, **options):
    return Retention(config, client, usage.tracker, usage.confirm, clock=clock, **options).run()


def test_rules_keep_release_tags_forever_the_newest_versions_and_prune_ci_builds(
    empty_ccr, empty_ccr_client, usage, clock
):
    major = push(empty_ccr_client, APP, ["v1", "1.9.0"], 2021, seed=1)
    stable = push(empty_ccr_client, APP, ["2.0.0", "stable"], 2022, seed=2)
    patch = push(empty_ccr_client, APP, ["2.0.1"], 2022, seed=3)
    minor = push(empty_ccr_client, APP, ["2.1.0"], 2023, seed=4)
    rc = push(empty_ccr_client, APP, ["2.2.0-rc.1"], 2024, seed=5)
    backport = push(empty_ccr_client, APP, ["1.9.1"], 2025, seed=6)  # built last, an old version
    builds = [push(empty_ccr_client, CI, [f"main-{n}"], 2020 + n, seed=10 + n) for n in range(4)]
    config = retention_config(
        empty_ccr,
        rules=[
            {"name": "ci", "repositories": ["mirror/up/ci/**"], "keepNewest": 2, "maxUnusedAge": "1d"},
            {
                "name": "releases",
                "repositories": ["mirror/up/*"],
                "keep": ["^v?[0-9]+$", "stable", "lts"],
                "keepNewest": 2,
                "by": "semver",
            },
        ],
    )
    clock.now = START + 2 * DAY  # two days of watching: every image unused for 2 days, past ci's 1d, within 7d
    result = run(config, empty_ccr_client, usage, clock)
    reasons = {verdict.image.tags: (verdict.evict, verdict.reason) for verdict in result.plan.verdicts}
    assert reasons == {
        ("1.9.0", "v1"): (False, "rule 2 (releases) keeps tags matching ^v?[0-9]+$ (v1)"),
        ("2.0.0", "stable"): (False, "rule 2 (releases) keeps tags matching stable (stable)"),
        ("2.2.0-rc.1",): (False, "rule 2 (releases): among the newest 2 by semantic version"),
        ("2.1.0",): (False, "rule 2 (releases): among the newest 2 by semantic version"),
        ("2.0.1",): (False, "rule 2 (releases): unused for 2d, within maxUnusedAge 7d"),
        ("1.9.1",): (False, "rule 2 (releases): unused for 2d, within maxUnusedAge 7d"),
        ("main-3",): (False, "rule 1 (ci): among the newest 2 by build time"),
        ("main-2",): (False, "rule 1 (ci): among the newest 2 by build time"),
        ("main-1",): (True, "rule 1 (ci): unused for 2d, past maxUnusedAge 1d"),
        ("main-0",): (True, "rule 1 (ci): unused for 2d, past maxUnusedAge 1d"),
    }
    assert not any(stays(empty_ccr_client, CI, image) for image in builds[:2])
    assert all(stays(empty_ccr_client, CI, image) for image in builds[2:])
    assert sorted(empty_ccr_client.list_tags(CI)) == ["main-2", "main-3"]

    clock.now = START + 30 * DAY  # a month on: the releases past the newest two by version go too
    result = run(config, empty_ccr_client, usage, clock)
    assert {verdict.image.digest for verdict in result.plan.evictions} == {patch.digest, backport.digest}
    assert all(stays(empty_ccr_client, APP, image) for image in (major, stable, minor, rc))
    assert sorted(empty_ccr_client.list_tags(APP)) == ["1.9.0", "2.0.0", "2.1.0", "2.2.0-rc.1", "stable", "v1"]


def test_with_rules_that_keep_nothing_an_image_a_pod_or_workload_uses_still_stays(
    empty_ccr, empty_ccr_client, cluster, usage, clock
):
    by_pod, by_template, by_tag, unused = (
        push(empty_ccr_client, CI, [f"main-{n}"], 2020 + n, seed=n) for n in range(4)
    )
    cluster.create(pod("runs", f"{empty_ccr.host}/{CI}@{by_pod.digest}"))
    cluster.create(deployment("scaled-to-zero", f"{empty_ccr.host}/{CI}@{by_template.digest}", replicas=0))
    cluster.create(pod("by-tag", f"{empty_ccr.host}/{CI}:main-2"))
    wait_until(lambda: len(usage.tracker.in_use().digests) == 2 and usage.tracker.in_use().tags)
    config = retention_config(
        empty_ccr,
        rules=[{"repositories": ["**"], "keepNewest": 0, "maxUnusedAge": 0}],
        maxBytes=0,  # and a budget nothing fits
    )
    clock.now = START + 30 * DAY
    result = run(config, empty_ccr_client, usage, clock)
    assert [verdict.image.digest for verdict in result.plan.evictions] == [unused.digest]
    assert all(stays(empty_ccr_client, CI, image) for image in (by_pod, by_template, by_tag))
    assert result.plan.over_budget  # said, not "fixed" by deleting what is in use


def test_over_budget_the_least_recently_used_unused_images_go_first_until_under(
    empty_ccr, empty_ccr_client, cluster, usage, clock
):
    images = [push(empty_ccr_client, APP, [f"v{n}"], 2020 + n, seed=n) for n in range(5)]
    per_image = images[0].total_bytes
    assert all(image.total_bytes == per_image for image in images)  # every blob its own: each frees the same
    in_use = images[0]
    cluster.create(pod("keeps-v0", f"{empty_ccr.host}/{APP}@{in_use.digest}"))
    for name, image, until in (("v3", images[3], 1), ("v1", images[1], 2), ("v2", images[2], 3)):
        cluster.create(pod(name, f"{empty_ccr.host}/{APP}@{image.digest}"))  # named, then gone at START + until days
        wait_until(lambda image=image: (APP, image.digest) in usage.tracker.in_use().digests)
        clock.now = START + until * DAY
        cluster.delete("Pod", name, "team-a")
        wait_until(lambda image=image: (APP, image.digest) not in usage.tracker.in_use().digests)
    # v4: the newest, never named since retention started (last used: START)
    budget = 2 * per_image + per_image // 2  # room for two and a half images: three must go
    config = retention_config(empty_ccr, keepNewest=5, maxBytes=budget)
    clock.now = START + 4 * DAY  # every one within maxUnusedAge: only the budget evicts
    metrics = RetentionMetrics()
    result = run(config, empty_ccr_client, usage, clock, metrics=metrics)
    evicted = {verdict.image.tags: verdict.reason for verdict in result.plan.evictions}
    assert list(evicted) == [("v4",), ("v3",), ("v1",)]  # listed newest first; last used START, +1d, +2d
    assert evicted[("v3",)].startswith(f"over the storage budget of {format_bytes(budget)}, least recently used")
    assert all("last used" in verdict.reason for verdict in result.plan.evictions)
    assert stays(empty_ccr_client, APP, in_use) and stays(empty_ccr_client, APP, images[2])
    stored = unique_bytes(read_inventory(empty_ccr_client, ["mirror/up"]).images)
    assert stored == result.plan.kept_bytes == 2 * per_image <= budget < result.plan.stored_bytes
    sample = metrics.registry.get_sample_value
    assert sample("ccr_webhook_storage_bytes") == stored
    assert sample("ccr_webhook_storage_budget_bytes") == budget


def test_build_times_are_read_once_per_config(empty_ccr, empty_ccr_client, usage, clock):
    for n in range(3):
        push(empty_ccr_client, APP, [f"v{n}"], 2020 + n, seed=n)
    opened: list[str] = []

    class CountingCCR:
        def __getattr__(self, name):
            return getattr(empty_ccr_client, name)

        def open_blob(self, repository, digest):
            opened.append(digest)
            return empty_ccr_client.open_blob(repository, digest)

    retention = Retention(
        retention_config(empty_ccr, keepNewest=5), CountingCCR(), usage.tracker, usage.confirm, clock=clock
    )
    retention.run(dry_run=True)
    assert len(opened) == 3
    retention.run(dry_run=True)
    assert len(opened) == 3  # the second run knew every config


def test_a_writer_learns_from_the_ccr_whether_a_blob_fits_the_budget(empty_ccr, empty_ccr_client):
    image = push(empty_ccr_client, APP, ["v1"], 2021, seed=1)
    clock = Clock(0.0)
    stored = StoredBytes(empty_ccr_client, ["mirror/up"], max_age_seconds=60, clock=clock)
    assert stored.current() == image.total_bytes
    budget = image.total_bytes + 1000
    assert budget_refusal(stored.current(), 1000, budget) is None
    refusal = budget_refusal(stored.current(), 1001, budget)
    assert refusal == (
        f"the CCR holds {format_bytes(image.total_bytes)} of its {format_bytes(budget)} budget (retention.maxBytes); "
        "1001 B more does not fit. "
        "Retention evicts unused images at its next run; or raise retention.maxBytes"
    )
    assert budget_refusal(10**15, 10**15, None) is None  # no budget: everything fits
    other = push(empty_ccr_client, APP, ["v2"], 2022, seed=2)
    stored.add(500)  # a write made since: counted at once...
    assert stored.current() == image.total_bytes + 500
    clock.now = 60  # ...until the next reading sees the CCR itself
    assert stored.current() == image.total_bytes + other.total_bytes
    empty_ccr.stop()
    clock.now = 120
    with pytest.raises(RegistryUnavailable):
        stored.current()
    empty_ccr.start()


def test_while_one_caller_reads_the_ccr_the_others_get_the_last_reading_at_once(empty_ccr_client):
    image = push(empty_ccr_client, APP, ["v1"], 2021, seed=1)
    reading, release = threading.Event(), threading.Event()

    class SlowCatalog:
        def __getattr__(self, name):
            return getattr(empty_ccr_client, name)

        def catalog(self):
            reading.set()
            assert release.wait(10)
            return empty_ccr_client.catalog()

    clock = Clock(0.0)
    stored = StoredBytes(SlowCatalog(), ["mirror/up"], max_age_seconds=60, clock=clock)
    release.set()
    assert stored.current() == image.total_bytes
    reading.clear()
    release.clear()
    other = push(empty_ccr_client, APP, ["v2"], 2022, seed=2)
    clock.now = 60
    with ThreadPoolExecutor(1) as pool:
        slow = pool.submit(stored.current)
        assert reading.wait(10)
        stored.add(100)  # a write during the reading: it may or may not be in it, so it is counted on top
        assert stored.current() == image.total_bytes + 100  # not blocked behind the reading
        release.set()
        assert slow.result(10) == image.total_bytes + other.total_bytes + 100
    assert stored.current() == image.total_bytes + other.total_bytes + 100  # until the next reading


def test_an_age_override_reaches_every_rule(empty_ccr, empty_ccr_client, usage, clock):
    old, new = (push(empty_ccr_client, CI, [f"main-{n}"], 2020 + n, seed=n) for n in range(2))
    rules = [{"repositories": ["mirror/up/ci/**"], "keepNewest": 1, "maxUnusedAge": "30d"}]
    retention = Retention(
        retention_config(empty_ccr, rules=rules), empty_ccr_client, usage.tracker, usage.confirm, clock=clock
    )
    assert not retention.run(dry_run=True).plan.evictions  # unused for 0 s of the rule's 30 days
    result = retention.run(dry_run=True, max_unused_age=0)  # gc --max-unused-age 0
    assert [(v.image.digest, v.reason) for v in result.plan.evictions] == [
        (old.digest, "rule 1: unused for 0s, past maxUnusedAge 0s")
    ]
    assert stays(empty_ccr_client, CI, new)
