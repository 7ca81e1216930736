"""The verifier's walk through hand-written listings of each backend (fwsync.verify.kernel), and
the bypasses of issue 18 item 6 it must see: an early RETURN / accept in fwsync's own forward
chain, a flushed nftables input chain."""

from __future__ import annotations

from dataclasses import replace

import pytest

from fwsync.backends import iptables_render, nft_state, nft_table
from fwsync.core.build import build_ruleset
from fwsync.core.observed import (
    DockerNetwork,
    DockerState,
    LinkFacts,
    ProxyCgroup,
    PublishedPort,
)
from fwsync.rules.syntax import parse_sources
from fwsync.verify import iptables as verify_iptables
from fwsync.verify import kernel
from fwsync.verify.agree import disagreements
from fwsync.verify.connection import Connection
from fwsync.verify.kernel import kernel_verdict
from tests.unit.verify_helpers import rendered

pytestmark = pytest.mark.unit

IPT = {
    "ipv4 jump": ("DOCKER-USER rule 1 -j FWSYNC-FORWARD", "FORWARD rule 1 -j DOCKER-USER",
                  "INPUT rule 1 -j FWSYNC-INPUT"),
    "ipv4 set office": ("198.51.100.0/25", "203.0.113.9"),
    "ipv4 chain FWSYNC-FORWARD": (
        "-A FWSYNC-FORWARD -m conntrack ! --ctstate NEW -j RETURN",
        "-A FWSYNC-FORWARD -i br-+ -j RETURN",
        "-A FWSYNC-FORWARD -o br-+ -g FWSYNC-INBOUND",
        "-A FWSYNC-FORWARD -m conntrack --ctstate DNAT -g FWSYNC-INBOUND"),
    "ipv4 chain FWSYNC-INBOUND": (
        "-A FWSYNC-INBOUND -m conntrack ! --ctstate DNAT -j FWSYNC-DIRECT",
        "-A FWSYNC-INBOUND -p tcp -m set --match-set fws4-office-0a1b2c src -m conntrack "
        '--ctorigdstport 8000:8100 -m comment --comment "r:1 allow" -j RETURN',
        "-A FWSYNC-INBOUND -s 198.51.100.0/24 -p tcp -m conntrack --ctorigdstport 8080 -m "
        "hashlimit --hashlimit-above 10/min --hashlimit-burst 5 --hashlimit-mode srcip "
        "--hashlimit-name fwsync-2 --hashlimit-htable-size 8192 --hashlimit-htable-max 65535 "
        "--hashlimit-htable-expire 30000 -j REJECT --reject-with tcp-reset",
        "-A FWSYNC-INBOUND -s 198.51.100.0/24 -p tcp -m conntrack --ctorigdstport 8080 -j RETURN",
        "-A FWSYNC-INBOUND -p udp -j REJECT --reject-with icmp-port-unreachable",
        "-A FWSYNC-INBOUND -j DROP"),
    "ipv4 chain FWSYNC-DIRECT": (
        "-A FWSYNC-DIRECT -m addrtype --dst-type LOCAL -j RETURN",
        "-A FWSYNC-DIRECT -j DROP"),
    "ipv4 chain FWSYNC-INPUT": (
        "-A FWSYNC-INPUT -i lo -j RETURN",
        "-A FWSYNC-INPUT -p tcp -m tcp --dport 8000:8100 -g FWSYNC-INBOUND"),
}


def conn(saddr: str = "198.51.100.7", dport: int = 8080, **kw: object) -> Connection:
    return Connection(4, kw.pop("proto", "tcp"), saddr, "203.0.113.1", dport,  # type: ignore[arg-type]
                      **kw)  # type: ignore[arg-type]


def test_names_are_the_backends() -> None:
    assert kernel.IPT_FORWARD == iptables_render.FORWARD_CHAIN
    assert kernel.IPT_INPUT == iptables_render.INPUT_CHAIN
    assert str(iptables_render.JUDGED_LABEL) == verify_iptables.IPT_JUDGED_LABEL
    assert kernel.NFT_PREFIX.split() == [nft_table.FAMILY, nft_table.TABLE]
    assert kernel.NFT_TABLE_KEY == nft_state.TABLE_KEY


