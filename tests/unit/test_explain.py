"""`explain`: the verdict for one connection, walked through the Ruleset build_ruleset makes."""

from __future__ import annotations

import pytest

from fwsync.core.build import build_ruleset
from fwsync.core.explain import BadQuestion, Explanation, explain, parse_connection
from fwsync.core.observed import DockerState, PublishedPort
from fwsync.present_report import explain_json, explain_text
from fwsync.rules.model import Endpoint, Policy

from .helpers import aset, net, policy, ports, rule

pytestmark = pytest.mark.unit

DB = PublishedPort("0.0.0.0", 5432, "tcp", "db", 80, image="postgres:16")
DB6 = PublishedPort("::", 5432, "tcp", "db", 80, image="postgres:16", container_ipv6=True)
OFFICE = policy(
    rule(3, proto="tcp", src=Endpoint(set="office"), dst=Endpoint(ports=ports(5432))),
    rule(4, "limit", proto="tcp", dst=Endpoint(ports=ports(2222))),
    rule(5, "reject", proto="udp", dst=Endpoint(ports=ports(53))),
    sets=(aset("office", "198.51.100.0/25", "2001:db8:1::/64"),),
)


def ask(pol: Policy, source: str, hostport: str, to: str | None = None,
        *bindings: PublishedPort, docker: DockerState | None = None) -> Explanation:
    state = docker or DockerState(ports=bindings or (DB, DB6))
    return explain(build_ruleset(pol, state).ruleset, state, parse_connection(source, hostport,
                                                                              to))


def test_office_is_allowed_by_its_rule_and_reaches_the_container():
    e = ask(OFFICE, "198.51.100.7", "5432/tcp")
    assert e.outcome == "allow"
    assert e.decided is not None and e.decided.origin == "rules/10-test.rules:3"
    assert [(r.binding.container, r.binding.host_ip) for r in e.reaches] == [("db", "0.0.0.0")]
    assert ask(OFFICE, "2001:db8:1::7", "5432").reaches[0].binding == DB6


def test_anyone_else_gets_the_default():
    e = ask(OFFICE, "203.0.113.7", "5432/tcp")
    assert e.outcome == "deny" and e.decided is not None
    assert e.decided.origin == "rules/10-test.rules:1" and e.decided.rule == "default deny"
    assert ask(OFFICE, "2001:db8:2::7", "5432/tcp").outcome == "deny"


def test_limit_reject_and_protocols():
    ssh = PublishedPort("0.0.0.0", 2222, "tcp", "git", 22)
    dns = PublishedPort("0.0.0.0", 53, "udp", "dns", 53)
    assert ask(OFFICE, "203.0.113.7", "2222/tcp", None, ssh, dns).outcome == "limit"
    assert ask(OFFICE, "203.0.113.7", "53/udp", None, ssh, dns).outcome == "reject"
    assert ask(OFFICE, "203.0.113.7", "2222/udp", None, ssh, dns).outcome == "not-published"
    assert ask(policy(default="reject"), "203.0.113.7", "5432").outcome == "reject"


def test_not_published_says_what_the_rules_would_do():
    e = ask(OFFICE, "198.51.100.7", "5433/tcp")
    assert e.outcome == "not-published" and e.reaches == () and e.decided is None
    assert e.if_published.action == "deny"
    assert any("host's own business" in n for n in e.notes)


def test_destination_address_open_without_to_and_decided_with_it():
    pol = policy(rule(2, proto="tcp", dst=Endpoint(net=net("198.51.100.1/32"),
                                                   ports=ports(5432))))
    e = ask(pol, "203.0.113.7", "5432/tcp")
    assert e.outcome == "deny"
    (unless,) = e.reaches[0].decided.unless
    assert (unless.action, unless.when) == ("allow", "connecting to 198.51.100.1/32")
    assert ask(pol, "203.0.113.7", "5432/tcp", "198.51.100.1").outcome == "allow"
    assert ask(pol, "203.0.113.7", "5432/tcp", "203.0.113.1").outcome == "deny"
    pinned = PublishedPort("198.51.100.1", 5432, "tcp", "db", 80)
    assert ask(pol, "203.0.113.7", "5432", None, pinned).outcome == "allow", \
        "a binding on one address fixes the destination"
    assert ask(pol, "203.0.113.7", "5432", "203.0.113.1", pinned).outcome == "not-published"


