"""Retention runs against a real distribution registry, with usage from a fake API server spoken to by the real
kubernetes client: what goes, what stays, Pods created mid-run, indexes, the webhook afterwards, registry GC."""

from __future__ import annotations

import subprocess

import pytest

from tests.support.clock import Clock
from tests.support.waiting import wait_until
from tests.support.workloads import pod
from webhook.config import parse_config
from webhook.policy.decide import Action, WarmRequest
from webhook.policy.reference import parse_image
from webhook.registry.client import Registries
from webhook.registry.evaluate import evaluate_images
from webhook.registry.resolver import Resolver
from webhook.retention.metrics import RetentionMetrics
from webhook.retention.run import Retention
from webhook.retention.usage import UsageTracker
from webhook.retention.watch import ClusterUsage
from webhook.testing.processes import REGISTRY_BINARY, RegistryServer
from webhook.testing.sample_image import push_sample_image

pytestmark = pytest.mark.integration

DAY = 86400.0
START = 1_700_000_000.0
REPOSITORY = "mirror/up/app"


@pytest.fixture
def registries():
    with RegistryServer() as upstream, RegistryServer() as ccr:
        yield upstream, ccr


@pytest.fixture
def config(registries):
    upstream, ccr = registries
    return parse_config(
        {
            "ccr": {"registry": ccr.host, "endpoint": ccr.url, "insecure": True},
            "upstreams": [
                {"registry": upstream.host, "endpoint": upstream.url, "insecure": True, "prefix": "mirror/up"}
            ],
            "retention": {"enabled": True, "maxUnusedAge": "7d", "keepNewest": 1},
            "resolver": {"ccrCacheSeconds": 30},
            "policy": {"swap": "exists"},  # an evicted image goes back to its upstream until warmed again
        }
    )


@pytest.fixture
def clients(config):
    clients = Registries(config)
    yield clients
    clients.close()


@pytest.fixture
def clock():
    return Clock(START)


@pytest.fixture
def usage(cluster, config, clock):
    usage = ClusterUsage(cluster.api_client(), config, UsageTracker(config, clock=clock), watch_seconds=2).start()
    assert usage.wait_synced(5)
    yield usage
    usage.stop()


def push(clients, tag: str, year: int, platforms: int = 1, seed: int | None = None):
    """An image in the CCR built in `year`, its layers its own (the seed is the year unless given)."""
    return push_sample_image(
        clients.ccr,
        REPOSITORY,
        tag,
        [2000, 30000],
        seed=seed or year,
        platforms=platforms,
        created=f"{year}-06-01T12:00:00.123456789Z",
    )


def upstream_name(config, image) -> str:
    return f"{config.upstreams[0].registry}/app@{image.digest}"


def test_evicts_unused_images_past_the_age_keeps_newest_and_in_use_and_recently_used(
    config, clients, cluster, usage, clock
):
    v1, v2, v3, v4 = (push(clients, f"v{n}", 2020 + n) for n in range(1, 5))
    cluster.create(pod("uses-v1", upstream_name(config, v1)))
    cluster.create(pod("used-v2", upstream_name(config, v2)))
    wait_until(lambda: len(usage.tracker.in_use().digests) == 2)
    clock.now = START + 7.5 * DAY
    cluster.delete("Pod", "used-v2", "team-a")  # v2 last used half a day before the run
    wait_until(lambda: len(usage.tracker.in_use().digests) == 1)
    clock.now = START + 8 * DAY
    metrics = RetentionMetrics()
    result = Retention(config, clients.ccr, usage.tracker, usage.confirm, metrics=metrics, clock=clock).run()
    reasons = {verdict.image.tags: (verdict.evict, verdict.reason) for verdict in result.plan.verdicts}
    assert reasons == {
        ("v4",): (False, "the default rule: among the newest 1 by build time"),
        ("v1",): (False, "in use"),
        ("v2",): (False, "the default rule: unused for 12h, within maxUnusedAge 7d"),
        ("v3",): (True, "the default rule: unused for 8d, past maxUnusedAge 7d"),
    }
    assert [outcome.deleted for outcome in result.outcomes] == [(v3.digest,)]
    assert not clients.ccr.has_manifest(REPOSITORY, v3.digest)
    assert sorted(clients.ccr.list_tags(REPOSITORY)) == ["v1", "v2", "v4"]  # the tag went with its manifest
    assert all(clients.ccr.has_manifest(REPOSITORY, image.digest) for image in (v1, v2, v4))
    sample = metrics.registry.get_sample_value
    assert sample("ccr_webhook_evictions_total") == 1
    assert sample("ccr_webhook_evicted_bytes_total") == result.plan.evictions[0].freed_bytes > 32000
    assert sample("ccr_webhook_in_use_digests") == 1
    assert sample("ccr_webhook_ccr_bytes", {"repository": REPOSITORY}) == sum(
        image.total_bytes for image in (v1, v2, v4)
    )


