"""What Docker publishes never blocks a rule change: a published port range is one kernel rule
per container, family, protocol and host address (not one per port), counted against fwsync's
kernel-rule limit; what still does not fit degrades closed, with a note naming the container,
while the user's own over-limit rules are refused as before."""

from __future__ import annotations

import ipaddress
import time

import pytest

from fwsync.core.build import build_ruleset
from fwsync.core.matching import Question, candidates
from fwsync.core.observed import DockerState, PublishedPort
from fwsync.core.ruleset import Match
from fwsync.rules.limits import MAX_KERNEL_RULES
from fwsync.rules.model import Endpoint, PortRange

from .helpers import net, policy, ports, rule

pytestmark = pytest.mark.unit

OFFICE = Endpoint(net=net("198.51.100.0/25"))
ATTACKERS = Endpoint(net=net("203.0.113.0/24"))
# `docker run -p 10000-40000:10000-40000/udp media`: 30,001 bindings in each family.
MEDIA = tuple(PublishedPort(ip, p, "udp", "media", p) for ip in ("0.0.0.0", "::")
              for p in range(10000, 40001))
WEB = PublishedPort("0.0.0.0", 8080, "tcp", "web", 80)
RANGE = PortRange(low=10000, high=40000)


def kernel_rules(built) -> int:  # type: ignore[no-untyped-def]
    return len(built.ruleset.rules) + len(built.ruleset.input_ports)


def test_a_published_range_is_one_kernel_rule_per_family_and_no_wider() -> None:
    t0 = time.monotonic()
    built = build_ruleset(policy(
        rule(2, src=OFFICE, dst=Endpoint(container="media")),
        rule(3, "deny", dst=Endpoint(container="media", ports=ports((20000, 50000)))),
        rule(4, dst=Endpoint(container="web")),
    ), DockerState(ports=(*MEDIA, WEB)))
    took = time.monotonic() - t0
    assert built.problems == ()
    assert [(r.origin.line, r.match) for r in built.ruleset.rules] == [
        (2, Match(family=4, proto="udp", saddr="198.51.100.0/25", dport=RANGE)),
        (3, Match(family=4, proto="udp", dport=PortRange(low=20000, high=40000))),
        (3, Match(family=6, proto="udp", dport=PortRange(low=20000, high=40000))),
        (4, Match(family=4, proto="tcp", dport=PortRange(low=8080, high=8080))),
    ]
    assert [(p.match, p.binding) for p in built.ruleset.input_ports] == [
        (Match(family=4, proto="tcp", dport=PortRange(low=8080, high=8080)),
         "0.0.0.0:8080/tcp web"),
        (Match(family=4, proto="udp", dport=RANGE), "0.0.0.0:10000-40000/udp media"),
        (Match(family=6, proto="udp", dport=RANGE), "[::]:10000-40000/udp media"),
    ]
    # Not wider than the policy, as the matcher behind status and explain reads it: the office
    # gets in on the range and not one port beyond it; nobody else does.
    def first(source: str, port: int) -> str:
        q = Question(4, "udp", port, source=ipaddress.ip_address(source))
        return next((r.action for r, _ in candidates(built.ruleset, q)), "default")

    assert [first("198.51.100.10", p) for p in (10000, 25000, 40000, 9999, 40001)] == [
        "allow", "allow", "allow", "default", "default"]
    assert [first("203.0.113.7", p) for p in (10000, 25000)] == ["default", "deny"]
    assert took < 2.0, f"build took {took:.2f} s for 60k bindings"


# Every other port of 10000-59998: 25,000 bindings that form no range.
SCATTERED = tuple(PublishedPort("0.0.0.0", p, "udp", "media", p) for p in range(10000, 60000, 2))


def test_bindings_that_still_do_not_fit_degrade_closed_and_say_why() -> None:
    built = build_ruleset(policy(
        rule(2, src=OFFICE, dst=Endpoint(container="media")),
        rule(3, "deny", src=ATTACKERS, dst=Endpoint(container="media")),
        rule(4, "limit", dst=Endpoint(container="media")),
        rule(5, proto="tcp", dst=Endpoint(ports=ports(22))),
        rule(6, dst=Endpoint(container="web")),
    ), DockerState(ports=(*SCATTERED, WEB)))
    assert built.problems == ()
    assert kernel_rules(built) < 20
    got = [(r.origin.line, r.action, r.match) for r in built.ruleset.rules]
    widened = PortRange(low=10000, high=59998)
    assert got == [
        # 2: the allow is dropped (the default decides); 3: the deny covers the whole span.
        (3, "deny", Match(family=4, proto="udp", saddr="203.0.113.0/24", dport=widened)),
        # 4: a limit dropped could let a later allow through unlimited: it denies instead.
        (4, "deny", Match(family=4, proto="udp", dport=widened)),
        (5, "allow", Match(family=4, proto="tcp", dport=PortRange(low=22, high=22))),
        (5, "allow", Match(family=6, proto="tcp", dport=PortRange(low=22, high=22))),
        (6, "allow", Match(family=4, proto="tcp", dport=PortRange(low=8080, high=8080))),
    ]
    notes = "\n".join(built.notes)
    for line, what in ((2, "this allow is dropped"), (3, "this deny is widened"),
                       (4, "this limit denies instead")):
        assert any(f"10-test.rules:{line}" in n and "'media'" in n and what in n
                   for n in built.notes), notes
    assert [(p.match, p.binding) for p in built.ruleset.input_ports] == [
        (Match(family=4, proto="tcp", dport=PortRange(low=8080, high=8080)),
         "0.0.0.0:8080/tcp web"),
        (Match(family=4, proto="udp", dport=widened), "0.0.0.0:10000-59998/udp media (and "
                                                       "every port between)"),
    ]
    assert "INPUT path" in notes


def test_the_users_own_rules_over_the_limit_are_still_refused_with_their_place() -> None:
    items = ports(*range(1, MAX_KERNEL_RULES // 4 + 2))
    built = build_ruleset(policy(rule(2, dst=Endpoint(container="media")),
                                 rule(7, dst=Endpoint(ports=items))),
                          DockerState(ports=SCATTERED))
    [problem] = built.problems
    assert (problem.file, problem.line, problem.col) == ("rules/10-test.rules", 7, 1)
    assert "expand to more than 20,000 kernel rules" in problem.message


def test_docker_bindings_never_push_the_users_own_rules_over() -> None:
    """The user's own rules fit on their own: Docker's share is what is left, so a rule
    change is never refused because of what Docker publishes."""
    items = ports(*range(1, MAX_KERNEL_RULES // 4 - 10))
    built = build_ruleset(policy(rule(2, "deny", dst=Endpoint(container="media")),
                                 rule(7, dst=Endpoint(ports=items))),
                          DockerState(ports=SCATTERED))
    assert built.problems == ()
    assert kernel_rules(built) <= MAX_KERNEL_RULES
    assert built.ruleset.rules[0].match.dport == PortRange(low=10000, high=59998)


def test_a_container_rule_too_big_on_its_own_is_refused_not_degraded() -> None:
    """20,001 source ports make a rule too big over even one span of Docker's ports: that is
    the rule's doing, refused at its place, not dropped with a note."""
    many = ports(*range(1, MAX_KERNEL_RULES + 2))
    built = build_ruleset(policy(rule(3, src=Endpoint(ports=many),
                                      dst=Endpoint(container="media"))),
                          DockerState(ports=SCATTERED))
    [problem] = built.problems
    assert (problem.line, problem.col) == (3, 1)
    assert not any("dropped" in n for n in built.notes)
