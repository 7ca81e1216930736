import pytest

from fwsync.core.build import build_ruleset, expand
from fwsync.core.observed import (
    Bridge,
    DockerNetwork,
    DockerState,
    LinkFacts,
    ProxyCgroup,
    PublishedPort,
)
from fwsync.core.ruleset import DirectOk, Match
from fwsync.rules.model import Endpoint, NetworkScope, PortRange

from .helpers import aset, net, origin, policy, ports, rule

pytestmark = pytest.mark.unit

P5432 = PortRange(low=5432, high=5432)


NO_DOCKER = DockerState()


def matches(pol, docker=NO_DOCKER):
    return [r.match for r in build_ruleset(pol, docker).ruleset.rules]


def test_simple_port_rule_without_proto_is_tcp_and_udp_in_both_families():
    got = matches(policy(rule(2, dst=Endpoint(ports=ports(5432)))))
    assert got == [
        Match(family=4, proto="tcp", dport=P5432), Match(family=4, proto="udp", dport=P5432),
        Match(family=6, proto="tcp", dport=P5432), Match(family=6, proto="udp", dport=P5432),
    ]


def test_rule_without_ports_matches_any_protocol():
    got = matches(policy(rule(2, "deny", src=Endpoint(net=net("203.0.113.0/24")))))
    assert got == [Match(family=4, saddr="203.0.113.0/24")]


def test_ipv4_source_never_yields_an_ipv6_rule():
    got = matches(policy(rule(2, src=Endpoint(net=net("198.51.100.10/32")), proto="tcp",
                              dst=Endpoint(ports=ports(22)))))
    assert {m.family for m in got} == {4}


def test_set_source_splits_by_family_and_skips_a_family_it_lacks():
    office = aset("office", "198.51.100.0/25", "198.51.100.10", "2001:db8:1::/64")
    only4 = aset("only4", "203.0.113.0/24")
    built = build_ruleset(policy(
        rule(2, src=Endpoint(set="office"), proto="tcp", dst=Endpoint(ports=ports(5432))),
        rule(3, src=Endpoint(set="only4"), proto="tcp", dst=Endpoint(ports=ports(22))),
        sets=(office, only4)), DockerState()).ruleset
    assert [(m.match.family, m.match.sset) for m in built.rules] == [
        (4, "office"), (6, "office"), (4, "only4")]
    by_key = {(s.name, s.family): s.elements for s in built.sets}
    # 198.51.100.10 lies inside 198.51.100.0/25: merged, as the kernel rejects overlaps.
    assert by_key == {("office", 4): ("198.51.100.0/25",), ("office", 6): ("2001:db8:1::/64",),
                      ("only4", 4): ("203.0.113.0/24",)}


def test_unused_sets_are_not_sent_to_the_kernel():
    built = build_ruleset(policy(rule(2, dst=Endpoint(ports=ports(80))),
                                 sets=(aset("unused", "198.51.100.0/24"),)), DockerState())
    assert built.ruleset.sets == ()


CONTAINERS = (
    PublishedPort("0.0.0.0", 9100, "tcp", "metrics-1", 9100),
    PublishedPort("::", 9100, "tcp", "metrics-1", 9100),
    PublishedPort("198.51.100.1", 9101, "tcp", "metrics-2", 9100),
    PublishedPort("0.0.0.0", 5432, "tcp", "db", 5432),
    PublishedPort("0.0.0.0", 53, "udp", "metrics-dns", 53),
)


def test_container_rule_matches_its_published_bindings_never_container_addresses():
    got = matches(policy(rule(2, dst=Endpoint(container="metrics-*"), proto="tcp")),
                  DockerState(ports=CONTAINERS))
    assert got == [
        Match(family=4, proto="tcp", dport=PortRange(low=9100, high=9100)),
        Match(family=4, proto="tcp", daddr="198.51.100.1/32",
              dport=PortRange(low=9101, high=9101)),
        Match(family=6, proto="tcp", dport=PortRange(low=9100, high=9100)),
    ]


def test_container_rule_port_filters_bindings_by_published_host_port():
    got = matches(policy(rule(2, dst=Endpoint(container="metrics-2", ports=ports(9100)))),
                  DockerState(ports=CONTAINERS))
    assert got == []  # metrics-2 publishes host port 9101, not 9100


def test_missing_container_matches_nothing_and_says_so():
    built = build_ruleset(policy(rule(7, dst=Endpoint(container="ghost"))),
                          DockerState(ports=CONTAINERS))
    assert built.ruleset.rules == ()
    assert any("ghost" in n and "matches nothing" in n for n in built.notes)


