"""status's direct-routing section: what Docker does in each network, what fwsync does."""

import pytest

from fwsync.core.build import build_ruleset
from fwsync.core.networks import direct_routing
from fwsync.core.observed import DockerNetwork, DockerState, LinkFacts
from fwsync.present import status_json, status_text
from fwsync.rules.model import NetworkScope

from .helpers import origin, policy

pytestmark = pytest.mark.unit

NETS = DockerState(networks=(
    DockerNetwork("bridge", "docker0"),
    DockerNetwork("routed", "br-2ea2169ac7f2", ((4, "routed"),), ("203.0.113.128/28",)),
    DockerNetwork("lan", "br-1a2b3c4d5e6f", ((4, "nat-unprotected"),),
                  ("203.0.113.144/28", "2001:db8:d0c::/64")),
    DockerNetwork("trusted", "br-99aa", subnets=("203.0.113.160/28",),
                  trusted_host_interfaces=("eth1",)),
), links=tuple(  # every bridge as Docker made it (core/bridges.py)
    LinkFacts(bridge, "bridge", routes=subnets) for bridge, subnets in (
        ("br-2ea2169ac7f2", ("203.0.113.128/28",)),
        ("br-1a2b3c4d5e6f", ("203.0.113.144/28", "2001:db8:d0c::/64")),
        ("br-99aa", ("203.0.113.160/28",)))))


def rows(pol, docker=NETS):
    return [(r.network, r.family, r.fwsync, r.why, r.origin)
            for r in direct_routing(build_ruleset(pol, docker).ruleset, docker)]


def test_routed_networks_go_to_the_rules_and_what_docker_reopens_is_dropped():
    assert rows(policy()) == [
        ("routed", 4, "rules", "routed network routed", None),
        ("lan", 4, "dropped", "protect direct-routing", None),
        ("trusted", 4, "dropped", "protect direct-routing", None),
        ("trusted", 6, "dropped", "protect direct-routing", None),
    ], "plain nat networks (bridge) and families without a special mode are not listed"
    scoped = policy(direct_routing_off=(NetworkScope(network="lan", origin=origin(3)),))
    assert ("lan", 4, "rules", "protect direct-routing off to network lan",
            "rules/10-test.rules:3") in rows(scoped)
    assert ("lan", 6, "rules", "protect direct-routing off to network lan",
            "rules/10-test.rules:3") in rows(scoped), "the rules name it: both families"
    off = rows(policy(protect_direct_routing=False))
    assert {r[2] for r in off} == {"rules"}


def test_status_says_so_in_text_and_json():
    text = status_text(policy(), NETS, "yes", True)
    assert "Direct routing (connections straight to a container's address" in text
    assert ("routed (IPv4, br-2ea2169ac7f2): Docker: routed gateway mode: no NAT, clients "
            "connect to container addresses; your rules and the default decide (routed network "
            "routed)") in text
    assert ("lan (IPv4, br-1a2b3c4d5e6f): Docker: nat-unprotected: every container port open "
            "to direct routing; fwsync drops it (protect direct-routing)") in text
    doc = status_json(policy(), NETS, "yes", True)
    assert doc["direct_routing"]["protected"] is True
    assert doc["direct_routing"]["networks"][0] == {
        "network": "routed", "bridge": "br-2ea2169ac7f2", "family": 4,
        "docker": "routed gateway mode: no NAT, clients connect to container addresses",
        "fwsync": "rules", "why": "routed network routed", "origin": None}
    plain = status_text(policy(), DockerState(networks=(DockerNetwork("bridge", "docker0"),)),
                        "yes", True)
    assert "Direct routing" not in plain, "nothing to say on a plain host"
