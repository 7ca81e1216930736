"""monitoring/fwsync-alerts.yml: promtool accepts it and its unit tests pass (each alert fires
when it must and stays quiet when it must not), and every fwsync metric and label it uses is
one the daemon exports, so a rename on either side fails here and not in a fleet's pager."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from fwsync.core.enforcing import Enforcement, FamilyReach
from fwsync.daemon.loop import Outcome
from fwsync.daemon.metrics import Metrics
from tests.lab import in_ci
from tests.promtool import promtool_path

pytestmark = pytest.mark.unit

MONITORING = Path(__file__).resolve().parents[2] / "monitoring"
ALERTS = MONITORING / "fwsync-alerts.yml"
# Labels Prometheus adds to every scraped series, and the optional one the rules group by.
TARGET_LABELS = {"instance", "job", "fleet"}


def promtool() -> Path:
    found = promtool_path()
    if found is None:
        msg = "promtool is not fetched (run tools/fetch-promtool, or make test)"
        if in_ci():  # a skip would let a broken CI machine pass unchecked rules
            pytest.fail(msg + " (CI=true: this test may not skip)", pytrace=False)
        pytest.skip(msg)
    return found


@pytest.mark.parametrize("args", [("check", "rules", ALERTS.name),
                                  ("test", "rules", "fwsync-alerts.test.yml")],
                         ids=["check", "test"])
def test_promtool_accepts_the_rules_and_their_tests(args: tuple[str, ...]) -> None:
    res = subprocess.run([str(promtool()), *args], cwd=MONITORING, capture_output=True,
                         text=True, timeout=60, check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "SUCCESS" in res.stdout


def alerts() -> list[dict[str, Any]]:
    data = yaml.safe_load(ALERTS.read_text())
    return [r for group in data["groups"] for r in group["rules"] if "alert" in r]


def exported() -> dict[str, set[str]]:
    """Every sample the daemon's registry serves after a reconcile, name → its label names."""
    m = Metrics()
    reach = Enforcement("iptables", (FamilyReach(4, True, "ok"), FamilyReach(6, True, "ok")))
    m.record(Outcome(result="applied", trigger="startup", sources=("startup",), started=0.0,
                     duration=0.1, enforcement=reach, in_sync=True, rules_digest="d",
                     rules_commit="c"))
    names: dict[str, set[str]] = {}
    for family in m.registry.collect():
        for sample in family.samples:
            names.setdefault(sample.name, set()).update(sample.labels)
    return names


def used_labels(rule: dict[str, Any]) -> set[str]:
    """Labels the alert reads: in by/on/without clauses, matchers and its templates."""
    expr = rule["expr"]
    found: set[str] = set()
    for group in re.findall(r"\b(?:by|on|without|ignoring)\s*\(([^)]*)\)", expr):
        found.update(n.strip() for n in group.split(",") if n.strip())
    found.update(re.findall(r"(\w+)\s*=~?\s*\"", expr))
    for text in rule.get("annotations", {}).values():
        found.update(re.findall(r"\$labels\.(\w+)", text))
    return found


def test_the_alerts_use_only_what_the_daemon_exports() -> None:
    served = exported()
    checked = set()
    for rule in alerts():
        names = set(re.findall(r"\bfwsync_\w+", rule["expr"]))
        assert names <= served.keys(), f"{rule['alert']}: {names - served.keys()} not exported"
        if not names:
            continue  # up{job="fwsync"}: Prometheus' own series
        labels = set().union(*(served[n] for n in names)) | TARGET_LABELS
        assert used_labels(rule) <= labels, \
            f"{rule['alert']}: {used_labels(rule) - labels} is no label of {names}"
        checked |= names
    assert {"fwsync_enforcing", "fwsync_in_sync", "fwsync_rules_info"} <= checked


def test_every_alert_says_how_bad_and_names_the_host() -> None:
    for rule in alerts():
        assert rule["labels"]["severity"] in ("critical", "warning"), rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
        if "absent(" not in rule["expr"]:  # an absent target has no instance to name
            assert "$labels.instance" in rule["annotations"]["summary"], rule["alert"]
