"""Shadowed-rule warnings: given only when an earlier rule surely matches all of a later one."""

from __future__ import annotations

import ipaddress
from dataclasses import replace
from itertools import product

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fwsync.core.build import container_matches
from fwsync.rules.model import AddressSet, Endpoint, Origin, Policy, PortRange, Rule
from fwsync.rules.shadow import container_covers, iface_covers, shadowed
from fwsync.rules.syntax import parse_sources

pytestmark = pytest.mark.unit

F = "10-base.rules"


def warned(text: str) -> list[int]:
    """The lines of the rules reported as shadowed."""
    result = parse_sources([(F, text)], lambda _: "")
    assert result.ok and result.policy is not None, [str(d) for d in result.diagnostics]
    return [d.line for d in shadowed(result.policy)]


def test_message_names_the_earlier_rule_as_written():
    result = parse_sources([(F, "\n\nallow 80/tcp   # web\ndeny 80/tcp comment 'x'\n")],
                           lambda _: "")
    assert result.policy is not None
    assert [str(d) for d in shadowed(result.policy)] == [
        "10-base.rules:4:1: warning: rule is never reached: shadowed by 10-base.rules:3 "
        "('allow 80/tcp')"]


def test_the_first_covering_rule_is_named_and_every_shadowed_rule_reported():
    result = parse_sources([("a.rules", "allow 80\nallow 1:1024\n"),
                            ("b.rules", "deny 80/tcp\nallow 80,81\n")], lambda _: "")
    assert result.policy is not None
    assert [(d.file, d.line, d.message) for d in shadowed(result.policy)] == [
        ("b.rules", 1, "rule is never reached: shadowed by a.rules:1 ('allow 80')"),
        ("b.rules", 2, "rule is never reached: shadowed by a.rules:2 ('allow 1:1024')"),
    ]


@pytest.mark.parametrize("text", [
    "allow 80/tcp\nallow 80/tcp",
    "allow 80,443/tcp\ndeny 443/tcp",
    "allow 1:1024\ndeny 80,443/udp",
    "allow 1:100,101:200\ndeny 50:150",  # adjacent ranges together cover the span
    "allow 80\ndeny 80/tcp",
    "allow proto tcp\ndeny 80/tcp",
    "deny from 203.0.113.0/24\nallow from 203.0.113.7 to any port 22",
    "deny from 203.0.113.0/24\nallow from 203.0.113.0/25 proto udp",
    "allow from any\ndeny from 2001:db8::/32 port 53 to ::1 port 53",
    "allow from any port 1024:65535\ndeny from 10.0.0.1 port 2000 to any port 80",
    "define office 198.51.100.0/24\nallow from $office\ndeny from 198.51.100.9",
    "define a 198.51.100.0/25, 198.51.100.128/25\nallow from $a\ndeny from 198.51.100.0/24",
    "define a 198.51.100.0/24, 2001:db8::/32\ndefine b 198.51.100.5, 2001:db8::5\n"
    "allow from $a port 53\ndeny from $b port 53",
    "define a 198.51.100.0/24\nallow from 198.51.100.0/23\ndeny from $a",
    "allow from 0.0.0.0/0\ndeny to 198.51.100.1",  # the later rule can only be IPv4
    "allow 22\ndeny in on eth0 22",
    "allow on eth+ 22\ndeny on eth0 22",
    "allow on eth+ 22\ndeny on eth1+ 22",
    "allow on eth0 22\ndeny in on eth0 22",
    "allow to container web-*\ndeny to container web-1 port 80",
    "allow to container web-*\ndeny to container web-x*",
    "allow to container *\ndeny to container db",
    "allow to container db port 5432\ndeny to container db port 5432 proto tcp",
    "allow to any port 80\ndeny to container web port 80",
    "allow\tfrom 10.0.0.0/8\ndeny from 10.1.2.3 to container web",
    "allow to 198.51.100.0/24 port 80\ndeny to 198.51.100.1 port 80 proto tcp",
    "allow proto tcp\ndeny to container web proto tcp",
    "limit 2222/tcp\nallow 2222/tcp",
    "allow 80\nallow 80",
    "allow to network lan*\ndeny to network lan-2 port 80",
    "allow to any port 80\ndeny to network lan port 80 proto tcp",
    "allow from 10.0.0.0/8\ndeny from 10.1.2.3 to network lan",
])
def test_shadowed(text):
    assert warned(text) == [text.count("\n") + 1]