@pytest.mark.parametrize(("c", "verdict"), [
    (conn("198.51.100.7", 8050), "allow"),  # in $office, port in 8000:8100
    (conn("203.0.113.9", 8050), "allow"),  # the set's single address
    (conn("198.51.100.200", 8050), "deny"),  # outside the set
    (conn("198.51.100.200", 8080), "limit"),  # the hashlimit pair
    (conn("192.0.2.1", 8080, proto="udp"), "reject"),
    (conn(new=False), "unjudged"),  # not NEW: Docker's business
    (conn(iif="br-0a1b"), "unjudged"),  # `br-+` wildcard: from a Docker network
    (conn("198.51.100.7", 8050, oif="eth1"), "allow"),  # not a bridge: the DNAT rule
    (conn("198.51.100.7", 8050, oif="br-1", path="direct"), "deny"),  # not DNATed: dropped
    (conn("198.51.100.7", 8050, oif=None, path="input", local=True), "allow"),  # jump+return
    (conn("198.51.100.7", 9000, oif=None, path="input", local=True), "unjudged"),  # no port
    (conn("198.51.100.7", 8050, oif=None, path="input", iif="lo", local=True), "unjudged"),
])
def test_iptables_walk(c: Connection, verdict: str) -> None:
    assert kernel_verdict("iptables", IPT, c) == verdict


def test_iptables_unknown_line_is_unreadable_where_it_is_met() -> None:
    odd = "-A FWSYNC-INBOUND -m statistic --mode random --probability 0.5 -j RETURN"
    state = {**IPT, "ipv4 chain FWSYNC-INBOUND": (odd, *IPT["ipv4 chain FWSYNC-INBOUND"])}
    assert kernel_verdict("iptables", state, conn()) == f"unreadable: {odd} (match -m statistic)"
    assert kernel_verdict("iptables", state, conn(new=False)) == "unjudged"  # never met


def test_iptables_missing_set_or_jump() -> None:
    no_set = {k: v for k, v in IPT.items() if k != "ipv4 set office"}
    assert kernel_verdict("iptables", no_set, conn(dport=8050)).startswith("unreadable: ")
    no_jump = {k: v for k, v in IPT.items() if k != "ipv4 jump"}
    assert kernel_verdict("iptables", no_jump, conn()) == "unjudged"
    not_reached = {**IPT, "ipv4 jump": (*IPT["ipv4 jump"], "not reached: ACCEPT first")}
    assert kernel_verdict("iptables", not_reached, conn()) == "unjudged"


# A `limit` as the nftables backend renders one (tests/golden/nftables.txt): the source set
# `seen` updated, a source it could not take (full) dropped, the bucket's meter, the accept.
LIMIT_V4 = (
    "meta l4proto tcp ct original proto-dst 8080 ip saddr 198.51.100.0/24 update "
    '@seen.2_v4_0a1b2c3d { ip saddr } comment "r:2 limit"',
    "meta l4proto tcp ct original proto-dst 8080 ip saddr 198.51.100.0/24 ip saddr != "
    '@seen.2_v4_0a1b2c3d drop comment "r:2 limit"',
    "meta l4proto tcp ct original proto-dst 8080 ip saddr 198.51.100.0/24 update "
    "@limit.2_v4_0a1b2c3d { ip saddr limit rate over 10/minute burst 5 } reject with tcp "
    'reset comment "r:2 limit"',
    "meta nfproto ipv4 meta l4proto tcp ct original proto-dst 8080 ip saddr "
    '198.51.100.0/24 accept comment "r:2 limit"')
_V6_KEY = "ip6 saddr & ffff:ffff:ffff:ffff::"
LIMIT_V6 = (
    f"meta l4proto tcp ct original proto-dst 8080 update @seen.2_v6_0a1b2c3d {{ {_V6_KEY} }}",
    f"meta l4proto tcp ct original proto-dst 8080 {_V6_KEY} != @seen.2_v6_0a1b2c3d drop",
    f"meta l4proto tcp ct original proto-dst 8080 update @limit.2_v6_0a1b2c3d {{ {_V6_KEY} "
    "limit rate over 10/minute burst 5 } reject with tcp reset",
    "meta nfproto ipv6 meta l4proto tcp ct original proto-dst 8080 accept")