def test_docker_unreachable_keeps_other_rules_and_default():
    built = build_ruleset(policy(rule(2, dst=Endpoint(container="db")),
                                 rule(3, proto="tcp", dst=Endpoint(ports=ports(80)))),
                          DockerState(error="connection refused"))
    assert [r.origin.line for r in built.ruleset.rules] == [3, 3]
    assert built.ruleset.default == "deny"
    assert any("connection refused" in n for n in built.notes)


def test_source_and_destination_ports_multiply_out():
    r = rule(2, proto="udp", src=Endpoint(ports=ports(53, 123)),
             dst=Endpoint(net=net("198.51.100.1/32"), ports=ports((1000, 2000))))
    got = list(expand(r, (), set()))
    assert [(m.sport.low, m.dport.low, m.daddr) for m in got] == [
        (53, 1000, "198.51.100.1/32"), (123, 1000, "198.51.100.1/32")]


def test_no_bridge_is_trusted_by_its_name():
    """docker0, br-<id>, docker_gwbridge and a name of the user's: none is exempt without a
    Docker network whose bridge the host shows as Docker's (tests/unit/test_bridges.py)."""
    built = build_ruleset(policy(), DockerState(extra_bridges=(Bridge("mybridge"),
                                                               Bridge("docker_gwbridge"))))
    assert built.ruleset.bridges == ()
    assert built.ruleset.bridge_subnets == ()
    assert built.notes == ()


HOSTILE_BRIDGE_NAMES = ['"+"', "v*", "*", "e+", 'a"b', "a\\b", "ä", "-x", ".x", "a b", "a\x1b[1m",
                        "x" * 16, "", ".", "a/b", "a:b", "a\u202eb"]


@pytest.mark.parametrize("name", HOSTILE_BRIDGE_NAMES)
def test_a_bridge_name_the_kernel_would_read_as_syntax_is_matched_by_its_subnets(name):
    bridge = Bridge(name, "evil", ("203.0.113.128/28", "2001:db8:5::/64"))
    built = build_ruleset(policy(), DockerState(extra_bridges=(bridge,)))
    assert built.ruleset.bridges == ()
    assert built.ruleset.bridge_subnets == ("203.0.113.128/28", "2001:db8:5::/64")
    [note] = built.notes
    assert "Docker network 'evil' has a bridge named" in note and "203.0.113.128/28" in note
    assert note.isprintable(), "the name is shown escaped, never raw"


def test_a_bridge_that_can_be_named_neither_way_is_left_to_the_dnat_catch_all():
    built = build_ruleset(policy(), DockerState(extra_bridges=(Bridge("v*", "evil", ("junk",)),
                                                               Bridge("ok0", "fine"))))
    assert built.ruleset.bridges == ()
    assert built.ruleset.bridge_subnets == ()
    assert "every DNATed connection is judged" in built.notes[0]


# A routed network (Docker 27+, IPv4 routed, no IPv6), a NAT network whose IPv4 Docker leaves
# open to direct routing (28's nat-unprotected), and containers on them.
NETWORKS = (
    DockerNetwork("routed", "br-2ea2169ac7f2", ((4, "routed"),), ("203.0.113.128/28",)),
    DockerNetwork("lan", "br-1a2b3c4d5e6f", ((4, "nat-unprotected"),),
                  ("203.0.113.144/28", "2001:db8:d0c::/64")),
)
# What the host shows of their bridges: Docker's, as Docker made them.
LINKS = (
    LinkFacts("br-2ea2169ac7f2", "bridge", addresses=("203.0.113.129/28",),
              routes=("203.0.113.128/28",)),
    LinkFacts("br-1a2b3c4d5e6f", "bridge", addresses=("203.0.113.145/28", "2001:db8:d0c::1/64"),
              routes=("203.0.113.144/28", "2001:db8:d0c::/64")),
)
ON_NETWORKS = (
    PublishedPort("203.0.113.130", 80, "tcp", "rweb", 80, networks=("routed",), routed="routed"),
    PublishedPort("::", 8080, "tcp", "rweb", 80, networks=("routed",), container_ipv6=False),
    PublishedPort("0.0.0.0", 5432, "tcp", "db", 5432, networks=("lan",)),
)
P80 = PortRange(low=80, high=80)


