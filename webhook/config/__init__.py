"""The one configuration object: a YAML file (a mounted ConfigMap in the cluster) plus environment overrides.

Loaded once at start and passed in. Every error names the key at fault, so an operator can fix it
without reading code. Environment overrides use `CCR_WEBHOOK_<SECTION>_<KEY>` with the camelCase key in
SNAKE_CASE (`policy.onResolveError` is `CCR_WEBHOOK_POLICY_ON_RESOLVE_ERROR`); values are read as YAML,
so `true`, `2.5` and `[a, b]` work.
"""

from __future__ import annotations

import enum
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import yaml

ENV_PREFIX = "CCR_WEBHOOK_"
_HOST_PORT = re.compile(
    r"^(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?$"
)
_PREFIX = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$")
_HOST_PATTERN = re.compile(r"^(?:[a-z0-9*?-]+(?:\.[a-z0-9*?-]+)*|\[[0-9a-f:.]+\])$")
_LEGACY_DOCKER_HUB = "index.docker.io"
_DOCKER_HUB_TOKEN_HOSTS = ("auth.docker.io",)
_DNS_LABEL = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
_LABEL_KEY = re.compile(
    r"^(?:[a-z0-9](?:[a-z0-9.-]{0,251}[a-z0-9])?/)?[A-Za-z0-9](?:[A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$"
)
_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(d|h|m|s)")
_DURATION_UNITS = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0}


class ConfigError(ValueError):
    """The configuration is invalid; the message names the key and what is expected."""


class SwapMode(str, enum.Enum):
    """When an image is rewritten to the CCR."""

    EXISTS = "exists"  # only when the CCR already holds the digest
    ALWAYS = "always"  # always, trusting the warmer to fill the CCR before the pull


class CopyMode(str, enum.Enum):
    """How an image the CCR lacks gets there."""

    DELAYED = "delayed"  # warm in the background; admission does not wait
    FORCE = "force"  # admission waits for the warm within its deadline
    NONE = "none"  # never copy


class OnResolveError(str, enum.Enum):
    """What admission does when a tag cannot be resolved to a digest in time."""

    ALLOW = "allow"  # admit the image unpinned, with a warning
    DENY = "deny"  # refuse the Pod


@dataclass(frozen=True)
class CCRConfig:
    """The Cluster Container Registry: where nodes pull from, and how ccr-webhook reaches it."""

    registry: str
    endpoint: str
    insecure: bool = False
    credentials: str | None = None
    ca_file: str | None = None  # PEM CA bundle trusted for this registry instead of the system CAs


@dataclass(frozen=True)
class UpstreamConfig:
    """A registry ccr-webhook may contact and mirror; no other registry is ever contacted."""

    registry: str
    endpoint: str
    prefix: str
    credentials: str | None = None
    insecure: bool = False
    ca_file: str | None = None  # PEM CA bundle trusted for this registry instead of the system CAs
    redirect_hosts: tuple[str, ...] | None = None  # storage hosts its blob downloads may go to; None: any host by name
    token_hosts: tuple[str, ...] | None = None  # token realms trusted besides its own host; None: none with credentials


@dataclass(frozen=True)
class PolicyConfig:
    """What admission does with each image."""

    reject_latest: bool = True
    pin_digest: bool = True
    swap: SwapMode = SwapMode.EXISTS
    copy: CopyMode = CopyMode.DELAYED
    exclude: tuple[str, ...] = ()
    on_resolve_error: OnResolveError = OnResolveError.ALLOW


@dataclass(frozen=True)
class ResolverConfig:
    """How long registry answers are trusted, and how hard the registries are asked."""

    cache_seconds: float = 300.0
    ccr_cache_seconds: float = 30.0
    negative_cache_seconds: float = 5.0
    connect_timeout_seconds: float = 1.0
    read_timeout_seconds: float = 5.0
    lookup_timeout_seconds: float = 10.0  # the whole of one lookup, however slowly a registry sends
    max_concurrency: int = 16
    max_concurrency_per_registry: int = 8  # lookups at once per registry, so a slow one cannot take every thread