def test_bindings_that_disagree_depend_on_the_address():
    a = PublishedPort("198.51.100.1", 8080, "tcp", "a", 80)
    b = PublishedPort("203.0.113.1", 8080, "tcp", "b", 80)
    pol = policy(rule(2, proto="tcp", dst=Endpoint(net=net("198.51.100.1/32"),
                                                   ports=ports(8080))))
    e = ask(pol, "203.0.113.7", "8080", None, a, b)
    assert e.outcome == "depends" and e.decided is None and len(e.reaches) == 2
    only_b = ask(pol, "203.0.113.7", "8080", "203.0.113.1", a, b)
    assert only_b.outcome == "deny" and [r.binding.container for r in only_b.reaches] == ["b"]


def test_interface_and_source_port_are_exceptions_not_answers():
    pol = policy(rule(2, "deny", iface="eth1", dst=Endpoint(ports=ports(5432))),
                 rule(3, src=Endpoint(ports=ports((1024, 65535))), dst=Endpoint(ports=ports(5432))),
                 rule(4, proto="tcp", dst=Endpoint(ports=ports(5432))))
    e = ask(pol, "203.0.113.7", "5432")
    assert e.outcome == "allow" and e.decided is not None
    assert e.decided.origin == "rules/10-test.rules:4"
    assert [(u.origin, u.when) for u in e.decided.unless] == [
        ("rules/10-test.rules:2", "arriving on eth1"),
        ("rules/10-test.rules:3", "from source port 1024:65535")]


def test_loopback_destination_is_the_protection():
    e = ask(OFFICE, "198.51.100.7", "5432", "127.0.0.1")
    assert e.outcome == "deny" and e.decided is not None
    assert e.decided.origin == "protect localhost-publish"
    local = PublishedPort("127.0.0.1", 6379, "tcp", "cache", 6379)
    assert ask(policy(rule(2, dst=Endpoint(ports=ports(6379)))), "198.51.100.7", "6379", None,
               local).outcome == "deny"
    off = policy(rule(2, dst=Endpoint(ports=ports(6379))), protect_localhost_publish=False)
    assert ask(off, "198.51.100.7", "6379", None, local).outcome == "allow"


def test_container_rules_follow_the_container():
    pol = policy(rule(4, src=Endpoint(net=net("198.51.100.10/32")),
                      dst=Endpoint(container="metrics-*", ports=ports(9100))))
    metrics = PublishedPort("0.0.0.0", 9100, "tcp", "metrics-a", 9100)
    other = PublishedPort("0.0.0.0", 9100, "tcp", "web", 9100)
    assert ask(pol, "198.51.100.10", "9100", None, metrics).outcome == "allow"
    assert ask(pol, "198.51.100.11", "9100", None, metrics).outcome == "deny"
    assert ask(pol, "198.51.100.10", "9100", None, other).outcome == "deny", \
        "the rule names metrics-*, not whoever publishes 9100"


def test_ipv6_through_docker_proxy_is_governed_on_the_input_path():
    proxied = PublishedPort("::", 5432, "tcp", "db", 80, container_ipv6=False)
    e = ask(OFFICE, "2001:db8:2::7", "5432", None, DB, proxied)
    assert e.outcome == "deny" and e.reaches[0].governed and e.reaches[0].docker_proxy
    assert e.notes == (), "a deny is final: nothing more to say"
    office = ask(OFFICE, "2001:db8:1::7", "5432", None, DB, proxied)
    assert office.outcome == "allow"
    assert any("docker-proxy" in n and "host's own INPUT firewall" in n for n in office.notes)
    assert ask(OFFICE, "203.0.113.7", "5432", None, DB, proxied).outcome == "deny"


