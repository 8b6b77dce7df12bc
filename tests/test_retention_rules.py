"""Retention rules and the storage budget as pure functions: versions, globs, which rule applies, what each keeps."""

from __future__ import annotations

import re

import pytest

from tests.test_retention_plan import DAY, NOTHING_USED, NOW, digest, image, in_use, verdicts
from webhook.config import ConfigError, RankBy, RetentionConfig, RetentionRule, parse_config
from webhook.retention.plan import plan_evictions
from webhook.retention.rules import RuleBook, glob_pattern, highest_version, version_key

DEFAULTS = RetentionConfig(enabled=True, max_unused_age_seconds=7 * DAY, keep_newest=1)


def plan(images, rules, used=NOTHING_USED, last_used=None):
    last_used = last_used or {}
    return plan_evictions(images, used, lambda repository, ref: last_used.get(ref, 0.0), {}, rules, NOW)


def with_rules(*rules: RetentionRule, **section) -> RetentionConfig:
    return RetentionConfig(
        **{"enabled": True, "max_unused_age_seconds": 7 * DAY, "keep_newest": 1, **section}, rules=rules
    )


@pytest.mark.parametrize(
    ("lower", "higher"),
    [
        ("1.0.0", "2.0.0"),
        ("1.9.0", "1.10.0"),  # numerically, not as text
        ("v1.2.3", "1.2.4"),  # the v prefix is not part of the version
        ("1.0.0-rc.1", "1.0.0"),  # a pre-release ranks below its release
        ("1.0.0-alpha", "1.0.0-alpha.1"),  # a longer list of equal identifiers ranks above
        ("1.0.0-alpha.1", "1.0.0-alpha.beta"),  # numeric identifiers rank below alphanumeric ones
        ("1.0.0-beta.2", "1.0.0-beta.11"),  # numeric identifiers compare as numbers
        ("1.0.0-beta", "1.0.0-rc.1"),  # alphanumeric identifiers compare as text
        ("1.2", "1.2.1"),  # a missing patch is 0
        ("2", "2.0.1"),
        ("0.9.9", "1.0.0-alpha"),
    ],
)
def test_semantic_version_precedence(lower, higher):
    assert version_key(lower) < version_key(higher)


@pytest.mark.parametrize(
    "tag", ["latest", "main-3f2a1c", "1.0.0.1", "01.2.3", "1.02", "v", "1.0.0-", "1.0.0-01", "1.0.0_build", "stable"]
)
def test_tags_that_are_no_semantic_version(tag):
    assert version_key(tag) is None


def test_an_image_is_as_new_as_the_highest_version_among_its_tags():
    assert highest_version(["latest", "1", "1.4", "v1.4.2"]) == version_key("1.4.2")
    assert highest_version(["latest", "main"]) is None


@pytest.mark.parametrize(
    ("glob", "repository", "covers"),
    [
        ("**", "mirror/docker.io/library/nginx", True),
        ("mirror/docker.io/library/*", "mirror/docker.io/library/nginx", True),
        ("mirror/docker.io/*", "mirror/docker.io/library/nginx", False),  # * stays within one segment
        ("mirror/docker.io/**", "mirror/docker.io/library/nginx", True),
        ("mirror/*/library/nginx", "mirror/docker.io/library/nginx", True),  # . is no wildcard...
        ("mirror/docker?io/library/nginx", "mirror/docker.io/library/nginx", True),
        ("mirror/dockerxio/**", "mirror/docker.io/library/nginx", False),  # ...so it matches only itself
        ("mirror/docker.io/library/ngin", "mirror/docker.io/library/nginx", False),  # the whole name
    ],
)
def test_repository_globs(glob, repository, covers):
    assert bool(glob_pattern(glob).fullmatch(repository)) is covers


def test_the_first_rule_covering_a_repository_applies_and_the_default_rule_takes_the_rest():
    book = RuleBook(
        with_rules(
            RetentionRule(name="nginx", repositories=("up.io/library/nginx",), keep_newest=5),
            RetentionRule(name="library", repositories=("up.io/library/*",), max_unused_age_seconds=DAY),
            RetentionRule(repositories=("up.io/**",), by=RankBy.SEMVER),
        )
    )
    assert book.for_repository("up.io/library/nginx").label == "rule 1 (nginx)"
    library = book.for_repository("up.io/library/redis")
    assert (library.label, library.keep_newest, library.max_unused_age_seconds) == ("rule 2 (library)", 1, DAY)
    assert book.for_repository("up.io/acme/app").label == "rule 3"  # unnamed
    default = book.for_repository("other.io/app")
    assert (default.label, default.keep_newest, default.max_unused_age_seconds) == ("the default rule", 1, 7 * DAY)


