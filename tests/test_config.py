"""Configuration: defaults, environment overrides, and errors that name the key at fault."""

from dataclasses import dataclass

import pytest

from webhook.config import (
    ConfigError,
    CopyMode,
    FrontConfig,
    OnResolveError,
    RetentionConfig,
    SwapMode,
    checks,
    load_config,
    parse_config,
    parse_duration,
)
from webhook.config.declare import key
from webhook.config.read import read_section

MINIMAL = {"ccr": {"registry": "ccr.ccr-system.svc:5000"}}


def test_defaults_are_the_safe_documented_ones():
    config = parse_config(dict(MINIMAL))
    assert config.policy.reject_latest and config.policy.pin_digest
    assert config.policy.swap is SwapMode.ALWAYS  # the CCR front streams a cold image through
    assert config.policy.copy is CopyMode.DELAYED
    assert config.policy.on_resolve_error is OnResolveError.ALLOW
    assert config.webhook.deadline_seconds == 2
    assert config.ccr.endpoint == "https://ccr.ccr-system.svc:5000"
    assert config.upstreams == ()
    assert config.warmer.through_front is None
    assert not config.reads_through_front  # nodes pull from the registry itself: there is no front to read through


@pytest.mark.parametrize(
    ("ccr_section", "warmer", "through"),
    [
        ({"registry": "ccr.ccr-system.svc:5000", "endpoint": "http://ccr.ccr-system.svc:5002"}, {}, True),
        ({"registry": "ccr.ccr-system.svc:5000", "endpoint": "https://ccr-push.ccr-system.svc:5000"}, {}, True),
        ({"registry": "ccr.ccr-system.svc:5000", "endpoint": "https://ccr.ccr-system.svc:5000"}, {}, False),
        ({"registry": "ccr.example.com", "endpoint": "https://ccr.example.com:443"}, {}, False),
        (
            {"registry": "ccr.ccr-system.svc:5000", "endpoint": "http://ccr.ccr-system.svc:5002"},
            {"throughFront": False},
            False,
        ),
        ({"registry": "ccr.example.com"}, {"throughFront": True}, True),
    ],
)
def test_the_warmer_reads_through_the_front_whenever_nodes_pull_from_one(ccr_section, warmer, through):
    config = parse_config({"ccr": {"insecure": True, **ccr_section}, "warmer": warmer})
    assert config.reads_through_front is through


def test_upstream_defaults():
    config = parse_config({**MINIMAL, "upstreams": [{"registry": "index.docker.io"}, {"registry": "reg.local:5000"}]})
    hub, local = config.upstreams
    assert (hub.registry, hub.endpoint, hub.prefix) == ("docker.io", "https://registry-1.docker.io", "docker.io")
    assert (local.endpoint, local.prefix) == ("https://reg.local:5000", "reg.local-5000")
    assert config.upstream_for("reg.local:5000") is local and config.upstream_for("other.io") is None


def test_ca_file_is_an_optional_path_per_registry(tmp_path):
    config = parse_config(
        {
            "ccr": {"registry": "ccr:5000", "caFile": "/etc/ccr-registry/ca/ca.crt"},
            "upstreams": [{"registry": "a.io", "caFile": "/etc/a/ca.pem"}, {"registry": "b.io"}],
        }
    )
    assert config.ccr.ca_file == "/etc/ccr-registry/ca/ca.crt"
    assert [upstream.ca_file for upstream in config.upstreams] == ["/etc/a/ca.pem", None]
    assert parse_config(dict(MINIMAL)).ccr.ca_file is None
    path = tmp_path / "config.yaml"
    path.write_text("ccr:\n  registry: ccr:5000\n")
    assert load_config(path, {"CCR_WEBHOOK_CCR_CA_FILE": "/run/ca.crt"}).ccr.ca_file == "/run/ca.crt"


