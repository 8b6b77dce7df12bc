"""The alerts, proved: `promtool test rules` runs tests/alerts/alerts.test.yaml against the rules the manifests
ship; every metric and label an alert or a test series names is one the code exports (or a documented one
from outside), so the alerts cannot drift from the code; the metrics behind the new alerts behave; and the
monitoring component renders on top of base as well as in production."""

from __future__ import annotations

import datetime
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.support.kustomize import MANIFESTS, ROOT, kubectl, one, render
from webhook.admission.metrics import Metrics
from webhook.config import parse_config
from webhook.front.app import Front
from webhook.front.flights import Spool
from webhook.front.metrics import FrontMetrics
from webhook.retention.metrics import RetentionMetrics
from webhook.tls import generate_ca, issue_serving_cert
from webhook.tls.expiry import EXPIRY_METRIC
from webhook.warmer.metrics import WarmerMetrics

ALERT_TESTS = ROOT / "tests/alerts/alerts.test.yaml"
# What the Prometheus Operator adds to every sample it scrapes through a PodMonitor (podTargetLabels add
# app_kubernetes_io_name on the CCR's).
TARGET_LABELS = {"namespace", "pod", "container", "endpoint", "job", "instance", "app_kubernetes_io_name"}
# Series from outside this code that alerts use, each with where it comes from and its own labels.
EXTERNAL = {
    "up": set(),  # Prometheus, for every scrape target
    # the kubelet's volume statistics (kube-prometheus scrapes them), for the base overlay's volume
    "kubelet_volume_stats_available_bytes": {"persistentvolumeclaim", "node"},
    "kubelet_volume_stats_capacity_bytes": {"persistentvolumeclaim", "node"},
}
PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "or", "and", "unless", "offset", "bool"}


def certificate_file(directory: Path, days: int) -> Path:
    ca = generate_ca()
    path = directory / f"tls-{days}.crt"
    path.write_bytes(issue_serving_cert(ca, ["ccr.ccr-system.svc"], [], days).cert_pem)
    return path


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict[str, set[str]]:
    """Every sample name the code's metrics expose, with its label names: the webhook's, the warmer's (with
    retention's, in the same registry) and the front's, certificate expiry included."""
    cert = certificate_file(tmp_path_factory.mktemp("certs"), 90)
    webhook = Metrics(registries=["docker.io", "ccr:5000"], certificates={"serving": str(cert)})
    warmer = WarmerMetrics(lambda: 0, lambda: 0)
    RetentionMetrics(warmer.registry).set_holdings({"docker.io/library/nginx": 1}, 1)
    front = FrontMetrics({"serving": str(cert)})
    front.watch_spool(lambda: 0, 1)
    texts = [webhook.exposition()[0].decode(), warmer.exposition()[0].decode(), front.exposition().decode()]
    webhook.observe_request("mutate", 200, 0.01)  # labelled series appear once used
    texts.append(webhook.exposition()[0].decode())
    names: dict[str, set[str]] = {}
    for text in texts:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                names.setdefault(sample.name, set()).update(set(sample.labels) - {"le"})
    return names


def rules() -> list[dict[str, Any]]:
    rule = one(render("overlays/production"), "PrometheusRule", "ccr-webhook")
    return [r for group in rule["spec"]["groups"] for r in group["rules"]]


