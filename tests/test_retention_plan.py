"""The retention plan as a pure function: tables of images, usage and rules, and the verdicts they give."""

from __future__ import annotations

import dataclasses

import pytest

from webhook.config import RetentionConfig
from webhook.policy.signatures import Attached, attachment_tag
from webhook.retention.inventory import Attachment, StoredImage
from webhook.retention.plan import (
    bytes_by_repository,
    format_attachments,
    format_bytes,
    format_duration,
    plan_evictions,
    unique_bytes,
)
from webhook.retention.usage import InUse

HOUR, DAY = 3600.0, 86400.0
NOW = 100 * DAY
RULES = RetentionConfig(enabled=True, max_unused_age_seconds=7 * DAY, keep_newest=1)


def digest(name: str) -> str:
    return "sha256:" + name.encode().hex().ljust(64, "0")[:64]


def image(
    name: str,
    repository: str = "up.io/app",
    created: float | None = 0.0,
    tags: tuple[str, ...] = (),
    children: tuple[str, ...] = (),
    blobs: dict[str, int] | None = None,
) -> StoredImage:
    """An image `name`: one manifest with `blobs` (default: a layer of its own), or an index over `children`."""
    top = digest(name)
    if children:
        manifests = {
            top: {top: 10},
            **{digest(child): {digest(child): 20, digest(child + "-layer"): 1000} for child in children},
        }
    else:
        manifests = {top: {top: 10, **(blobs if blobs is not None else {digest(name + "-layer"): 1000})}}
    return StoredImage(repository, top, tags, manifests, created)


NOTHING_USED = InUse(frozenset(), frozenset())


def in_use(*pairs: tuple[str, str]) -> InUse:
    return InUse(
        digests=frozenset(p for p in pairs if p[1].startswith("sha256:")),
        tags=frozenset(p for p in pairs if not p[1].startswith("sha256:")),
    )


def plan(images, used=NOTHING_USED, last_used=None, rules=RULES, first_seen=None, orphans=()):
    last_used = last_used or {}
    return plan_evictions(
        images, used, lambda repository, ref: last_used.get(ref, 0.0), first_seen or {}, rules, NOW, orphans
    )


def attachment(subject: str, kind: Attached = Attached.SIGNATURE, referrers: int = 0, name: str = "") -> Attachment:
    """An attachment of `subject` (a digest): its manifest and a payload of its own, and `referrers` referrers."""
    label = f"{name or kind.value}-of-{subject[7:15]}"  # short: digest() keeps 32 characters
    top, payload = digest(label), digest(f"p{label}")
    listed = {digest(f"r{n}{label}"): {digest(f"r{n}{label}"): 300} for n in range(referrers)}
    manifests = {top: {top: 100, digest("empty-config"): 2, payload: 400}, **listed}
    return Attachment("up.io/app", top, (attachment_tag(subject, kind),), subject, kind, manifests)


def signed(stored: StoredImage, *attachments: Attachment) -> StoredImage:
    return dataclasses.replace(stored, attachments=attachments)


def verdicts(result) -> dict[str, tuple[bool, str]]:
    names = {}
    for verdict in result.verdicts:
        names[verdict.image.digest] = (verdict.evict, verdict.reason)
    return names


@pytest.mark.parametrize(
    ("case", "last_used", "used", "rules", "evicted"),
    [
        ("old and unused goes; the newest stays", {}, (), RULES, {"old"}),
        ("used recently stays", {digest("old"): NOW - 2 * DAY}, (), RULES, set()),
        ("last used exactly maxUnusedAge ago goes", {digest("old"): NOW - 7 * DAY}, (), RULES, {"old"}),
        ("in use by digest stays", {}, (("up.io/app", digest("old")),), RULES, set()),
        ("in use by a tag on it stays", {}, (("up.io/app", "1.0"),), RULES, set()),
        ("a tag used in another repository does not count", {}, (("up.io/other", "1.0"),), RULES, {"old"}),
        ("a tag used recently counts as the image used", {"1.0": NOW - HOUR}, (), RULES, set()),
        (
            "keepNewest 0 lets the newest go too",
            {},
            (),
            RetentionConfig(max_unused_age_seconds=DAY, keep_newest=0),
            {"old", "new"},
        ),
        ("keepNewest 2 keeps both", {}, (), RetentionConfig(max_unused_age_seconds=DAY, keep_newest=2), set()),
        (
            "maxUnusedAge 0 evicts every unused image past the newest",
            {digest("old"): NOW},
            (),
            RetentionConfig(max_unused_age_seconds=0, keep_newest=1),
            {"old"},
        ),
    ],
)
def test_verdicts(case, last_used, used, rules, evicted):
    images = [image("old", created=10.0, tags=("1.0",)), image("new", created=20.0, tags=("2.0",))]
    result = plan(images, in_use(*used), last_used, rules)
    assert {name for name in ("old", "new") if verdicts(result)[digest(name)][0]} == evicted, case


