"""The exposure report's surprises: each one caused, and each one not caused by a near miss."""

from __future__ import annotations

from io import StringIO

import pytest
from rich.console import Console

from fwsync.core.exposure_report import ExposureReport, exposure_report
from fwsync.core.observed import DockerState, PublishedPort
from fwsync.present import status_text
from fwsync.present_report import print_status
from fwsync.rules.model import Endpoint, Policy

from .helpers import aset, net, policy, ports, rule

pytestmark = pytest.mark.unit


def db(host_ip: str = "0.0.0.0", port: int = 5432, cport: int = 5432, *,
       name: str = "db", ipv6: bool | None = None) -> PublishedPort:
    return PublishedPort(host_ip, port, "tcp", name, cport, image="postgres:16",
                         container_ipv6=ipv6)


def kinds(pol: Policy, *bindings: PublishedPort, containers: tuple[str, ...] = ()
          ) -> list[str]:
    report = exposure_report(pol, DockerState(ports=bindings, containers=containers))
    return [s.kind for row in report.ports for s in row.surprises] + \
        [s.kind for s in report.surprises]


PG = Endpoint(ports=ports(5432))


def test_a_binding_wider_than_the_one_address_the_rules_allow():
    pol = policy(rule(2, proto="tcp", dst=Endpoint(net=net("198.51.100.1/32"), ports=ports(5432))))
    report = exposure_report(pol, DockerState(ports=(db(),)))
    (surprise,) = report.ports[0].surprises
    assert surprise.kind == "wide-binding" and surprise.origin == "rules/10-test.rules:2"
    assert "only to 198.51.100.1/32" in surprise.message
    assert "-p 198.51.100.1:5432:5432" in surprise.message
    assert kinds(pol, db("198.51.100.1")) == [], "published exactly where it is allowed"
    subnet = policy(rule(2, dst=Endpoint(net=net("198.51.100.0/25"), ports=ports(5432))))
    (s,) = exposure_report(subnet, DockerState(ports=(db(),))).ports[0].surprises
    assert "publish it on this host's address in 198.51.100.0/25" in s.message
    two = policy(rule(2, dst=Endpoint(net=net("198.51.100.1/32"), ports=ports(5432))),
                 rule(3, dst=Endpoint(net=net("203.0.113.1/32"), ports=ports(5432))))
    assert kinds(two, db()) == [], "allowed on two addresses: no one binding would do"


def test_a_binding_wider_than_the_one_network_allowed_to_connect():
    office = policy(rule(2, proto="tcp", src=Endpoint(set="office"), dst=PG),
                    sets=(aset("office", "198.51.100.0/25", "2001:db8:1::/64"),))
    assert kinds(office, db()) == ["wide-binding"]
    assert kinds(office, db("::", ipv6=True)) == ["wide-binding"], "per family: one v6 network"
    two = policy(rule(2, proto="tcp", src=Endpoint(net=net("198.51.100.0/25")), dst=PG),
                 rule(3, proto="tcp", src=Endpoint(net=net("203.0.113.0/24")), dst=PG))
    assert kinds(two, db()) == [], "two networks: no single address to bind to"
    adjacent = policy(rule(2, src=Endpoint(net=net("198.51.100.0/25")), dst=PG),
                      rule(3, src=Endpoint(net=net("198.51.100.128/25")), dst=PG))
    assert kinds(adjacent, db()) == ["wide-binding"], "two halves are one network"
    anyone = policy(rule(2, proto="tcp", dst=PG))
    assert kinds(anyone, db()) == []
    default_allow = policy(rule(2, src=Endpoint(net=net("198.51.100.0/25")), dst=PG),
                           default="allow")
    assert kinds(default_allow, db()) == [], "the default lets everyone else in too"


