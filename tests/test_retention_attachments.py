"""Retention and content trust together, against a real distribution registry: images signed as cosign signs them
(the classic `.sig` tag and a sigstore bundle referrer, listed in the referrers tag schema's index), copied into
the CCR with their attachments by the copy engine; usage from the in-memory API server through the real
kubernetes client. An image's attachments are no images: they stay and go with it, and those left orphaned go."""

from __future__ import annotations

import json

import pytest

from tests.support.clock import Clock
from tests.support.local_registry import client as make_client
from tests.support.retention import retention_config, watched_usage
from tests.support.waiting import wait_until
from tests.support.workloads import pod
from webhook.commands.gc_images import render, report_json
from webhook.copier.engine import copy_image
from webhook.policy.signatures import Attached, attachment_of, public_keys, referrers_tag, signature_tag
from webhook.registry.errors import NotFound
from webhook.registry.signatures import check_signatures
from webhook.retention.metrics import RetentionMetrics
from webhook.retention.run import Retention
from webhook.testing.cosign import new_key, public_pem, sign_image
from webhook.testing.sample_image import push_sample_image

pytestmark = pytest.mark.integration

DAY = 86400.0
START = 1_700_000_000.0
REPOSITORY = "mirror/up/team/app"
KEY = new_key("ecdsa")


@pytest.fixture
def watch(cluster, empty_ccr):
    """The cluster's usage, watched on a clock the test moves, and the clock."""
    clock = Clock(START)
    with watched_usage(cluster, empty_ccr, clock) as usage:
        yield usage, clock


@pytest.fixture
def signed(upstream, empty_ccr_client):
    """Two images, `old` (built 2021) and `new` (2022), each signed both ways upstream and copied into the CCR with
    its signature and its referrer; their digests."""
    source = make_client(upstream.url)
    digests = {}
    for seed, (name, year) in enumerate((("old", 2021), ("new", 2022))):
        repository = f"team/signed-{name}-{id(empty_ccr_client)}"  # the upstream is the module's: a name per test
        image = push_sample_image(source, repository, name, [4000, 9000], seed, created=f"{year}-01-01T00:00:00Z")
        sign_image(source, repository, image.digest, KEY)
        sign_image(source, repository, image.digest, KEY, bundle=True)
        result = copy_image(source, repository, name, empty_ccr_client, REPOSITORY, tag=name, attached=True)
        assert result.attached is not None and result.attached.signature_tag and len(result.attached.referrers) == 1
        digests[name] = image.digest
    source.close()
    return digests


def orphan(ccr_client) -> str:
    """An image signed in the CCR, then deleted there alone: its signature and referrers are left behind."""
    image = push_sample_image(ccr_client, REPOSITORY, "gone", [3000], seed=7, created="2020-01-01T00:00:00Z")
    sign_image(ccr_client, REPOSITORY, image.digest, KEY)
    sign_image(ccr_client, REPOSITORY, image.digest, KEY, bundle=True)
    ccr_client.delete_manifest(REPOSITORY, image.digest)
    return image.digest


def held(ccr_client, reference: str) -> bool:
    try:
        ccr_client.get_manifest(REPOSITORY, reference)
    except NotFound:
        return False
    return True


def attached(ccr_client, digest: str) -> list[str]:
    """The `.sig` tag, the referrers tag, and the referrer it lists, of `digest` in the CCR."""
    index = json.loads(ccr_client.get_manifest(REPOSITORY, referrers_tag(digest)).data)
    return [signature_tag(digest), referrers_tag(digest), *(entry["digest"] for entry in index["manifests"])]


def stored_blobs(ccr_client, reference: str) -> dict[str, int]:
    """Every blob under `reference` in the CCR (manifests included), with its size, read here independently."""
    manifest = ccr_client.get_manifest(REPOSITORY, reference)
    document = json.loads(manifest.data)
    blobs = {manifest.digest: len(manifest.data)}
    for child in document.get("manifests", []):
        blobs.update(stored_blobs(ccr_client, child["digest"]))
    for entry in [document["config"], *document["layers"]] if "config" in document else []:
        blobs[entry["digest"]] = entry["size"]
    return blobs


def everything(ccr_client, digest: str) -> dict[str, int]:
    """The blobs of an image and its attachments: what retention must count with it."""
    return {
        **stored_blobs(ccr_client, digest),
        **stored_blobs(ccr_client, signature_tag(digest)),
        **stored_blobs(ccr_client, referrers_tag(digest)),
    }