def test_load_config_reads_yaml_and_applies_environment(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("ccr:\n  registry: ccr:5000\npolicy:\n  swap: exists\n")
    config = load_config(
        path,
        {
            "CCR_WEBHOOK_POLICY_SWAP": "always",
            "CCR_WEBHOOK_WEBHOOK_DEADLINE_SECONDS": "1.5",
            "CCR_WEBHOOK_POLICY_EXCLUDE": "[a/*, b]",
            "UNRELATED": "x",
        },
    )
    assert config.policy.swap is SwapMode.ALWAYS
    assert config.webhook.deadline_seconds == 1.5
    assert config.policy.exclude == ("a/*", "b")


def test_retention_defaults_keep_everything_until_enabled_and_read_durations():
    retention = parse_config(dict(MINIMAL)).retention
    assert (retention.enabled, retention.dry_run, retention.keep_newest) == (False, False, 3)
    assert (retention.max_unused_age_seconds, retention.interval_seconds) == (7 * 86400, 3600)
    config = parse_config(
        {
            **MINIMAL,
            "retention": {"enabled": True, "maxUnusedAge": "1d12h", "keepNewest": 0, "dryRun": True, "interval": 900},
        }
    )
    assert config.retention == RetentionConfig(True, 129600.0, 0, True, 900.0)
    assert (
        load_config(
            None, {"CCR_WEBHOOK_CCR_REGISTRY": "ccr", "CCR_WEBHOOK_RETENTION_MAX_UNUSED_AGE": "168h"}
        ).retention.max_unused_age_seconds
        == 168 * 3600
    )


def test_front_defaults_and_keys():
    assert parse_config(dict(MINIMAL)).front == FrontConfig(
        listen="0.0.0.0:5000",
        spool_dir="/var/cache/ccr-front",
        spool_max_bytes=20 * 1024**3,
        max_concurrent_fetches=8,
        fetch_deadline_seconds=3600.0,
        min_bytes_per_second=64 * 1024,
    )
    front = parse_config(
        {
            **MINIMAL,
            "front": {
                "listen": "127.0.0.1:5443",
                "tlsCert": "/tls/tls.crt",
                "tlsKey": "/tls/tls.key",
                "spoolDir": "/spool",
                "spoolMaxBytes": 1024**3,
                "maxConcurrentFetches": 2,
                "fetchDeadlineSeconds": 600,
                "minBytesPerSecond": 0,
            },
        }
    ).front
    assert front == FrontConfig("127.0.0.1:5443", "/tls/tls.crt", "/tls/tls.key", "/spool", 1024**3, 2, 600, 0)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90s", 90),
        ("30m", 1800),
        ("168h", 604800),
        ("7d", 604800),
        ("1h30m", 5400),
        ("1.5h", 5400),
        ("0s", 0),
        ("0", 0),
        ("2.5", 2.5),
    ],
)
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({}, "ccr: is required"),
        ({"ccr": {"registry": "https://ccr"}}, "ccr.registry: 'https://ccr' is not a registry host"),
        ({**MINIMAL, "policy": {"swap": "sometimes"}}, "policy.swap: must be one of exists, always"),
        ({**MINIMAL, "policy": {"rejectLatest": "yes"}}, "policy.rejectLatest: must be true or false"),
        ({**MINIMAL, "policy": {"swapp": "always"}}, "policy.swapp: unknown key"),
        ({**MINIMAL, "webhook": {"deadlineSeconds": 45}}, "webhook.deadlineSeconds: 45 must stay below"),
        ({**MINIMAL, "webhook": {"tlsCert": "/c"}}, "tlsCert and tlsKey go together"),
        (
            {**MINIMAL, "upstreams": [{"registry": "a.io", "endpoint": "http://a.io"}]},
            "upstreams[0].endpoint: 'http://a.io' is plain HTTP",
        ),
        ({**MINIMAL, "upstreams": [{"registry": "a.io", "endpoint": "https://u:p@a.io"}]}, "no path or credentials"),
        (
            {**MINIMAL, "upstreams": [{"registry": "a.io"}, {"registry": "a.io"}]},
            "upstreams[1].registry: a.io is listed twice",
        ),
        (
            {**MINIMAL, "upstreams": [{"registry": "a.io", "prefix": "m"}, {"registry": "b.io", "prefix": "m/b"}]},
            "overlaps",
        ),
        ({**MINIMAL, "upstreams": [{"registry": "a.io", "prefix": "Bad Prefix"}]}, "upstreams[0].prefix"),
        ({**MINIMAL, "upstreams": [{"registry": "ccr.ccr-system.svc:5000"}]}, "the CCR itself"),
        ({**MINIMAL, "upstreams": {"registry": "a.io"}}, "upstreams: must be a list"),
        ({**MINIMAL, "resolver": {"maxConcurrency": 0}}, "resolver.maxConcurrency: must be at least 1"),
        ({**MINIMAL, "bogus": {}}, "bogus: unknown key"),
        ({"ccr": {"registry": "ccr:5000", "caFile": True}}, "ccr.caFile: must be a string"),
        ({**MINIMAL, "upstreams": [{"registry": "a.io", "caFile": ["/a"]}]}, "upstreams[0].caFile: must be a string"),
        (
            {**MINIMAL, "upstreams": [{"registry": "a.io", "redirectHosts": ["https://s.io/b"]}]},
            "upstreams[0].redirectHosts: 'https://s.io/b' is not a host name or a glob",
        ),
        (
            {**MINIMAL, "upstreams": [{"registry": "a.io", "redirectHosts": "s.io"}]},
            "upstreams[0].redirectHosts: must be a list",
        ),
        (
            {**MINIMAL, "upstreams": [{"registry": "a.io", "tokenHosts": ["auth.a.io:443"]}]},
            "upstreams[0].tokenHosts: 'auth.a.io:443' is not a host name or a glob",
        ),
        (
            {**MINIMAL, "resolver": {"maxConcurrency": 4, "maxConcurrencyPerRegistry": 5}},
            "resolver.maxConcurrencyPerRegistry: 5 is above maxConcurrency (4)",
        ),
        ({**MINIMAL, "resolver": {"lookupTimeoutSeconds": 0}}, "resolver.lookupTimeoutSeconds: must be at least 0.1"),
        ({**MINIMAL, "retention": {"maxUnusedAge": "a week"}}, "retention.maxUnusedAge: must be seconds or a duration"),
        ({**MINIMAL, "retention": {"maxUnusedAge": "7d "}}, "retention.maxUnusedAge: must be seconds or a duration"),
        ({**MINIMAL, "retention": {"maxUnusedAge": -1}}, "retention.maxUnusedAge: must be at least 0 seconds"),
        ({**MINIMAL, "retention": {"maxUnusedAge": True}}, "retention.maxUnusedAge: must be seconds or a duration"),
        ({**MINIMAL, "retention": {"keepNewest": 1.5}}, "retention.keepNewest: must be a whole number"),
        ({**MINIMAL, "retention": {"keepNewest": -1}}, "retention.keepNewest: must be at least 0"),
        ({**MINIMAL, "retention": {"interval": "10s"}}, "retention.interval: must be at least 60 seconds, got 10"),
        ({**MINIMAL, "retention": {"enabled": "yes"}}, "retention.enabled: must be true or false"),
        ({**MINIMAL, "retention": {"dryrun": True}}, "retention.dryrun: unknown key"),
        ({**MINIMAL, "front": {"tlsCert": "/tls/tls.crt"}}, "front: tlsCert and tlsKey go together"),
        ({**MINIMAL, "front": {"listen": "5000"}}, "front.listen: '5000' must be host:port"),
        ({**MINIMAL, "front": {"spoolMaxBytes": 1000}}, "front.spoolMaxBytes: must be at least 1048576"),
        ({**MINIMAL, "front": {"maxConcurrentFetches": 0}}, "front.maxConcurrentFetches: must be at least 1"),
        ({**MINIMAL, "front": {"headTimeoutSeconds": 0.5}}, "front.headTimeoutSeconds: must be at least 1"),
        ({**MINIMAL, "front": {"maxConnectionsPerAddress": 0}}, "front.maxConnectionsPerAddress: must be at least 1"),
        (
            {
                **MINIMAL,
                "front": {"peers": ["10.0.0.1:5003"], "peerAddress": "10.0.0.1", "peerSecret": "/s"}
                | {"maxConcurrentFetches": 60, "maxConnectionsPerAddress": 64},
            },
            "front.maxConnectionsPerAddress: must be at least maxConcurrentFetches + 8 with peers",
        ),
        ({**MINIMAL, "front": {"minBytesPerSecond": 1.5}}, "front.minBytesPerSecond: must be a whole number"),
        ({**MINIMAL, "front": {"spool": "/tmp"}}, "front.spool: unknown key"),
    ],
)
def test_errors_name_the_key(raw, message):
    with pytest.raises(ConfigError) as caught:
        parse_config(raw)
    assert message in str(caught.value)