def test_ipv6_through_docker_proxy_is_governed_and_ufw_decides_after_an_allow():
    pol = policy(rule(2, proto="tcp", src=Endpoint(net=net("2001:db8:1::/64")), dst=PG),
                 rule(3, proto="tcp", src=Endpoint(net=net("198.51.100.0/25")), dst=PG))
    report = exposure_report(pol, DockerState(ports=(db("::", ipv6=False),)))
    row = report.ports[0]
    assert row.governed, "judged on the INPUT path, where docker-proxy listens"
    assert [s.kind for s in row.surprises] == ["ipv6-docker-proxy", "wide-binding"]
    assert "ufw allow 5432/tcp" in row.surprises[0].message
    assert "ipv6-docker-proxy" not in kinds(pol, db("::", ipv6=True)), "DNATed"
    assert "ipv6-docker-proxy" not in kinds(pol, db("::")), "not observed: no guess"
    assert "ipv6-docker-proxy" not in kinds(pol, db("0.0.0.0", ipv6=False)), "IPv4 is DNATed"
    assert kinds(policy(rule(2, dst=PG)), db("::", ipv6=False)) == ["ipv6-docker-proxy"]
    assert kinds(policy(default="allow"), db("::", ipv6=False)) == ["ipv6-docker-proxy"]
    assert kinds(policy(rule(2, "limit", dst=PG)), db("::", ipv6=False)) == [
        "ipv6-docker-proxy"]
    assert kinds(policy(), db("::", ipv6=False)) == ["nobody-allowed"], \
        "fwsync lets nobody in: the host firewall has nothing left to decide"


def test_observed_bindings_say_whether_the_container_has_ipv6():
    from fwsync.observe.docker import ports_of, ports_of_listed

    def listed(v6: str) -> dict[str, object]:
        return {"Names": ["/db"], "Image": "pg", "Id": "abc",
                "Ports": [{"IP": "::", "PrivatePort": 80, "PublicPort": 5432, "Type": "tcp"}],
                "NetworkSettings": {"Networks": {"bridge": {"GlobalIPv6Address": v6}}}}

    assert ports_of_listed(listed(""))[0].container_ipv6 is False
    assert ports_of_listed(listed("2001:db8:d0c::2"))[0].container_ipv6 is True
    inspected = {"Name": "/db", "NetworkSettings": {
        "Ports": {"80/tcp": [{"HostIp": "::", "HostPort": "5432"}]},
        "Networks": {"a": {"GlobalIPv6Address": ""}, "b": {"GlobalIPv6Address": "2001:db8::5"}}}}
    assert ports_of(inspected)[0].container_ipv6 is True


def test_container_rule_whose_container_is_missing():
    pol = policy(rule(4, dst=Endpoint(container="metrics-*", ports=ports(9100))))
    report = exposure_report(pol, DockerState(ports=(db(),), containers=("db",)))
    (s,) = report.surprises
    assert (s.kind, s.origin) == ("missing-container", "rules/10-test.rules:4")
    assert "'metrics-*'" in s.message
    metrics = PublishedPort("0.0.0.0", 9100, "tcp", "metrics-a", 9100)
    assert "missing-container" not in kinds(pol, db(), metrics)
    running_unpublished = kinds(pol, db(), containers=("db", "metrics-a"))
    assert running_unpublished == ["nobody-allowed", "container-port-unpublished"]
    other_port = PublishedPort("0.0.0.0", 9200, "tcp", "metrics-a", 9200)
    assert "container-port-unpublished" in kinds(pol, other_port)
    down = exposure_report(pol, DockerState(error="cannot reach Docker"))
    assert down.surprises == (), "Docker unreachable: which containers run is unknown"


def test_localhost_publish_with_its_protection_off():
    local = db("127.0.0.1")
    assert kinds(policy(protect_localhost_publish=False), local) == ["localhost-publish-off"]
    assert kinds(policy(), local) == [], "protected: nobody from outside, as intended"


