"""The monitoring the installation ships: the dashboard and the alerts cover every metric, PodMonitors real ports."""

from __future__ import annotations

import json
import re

from tests.support.kustomize import (
    MANIFESTS,
    WORKLOADS,
    find,
    one,
    pod_spec,
    render,
    selects,
    webhook_config,
)
from webhook.front.metrics import FrontMetrics

METRICS = {
    "ccr_webhook_admission_requests_total",
    "ccr_webhook_admission_duration_seconds",
    "ccr_webhook_decisions_total",
    "ccr_webhook_resolver_lookups_total",
    "ccr_webhook_warm_queue_depth",
    "ccr_webhook_warm_in_flight",
    "ccr_webhook_warm_bytes_total",
    "ccr_webhook_warm_duration_seconds",
    "ccr_webhook_warms_total",
    "ccr_webhook_warm_failures_total",
    "ccr_webhook_ccr_bytes",
    "ccr_webhook_evictions_total",
    "ccr_webhook_evicted_bytes_total",
    "ccr_webhook_in_use_digests",
    "ccr_webhook_tls_certificate_expiry_timestamp_seconds",
    "ccr_webhook_storage_bytes",
    "ccr_webhook_storage_budget_bytes",
}


def metric_names(text: str) -> set[str]:
    return {re.sub(r"_(bucket|sum|count)$", "", m) for m in re.findall(r"\bccr_(?:webhook|front)_[a-z_]+", text)}


# What the front's /metrics serves (its samples), as the dashboard and the alerts name it.
FRONT_METRICS = metric_names(
    "\n".join(
        line
        for line in FrontMetrics().exposition().decode().splitlines()
        if not line.startswith("#") and "_created" not in line
    )
)


def test_dashboard_covers_every_metric_and_names_no_other():
    dashboard = json.loads((MANIFESTS / "components/monitoring/dashboard.json").read_text())
    exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p.get("targets", []))
    assert metric_names(exprs) == METRICS | FRONT_METRICS
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    config_map = one(render("overlays/production"), "ConfigMap", "ccr-webhook-dashboard")
    assert json.loads(config_map["data"]["ccr-webhook.json"]) == dashboard


def test_alerts_cover_errors_latency_warm_failures_and_a_ccr_down():
    rule = one(render("overlays/production"), "PrometheusRule", "ccr-webhook")
    alerts = {r["alert"]: r for group in rule["spec"]["groups"] for r in group["rules"]}
    assert {"CCRWebhookErrors", "CCRWebhookAdmissionSlow", "CCRWarmFailures", "CCRDown", "CCRWebhookDown"} <= set(
        alerts
    )
    for name, alert in alerts.items():  # the metrics they name: tests/test_alerts.py, against the code
        assert alert["expr"].count("(") == alert["expr"].count(")"), name
        assert alert["labels"]["severity"] in ("warning", "critical") and alert["annotations"]["summary"], name
    assert "ccr_webhook_admission_duration_seconds_bucket" in alerts["CCRWebhookAdmissionSlow"]["expr"]
    # the latency alert fires before the deadline is reached
    threshold = float(re.search(r">\s*([0-9.]+)\s*$", alerts["CCRWebhookAdmissionSlow"]["expr"].strip())[1])
    assert threshold < webhook_config(render("overlays/production")).webhook.deadline_seconds


def test_pod_monitors_scrape_ports_that_exist():
    objects = render("overlays/production")
    for monitor in find(objects, "PodMonitor"):
        pods = [
            o
            for o in objects
            if o["kind"] in WORKLOADS
            and selects(monitor["spec"]["selector"], o["spec"]["template"]["metadata"]["labels"])
        ]
        ports = {p["name"] for w in pods for c in pod_spec(w)["containers"] for p in c.get("ports", [])}
        for endpoint in monitor["spec"]["podMetricsEndpoints"]:
            assert endpoint["port"] in ports, f"{monitor['metadata']['name']}: {endpoint['port']}"