@dataclass(frozen=True)
class WebhookConfig:
    """The admission server."""

    deadline_seconds: float = 2.0
    listen: str = "0.0.0.0:8443"
    tls_cert: str | None = None
    tls_key: str | None = None
    workers: int = 2
    max_request_bytes: int = 3 * 1024 * 1024
    warmer_url: str | None = "http://127.0.0.1:8081"


DEFAULT_LEASE_NAMESPACE = "ccr-system"


@dataclass(frozen=True)
class WarmerConfig:
    """The warmer sidecar: where it listens, how hard it copies, which Pods it watches, how it reports."""

    listen: str = "127.0.0.1:8081"  # hints from the webhook; loopback only
    metrics_listen: str = "0.0.0.0:9102"  # /metrics, /healthz, /readyz
    concurrency: int = 2  # images copied at once
    max_attempts: int = 5
    backoff_seconds: float = 2.0
    backoff_max_seconds: float = 300.0
    warm_dry_run_namespaces: bool = False  # namespaces labelled dry-run are warmed too
    namespace_label: str = "ccr-webhook/policy"
    resync_seconds: float = 600.0  # full re-list of Pods, to retry what failed or could not be resolved
    lease_name: str = "ccr-webhook-warmer"
    lease_namespace: str = DEFAULT_LEASE_NAMESPACE  # default: $POD_NAMESPACE
    lease_seconds: float = 15.0
    event_interval_seconds: float = 300.0  # at most one Event per image and reason in this time
    event_pods_per_image: int = 5  # and on at most this many Pods


@dataclass(frozen=True)
class RetentionConfig:
    """What the CCR keeps: images unused for `max_unused_age_seconds` go, the newest `keep_newest` per repository stay."""

    enabled: bool = False
    max_unused_age_seconds: float = 7 * 86400.0
    keep_newest: int = 3
    dry_run: bool = False
    interval_seconds: float = 3600.0


@dataclass(frozen=True)
class Config:
    """Everything ccr-webhook is told, validated."""

    ccr: CCRConfig
    upstreams: tuple[UpstreamConfig, ...]
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    resolver: ResolverConfig = field(default_factory=ResolverConfig)
    webhook: WebhookConfig = field(default_factory=WebhookConfig)
    warmer: WarmerConfig = field(default_factory=WarmerConfig)
    retention: RetentionConfig = field(default_factory=RetentionConfig)

    def upstream_for(self, registry: str) -> UpstreamConfig | None:
        """The configured upstream for a normalized registry host, or None if it is not one."""
        for upstream in self.upstreams:
            if upstream.registry == registry:
                return upstream
        return None


def load_config(path: str | os.PathLike[str] | None, environ: Mapping[str, str] | None = None) -> Config:
    """Read the YAML file at `path` (None: start from nothing), apply environment overrides, validate."""
    raw: Any = {}
    if path is not None:
        try:
            with open(path, encoding="utf-8") as handle:
                raw = yaml.safe_load(handle) or {}
        except OSError as err:
            raise ConfigError(f"cannot read configuration file {path}: {err.strerror}") from None
        except yaml.YAMLError as err:
            raise ConfigError(f"configuration file {path} is not valid YAML: {err}") from None
    if not isinstance(raw, dict):
        raise ConfigError("configuration: the top level must be a mapping of sections (ccr, upstreams, policy, ...)")
    environ = os.environ if environ is None else environ
    return parse_config(apply_env_overrides(raw, environ), environ)


