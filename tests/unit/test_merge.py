"""The merge of runs of one verdict (fwsync.core.merge), held to the matcher: for generated rule
lists, the merged rules give every connection — each family, source, protocol, port and host
address — the verdict the unmerged rules give, first match first."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fwsync.core.matching import IPAddress, Question, candidates
from fwsync.core.merge import is_internal, merge_runs
from fwsync.core.ruleset import AddrSet, Family, KernelRule, Match, Ruleset
from fwsync.rules.model import PortRange

from .helpers import origin

pytestmark = pytest.mark.unit

# Sources that overlap, nest and repeat, so merged sets hold networks and single addresses.
CIDRS: dict[Family, list[str]] = {
    4: ["198.51.100.0/24", "198.51.100.0/28", "198.51.100.7/32", "198.51.100.9/32",
        "203.0.113.0/25", "203.0.113.5/32", "0.0.0.0/1"],
    6: ["2001:db8::/48", "2001:db8::7/128", "2001:db8::9/128", "2001:db8:1::/64",
        "2001:db8:1::5/128", "::/1"],
}
SOURCES: dict[Family, list[IPAddress]] = {
    4: [ipaddress.ip_address(a) for a in ("198.51.100.7", "198.51.100.9", "198.51.100.20",
                                          "198.51.100.3", "203.0.113.5", "203.0.113.200",
                                          "192.0.2.1", "127.0.0.1")],
    6: [ipaddress.ip_address(a) for a in ("2001:db8::7", "2001:db8::9", "2001:db8::1:0",
                                          "2001:db8:1::5", "2001:db8:1::6", "2001:db8:2::1",
                                          "::1", "8000::1")],
}
DADDRS: dict[Family, list[str]] = {4: ["198.51.100.1/32", "203.0.113.1/32"],
                                   6: ["2001:db8::1/128", "2001:db8:2::1/128"]}
PORTS = [PortRange(80, 80), PortRange(443, 443), PortRange(80, 90), PortRange(1000, 2000)]
DEFINES = (AddrSet("office", 4, ("198.51.100.0/28", "203.0.113.5/32")),
           AddrSet("office", 6, ("2001:db8::/48",)),
           AddrSet("lab", 4, ("198.51.100.9/32",)))


@st.composite
def kernel_match(draw: st.DrawFn) -> Match:
    family: Family = draw(st.sampled_from([4, 6]))
    proto = draw(st.sampled_from(["tcp", "udp", None]))
    source = draw(st.sampled_from(["saddr", "saddr", "saddr", "sset", "any"]))
    saddr = draw(st.sampled_from(CIDRS[family])) if source == "saddr" else None
    sset = draw(st.sampled_from(["office", "lab", "office"])) if source == "sset" else None
    if sset == "lab" and family == 6:
        sset = "office"
    return Match(family=family, proto=proto, saddr=saddr, sset=sset,  # type: ignore[arg-type]
                 dport=draw(st.sampled_from(PORTS)) if proto is not None and draw(st.booleans())
                 else None,
                 daddr=draw(st.sampled_from(DADDRS[family])) if draw(st.booleans()) else None)


@st.composite
def rule_lists(draw: st.DrawFn) -> tuple[KernelRule, ...]:
    """User rules in order, each one action and a few kernel rules, as the builder makes them;
    long runs of one verdict are likely (that is what gets merged)."""
    rules: list[KernelRule] = []
    action = "allow"
    for index in range(draw(st.integers(0, 14))):
        if draw(st.integers(0, 3)) == 0:
            action = draw(st.sampled_from(["allow", "deny", "reject", "limit"]))
        for match in draw(st.lists(kernel_match(), min_size=1, max_size=4)):
            rules.append(KernelRule(match=match, action=action,  # type: ignore[arg-type]
                                    origin=origin(index + 2), index=index))
    return tuple(rules)


def _ruleset(rules: tuple[KernelRule, ...]) -> Ruleset:
    return Ruleset(rules=rules, sets=DEFINES, default="deny", default_origin=None,
                   protect_direct_routing=False, protect_localhost_publish=False, bridges=())


def first_match(ruleset: Ruleset, q: Question) -> tuple[str, int | None]:
    """The verdict (and, for a limit, which rule's bucket): the first rule that matches."""
    for rule, needs in candidates(ruleset, q):
        assert not needs, needs  # the question leaves nothing open
        return rule.action, rule.index if rule.action == "limit" else None
    return ruleset.default, None


def questions() -> list[Question]:
    out = []
    for family in (4, 6):
        for daddr in DADDRS[family]:
            for source in SOURCES[family]:
                for proto in ("tcp", "udp"):
                    for port in (80, 85, 443, 1500, 22):
                        out.append(Question(family=family, proto=proto, port=port,  # type: ignore[arg-type]
                                            daddr=ipaddress.ip_network(daddr).network_address,
                                            source=source))
    return out


QUESTIONS = questions()


@settings(max_examples=300, deadline=None)
@given(rule_lists())
def test_merged_rules_give_every_connection_the_unmerged_verdict(
        rules: tuple[KernelRule, ...]) -> None:
    before = _ruleset(rules)
    after = merge_runs(before).ruleset
    for q in QUESTIONS:
        assert first_match(after, q) == first_match(before, q), q
    for rule in after.rules:
        if rule.match.sset is not None and is_internal(rule.match.sset):
            held = [s for s in after.sets
                    if s.name == rule.match.sset and s.family == rule.match.family]
            assert len(held) == 1, "one set of the rule's family"


def test_a_run_becomes_one_rule_per_family_and_another_verdict_ends_it() -> None:
    def r(index: int, family: Family, saddr: str, action: str = "allow") -> KernelRule:
        return KernelRule(Match(family=family, proto="tcp", saddr=saddr,
                                dport=PortRange(80, 80)),
                          action, origin(index + 2), index)  # type: ignore[arg-type]
    rules = (r(0, 4, "198.51.100.7/32"), r(0, 6, "2001:db8::7/128"),
             r(1, 4, "198.51.100.9/32"), r(1, 6, "2001:db8::9/128"),
             r(2, 4, "198.51.100.0/28", "deny"),
             r(3, 4, "198.51.100.3/32"), r(4, 4, "198.51.100.4/32"))
    merged = merge_runs(_ruleset(rules))
    got = [(x.index, x.match.family, x.match.saddr, x.match.sset, x.action)
           for x in merged.ruleset.rules]
    assert got == [(0, 4, None, "src.0.0", "allow"), (0, 6, None, "src.0.0", "allow"),
                   (2, 4, "198.51.100.0/28", None, "deny"),
                   (3, 4, None, "src.3.0", "allow")]
    sets = {(s.name, s.family): s.elements for s in merged.ruleset.sets if is_internal(s.name)}
    assert sets == {("src.0.0", 4): ("198.51.100.7/32", "198.51.100.9/32"),
                    ("src.0.0", 6): ("2001:db8::7/128", "2001:db8::9/128"),
                    ("src.3.0", 4): ("198.51.100.3/32", "198.51.100.4/32")}
    assert merged.comment(0) == \
        "10-test.rules:2 to 10-test.rules:3: 2 rules with one verdict, merged"