def test_newest_is_the_config_created_time_then_first_seen_then_the_digest():
    images = [
        image("built-late", created=50.0),
        image("built-early", created=5.0),
        image("unknown-seen-late", created=None),
        image("unknown-seen-early", created=None),
    ]
    first_seen = {("up.io/app", digest("unknown-seen-late")): 40.0, ("up.io/app", digest("unknown-seen-early")): 1.0}
    result = plan(images, rules=RetentionConfig(max_unused_age_seconds=0, keep_newest=2), first_seen=first_seen)
    kept = {d for d, (evict, _) in verdicts(result).items() if not evict}
    assert kept == {digest("built-late"), digest("unknown-seen-late")}
    assert [v.image.digest for v in result.verdicts] == [
        digest(n) for n in ("built-late", "unknown-seen-late", "built-early", "unknown-seen-early")
    ]


def test_keep_newest_counts_per_repository():
    images = [
        image("a1", "up.io/a", created=1.0),
        image("a2", "up.io/a", created=2.0),
        image("b1", "up.io/b", created=1.0),
    ]
    evicted = {v.image.digest for v in plan(images).evictions}
    assert evicted == {digest("a1")}


def test_an_index_goes_with_its_children_unless_something_kept_shares_one():
    old = image("old-index", created=1.0, children=("amd64", "arm64"))
    new = image("new-index", created=2.0, children=("amd64-v2", "arm64"))  # the arm64 manifest did not change
    (eviction,) = plan([old, new]).evictions
    assert eviction.image.digest == digest("old-index")
    assert eviction.delete == (digest("old-index"), digest("amd64"))  # index first; arm64 stays for new-index
    assert eviction.freed_bytes == 10 + 20 + 1000  # the index, the amd64 manifest and its layer


def test_an_index_whose_child_is_in_use_stays_whole():
    old = image("old-index", created=1.0, children=("amd64", "arm64"))
    new = image("new-index", created=2.0, children=("amd64-v2",))
    result = plan([old, new], in_use(("up.io/app", digest("arm64"))))
    assert verdicts(result)[digest("old-index")] == (False, "in use")


def test_a_tagged_child_of_a_kept_index_is_never_deleted():
    index = image("index", created=2.0, children=("amd64",), tags=("multi",))
    child_alone = StoredImage(
        "up.io/app", digest("amd64"), ("amd64-only",), {digest("amd64"): {digest("amd64"): 20}}, 1.0
    )
    result = plan([index, child_alone])
    assert verdicts(result)[digest("amd64")] == (False, "a manifest of an image that stays")
    assert not result.evictions


def test_a_blob_shared_with_a_kept_image_frees_nothing_and_one_shared_by_two_evictions_counts_once():
    shared, kept_shared = {digest("base"): 5000}, {digest("base-kept"): 7000}
    images = [
        image("keep", created=9.0, blobs={**kept_shared}),
        image("go-1", created=2.0, blobs={**shared, **kept_shared}),
        image("go-2", created=1.0, blobs={**shared}),
        image("other-repo", "up.io/other", created=9.0, blobs={digest("base"): 5000}),  # kept: newest of its repository
    ]
    result = plan(images)
    freed = {v.image.digest: v.freed_bytes for v in result.evictions}
    assert freed == {digest("go-1"): 10, digest("go-2"): 10}  # only the manifests: base is kept elsewhere
    result = plan(images[:3])
    freed = {v.image.digest: v.freed_bytes for v in result.evictions}
    assert freed == {digest("go-1"): 10 + 5000, digest("go-2"): 10}


def test_reasons_say_why():
    images = [
        image("a", created=3.0),
        image("b", created=2.0, tags=("b",)),
        image("c", created=1.0),
        image("d", created=0.5),
    ]
    result = plan(images, in_use(("up.io/app", "b")), {digest("c"): NOW - 3 * HOUR, digest("d"): NOW - 8 * DAY})
    assert verdicts(result) == {
        digest("a"): (False, "the default rule: among the newest 1 by build time"),
        digest("b"): (False, "in use"),
        digest("c"): (False, "the default rule: unused for 3h, within maxUnusedAge 7d"),
        digest("d"): (True, "the default rule: unused for 8d, past maxUnusedAge 7d"),
    }


