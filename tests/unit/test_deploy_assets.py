"""The ops assets under ``deploy/`` agree with the code: every metric the dashboard and the
alerts use exists with the labels they use, and the Kubernetes manifests parse and point their
probes at the ports and paths the processes serve."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY

import gateway.metrics  # noqa: F401 - registers the metrics
import infra.consume  # noqa: F401 - registers the metrics
import outbox.metrics  # noqa: F401 - registers the metrics
from infra.settings import Settings
from switchboard.cli import build_parser

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"

_SERIES = re.compile(r"\b(switchboard_[a-z0-9_]+)\b\s*(\{[^}]*\})?")
_MATCHER = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)")
_GROUPING = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")
_LEGEND = re.compile(r"\{\{\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\}\}")
_ALERT_LABEL = re.compile(r"\$labels\.([a-zA-Z_][a-zA-Z0-9_]*)")


def registered() -> dict[str, frozenset[str]]:
    """Every exposed series name of ours with its labels (``_total`` of counters, ``_bucket``
    (with ``le``), ``_count`` and ``_sum`` of histograms)."""
    series: dict[str, frozenset[str]] = {}
    for name, collector in REGISTRY._names_to_collectors.items():
        if not name.startswith("switchboard_"):
            continue
        labels = frozenset(getattr(collector, "_labelnames", ()))
        series[name] = labels | {"le"} if name.endswith("_bucket") else labels
    return series


def problems(expr: str, legends: list[str], known: dict[str, frozenset[str]]) -> list[str]:
    """What in a PromQL expression (and the labels its legend or annotations print) does not
    exist: unknown series, unknown labels in matchers, groupings or legends."""
    found: list[str] = []
    used = _SERIES.findall(expr)
    if not used:
        found.append(f"no switchboard metric in {expr!r}")
    labels_of_all: frozenset[str] | None = None
    for name, matchers in used:
        if name not in known:
            found.append(f"unknown metric {name}")
            continue
        labels = known[name]
        labels_of_all = labels if labels_of_all is None else labels_of_all & labels
        found += [f"{name} has no label {m}" for m in _MATCHER.findall(matchers) if m not in labels]
    groupings = [g.strip() for group in _GROUPING.findall(expr) for g in group.split(",")]
    available = labels_of_all or frozenset()
    found += [f"grouping label {g} not on {expr!r}" for g in groupings if g and g not in available]
    printable = set(groupings) if groupings else available
    found += [
        f"printed label {label} not in {expr!r}" for label in legends if label not in printable
    ]
    return found


def dashboard_targets() -> Iterator[tuple[str, list[str]]]:
    dashboard = json.loads((DEPLOY / "grafana" / "switchboard.json").read_text())
    for panel in dashboard["panels"]:
        for target in panel.get("targets", ()):
            yield target["expr"], _LEGEND.findall(target.get("legendFormat", ""))


def alert_rules() -> Iterator[dict[str, Any]]:
    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    for group in rules["groups"]:
        yield from group["rules"]


def test_the_fixed_metric_names_exist_with_their_labels() -> None:
    known = registered()
    required = {  # design.md §7 (labels may be added, not removed)
        "switchboard_outbox_messages": {"platform", "state"},
        "switchboard_outbox_oldest_queued_seconds": {"platform"},
        "switchboard_outbox_sends_total": {"platform", "outcome"},
        "switchboard_outbox_send_duration_seconds_bucket": {"platform", "le"},
        "switchboard_outbox_channels": {"state"},
        "switchboard_gateway_spool_depth": set(),
        "switchboard_kafka_consumer_lag": {"consumer"},
        "switchboard_outbox_relay_lag_seconds": set(),
    }
    for name, labels in required.items():
        assert name in known, name
        assert labels <= known[name], (name, known[name])


def test_every_dashboard_query_uses_existing_metrics_and_labels() -> None:
    known = registered()
    targets = list(dashboard_targets())
    assert len(targets) >= 10
    assert [p for expr, legends in targets for p in problems(expr, legends, known)] == []
    used = {name for expr, _ in targets for name, _ in _SERIES.findall(expr)}
    assert {
        "switchboard_outbox_messages",
        "switchboard_outbox_oldest_queued_seconds",
        "switchboard_outbox_sends_total",
        "switchboard_outbox_send_duration_seconds_bucket",
        "switchboard_outbox_channels",
        "switchboard_gateway_spool_depth",
        "switchboard_kafka_consumer_lag",
        "switchboard_outbox_relay_lag_seconds",
    } <= used


def test_every_alert_uses_existing_metrics_and_labels() -> None:
    known = registered()
    rules = list(alert_rules())
    names = [rule["alert"] for rule in rules]
    assert len(names) == len(set(names)), "alert names are unique"
    found = []
    for rule in rules:
        assert {"alert", "expr", "labels", "annotations"} <= rule.keys(), rule
        assert rule["labels"]["severity"] in {"info", "warning", "critical"}
        printed = _ALERT_LABEL.findall(" ".join(rule["annotations"].values()))
        found += problems(rule["expr"], printed, known)
    assert found == []
    exprs = " ".join(rule["expr"] for rule in rules)
    for covered in (  # the list: backlog age, dead letters, spool, throttling, ...
        "switchboard_outbox_oldest_queued_seconds",
        "switchboard_outbox_finished_total",
        "switchboard_gateway_spool_depth",
        'outcome="throttled"',
        'state="suspended"',
        'state="paused"',
        "switchboard_outbox_relay_lag_seconds",
    ):
        assert covered in exprs, covered


@pytest.mark.parametrize(
    ("expr", "legend", "problem"),
    [
        ("max(switchboard_outbox_nope)", [], "unknown metric"),
        ('max(switchboard_outbox_channels{platform="x"})', [], "has no label platform"),
        ("sum by (channel) (switchboard_outbox_messages)", [], "grouping label channel"),
        ("sum by (state) (switchboard_outbox_messages)", ["platform"], "printed label platform"),
        ("up", [], "no switchboard metric"),
    ],
)
def test_the_checker_catches_mistakes(expr: str, legend: list[str], problem: str) -> None:
    assert any(problem in p for p in problems(expr, legend, registered()))


# ---- Kubernetes ------------------------------------------------------------------------------


def manifests() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in sorted((DEPLOY / "k8s").glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    return docs


def one(kind: str, component: str) -> dict[str, Any]:
    (found,) = [
        d
        for d in manifests()
        if d["kind"] == kind
        and d["metadata"].get("labels", {}).get("app.kubernetes.io/component") == component
    ]
    return found


def config() -> dict[str, str]:
    (cm,) = [d for d in manifests() if d["kind"] == "ConfigMap"]
    data: dict[str, str] = cm["data"]
    return data


def port_number(container: dict[str, Any], port: int | str) -> int:
    if isinstance(port, int):
        return port
    (number,) = [p["containerPort"] for p in container["ports"] if p["name"] == port]
    return int(number)


@pytest.mark.parametrize(
    ("component", "setting", "env"),
    [("serve", "http_port", "SWITCHBOARD_HTTP_PORT"), ("outbox", "outbox_http_port", None)],
)
def test_deployments_probe_the_port_and_paths_the_process_serves(
    component: str, setting: str, env: str | None
) -> None:
    deployment = one("Deployment", component)
    pod = deployment["spec"]["template"]
    assert (
        deployment["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    )
    (container,) = pod["spec"]["containers"]
    assert container["args"] == [component]
    env = env or "SWITCHBOARD_OUTBOX_HTTP_PORT"
    expected = int(config()[env])
    assert expected == Settings(_env_file=None).model_dump()[setting], "the default port"
    assert config()["SWITCHBOARD_HTTP_HOST"] == "0.0.0.0", "reachable from the kubelet"
    for probe, path in (
        ("livenessProbe", "/healthz"),
        ("readinessProbe", "/readyz"),
        ("startupProbe", "/healthz"),
    ):
        get = container[probe]["httpGet"]
        assert get["path"] == path, probe
        assert port_number(container, get["port"]) == expected, probe
    annotations = pod["metadata"]["annotations"]
    assert int(annotations["prometheus.io/port"]) == expected
    assert annotations["prometheus.io/path"] == "/metrics"
    requests = container["resources"]["requests"]
    assert {"cpu", "memory"} <= requests.keys()
    refs = {next(iter(r.values()))["name"] for r in container["envFrom"]}
    assert refs == {"switchboard-config", "switchboard-secrets"}


@pytest.mark.parametrize("component", ["serve", "outbox"])
def test_every_deployment_has_a_disruption_budget(component: str) -> None:
    pod_labels = one("Deployment", component)["spec"]["template"]["metadata"]["labels"]
    (budget,) = [
        d
        for d in manifests()
        if d["kind"] == "PodDisruptionBudget"
        and d["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    ]
    assert {"minAvailable", "maxUnavailable"} & budget["spec"].keys()


def test_the_migrate_job_runs_the_migrate_command() -> None:
    job = one("Job", "migrate")
    spec = job["spec"]["template"]["spec"]
    assert spec["restartPolicy"] == "Never"
    (container,) = spec["containers"]
    assert container["args"] == ["migrate"]
    assert {"cpu", "memory"} <= container["resources"]["requests"].keys()
    commands = build_parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    for component in ("serve", "outbox", "migrate"):
        assert component in commands  # type: ignore[operator]


def test_the_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((DEPLOY / "k8s" / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    on_disk = {p.name for p in (DEPLOY / "k8s").glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == on_disk
