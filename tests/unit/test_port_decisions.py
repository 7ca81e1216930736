import pytest

from fwsync.core.build import build_ruleset
from fwsync.core.observed import DockerState, PublishedPort
from fwsync.core.port_decisions import Decision
from fwsync.core.port_decisions import decisions_for as decisions_with
from fwsync.rules.model import Endpoint, Policy

from .helpers import aset, net, policy, ports, rule

pytestmark = pytest.mark.unit

DB = PublishedPort("0.0.0.0", 5432, "tcp", "db", 5432, image="postgres:16")


def decisions_for(pol: Policy, port: PublishedPort) -> list[Decision]:
    ruleset = build_ruleset(pol, DockerState(ports=(port,), containers=(port.container,)))
    return decisions_with(pol, ruleset.ruleset, port)


def test_office_only_database():
    pol = policy(rule(3, proto="tcp", src=Endpoint(set="office"), dst=Endpoint(ports=ports(5432))),
                 sets=(aset("office", "198.51.100.0/25"),))
    got = [(d.action, d.who, d.origin) for d in decisions_for(pol, DB)]
    assert got == [("allow", "$office", "rules/10-test.rules:3"),
                   ("deny", "anyone else", "rules/10-test.rules:1")]


def test_unconditional_rule_stops_the_walk():
    pol = policy(rule(2, proto="tcp", dst=Endpoint(ports=ports(5432))),
                 rule(3, "deny", src=Endpoint(net=net("203.0.113.0/24"))))
    got = [(d.action, d.who) for d in decisions_for(pol, DB)]
    assert got == [("allow", "anyone")]


def test_rules_for_other_ports_and_protocols_do_not_apply():
    pol = policy(rule(2, proto="udp", dst=Endpoint(ports=ports(5432))),
                 rule(3, proto="tcp", dst=Endpoint(ports=ports(80))), default="reject")
    assert [(d.action, d.who) for d in decisions_for(pol, DB)] == [("reject", "anyone")]


def test_localhost_publish_is_never_reachable():
    port = PublishedPort("127.0.0.1", 6379, "tcp", "cache", 6379)
    pol = policy(rule(2, proto="tcp", dst=Endpoint(ports=ports(6379))))
    assert [d.origin for d in decisions_for(pol, port)] == ["protect localhost-publish"]


def test_container_rule_applies_to_its_container_only():
    pol = policy(rule(4, dst=Endpoint(container="metrics-*")))
    assert decisions_for(pol, DB)[0].action == "deny"
    m = PublishedPort("0.0.0.0", 9100, "tcp", "metrics-a", 9100)
    assert decisions_for(pol, m)[0].action == "allow"


def test_a_rule_for_one_family_is_not_listed_for_the_other():
    """`allow from 203.0.113.0/24 to any port 8080` can't match an IPv6 connection: the
    kernel (and explain) deny it, and status must not list it for the `[::]:8080` binding."""
    pol = policy(rule(2, src=Endpoint(net=net("203.0.113.0/24")), dst=Endpoint(ports=ports(8080))),
                 rule(3, src=Endpoint(set="office"), dst=Endpoint(ports=ports(8080))),
                 sets=(aset("office", "198.51.100.0/25"),))
    v4 = PublishedPort("0.0.0.0", 8080, "tcp", "web", 80)
    v6 = PublishedPort("::", 8080, "tcp", "web", 80)
    assert [d.who for d in decisions_for(pol, v4)] == ["203.0.113.0/24", "$office", "anyone else"]
    assert [(d.action, d.who) for d in decisions_for(pol, v6)] == [("deny", "anyone")]
