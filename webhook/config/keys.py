"""Every configuration key, declared once: YAML name, type, default, bounds, check and the line the docs show.

A section is a frozen dataclass; each field is a key made by `key()`. `cross_checks` holds the rules that
involve several keys of a section (each raises checks.Invalid naming the key at fault).
"""

from __future__ import annotations

import enum
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from webhook.config import checks
from webhook.config.declare import CrossChecks, key

DEFAULT_LEASE_NAMESPACE = "ccr-system"


class SwapMode(str, enum.Enum):
    """When an image is rewritten to the CCR."""

    EXISTS = "exists"  # only when the CCR already holds the digest; upstream is the fallback while it does not
    ALWAYS = "always"  # always: the CCR front streams a cold image to the nodes as it fetches it (the default)


class CopyMode(str, enum.Enum):
    """How an image the CCR lacks gets there."""

    DELAYED = "delayed"  # warm in the background; admission does not wait
    FORCE = "force"  # admission waits for the warm within its deadline
    NONE = "none"  # never copy


class OnResolveError(str, enum.Enum):
    """What admission does when a tag cannot be resolved to a digest in time."""

    ALLOW = "allow"  # admit the image unpinned, with a warning
    DENY = "deny"  # refuse the Pod


def _registry_endpoint(section: Mapping[str, Any]) -> str:
    """`https://<registry>`, `http://` when insecure; Docker Hub's API lives at registry-1.docker.io."""
    if section["registry"] == "docker.io" and not section["insecure"]:
        return "https://registry-1.docker.io"
    return f"{'http' if section['insecure'] else 'https'}://{section['registry']}"


def _prefix_from_registry(section: Mapping[str, Any]) -> str:
    """The registry name as a repository path: `reg.local:5000` is `reg.local-5000`."""
    return str(section["registry"]).replace(":", "-").strip("[]")


def _token_hosts_default(section: Mapping[str, Any]) -> tuple[str, ...] | None:
    """Docker Hub's token service lives on its own host; every other registry's is trusted on the registry's."""
    return ("auth.docker.io",) if section["registry"] == "docker.io" else None


def _plain_http_needs_insecure(registry: CCRConfig | UpstreamConfig) -> None:
    """A plain-HTTP endpoint is allowed only where the operator said so."""
    if registry.endpoint.startswith("http://") and not registry.insecure:
        raise checks.Invalid(
            f"{registry.endpoint!r} is plain HTTP; set insecure: true to allow it (tests and demos only)", "endpoint"
        )


@dataclass(frozen=True)
class CCRConfig:
    """The Cluster Container Registry: where nodes pull from, and how ccr-webhook reaches it."""

    registry: str = key(
        doc="The CCR as nodes pull from it, its front: `ccr.ccr-system.svc:5000`. Images are rewritten to "
        "`<registry>/<upstream prefix>/<repository>@<digest>`.",
        check=checks.registry_host,
    )
    endpoint: str = key(
        doc="How ccr-webhook reaches the CCR's registry itself, behind the front (`http://ccr.ccr-system.svc:5002` "
        "in base, `https://ccr-push.ccr-system.svc:5000` in production; the front's own container overrides it "
        "with the registry of its Pod, `http://127.0.0.1:5002`).",
        derive=_registry_endpoint,
        check=checks.endpoint_url,
        shown="`https://<registry>`",
    )
    insecure: bool = key(False, doc="Allow plain HTTP to the CCR (the evaluation install).")
    credentials: str | None = key(None, doc="A docker config.json holding the CCR account (see below).")
    ca_file: str | None = key(
        None,
        doc="A PEM CA bundle to trust for the CCR instead of the system CAs (see below).",
        shown="none (the system CAs)",
    )
    redirect_hosts: tuple[str, ...] | None = key(
        None,
        doc="The storage hosts the CCR registry may redirect its own blob downloads to (S3 with "
        "`storage.redirect` on): names or globs, judged like an upstream's. The front passes such a redirect "
        "on to the nodes unchanged; ccr-webhook follows it when it copies or commits.",
        check=checks.host_patterns,
        shown="none (any name resolving to public addresses)",
    )

    cross_checks: ClassVar[CrossChecks] = (_plain_http_needs_insecure,)


