"""core/bridges.py: a Docker network's bridge is trusted by what the host shows of it, never by
its name."""

from __future__ import annotations

import pytest

from fwsync.core.bridges import TrustedBridge, judge_bridges
from fwsync.core.observed import DockerNetwork, DockerState, LinkFacts

pytestmark = pytest.mark.unit

NET = DockerNetwork("web", "br-0123456789ab", subnets=("172.18.0.0/16", "2001:db8:d1::/64"))
DOCKERS = LinkFacts("br-0123456789ab", "bridge",
                    addresses=("172.18.0.1/16", "2001:db8:d1::1/64", "fe80::1/64"),
                    routes=("172.18.0.0/16", "2001:db8:d1::/64", "fe80::/64"))
VETH = LinkFacts("veth1a2b3c", "veth", master="br-0123456789ab")
# The host's uplink bridge, with the host's address, its LAN route and the default route.
UPLINK = LinkFacts("br-lan", "bridge", addresses=("203.0.113.1/25",),
                   routes=("0.0.0.0/0", "203.0.113.0/25"))


def test_a_bridge_docker_made_is_trusted_for_its_own_subnets() -> None:
    trusted, refused = judge_bridges((NET,), (DOCKERS, VETH))
    assert trusted == (TrustedBridge("br-0123456789ab", "web",
                                     ("172.18.0.0/16", "2001:db8:d1::/64")),)
    assert refused == ()
    assert trusted[0].subnets_for(6) == ("2001:db8:d1::/64",)


@pytest.mark.parametrize(("links", "why"), [
    ((UPLINK,), "carries the address 203.0.113.1/25"),
    ((LinkFacts("br-lan", "bridge", addresses=("172.18.0.1/16",),
                routes=("172.18.0.0/16", "0.0.0.0/0")),), "routes 0.0.0.0/0"),
    ((LinkFacts("br-lan", "bridge", addresses=("172.18.0.1/16",), routes=("172.18.0.0/16",)),
      LinkFacts("eno1", "", master="br-lan")), "its port 'eno1' is a device"),
    ((LinkFacts("br-lan", "vlan"),), "a vlan, not a bridge"),
    ((), "no such interface"),
    (None, "could not be read"),
])
def test_the_uplink_adopted_by_a_docker_network_is_refused(links, why) -> None:
    adopted = DockerNetwork("lan", "br-lan", subnets=("172.18.0.0/16",))
    trusted, refused = judge_bridges((adopted,), links)
    assert trusted == ()
    [r] = refused
    assert r.name == "br-lan" and why in r.why, r.why
    assert "not trusted" in r.note and "'lan'" in r.note


def test_a_network_without_subnets_or_with_an_unwritable_name_is_not_trusted() -> None:
    nosub = DockerNetwork("x", "br-0123456789ab")
    assert judge_bridges((nosub,), (DOCKERS,))[0] == ()
    hostile = DockerNetwork("y", "v*", subnets=("172.18.0.0/16",))
    assert judge_bridges((hostile,), (DOCKERS,)) == ((), ())  # core/build.py's subnets path


def test_an_adopted_bridge_with_a_port_docker_did_not_make_is_refused() -> None:
    """Docker 20.10 strips the IPv4 address of the interface it adopts: the addresses pass, but
    the uplink's port is one more than the network's containers."""
    adopted = DockerNetwork("lan", "br-lan", subnets=("203.0.113.128/28",), user_named=True,
                            endpoints=0)
    stripped = LinkFacts("br-lan", "bridge", addresses=("203.0.113.129/28",),
                         routes=("203.0.113.128/28",))
    uplink_port = LinkFacts("v-attacker", "veth", master="br-lan")
    _trusted, (r,) = judge_bridges((adopted,), (stripped, uplink_port))
    assert "1 port and Docker reports 0 endpoints" in r.why
    one = DockerNetwork("lan", "br-lan", subnets=("203.0.113.128/28",), user_named=True,
                        endpoints=1)
    assert judge_bridges((one,), (stripped, uplink_port))[0] != ()


def test_status_says_first_what_is_not_governed_and_explain_stays_true() -> None:
    from ipaddress import ip_address

    from fwsync.core.build import build_ruleset
    from fwsync.core.explain import Connection, explain
    from fwsync.core.networks import not_governed
    from fwsync.present import status_text

    from .helpers import policy

    adopted = DockerNetwork("lan", "br-lan", subnets=("172.19.0.0/16",))
    docker = DockerState(networks=(NET, adopted), links=(DOCKERS, VETH, UPLINK))
    ruleset = build_ruleset(policy(), docker).ruleset
    gaps = not_governed(ruleset, "iptables")
    assert gaps[0].startswith("Docker network 'lan': its bridge 'br-lan' is not trusted")
    assert gaps[1].startswith("Direct routing into a Docker network created after this apply")
    assert not_governed(ruleset, "nftables") == gaps[:1], "nftables judges every bridge"
    lines = status_text(policy(), docker, "yes", True, gaps=gaps).splitlines()
    assert lines[2].startswith("Not governed: Docker network 'lan'"), lines
    said = explain(ruleset, docker, Connection(ip_address("172.18.0.5"), 5432, "tcp")).notes
    assert any("is in the subnet of Docker network 'web', 172.18.0.0/16" in n for n in said), said
    assert any("'br-lan' is not trusted" in n for n in said), said