NFT = {
    "inet fwsync set office_v4_0a1b2c3d (ipv4_addr)": ("198.51.100.0/25", "203.0.113.9"),
    "inet fwsync set ports_1_0_0a1b2c3d (inet_service)": ("22", "8000-8100"),
    "inet fwsync set seen.2_v4_0a1b2c3d (ipv4_addr, per-source limit)": (),
    "inet fwsync set limit.2_v4_0a1b2c3d (ipv4_addr, per-source limit)": (),
    "inet fwsync set seen.2_v6_0a1b2c3d (ipv6_addr, per-source limit)": (),
    "inet fwsync set limit.2_v6_0a1b2c3d (ipv6_addr, per-source limit)": (),
    "inet fwsync chain forward": (
        "hook forward priority -1 policy accept",
        "ct state != new return",
        "meta iifname br-* return",
        "meta oifname br-* jump inbound",
        "ct status dnat jump inbound"),
    "inet fwsync chain input": (
        "hook input priority -1 policy accept",
        "meta iifname lo return",
        "meta nfproto ipv4 meta l4proto tcp ct original proto-dst 8000-8100 jump inbound "
        'comment "fwsync docker-proxy 0.0.0.0:8000/tcp web"'),
    "inet fwsync chain inbound": (
        "regular chain",
        'ct status & dnat != dnat jump direct comment "fwsync protect direct-routing"',
        "ct original ip daddr 127.0.0.0/8 drop",
        "meta l4proto tcp ct original proto-dst @ports_1_0_0a1b2c3d ip saddr "
        '@office_v4_0a1b2c3d accept comment "r:1 allow"',
        *LIMIT_V4,
        *LIMIT_V6,
        "meta l4proto udp reject with icmpx port-unreachable",
        'drop comment "default deny"'),
    "inet fwsync chain direct": (
        "regular chain",
        "fib daddr type local return",
        "drop"),
}


@pytest.mark.parametrize(("c", "verdict"), [
    (conn("198.51.100.7", 8050), "allow"),
    (conn("203.0.113.9", 22), "allow"),
    (conn("198.51.100.200", 8050), "deny"),
    (conn("198.51.100.200", 8080), "limit"),
    (conn("192.0.2.1", 8080), "deny"),  # outside the limit's network: no group of it
    (conn("192.0.2.1", 8080, proto="udp"), "reject"),
    (conn(new=False), "unjudged"),
    (conn(iif="br-0a1b"), "unjudged"),  # `br-*` wildcard
    (conn("198.51.100.7", 8050, oif="br-1", path="direct"), "deny"),
    (conn("198.51.100.7", 8050, oif=None, path="input", local=True), "allow"),
    (conn("198.51.100.7", 9000, oif=None, path="input", local=True), "unjudged"),
    (conn("198.51.100.7", 8050, oif=None, path="input", iif="lo", local=True), "unjudged"),
    (Connection(6, "tcp", "2001:db8::7", "2001:db8::1", 8050), "deny"),  # `ip saddr`: IPv4
    (Connection(6, "tcp", "2001:db8::7", "2001:db8::1", 8080), "limit"),  # the /64's meter
    (Connection(6, "udp", "2001:db8::7", "2001:db8::1", 8080), "reject"),  # tcp only
])
def test_nftables_walk(c: Connection, verdict: str) -> None:
    assert kernel_verdict("nftables", NFT, c) == verdict


def _inbound(*lines: str) -> dict[str, tuple[str, ...]]:
    return {**NFT, "inet fwsync chain inbound": ("regular chain", *lines, "drop")}


def test_nftables_limit_is_a_limit_only_while_a_full_source_set_refuses() -> None:
    """The seen set's update takes the source in while it has room (then `!= @seen drop`
    passes it on to the meter: "limit"); full, it does not, and the drop must refuse it."""
    v6 = Connection(6, "tcp", "2001:db8::7", "2001:db8::1", 8080)
    assert kernel_verdict("nftables", _inbound(*LIMIT_V6), v6) == "limit"
    full_accepted = (LIMIT_V6[0], LIMIT_V6[1].replace(" drop", " accept"), *LIMIT_V6[2:])
    assert kernel_verdict("nftables", _inbound(*full_accepted), v6) == (
        f"unreadable: {LIMIT_V6[0]} (a set of sources that, full, does not refuse one)")
    # Without the seen set's update: whether the source is in it depends on traffic.
    assert kernel_verdict("nftables", _inbound(*LIMIT_V6[1:]), v6) == (
        f"unreadable: {LIMIT_V6[1]} (a lookup in a set that traffic fills, not updated "
        "with this connection's source before)")


def test_nftables_limit_keys_must_be_the_same_network() -> None:
    """`& ffff:ffff:ffff:ffff::` keys the sets by the source's /64: a lookup by another key
    (the whole address) is not answered by the update, and a mask that is no prefix is
    unreadable."""
    v6 = Connection(6, "tcp", "2001:db8::7", "2001:db8::1", 8080)
    whole = LIMIT_V6[1].replace(" & ffff:ffff:ffff:ffff::", "")
    assert kernel_verdict("nftables", _inbound(LIMIT_V6[0], whole, *LIMIT_V6[2:]), v6) \
        .startswith(f"unreadable: {whole} (a lookup in a set that traffic fills")
    odd = LIMIT_V6[0].replace("ffff:ffff:ffff:ffff::", "ffff::ffff")
    assert kernel_verdict("nftables", _inbound(odd, *LIMIT_V6[1:]), v6) == (
        f"unreadable: {odd} (mask ffff::ffff is not a prefix)")