@dataclass(frozen=True)
class UpstreamConfig:
    """A registry ccr-webhook may contact and mirror; no other registry is ever contacted."""

    registry: str = key(
        doc="`docker.io`, `ghcr.io`, `registry.example.com:5000`... (`index.docker.io` is read as `docker.io`).",
        check=checks.upstream_host,
    )
    endpoint: str = key(
        doc="Where it is reached.",
        derive=_registry_endpoint,
        check=checks.endpoint_url,
        shown="`https://<registry>` (`https://registry-1.docker.io` for Docker Hub)",
    )
    prefix: str = key(
        doc="The path under which its images live in the CCR; prefixes of two upstreams may not overlap.",
        derive=_prefix_from_registry,
        check=checks.repository_prefix,
        shown="the registry name (`:` as `-`)",
    )
    credentials: str | None = key(None, doc="A docker config.json holding the account for this registry.")
    insecure: bool = key(False, doc="Allow plain HTTP to this registry (tests and demos only).")
    ca_file: str | None = key(
        None,
        doc="A PEM CA bundle to trust for this registry instead of the system CAs.",
        shown="none (the system CAs)",
    )
    redirect_hosts: tuple[str, ...] | None = key(
        None,
        doc="The storage hosts its blob downloads may be redirected to: names or globs "
        "(`*.cloudflare.docker.com`). See below.",
        check=checks.host_patterns,
        shown="none (any name resolving to public addresses)",
    )
    token_hosts: tuple[str, ...] | None = key(
        None,
        derive=_token_hosts_default,
        doc="Token services (Bearer realms) on hosts other than the registry's own that may be sent its "
        "credentials: names or globs. See below.",
        check=checks.host_patterns,
        shown='none (`["auth.docker.io"]` for docker.io)',
    )

    cross_checks: ClassVar[CrossChecks] = (_plain_http_needs_insecure,)


@dataclass(frozen=True)
class VerifyRule:
    """Images that are admitted only with a cosign signature by one of the listed keys over the digest they pin."""

    images: tuple[str, ...] = key(
        doc="Globs matched like `policy.exclude`, against the upstream image (`ghcr.io/acme/*`) or its name "
        "without tag; a CCR image is matched as the upstream image it mirrors.",
        check=checks.not_empty,
    )
    keys: tuple[str, ...] = key(
        doc="Public keys (ECDSA P-256/384/521, Ed25519, RSA): each a PEM file (`cosign.pub`) or the PEM text itself. "
        "A signature by any one of them is enough.",
        check=checks.public_keys,
    )


@dataclass(frozen=True)
class PolicyConfig:
    """What admission does with each image."""

    reject_latest: bool = key(True, doc="Deny `:latest` and untagged images.")
    pin_digest: bool = key(True, doc="Pin every image to the digest its tag has now.")
    swap: SwapMode = key(
        SwapMode.ALWAYS,
        doc="`always`: rewrite to the CCR at once; the CCR front streams an image it lacks to the nodes while it "
        "fetches it from upstream (once per cluster). `exists`: rewrite only once the CCR holds the digest, pulling "
        "from upstream until then (the fallback for clusters that want upstream when the CCR is down; "
        "[operations.md](operations.md#swap-always-or-exists)). Under both the CCR is asked (unless `copy: none`), "
        "and an image it lacks gets an admission warning.",
    )
    copy: CopyMode = key(
        CopyMode.DELAYED,
        doc="`delayed`: warm in the background; `force`: admission waits (within its deadline); `none`.",
    )
    exclude: tuple[str, ...] = key((), doc="Images left alone.")
    on_resolve_error: OnResolveError = key(
        OnResolveError.ALLOW,
        doc="When a tag cannot be resolved in time: `allow` (admit unpinned, with a warning) or `deny`.",
    )
    verify: tuple[VerifyRule, ...] = key(
        (),
        doc="Content trust: rules (keys below) naming images that need a valid cosign signature by a configured key "
        "over the exact digest admitted; the first rule whose `images` match applies. Enforce denies an image "
        "without one, dry-run warns ([operations.md](operations.md#content-trust)).",
    )


def _share_within_pool(resolver: ResolverConfig) -> None:
    """One registry's share of the lookup threads cannot exceed the threads there are."""
    if resolver.max_concurrency_per_registry > resolver.max_concurrency:
        raise checks.Invalid(
            f"{resolver.max_concurrency_per_registry} is above maxConcurrency ({resolver.max_concurrency})",
            "maxConcurrencyPerRegistry",
        )


