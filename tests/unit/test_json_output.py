"""The JSON documents keep the shape docs/json-output.md promises."""

import pytest

from fwsync.core.diff import NOT_LISTED, diff
from fwsync.core.observed import DockerState, PublishedPort
from fwsync.present import plan_json, plan_text, status_json
from fwsync.rules.model import Endpoint

from .helpers import aset, policy, ports, rule

pytestmark = pytest.mark.unit


def test_plan_json_shape():
    plan = diff("iptables", {"ipv4 chain X": ("a", "b")}, {"ipv4 chain X": ("a",)},
                notes=("n",))
    doc = plan_json(plan, "why")
    assert doc == {"format_version": 1, "backend": "iptables", "backend_reason": "why",
                   "changes": [{"object": "ipv4 chain X", "action": "update", "add": ["b"],
                                "remove": []}],
                   "summary": {"add": 1, "remove": 0, "objects": 1}, "disagreements": [],
                   "notes": ["n"], "warnings": []}


def test_status_json_shape():
    pol = policy(rule(5, proto="tcp", src=Endpoint(set="office"), dst=Endpoint(ports=ports(5432))),
                 sets=(aset("office", "198.51.100.0/25"),))
    docker = DockerState(ports=(PublishedPort("0.0.0.0", 5432, "tcp", "db", 5432,
                                              image="postgres:16"),))
    doc = status_json(pol, docker, "yes", True)
    assert doc["format_version"] == 1 and doc["in_sync"] is True and doc["docker_error"] is None
    (port,) = doc["ports"]
    # The keys of the first version, unchanged; later ones only added.
    later = ("governed", "warnings", "service", "mode", "routed", "docker_proxy")
    assert {k: port[k] for k in port if k not in later} == {
        "host_ip": "0.0.0.0", "host_port": 5432, "proto": "tcp", "container": "db",
        "image": "postgres:16", "container_port": 5432,
        "decisions": [{"action": "allow", "who": "$office", "origin": "rules/10-test.rules:5"},
                      {"action": "deny", "who": "anyone else", "origin": "rules/10-test.rules:1"}],
    }
    assert port["governed"] is True and [w["kind"] for w in port["warnings"]] == ["wide-binding"]
    assert port["service"] is None and port["mode"] is None, "a container's own -p"
    assert port["routed"] is None and port["docker_proxy"] is False
    assert doc["warnings"] == []


def test_a_set_deleted_without_being_listed_says_so() -> None:
    """A big nftables set that a new one replaces is not read (Backend.read): the plan shows
    it deleted, says its elements were not read, and counts none of them as lines."""
    old = "inet fwsync set big_v6_0000aaaa (ipv6_addr)"
    new = "inet fwsync set big_v6_1111bbbb (ipv6_addr)"
    plan = diff("nftables", {new: ("2001:db8::1", "2001:db8::2")}, {old: (NOT_LISTED,)})
    doc = plan_json(plan, "why")
    assert doc["changes"] == [
        {"object": old, "action": "delete", "add": [], "remove": [], "not_listed": True},
        {"object": new, "action": "create", "add": ["2001:db8::1", "2001:db8::2"], "remove": []}]
    assert doc["summary"] == {"add": 2, "remove": 0, "objects": 2}
    text = plan_text(plan, "why")
    assert NOT_LISTED not in text and "elements were not read" in text and "--full" in text
    assert "Plan: 2 to add, 0 to remove, in 2 object(s)." in text