@pytest.mark.parametrize("text", [
    "allow 80/tcp\ndeny 80/udp",
    "allow 80/tcp\ndeny 80",
    "allow 80,443\ndeny 80:443",
    "allow 1:100,102:200\ndeny 50:150",
    "allow 80\ndeny from 10.0.0.1",  # the later rule matches every port and ICMP too
    "allow proto tcp\ndeny 80",
    "allow to any port 80\ndeny proto tcp",
    "allow from 203.0.113.7\ndeny from 203.0.113.0/24",
    "allow from 0.0.0.0/0\ndeny 80",  # `any` includes IPv6 sources
    "allow from 198.51.100.0/24 port 53\ndeny from 198.51.100.1",
    "allow from any port 53\ndeny 53",
    "define a 198.51.100.0/24, 2001:db8::/32\nallow from 198.51.100.0/24\ndeny from $a",
    "define a 198.51.100.0/25, 198.51.100.129/32\nallow from $a\ndeny from 198.51.100.0/24",
    "define a 198.51.100.0/24\nallow from $a\ndeny from any",
    "define none file empty.txt\nallow from $none\ndeny from 10.0.0.1",
    "define none file empty.txt\nallow 80\ndeny from $none to any port 80",
    "allow on eth0 22\ndeny 22",
    "allow on eth0 22\ndeny on eth+ 22",
    "allow on eth1+ 22\ndeny on eth+ 22",
    "allow on eth1 22\ndeny on eth0 22",
    "allow to container web-1\ndeny to container web-*",
    "allow to container web-*\ndeny to container web*",
    "allow to container web\ndeny to container web-1",
    "allow to container web\ndeny to any",
    "allow to 0.0.0.0/0 port 80\ndeny to container web port 80",  # may be published on ::
    "allow to container web port 80\ndeny to any port 80",
    "allow to 198.51.100.1\ndeny to 198.51.100.0/24",
    "allow 80\nallow 443\ndeny 80,443",  # covered only by two rules together: not reported
    "allow to network lan\ndeny to container web",  # web may be on another network
    "allow to container web\ndeny to network lan",
    "allow to network lan-2\ndeny to network lan*",
    "allow to 203.0.113.128/28\ndeny to network routed",  # its subnet may differ
    "allow to network lan\ndeny to any",
])
def test_not_shadowed(text):
    assert warned(text) == []


def test_a_rule_that_can_match_nothing_shadows_nothing():
    def at(line: int) -> Origin:
        return Origin(file=F, line=line, text=f"rule {line}")

    never = Rule(action="allow", src=Endpoint(net=ipaddress.ip_network("10.0.0.0/8")),
                 dst=Endpoint(net=ipaddress.ip_network("2001:db8::/32")), origin=at(1))
    later = Rule(action="deny", src=Endpoint(net=ipaddress.ip_network("10.0.0.1")), origin=at(2))
    assert shadowed(Policy(rules=(never, later))) == []


def test_a_set_the_policy_lacks_is_skipped_not_guessed():
    origin = Origin(file=F, line=1, text="x")
    rule = Rule(action="allow", src=Endpoint(set="gone"), origin=origin)
    assert shadowed(Policy(rules=(rule, rule))) == []


def test_large_set_compares_in_reasonable_time():
    hosts = tuple(ipaddress.ip_network(0x0A000000 + i) for i in range(0, 200_000, 2))
    origin = Origin(file=F, line=1, text="x")
    policy = Policy(
        sets={"big": AddressSet.of("big", hosts, origin)},
        rules=(Rule(action="allow", src=Endpoint(net=ipaddress.ip_network("10.0.0.0/8")),
                    origin=origin),
               Rule(action="deny", src=Endpoint(set="big"), origin=replace(origin, line=2))))
    assert [d.line for d in shadowed(policy)] == [2]