@dataclass(frozen=True)
class ResolverConfig:
    """How long registry answers are trusted, and how hard the registries are asked."""

    cache_seconds: float = key(300.0, minimum=0, doc="How long a tag's digest from an upstream is trusted.")
    ccr_cache_seconds: float = key(
        30.0,
        minimum=0,
        doc="How long the CCR's answer (holds the digest or not) is trusted; also bounds how long a webhook "
        "replica may still rewrite to an image retention just evicted.",
    )
    negative_cache_seconds: float = key(
        5.0,
        minimum=0,
        doc="How long a failed lookup, or the CCR lacking a digest, is remembered (a registry's "
        "`Retry-After`, up to `cacheSeconds`, wins if longer).",
    )
    connect_timeout_seconds: float = key(1.0, minimum=0.01, doc="Connecting to a registry.")
    read_timeout_seconds: float = key(5.0, minimum=0.01, doc="Waiting for each piece of a registry's answer.")
    lookup_timeout_seconds: float = key(
        10.0,
        minimum=0.1,
        doc="The whole of one registry lookup (token, HEAD, a GET fallback), however slowly the registry sends; "
        "a lookup still running after admission's deadline fills the cache until then.",
    )
    max_concurrency: int = key(
        16, minimum=1, doc="Registry lookups at once per process, and connections kept per registry."
    )
    max_concurrency_per_registry: int = key(
        8,
        minimum=1,
        derive=lambda section: max(1, section["max_concurrency"] // 2),
        shown="half of `maxConcurrency`",
        doc="Lookups at once for one upstream (or the CCR); more wait in that registry's own queue, so one slow "
        "upstream cannot take every thread. At most `maxConcurrency`.",
    )

    cross_checks: ClassVar[CrossChecks] = (_share_within_pool,)


def _tls_pair(server: WebhookConfig | FrontConfig) -> None:
    """A certificate without its key (or the reverse) cannot serve."""
    if (server.tls_cert is None) != (server.tls_key is None):
        raise checks.Invalid("tlsCert and tlsKey go together; set both or neither")


@dataclass(frozen=True)
class WebhookConfig:
    """The admission server."""

    deadline_seconds: float = key(
        2.0,
        minimum=0.1,
        check=checks.below_webhook_limit,
        doc="The server answers within this; must stay below the webhook configuration's `timeoutSeconds` (5).",
    )
    listen: str = key("0.0.0.0:8443", check=checks.listen_address, doc="Where the HTTPS server listens.")
    tls_cert: str | None = key(None, doc="The serving certificate (PEM); reloaded when the file changes.")
    tls_key: str | None = key(None, doc="Its private key (PEM); set both or neither.")
    workers: int = key(2, minimum=1, doc="gunicorn worker processes.")
    max_request_bytes: int = key(
        3 * 1024 * 1024, minimum=1024, doc="The largest AdmissionReview body accepted; a larger one is answered 413."
    )
    warmer_url: str | None = key(
        "http://127.0.0.1:8081",
        check=checks.none_if_empty,
        doc="Where the webhook hints the warmer sidecar (its `warmer.listen`). Empty: no hints "
        "(the Pod watch still finds every image).",
    )

    cross_checks: ClassVar[CrossChecks] = (_tls_pair,)


def _backoff_ordered(warmer: WarmerConfig) -> None:
    """The longest wait between retries cannot be shorter than the first."""
    if warmer.backoff_max_seconds < warmer.backoff_seconds:
        raise checks.Invalid(
            f"{warmer.backoff_max_seconds} is below backoffSeconds ({warmer.backoff_seconds})", "backoffMaxSeconds"
        )


@dataclass(frozen=True)
class WarmerConfig:
    """The warmer sidecar: where it listens, how hard it copies, which Pods it watches, how it reports."""

    listen: str = key(
        "127.0.0.1:8081",
        check=checks.listen_address,
        doc="The warmer's hint port. It answers loopback clients only.",
    )
    metrics_listen: str = key(
        "0.0.0.0:9102",
        check=checks.listen_address,
        doc="`/metrics`, `/healthz` (every loop of the warmer runs) and `/readyz`.",
    )
    concurrency: int = key(2, minimum=1, doc="Images copied at once (each copy moves up to 4 blobs at once).")
    max_attempts: int = key(
        5, minimum=1, doc="Copy attempts per image before it is reported failed (the next resync tries again)."
    )
    backoff_seconds: float = key(2.0, minimum=0, doc="Wait before a retry, doubled each time up to the maximum.")
    backoff_max_seconds: float = key(
        300.0,
        minimum=0,
        doc="The longest wait between retries. A registry's `Retry-After` wins if longer, but never past this: "
        "a registry asking for days parks nothing for days.",
    )
    warm_dry_run_namespaces: bool = key(
        False,
        doc="Also warm the images of namespaces labelled `dry-run` (hints and the Pod watch), to fill the CCR "
        "before switching a namespace to `enforce`.",
    )
    namespace_label: str = key(
        "ccr-webhook/policy",
        check=checks.label_key,
        doc="The namespace label whose value (`enforce`, `dry-run`) says which Pods the warmer watches.",
    )
    resync_seconds: float = key(
        600.0,
        minimum=1,
        doc="How often the Pod watch lists every Pod again, retrying images whose copy failed or whose tag "
        "could not be resolved.",
    )
    lease_name: str = key(
        "ccr-webhook-warmer",
        check=checks.kubernetes_name,
        doc="The coordination.k8s.io Lease that elects the one replica running the Pod watch.",
    )
    lease_namespace: str = key(
        DEFAULT_LEASE_NAMESPACE,
        check=checks.kubernetes_name,
        from_env="POD_NAMESPACE",
        doc="The namespace of that Lease.",
    )
    lease_seconds: float = key(
        15.0,
        minimum=1,
        doc="Lease duration: a dead leader is replaced after at most this long; one that cannot renew for 2/3 "
        "of it stops watching first.",
    )
    event_interval_seconds: float = key(
        300.0,
        minimum=0,
        doc="At most one Event per image and reason (`CCRWarmStarted`, `CCRWarmFinished`, `CCRWarmFailed`) "
        "in this time (`CCRWarmProgress`: one every 10 s)...",
    )
    event_pods_per_image: int = key(
        5, minimum=0, doc="...posted on at most this many of the Pods that use the image (`0`: no Events)."
    )
    through_front: bool | None = key(
        None,
        shown="auto: `true` when `ccr.registry` (the front) is not `ccr.endpoint`'s host:port",
        doc="Read the images it warms through the CCR front (`ccr.registry`, with `ccr.credentials` and "
        "`ccr.caFile`) instead of from their upstream, so the warm and the nodes share the front's one fetch: one "
        "WAN copy per image. Unset, it is on whenever nodes pull from somewhere else than where the warmer writes "
        "(a front is deployed); `false` to read from upstream anyway.",
    )

    cross_checks: ClassVar[CrossChecks] = (_backoff_ordered,)


@dataclass(frozen=True)
class CopyConfig:
    """Limits on copying one image (the warmer, `warm`, `copy`), so a hostile or broken upstream exhausts nothing."""

    max_index_children: int = key(
        256, minimum=1, doc="Manifests one index may list; a larger one is refused before any child is read."
    )
    max_manifest_bytes_per_image: int = key(
        16 * 1024 * 1024,
        minimum=1024,
        shown="`16777216` (16 MiB)",
        doc="The index and every manifest below it, together; the copy stops reading once past it.",
    )
    max_blobs_per_image: int = key(
        4096,
        minimum=1,
        doc="Distinct layers and configs over every platform of one image; checked before any blob is copied.",
    )
    minimum_rate_bytes: int = key(
        1024 * 1024,
        minimum=0,
        doc="Every blob download must bring at least this many bytes in every `minimumRateWindowSeconds` "
        "(`0`: no rate rule); a trickling upstream fails the copy, freeing its worker.",
    )
    minimum_rate_window_seconds: float = key(60.0, minimum=0.1, doc="The window of that rule.")
    blob_deadline_seconds: float = key(
        3600.0,
        minimum=1,
        doc="And every blob download finishes within this long, whatever its pace. Raise it for layers of "
        "many GB over slow links.",
    )


class RankBy(str, enum.Enum):
    """How a retention rule tells which images of a repository are the newest."""

    BUILD_TIME = "buildTime"  # the `created` time in the image's config
    SEMVER = "semver"  # the highest semantic version among its tags; images without one by build time, after


@dataclass(frozen=True)
class RetentionRule:
    """One retention rule: the repositories it covers, the tags it keeps forever, how many newest it keeps."""

    name: str | None = key(None, doc="What `gc --dry-run` and the logs call it (`releases`).")
    repositories: tuple[str, ...] = key(
        ("**",),
        check=checks.repository_globs,
        shown='`["**"]` (every repository)',
        doc="CCR repositories it covers, as globs (`docker.io/library/*`, `ghcr.io/acme/**`): `*` stays within "
        "one path segment, `**` crosses them. The first rule that covers a repository is the only one applied.",
    )
    keep: tuple[str, ...] = key(
        (),
        check=checks.tag_patterns,
        doc="Regular expressions matched against whole tags (`^v?[0-9]+$`, `stable`, `lts`): an image with a "
        "matching tag stays for as long as the tag points at it, even over `maxBytes`.",
    )
    keep_newest: int | None = key(
        None,
        minimum=0,
        shown="`retention.keepNewest`",
        doc="Images of each repository kept whatever their use (unless over `maxBytes`), newest first by `by`.",
    )
    by: RankBy = key(
        RankBy.BUILD_TIME,
        doc="`buildTime` (the `created` time in the image's config) or `semver`: the highest semantic version "
        "among its tags (`v1.2.3`, `1.2`, pre-releases below their release); images with no such tag rank "
        "after those with one, by build time.",
    )
    max_unused_age_seconds: float | None = key(
        None,
        name="maxUnusedAge",
        minimum=0,
        duration=True,
        shown="`retention.maxUnusedAge`",
        doc="How long no workload may have named an image before it goes.",
    )


@dataclass(frozen=True)
class RetentionConfig:
    """What the CCR keeps: images unused for `maxUnusedAge` go, the newest `keepNewest` per repository stay."""

    enabled: bool = key(
        False,
        shown="`false` (`true` in the shipped ConfigMap)",
        doc="Let the warmer's leader evict unused images from the CCR on a schedule "
        "([operations.md](operations.md#retention-keeping-the-ccr-lean)).",
    )
    max_unused_age_seconds: float = key(
        7 * 86400.0,
        name="maxUnusedAge",
        minimum=0,
        duration=True,
        shown="`168h`",
        doc="How long no workload may have named an image before it goes: seconds, or `90s`, `30m`, `168h`, `7d`.",
    )
    keep_newest: int = key(
        3,
        minimum=0,
        doc="Images kept per repository whatever their use (unless over `maxBytes`), newest first by the build "
        "time their configs state.",
    )
    dry_run: bool = key(False, doc="Log what would go; delete nothing.")
    interval_seconds: float = key(
        3600.0, name="interval", minimum=60, duration=True, shown="`1h`", doc="Time between runs."
    )
    rules: tuple[RetentionRule, ...] = key(
        (),
        doc="Rules tried in order for each repository; the first whose `repositories` cover it applies, and a "
        "repository no rule covers follows `keepNewest` and `maxUnusedAge` (the default rule). "
        "[operations.md](operations.md#retention-rules).",
    )
    max_bytes: int | None = key(
        None,
        minimum=0,
        shown="none (no budget)",
        doc="The storage budget: the unique blob bytes of the mirrored images. Above it, each run also evicts the "
        "least recently used images no workload uses (beyond `keepNewest` and `maxUnusedAge`, never a `keep` tag) "
        "until under; the CCR front refuses a cold blob that does not fit (507) "
        "([operations.md](operations.md#the-storage-budget)).",
    )


PEER_SPARE_CONNECTIONS = 8  # a peer's connections besides its fetches: joins' Flying-Only asks, health checks


def _peering_complete(front: FrontConfig) -> None:
    """Peering needs a membership source, its own address, the shared secret, and TLS set whole."""
    if not front.peering:
        return
    if front.peers and front.peer_service is not None:
        raise checks.Invalid("set peers or peerService, not both", "peerService")
    for name, value in (("peerAddress", front.peer_address), ("peerSecret", front.peer_secret)):
        if not value:
            raise checks.Invalid("is required when peers or peerService is set", name)
    if (front.peer_tls_cert is None) != (front.peer_tls_key is None):
        raise checks.Invalid("peerTlsCert and peerTlsKey go together; set both or neither", "peerTlsKey")
    if front.peer_tls_cert is not None and front.peer_ca_file is None:
        raise checks.Invalid("is required with peerTlsCert: peers are verified by it", "peerCaFile")
    if front.max_connections_per_address < front.max_concurrent_fetches + PEER_SPARE_CONNECTIONS:
        raise checks.Invalid(
            f"must be at least maxConcurrentFetches + {PEER_SPARE_CONNECTIONS} with peers: a replica streams each "
            "of its fetches from the owner on a connection of its own",
            "maxConnectionsPerAddress",
        )


@dataclass(frozen=True)
class FrontConfig:
    """The CCR front: the pull endpoint nodes reach as `ccr.registry`, filling misses from upstream once."""

    listen: str = key(
        "0.0.0.0:5000",
        check=checks.listen_address,
        doc="Where the front serves the pull API, `/metrics` and `/healthz`; nodes reach it as `ccr.registry`, "
        "and it reaches the CCR registry at `ccr.endpoint`.",
    )
    tls_cert: str | None = key(None, doc="The front's serving certificate (PEM); reloaded when the file changes.")
    tls_key: str | None = key(None, doc="Its private key (PEM); set both or neither. Neither: plain HTTP.")
    spool_dir: str = key(
        "/var/cache/ccr-front", doc="Where blobs being fetched from upstream are spooled; emptied at start."
    )
    spool_max_bytes: int = key(
        20 * 1024**3,
        minimum=1024**2,
        shown="`21474836480` (20 GiB)",
        doc="The spool's cap. A fetch that would not fit is refused with 503 and `Retry-After`.",
    )
    max_concurrent_fetches: int = key(
        8, minimum=1, doc="Upstream blob transfers at once; more wait for a slot (and their readers with them)."
    )
    fetch_deadline_seconds: float = key(
        3600.0, minimum=1, doc="One upstream blob transfer, start to verified end; past it the transfer is cut."
    )
    min_bytes_per_second: int = key(
        64 * 1024,
        minimum=0,
        doc="A transfer averaging less than this after its first 10 s is cut, and its readers fail (`0`: no minimum).",
    )
    peers: tuple[str, ...] = key(
        (),
        check=checks.peer_addresses,
        shown="none (no peers)",
        doc="The peer endpoints (`host:port`) of every front replica, this one included: a static membership "
        "(tests, the demo). Each blob digest has one owner among them, the only replica that fetches it upstream.",
    )
    peer_service: str | None = key(
        None,
        check=checks.kubernetes_name,
        doc="A headless Service selecting the front's own Pods: its EndpointSlices (ready addresses) are the "
        "membership, re-read every 10 s. Instead of `peers`.",
    )
    peer_namespace: str = key(
        DEFAULT_LEASE_NAMESPACE,
        check=checks.kubernetes_name,
        from_env="POD_NAMESPACE",
        doc="The namespace of `peerService`.",
    )
    peer_listen: str = key(
        "0.0.0.0:5003",
        check=checks.listen_address,
        doc="Where the peer endpoint listens (`GET /peer/v2/<repository>/blobs/<digest>`, other replicas only).",
    )
    peer_address: str | None = key(
        None,
        from_env="POD_IP",
        shown="`$POD_IP`",
        doc="This replica as its peers reach it: `host` (the port of `peerListen`) or `host:port`; it must be "
        "one of the members.",
    )
    peer_secret: str | None = key(
        None, doc="A file holding the secret every replica shares; a peer request without it is refused (401)."
    )
    peer_tls_cert: str | None = key(
        None,
        shown="none (plain HTTP: tests only)",
        doc="The peer endpoint's serving certificate (PEM), issued by `peerCaFile`; reloaded when it changes.",
    )
    peer_tls_key: str | None = key(None, doc="Its private key (PEM); set both or neither.")
    peer_ca_file: str | None = key(
        None, doc="The CA (PEM) that issued every replica's peer certificate; peers are trusted by it alone."
    )
    registry_storage_dir: str | None = key(
        None,
        shown="none (held blobs stream through the registry)",
        doc="The CCR registry's filesystem storage (its `storage.filesystem.rootdirectory`) as mounted in the "
        "front's container, read-only: a held blob the registry allows (asked as a HEAD) is sent from its file "
        "with sendfile(2). A blob not found there (another driver, S3) streams through the registry as before.",
    )
    head_timeout_seconds: float = key(
        10.0,
        minimum=1,
        maximum=120,
        doc="A connection's whole request head (TLS handshake included) must arrive within this, not per byte; "
        "a kept-alive connection's from its next request's first byte. Then it is closed (both ports).",
    )
    max_connections_per_address: int = key(
        64,
        minimum=1,
        maximum=65536,
        doc="Connections one client address may hold open on a port; further ones are closed at once while "
        "other addresses are served. Above what one node opens (a few per pull, the kubelet's probes); with "
        "peers at least `maxConcurrentFetches` + 8.",
    )

    cross_checks: ClassVar[CrossChecks] = (_tls_pair, _peering_complete)

    @property
    def peering(self) -> bool:
        """Whether this front shares its misses with other replicas."""
        return bool(self.peers) or self.peer_service is not None


@dataclass(frozen=True)
class NodeAgentConfig:
    """The node agent DaemonSet (`ccr-webhook node-agent`): containerd's hosts.toml and CA, and the fallback."""

    config_path: str = key(
        "/etc/containerd/certs.d",
        doc="containerd's `config_path` as the node sees it; the agent writes only `<configPath>/<ccr.registry>/`.",
    )
    host_dir: str = key(
        "/host/etc/containerd/certs.d",
        doc="Where the agent's container sees `configPath` (its one writable hostPath volume).",
    )
    containerd_config: str | None = key(
        "/host/etc/containerd/config.toml",
        check=checks.none_if_empty,
        doc="containerd's main config as the agent sees it (read-only), to check that its `config_path` names "
        "`configPath`; empty: not checked. The agent never edits it.",
    )
    service: str = key("ccr", check=checks.kubernetes_name, doc="The CCR Service whose ClusterIP nodes dial.")
    service_namespace: str = key(DEFAULT_LEASE_NAMESPACE, check=checks.kubernetes_name, doc="Its namespace.")
    event_namespace: str = key(
        "ccr-nodes",
        check=checks.kubernetes_name,
        doc="The agent's own namespace: its Events about its Node go there, and its DaemonSet is there.",
    )
    daemon_set: str = key(
        "ccr-node-agent",
        check=checks.kubernetes_name,
        doc="The agent's DaemonSet: when it is gone or being deleted, a stopping agent removes what it wrote "
        "(a rollout keeps the files for the next agent).",
    )
    front_address: str | None = key(
        None,
        check=checks.none_if_empty,
        shown="none (the Service's ClusterIP, the port of `ccr.registry`)",
        doc="The `host:port` nodes dial for the front, instead of the Service's ClusterIP (tests, a NodePort).",
    )
    pull_credentials: str | None = key(
        None,
        check=checks.none_if_empty,
        doc="A docker config.json whose entry for `ccr.registry` is the nodes' pull account; sent to the front only.",
    )
    ca_config_map: str | None = key(
        None,
        check=checks.none_if_empty,
        shown="none (`ccr.caFile`)",
        doc="A ConfigMap in the agent's namespace whose `ca.crt` is the CCR's CA, watched through the API so a "
        "rotation reaches the node within seconds; instead of the mounted `ccr.caFile`.",
    )
    ca_overlap_seconds: float = key(
        86400.0,
        minimum=0,
        duration=True,
        shown="`24h`",
        doc="How long a replaced CA (`caConfigMap` or `ccr.caFile` changed) is still trusted beside the new one.",
    )
    fallback_listen: str | None = key(
        "127.0.0.1:5010",
        check=checks.none_if_empty,
        doc="The node-local, pull-only fallback containerd tries after the front (digest-pinned pulls from "
        "upstream, verified). Empty: no fallback, pulls stop while the CCR is down.",
    )
    listen: str = key(
        "127.0.0.1:5011", check=checks.listen_address, doc="`/healthz`, `/readyz` and `/metrics` of the agent."
    )
    interval_seconds: float = key(
        10.0,
        minimum=0.1,
        doc="How often the agent reads the Service and the CA again, rewrites what changed and checks the front.",
    )
    node_name: str | None = key(
        None, from_env="NODE_NAME", check=checks.none_if_empty, doc="The node it runs on, for its Events."
    )


def _ccr_is_not_an_upstream(config: Config) -> None:
    """Mirroring the CCR into itself would loop."""
    for upstream in config.upstreams:
        if upstream.registry == config.ccr.registry:
            raise checks.Invalid(
                f"{upstream.registry} is the CCR itself; the CCR cannot be its own upstream", "upstreams"
            )


def _upstreams_distinct(config: Config) -> None:
    """Each registry once, and no prefix inside another's: a CCR path must map back to one upstream."""
    for index, upstream in enumerate(config.upstreams):
        for other in config.upstreams[:index]:
            if other.registry == upstream.registry:
                raise checks.Invalid(f"{upstream.registry} is listed twice", f"upstreams[{index}].registry")
            prefix = upstream.prefix
            if other.prefix == prefix or other.prefix.startswith(prefix + "/") or prefix.startswith(other.prefix + "/"):
                raise checks.Invalid(
                    f"{prefix!r} overlaps the prefix of upstream {other.registry}", f"upstreams[{index}].prefix"
                )


@dataclass(frozen=True)
class Config:
    """Everything ccr-webhook is told, validated."""

    ccr: CCRConfig = key(doc="The Cluster Container Registry: where nodes pull from, and how ccr-webhook reaches it.")
    upstreams: tuple[UpstreamConfig, ...] = key(
        (),
        doc="The only registries ccr-webhook contacts or mirrors: a list, each entry with the keys below. "
        "An image from any other registry is left alone.",
    )
    policy: PolicyConfig = key(factory=PolicyConfig, doc="What admission does with each image.")
    resolver: ResolverConfig = key(
        factory=ResolverConfig,
        doc="How long registry answers are trusted, and how hard the registries are asked.",
    )
    webhook: WebhookConfig = key(factory=WebhookConfig, doc="The admission server (`ccr-webhook serve`).")
    warmer: WarmerConfig = key(
        factory=WarmerConfig,
        doc="The warmer sidecar: where it listens, how hard it copies, which Pods it watches, how it reports "
        "([below](#the-warmer)).",
    )
    copy: CopyConfig = key(
        factory=CopyConfig,
        doc="Limits on one image copy, for the warmer, `warm` and `copy` ([below](#the-warmer)).",
    )
    retention: RetentionConfig = key(
        factory=RetentionConfig,
        doc="What the CCR keeps: images no workload has named for `maxUnusedAge` go, the newest `keepNewest` per "
        "repository stay, `rules` say otherwise per repository, `maxBytes` caps the whole "
        "([operations.md](operations.md#retention-keeping-the-ccr-lean)).",
    )
    front: FrontConfig = key(
        factory=FrontConfig,
        doc="The CCR front (`ccr-webhook front`): the pull endpoint that fetches a miss from upstream once "
        "([operations.md](operations.md#the-ccr-front)).",
    )
    nodes: NodeAgentConfig = key(
        factory=NodeAgentConfig,
        doc="The node side, `ccr-webhook node-agent` on every node: containerd's `hosts.toml` and CA, and the "
        "upstream fallback while the CCR is down "
        "([install.md](install.md#2-let-the-nodes-reach-the-ccr-the-node-agent)).",
    )

    cross_checks: ClassVar[CrossChecks] = (_upstreams_distinct, _ccr_is_not_an_upstream)

    @property
    def reads_through_front(self) -> bool:
        """Whether copies into the CCR read through its front: `warmer.throughFront`, or when unset, whether nodes
        pull from another address than the registry the warmer writes to (that address is the front)."""
        if self.warmer.through_front is not None:
            return self.warmer.through_front
        endpoint = urllib.parse.urlsplit(self.ccr.endpoint)
        default_port = 80 if endpoint.scheme == "http" else 443
        front = urllib.parse.urlsplit(f"//{self.ccr.registry}")
        return (front.hostname, front.port or 443) != (endpoint.hostname, endpoint.port or default_port)

    def upstream_for(self, registry: str) -> UpstreamConfig | None:
        """The configured upstream for a normalized registry host, or None if it is not one."""
        for upstream in self.upstreams:
            if upstream.registry == registry:
                return upstream
        return None