def selectors(expr: str) -> list[tuple[str, set[str]]]:
    """The metric names an expression selects, each with the label names its matchers use."""
    found = []
    text = re.sub(r'"[^"]*"', '""', expr)
    text = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", " ", text)
    for match in re.finditer(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(\{[^}]*\})?\s*(\[[^\]]*\])?(\s*\()?", text):
        name, matchers, _, call = match.groups()
        if call or name in PROMQL_WORDS or re.fullmatch(r"\d+[smhdwy]?", name):
            continue
        labels = set(re.findall(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)", matchers or ""))
        found.append((name, labels))
    return found


def known(name: str, labels: set[str], exported: dict[str, set[str]]) -> str | None:
    """Why `name{labels}` is not a series the processes expose, or None when it is."""
    if name in EXTERNAL:
        allowed = EXTERNAL[name] | TARGET_LABELS
    elif name in exported:
        allowed = exported[name] | TARGET_LABELS | {"le"}
    else:
        return f"{name} is exported by no process (webhook/*/metrics.py) and is not a known external series"
    return None if labels <= allowed else f"{name} has no label {sorted(labels - allowed)}"


# -- promtool ------------------------------------------------------------------------------------------


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.fail("promtool is missing: apt-get install prometheus (./dev test installs it)")
    return found


def test_every_alert_fires_when_it_should_and_stays_quiet_otherwise(tmp_path):
    # Annotations do not change when an alert fires; promtool would compare their text in every case.
    quiet = [{key: value for key, value in rule.items() if key != "annotations"} for rule in rules()]
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": [{"name": "ccr-webhook", "rules": quiet}]}))
    shutil.copy(ALERT_TESTS, tmp_path / "alerts.test.yaml")
    result = subprocess.run(
        [promtool(), "test", "rules", "alerts.test.yaml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_shipped_rules_pass_promtool_check_with_their_annotations(tmp_path):
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": [{"name": "ccr-webhook", "rules": rules()}]}))
    result = subprocess.run(
        [promtool(), "check", "rules", "rules.yaml"], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_is_tested_firing_and_the_new_ones_quiet_too():
    cases = yaml.safe_load(ALERT_TESTS.read_text())["tests"]
    fired = {t["alertname"] for case in cases for t in case["alert_rule_test"] if t.get("exp_alerts")}
    quiet = {t["alertname"] for case in cases for t in case["alert_rule_test"] if not t.get("exp_alerts")}
    alerts = {rule["alert"] for rule in rules()}
    assert fired == alerts
    new = {
        "CCRDown",
        "CCRWarmerLeaderMissing",
        "CCRCertificateExpiring",
        "CCRFrontSpoolFull",
        "CCRStorageWriteFailures",
        "CCRUpstreamFailing",
        "CCRWarmFailures",
    }
    assert new <= quiet


# -- no drift between alerts, test series and code -------------------------------------------------------


def test_every_series_an_alert_selects_is_exported_by_the_code_with_those_labels(exported):
    for rule in rules():
        named = selectors(rule["expr"])
        assert named, rule["alert"]
        for name, labels in named:
            problem = known(name, labels, exported)
            assert problem is None, f"{rule['alert']}: {problem}"


def test_the_alert_tests_feed_series_shaped_like_the_real_ones(exported):
    for case in yaml.safe_load(ALERT_TESTS.read_text())["tests"]:
        for series in case["input_series"]:
            name, labels = re.fullmatch(r"(\w+)\{(.*)\}", series["series"]).groups()
            names = set(re.findall(r'(\w+)="', labels))
            problem = known(name, names, exported)
            assert problem is None, f"{case['name']}: {problem}"
            own = EXTERNAL.get(name, exported.get(name, set()))
            assert own <= names, f"{case['name']}: {name} lacks its labels {sorted(own - names)}"


def test_selector_reading_finds_names_and_labels():
    assert selectors('sum by (pod) (rate(a_total{result="error", x=~"1|2"}[5m])) > 0.5 * b or absent(up{c="d"})') == [
        ("a_total", {"result", "x"}),
        ("b", set()),
        ("up", {"c"}),
    ]


def test_a_code_label_that_collides_with_a_scrape_label_is_honoured_by_its_pod_monitor(exported):
    colliding = {name: labels & TARGET_LABELS for name, labels in exported.items() if labels & TARGET_LABELS}
    assert set(colliding) <= {
        f"ccr_webhook_admission_{n}"
        for n in (
            "requests_total",
            "duration_seconds_count",
            "duration_seconds_sum",
            "duration_seconds_bucket",
            "requests_created",
            "duration_seconds_created",
        )
    }
    monitor = one(render("overlays/production"), "PodMonitor", "ccr-webhook")
    (https,) = [e for e in monitor["spec"]["podMetricsEndpoints"] if e["port"] == "https"]
    assert https["honorLabels"] is True  # else `endpoint` (mutate, dry-run) becomes exported_endpoint


# -- the metrics behind the new alerts --------------------------------------------------------------------


def samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {
        tuple(sorted(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name
    }


def test_resolver_lookups_count_by_registry_bounded_to_the_configured_ones():
    metrics = Metrics(registries=["docker.io", "ccr:5000"])
    metrics.count_lookup("error", "docker.io")
    metrics.count_lookup("miss", "ccr:5000")
    for host in ("a.example", "b.example", "c.example"):
        metrics.count_lookup("error", host)
    counted = samples(metrics.exposition()[0].decode(), "ccr_webhook_resolver_lookups_total")
    assert {dict(labels)["registry"] for labels in counted} == {"docker.io", "ccr:5000", "other"}
    assert counted[(("registry", "docker.io"), ("result", "error"))] == 1
    assert counted[(("registry", "other"), ("result", "error"))] == 3
    assert counted[(("registry", "docker.io"), ("result", "hit"))] == 0  # every series there from the start


def test_certificate_expiry_follows_the_file_on_disk_and_skips_an_unreadable_one(tmp_path):
    served = tmp_path / "tls.crt"
    shutil.copy(certificate_file(tmp_path, 10), served)
    metrics = FrontMetrics({"serving": str(served), "peer": str(tmp_path / "missing.crt"), "off": None})
    in_ten_days = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=10)
    (value,) = samples(metrics.exposition().decode(), EXPIRY_METRIC).values()
    assert abs(value - in_ten_days.timestamp()) < 600
    shutil.copy(certificate_file(tmp_path, 90), served)  # renewed: the next scrape says so
    (value,) = samples(metrics.exposition().decode(), EXPIRY_METRIC).values()
    assert abs(value - (in_ten_days + datetime.timedelta(days=80)).timestamp()) < 600
    served.write_text("half a certificate")
    assert samples(metrics.exposition().decode(), EXPIRY_METRIC) == {}


def test_the_webhook_exports_certificate_expiry_in_multiprocess_mode_too(tmp_path, monkeypatch):
    cert = certificate_file(tmp_path, 30)
    metrics = Metrics(certificates={"serving": str(cert)})
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))  # what `serve` sets for its workers
    assert list(samples(metrics.exposition()[0].decode(), EXPIRY_METRIC)) == [(("certificate", "serving"),)]


def test_the_spool_gauges_are_what_the_spool_holds_and_its_cap(tmp_path):
    spool = Spool(str(tmp_path / "spool"), 1000)
    metrics = FrontMetrics()
    metrics.watch_spool(lambda: spool.reserved, spool.max_bytes)
    path = spool.reserve(600)
    text = metrics.exposition().decode()
    assert samples(text, "ccr_front_spool_bytes") == {(): 600}
    assert samples(text, "ccr_front_spool_capacity_bytes") == {(): 1000}
    spool.release(path, 600)
    assert samples(metrics.exposition().decode(), "ccr_front_spool_bytes") == {(): 0}


def test_the_front_exports_its_spool_cap_and_certificates(tmp_path):
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    generate_ca().write(cert, key)
    config = parse_config(
        {
            "ccr": {"registry": "ccr.test"},
            "front": {
                "spoolDir": str(tmp_path / "spool"),
                "spoolMaxBytes": 2**20,
                "tlsCert": str(cert),
                "tlsKey": str(key),
            },
        }
    )
    text = Front(config, max_connections=2).metrics.exposition().decode()
    assert samples(text, "ccr_front_spool_capacity_bytes") == {(): 2**20}
    assert list(samples(text, EXPIRY_METRIC)) == [(("certificate", "serving"),)]


# -- the component from any overlay ---------------------------------------------------------------------


def test_the_monitoring_component_renders_on_top_of_base_and_scrapes_its_plain_front(tmp_path):
    manifests = os.path.relpath(MANIFESTS, tmp_path)
    (tmp_path / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "resources": [f"{manifests}/base"],
                "components": [f"{manifests}/components/monitoring"],
            }
        )
    )
    result = subprocess.run([kubectl(), "kustomize", str(tmp_path)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    objects = [o for o in yaml.safe_load_all(result.stdout) if o]
    front = one(objects, "PodMonitor", "ccr-front")["spec"]["podMetricsEndpoints"]
    assert [e.get("scheme", "http") for e in front] == ["http"]  # base's front serves plain HTTP
    assert one(objects, "PrometheusRule", "ccr-webhook")
    production = one(render("overlays/production"), "PodMonitor", "ccr-front")["spec"]["podMetricsEndpoints"]
    assert [e["scheme"] for e in production] == ["https"]