def test_keep_newest_keeps_the_newest_image_with_its_signature_and_evicts_the_older_with_its(
    empty_ccr, empty_ccr_client, signed, watch
):
    usage, clock = watch
    gone = orphan(empty_ccr_client)
    old_blobs, new_blobs = (everything(empty_ccr_client, signed[name]) for name in ("old", "new"))
    retention = Retention(
        retention_config(empty_ccr, maxUnusedAge=0), empty_ccr_client, usage.tracker, usage.confirm, clock=clock
    )
    clock.now = START + DAY

    preview = retention.run(dry_run=True)
    plan = preview.plan
    assert [(v.image.tags, v.evict) for v in plan.verdicts] == [(("new",), False), (("old",), True)]
    assert not any(attachment_of(tag) for v in plan.verdicts for tag in v.image.tags)  # never an image
    assert {v.image.tags: v.reason for v in plan.verdicts} == {
        ("new",): "the default rule: among the newest 1 by build time",
        ("old",): "the default rule: unused for 1d, past maxUnusedAge 0s",
    }
    new, old = plan.verdicts
    assert {(a.subject, a.kind.noun, a.referrers) for a in old.attachments_going} == {
        (signed["old"], "signature", 0),
        (signed["old"], "referrers index", 1),
    }
    assert old.delete[0] == signed["old"] and len(old.delete) == 4  # the image first, then its three attachments
    assert not new.attachments_going and len(new.attachments_staying) == 2
    assert {(a.subject, a.kind.noun) for a in plan.orphans} == {(gone, "signature"), (gone, "referrers index")}
    orphaned = {
        **stored_blobs(empty_ccr_client, signature_tag(gone)),
        **stored_blobs(empty_ccr_client, referrers_tag(gone)),
    }
    assert plan.stored_bytes == sum({**old_blobs, **new_blobs, **orphaned}.values())  # each blob once
    assert plan.kept_bytes == sum(new_blobs.values())  # the image's bytes with its attachments'
    assert old.freed_bytes == sum(size for blob, size in old_blobs.items() if blob not in new_blobs)

    lines = render(preview).splitlines()
    assert lines[0].startswith(f"kept          {REPOSITORY}@{signed['new'][:19]} new ")
    assert lines[0].endswith(" with its signature and 1 referrer (the default rule: among the newest 1 by build time)")
    assert lines[1].startswith(f"would delete  {REPOSITORY}@{signed['old'][:19]} old ")
    assert " with its signature and 1 referrer (the default rule: unused for 1d" in lines[1]
    assert sorted(lines[2:4]) == sorted(
        f"would delete  {REPOSITORY}@{a.digest[:19]} {a.tags[0]} (an orphan: the {a.kind.noun} of {gone[:19]}, "
        f"which the CCR no longer holds{', listing 1 referrer' if a.referrers else ''})"
        for a in plan.orphans
    )
    assert lines[4].startswith("would evict 1 image(s) and 2 orphan attachment(s), ")
    assert {a["kind"]: a["evict"] for a in report_json(preview)["images"][1]["attachments"]} == {
        "signature": True,
        "referrers index": True,
    }
    old_attached, new_attached = (attached(empty_ccr_client, signed[name]) for name in ("old", "new"))
    assert all(held(empty_ccr_client, reference) for reference in old_attached)  # a dry run deletes nothing

    result = retention.run()
    assert not result.failed
    assert all(held(empty_ccr_client, reference) for reference in (signed["new"], *new_attached))
    verdict = check_signatures(empty_ccr_client, REPOSITORY, signed["new"], public_keys([public_pem(KEY)]), 5.0)
    assert verdict.valid, verdict.reason  # the kept copy still verifies in the CCR
    assert not any(held(empty_ccr_client, reference) for reference in (signed["old"], *old_attached))
    assert result.outcomes[0].deleted == old.delete
    assert not held(empty_ccr_client, signature_tag(gone)) and not held(empty_ccr_client, referrers_tag(gone))
    assert sorted(empty_ccr_client.list_tags(REPOSITORY)) == sorted(
        ["new", signature_tag(signed["new"]), referrers_tag(signed["new"])]
    )
    assert not retention.run().plan.evictions and not retention.run().plan.orphans  # nothing left to do