IPT6 = {
    "ipv6 jump": ("DOCKER-USER rule 1 -j FWSYNC-FORWARD",),
    "ipv6 chain FWSYNC-FORWARD": (
        "-A FWSYNC-FORWARD -m conntrack --ctstate DNAT -g FWSYNC-INBOUND",),
    "ipv6 chain FWSYNC-INBOUND": (
        "-A FWSYNC-INBOUND -p tcp -m conntrack --ctorigdstport 2222 -m hashlimit "
        "--hashlimit-above 10/min --hashlimit-burst 5 --hashlimit-mode srcip --hashlimit-name "
        "fwsync-2 --hashlimit-htable-size 8192 --hashlimit-htable-max 65535 "
        "--hashlimit-htable-expire 30000 --hashlimit-srcmask 64 -m comment --comment "
        '"r:5 rule 5" -j REJECT --reject-with tcp-reset',
        '-A FWSYNC-INBOUND -p tcp -m conntrack --ctorigdstport 2222 -m comment --comment "r:5" '
        "-j RETURN",
        "-A FWSYNC-INBOUND -j DROP"),
}


def test_iptables_hashlimit_per_network_and_bounded_table() -> None:
    v6 = Connection(6, "tcp", "2001:db8::7", "2001:db8::1", 2222)
    assert kernel_verdict("iptables", IPT6, v6) == "limit"
    assert kernel_verdict("iptables", IPT6, Connection(6, "tcp", "2001:db8::7", "2001:db8::1",
                                                       2223)) == "deny"
    key = "ipv6 chain FWSYNC-INBOUND"
    for option, bad in (("--hashlimit-srcmask 64", "--hashlimit-srcmask 129"),
                        ("--hashlimit-htable-max 65535", "--hashlimit-htable-max lots")):
        odd = IPT6[key][0].replace(option, bad)
        state = {**IPT6, key: (odd, *IPT6[key][1:])}
        assert kernel_verdict("iptables", state, v6) == f"unreadable: {odd} ({bad})"


def test_nftables_unknown_expression_and_dormant_table() -> None:
    odd = "numgen random mod 2 0 accept"
    state = {**NFT, "inet fwsync chain inbound": ("regular chain", odd)}
    assert kernel_verdict("nftables", state, conn()) == f"unreadable: {odd} (numgen)"
    dormant = {**NFT, kernel.NFT_TABLE_KEY: (kernel.NFT_DORMANT,)}
    assert kernel_verdict("nftables", dormant, conn()) == "unjudged"


POLICY = "define office 198.51.100.0/25\ndefault deny\nallow from $office to any port 8080\n"
PORTS = (PublishedPort("0.0.0.0", 8080, "tcp", "web", 80, container_ipv6=True),
         PublishedPort("::", 8080, "tcp", "web", 80, container_ipv6=False))


def _ruleset():  # type: ignore[no-untyped-def]
    result = parse_sources([("gen.rules", POLICY)], lambda _p: "")
    assert result.policy is not None
    return build_ruleset(result.policy, DockerState(ports=PORTS, containers=("web",))).ruleset


@pytest.mark.parametrize("backend", ["iptables", "nftables"])
def test_rendered_objects_agree(backend: str) -> None:
    ruleset = _ruleset()
    assert disagreements(ruleset, PORTS, backend, rendered(backend, ruleset)) == ()


LIMITED = ("default deny\nlimit from 198.51.100.0/24 to any port 8080 proto tcp\n"
           "limit from 2001:db8:1::/48 to any port 8080 proto tcp\n")


@pytest.mark.parametrize("backend", ["iptables", "nftables"])
def test_rendered_limits_agree(backend: str) -> None:
    """What the renderers make of `limit` today (nftables: seen set, drop, meter, accept;
    iptables: hashlimit with a bounded table, IPv6 per /64) reads as "limit"."""
    result = parse_sources([("gen.rules", LIMITED)], lambda _p: "")
    assert result.policy is not None
    ruleset = build_ruleset(result.policy, DockerState(ports=PORTS, containers=("web",))).ruleset
    state = rendered(backend, ruleset)
    assert disagreements(ruleset, PORTS, backend, state) == ()
    v6 = Connection(6, "tcp", "2001:db8:1:2::5", "2001:db8::1", 8080, oif="docker0")
    assert kernel_verdict(backend, state, v6) == "limit"
    assert kernel_verdict(backend, state, conn("198.51.100.9", oif="docker0")) == "limit"