@pytest.mark.parametrize(("a", "b", "expected"), [
    (None, None, True), (None, "eth0", True), ("eth0", None, False), ("eth0", "eth0", True),
    ("eth+", "eth0", True), ("eth+", "eth", True), ("eth+", "eth+", True), ("eth+", "eth1+", True),
    ("eth1+", "eth+", False), ("eth0", "eth+", False), ("eth+", "wlan0", False),
])
def test_iface_covers(a, b, expected):
    assert iface_covers(a, b) is expected


@pytest.mark.parametrize(("a", "b", "expected"), [
    ("web-*", "web-1", True), ("web-*", "web-x*", True), ("web-*", "web-*", True),
    ("web-*", "web-", True), ("*", "anything", True), ("web-1", "web-1", True),
    ("web-*", "web", False), ("web-*", "web*", False), ("web-1", "web-*", False),
    ("web", "web-1", False),
])
def test_container_covers(a, b, expected):
    assert container_covers(a, b) is expected


# ---------------------------------------------------------------- soundness, by brute force

IFACES = ("eth0", "eth1", "eth", "wlan0")
SRCS = ("10.0.0.1", "10.0.0.200", "192.0.2.1", "2001:db8::1", "2001:db9::1")
DSTS = ("10.0.0.1", "10.1.0.1", "2001:db8::5", "2001:db9::5")
CONTAINERS = ("web-1", "web-x2", "db", "other")
PORTS = (1, 2, 3, 4)
SETS = {
    "halves": ("10.0.0.0/25", "10.0.0.128/25"),
    "mixed": ("10.0.0.1", "2001:db8::/32"),
    "v6": ("2001:db8::/32",),
    "empty": (),
}


def points():
    """Every connection of the small world: ICMP-like traffic has no ports."""
    for iface, proto, src, dst, container in product(IFACES, ("tcp", "udp", "other"), SRCS, DSTS,
                                                     CONTAINERS):
        if ipaddress.ip_address(src).version != ipaddress.ip_address(dst).version:
            continue
        for sport, dport in product(PORTS, PORTS) if proto != "other" else [(None, None)]:
            yield iface, proto, src, sport, dst, dport, container


POINTS = list(points())


def in_ports(port: int | None, ranges: tuple[PortRange, ...]) -> bool:
    return not ranges or (port is not None and any(r.low <= port <= r.high for r in ranges))


def matches(rule: Rule, point, sets) -> bool:
    iface, proto, src, sport, dst, dport, container = point
    if rule.iface is not None and not (
            iface.startswith(rule.iface[:-1]) if rule.iface.endswith("+") else iface == rule.iface):
        return False
    has_ports = bool(rule.src.ports or rule.dst.ports or rule.dst.container)
    if (rule.proto != "any" and proto != rule.proto) or (has_ports and proto == "other"):
        return False
    address = ipaddress.ip_address(src)
    nets = ([rule.src.net] if rule.src.net is not None
            else sets[rule.src.set] if rule.src.set is not None else None)
    if nets is not None and not any(address in n for n in nets):
        return False
    if rule.dst.net is not None and ipaddress.ip_address(dst) not in rule.dst.net:
        return False
    if rule.dst.container is not None and not container_matches(rule.dst.container, container):
        return False
    return in_ports(sport, rule.src.ports) and in_ports(dport, rule.dst.ports)


port_lists = st.lists(st.tuples(st.sampled_from(PORTS), st.sampled_from(PORTS)).map(sorted).map(
    lambda r: PortRange(low=r[0], high=r[1])), max_size=2).map(tuple)
sources = st.one_of(
    st.just(Endpoint()),
    st.sampled_from(["10.0.0.0/8", "10.0.0.0/24", "10.0.0.1", "0.0.0.0/0", "2001:db8::/32",
                     "::/0"]).map(lambda n: Endpoint(net=ipaddress.ip_network(n))),
    st.sampled_from(sorted(SETS)).map(lambda s: Endpoint(set=s)))
destinations = st.one_of(
    st.just(Endpoint()),
    st.sampled_from(["10.0.0.1", "10.0.0.0/8", "2001:db8::/32"]).map(
        lambda n: Endpoint(net=ipaddress.ip_network(n))),
    st.sampled_from(["web-*", "web-1", "web-x*", "db", "*"]).map(
        lambda c: Endpoint(container=c)))


