"""The one configuration object: a YAML file (a mounted ConfigMap in the cluster) plus environment overrides.

Loaded once at start and passed in. Every key is declared once, in keys.py (name, type, default, bounds,
check, doc); read.py reads any declared key generically and docs.py prints the docs' key tables from the same
declarations. Every error names the key at fault, so an operator can fix it without reading code. Environment
overrides use `CCR_WEBHOOK_<SECTION>_<KEY>` with the camelCase key in SNAKE_CASE (`policy.onResolveError` is
`CCR_WEBHOOK_POLICY_ON_RESOLVE_ERROR`); values are read as YAML, so `true`, `2.5` and `[a, b]` work.
"""

from webhook.config.checks import ConfigError, parse_duration
from webhook.config.keys import (
    DEFAULT_LEASE_NAMESPACE,
    CCRConfig,
    Config,
    CopyConfig,
    CopyMode,
    FrontConfig,
    OnResolveError,
    PolicyConfig,
    RankBy,
    ResolverConfig,
    RetentionConfig,
    RetentionRule,
    SwapMode,
    UpstreamConfig,
    VerifyRule,
    WarmerConfig,
    WebhookConfig,
)
from webhook.config.read import ENV_PREFIX, apply_env_overrides, load_config, parse_config

__all__ = [
    "DEFAULT_LEASE_NAMESPACE",
    "ENV_PREFIX",
    "CCRConfig",
    "Config",
    "ConfigError",
    "CopyConfig",
    "CopyMode",
    "FrontConfig",
    "OnResolveError",
    "PolicyConfig",
    "RankBy",
    "ResolverConfig",
    "RetentionConfig",
    "RetentionRule",
    "SwapMode",
    "UpstreamConfig",
    "VerifyRule",
    "WarmerConfig",
    "WebhookConfig",
    "apply_env_overrides",
    "load_config",
    "parse_config",
    "parse_duration",
]