def test_unreadable_and_invalid_files(tmp_path):
    with pytest.raises(ConfigError, match="cannot read configuration file"):
        load_config(tmp_path / "missing.yaml", {})
    bad = tmp_path / "bad.yaml"
    bad.write_text("ccr: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad, {})
    bad.write_text("- a list\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(bad, {})


def test_bad_environment_value_names_the_variable():
    with pytest.raises(ConfigError, match="CCR_WEBHOOK_POLICY_SWAP"):
        load_config(None, {"CCR_WEBHOOK_CCR_REGISTRY": "ccr", "CCR_WEBHOOK_POLICY_SWAP": "[unclosed"})


@dataclass(frozen=True)
class _Section:
    """A section of the test's own: a new key is only a declaration, the reader needs no code for it."""

    ratio: float = key(0.5, doc="A number with both bounds.", minimum=0, maximum=1)
    age: float = key(60.0, doc="A duration with an upper bound.", duration=True, maximum=3600)
    names: tuple[str, ...] = key((), doc="A list of strings.")
    name: str = key("a", doc="A checked string.", check=checks.kubernetes_name)
    namespace: str = key("ns", doc="A default from the Pod.", from_env="TEST_NAMESPACE")


def test_a_declared_key_is_read_typed_bounded_and_checked_with_no_reader_code():
    assert read_section(_Section, None, "extra", {}) == _Section()
    read = read_section(_Section, {"ratio": 1, "age": "1h", "names": ["x"], "name": "b-1"}, "extra", {})
    assert read == _Section(ratio=1, age=3600.0, names=("x",), name="b-1")
    assert read_section(_Section, {}, "extra", {"TEST_NAMESPACE": "team-a"}).namespace == "team-a"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"ratio": 1.5}, "extra.ratio: must be at most 1, got 1.5"),
        ({"ratio": -0.1}, "extra.ratio: must be at least 0, got -0.1"),
        ({"ratio": "half"}, "extra.ratio: must be a number, got 'half'"),
        ({"age": "2h"}, "extra.age: must be at most 3600 seconds, got 7200"),
        ({"names": "x"}, "extra.names: must be a list of strings, got 'x'"),
        ({"name": "Bad_Name"}, "extra.name: 'Bad_Name' is not a Kubernetes name"),
        ({"nmae": "a"}, "extra.nmae: unknown key (known here: age, name, names, namespace, ratio)"),
        ([], "extra: must be a mapping, got list"),
    ],
)
def test_a_declared_key_errors_name_it(raw, message):
    with pytest.raises(ConfigError) as caught:
        read_section(_Section, raw, "extra", {})
    assert message in str(caught.value)