def test_return_first_in_fwsync_forward_allows_everyone() -> None:
    """Issue 18 item 6: `-I FWSYNC-FORWARD 1 -j RETURN` lets every connection on."""
    ruleset = _ruleset()
    state = dict(rendered("iptables", ruleset))
    key = "ipv4 chain FWSYNC-FORWARD"
    state[key] = ("-A FWSYNC-FORWARD -j RETURN", *state[key])
    assert kernel_verdict("iptables", state, conn("192.0.2.1")) == "allow"
    found = disagreements(ruleset, PORTS, "iptables", state)
    # and routed straight to a container on a network made later (protect direct-routing)
    assert {(d.family, d.path, d.policy, d.kernel) for d in found} == {
        (4, "dnat", "deny", "allow"), (4, "direct", "deny", "allow")}


def test_accept_first_in_nftables_forward_allows_everyone() -> None:
    ruleset = _ruleset()
    state = dict(rendered("nftables", ruleset))
    key = "inet fwsync chain forward"
    state[key] = (state[key][0], "accept", *state[key][1:])
    assert kernel_verdict("nftables", state, conn("192.0.2.1")) == "allow"
    found = disagreements(ruleset, PORTS, "nftables", state)
    assert {(d.path, d.policy, d.kernel) for d in found} == {("dnat", "deny", "allow"),
                                                              ("direct", "deny", "allow")}


def test_flushed_nftables_input_chain_is_unjudged() -> None:
    """Issue 18 item 6: the input chain flushed, its head still in place: nothing on the input
    path is judged any more, which disagrees with every refusing verdict (an allow only means
    fwsync does not refuse: unjudged agrees with it)."""
    ruleset = _ruleset()
    state = dict(rendered("nftables", ruleset))
    key = "inet fwsync chain input"
    state[key] = state[key][:1]
    found = disagreements(ruleset, PORTS, "nftables", state)
    assert found and {(d.path, d.kernel) for d in found} == {("input", "unjudged")}
    assert {d.policy for d in found} == {"deny"}


def test_a_port_published_later_is_held_to_the_catch_all() -> None:
    """A binding nobody knows yet, out of a bridge nobody named, is judged only by the DNAT
    catch-all: without it, disagreements name the later port (the policy denies, the kernel
    lets it on) although every known binding still agrees."""
    from fwsync.backends.iptables_render import render_family
    from fwsync.core.build import build_ruleset
    from fwsync.core.observed import DockerState, PublishedPort
    from fwsync.rules.model import Endpoint
    from fwsync.verify.agree import LATER, disagreements
    from tests.unit.helpers import policy, ports, rule

    docker = DockerState(ports=(PublishedPort("0.0.0.0", 5432, "tcp", "db", 5432),))
    ruleset = build_ruleset(policy(rule(5, proto="tcp", dst=Endpoint(ports=ports(22)))),
                            docker).ruleset
    state = {**render_family(ruleset, 4, ("DOCKER-USER",)),
             **render_family(ruleset, 6, ("DOCKER-USER",))}
    assert disagreements(ruleset, docker.ports, "iptables", state) == ()
    cut = {k: tuple(line for line in v if "--ctstate DNAT -g" not in line)
           for k, v in state.items()}
    found = disagreements(ruleset, docker.ports, "iptables", cut)
    assert found and all(LATER in d.binding and d.policy == "deny" for d in found), found


# Issue 19: a trusted bridge's exemption is its network's subnets arriving on it (items 1), a
# new non-DNATed connection into any other bridge is judged (item 3), and an allow to a container
# also matches its address after DNAT (item 4). The verifier reads each from the rule text.
WEB_NET = DockerNetwork("web", "br-0123456789ab", subnets=("172.18.0.0/16", "2001:db8:d1::/64"))
WEB_LINKS = (LinkFacts("br-0123456789ab", "bridge", addresses=("172.18.0.1/16",
                                                                "2001:db8:d1::1/64"),
                       routes=("172.18.0.0/16", "2001:db8:d1::/64")),
             LinkFacts("veth1a2b3c", "veth", master="br-0123456789ab"),
             LinkFacts("br-uplink", "bridge", addresses=("203.0.113.1/25",),
                       routes=("0.0.0.0/0",)))
WEB_ADDRS = ("172.18.0.5", "2001:db8:d1::5")
WEB_PORTS = (PublishedPort("0.0.0.0", 8080, "tcp", "web", 80, container_ipv6=True,
                           networks=("web",), container_addrs=WEB_ADDRS),
             PublishedPort("::", 8080, "tcp", "web", 80, container_ipv6=True,
                           networks=("web",), container_addrs=WEB_ADDRS))
