"""Alerts and workbook: built on the KQL files, using the metric names and labels the code emits."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from shared import metrics
from shared.outcomes import Outcome
from tests.infra.bicep import INFRA, BicepFile

QUERIES = INFRA / "queries"
KQL_FILES = sorted(QUERIES.rglob("*.kql"))
ALERTS = BicepFile(INFRA / "modules" / "alerts.bicep")
WORKBOOK = BicepFile(INFRA / "modules" / "workbook.bicep")

METRIC_NAMES = {
    metrics.JOBS_TOTAL, metrics.JOB_DURATION, metrics.QUEUE_DEPTH, metrics.QUEUE_OLDEST_AGE,
    metrics.RATELIMIT_WAIT, metrics.EMAIL_POLL_LAG, metrics.WHATSAPP_RECONCILIATION_PENDING,
}
# The outcome label of banxway_jobs_total (shared.metrics.job_outcome_label).
OUTCOME_LABELS = {"completed", "deduplicated", "retried", "rate_limited", "dead_lettered", "failed"}

# Issue "7/8 Operations": the views operators need, each one query file.
OPERATIONS_QUERIES = {
    "failures_by_queue_and_reason", "job_duration_percentiles", "throughput", "poison_depth",
    "ratelimit_waits", "email_poll_lag", "reconciliation_pending",
}
# Issue "8/8 Infrastructure": the alerts.
EXPECTED_ALERTS = {"dead-letters", "queue-age", "failure-rate", "ratelimit-saturation", "poll-lag"}


def _loaded(bicep: Path) -> set[Path]:
    text = bicep.read_text(encoding="utf-8")
    return {(bicep.parent / rel).resolve() for rel in re.findall(r"loadTextContent\('([^']+)'\)", text)}


def _rules() -> list[dict[str, object]]:
    rules = ALERTS.env["rules"]
    assert isinstance(rules, list)
    return rules


def _query_text(rule: dict[str, object]) -> str:
    match = re.fullmatch(r"loadTextContent\((.+)\)", str(rule["query"]))
    assert match, rule["query"]
    return (INFRA / "modules" / match.group(1)).read_text(encoding="utf-8")


def test_operations_queries_exist() -> None:
    assert {p.stem for p in QUERIES.glob("*.kql")} >= OPERATIONS_QUERIES


def test_every_query_file_is_used_by_an_alert_or_the_workbook() -> None:
    used = _loaded(INFRA / "modules" / "alerts.bicep") | _loaded(INFRA / "modules" / "workbook.bicep")
    assert {p.resolve() for p in KQL_FILES} == used


def test_workbook_shows_every_operations_query() -> None:
    shown = {Path(p).stem for p in re.findall(r"\.\./queries/([a-z_]+)\.kql", str(WORKBOOK.env["panels"]))}
    assert shown >= OPERATIONS_QUERIES
    resource = WORKBOOK.resource_config("workbook")
    assert resource["kind"] == "shared"
    assert resource["properties"]["category"] == "workbook"


@pytest.mark.parametrize("path", KQL_FILES, ids=[str(p.relative_to(QUERIES)) for p in KQL_FILES])
def test_queries_use_the_metric_names_the_code_emits(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    used = set(re.findall(r"banxway_[a-z_]+", text))
    assert used <= METRIC_NAMES, f"unknown metrics: {sorted(used - METRIC_NAMES)}"


@pytest.mark.parametrize("path", KQL_FILES, ids=[str(p.relative_to(QUERIES)) for p in KQL_FILES])
def test_queries_use_known_outcome_labels(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    for listed in re.findall(r"dynamic\(\[([^\]]*)\]\)", text):
        labels = set(re.findall(r'"([a-z_]+)"', listed))
        assert labels <= OUTCOME_LABELS, sorted(labels - OUTCOME_LABELS)


def test_outcome_labels_cover_the_job_boundary_outcomes() -> None:
    assert {o.value for o in Outcome} <= OUTCOME_LABELS


@pytest.mark.parametrize("path", KQL_FILES, ids=[str(p.relative_to(QUERIES)) for p in KQL_FILES])
def test_queries_have_balanced_brackets_and_quotes(path: Path) -> None:
    code = "\n".join(line.split("//")[0] for line in path.read_text(encoding="utf-8").splitlines())
    for opening, closing in ("()", "[]", "{}"):
        assert code.count(opening) == code.count(closing), f"{path.name}: unbalanced {opening}{closing}"
    assert code.count('"') % 2 == 0


def test_the_alerts_the_issue_asks_for_exist() -> None:
    assert {rule["key"] for rule in _rules()} == EXPECTED_ALERTS


@pytest.mark.parametrize("key", sorted(EXPECTED_ALERTS))
def test_alert_measure_and_dimension_come_from_its_query(key: str) -> None:
    rule = next(r for r in _rules() if r["key"] == key)
    text = _query_text(rule)
    projected = re.findall(r"\|\s*project\s+([^\n]+)", text)
    assert projected, f"{key}: the alert query must end in a project of its columns"
    columns = {c.split("=")[0].strip() for c in projected[-1].split(",")}
    assert {rule["measure"], rule["dimension"], "timestamp"} <= columns
    # The rule's window bounds the query; a hard-coded ago() would fight it.
    assert "ago(" not in text


def test_dead_letter_alert_fires_on_any_poison_message() -> None:
    rule = next(r for r in _rules() if r["key"] == "dead-letters")
    assert rule["threshold"] == 0
    assert 'endswith "-poison"' in _query_text(rule)


def test_alert_rules_split_by_dimension_and_notify_the_action_group() -> None:
    body = ALERTS.resource_config("alertRules")
    criterion = body["properties"]["criteria"]["allOf"][0]
    assert criterion["operator"] == "GreaterThan"
    assert criterion["dimensions"][0]["values"] == ["*"]
    assert body["properties"]["scopes"] == ["appInsightsId"]
    assert body["properties"]["autoMitigate"] is True
    assert ALERTS.eval(body["properties"]["actions"]["actionGroups"][0]) == "actionGroup.id"


@pytest.mark.parametrize(
    "param", ["queueAgeThresholdSeconds", "failureRateThresholdPercent", "rateLimitWaitThresholdSeconds",
              "pollLagThresholdSeconds"],
)
def test_alert_thresholds_are_parameters_of_main(main: BicepFile, param: str) -> None:
    assert param in main.parameters
    assert main.module_params("alerts")[param] == main.env[param]