def test_without_rules_every_repository_follows_the_default_rule_as_before():
    images = [image("old", created=1.0), image("new", created=2.0)]
    assert {v.image.digest for v in plan(images, DEFAULTS).evictions} == {digest("old")}


RELEASES = RetentionRule(
    name="releases",
    repositories=("up.io/app",),
    keep=(r"^v?\d+$", "stable", "lts"),
    keep_newest=2,
    by=RankBy.SEMVER,
)


def releases_images():
    return [
        image("v1", created=1.0, tags=("v1", "1.9.0")),  # the major tag: kept forever
        image("rc", created=9.0, tags=("2.1.0-rc.1",)),
        image("v2.0", created=2.0, tags=("2.0.0",)),
        image("v2.1", created=3.0, tags=("2.1.0", "v2")),  # v2 is a major tag too
        image("v1.10", created=4.0, tags=("1.10.0",)),
        image("v1.9.1", created=8.0, tags=("1.9.1",)),  # built late (a backport), still an old version
        image("ci", created=10.0, tags=("main-3f2a1c",)),  # newest by build time, no version
        image("lts", created=0.5, tags=("lts",)),
    ]


def test_keep_patterns_keep_forever_and_keep_newest_counts_semantic_versions_not_build_times():
    result = plan(releases_images(), with_rules(RELEASES))
    assert verdicts(result) == {
        digest("v1"): (False, r"rule 1 (releases) keeps tags matching ^v?\d+$ (v1)"),
        digest("v2.1"): (False, r"rule 1 (releases) keeps tags matching ^v?\d+$ (v2)"),
        digest("lts"): (False, "rule 1 (releases) keeps tags matching lts (lts)"),
        digest("rc"): (False, "rule 1 (releases): among the newest 2 by semantic version"),  # ranks 2nd, after 2.1.0
        digest("v2.0"): (True, "rule 1 (releases): unused for 100d, past maxUnusedAge 7d"),  # 3rd
        digest("v1.10"): (True, "rule 1 (releases): unused for 100d, past maxUnusedAge 7d"),
        digest("v1.9.1"): (True, "rule 1 (releases): unused for 100d, past maxUnusedAge 7d"),
        digest("ci"): (True, "rule 1 (releases): unused for 100d, past maxUnusedAge 7d"),  # no version: last
    }


def test_a_pattern_matches_the_whole_tag():
    rule = RetentionRule(repositories=("up.io/app",), keep=("stable",), keep_newest=0)
    images = [image("unstable", tags=("unstable",)), image("stable", tags=("stable",))]
    assert [v.image.digest for v in plan(images, with_rules(rule)).evictions] == [digest("unstable")]


def test_by_build_time_the_version_does_not_matter():
    rule = RetentionRule(repositories=("up.io/app",), keep_newest=1, by=RankBy.BUILD_TIME)
    images = [image("v9", created=1.0, tags=("9.0.0",)), image("v1", created=2.0, tags=("1.0.0",))]
    assert [v.image.digest for v in plan(images, with_rules(rule)).evictions] == [digest("v9")]


def test_without_any_version_a_semver_rule_ranks_by_build_time():
    rule = RetentionRule(repositories=("up.io/app",), keep_newest=1, by=RankBy.SEMVER)
    images = [image("older", created=1.0, tags=("main-a",)), image("newer", created=2.0, tags=("main-b",))]
    assert [v.image.digest for v in plan(images, with_rules(rule)).evictions] == [digest("older")]


def test_a_rule_age_applies_to_its_repositories_only():
    ci = RetentionRule(name="ci", repositories=("up.io/ci/*",), keep_newest=0, max_unused_age_seconds=DAY)
    images = [image("build", "up.io/ci/app", tags=("main-1",)), image("app", "up.io/app", tags=("1.0",))]
    last_used = {"main-1": NOW - 2 * DAY, "1.0": NOW - 2 * DAY}
    result = plan(images, with_rules(ci, keep_newest=0), last_used=last_used)
    assert verdicts(result) == {
        digest("build"): (True, "rule 1 (ci): unused for 2d, past maxUnusedAge 1d"),
        digest("app"): (False, "the default rule: unused for 2d, within maxUnusedAge 7d"),
    }


def test_in_use_wins_over_every_rule():
    ci = RetentionRule(repositories=("**",), keep_newest=0, max_unused_age_seconds=0)
    images = [image("used", tags=("main-1",)), image("unused", tags=("main-2",))]
    for budget in (None, 0):
        result = plan(images, with_rules(ci, max_bytes=budget), used=in_use(("up.io/app", "main-1")))
        assert verdicts(result)[digest("used")] == (False, "in use")
        assert [v.image.digest for v in result.evictions] == [digest("unused")]


