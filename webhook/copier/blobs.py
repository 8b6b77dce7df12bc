"""Bring one blob into a target repository: skip it if it is there, mount it from a sibling, else stream it over.

The stream goes from the source registry's download straight into the target's upload, one chunk at a
time, and is sha256-checked on the way. The last chunk is held back until the digest has been checked, so
a blob whose bytes do not match never reaches the target whole: the upload is broken off and cancelled
(and the target, told the digest up front, would refuse it anyway). A download that falls below its
MinimumRate fails and is not tried again at once: the copy fails, freeing its worker, and the warm queue
tries it again later.
"""

from __future__ import annotations

import enum
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from webhook.copier.retry import RetryPolicy
from webhook.errors import CCRWebhookError
from webhook.registry.client import RegistryClient
from webhook.registry.errors import RegistryAuthError, RegistryProtocolError, RegistryServerError
from webhook.registry.oci import Descriptor
from webhook.registry.streams import BlobStream, MinimumRate

MAX_MOUNT_SOURCES = 4  # each refused mount costs a POST and a DELETE


class BlobOutcome(str, enum.Enum):
    """How a blob reached the target repository."""

    SKIPPED = "skipped"  # it was there already
    MOUNTED = "mounted"  # linked from another repository of the same registry, no bytes moved
    COPIED = "copied"  # streamed from the source


class CopyAborted(CCRWebhookError):
    """Another part of the copy failed, so this blob's transfer stopped early."""


class BlobLocations:
    """Which repository of a registry is known to hold a blob: a small thread-safe LRU that makes mounts possible."""

    def __init__(self, capacity: int = 4096) -> None:
        self._capacity = capacity
        self._entries: OrderedDict[tuple[str, str], str] = OrderedDict()
        self._lock = threading.Lock()

    def remember(self, endpoint: str, digest: str, repository: str) -> None:
        """Note that `repository` at `endpoint` holds blob `digest`."""
        with self._lock:
            self._entries[(endpoint, digest)] = repository
            self._entries.move_to_end((endpoint, digest))
            while len(self._entries) > self._capacity:
                self._entries.popitem(last=False)

    def find(self, endpoint: str, digest: str) -> str | None:
        """A repository at `endpoint` last seen holding `digest`, if any."""
        with self._lock:
            return self._entries.get((endpoint, digest))


class VerifiedBlob:
    """A source blob as a re-iterable upload body: each pass opens the download afresh and checks its digest.

    `on_bytes(sent)` hears how many bytes this pass has yielded so far (a new pass starts again from 0);
    `stop` set breaks the pass off with CopyAborted; `pace` (if given) holds each download to a minimum rate.
    """

    def __init__(
        self,
        source: RegistryClient,
        repository: str,
        blob: Descriptor,
        *,
        stop: threading.Event,
        on_bytes: Callable[[int], None],
        pace: MinimumRate | None = None,
    ) -> None:
        self._source, self._repository, self._blob = source, repository, blob
        self._stop, self._on_bytes, self._pace = stop, on_bytes, pace

    def __iter__(self) -> Iterator[bytes]:
        with self._source.open_blob(self._repository, self._blob.digest) as stream:
            if self._pace is not None:
                stream.hold_to(self._pace)
            self._check_size(stream)
            sent = 0
            self._on_bytes(sent)
            pending = stream.read()
            while pending:
                following = stream.read()  # at the end of the stream this checks the digest, before `pending` goes out
                if self._stop.is_set():
                    raise CopyAborted(f"blob {self._blob.digest}: stopped, another part of the copy failed")
                yield pending
                sent += len(pending)
                self._on_bytes(sent)
                pending = following

    def _check_size(self, stream: BlobStream) -> None:
        if stream.size is not None and stream.size != self._blob.size:
            raise RegistryProtocolError(
                f"blob {self._blob.digest}: the registry serves {stream.size} bytes, "
                f"the manifest says {self._blob.size}",
                endpoint=self._source.endpoint,
                repository=self._repository,
            )


@dataclass
class BlobCopier:
    """Copies blobs from one repository to another, each as one retried step; shared by the copy's threads."""

    source: RegistryClient
    source_repository: str
    target: RegistryClient
    target_repository: str
    locations: BlobLocations
    known_repositories: tuple[str, ...] = ()
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    stop: threading.Event = field(default_factory=threading.Event)
    pace: MinimumRate | None = None

    def copy(self, blob: Descriptor, on_bytes: Callable[[int], None]) -> BlobOutcome:
        """Make `blob` present in the target repository, by the cheapest way that works."""
        outcome = self.retry.run(lambda: self._copy_once(blob, on_bytes), self.stop)
        self.locations.remember(self.target.endpoint, blob.digest, self.target_repository)
        return outcome

    def _copy_once(self, blob: Descriptor, on_bytes: Callable[[int], None]) -> BlobOutcome:
        if self._held(blob.digest):
            return BlobOutcome.SKIPPED
        if self._mount(blob.digest):
            return BlobOutcome.MOUNTED
        body = VerifiedBlob(
            self.source, self.source_repository, blob, stop=self.stop, on_bytes=on_bytes, pace=self.pace
        )
        self.target.upload_blob(self.target_repository, blob.digest, blob.size, body)
        return BlobOutcome.COPIED

    def _held(self, digest: str) -> bool:
        """Whether the target holds `digest`. One it cannot even stat (a 5xx: the distribution registry answers so
        for a blob whose link a full disk left half-written) counts as absent, so the upload writes it anew."""
        try:
            return self.target.blob_size(self.target_repository, digest) is not None
        except RegistryServerError:
            return False

    def _mount(self, digest: str) -> bool:
        """Mount `digest` from a repository known to hold it (this process's copies first); False if none would."""
        last_seen = self.locations.find(self.target.endpoint, digest)
        candidates = dict.fromkeys(
            name for name in (last_seen, *self.known_repositories) if name and name != self.target_repository
        )
        for repository in list(candidates)[:MAX_MOUNT_SOURCES]:
            try:
                if self.target.mount_blob(self.target_repository, digest, repository):
                    return True
            except RegistryAuthError:  # no pull access to that repository: try the next, or upload
                continue
        return False
