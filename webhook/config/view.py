"""The effective configuration as data for the start-up log line: every key by its YAML name, nothing secret.

No key holds a secret, by design: credentials, TLS keys and the peer secret are files the keys name, and
endpoints with user info are refused (`checks.endpoint_url`). So the whole view is safe to log, paths
included, which is what an operator wants to see.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Any

from webhook.config.declare import declared_keys, yaml_name


def effective_view(section: Any) -> Any:
    """`section` (a Config or any value in it) as JSON-ready data keyed by YAML names."""
    if dataclasses.is_dataclass(section) and not isinstance(section, type):
        return {
            yaml_name(field, declared): effective_view(getattr(section, field.name))
            for field, declared in declared_keys(type(section))
        }
    if isinstance(section, tuple | list):
        return [effective_view(item) for item in section]
    if isinstance(section, enum.Enum):
        return section.value
    return section