# -- the storage budget: each image holds 10 (manifest) + 1000 (its layer) unless it shares one ----------------


def test_under_the_budget_the_rules_alone_decide():
    images = [image("a", created=1.0), image("b", created=2.0)]
    result = plan(images, with_rules(keep_newest=2, max_bytes=2020), last_used={})
    assert not result.evictions
    assert (result.stored_bytes, result.kept_bytes, result.max_bytes, result.over_budget) == (2020, 2020, 2020, False)


def test_over_the_budget_the_least_recently_used_go_first_until_under():
    images = [image(name, created=created) for name, created in (("a", 1.0), ("b", 2.0), ("c", 3.0), ("d", 4.0))]
    last_used = {digest("a"): NOW - DAY, digest("b"): NOW - 3 * DAY, digest("c"): NOW - 2 * DAY, digest("d"): NOW}
    result = plan(images, with_rules(keep_newest=4, max_bytes=2500), last_used=last_used)
    assert [v.image.digest for v in result.evictions] == [digest("c"), digest("b")]  # newest first in the listing
    assert verdicts(result)[digest("b")] == (
        True,
        "over the storage budget of 2.4 KiB, least recently used first: last used 3d ago "
        "(the default rule: among the newest 4 by build time)",
    )
    assert (result.stored_bytes, result.kept_bytes, result.over_budget) == (4040, 2020, False)
    assert sum(v.freed_bytes for v in result.evictions) == 2020


def test_among_images_last_used_at_the_same_moment_the_budget_takes_the_oldest_build_first():
    images = [image(name, created=created) for name, created in (("b", 2.0), ("c", 3.0), ("z", 1.0))]
    result = plan(images, with_rules(keep_newest=3, max_bytes=2020))  # never named: all last used at 0
    assert [v.image.digest for v in result.evictions] == [digest("z")]  # not the first digest, "b"


def test_the_budget_counts_shared_blobs_once_and_evicts_every_image_sharing_one_to_free_it():
    base = {digest("base"): 3000}
    images = [
        image("a", created=1.0, blobs={**base}),
        image("b", created=2.0, blobs={**base}),
        image("c", created=3.0, blobs={digest("own"): 500}),
    ]
    last_used = {digest("a"): NOW - 3 * DAY, digest("b"): NOW - 2 * DAY, digest("c"): NOW - DAY}
    result = plan(images, with_rules(keep_newest=3, max_bytes=1000), last_used=last_used)
    assert result.stored_bytes == 3 * 10 + 3000 + 500
    assert [v.image.digest for v in result.evictions] == [digest("b"), digest("a")]  # both, to free the base
    assert result.kept_bytes == 510


def test_images_in_use_or_kept_by_a_pattern_never_go_for_the_budget_and_the_plan_says_it_stays_over():
    rule = RetentionRule(repositories=("**",), keep=("lts",), keep_newest=5)
    images = [image("lts", created=1.0, tags=("lts",)), image("used", created=2.0), image("spare", created=3.0)]
    result = plan(images, with_rules(rule, max_bytes=100), used=in_use(("up.io/app", digest("used"))))
    assert [v.image.digest for v in result.evictions] == [digest("spare")]
    assert (result.kept_bytes, result.over_budget) == (2020, True)


def test_rules_are_read_from_the_configuration_and_checked():
    config = parse_config(
        {
            "ccr": {"registry": "ccr.local"},
            "retention": {
                "maxBytes": 10 * 1024**3,
                "rules": [
                    {"name": "releases", "repositories": ["docker.io/**"], "keep": ["^v?[0-9]+$"], "by": "semver"},
                    {"repositories": ["ci/*"], "keepNewest": 0, "maxUnusedAge": "1d"},
                ],
            },
        }
    ).retention
    assert config.max_bytes == 10 * 1024**3
    assert config.rules == (
        RetentionRule("releases", ("docker.io/**",), ("^v?[0-9]+$",), None, RankBy.SEMVER, None),
        RetentionRule(None, ("ci/*",), (), 0, RankBy.BUILD_TIME, DAY),
    )
    for rule, message in (
        ({"keep": ["v("]}, "retention.rules[0].keep: 'v(' is not a regular expression"),
        ({"repositories": ["Docker.io/*"]}, "retention.rules[0].repositories: 'Docker.io/*' is not a repository glob"),
        ({"by": "date"}, "retention.rules[0].by: must be one of buildTime, semver, got 'date'"),
        ({"keepNewest": -1}, "retention.rules[0].keepNewest: must be at least 0"),
        ({"keeep": []}, "retention.rules[0].keeep: unknown key"),
    ):
        with pytest.raises(ConfigError, match=re.escape(message)):
            parse_config({"ccr": {"registry": "ccr.local"}, "retention": {"rules": [rule]}})
