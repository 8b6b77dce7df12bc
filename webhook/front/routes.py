"""Which request the front was sent, checked against the distribution grammar before anything is forwarded.

A request target becomes a Route: its name (the metrics label), and for the content routes the repository
and the tag or digest, each checked with `policy/reference` (the one grammar). A target the grammar refuses
(an encoded separator, a dot-segment, CR/LF, a digest of another algorithm or length) raises the Refused
error the answer table turns into a 4xx; it never reaches the CCR registry or an upstream. What is
forwarded is rebuilt from the checked parts only: the CCR sees no byte of the target the grammar did not
pass, and of the query only a listing's checked `n` and `last` and a referrers list's `artifactType` when it
is a media type by RFC 6838's grammar (a mirror's `ns` and any other parameter mean nothing to the CCR and
are dropped; so is an `artifactType` outside the grammar: the answer then lacks `OCI-Filters-Applied` and
the client filters, as the spec has it).
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass

from webhook.front.answers import DigestInvalid, NameInvalid, NotAPullPath, PaginationInvalid, TagInvalid
from webhook.policy.reference import is_digest, is_repository_name, is_tag

_CONTENT = re.compile(r"^/v2/(?P<name>.+)/(?P<kind>manifests|blobs|referrers)/(?P<reference>[^/]*)$")
_TAGS = re.compile(r"^/v2/(?P<name>.+)/tags/list$")
_PEER_BLOB = re.compile(r"^/peer/v2/(?P<name>.+)/blobs/(?P<reference>[^/]*)$")
_ALGORITHM = re.compile(r"[a-z0-9]+(?:[.+_-][a-z0-9]+)*:")  # what a digest starts with (a tag has no ':')
_KINDS = {"manifests": "manifest", "blobs": "blob", "referrers": "referrers"}
_MEDIA_TYPE = re.compile(r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}")
MAX_PAGE = 100_000
ROUTES = ("v2", "manifest", "blob", "referrers", "tags", "catalog", "metrics", "healthz", "peer_blob", "other")


@dataclass(frozen=True, slots=True)
class Route:
    """A request as the front understands it; `target` is what the CCR is asked (built from checked parts)."""

    name: str  # one of ROUTES
    repository: str = ""
    reference: str = ""  # a manifest's tag or digest; a blob's or referrers' digest
    query: str = ""

    @property
    def target(self) -> str:
        """The origin-form request target for the CCR registry."""
        path = {
            "v2": "/v2/",
            "catalog": "/v2/_catalog",
            "tags": f"/v2/{self.repository}/tags/list",
            "manifest": f"/v2/{self.repository}/manifests/{self.reference}",
            "blob": f"/v2/{self.repository}/blobs/{self.reference}",
            "referrers": f"/v2/{self.repository}/referrers/{self.reference}",
        }[self.name]
        return f"{path}?{self.query}" if self.query else path


def route_of(target: str, peer: bool = False) -> Route:
    """The route of request target `target` (origin or absolute form), its parts unchecked; `peer`: the peer port."""
    parts = urllib.parse.urlsplit(target)
    path = parts.path
    if path == "/healthz":
        return Route("healthz")
    if peer:
        found = _PEER_BLOB.match(path)
        return Route("peer_blob", found["name"], found["reference"]) if found else Route("other")
    if path == "/metrics":
        return Route("metrics")
    if path in ("/v2", "/v2/"):
        return Route("v2")
    if path == "/v2/_catalog":
        return Route("catalog", query=parts.query)
    if found := _TAGS.match(path):
        return Route("tags", found["name"], query=parts.query)
    if found := _CONTENT.match(path):
        return Route(_KINDS[found["kind"]], found["name"], found["reference"], parts.query)
    return Route("other")


def checked(route: Route) -> Route:
    """`route` once every part passes the distribution grammar, its query cut to what the CCR may be sent."""
    if route.name == "other":
        raise NotAPullPath("not an OCI distribution pull path")
    if route.name in ("v2", "metrics", "healthz"):
        return route
    if route.name == "peer_blob":
        if not is_repository_name(route.repository):
            raise NameInvalid("the repository name is outside the distribution grammar")
        if not is_digest(route.reference):
            raise DigestInvalid("the digest is not sha256 or sha512 in lower-case hex of its exact length")
        return route
    if route.name == "catalog":
        return Route("catalog", query=_listing_query(route.query, is_repository_name, NameInvalid))
    if not is_repository_name(route.repository):
        raise NameInvalid("the repository name is outside the distribution grammar")
    if route.name == "tags":
        return Route("tags", route.repository, query=_listing_query(route.query, is_tag, TagInvalid))
    if route.name == "manifest" and not _ALGORITHM.match(route.reference):  # a tag, meant as one at least
        if not is_tag(route.reference):
            raise TagInvalid("the tag is outside the distribution grammar")
    elif not is_digest(route.reference):
        raise DigestInvalid("the digest is not sha256 or sha512 in lower-case hex of its exact length")
    query = _artifact_type_query(route.query) if route.name == "referrers" else ""
    return Route(route.name, route.repository, route.reference, query)


def artifact_type(route: Route) -> str | None:
    """The artifactType a checked referrers route filters by, if any."""
    values = urllib.parse.parse_qs(route.query).get("artifactType")
    return values[0] if values else None


def _artifact_type_query(query: str) -> str:
    """A referrers list's first `artifactType`, when it is a media type, as a query; anything else dropped."""
    for name, value in urllib.parse.parse_qsl(query, keep_blank_values=True):
        if name == "artifactType":
            return urllib.parse.urlencode([(name, value)]) if _MEDIA_TYPE.fullmatch(value) else ""
    return ""


def _listing_query(query: str, valid_last: Callable[[str], bool], error: type[Exception]) -> str:
    """A listing's `n` and `last`, checked (`last` by `valid_last`), as a query; every other parameter dropped."""
    kept: list[tuple[str, str]] = []
    for name, value in urllib.parse.parse_qsl(query, keep_blank_values=True):
        if name == "n":
            if not value.isascii() or not value.isdigit() or int(value) > MAX_PAGE:
                raise PaginationInvalid(f"n must be a whole number up to {MAX_PAGE}")
            kept.append((name, value))
        elif name == "last":
            if not valid_last(value):
                raise error("last is outside the distribution grammar")
            kept.append((name, value))
    return urllib.parse.urlencode(kept)