BRIDGED = ("define office 198.51.100.0/25\ndefault deny\n"
           "allow from $office to container web port 8080\n")


def _bridged(text: str = BRIDGED):  # type: ignore[no-untyped-def]
    result = parse_sources([("gen.rules", text)], lambda _p: "")
    assert result.policy is not None
    docker = DockerState(ports=WEB_PORTS, containers=("web",), networks=(WEB_NET,),
                         links=WEB_LINKS)
    ruleset = build_ruleset(result.policy, docker).ruleset
    assert [b.name for b in ruleset.bridges] == ["br-0123456789ab"]
    assert ruleset.host_bridges == ("br-uplink",)
    assert any(r.match.dnat_daddr for r in ruleset.rules)
    return ruleset


def _edit(state, key: str, old: str, new: str | None):  # type: ignore[no-untyped-def]
    """The listing with every line of chain `key` that contains `old` replaced (None: removed)."""
    lines = state[key]
    assert any(old in line for line in lines), (old, lines)
    edited = [line if old not in line else (None if new is None else line.replace(old, new))
              for line in lines]
    return {**state, key: tuple(line for line in edited if line is not None)}


@pytest.mark.parametrize("backend", ["iptables", "nftables"])
def test_rendered_bridge_exemption_container_match_and_catch_all_agree(backend: str) -> None:
    ruleset = _bridged()
    assert disagreements(ruleset, WEB_PORTS, backend, rendered(backend, ruleset)) == ()


@pytest.mark.parametrize(("c", "verdict"), [
    # the network's own: its subnet, on its bridge
    (conn("172.18.0.9", iif="br-0123456789ab"), "unjudged"),
    # its subnet arriving elsewhere, or anyone else on its bridge: judged (default deny)
    (conn("172.18.0.9", iif="eth0", dnat_daddr="172.18.0.5"), "deny"),
    (conn("192.0.2.1", iif="br-0123456789ab", dnat_daddr="172.18.0.5"), "deny"),
    (conn("198.51.100.7", iif="br-0123456789ab", dnat_daddr="172.18.0.5"), "allow"),
])
@pytest.mark.parametrize("backend", ["iptables", "nftables"])
def test_walk_of_a_subnet_limited_exemption(backend: str, c: Connection, verdict: str) -> None:
    ruleset = _bridged()
    assert kernel_verdict(backend, rendered(backend, ruleset),
                          Connection(**{**c.__dict__, "oif": "br-0123456789ab"})) == verdict


@pytest.mark.parametrize(("backend", "key", "exemption", "by_name"), [
    ("iptables", "ipv4 chain FWSYNC-FORWARD", "-s 172.18.0.0/16 -i br-0123456789ab",
     "-i br-0123456789ab"),
    ("nftables", "inet fwsync chain forward",
     "meta iifname br-0123456789ab ip saddr 172.18.0.0/16", "meta iifname br-0123456789ab"),
])
def test_an_exemption_by_the_bridges_name_alone_disagrees(backend: str, key: str,
                                                          exemption: str, by_name: str) -> None:
    """The kernel trusting the bridge by its name (the `br-+` exemption issue 19 removed): a
    source outside the network's subnet, arriving on the bridge, goes unjudged where the policy
    denies it."""
    ruleset = _bridged()
    state = _edit(rendered(backend, ruleset), key, exemption, by_name)
    found = disagreements(ruleset, WEB_PORTS, backend, state)
    families = {4} if backend == "iptables" else {4, 6}  # nftables: a name alone, both
    assert found and {(d.family, d.iif, d.policy, d.kernel) for d in found} == {
        (f, "br-0123456789ab", "deny", "unjudged") for f in families}
    assert all(not d.source.startswith("172.18.") for d in found)
    assert "arriving on br-0123456789ab" in str(found[0])