def test_routed_networks_go_to_the_rules_and_docker_reopened_ones_stay_protected():
    seen = DockerState(ports=ON_NETWORKS, networks=NETWORKS, links=LINKS)
    built = build_ruleset(policy(), seen).ruleset
    assert built.direct_ok == (DirectOk(4, "203.0.113.128/28", "routed", "routed network",
                                        bridge="br-2ea2169ac7f2"),)
    scoped = policy(direct_routing_off=(NetworkScope(network="la*", origin=origin(3)),))
    built = build_ruleset(scoped, seen).ruleset
    assert [(d.family, d.subnet, d.origin, d.bridge) for d in built.direct_ok] == [
        (4, "203.0.113.128/28", None, "br-2ea2169ac7f2"),
        (4, "203.0.113.144/28", origin(3), "br-1a2b3c4d5e6f"),
        (6, "2001:db8:d0c::/64", origin(3), "br-1a2b3c4d5e6f")]
    assert built.direct_ok[1].label == "10-test.rules:3 protect direct-routing off to network lan"
    hostile = DockerNetwork('a"b\x1b', "br-2ea2169ac7f2", ((4, "routed"),), ("203.0.113.128/28",))
    (ok,) = build_ruleset(policy(), DockerState(networks=(hostile,), links=LINKS)
                          ).ruleset.direct_ok
    assert ok.label == "routed network", "a name that is not plain text stays out of comments"
    off = build_ruleset(policy(protect_direct_routing=False),
                        DockerState(networks=NETWORKS, links=LINKS)).ruleset
    assert off.direct_ok == (), "nothing is dropped: nothing needs an exception"


def test_an_exception_from_direct_routing_needs_the_networks_bridge_as_the_host_shows_it():
    """`protect direct-routing off to network lan`: without the host's word on lan's bridge
    (or with an uplink for a bridge) nothing is excepted, and the plan says why."""
    scoped = policy(direct_routing_off=(NetworkScope(network="lan", origin=origin(3)),))
    built = build_ruleset(scoped, DockerState(ports=ON_NETWORKS, networks=NETWORKS))
    assert built.ruleset.direct_ok == ()
    assert any("direct routing into network 'lan' stays dropped" in n for n in built.notes)


def test_a_container_rule_on_a_routed_network_matches_its_address_and_port():
    got = matches(policy(rule(2, dst=Endpoint(container="rweb"), proto="tcp")),
                  DockerState(ports=ON_NETWORKS, networks=NETWORKS))
    assert got == [Match(family=4, proto="tcp", daddr="203.0.113.130/32", dport=P80),
                   Match(family=6, proto="tcp", dport=PortRange(low=8080, high=8080))]


def test_a_network_rule_matches_its_bindings_and_its_subnets():
    got = matches(policy(rule(2, dst=Endpoint(network="lan", ports=ports(5432)), proto="tcp"),
                         rule(3, dst=Endpoint(network="routed"), proto="tcp")),
                  DockerState(ports=ON_NETWORKS, networks=NETWORKS))
    assert got == [
        Match(family=4, proto="tcp", dport=P5432),
        Match(family=4, proto="tcp", daddr="203.0.113.144/28", dport=P5432),
        Match(family=6, proto="tcp", daddr="2001:db8:d0c::/64", dport=P5432),
        Match(family=6, proto="tcp", dport=PortRange(low=8080, high=8080)),
        Match(family=4, proto="tcp", daddr="203.0.113.128/28"),
    ]
    ghost = build_ruleset(policy(rule(4, dst=Endpoint(network="ghost"))),
                          DockerState(networks=NETWORKS))
    assert ghost.ruleset.rules == () and any("'ghost'" in n for n in ghost.notes)


def test_every_binding_with_a_host_port_is_judged_on_the_input_path():
    built = build_ruleset(policy(), DockerState(ports=ON_NETWORKS, networks=NETWORKS)).ruleset
    assert [(p.match, p.binding) for p in built.input_ports] == [
        (Match(family=4, proto="tcp", dport=P5432), "0.0.0.0:5432/tcp db"),
        (Match(family=6, proto="tcp", dport=PortRange(low=8080, high=8080)),
         "[::]:8080/tcp rweb"),
    ], "not the routed binding: it has no host port"
    local = build_ruleset(policy(), DockerState(ports=(
        PublishedPort("127.0.0.1", 6379, "tcp", "cache", 6379),))).ruleset
    assert local.input_ports[0].match.daddr == "127.0.0.1/32"