def apply_env_overrides(raw: dict[str, Any], environ: Mapping[str, str]) -> dict[str, Any]:
    """Return a copy of `raw` with every `CCR_WEBHOOK_SECTION_KEY` variable set into it."""
    merged = {key: (dict(value) if isinstance(value, dict) else value) for key, value in raw.items()}
    for name, text in sorted(environ.items()):
        if not name.startswith(ENV_PREFIX) or name == ENV_PREFIX + "CONFIG":
            continue
        words = name[len(ENV_PREFIX) :].lower().split("_")
        section, key = _split_env_name(words)
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            raise ConfigError(f"environment {name}: not a valid YAML value: {text!r}") from None
        if key is None:
            merged[section] = value
        else:
            target = merged.setdefault(section, {})
            if not isinstance(target, dict):
                raise ConfigError(f"environment {name}: section {section} is not a mapping")
            target[key] = value
    return merged


def _split_env_name(words: list[str]) -> tuple[str, str | None]:
    """Map ['policy', 'on', 'resolve', 'error'] to ('policy', 'onResolveError'); a lone word names a section."""
    section, rest = words[0], words[1:]
    if not rest:
        return section, None
    return section, rest[0] + "".join(word.capitalize() for word in rest[1:])


def parse_config(raw: dict[str, Any], environ: Mapping[str, str] | None = None) -> Config:
    """Validate a raw mapping (as read from YAML) into a Config, or raise ConfigError naming the key.

    `environ` gives defaults that come from the Pod (POD_NAMESPACE, by the downward API).
    """
    top = _Reader(raw, "")
    ccr = _parse_ccr(top.section("ccr", required=True))
    upstreams = _parse_upstreams(top.list_of_mappings("upstreams"))
    for upstream in upstreams:
        if upstream.registry == ccr.registry:
            raise ConfigError(f"upstreams: {upstream.registry} is the CCR itself; the CCR cannot be its own upstream")
    config = Config(
        ccr=ccr,
        upstreams=upstreams,
        policy=_parse_policy(top.section("policy")),
        resolver=_parse_resolver(top.section("resolver")),
        webhook=_parse_webhook(top.section("webhook")),
        warmer=_parse_warmer(top.section("warmer"), (environ or {}).get("POD_NAMESPACE") or DEFAULT_LEASE_NAMESPACE),
        retention=_parse_retention(top.section("retention")),
    )
    top.finish()
    return config


def _parse_ccr(reader: _Reader) -> CCRConfig:
    registry = reader.host("registry", required=True)
    insecure = reader.boolean("insecure", False)
    endpoint = reader.endpoint("endpoint", registry, insecure)
    credentials = reader.string("credentials", None)
    ca_file = reader.string("caFile", None)
    reader.finish()
    return CCRConfig(registry=registry, endpoint=endpoint, insecure=insecure, credentials=credentials, ca_file=ca_file)


def _parse_upstreams(readers: list[_Reader]) -> tuple[UpstreamConfig, ...]:
    upstreams: list[UpstreamConfig] = []
    for reader in readers:
        registry = reader.host("registry", required=True)
        if registry == _LEGACY_DOCKER_HUB:
            registry = "docker.io"
        insecure = reader.boolean("insecure", False)
        default_endpoint = "https://registry-1.docker.io" if registry == "docker.io" and not insecure else None
        endpoint = reader.endpoint("endpoint", registry, insecure, default_endpoint)
        prefix = reader.string("prefix", registry.replace(":", "-").strip("[]")).strip("/")
        if not _PREFIX.match(prefix):
            raise ConfigError(
                f"{reader.path}.prefix: {prefix!r} is not a valid repository path (lowercase, / separated)"
            )
        credentials = reader.string("credentials", None)
        ca_file = reader.string("caFile", None)
        redirect_hosts = reader.host_patterns("redirectHosts")
        token_hosts = reader.host_patterns("tokenHosts")
        if token_hosts is None and registry == "docker.io":
            token_hosts = _DOCKER_HUB_TOKEN_HOSTS
        reader.finish()
        for other in upstreams:
            if other.registry == registry:
                raise ConfigError(f"{reader.path}.registry: {registry} is listed twice")
            if other.prefix == prefix or other.prefix.startswith(prefix + "/") or prefix.startswith(other.prefix + "/"):
                raise ConfigError(f"{reader.path}.prefix: {prefix!r} overlaps the prefix of upstream {other.registry}")
        upstreams.append(
            UpstreamConfig(registry, endpoint, prefix, credentials, insecure, ca_file, redirect_hosts, token_hosts)
        )
    return tuple(upstreams)