def test_dry_run_deletes_nothing_and_says_what_it_would(config, clients, usage, clock):
    old, new = push(clients, "old", 2020), push(clients, "new", 2024)
    clock.now = START + 30 * DAY
    result = Retention(config, clients.ccr, usage.tracker, usage.confirm, clock=clock).run(dry_run=True)
    assert result.dry_run and not result.outcomes
    assert [verdict.image.digest for verdict in result.plan.evictions] == [old.digest]
    assert clients.ccr.has_manifest(REPOSITORY, old.digest) and clients.ccr.has_manifest(REPOSITORY, new.digest)
    assert sorted(clients.ccr.list_tags(REPOSITORY)) == ["new", "old"]


def test_a_repository_ccr_webhook_did_not_mirror_is_never_judged_nor_deleted(config, clients, usage, clock):
    """Issue 13 item 15: the CCR may be shared; only repositories under an upstream's prefix are retention's."""
    foreign = [
        push_sample_image(clients.ccr, "team/private", tag, [2000], seed=year, created=f"{year}-06-01T12:00:00Z")
        for tag, year in (("old", 2019), ("new", 2020))
    ]
    beside = push_sample_image(clients.ccr, "mirror/upper", "v1", [2000], seed=7, created="2019-06-01T12:00:00Z")
    mirrored = push(clients, "old", 2020), push(clients, "new", 2024)
    clock.now = START + 30 * DAY
    result = Retention(config, clients.ccr, usage.tracker, usage.confirm, clock=clock).run()
    assert {verdict.image.repository for verdict in result.plan.verdicts} == {REPOSITORY}
    assert [outcome.deleted for outcome in result.outcomes] == [(mirrored[0].digest,)]
    assert all(clients.ccr.has_manifest("team/private", image.digest) for image in foreign)
    assert clients.ccr.has_manifest("mirror/upper", beside.digest)  # "mirror/up" is a prefix of names, not of text


def test_a_pod_created_between_planning_and_deleting_keeps_its_image(config, clients, cluster, usage, clock):
    old, _ = push(clients, "old", 2020), push(clients, "new", 2024)
    clock.now = START + 30 * DAY

    def confirm_after_a_pod_appears():
        cluster.create(pod("just-created", upstream_name(config, old)))  # the watch may not have it yet
        return usage.confirm()

    result = Retention(config, clients.ccr, usage.tracker, confirm_after_a_pod_appears, clock=clock).run()
    assert [verdict.image.digest for verdict in result.plan.evictions] == [old.digest]  # planned...
    assert [(outcome.deleted, outcome.spared) for outcome in result.outcomes] == [((), "in use since planning")]
    assert clients.ccr.has_manifest(REPOSITORY, old.digest)  # ...but spared


def test_each_delete_checks_the_live_watch_again(config, clients, cluster, usage, clock):
    older, old, _ = push(clients, "older", 2020), push(clients, "old", 2021), push(clients, "new", 2024)
    clock.now = START + 30 * DAY
    ccr = clients.ccr

    class PodAppearsAfterTheFirstDelete:
        """The CCR client, but after the first DELETE a Pod naming the other image appears (and the watch sees it)."""

        def __getattr__(self, name):
            return getattr(ccr, name)

        def delete_manifest(self, repository, digest):
            ccr.delete_manifest(repository, digest)
            other = older if digest == old.digest else old
            cluster.create(pod("late", f"{config.ccr.registry}/{REPOSITORY}@{other.digest}", namespace="other"))
            wait_until(lambda: (REPOSITORY, other.digest) in usage.tracker.in_use().digests)

    result = Retention(config, PodAppearsAfterTheFirstDelete(), usage.tracker, usage.confirm, clock=clock).run()
    assert [(o.planned.image.digest, o.spared) for o in result.outcomes] == [
        (old.digest, None),
        (older.digest, "in use since planning"),
    ]
    assert not ccr.has_manifest(REPOSITORY, old.digest) and ccr.has_manifest(REPOSITORY, older.digest)


