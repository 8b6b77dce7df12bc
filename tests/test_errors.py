"""Every error the package defines is a CCRWebhookError, so callers catch "ours" in one clause."""

import importlib
import inspect
import pkgutil
import re

import webhook
from webhook.errors import CCRWebhookError


def _product_modules() -> list[str]:
    """Every module of the package except the test harness, which is not part of the product."""
    names = [webhook.__name__]
    for module in pkgutil.walk_packages(webhook.__path__, prefix="webhook."):
        if module.name != "webhook.testing" and not module.name.startswith("webhook.testing."):
            names.append(module.name)
    return names


def _defined_exceptions() -> dict[str, type[BaseException]]:
    found = {}
    for name in _product_modules():
        module = importlib.import_module(name)
        for _, value in inspect.getmembers(module, inspect.isclass):
            if issubclass(value, BaseException) and value.__module__ == name:
                found[f"{name}.{value.__qualname__}"] = value
    return found


def test_every_exception_defined_in_the_package_derives_from_the_one_base():
    exceptions = _defined_exceptions()
    assert {"webhook.config.checks.ConfigError", "webhook.registry.errors.RegistryError"} <= set(exceptions)
    strays = sorted(name for name, kind in exceptions.items() if not issubclass(kind, CCRWebhookError))
    assert strays == [], "derive these from webhook.errors.CCRWebhookError (and add them to its docstring's tree)"


def test_domain_errors_are_no_longer_value_errors():
    """A broad `except ValueError` around parsing must not swallow a domain error by accident."""
    strays = sorted(
        name for name, kind in _defined_exceptions().items() if issubclass(kind, (ValueError, RuntimeError))
    )
    assert strays == []


def test_the_documented_tree_names_every_error():
    documented = inspect.getdoc(importlib.import_module("webhook.errors")) or ""
    missing = sorted(
        name for name in _defined_exceptions() if not re.search(rf"\b{name.rsplit('.', 1)[1]}\b", documented)
    )
    assert missing == []
