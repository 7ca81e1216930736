"""status and explain answer one question ("what happens to a connection to this binding?")
and must give one answer: a property test over generated policies and bindings. status's view
is read as a person reads it — each row's decisions, first matching one first — and held equal
to explain's verdict for every source, per family, port and protocol."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from fwsync.core.build import build_ruleset
from fwsync.core.explain import Connection, explain
from fwsync.core.exposure_report import exposure_report
from fwsync.core.observed import DockerState, PublishedPort
from fwsync.rules.model import Policy
from fwsync.rules.syntax import parse_sources

pytestmark = pytest.mark.unit

DEFINES = ("define v4set 198.51.100.0/25\ndefine v6set 2001:db8:1::/64\n"
           "define mixed 203.0.113.0/24, 2001:db8:2::/64\n")
SOURCES = ["", "from 198.51.100.0/25 ", "from 203.0.113.0/24 ", "from 198.51.100.10 ",
           "from 2001:db8:1::/64 ", "from 2001:db8::7 ", "from $v4set ", "from $v6set ",
           "from $mixed "]
TARGETS = ["", "to 198.51.100.1 ", "to 2001:db8::1 "]
PORTS = ["port 8080", "port 5432", "port 8000:8100"]
PROTOS = ["", " proto tcp", " proto udp"]
BINDINGS = [PublishedPort(ip, port, proto, "web", 80, container_ipv6=True)
            for ip in ("0.0.0.0", "::", "198.51.100.1", "2001:db8::1", "127.0.0.1")
            for port in (8080, 5432, 8050) for proto in ("tcp", "udp")]
CLIENTS = {4: [ipaddress.ip_address(a) for a in
               ("198.51.100.10", "198.51.100.200", "203.0.113.7", "192.0.2.1")],
           6: [ipaddress.ip_address(a) for a in
               ("2001:db8:1::5", "2001:db8:2::5", "2001:db8::7", "2001:db8:ffff::1")]}

rule_lines = st.builds(
    lambda action, src, dst, port, proto: f"{action} {src}{dst}{port}{proto}".replace(
        f"{action} port", f"{action} to any port"),
    st.sampled_from(["allow", "deny", "reject", "limit"]), st.sampled_from(SOURCES),
    st.sampled_from(TARGETS), st.sampled_from(PORTS), st.sampled_from(PROTOS))


def _policy(lines: list[str], default: str) -> Policy:
    text = DEFINES + f"default {default}\n" + "\n".join(
        line if " to " in line else line.replace(" port", " to any port", 1) for line in lines)
    result = parse_sources([("gen.rules", text + "\n")], lambda _p: "")
    # A source of one family to a destination of the other is refused by the parser (it can
    # never match): not a policy to judge.
    assume(result.ok and result.policy is not None)
    assert result.policy is not None
    return result.policy


def _admits(policy: Policy, who: str, client: ipaddress.IPv4Address | ipaddress.IPv6Address
            ) -> bool | None:
    """Whether a decision's `who` covers the client for sure (None: only under a condition
    status names, such as `(to ADDR)` on an all-address binding)."""
    if " (to " in who or " port " in who or " on " in who:
        return None
    if who in ("anyone", "anyone else", "other hosts"):
        return True
    if who.startswith("$"):
        return any(client in net for net in policy.sets[who[1:]].networks)
    return client in ipaddress.ip_network(who)


def _family_of(policy: Policy, who: str) -> set[int]:
    word = who.split(" ")[0]
    if word in ("anyone", "other"):
        return {4, 6}
    if word.startswith("$"):
        return {n.version for n in policy.sets[word[1:]].networks}
    return {ipaddress.ip_network(word).version}


@settings(max_examples=150, deadline=None)
@given(st.lists(rule_lines, max_size=6), st.sampled_from(["deny", "allow", "reject"]),
       st.lists(st.sampled_from(BINDINGS), min_size=1, max_size=6, unique=True))
def test_status_and_explain_give_one_verdict(lines: list[str], default: str,
                                             bindings: list[PublishedPort]) -> None:
    policy = _policy(lines, default)
    docker = DockerState(ports=tuple(bindings), containers=("web",))
    ruleset = build_ruleset(policy, docker).ruleset
    for row in exposure_report(policy, docker).ports:
        b = row.port
        for d in row.decisions:
            assert b.family in _family_of(policy, d.who), \
                f"{d.origin} ({d.who}) listed for {b.host_ip}:{b.host_port}/{b.proto}"
        for client in CLIENTS[b.family]:
            to = None if b.all_addresses else ipaddress.ip_address(b.host_ip)
            answer = explain(ruleset, docker, Connection(client, b.host_port, b.proto, to))
            [reach] = [r for r in answer.reaches if r.binding == b]
            status = next((d for d in row.decisions if _admits(policy, d.who, client)), None)
            assert status is not None, (b, client, row.decisions)
            assert (status.action, status.origin) == (reach.decided.action,
                                                      reach.decided.origin), \
                f"{client} → {b.host_ip}:{b.host_port}/{b.proto}: status {status}, " \
                f"explain {reach.decided}"
