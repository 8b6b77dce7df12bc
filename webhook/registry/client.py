"""The OCI distribution client: manifests, blobs, tags, with the registry's own authentication.

One `RegistryClient` per registry endpoint, shared by every thread: one urllib3 PoolManager, at most
`max_connections` connections per host (a caller waits for a free one, within its deadline if it has one).

Rules that keep credentials where they belong:
- Redirects are followed for blob downloads only, by hand, at most 3 hops, and only to https URLs (http
  too when the registry is configured insecure). Registries such as Docker Hub and S3-backed ones send
  blob GETs to a storage host; our Authorization header goes only to the registry's own endpoint, never
  to another host. Manifest requests, HEADs, uploads and token requests never follow a redirect.
- Which storage hosts: those of the upstream's `redirectHosts` when it is set (names or globs), else any
  name that resolves to public addresses only, judged after DNS and connected to by the checked address
  (egress.py); never an IP literal unless listed, never a URL with user info. What comes back is
  digest-checked like any blob.
- Token realms get the same checks, with `tokenHosts` as their list; the registry's own host name (any
  port) is trusted. Credentials go to the registry's own host or a listed one only, never elsewhere.
- Upload locations (relative or absolute) must stay on the endpoint's origin; we refuse to send
  credentials and data elsewhere.
- Error messages carry status codes, registry error codes and our own words, never a credential, a
  token or a signed storage URL.

No hidden retries: a caller owns its retry policy (admission has a deadline, the warmer backs off and
retries). Every blob read is sha256-checked when the stream reaches its end.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import socket
import time
import urllib.parse
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import urllib3
from urllib3.response import BaseHTTPResponse

from webhook.config import Config
from webhook.policy.reference import is_digest
from webhook.registry import egress
from webhook.registry.auth import Authenticator, Credentials, load_credentials
from webhook.registry.deadline import POOL_CLASSES, deadline_scope
from webhook.registry.errors import (
    NotFound,
    RateLimited,
    RegistryAuthError,
    RegistryError,
    RegistryNotAllowed,
    RegistryProtocolError,
    RegistryUnavailable,
    describe_transport_error,
    error_for_status,
)
from webhook.registry.streams import BlobStream, UploadBody, UploadPart, release

__all__ = [
    "BlobStream",
    "Manifest",
    "NotFound",
    "RateLimited",
    "Registries",
    "RegistryAuthError",
    "RegistryClient",
    "RegistryError",
    "RegistryNotAllowed",
    "RegistryProtocolError",
    "RegistryUnavailable",
    "digest_of",
]

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MANIFEST_MEDIA_TYPES = (OCI_INDEX, DOCKER_MANIFEST_LIST, OCI_MANIFEST, DOCKER_MANIFEST)
INDEX_MEDIA_TYPES = frozenset({OCI_INDEX, DOCKER_MANIFEST_LIST})
_ACCEPT_MANIFESTS = {"Accept": ", ".join(MANIFEST_MEDIA_TYPES)}

MAX_MANIFEST_BYTES = 4 * 1024 * 1024  # distribution's own limit
MAX_LISTING_BYTES = 16 * 1024 * 1024
MAX_REDIRECTS = 3
PATCH_BYTES = 16 * 1024 * 1024
_MONOLITHIC_REFUSED = frozenset({405, 416, 501})
_NEXT_LINK = re.compile(r'<([^>]+)>\s*;\s*rel="?next"?')


def digest_of(data: bytes, algorithm: str = "sha256") -> str:
    """The OCI digest (`algorithm:hex`) of `data`."""
    return f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}"


def _origin(url: str) -> tuple[str, str]:
    parts = urllib.parse.urlsplit(url)
    return parts.scheme, parts.netloc.lower()


def _with_query(url: str, **params: str) -> str:
    parts = urllib.parse.urlsplit(url)
    query = urllib.parse.urlencode(
        list(urllib.parse.parse_qsl(parts.query, keep_blank_values=True)) + list(params.items())
    )
    return urllib.parse.urlunsplit(parts._replace(query=query))


def _pull(repository: str) -> tuple[str, ...]:
    return (f"repository:{repository}:pull",)


def _push(repository: str) -> tuple[str, ...]:
    return (f"repository:{repository}:pull,push",)


@dataclass(frozen=True)
class Manifest:
    """A manifest or index exactly as the registry served it, with its digest (checked against the bytes)."""

    media_type: str
    data: bytes
    digest: str

    @property
    def is_index(self) -> bool:
        """True for an OCI index or a Docker manifest list (a manifest of manifests)."""
        return self.media_type in INDEX_MEDIA_TYPES


class RegistryClient:
    """A thread-safe client of one registry endpoint (https://host[:port]), authenticating as it asks.

    `credentials` is the path of a docker config.json, read once here (an unusable one fails at once).
    `insecure` lets redirects and token realms use plain http too; TLS, where used, is always verified.
    `ca_file` is a PEM bundle trusted instead of the system CAs for every TLS connection of this client
    (its token service and storage redirects too); it is read for each new connection, so a rotated
    bundle is picked up without a restart. `redirect_hosts` (names or globs) limits the storage hosts a
    blob download may be redirected to, `token_hosts` the token realms besides the registry's own host;
    None allows any name resolving to public addresses (credentials never go there). `resolve` is
    socket.getaddrinfo, or a test's fake.
    """

    def __init__(
        self,
        endpoint: str,
        *,
        credentials: str | None = None,
        insecure: bool = False,
        ca_file: str | None = None,
        connect_timeout: float,
        read_timeout: float,
        max_connections: int,
        redirect_hosts: tuple[str, ...] | None = None,
        token_hosts: tuple[str, ...] | None = None,
        resolve: egress.Resolve = socket.getaddrinfo,
    ) -> None:
        self.endpoint = endpoint.rstrip("/")
        self.insecure = insecure
        self.redirect_hosts = redirect_hosts
        self.token_hosts = token_hosts
        self._resolve = resolve
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        loaded: Credentials | None = load_credentials(credentials, self.endpoint) if credentials else None
        self._pool = urllib3.PoolManager(
            num_pools=8,
            maxsize=max_connections,
            block=True,
            headers={"User-Agent": "ccr-webhook"},
            ca_certs=ca_file or None,
        )
        self._pool.pool_classes_by_scheme = POOL_CLASSES  # connections that honour a total deadline
        self._auth = Authenticator(self.endpoint, loaded, self._exchange, self._realm)
        self._chunked_uploads_only = False

    def __repr__(self) -> str:
        return f"RegistryClient({self.endpoint!r})"

    def close(self) -> None:
        """Close every pooled connection."""
        self._pool.clear()

    # -- manifests ------------------------------------------------------------------------------------

    def resolve_digest(self, repository: str, reference: str, timeout: float | None = None) -> str:
        """The digest a tag (or digest) names now, by HEAD; `timeout` caps the whole call, auth included."""
        deadline = None if timeout is None else time.monotonic() + timeout
        what, response = self._head_manifest(repository, reference, deadline)
        self._expect(response, (200,), what, repository, missing=("manifest", reference))
        self._read_body(response, 0, what, repository, deadline=deadline)
        digest = response.headers.get("Docker-Content-Digest")
        if digest is None:
            return self._get_manifest(repository, reference, deadline).digest
        if not is_digest(digest) or (is_digest(reference) and digest != reference):
            raise RegistryProtocolError(
                f"{what}: the registry answered digest {digest[:80]!r}", endpoint=self.endpoint, repository=repository
            )
        return digest

    def has_manifest(self, repository: str, digest: str, timeout: float | None = None) -> bool:
        """Whether the registry holds manifest `digest` (HEAD), so callers can skip or swap without a GET."""
        deadline = None if timeout is None else time.monotonic() + timeout
        what, response = self._head_manifest(repository, digest, deadline)
        if response.status == 404:
            self._read_body(response, 0, what, repository, deadline=deadline)
            return False
        self._expect(response, (200,), what, repository)
        self._read_body(response, 0, what, repository, deadline=deadline)
        return True

    def _head_manifest(self, repository: str, reference: str, deadline: float | None) -> tuple[str, BaseHTTPResponse]:
        """HEAD manifest `reference` with every manifest type accepted: what it is called in errors, and the answer."""
        what = f"HEAD manifest {reference}"
        path = f"/v2/{repository}/manifests/{reference}"
        response = self._send(
            "HEAD", path, what, repository, _pull(repository), headers=_ACCEPT_MANIFESTS, deadline=deadline
        )
        return what, response

    def get_manifest(self, repository: str, reference: str, timeout: float | None = None) -> Manifest:
        """The manifest or index `reference` names, bytes exactly as served (digest-checked for a digest reference)."""
        return self._get_manifest(repository, reference, None if timeout is None else time.monotonic() + timeout)

    def referrers(self, repository: str, digest: str, timeout: float | None = None) -> Manifest | None:
        """The OCI 1.1 referrers index of manifest `digest`; None when the registry has no referrers API (404)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        what = f"GET referrers of {digest}"
        response = self._send(
            "GET",
            f"/v2/{repository}/referrers/{digest}",
            what,
            repository,
            _pull(repository),
            headers={"Accept": OCI_INDEX},
            deadline=deadline,
        )
        if response.status == 404:
            self._read_body(response, 65536, what, repository, deadline=deadline)
            return None
        self._expect(response, (200,), what, repository)
        data = self._read_body(response, MAX_MANIFEST_BYTES, what, repository, deadline=deadline)
        return Manifest(OCI_INDEX, data, digest_of(data))

    def read_blob(self, repository: str, digest: str, limit: int, timeout: float | None = None) -> bytes:
        """A small blob whole (at most `limit` bytes, else RegistryProtocolError), digest-checked, within `timeout`."""
        with self.open_blob(repository, digest, timeout) as stream:
            parts, received = [], 0
            while data := stream.read(min(65536, limit + 1 - received) or 1):
                parts.append(data)
                received += len(data)
                if received > limit:
                    raise RegistryProtocolError(
                        f"GET blob {digest}: larger than {limit} bytes", endpoint=self.endpoint, repository=repository
                    )
            return b"".join(parts)

    def _get_manifest(self, repository: str, reference: str, deadline: float | None) -> Manifest:
        what = f"GET manifest {reference}"
        response = self._send(
            "GET",
            f"/v2/{repository}/manifests/{reference}",
            what,
            repository,
            _pull(repository),
            headers=_ACCEPT_MANIFESTS,
            deadline=deadline,
        )
        self._expect(response, (200,), what, repository, missing=("manifest", reference))
        data = self._read_body(response, MAX_MANIFEST_BYTES, what, repository, deadline=deadline)
        try:
            document = json.loads(data)
            declared = document.get("mediaType") if isinstance(document, dict) else None
        except ValueError:
            raise RegistryProtocolError(
                f"{what}: the registry served a manifest that is not JSON",
                endpoint=self.endpoint,
                repository=repository,
            ) from None
        content_type = (response.headers.get("Content-Type") or "").split(";")[0].strip()
        media_type = content_type if content_type in MANIFEST_MEDIA_TYPES else (declared or content_type)
        algorithm = reference.split(":", 1)[0] if is_digest(reference) else "sha256"
        digest = digest_of(data, algorithm)
        claimed = reference if is_digest(reference) else response.headers.get("Docker-Content-Digest")
        if claimed and claimed.startswith(algorithm + ":") and claimed != digest:
            raise RegistryProtocolError(
                f"{what}: the registry claims digest {claimed} but the bytes have {digest}",
                endpoint=self.endpoint,
                repository=repository,
            )
        return Manifest(media_type, data, digest)

    def put_manifest(self, repository: str, reference: str, data: bytes, media_type: str) -> str:
        """Push manifest bytes unchanged under a tag or digest; returns their digest."""
        what = f"PUT manifest {reference}"
        response = self._send(
            "PUT",
            f"/v2/{repository}/manifests/{reference}",
            what,
            repository,
            _push(repository),
            headers={"Content-Type": media_type},
            body=data,
        )
        self._expect(response, (200, 201), what, repository)
        self._read_body(response, MAX_LISTING_BYTES, what, repository)
        digest = digest_of(data)
        claimed = response.headers.get("Docker-Content-Digest")
        if claimed and claimed.startswith("sha256:") and claimed != digest:
            raise RegistryProtocolError(
                f"{what}: the registry stored digest {claimed}, the bytes pushed have {digest}",
                endpoint=self.endpoint,
                repository=repository,
            )
        return digest

    def delete_manifest(self, repository: str, digest: str) -> None:
        """Delete manifest `digest` (and so every tag on it), for retention."""
        what = f"DELETE manifest {digest}"
        response = self._send("DELETE", f"/v2/{repository}/manifests/{digest}", what, repository, _push(repository))
        self._expect(response, (200, 202), what, repository, missing=("manifest", digest))
        self._read_body(response, MAX_LISTING_BYTES, what, repository)

    # -- blobs ----------------------------------------------------------------------------------------

    def blob_size(self, repository: str, digest: str) -> int | None:
        """The size of blob `digest` if the registry holds it (HEAD), else None: lets copies skip what exists."""
        what = f"HEAD blob {digest}"
        response = self._send("HEAD", f"/v2/{repository}/blobs/{digest}", what, repository, _pull(repository))
        if response.status == 404:
            self._read_body(response, 0, what, repository)
            return None
        if 300 <= response.status < 400:  # stored elsewhere: the size comes from the (redirected) download
            self._read_body(response, 0, what, repository)
            with self.open_blob(repository, digest) as stream:
                return stream.size
        self._expect(response, (200,), what, repository)
        self._read_body(response, 0, what, repository)
        length = response.headers.get("Content-Length", "")
        if not length.isdigit():
            raise RegistryProtocolError(
                f"{what}: no Content-Length in the answer", endpoint=self.endpoint, repository=repository
            )
        return int(length)

    def open_blob(self, repository: str, digest: str, timeout: float | None = None) -> BlobStream:
        """Start downloading blob `digest`, following storage redirects by the rules of this module; stream it.

        `timeout` bounds the whole download, body included (small blobs read at admission); None: no total bound.
        """
        what = f"GET blob {digest}"
        url = f"{self.endpoint}/v2/{repository}/blobs/{digest}"
        deadline = None if timeout is None else time.monotonic() + timeout
        response = self._send("GET", url, what, repository, _pull(repository), stream=True, deadline=deadline)
        for hop in range(MAX_REDIRECTS + 1):
            if response.status not in (301, 302, 303, 307, 308):
                break
            location = response.headers.get("Location")
            self._read_body(response, 0, what, repository, complete=False)
            if hop == MAX_REDIRECTS or not location:
                reason = f"more than {MAX_REDIRECTS} redirects" if location else "a redirect without Location"
                raise RegistryProtocolError(f"{what}: {reason}", endpoint=self.endpoint, repository=repository)
            url = urllib.parse.urljoin(url, location)
            if _origin(url) == _origin(self.endpoint):
                response = self._send("GET", url, what, repository, _pull(repository), stream=True, deadline=deadline)
                continue
            try:  # a storage host: judged after DNS, connected by the checked address, no Authorization of ours
                destination = self._destination(url, self.redirect_hosts, "redirectHosts", trust_own_host=False)
            except egress.EgressRefused as refused:
                raise RegistryProtocolError(
                    f"{what}: refusing a redirect to {refused}", endpoint=self.endpoint, repository=repository
                ) from None
            response = self._urlopen("GET", destination, {}, None, deadline, what, repository, stream=True)
        self._expect(response, (200,), what, repository, missing=("blob", digest))
        return BlobStream(response, digest, endpoint=self.endpoint, repository=repository)

    def _destination(
        self, url: str, listed: tuple[str, ...] | None, key: str, trust_own_host: bool
    ) -> egress.Destination:
        """`url`, chosen by the registry, judged by egress.py's rules (EgressRefused if it may not be contacted)."""
        own = urllib.parse.urlsplit(self.endpoint).hostname if trust_own_host else None
        return egress.check_destination(
            url, insecure=self.insecure, listed=listed, key=key, trusted_host=own, resolve=self._resolve
        )

    def _realm(self, url: str) -> egress.Destination:
        """A token realm the registry named, judged like a redirect (its own host name trusted, `tokenHosts` listed)."""
        return self._destination(url, self.token_hosts, "tokenHosts", trust_own_host=True)

    def mount_blob(self, repository: str, digest: str, from_repository: str) -> bool:
        """Link blob `digest` from another repository of this registry without copying; False if not offered."""
        what = f"mount blob {digest} from {from_repository}"
        path = f"/v2/{repository}/blobs/uploads/?" + urllib.parse.urlencode({"mount": digest, "from": from_repository})
        response = self._send("POST", path, what, repository, _push(repository) + _pull(from_repository))
        self._expect(response, (201, 202), what, repository)
        self._read_body(response, MAX_LISTING_BYTES, what, repository)
        if response.status == 201:
            return True
        self._abandon(self._location(response, what, repository), repository)
        return False

    def upload_blob(self, repository: str, digest: str, size: int, chunks: Iterable[bytes]) -> None:
        """Upload a blob streamed from `chunks`: one monolithic PUT, or chunked PATCHes if the registry refuses it.

        The PATCH fallback reads `chunks` again, so pass a re-iterable (a list, or an object whose __iter__
        starts over) to let it run at once; with a one-shot iterator the refusal raises, and the next
        upload through this client goes straight to PATCH. On any failure the upload session is cancelled
        (DELETE, best effort: the registry's own upload purging reclaims one it will not cancel) and the
        error raised; an error of the data source itself is raised as it was, not as a registry error.
        """
        what = f"upload blob {digest}"
        if not self._chunked_uploads_only:
            body = UploadBody(chunks, size, digest)
            location = self._start_upload(repository, what)
            with self._cancel_on_failure(location, repository, body):
                response = self._send(
                    "PUT",
                    _with_query(location, digest=digest),
                    what,
                    repository,
                    _push(repository),
                    headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)},
                    body=iter(body),
                    replayable=False,
                )
                if response.status not in _MONOLITHIC_REFUSED:
                    self._finish_upload(response, digest, what, repository)
                    return
                self._read_body(response, MAX_LISTING_BYTES, what, repository)
            self._abandon(location, repository)
            self._chunked_uploads_only = True
            if iter(chunks) is chunks:
                raise RegistryProtocolError(
                    f"{what}: the registry refused a monolithic upload (HTTP {response.status}) and the data cannot "
                    "be read twice; retry: this client now uploads in chunks",
                    endpoint=self.endpoint,
                    repository=repository,
                )
        body = UploadBody(chunks, size, digest)
        location = self._start_upload(repository, what)
        with self._cancel_on_failure(location, repository, body):
            self._upload_chunked(location, repository, digest, size, body, what)

    @contextlib.contextmanager
    def _cancel_on_failure(self, location: str, repository: str, body: UploadBody) -> Iterator[None]:
        """Cancel the upload session if the block fails, then raise (the data source's own error if it failed)."""
        try:
            yield
        except BaseException as err:
            self._abandon(location, repository)
            if body.error is not None and err is not body.error:
                raise body.error from None
            raise

    def _start_upload(self, repository: str, what: str) -> str:
        response = self._send("POST", f"/v2/{repository}/blobs/uploads/", what, repository, _push(repository))
        self._expect(response, (202,), what, repository)
        self._read_body(response, MAX_LISTING_BYTES, what, repository)
        return self._location(response, what, repository)

    def _upload_chunked(
        self, location: str, repository: str, digest: str, size: int, body: UploadBody, what: str
    ) -> None:
        source = iter(body)
        leftover = b""
        for start in range(0, size, PATCH_BYTES):
            length = min(PATCH_BYTES, size - start)
            part = UploadPart(source, leftover, length)
            response = self._send(
                "PATCH",
                location,
                what,
                repository,
                _push(repository),
                body=iter(part),
                replayable=False,
                headers={
                    "Content-Type": "application/octet-stream",
                    "Content-Length": str(length),
                    "Content-Range": f"{start}-{start + length - 1}",
                },
            )
            self._expect(response, (202,), what, repository)
            self._read_body(response, MAX_LISTING_BYTES, what, repository)
            leftover = part.leftover
            location = self._location(response, what, repository)
        for _ in source:  # nothing may follow: UploadBody raises if the data runs past `size`
            pass
        response = self._send(
            "PUT",
            _with_query(location, digest=digest),
            what,
            repository,
            _push(repository),
            headers={"Content-Length": "0"},
            body=b"",
        )
        self._finish_upload(response, digest, what, repository)

    def _finish_upload(self, response: BaseHTTPResponse, digest: str, what: str, repository: str) -> None:
        self._expect(response, (201,), what, repository)
        self._read_body(response, MAX_LISTING_BYTES, what, repository)
        claimed = response.headers.get("Docker-Content-Digest")
        if claimed and claimed != digest:
            raise RegistryProtocolError(
                f"{what}: the registry stored the blob as {claimed}", endpoint=self.endpoint, repository=repository
            )

    def _abandon(self, location: str, repository: str) -> None:
        """Cancel an upload session, best effort: the registry also expires abandoned uploads on its own."""
        try:
            response = self._send("DELETE", location, "cancel upload", repository, _push(repository))
            self._read_body(response, MAX_LISTING_BYTES, "cancel upload", repository)
        except RegistryError:
            pass

    def _location(self, response: BaseHTTPResponse, what: str, repository: str) -> str:
        """The absolute upload URL from a Location header (relative or absolute), kept to our own origin."""
        location = response.headers.get("Location")
        if not location:
            raise RegistryProtocolError(
                f"{what}: the registry answered without an upload Location",
                endpoint=self.endpoint,
                repository=repository,
            )
        url = urllib.parse.urljoin(self.endpoint + "/", location)
        if _origin(url) != _origin(self.endpoint):
            raise RegistryProtocolError(
                f"{what}: the upload Location points at {_origin(url)[1]}, not the configured endpoint; "
                "refusing to send data and credentials there",
                endpoint=self.endpoint,
                repository=repository,
            )
        return url

    # -- listings -------------------------------------------------------------------------------------

    def list_tags(self, repository: str, page_size: int = 1000) -> list[str]:
        """Every tag of `repository`, following Link pagination."""
        return self._paginate(f"/v2/{repository}/tags/list", "tags", repository, _pull(repository), page_size)

    def catalog(self, page_size: int = 1000) -> list[str]:
        """Every repository of the registry, following Link pagination (needs catalog access)."""
        return self._paginate("/v2/_catalog", "repositories", None, ("registry:catalog:*",), page_size)

    def _paginate(
        self, path: str, key: str, repository: str | None, scopes: tuple[str, ...], page_size: int
    ) -> list[str]:
        what = f"list {key}"
        url: str | None = f"{self.endpoint}{path}?n={page_size}"
        items: list[str] = []
        while url:
            response = self._send("GET", url, what, repository, scopes)
            self._expect(response, (200,), what, repository, missing=("repository", repository or "catalog"))
            body = self._read_body(response, MAX_LISTING_BYTES, what, repository)
            try:
                page = json.loads(body).get(key) or []
            except (ValueError, AttributeError):
                raise RegistryProtocolError(
                    f"{what}: the answer is not a JSON listing", endpoint=self.endpoint, repository=repository
                ) from None
            items.extend(page)
            link = _NEXT_LINK.search(response.headers.get("Link", ""))
            url = urllib.parse.urljoin(url, link.group(1)) if link else None
            if url and _origin(url) != _origin(self.endpoint):
                raise RegistryProtocolError(
                    f"{what}: the next page is on another host", endpoint=self.endpoint, repository=repository
                )
        return items

    # -- transport ------------------------------------------------------------------------------------

    def _send(
        self,
        method: str,
        path_or_url: str,
        what: str,
        repository: str | None,
        scopes: tuple[str, ...],
        *,
        headers: Mapping[str, str] | None = None,
        body: bytes | Iterable[bytes] | None = None,
        deadline: float | None = None,
        stream: bool = False,
        replayable: bool = True,
    ) -> BaseHTTPResponse:
        """One request to the registry with our Authorization; on a 401 answer the challenge and retry once."""
        url = path_or_url if "://" in path_or_url else self.endpoint + path_or_url
        authorization = self._auth.authorization(scopes, repository, deadline)
        response = self._urlopen(
            method, url, _authorized(headers, authorization), body, deadline, what, repository, stream
        )
        if response.status != 401 or not replayable:
            return response
        challenge = response.headers.get("WWW-Authenticate")
        self._read_body(response, MAX_LISTING_BYTES, what, repository)
        authorization = self._auth.answer(challenge, scopes, repository, deadline, refused=authorization)
        return self._urlopen(method, url, _authorized(headers, authorization), body, deadline, what, repository, stream)

    def _urlopen(
        self,
        method: str,
        url: str | egress.Destination,
        headers: Mapping[str, str],
        body: bytes | Iterable[bytes] | None,
        deadline: float | None,
        what: str,
        repository: str | None,
        stream: bool = False,
    ) -> BaseHTTPResponse:
        """One HTTP exchange, no redirects, no retries, done by `deadline` however slowly the server sends;
        connection failures become RegistryUnavailable. A Destination is connected to by its checked addresses."""
        timeout = urllib3.Timeout(connect=self.connect_timeout, read=self.read_timeout)
        pool_timeout = None
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise RegistryUnavailable(
                    f"{what}: the caller's deadline passed", endpoint=self.endpoint, repository=repository
                )
            timeout = urllib3.Timeout(
                connect=min(self.connect_timeout, remaining), read=min(self.read_timeout, remaining), total=remaining
            )
            pool_timeout = remaining
        options: dict[str, Any] = {
            "body": body,
            "timeout": timeout,
            "retries": False,
            "redirect": False,
            "preload_content": False,
            "decode_content": not stream,
            "pool_timeout": pool_timeout,
        }
        try:
            with deadline_scope(deadline):
                if isinstance(url, egress.Destination) and url.addresses:
                    response = self._pinned(method, url, headers, options)
                else:
                    target = url.url if isinstance(url, egress.Destination) else url
                    response = self._pool.request(method, target, headers=dict(headers), **options)
        except (urllib3.exceptions.HTTPError, OSError) as err:
            raise RegistryUnavailable(
                f"{what}: {self._describe(err, deadline)}", endpoint=self.endpoint, repository=repository
            ) from None
        self._check_in_time(response, deadline, what, repository)
        return response

    def _pinned(
        self, method: str, destination: egress.Destination, headers: Mapping[str, str], options: dict[str, Any]
    ) -> BaseHTTPResponse:
        """Connect to the checked addresses in turn (never to the name again), with the name for Host and TLS."""
        pool_kwargs = {"server_hostname": destination.host} if destination.scheme == "https" else None
        sent = {**self._pool.headers, **headers, "Host": destination.netloc}
        failure: Exception | None = None
        for address in destination.addresses:
            pool = self._pool.connection_from_host(
                address, destination.port, destination.scheme, pool_kwargs=pool_kwargs
            )
            try:
                return pool.urlopen(method, destination.request_uri, headers=sent, assert_same_host=False, **options)
            except (urllib3.exceptions.NewConnectionError, urllib3.exceptions.ConnectTimeoutError) as err:
                failure = err
        assert failure is not None
        raise failure

    def _check_in_time(
        self, response: BaseHTTPResponse, deadline: float | None, what: str, repository: str | None
    ) -> None:
        """Refuse what arrived past the deadline: the watchdog cut it, and cut headers or bodies can look whole."""
        if deadline is not None and time.monotonic() >= deadline:
            release(response, complete=False)
            raise RegistryUnavailable(
                f"{what}: {self._describe(None, deadline)}", endpoint=self.endpoint, repository=repository
            )

    def _describe(self, err: BaseException | None, deadline: float | None) -> str:
        """A transport failure in words; one the deadline watchdog caused says so, not 'connection dropped'."""
        if err is None or (deadline is not None and time.monotonic() >= deadline):
            return "no complete answer before the deadline (the registry sends too slowly or not at all)"
        return describe_transport_error(err)

    def _exchange(
        self,
        method: str,
        destination: egress.Destination,
        headers: dict[str, str],
        body: bytes | None,
        deadline: float | None,
        repository: str | None,
    ) -> tuple[int, Mapping[str, str], bytes]:
        """A token request for the Authenticator, to a judged realm: no redirects followed, the body read in full."""
        response = self._urlopen(method, destination, headers, body, deadline, "token request", repository)
        return (
            response.status,
            response.headers,
            self._read_body(response, MAX_LISTING_BYTES, "token request", repository, deadline=deadline),
        )

    def _read_body(
        self,
        response: BaseHTTPResponse,
        limit: int,
        what: str,
        repository: str | None,
        complete: bool = True,
        deadline: float | None = None,
    ) -> bytes:
        """The whole body (at most `limit` bytes) and the connection back to the pool; `complete=False` discards it."""
        if not complete:
            release(response, complete=False)
            return b""
        parts: list[bytes] = []
        received = 0
        try:
            while received <= limit:
                data = response.read(min(65536, limit + 1 - received) or 1)
                if not data:
                    self._check_in_time(response, deadline, what, repository)
                    release(response, complete=True)
                    return b"".join(parts)
                parts.append(data)
                received += len(data)
        except (urllib3.exceptions.HTTPError, OSError) as err:
            release(response, complete=False)
            raise RegistryUnavailable(
                f"{what}: {self._describe(err, deadline)}", endpoint=self.endpoint, repository=repository
            ) from None
        release(response, complete=False)
        raise RegistryProtocolError(
            f"{what}: the answer is larger than {limit} bytes", endpoint=self.endpoint, repository=repository
        )

    def _expect(
        self,
        response: BaseHTTPResponse,
        statuses: tuple[int, ...],
        what: str,
        repository: str | None,
        missing: tuple[str, str] | None = None,
    ) -> None:
        """Raise the error an unexpected status means, with the registry's error codes (credentials masked)."""
        if response.status in statuses:
            return
        if 300 <= response.status < 400:
            target = _origin(urllib.parse.urljoin(self.endpoint + "/", response.headers.get("Location", "")))[1]
            self._read_body(response, 0, what, repository, complete=False)
            raise RegistryProtocolError(
                f"{what}: unexpected redirect to {target}, not followed", endpoint=self.endpoint, repository=repository
            )
        try:
            body = self._read_body(response, 65536, what, repository)
        except RegistryProtocolError:
            body = b""
        raise error_for_status(
            response.status,
            response.headers,
            body,
            what,
            endpoint=self.endpoint,
            repository=repository,
            missing=missing,
            redact=self._auth.redact,
        )