def _parse_policy(reader: _Reader) -> PolicyConfig:
    policy = PolicyConfig(
        reject_latest=reader.boolean("rejectLatest", True),
        pin_digest=reader.boolean("pinDigest", True),
        swap=reader.choice("swap", SwapMode, SwapMode.EXISTS),
        copy=reader.choice("copy", CopyMode, CopyMode.DELAYED),
        exclude=tuple(reader.strings("exclude")),
        on_resolve_error=reader.choice("onResolveError", OnResolveError, OnResolveError.ALLOW),
    )
    reader.finish()
    return policy


def _parse_resolver(reader: _Reader) -> ResolverConfig:
    defaults = ResolverConfig()
    resolver = ResolverConfig(
        cache_seconds=reader.number("cacheSeconds", defaults.cache_seconds, minimum=0),
        ccr_cache_seconds=reader.number("ccrCacheSeconds", defaults.ccr_cache_seconds, minimum=0),
        negative_cache_seconds=reader.number("negativeCacheSeconds", defaults.negative_cache_seconds, minimum=0),
        connect_timeout_seconds=reader.number("connectTimeoutSeconds", defaults.connect_timeout_seconds, minimum=0.01),
        read_timeout_seconds=reader.number("readTimeoutSeconds", defaults.read_timeout_seconds, minimum=0.01),
        lookup_timeout_seconds=reader.number("lookupTimeoutSeconds", defaults.lookup_timeout_seconds, minimum=0.1),
        max_concurrency=int(reader.number("maxConcurrency", defaults.max_concurrency, minimum=1, integer=True)),
    )
    per_registry = reader.number(
        "maxConcurrencyPerRegistry",
        min(defaults.max_concurrency_per_registry, max(1, resolver.max_concurrency // 2)),
        minimum=1,
        integer=True,
    )
    if per_registry > resolver.max_concurrency:
        raise ConfigError(
            f"{reader.path}.maxConcurrencyPerRegistry: {per_registry} is above "
            f"maxConcurrency ({resolver.max_concurrency})"
        )
    reader.finish()
    return replace(resolver, max_concurrency_per_registry=int(per_registry))


def _parse_webhook(reader: _Reader) -> WebhookConfig:
    defaults = WebhookConfig()
    deadline = reader.number("deadlineSeconds", defaults.deadline_seconds, minimum=0.1)
    if deadline > 29:
        raise ConfigError(
            f"{reader.path}.deadlineSeconds: {deadline} must stay below the API server's 30 s webhook limit"
        )
    webhook = WebhookConfig(
        deadline_seconds=deadline,
        listen=reader.listen("listen", defaults.listen),
        tls_cert=reader.string("tlsCert", None),
        tls_key=reader.string("tlsKey", None),
        workers=int(reader.number("workers", defaults.workers, minimum=1, integer=True)),
        max_request_bytes=int(reader.number("maxRequestBytes", defaults.max_request_bytes, minimum=1024, integer=True)),
        warmer_url=reader.string("warmerUrl", defaults.warmer_url) or None,
    )
    if (webhook.tls_cert is None) != (webhook.tls_key is None):
        raise ConfigError(f"{reader.path}: tlsCert and tlsKey go together; set both or neither")
    reader.finish()
    return webhook


def _parse_warmer(reader: _Reader, lease_namespace: str) -> WarmerConfig:
    defaults = WarmerConfig()
    label = reader.string("namespaceLabel", defaults.namespace_label) or ""
    if not _LABEL_KEY.match(label):
        raise ConfigError(f"{reader.path}.namespaceLabel: {label!r} is not a label key ([prefix/]name)")
    warmer = WarmerConfig(
        listen=reader.listen("listen", defaults.listen),
        metrics_listen=reader.listen("metricsListen", defaults.metrics_listen),
        concurrency=int(reader.number("concurrency", defaults.concurrency, minimum=1, integer=True)),
        max_attempts=int(reader.number("maxAttempts", defaults.max_attempts, minimum=1, integer=True)),
        backoff_seconds=reader.number("backoffSeconds", defaults.backoff_seconds, minimum=0),
        backoff_max_seconds=reader.number("backoffMaxSeconds", defaults.backoff_max_seconds, minimum=0),
        warm_dry_run_namespaces=reader.boolean("warmDryRunNamespaces", defaults.warm_dry_run_namespaces),
        namespace_label=label,
        resync_seconds=reader.number("resyncSeconds", defaults.resync_seconds, minimum=1),
        lease_name=reader.name("leaseName", defaults.lease_name),
        lease_namespace=reader.name("leaseNamespace", lease_namespace),
        lease_seconds=reader.number("leaseSeconds", defaults.lease_seconds, minimum=1),
        event_interval_seconds=reader.number("eventIntervalSeconds", defaults.event_interval_seconds, minimum=0),
        event_pods_per_image=int(
            reader.number("eventPodsPerImage", defaults.event_pods_per_image, minimum=0, integer=True)
        ),
    )
    if warmer.backoff_max_seconds < warmer.backoff_seconds:
        raise ConfigError(
            f"{reader.path}.backoffMaxSeconds: {warmer.backoff_max_seconds} is below backoffSeconds "
            f"({warmer.backoff_seconds})"
        )
    reader.finish()
    return warmer


def _parse_retention(reader: _Reader) -> RetentionConfig:
    defaults = RetentionConfig()
    retention = RetentionConfig(
        enabled=reader.boolean("enabled", defaults.enabled),
        max_unused_age_seconds=reader.duration("maxUnusedAge", defaults.max_unused_age_seconds, minimum=0),
        keep_newest=int(reader.number("keepNewest", defaults.keep_newest, minimum=0, integer=True)),
        dry_run=reader.boolean("dryRun", defaults.dry_run),
        interval_seconds=reader.duration("interval", defaults.interval_seconds, minimum=60),
    )
    reader.finish()
    return retention


def parse_duration(value: str) -> float:
    """Seconds in a duration such as `168h`, `7d`, `1h30m`, `90s` or plain `90`; ValueError for anything else."""
    if re.fullmatch(r"[0-9]+(?:\.[0-9]+)?", value):
        return float(value)
    parts = _DURATION_PART.findall(value)
    if not parts or "".join(number + unit for number, unit in parts) != value:
        raise ValueError(f"{value!r} is not a duration")
    return sum(float(number) * _DURATION_UNITS[unit] for number, unit in parts)


class _Reader:
    """Reads typed keys out of one mapping, remembering the path for error messages and catching unknown keys."""

    def __init__(self, raw: Any, path: str) -> None:
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise ConfigError(f"{path or 'configuration'}: must be a mapping, got {type(raw).__name__}")
        self.raw: dict[str, Any] = raw
        self.path = path
        self.seen: set[str] = set()

    def _key(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def _get(self, key: str, required: bool = False) -> Any:
        self.seen.add(key)
        value = self.raw.get(key)
        if value is None and required:
            raise ConfigError(f"{self._key(key)}: is required")
        return value

    def section(self, key: str, required: bool = False) -> _Reader:
        return _Reader(self._get(key, required), self._key(key))

    def list_of_mappings(self, key: str) -> list[_Reader]:
        value = self._get(key) or []
        if not isinstance(value, list):
            raise ConfigError(f"{self._key(key)}: must be a list, got {type(value).__name__}")
        return [_Reader(item, f"{self._key(key)}[{index}]") for index, item in enumerate(value)]

    def string(self, key: str, default: str | None, required: bool = False) -> str | None:
        value = self._get(key, required)
        if value is None:
            return default
        if not isinstance(value, str):
            raise ConfigError(f"{self._key(key)}: must be a string, got {value!r}")
        return value

    def strings(self, key: str) -> list[str]:
        value = self._get(key) or []
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise ConfigError(f"{self._key(key)}: must be a list of strings, got {value!r}")
        return value

    def boolean(self, key: str, default: bool) -> bool:
        value = self._get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise ConfigError(f"{self._key(key)}: must be true or false, got {value!r}")
        return value

    def number(self, key: str, default: float, minimum: float, integer: bool = False) -> float:
        value = self._get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (integer and not isinstance(value, int)):
            kind = "a whole number" if integer else "a number"
            raise ConfigError(f"{self._key(key)}: must be {kind}, got {value!r}")
        if value < minimum:
            raise ConfigError(f"{self._key(key)}: must be at least {minimum}, got {value!r}")
        return value

    def duration(self, key: str, default: float, minimum: float) -> float:
        """Seconds, written as a number or as a duration string (`168h`, `7d`, `1h30m`)."""
        value = self._get(key)
        if value is None:
            return default
        if isinstance(value, str):
            try:
                value = parse_duration(value)
            except ValueError:
                raise ConfigError(
                    f"{self._key(key)}: must be seconds or a duration such as 90s, 30m, 168h or 7d, got {value!r}"
                ) from None
        elif isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(
                f"{self._key(key)}: must be seconds or a duration such as 90s, 30m, 168h or 7d, got {value!r}"
            )
        if value < minimum:
            raise ConfigError(f"{self._key(key)}: must be at least {minimum:g} seconds, got {value:g}")
        return float(value)

    def choice(self, key: str, kind: type[enum.Enum], default: Any) -> Any:
        value = self._get(key)
        if value is None:
            return default
        try:
            return kind(value)
        except ValueError:
            allowed = ", ".join(member.value for member in kind)
            raise ConfigError(f"{self._key(key)}: must be one of {allowed}, got {value!r}") from None

    def listen(self, key: str, default: str) -> str:
        value = self.string(key, default) or ""
        if not re.match(r"^.+:[0-9]{1,5}$", value):
            raise ConfigError(f"{self._key(key)}: {value!r} must be host:port")
        return value

    def name(self, key: str, default: str) -> str:
        value = self.string(key, default) or ""
        if not _DNS_LABEL.match(value):
            raise ConfigError(f"{self._key(key)}: {value!r} is not a Kubernetes name (lowercase letters, digits, -)")
        return value

    def host(self, key: str, required: bool = False) -> str:
        value = self.string(key, None, required=required) or ""
        if not _HOST_PORT.match(value):
            raise ConfigError(f"{self._key(key)}: {value!r} is not a registry host[:port] (no scheme, no path)")
        return value.lower()

    def host_patterns(self, key: str) -> tuple[str, ...] | None:
        """Host names or globs (`*.s3.amazonaws.com`), lower case; None when the key is absent."""
        if self.raw.get(key) is None:
            self.seen.add(key)
            return None
        patterns = tuple(pattern.lower() for pattern in self.strings(key))
        for pattern in patterns:
            if not _HOST_PATTERN.match(pattern):
                raise ConfigError(
                    f"{self._key(key)}: {pattern!r} is not a host name or a glob of one (no scheme, port or path)"
                )
        return patterns

    def endpoint(self, key: str, registry: str, insecure: bool, default: str | None = None) -> str:
        value = self.string(key, None)
        if value is None:
            return default or f"{'http' if insecure else 'https'}://{registry}"
        value = value.rstrip("/")
        if not re.match(r"^https?://[^/?#@]+$", value):
            raise ConfigError(f"{self._key(key)}: {value!r} must be http(s)://host[:port] with no path or credentials")
        if value.startswith("http://") and not insecure:
            raise ConfigError(
                f"{self._key(key)}: {value!r} is plain HTTP; set insecure: true to allow it (tests and demos only)"
            )
        return value

    def finish(self) -> None:
        unknown = sorted(set(self.raw) - self.seen)
        if unknown:
            raise ConfigError(f"{self._key(unknown[0])}: unknown key (known here: {', '.join(sorted(self.seen))})")
