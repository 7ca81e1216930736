"""The doctor's text and JSON forms; the JSON validated against docs/schemas/doctor.schema.json."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest

from fwsync.core.enforcing import Enforcement, FamilyReach
from fwsync.core.facts import (
    ContainerFacts,
    ForwardFacts,
    HostFacts,
    ImageFacts,
    ProxyFacts,
    SwarmFacts,
)
from fwsync.core.observed import DockerNetwork, LinkFacts, PublishedPort
from fwsync.doctor.checks import Rules, diagnose
from fwsync.doctor.facts import Report
from fwsync.doctor.report import report_json, report_text
from tests.json_schemas import assert_valid, load_schema, schema_errors
from tests.unit.helpers import policy

pytestmark = pytest.mark.unit



def schema() -> dict[str, Any]:
    return load_schema("doctor")


def validate(document: dict[str, Any]) -> None:
    assert_valid("doctor", document)


def everything_wrong() -> Report:
    """A host with one finding of every check."""
    db = PublishedPort("0.0.0.0", 5432, "tcp", "db", 5432, image="postgres:16")
    db6 = PublishedPort("::", 5432, "tcp", "db", 5432, image="postgres:16",
                        container_ipv6=False)  # docker-proxy serves it
    sink = PublishedPort("127.0.0.1", 15000, "tcp", "sink", 80, image="busybox")
    facts = HostFacts(
        containers=(
            ContainerFacts("db", image="postgres:16", addresses=("198.51.100.131",),
                           ports=(db, db6)),
            ContainerFacts("app", memory_limit=1, restart_policy="always",
                           env=(("DB", "198.51.100.131"),)),
            ContainerFacts("sink", memory_limit=1, restart_policy="always", ports=(sink,)),
        ),
        images=(ImageFacts("sha256:" + "d" * 64, (), size=5_000_000, shared_size=0,
                           containers=0),),
        swap_total_kb=0,
        proxies=(ProxyFacts(9, "tcp", "127.0.0.1", 15000, "198.51.100.130", 80, 0.4, 1.0),),
        enforcement=Enforcement("iptables", (
            FamilyReach(4, False, "`-A FORWARD -j ACCEPT` (FORWARD rule 1) comes before "
                                  "fwsync's jump and may accept"),
            FamilyReach(6, True, "FORWARD rule 1 → FWSYNC-FORWARD"))),
        forward=ForwardFacts(docker_nftables=("ip",), dropping=("ip filter FORWARD",)),
        # A Swarm manager whose ufw (`default deny incoming`, no rules) refuses the other node,
        # with a service's cache on the mesh.
        swarm=SwarmFacts(manager=True, peers=("198.51.100.3",), ufw=policy(), mesh=(
            PublishedPort("0.0.0.0", 6379, "tcp", "", 6379, image="redis:7", service="cache",
                          mode="ingress"),)),
        # A network that adopted the host's uplink bridge.
        networks=(DockerNetwork("lan", "br-lan", subnets=("172.18.0.0/16",)),),
        links=(LinkFacts("br-lan", "bridge", addresses=("203.0.113.1/25",),
                         routes=("0.0.0.0/0",)),),
    )
    return diagnose(facts, Rules(policy=None, problem="rules: no such file", path="rules"))


def test_the_schema_is_a_valid_json_schema() -> None:
    jsonschema.Draft202012Validator.check_schema(schema())


def test_every_check_is_in_the_schema() -> None:
    from fwsync.doctor.checks import CHECKS
    assert schema()["$defs"]["check"]["enum"] == list(CHECKS)


def test_a_report_with_every_check_validates() -> None:
    report = everything_wrong()
    document = report_json(report)
    assert {f["check"] for f in document["findings"]} == set(report.checks)
    assert document["worst"] == "serious"
    assert document["summary"] == {"serious": 10, "warning": 8, "info": 1}
    validate(document)
    json.dumps(document)  # plain JSON types only


def test_a_clean_report_validates() -> None:
    document = report_json(Report(findings=(), checks=("no-swap",),
                                  skipped={"docker-proxy-cpu": "/proc is not readable"}))
    assert document["worst"] is None and document["findings"] == []
    validate(document)


@pytest.mark.parametrize("breakage", [
    lambda d: d.update(worst="fatal"),
    lambda d: d["findings"][0].update(check="made-up"),
    lambda d: d["findings"][0]["details"].update(unexpected=1),
    lambda d: d["findings"][0]["details"].pop("problems"),
    lambda d: next(f for f in d["findings"] if f["check"] == "ungoverned-port")["details"]
    .pop("host_port"),
    lambda d: d["findings"][0].pop("fix"),
])
def test_the_schema_rejects_what_doctor_never_prints(breakage: Any) -> None:
    document = report_json(everything_wrong())
    breakage(document)
    assert schema_errors("doctor", document) != []


def test_text_says_what_and_what_to_do() -> None:
    text = report_text(everything_wrong())
    assert text.splitlines()[0] == "serious [not-enforcing] fwsync (iptables)"
    assert "IPv4: `-A FORWARD -j ACCEPT` (FORWARD rule 1) comes before" in text
    assert "IPv6: FORWARD rule 1" not in text, "only the family that is bypassed"
    assert "    fix: " in text
    assert "serious [swarm-ports] host firewall: 7946/udp" in text
    assert "0.0.0.0:6379/tcp → service cache:6379 (ingress mesh)" in text
    assert "warning [ipv6-proxy-later] host\n    docker-proxy serves IPv6 connections here " \
        "([::]:5432/tcp)" in text
    assert text.endswith("Serious problems found. 14 checks ran: 10 serious, 8 warning, 1 info.")


def test_text_of_a_clean_host() -> None:
    text = report_text(Report(findings=(), checks=("no-swap", "dangling-images"), skipped={}))
    assert text == "No problems found. 2 checks ran: 0 serious, 0 warning, 0 info."


def test_an_unknown_check_name_is_a_usage_error() -> None:
    from typer.testing import CliRunner

    from fwsync.cli import app

    res = CliRunner().invoke(app, ["doctor", "--ignore", "no-swap", "--ignore", "no-such"])
    assert res.exit_code == 2
    assert "no check named no-such" in res.output and "ungoverned-port" in res.output