def _authorized(headers: Mapping[str, str] | None, authorization: str | None) -> dict[str, str]:
    merged = dict(headers or {})
    if authorization:
        merged["Authorization"] = authorization
    return merged


class Registries:
    """The registry clients of one configuration, created once: the CCR, and each configured upstream only."""

    def __init__(self, config: Config, through_front: bool | None = None) -> None:
        """`through_front`: whether copies read through the CCR front (default: `config.reads_through_front`); the
        front itself and the node agent's fallback never do."""
        resolver = config.resolver

        def client(
            endpoint: str,
            credentials: str | None,
            insecure: bool,
            ca_file: str | None,
            redirect_hosts: tuple[str, ...] | None = None,
            token_hosts: tuple[str, ...] | None = None,
        ) -> RegistryClient:
            return RegistryClient(
                endpoint,
                credentials=credentials,
                insecure=insecure,
                ca_file=ca_file,
                connect_timeout=resolver.connect_timeout_seconds,
                read_timeout=resolver.read_timeout_seconds,
                max_connections=resolver.max_concurrency,
                redirect_hosts=redirect_hosts,
                token_hosts=token_hosts,
            )

        ccr = config.ccr
        self.ccr = client(ccr.endpoint, ccr.credentials, ccr.insecure, ccr.ca_file, ccr.redirect_hosts)
        # What nodes pull from (the CCR front), with the CCR's account and CA, when the warmer reads through it.
        self.front = (
            client(
                f"{'http' if ccr.insecure else 'https'}://{ccr.registry}", ccr.credentials, ccr.insecure, ccr.ca_file
            )
            if (config.reads_through_front if through_front is None else through_front)
            else None
        )
        self._upstreams = {
            up.registry: client(up.endpoint, up.credentials, up.insecure, up.ca_file, up.redirect_hosts, up.token_hosts)
            for up in config.upstreams
        }

    def upstream(self, registry: str) -> RegistryClient:
        """The client of configured upstream `registry`; any other host raises RegistryNotAllowed."""
        found = self._upstreams.get(registry.lower())
        if found is None:
            allowed = ", ".join(sorted(self._upstreams)) or "none"
            raise RegistryNotAllowed(
                f"registry {registry!r} is not a configured upstream, so ccr-webhook does not contact it "
                f"(configured: {allowed}); add it under `upstreams` to allow it"
            )
        return found

    def close(self) -> None:
        """Close every client's connections."""
        for client in (self.ccr, self.front, *self._upstreams.values()):
            if client is not None:
                client.close()