def test_a_routed_binding_is_reached_at_the_container_address():
    routed = PublishedPort("203.0.113.130", 80, "tcp", "rweb", 80, networks=("routed",),
                           routed="routed")
    to_it = policy(rule(2, proto="tcp", src=Endpoint(net=net("198.51.100.0/24")),
                        dst=Endpoint(container="rweb", ports=ports(80))))
    e = ask(to_it, "198.51.100.7", "80", "203.0.113.130", routed)
    assert e.outcome == "allow" and any("without NAT" in n for n in e.notes)
    assert ask(to_it, "203.0.113.7", "80", "203.0.113.130", routed).outcome == "deny"
    assert ask(to_it, "198.51.100.7", "80", "203.0.113.131", routed).outcome == "not-published"


def test_docker_unreachable_answers_from_the_rules_alone():
    e = ask(OFFICE, "198.51.100.7", "5432", docker=DockerState(error="no socket"))
    assert e.outcome == "unknown" and e.if_published.action == "allow"


@pytest.mark.parametrize(("source", "hostport", "to", "words"), [
    ("nonsense", "5432", None, "SOURCE 'nonsense' is not an IP address"),
    ("198.51.100.0/24", "5432", None, "is not an IP address"),
    ("198.51.100.7", "0", None, "from 1 to 65535"),
    ("198.51.100.7", "65536/tcp", None, "from 1 to 65535"),
    ("198.51.100.7", "http", None, "from 1 to 65535"),
    ("198.51.100.7", "5432/icmp", None, "tcp or udp"),
    ("198.51.100.7", "5432", "host", "--to 'host' is not an IP address"),
    ("198.51.100.7", "5432", "2001:db8::1", "different address families"),
])
def test_bad_questions_are_one_line(source: str, hostport: str, to: str | None, words: str):
    with pytest.raises(BadQuestion) as info:
        parse_connection(source, hostport, to)
    assert words in str(info.value) and "\n" not in str(info.value)


def test_text_and_json():
    e = ask(OFFICE, "203.0.113.7", "5432/tcp")
    text = explain_text(e)
    assert text.splitlines()[0] == "203.0.113.7 port 5432/tcp: denied (dropped)"
    assert "reaches 0.0.0.0:5432/tcp → db (postgres:16), container port 80" in text
    doc = explain_json(e)
    assert doc["verdict"] == "deny" and doc["origin"] == "rules/10-test.rules:1"
    assert doc["published"] is True and doc["reaches"][0]["container"] == "db"
    none = explain_json(ask(OFFICE, "203.0.113.7", "9999/udp"))
    assert none["verdict"] == "not-published" and none["origin"] is None
    assert none["published"] is False and none["if_published"]["action"] == "deny"
    assert "if it were published: deny" in explain_text(ask(OFFICE, "203.0.113.7", "9999/udp"))


def test_cli_exit_status(tmp_path, monkeypatch: pytest.MonkeyPatch):
    from typer.testing import CliRunner

    from fwsync.cli import app

    # A socket that never exists: Docker unreachable, answered from the rules alone.
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/none.sock")
    (tmp_path / "10.rules").write_text("default deny\n"
                                       "allow from 198.51.100.0/25 to any port 5432\n")
    runner = CliRunner()
    ok = runner.invoke(app, ["explain", "203.0.113.7", "5432", "--rules", str(tmp_path)])
    assert ok.exit_code == 0, ok.output
    assert ok.stdout.startswith("203.0.113.7 port 5432/tcp: unknown (Docker could not be asked)")
    bad = runner.invoke(app, ["explain", "203.0.113.7", "99999", "--rules", str(tmp_path)])
    assert bad.exit_code == 1 and bad.stdout == ""
    assert bad.stderr.strip().splitlines() == [
        "error: HOSTPORT '99999': the port must be a number from 1 to 65535 (e.g. 5432/tcp)"]
    (tmp_path / "10.rules").write_text("allow from $nowhere to any port 5432\n")
    invalid = runner.invoke(app, ["explain", "203.0.113.7", "5432", "--rules", str(tmp_path)])
    assert invalid.exit_code == 1 and "10.rules:1:12: error:" in invalid.stderr
