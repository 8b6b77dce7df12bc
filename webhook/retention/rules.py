"""The retention rules, pure: which rule covers a repository, which tags it keeps forever, how it ranks images.

`retention.rules` are tried in order and the first whose repository globs cover a repository is the only
one applied to it; a repository no rule covers follows the section's own `keepNewest` and `maxUnusedAge`
(the default rule), so a configuration without rules behaves as before rules existed. A rule ranks the
images of a repository newest first by build time, or by the highest semantic version among their tags
(`v1.2.3`, `1.2`, `2.0.0-rc.1`, with semver 2.0 precedence: a pre-release ranks below its release);
images with no such tag rank after every versioned one, by build time.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from webhook.config import RankBy, RetentionConfig, RetentionRule

_VERSION = re.compile(
    r"v?(0|[1-9][0-9]*)(?:\.(0|[1-9][0-9]*))?(?:\.(0|[1-9][0-9]*))?"
    r"(?:-((?:0|[1-9][0-9]*|[0-9]*[A-Za-z-][0-9A-Za-z-]*)(?:\.(?:0|[1-9][0-9]*|[0-9]*[A-Za-z-][0-9A-Za-z-]*))*))?"
)

VersionKey = tuple[int, int, int, int, tuple[tuple[int, int, str], ...]]


def version_key(tag: str) -> VersionKey | None:
    """The semver 2.0 precedence of `tag` as a sortable key (`v` prefix and missing minor/patch allowed); None if none.

    A release sorts above its pre-releases; pre-release identifiers compare numerically when numeric, below
    alphanumeric ones, and a shorter list of equal identifiers sorts first.
    """
    match = _VERSION.fullmatch(tag)
    if match is None:
        return None
    major, minor, patch, pre = match.groups()
    identifiers = tuple(
        (0, int(part), "") if part.isdigit() else (1, 0, part) for part in (pre.split(".") if pre else ())
    )
    return int(major), int(minor or 0), int(patch or 0), 0 if pre else 1, identifiers


def highest_version(tags: Iterable[str]) -> VersionKey | None:
    """The highest semantic version among `tags`, or None when none is one."""
    keys = [key for key in map(version_key, tags) if key is not None]
    return max(keys) if keys else None


def glob_pattern(glob: str) -> re.Pattern[str]:
    """A repository glob as a regular expression: `*` and `?` stay within one path segment, `**` crosses them."""
    parts = re.split(r"(\*\*|\*|\?)", glob)
    wild = {"**": ".*", "*": "[^/]*", "?": "[^/]"}
    return re.compile("".join(wild.get(part, re.escape(part)) for part in parts))


@dataclass(frozen=True)
class Rule:
    """One rule as applied: its position (None: the default rule), what it keeps, how it ranks."""

    number: int | None
    name: str | None
    repositories: tuple[re.Pattern[str], ...]
    keep: tuple[re.Pattern[str], ...]
    keep_newest: int
    by: RankBy
    max_unused_age_seconds: float

    @property
    def label(self) -> str:
        """`rule 2 (releases)`, `rule 2`, or `the default rule`: how reasons name it."""
        if self.number is None:
            return "the default rule"
        return f"rule {self.number}" + (f" ({self.name})" if self.name else "")

    def covers(self, repository: str) -> bool:
        """Whether one of its globs matches the whole repository name."""
        return any(pattern.fullmatch(repository) for pattern in self.repositories)

    def kept_tag(self, tags: Iterable[str]) -> tuple[str, str] | None:
        """The first (tag, pattern) where a tag wholly matches one of its keep patterns, or None."""
        for tag in sorted(tags):
            for pattern in self.keep:
                if pattern.fullmatch(tag):
                    return tag, pattern.pattern
        return None

    def rank_key(self, tags: Iterable[str], built: float, digest: str) -> tuple[object, ...]:
        """A key sorting the newest last: version (when by semver), then build time, then digest."""
        if self.by is RankBy.SEMVER:
            version = highest_version(tags)
            return (version is not None, version or (), built, digest)
        return (built, digest)

    @property
    def ranking(self) -> str:
        """How it tells the newest, in words."""
        return "semantic version" if self.by is RankBy.SEMVER else "build time"


class RuleBook:
    """The configured rules in order, then the default rule; `for_repository` picks the one that applies."""

    def __init__(self, config: RetentionConfig) -> None:
        self.default = Rule(None, None, (), (), config.keep_newest, RankBy.BUILD_TIME, config.max_unused_age_seconds)
        self.rules = tuple(_resolve(number, rule, config) for number, rule in enumerate(config.rules, start=1))

    def for_repository(self, repository: str) -> Rule:
        """The first rule covering `repository`, else the default rule."""
        return next((rule for rule in self.rules if rule.covers(repository)), self.default)


def _resolve(number: int, rule: RetentionRule, config: RetentionConfig) -> Rule:
    """A configured rule with its patterns compiled and its unset numbers taken from the section."""
    return Rule(
        number,
        rule.name,
        tuple(glob_pattern(glob) for glob in rule.repositories),
        tuple(re.compile(pattern) for pattern in rule.keep),
        config.keep_newest if rule.keep_newest is None else rule.keep_newest,
        rule.by,
        config.max_unused_age_seconds if rule.max_unused_age_seconds is None else rule.max_unused_age_seconds,
    )