def test_bytes_by_repository_counts_each_blob_once():
    images = [
        image("x", blobs={digest("l"): 100}),
        image("y", blobs={digest("l"): 100}),
        image("z", "up.io/b", blobs={}),
    ]
    assert bytes_by_repository(images) == {"up.io/app": 10 + 10 + 100, "up.io/b": 10}


@pytest.mark.parametrize(
    ("seconds", "text"), [(0, "0s"), (59.9, "59s"), (3600, "1h"), (3660, "1h1m"), (90061, "1d1h"), (8 * DAY, "8d")]
)
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text


@pytest.mark.parametrize(
    ("size", "text"),
    [(0, "0 B"), (1023, "1023 B"), (1536, "1.5 KiB"), (5 * 1024**3, "5.0 GiB"), (3 * 1024**4, "3.0 TiB")],
)
def test_format_bytes(size, text):
    assert format_bytes(size) == text


def test_unique_bytes_counts_a_blob_shared_across_repositories_once():
    images = [image("x", blobs={digest("l"): 100}), image("y", "up.io/b", blobs={digest("l"): 100})]
    assert unique_bytes(images) == 10 + 10 + 100


def test_attachments_are_deleted_right_after_their_image_and_their_bytes_count_with_it():
    old, new = image("old", created=1.0), image("new", created=2.0)
    old_signature, old_referrers = attachment(old.digest), attachment(old.digest, Attached.REFERRERS, referrers=2)
    new_signature = attachment(new.digest)
    result = plan([signed(old, old_signature, old_referrers), signed(new, new_signature)])
    (evicted,) = result.evictions
    assert evicted.delete == (old.digest, old_signature.digest, *old_referrers.manifests)  # each top first
    assert evicted.attachments_going == (old_signature, old_referrers) and not evicted.attachments_staying
    assert evicted.freed_bytes == 1010 + 500 + 500 + 2 * 300  # the empty config stays with the kept signature
    assert result.kept_bytes == 1010 + 502
    assert result.stored_bytes == unique_bytes([signed(old, old_signature, old_referrers), signed(new, new_signature)])


def test_the_attachment_of_a_child_a_kept_index_shares_stays():
    old = image("old-index", created=1.0, children=("amd64", "arm64"))
    new = image("new-index", created=2.0, children=("amd64",))
    of_shared, of_own = attachment(digest("amd64")), attachment(digest("arm64"))
    result = plan([signed(old, of_shared, of_own), new])
    (evicted,) = result.evictions
    assert evicted.attachments_going == (of_own,) and evicted.attachments_staying == (of_shared,)
    assert of_shared.digest not in evicted.delete and of_own.digest in evicted.delete


def test_the_attachments_of_an_image_in_use_stay_and_orphans_go():
    old, new = image("old", created=1.0), image("new", created=2.0)
    orphan = attachment(digest("gone"))
    kept_signature = attachment(old.digest)
    result = plan(
        [signed(old, kept_signature), new],
        in_use(("up.io/app", old.digest)),
        rules=dataclasses.replace(RULES, keep_newest=0),
        orphans=[orphan],
    )
    assert [v.image.digest for v in result.evictions] == [new.digest]
    assert result.orphans == (orphan,)
    assert result.orphan_bytes == 100 + 400  # its manifest and payload; the empty config a kept signature holds
    assert result.stored_bytes == unique_bytes([old, new, kept_signature, orphan])


@pytest.mark.parametrize(
    ("kinds", "words"),
    [
        ([], ""),
        ([(Attached.SIGNATURE, 0)], "its signature"),
        ([(Attached.REFERRERS, 1)], "1 referrer"),
        ([(Attached.SIGNATURE, 0), (Attached.REFERRERS, 2)], "its signature and 2 referrers"),
        ([(Attached.SIGNATURE, 0), (Attached.SIGNATURE, 0)], "2 signatures"),
        (
            [(Attached.SIGNATURE, 0), (Attached.ATTESTATION, 0), (Attached.SBOM, 0), (Attached.REFERRERS, 3)],
            "its signature, its attestation, its SBOM and 3 referrers",
        ),
    ],
)
def test_format_attachments(kinds, words):
    found = [attachment(digest("x"), kind, referrers, name=str(n)) for n, (kind, referrers) in enumerate(kinds)]
    assert format_attachments(found) == words