@st.composite
def rules(draw, line: int) -> Rule:
    return Rule(
        action="allow",
        iface=draw(st.sampled_from([None, "eth0", "eth+", "eth1", "wlan+"])),
        proto=draw(st.sampled_from(["tcp", "udp", "any"])),
        src=replace(draw(sources), ports=draw(port_lists)),
        dst=replace(draw(destinations), ports=draw(port_lists)),
        origin=Origin(file=F, line=line, text=f"rule {line}"))


@st.composite
def pairs(draw) -> tuple[Rule, Rule]:
    """Two rules; often the second is the first with one field redrawn, so warnings are common."""
    first, other = draw(rules(1)), draw(rules(2))
    if draw(st.booleans()):
        return first, other
    changed = draw(st.sampled_from(["iface", "proto", "src", "dst"]))
    return first, replace(first, **{changed: getattr(other, changed)},  # type: ignore[arg-type]
                          origin=other.origin)


@settings(max_examples=300, deadline=None)
@given(pairs())
def test_a_warning_is_only_given_when_the_earlier_rule_matches_all_the_later_one_does(pair):
    first, second = pair
    origin = Origin(file=F, line=0, text="define")
    policy = Policy(rules=pair, sets={
        name: AddressSet.of(name, (ipaddress.ip_network(n) for n in nets), origin)
        for name, nets in SETS.items()})
    sets = {name: s.networks for name, s in policy.sets.items()}
    if shadowed(policy):
        later = [pt for pt in POINTS if matches(second, pt, sets)]
        assert later, "a rule that matches nothing is not reported"
        assert all(matches(first, pt, sets) for pt in later)


@given(rules(1))
def test_a_repeated_rule_is_reported_unless_it_matches_nothing(rule):
    origin = Origin(file=F, line=0, text="define")
    sets = {name: AddressSet.of(name, (ipaddress.ip_network(n) for n in nets), origin)
            for name, nets in SETS.items()}
    again = replace(rule, origin=Origin(file=F, line=2, text="again"))
    got = shadowed(Policy(rules=(rule, again), sets=sets))
    nets = {name: s.networks for name, s in sets.items()}
    assert bool(got) == any(matches(rule, pt, nets) for pt in POINTS)


def _naive(policy: Policy) -> list[str]:
    """Every rule against every earlier one: the definition the indexed search must equal."""
    from fwsync.rules.shadow import _nets, space

    sets = {name: _nets(s.networks) for name, s in policy.sets.items()}
    seen: list[tuple[Rule, object]] = []
    found = []
    for rule in policy.rules:
        this = space(rule, sets)
        if this is None:
            continue
        earlier = next((r for r, sp in seen if sp.covers(this)), None)  # type: ignore[attr-defined]
        if earlier is not None:
            found.append(f"{rule.origin.line} by {earlier.origin.line}")
        seen.append((rule, this))
    return found


_SOURCES = ["198.51.100.0/24", "198.51.100.0/25", "198.51.100.128/25", "198.51.100.7/32",
            "0.0.0.0/0", "2001:db8::/32", "2001:db8:1::/48", "203.0.113.0/24", None, "$s"]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["allow", "deny"]), st.sampled_from(_SOURCES),
                          st.sampled_from([None, 80, 5432]), st.sampled_from(["tcp", "any"])),
                max_size=12))
def test_indexed_search_finds_what_comparing_every_pair_finds(rules) -> None:
    lines = ["define s 198.51.100.0/26, 2001:db8:1::/64"]
    for action, src, port, proto in rules:
        text = f"{action} from {src or 'any'} to any"
        text += f" port {port}" if port else ""
        text += f" proto {proto}" if proto != "any" and port else ""
        lines.append(text)
    result = parse_sources([(F, "\n".join(lines) + "\n")], lambda _: "")
    assert result.policy is not None, [str(d) for d in result.diagnostics]
    got = [f"{d.line} by {d.message.split(F + ':')[1].split(' ')[0]}"
           for d in shadowed(result.policy)]
    assert got == _naive(result.policy)