@pytest.mark.parametrize(("backend", "key", "exemption"), [
    ("iptables", "ipv6 chain FWSYNC-FORWARD", "-s 2001:db8:d1::/64 -i br-0123456789ab"),
    ("nftables", "inet fwsync chain forward",
     "meta iifname br-0123456789ab ip6 saddr 2001:db8:d1::/64"),
])
def test_an_exemption_lost_or_widened_to_every_interface_disagrees(
        backend: str, key: str, exemption: str) -> None:
    """Without the exemption the network's own connections are refused (policy: not judged);
    with its interface match dropped, its subnet is exempt arriving anywhere."""
    ruleset = _bridged()
    state = rendered(backend, ruleset)
    lost = disagreements(ruleset, WEB_PORTS, backend, _edit(state, key, exemption, None))
    assert lost and {(d.family, d.iif, d.policy, d.kernel) for d in lost} == {
        (6, "br-0123456789ab", "unjudged", "deny")}
    source_only = exemption.split(" -i ")[0] if backend == "iptables" else \
        exemption.replace("meta iifname br-0123456789ab ", "")
    widened = disagreements(ruleset, WEB_PORTS, backend,
                            _edit(state, key, exemption, source_only))
    assert widened and {(d.family, d.iif, d.policy) for d in widened} == {(6, "", "deny")}
    assert all(d.source.startswith("2001:db8:d1:") for d in widened)


def test_walk_of_the_oifkind_catch_all() -> None:
    """`meta oifkind bridge`: a new non-DNATed connection into a bridge nobody named is judged;
    into anything but a bridge (an uplink NIC, a veth) it is not."""
    state = {**NFT, "inet fwsync chain forward": (
        *NFT["inet fwsync chain forward"], 'meta oifname uplink0 return comment "h"',
        'meta oifkind bridge jump inbound comment "fwsync any other bridge"')}
    direct = conn("198.51.100.7", 8050, path="direct")
    assert kernel_verdict("nftables", state, replace(direct, oif="lan7")) == "deny"
    assert kernel_verdict("nftables", state, replace(direct, oif="lan7", oifkind="")) == \
        "unjudged"
    assert kernel_verdict("nftables", state, replace(direct, oif="uplink0")) == "allow"
    odd = 'meta iifkind bridge jump inbound'
    assert kernel_verdict("nftables", {**state, "inet fwsync chain forward": (
        *state["inet fwsync chain forward"][:2], odd)}, direct).startswith(f"unreadable: {odd}")


@pytest.mark.parametrize(("backend", "key", "catch_all"), [
    ("nftables", "inet fwsync chain forward", "meta oifkind bridge"),
    ("iptables", "ipv4 chain FWSYNC-FORWARD", "-o br-+ -m comment"),
])
def test_without_the_bridge_catch_all_a_later_network_is_reached_directly(
        backend: str, key: str, catch_all: str) -> None:
    """Routed straight to a container on a network made after apply: nftables judges it by the
    bridge's kind, iptables by Docker's bridge names; without that line it goes unjudged where
    the direct-routing protection drops it. Known bindings still agree."""
    ruleset = _bridged()
    found = disagreements(ruleset, WEB_PORTS, backend,
                          _edit(rendered(backend, ruleset), key, catch_all, None))
    families = {4} if backend == "iptables" else {4, 6}  # the IPv4 chain / the inet table
    assert found and {(d.family, d.path, d.policy, d.kernel) for d in found} == {
        (f, "direct", "deny", "unjudged") for f in families}
    assert all("published later" in d.binding for d in found)


@pytest.mark.parametrize(("backend", "key", "line"), [
    ("iptables", "ipv4 chain FWSYNC-INBOUND", "-d 172.18.0.5/32"),
    ("nftables", "inet fwsync chain inbound", "ip daddr 172.18.0.5"),
])
def test_an_allow_to_a_container_matches_its_address_after_dnat(backend: str, key: str,
                                                                 line: str) -> None:
    """The walk tells the container's address after DNAT from the binding: the allow admits
    $office to web's address, not to another container that holds the port now; the listing
    with another address than web's disagrees (the policy allows, the kernel denies)."""
    ruleset = _bridged()
    state = rendered(backend, ruleset)
    to_web = conn("198.51.100.7", oif="br-0123456789ab", dnat_daddr="172.18.0.5")
    assert kernel_verdict(backend, state, to_web) == "allow"
    assert kernel_verdict(backend, state, replace(to_web, dnat_daddr="172.18.0.6")) == "deny"
    unknown = kernel_verdict(backend, state, replace(to_web, dnat_daddr=None))
    assert unknown.startswith("unreadable: ") and "after DNAT" in unknown
    found = disagreements(ruleset, WEB_PORTS, backend,
                          _edit(state, key, line, line.replace("172.18.0.5", "172.18.0.6")))
    assert found and {(d.family, d.path, d.policy, d.kernel) for d in found} == {
        (4, "dnat", "allow", "deny")}
    assert all(d.source.startswith("198.51.100.") for d in found)