def test_rule_that_names_the_container_port_instead_of_the_published_one():
    pol = policy(rule(2, proto="tcp", dst=Endpoint(ports=ports(80))))
    web = PublishedPort("0.0.0.0", 8080, "tcp", "web", 80)
    report = exposure_report(pol, DockerState(ports=(web,)))
    (s,) = report.ports[0].surprises
    assert s.kind == "container-port-rule" and "8080/tcp" in s.message
    assert kinds(pol, PublishedPort("0.0.0.0", 80, "tcp", "web", 80)) == []
    both = policy(rule(2, proto="tcp", dst=Endpoint(ports=ports(80, 8080))))
    assert kinds(both, web) == []
    udp_rule = policy(rule(2, proto="udp", dst=Endpoint(ports=ports(80))))
    assert kinds(udp_rule, web) == ["nobody-allowed"], "another protocol: not the confusion"


def test_rule_for_the_other_protocol():
    dns = PublishedPort("0.0.0.0", 53, "udp", "dns", 53)
    tcp_only = policy(rule(2, proto="tcp", dst=Endpoint(ports=ports(53))))
    report = exposure_report(tcp_only, DockerState(ports=(dns,)))
    (s,) = report.ports[0].surprises
    assert s.kind == "other-protocol-rule" and "allows 53/tcp" in s.message
    assert kinds(policy(rule(2, dst=Endpoint(ports=ports(53)))), dns) == [], "proto any"
    assert kinds(policy(rule(2, proto="tcp", dst=Endpoint(ports=ports(54)))), dns) == [
        "nobody-allowed"]


def test_published_but_nobody_allowed():
    assert kinds(policy(), db()) == ["nobody-allowed"]
    assert kinds(policy(default="reject"), db()) == ["nobody-allowed"]
    assert kinds(policy(default="allow"), db()) == []
    deny_first = policy(rule(2, "deny", src=Endpoint(net=net("203.0.113.0/24"))),
                        rule(3, dst=PG))
    assert kinds(deny_first, db()) == []


def _report() -> tuple[ExposureReport, DockerState, Policy]:
    pol = policy(rule(5, proto="tcp", src=Endpoint(set="office"), dst=PG),
                 rule(6, dst=Endpoint(container="ghost")),
                 sets=(aset("office", "198.51.100.0/25", "2001:db8:1::/64"),))
    docker = DockerState(ports=(db(), db("::", ipv6=False)), containers=("db",))
    return exposure_report(pol, docker), docker, pol


def test_plain_status_lists_rows_rules_and_warnings():
    _, docker, pol = _report()
    text = status_text(pol, docker, "yes", True)
    assert "0.0.0.0:5432/tcp → db (postgres:16)" in text
    assert "allow $office (rules/10-test.rules:5)" in text
    assert "warning: IPv6 connections reach it through docker-proxy" in text
    assert "rules/10-test.rules:6: warning: no running container matches 'ghost'" in text


def test_terminal_status_is_a_table_with_the_same_facts():
    report, docker, _ = _report()
    out = StringIO()
    print_status(Console(file=out, width=160, force_terminal=False), report, docker, "yes",
                 False, ["Daemon: not running"])
    text = out.getvalue()
    assert "Published" in text and "Who may connect" in text and "Warnings" in text
    assert "0.0.0.0:5432/tcp" in text and "[::]:5432/tcp" in text
    assert "10-test.rules:5" in text and "no — run `fwsync plan`" in text
    assert "docker-proxy" in text and "Daemon: not running" in text
    assert "rules/10-test.rules:6: warning: no running container matches" in text


def test_narrow_terminal_puts_warnings_under_the_table():
    report, docker, _ = _report()
    out = StringIO()
    print_status(Console(file=out, width=80, force_terminal=False), report, docker, "yes", True,
                 [])
    lines = out.getvalue().splitlines()
    assert all(len(line) <= 80 for line in lines), "nothing cut off on the right"
    assert "Warnings" not in lines[3] and any("(1 warning)" in line for line in lines)
    assert any(line.startswith("  [::]:5432/tcp: IPv6 connections reach it") for line in lines)