def test_an_image_in_use_stays_with_its_signature_when_the_rules_keep_nothing(
    empty_ccr, empty_ccr_client, cluster, signed, watch
):
    usage, clock = watch
    cluster.create(pod("runs-old", f"{empty_ccr.host}/{REPOSITORY}@{signed['old']}"))
    wait_until(lambda: (REPOSITORY, signed["old"]) in usage.tracker.in_use().digests)
    old_attached, new_attached = (attached(empty_ccr_client, signed[name]) for name in ("old", "new"))
    for references in (old_attached, new_attached):  # a signed referrer (a signed SBOM): attached to an attachment
        sign_image(empty_ccr_client, REPOSITORY, references[2], KEY)
        references.append(signature_tag(references[2]))
    clock.now = START + DAY
    retention = Retention(
        retention_config(empty_ccr, maxUnusedAge=0, keepNewest=0),
        empty_ccr_client,
        usage.tracker,
        usage.confirm,
        clock=clock,
    )
    result = retention.run()
    assert [(v.image.tags, v.evict, v.reason) for v in result.plan.verdicts] == [
        (("new",), True, "the default rule: unused for 1d, past maxUnusedAge 0s"),
        (("old",), False, "in use"),
    ]
    assert all(held(empty_ccr_client, reference) for reference in (signed["old"], *old_attached))
    assert not any(held(empty_ccr_client, reference) for reference in (signed["new"], *new_attached))
    assert not result.plan.orphans  # the signature of an image in use is no orphan, nor that of its referrer
    assert [len(v.image.attachments) for v in result.plan.verdicts] == [3, 3]
    verdict = check_signatures(empty_ccr_client, REPOSITORY, signed["old"], public_keys([public_pem(KEY)]), 5.0)
    assert verdict.valid, verdict.reason


def test_the_budget_counts_an_images_attachments_with_it(empty_ccr, empty_ccr_client, signed, watch):
    usage, clock = watch
    new_blobs = everything(empty_ccr_client, signed["new"])
    old_image, old_blobs = stored_blobs(empty_ccr_client, signed["old"]), everything(empty_ccr_client, signed["old"])
    budget = sum({**new_blobs, **old_image}.values())  # both images fit; not with the older one's attachments too
    assert sum({**new_blobs, **old_blobs}.values()) > budget
    config = retention_config(empty_ccr, keepNewest=2, maxBytes=budget)
    clock.now = START + DAY
    result = Retention(config, empty_ccr_client, usage.tracker, usage.confirm, clock=clock).run()
    (evicted,) = result.plan.evictions
    assert evicted.image.digest == signed["old"]  # last used as long ago as the newer one, built before it
    assert evicted.reason.startswith("over the storage budget of ")
    assert len(evicted.attachments_going) == 2
    assert result.plan.stored_bytes == sum({**new_blobs, **old_blobs}.values())
    assert result.plan.kept_bytes == sum(new_blobs.values()) <= budget and not result.plan.over_budget
    assert evicted.freed_bytes == sum(size for blob, size in old_blobs.items() if blob not in new_blobs)
    assert not held(empty_ccr_client, signature_tag(signed["old"]))


def test_an_orphan_whose_image_comes_back_before_its_delete_stays(empty_ccr, empty_ccr_client, watch):
    usage, clock = watch
    gone = orphan(empty_ccr_client)

    class CopiedBackMeanwhile:  # the image is copied back between the inventory and the orphan's delete
        def __getattr__(self, name):
            return getattr(empty_ccr_client, name)

        def has_manifest(self, repository, digest):
            if digest == gone and not empty_ccr_client.has_manifest(repository, digest):
                push_sample_image(empty_ccr_client, REPOSITORY, "gone", [3000], seed=7, created="2020-01-01T00:00:00Z")
            return empty_ccr_client.has_manifest(repository, digest)

    config = retention_config(empty_ccr, keepNewest=5)
    metrics = RetentionMetrics()
    result = Retention(config, CopiedBackMeanwhile(), usage.tracker, usage.confirm, clock=clock, metrics=metrics).run()
    assert len(result.plan.orphans) == 2 and not result.failed
    assert [o.spared for o in result.orphan_outcomes] == [f"its subject {gone} is back"] * 2
    assert held(empty_ccr_client, signature_tag(gone)) and held(empty_ccr_client, referrers_tag(gone))
    assert render(result).splitlines()[-1].startswith("evicted 0 image(s), ")  # no orphan counted as deleted
    # what stays is counted, the orphans that stayed included
    assert metrics.registry.get_sample_value("ccr_webhook_storage_bytes") == result.plan.stored_bytes
    again = Retention(config, empty_ccr_client, usage.tracker, usage.confirm, clock=clock).run(dry_run=True)
    (back,) = again.plan.verdicts  # the image is back: its signature and referrers are attached to it again
    assert {a.kind for a in back.image.attachments} == {Attached.SIGNATURE, Attached.REFERRERS}
    assert not again.plan.orphans
