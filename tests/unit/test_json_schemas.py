"""Real `--format json` documents validate against docs/schemas/, and every schema there is a
valid JSON Schema that docs/json-output.md links to."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fwsync.backends.iptables_render import render_family
from fwsync.backends.nftables_render import render as render_nftables
from fwsync.cli import app
from fwsync.core.activity import Activity
from fwsync.core.build import build_ruleset
from fwsync.core.counts import RuleCount
from fwsync.core.diff import NOT_LISTED, diff
from fwsync.core.explain import explain, parse_connection
from fwsync.core.observed import DockerState, PublishedPort
from fwsync.daemon.state import read_state, write_state
from fwsync.present import counts_json, plan_json, status_json
from fwsync.present_report import explain_json
from fwsync.rules.load import load_rules
from fwsync.rules.model import Policy
from tests.json_schemas import SCHEMA_DIR, assert_valid, load_schema, schema_errors, schema_names
from tests.steps import REPO_RULES

pytestmark = pytest.mark.unit

DOC = SCHEMA_DIR.parent / "json-output.md"
PORTS = (
    PublishedPort("0.0.0.0", 5432, "tcp", "db", 5432, image="postgres:16", container_ipv6=False),
    PublishedPort("::", 5432, "tcp", "db", 5432, image="postgres:16", container_ipv6=False),
    PublishedPort("127.0.0.1", 6379, "tcp", "cache", 6379, image="redis"),
    PublishedPort("0.0.0.0", 8080, "tcp", "web", 80, image="nginx"),
    PublishedPort("0.0.0.0", 2222, "tcp", "git", 22, image="gitea"),
)
DOCKER = DockerState(ports=PORTS, containers=("cache", "db", "git", "web"))


def repo_policy() -> Policy:
    result = load_rules(REPO_RULES)
    assert result.policy is not None
    return result.policy


@pytest.mark.parametrize("name", schema_names())
def test_schema_is_valid_and_documented(name: str) -> None:
    from jsonschema.validators import validator_for

    schema = load_schema(name)
    validator_for(schema).check_schema(schema)
    assert schema.get("$id") == f"{name}.schema.json"
    assert f"schemas/{name}.schema.json" in DOC.read_text(), f"link {name}'s schema from {DOC}"


def test_check_output(tmp_path: Path) -> None:
    runner = CliRunner()
    good = runner.invoke(app, ["check", str(REPO_RULES), "--format", "json"])
    assert good.exit_code == 0, good.output
    assert_valid("check", json.loads(good.stdout))
    rules = tmp_path / "10.rules"
    rules.write_text("allow 80/tcp\nallow 80/tcp\n")
    shadowed = runner.invoke(app, ["check", str(rules), "--format", "json"])
    doc = json.loads(shadowed.stdout)
    assert shadowed.exit_code == 0 and doc["diagnostics"][0]["severity"] == "warning"
    assert_valid("check", doc)
    rules.write_text("allow from $nowhere to any port 5432\n")
    bad = runner.invoke(app, ["check", str(rules), "--format", "json"])
    doc = json.loads(bad.stdout)
    assert bad.exit_code == 1 and doc["diagnostics"][0]["severity"] == "error"
    assert_valid("check", doc)


@pytest.mark.parametrize("backend", ["iptables", "nftables"])
def test_plan_output(backend: str) -> None:
    ruleset = build_ruleset(repo_policy(), DOCKER).ruleset
    if backend == "iptables":
        desired = {**render_family(ruleset, 4, "DOCKER-USER"),
                   **render_family(ruleset, 6, "FORWARD")}
    else:
        desired = render_nftables(ruleset)
    creating = diff(backend, desired, {}, notes=("a note",))
    assert_valid("plan", plan_json(creating, "--backend " + backend))
    stale = {key: ("-A OLD",) for key in desired}
    stale["ipv4 chain GONE" if backend == "iptables" else "inet fwsync chain gone"] = ("x",)
    warnings = load_rules(REPO_RULES).diagnostics
    assert_valid("plan", plan_json(diff(backend, desired, stale), "auto: ...", warnings))
    assert_valid("plan", plan_json(diff(backend, desired, desired), "auto: ..."))
    if backend == "nftables":  # a big set replaced whole, not read
        unread = {**desired, "inet fwsync set office_v4_0123abcd (ipv4_addr)": (NOT_LISTED,)}
        doc = plan_json(diff(backend, desired, unread), "auto: ...")
        assert doc["changes"][0]["not_listed"] is True
        assert_valid("plan", doc)


def test_status_output(tmp_path: Path) -> None:
    policy = repo_policy()
    doc = status_json(policy, DOCKER, "yes, iptables backend (...)", True)
    state = tmp_path / "daemon.json"
    write_state({"pid": 1, "started": 1.0, "updated": 2.0, "stopped": None, "ready": True,
                 "docker_connected": True, "reconciles": 3, "drift_repairs": 0,
                 "last_drift": None, "rules": "/etc/fwsync/rules", "backend": "auto",
                 "last_reconcile": {"at": 2.0, "trigger": "start", "result": "applied"}}, state)
    doc["daemon"] = read_state(state)
    first = doc["ports"][0]["decisions"][0]["origin"]
    counts_json(doc, (RuleCount(first, "allow 80", "allow", 3),
                      RuleCount("protect localhost-publish", "-", "deny", 0)),
                {(first, "allow"): Activity(3, 1.7e9, 1.7e9 + 60)}, 1.8e9)
    assert_valid("status", doc)
    assert doc["ports"][0]["decisions"][0]["connections"] == 3
    assert doc["rules"][0]["last_connection"] == "2023-11-14T22:14:20Z"
    assert doc["idle_rules"] == [{"origin": first, "since": "2023-11-14T22:14:20Z"}]
    counts_json(doc, "iptables-save -c failed", {}, 1.8e9)
    assert_valid("status", doc)
    assert {w["kind"] for p in doc["ports"] for w in p["warnings"]} >= {
        "ipv6-docker-proxy", "wide-binding", "container-port-rule"}
    down = status_json(policy, DockerState(error="cannot reach Docker"), "no", None)
    down["daemon"] = None
    assert_valid("status", down)


def test_explain_output() -> None:
    ruleset = build_ruleset(repo_policy(), DOCKER).ruleset
    outcomes = set()
    for source, port, to in [("198.51.100.7", "5432/tcp", None), ("203.0.113.7", "5432", None),
                             ("203.0.113.7", "2222", None), ("203.0.113.7", "9/udp", None),
                             ("2001:db8:2::7", "5432", None), ("198.51.100.7", "6379", None),
                             ("198.51.100.7", "80", "198.51.100.1")]:
        doc = explain_json(explain(ruleset, DOCKER, parse_connection(source, port, to)))
        assert_valid("explain", doc)
        outcomes.add(doc["verdict"])
    down = DockerState(error="no socket")
    assert_valid("explain", explain_json(explain(ruleset, down,
                                                 parse_connection("198.51.100.7", "80"))))
    assert outcomes == {"allow", "deny", "limit", "not-published"}


def test_a_document_that_breaks_the_schema_is_caught() -> None:
    doc = status_json(repo_policy(), DOCKER, "yes", True)
    assert schema_errors("status", doc) == ["at /: 'daemon' is a required property"]
    doc["daemon"] = None
    doc["ports"][0]["decisions"][0]["action"] = "permit"
    (error,) = schema_errors("status", doc)
    assert error.startswith("at /ports/0/decisions/0/action: 'permit' is not one of")