@pytest.mark.parametrize(("backend", "key", "half"), [
    ("iptables", "ipv6 chain FWSYNC-INBOUND", "! --ctstate DNAT"),
    ("nftables", "inet fwsync chain inbound", "ip6 saddr @office_v6_afb45324 ct status & dnat"),
])
def test_docker_proxys_half_of_an_allow_to_a_container(backend: str, key: str,
                                                       half: str) -> None:
    """The same allow's other half (`! --ctstate DNAT` / `ct status & dnat != dnat`): what
    docker-proxy serves has no container address and is admitted by that half alone."""
    ruleset = _bridged(BRIDGED.replace("198.51.100.0/25", "198.51.100.0/25, 2001:db8:1::/64"))
    state = rendered(backend, ruleset)
    proxied = Connection(6, "tcp", "2001:db8:1::7", "2001:db8::1", 8080, oif=None,
                         path="input", local=True)
    assert kernel_verdict(backend, state, proxied) == "allow"
    assert kernel_verdict(backend, state, replace(proxied, saddr="2001:db8:2::7")) == "deny"
    assert kernel_verdict(backend, _edit(state, key, half, None), proxied) == "deny"


ROUTED_NET = DockerNetwork("routed", "br-2ea2169ac7f2", gateway_modes=((4, "routed"),),
                           subnets=("203.0.113.128/28",))
ROUTED_LINK = LinkFacts("br-2ea2169ac7f2", "bridge", addresses=("203.0.113.129/28",),
                        routes=("203.0.113.128/28",))
ROUTED_PORT = PublishedPort("203.0.113.130", 80, "tcp", "rweb", 80, networks=("routed",),
                            routed="routed")


@pytest.mark.parametrize("backend", ["iptables", "nftables"])
@pytest.mark.parametrize("links", [(ROUTED_LINK,), None])
def test_a_routed_network_is_let_to_the_rules_only_out_of_its_trusted_bridge(
        backend: str, links: tuple[LinkFacts, ...] | None) -> None:
    """A routed network's direct routing goes to the rules out of its own bridge
    (`-d SUBNET -o BRIDGE` / `oifname BRIDGE ip daddr SUBNET`), and the walk leaves on that
    bridge; when the host does not show the bridge as Docker's (here: the interfaces unread),
    the protection drops it, which is the policy's verdict too."""
    result = parse_sources([("gen.rules", "default deny\nallow from 198.51.100.0/25 to any\n")],
                           lambda _p: "")
    assert result.policy is not None
    docker = DockerState(ports=(ROUTED_PORT,), containers=("rweb",), networks=(ROUTED_NET,),
                         links=links)
    ruleset = build_ruleset(result.policy, docker).ruleset
    assert bool(ruleset.direct_ok) == (links is not None)
    state = rendered(backend, ruleset)
    assert disagreements(ruleset, (ROUTED_PORT,), backend, state) == ()
    direct = Connection(4, "tcp", "198.51.100.7", "203.0.113.130", 80, oif="br-2ea2169ac7f2",
                        path="direct")
    assert kernel_verdict(backend, state, direct) == ("allow" if links else "deny")
    # Out of another interface than the network's bridge, the subnet alone lets nothing on.
    assert kernel_verdict(backend, state, replace(direct, oif="br-0123456789ab")) == "deny"


def test_the_input_paths_catch_all_is_read_back_for_a_port_published_later() -> None:
    """With dockerd's cgroup known, the nftables verifier asks a later IPv6 port on the input
    path too (docker-proxy's socket, in that cgroup): the rendered proxy chain agrees; flushed,
    or on a cgroup that is gone (nft lists it by number), the later port disagrees, while
    every known binding still agrees."""
    cgroup = ProxyCgroup("system.slice/docker.service", 2, "system.slice/docker.service")
    ruleset = replace(_ruleset(), proxy_cgroup=cgroup)
    state = dict(rendered("nftables", ruleset))
    key = "inet fwsync chain proxy"
    assert disagreements(ruleset, PORTS, "nftables", state) == ()
    line = state[key][-1]
    for broken in (state[key][:1], (*state[key][:-1], line.replace(
            '"system.slice/docker.service"', "187080"))):
        found = disagreements(ruleset, PORTS, "nftables", {**state, key: broken})
        assert found and {(d.family, d.path, d.policy) for d in found} == {(6, "input", "deny")}
        assert all("later" in d.binding for d in found), found
    # Another cgroup's sockets are not docker-proxy's: the catch-all does not hold them.
    other = line.replace("system.slice/docker.service", "system.slice/sshd.service")
    assert disagreements(ruleset, PORTS, "nftables", {**state, key: (*state[key][:-1], other)})
    # The iptables backend has no catch-all to ask about: the later port is not asked there.
    assert disagreements(ruleset, PORTS, "iptables", rendered("iptables", ruleset)) == ()