def test_the_pod_namespace_is_the_default_lease_namespace_and_is_checked():
    assert parse_config(dict(MINIMAL), {"POD_NAMESPACE": "team-a"}).warmer.lease_namespace == "team-a"
    assert parse_config(dict(MINIMAL), {}).warmer.lease_namespace == "ccr-system"
    with pytest.raises(ConfigError, match=r"warmer\.leaseNamespace: 'Team_A' is not a Kubernetes name"):
        parse_config(dict(MINIMAL), {"POD_NAMESPACE": "Team_A"})


@dataclass(frozen=True)
class _Unreadable:
    ports: tuple[int, ...] = key((), doc="A list the reader does not know how to read.")


def test_a_declaration_of_a_type_the_reader_does_not_know_fails_loudly():
    with pytest.raises(TypeError, match=r"extra\.ports"):
        read_section(_Unreadable, {"ports": [1]}, "extra", {})


def test_token_hosts_default_to_docker_hub_s_auth_host_only_and_the_per_registry_share_to_half_the_pool():
    config = parse_config(
        {
            **MINIMAL,
            "upstreams": [
                {"registry": "index.docker.io"},
                {"registry": "a.io"},
                {"registry": "b.io", "tokenHosts": []},
            ],
            "resolver": {"maxConcurrency": 6},
        }
    )
    assert [upstream.token_hosts for upstream in config.upstreams] == [("auth.docker.io",), None, ()]
    assert config.resolver.max_concurrency_per_registry == 3
    assert parse_config(MINIMAL).resolver.max_concurrency_per_registry == 8