def test_ipv6_served_by_docker_proxy_is_said_to_be_open_to_later_publishes():
    """Without dockerd's cgroup (observe/proxy_cgroup.py), the INPUT path lists the bindings
    known at apply: plan, apply and status say so, and why, where docker-proxy serves IPv6.
    With it, the nftables backend's catch-all judges later ports and nothing is said; the
    iptables backend, which has no match for it, still says so (later_proxy_ports)."""
    from fwsync.core.build import later_proxy_ports

    proxied = PublishedPort("::", 8080, "tcp", "web", 80, container_ipv6=False)
    dnated = PublishedPort("::", 8080, "tcp", "web", 80, container_ipv6=True)
    pol = policy(rule(2, dst=Endpoint(ports=ports(8080))))
    why = "dockerd runs in the root cgroup: its sockets are every process's"
    [note] = [n for n in build_ruleset(pol, DockerState(ports=(proxied,), proxy_cgroup_note=why)
                                       ).notes if "published through docker-proxy" in n]
    assert "a port Docker publishes after this apply is open over IPv6" in note and why in note
    assert not any("published through docker-proxy" in n
                   for n in build_ruleset(pol, DockerState(ports=(dnated,))).notes)
    cgroup = ProxyCgroup("system.slice/docker.service", 2, "system.slice/docker.service")
    built = build_ruleset(pol, DockerState(ports=(proxied,), proxy_cgroup=cgroup))
    assert built.ruleset.proxy_cgroup == cgroup
    assert not any("published through docker-proxy" in n for n in built.notes)
    assert later_proxy_ports(built.ruleset, (proxied,), catches=True) is None
    iptables = later_proxy_ports(built.ruleset, (proxied,), catches=False)
    assert iptables is not None and "this backend has no match for it" in iptables
    assert later_proxy_ports(built.ruleset, (dnated,), catches=False) is None


def test_status_says_the_input_paths_window_first_where_the_kernel_has_no_catch_all():
    """status's first lines (core/networks.not_governed) carry the window plan notes: where
    dockerd's cgroup was refused (any backend), and on the iptables backend (no match)."""
    from fwsync.core.build import proxy_gap
    from fwsync.core.networks import not_governed
    from fwsync.present import status_text

    proxied = PublishedPort("::", 8080, "tcp", "web", 80, container_ipv6=False)
    pol = policy(rule(2, dst=Endpoint(ports=ports(8080))))
    why = "dockerd runs in the root cgroup: its sockets are every process's"
    refused = DockerState(ports=(proxied,), proxy_cgroup_note=why)
    built = build_ruleset(pol, refused)
    gap = proxy_gap(built.ruleset, refused, catches=True)
    assert gap is not None and why in gap and gap in built.notes  # plan's note, word for word
    lines = status_text(pol, refused, "yes", True, gaps=not_governed(built.ruleset, "nftables",
                                                                      gap)).splitlines()
    assert lines[2].startswith("Not governed: IPv6 connections to ports published through "
                               "docker-proxy"), lines
    held = DockerState(ports=(proxied,), proxy_cgroup=ProxyCgroup(
        "system.slice/docker.service", 2, "system.slice/docker.service"))
    ruleset = build_ruleset(pol, held).ruleset
    assert proxy_gap(ruleset, held, catches=True) is None  # nftables: the catch-all judges
    iptables = proxy_gap(ruleset, held, catches=False)
    assert iptables is not None and "this backend has no match for it" in iptables
    dnated = PublishedPort("::", 8080, "tcp", "web", 80, container_ipv6=True)
    assert proxy_gap(ruleset, DockerState(ports=(dnated,),
                                          proxy_cgroup=held.proxy_cgroup), False) is None


def test_an_allow_to_a_container_also_matches_its_address_after_dnat_and_a_deny_does_not():
    """The allow names web, not the host port: a port another container holds now fails closed
    until the next apply. A deny keeps matching the port (narrowing it would widen access)."""
    web = (PublishedPort("0.0.0.0", 8080, "tcp", "web", 80,
                         container_addrs=("198.51.100.130", "2001:db8:d0c::2")),
           PublishedPort("::", 8080, "tcp", "web", 80,
                         container_addrs=("198.51.100.130", "2001:db8:d0c::2")))
    allowed = matches(policy(rule(2, dst=Endpoint(container="web"))), DockerState(ports=web))
    assert [(m.family, m.dnat_daddr, m.not_dnat) for m in allowed] == [
        (4, "198.51.100.130/32", False), (4, None, True),
        (6, "2001:db8:d0c::2/128", False), (6, None, True)], "and what docker-proxy serves"
    denied = matches(policy(rule(2, "deny", dst=Endpoint(container="web"))),
                     DockerState(ports=web))
    assert [m.dnat_daddr for m in denied] == [None, None]
    v4only = tuple(p.__class__(**{**p.__dict__, "container_addrs": ("198.51.100.130",)})
                   for p in web)
    proxied = matches(policy(rule(2, dst=Endpoint(container="web"))), DockerState(ports=v4only))
    assert [(m.family, m.dnat_daddr, m.not_dnat) for m in proxied] == [
        (4, "198.51.100.130/32", False), (4, None, True), (6, None, False)]