def test_an_index_goes_with_its_children_and_a_kept_index_keeps_its_own(config, clients, usage, clock):
    old = push(clients, "old", 2020, platforms=2)
    new = push(clients, "new", 2024, platforms=2)
    clock.now = START + 30 * DAY
    result = Retention(config, clients.ccr, usage.tracker, usage.confirm, clock=clock).run()
    (outcome,) = result.outcomes
    assert outcome.deleted == (old.digest, *old.manifests)  # the index first, then its platform manifests
    assert not any(clients.ccr.has_manifest(REPOSITORY, digest) for digest in (old.digest, *old.manifests))
    assert all(clients.ccr.has_manifest(REPOSITORY, digest) for digest in (new.digest, *new.manifests))


def test_a_pod_pinned_to_one_platform_keeps_the_whole_index(config, clients, cluster, usage, clock):
    old, _ = push(clients, "old", 2020, platforms=2), push(clients, "new", 2024, platforms=2)
    cluster.create(pod("arm", f"{config.ccr.registry}/{REPOSITORY}@{old.manifests[1]}"))
    wait_until(lambda: usage.tracker.in_use().digests)
    clock.now = START + 30 * DAY
    result = Retention(config, clients.ccr, usage.tracker, usage.confirm, clock=clock).run()
    assert not result.plan.evictions
    assert all(clients.ccr.has_manifest(REPOSITORY, digest) for digest in (old.digest, *old.manifests))


def test_after_an_eviction_the_webhook_pins_upstream_and_asks_for_a_warm_within_the_cache_bound(
    registries, config, clients, usage, clock
):
    old, _ = push(clients, "old", 2020), push(clients, "new", 2024)
    push_sample_image(
        clients.upstream(config.upstreams[0].registry),
        "app",
        "old",
        [2000, 30000],
        seed=2020,
        created="2020-06-01T12:00:00.123456789Z",
    )
    image = f"{config.upstreams[0].registry}/app:old"
    webhook_clock = Clock(0.0)  # the webhook's own process, with its own resolver cache
    webhook = Resolver(config, clients, clock=webhook_clock)
    (before,) = evaluate_images([image], config, webhook, timeout=5)
    target = parse_image(f"{config.ccr.registry}/{REPOSITORY}:old@{old.digest}")
    assert (before.action, before.new_image) == (Action.REWRITE, str(target))

    clock.now = START + 30 * DAY
    in_process = Resolver(config, clients)  # a resolver in the retention process hears of evictions at once
    in_process.mark_in_ccr(REPOSITORY, old.digest)
    result = Retention(
        config, clients.ccr, usage.tracker, usage.confirm, clock=clock, on_evicted=in_process.forget_ccr
    ).run()
    assert [outcome.deleted for outcome in result.outcomes] == [(old.digest,)]
    (fresh,) = evaluate_images([image], config, in_process, timeout=5)
    assert fresh.action is Action.PIN

    webhook_clock.now = config.resolver.ccr_cache_seconds + 0.1  # another process: truthful once its cache expires
    (after,) = evaluate_images([image], config, webhook, timeout=5)
    assert (after.action, after.new_image) == (Action.PIN, str(parse_image(image).with_digest(old.digest)))
    assert after.warm == WarmRequest(parse_image(image).with_digest(old.digest), target)  # the warmer copies it back


def test_registry_garbage_collect_then_frees_the_evicted_blobs_and_keeps_every_kept_one(
    registries, config, clients, usage, clock
):
    _, ccr_server = registries
    old, new = push(clients, "old", 2020, platforms=2), push(clients, "new", 2024, platforms=2)
    clock.now = START + 30 * DAY
    Retention(config, clients.ccr, usage.tracker, usage.confirm, clock=clock).run()
    assert all(clients.ccr.blob_size(REPOSITORY, blob) is not None for blob in old.blobs)  # deletes free no blob yet
    ccr_server.stop()  # the documented procedure: no writes while the registry's garbage collection runs
    collect = subprocess.run(
        [REGISTRY_BINARY, "garbage-collect", str(ccr_server.workdir / "config.yml")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert collect.returncode == 0, collect.stderr
    ccr_server.start()
    assert all(clients.ccr.blob_size(REPOSITORY, blob) is None for blob in old.blobs)
    for digest in (new.digest, *new.manifests):
        clients.ccr.get_manifest(REPOSITORY, digest)
    for blob in new.blobs:
        with clients.ccr.open_blob(REPOSITORY, blob) as stream:  # read whole: the digest is checked at the end
            while stream.read():
                pass
