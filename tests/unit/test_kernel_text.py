"""What text may reach the kernel: interface names (from the rules and from Docker) and rule
comments, checked once and rendered by both backends so that the kernel reads them literally."""

from __future__ import annotations

import pytest

from fwsync.backends.iptables_render import render_family
from fwsync.backends.nftables_render import render, table_objects
from fwsync.core.bridges import TrustedBridge
from fwsync.core.build import build_ruleset
from fwsync.core.kernel_text import comment_text, shown
from fwsync.core.observed import Bridge, DockerNetwork, DockerState, LinkFacts
from fwsync.core.ruleset import KernelRule, Match, Ruleset
from fwsync.rules.model import Origin
from fwsync.rules.text import forbidden_char, kernel_problem, literal_problem, rule_iface_problem

from .helpers import policy, rule

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(("name", "ok"), [
    ("eth0", True), ("enp3s0", True), ("eth0.100", True), ("wg_0", True), ("a-b", True),
    ("x" * 15, True), ("x" * 16, False), ("", False), (".", False), ("..", False),
    ("a/b", False), ("a:b", False), ("a b", False), ("a\nb", False), ("a\0b", False),
])
def test_kernel_problem_is_the_kernels_own_rule(name: str, ok: bool) -> None:
    assert (kernel_problem(name) is None) is ok


@pytest.mark.parametrize("name", ['"+"', "e+", "v*", "*", 'a"b', "a'b", "a\\b", "ä", "-x",
                                  ".x", "a!b", "a$b", "a#b", "a,b", "a\x1bb", "\u202eab"])
def test_names_a_backend_would_read_as_syntax_are_not_literal(name: str) -> None:
    assert literal_problem(name) is not None


@pytest.mark.parametrize(("name", "ok"), [
    ("eth+", True), ("br-+", True), ("eth0", True), ("+", False), ("eth*", False),
    ("e*th", False), ("++", False), ("eth++", False), ('"+"', False), ("x" * 15 + "+", False),
    ("x" * 14 + "+", True),
])
def test_rules_have_one_wildcard_a_trailing_plus(name: str, ok: bool) -> None:
    assert (rule_iface_problem(name) is None) is ok


def test_forbidden_characters_are_found_with_their_index() -> None:
    assert forbidden_char("allow 80\ttab") is None
    assert forbidden_char("allow café 🚀") is None
    assert forbidden_char("ab\x00") == (2, "control character U+0000")
    assert forbidden_char("\u2029") == (0, "paragraph separator U+2029 (PARAGRAPH SEPARATOR)")


def test_shown_escapes_what_a_terminal_would_interpret() -> None:
    assert shown("br\x1b[31mred\u202e") == "br\\x1b[31mred\\u202e"
    assert shown("plain-name_0") == "plain-name_0"


def test_comment_text_keeps_printable_text_and_a_whole_last_character() -> None:
    assert comment_text('a\x00b\nc "d" é', 100) == "a b c d é"
    assert comment_text("é" * 10, 5) == "éé"  # 5 bytes: two whole characters, not a half one
    assert comment_text("it's", 100, drop="'") == "its"


def hostile_ruleset() -> Ruleset:
    """Origins whose file name and text carry what a kernel comment must never get."""
    origin = Origin(file="rules/10-a\nb\x00.rules", line=3, text="deny 80 comment 'x\x00y\r'")
    match = Match(family=4, proto="tcp")
    built = build_ruleset(policy(), DockerState()).ruleset
    return Ruleset(rules=(KernelRule(match=match, action="deny", origin=origin, index=0),),
                   sets=(), default="deny", default_origin=origin,
                   protect_direct_routing=True, protect_localhost_publish=True,
                   bridges=built.bridges)


def test_iptables_lines_are_printable_whatever_the_origin_holds() -> None:
    for family in (4, 6):
        for lines in render_family(hostile_ruleset(), family, "DOCKER-USER").values():
            for line in lines:
                assert line.isprintable(), repr(line)
    text = "\n".join(render_family(hostile_ruleset(), 4, "DOCKER-USER")["ipv4 chain "
                                                                         "FWSYNC-INBOUND"])
    assert '--comment "10-a b .rules:3 deny 80 comment x y" -j DROP' in text


def test_nftables_comments_are_printable_whatever_the_origin_holds() -> None:
    comments = [o["rule"].get("comment", "") for o in table_objects(hostile_ruleset())
                if "rule" in o]
    assert "10-a b .rules:3 deny 80 comment 'x y '" in comments
    assert all(c.isprintable() for c in comments)


def test_renderers_refuse_an_unchecked_interface_name() -> None:
    base = build_ruleset(policy(rule(2, iface="eth0")), DockerState()).ruleset
    bad = Ruleset(**{**base.__dict__, "bridges": (
        TrustedBridge('"+"', "evil", ("203.0.113.128/28",)),)})
    with pytest.raises(ValueError, match="reached a renderer unchecked"):
        render_family(bad, 4, "DOCKER-USER")
    with pytest.raises(ValueError, match="reached a renderer unchecked"):
        render(bad)


def test_unnamed_bridges_are_matched_by_subnet_in_both_backends() -> None:
    docker = DockerState(
        extra_bridges=(Bridge('"+"', "evil", ("203.0.113.128/28", "2001:db8:5::/64")),
                       Bridge("lan0", "ok", ("203.0.113.144/28",))),
        networks=(DockerNetwork("ok", "lan0", subnets=("203.0.113.144/28",)),),
        links=(LinkFacts("lan0", "bridge", addresses=("203.0.113.145/28",),
                         routes=("203.0.113.144/28",)),))
    ruleset = build_ruleset(policy(), docker).ruleset
    v4 = render_family(ruleset, 4, "DOCKER-USER")["ipv4 chain FWSYNC-FORWARD"]
    v6 = render_family(ruleset, 6, "FORWARD")["ipv6 chain FWSYNC-FORWARD"]
    assert "-A FWSYNC-FORWARD -d 203.0.113.128/28 -g FWSYNC-INBOUND" in v4
    assert "-A FWSYNC-FORWARD -d 2001:db8:5::/64 -g FWSYNC-INBOUND" in v6
    assert not any(f"{flag} {name} " in line for line in v4 + v6
                   for flag in ("-i", "-o") for name in ('"+"', "+"))
    nft = render(ruleset)["inet fwsync chain forward"]
    assert "ip daddr 203.0.113.128/28 jump inbound" in nft
    assert "ip6 daddr 2001:db8:5::/64 jump inbound" in nft
    assert "meta oifname lan0 jump inbound" in nft
    assert "meta iifname lan0 ip saddr 203.0.113.144/28 return" in nft
    assert "-A FWSYNC-FORWARD -s 203.0.113.144/28 -i lan0 -j RETURN" in v4


def test_a_bridge_without_subnet_makes_every_dnat_judged_in_both_backends() -> None:
    docker = DockerState(extra_bridges=(Bridge("v*", "evil"),))
    ruleset = build_ruleset(policy(), docker).ruleset
    for family in (4, 6):
        lines = render_family(ruleset, family, "DOCKER-USER")[f"ipv{family} chain FWSYNC-FORWARD"]
        assert "-A FWSYNC-FORWARD -m conntrack --ctstate DNAT -g FWSYNC-INBOUND" in lines
    assert "ct status dnat jump inbound" in render(ruleset)["inet fwsync chain forward"]
