"""Rendering is pure: the text that iptables-restore gets, compared with reviewed golden files.
Refresh them with FWSYNC_UPDATE_GOLDEN=1 and review the diff."""

import os
from pathlib import Path

import pytest

from fwsync.backends.iptables import _remove_text, _restore_text, parse_ipset_save, parse_save
from fwsync.backends.iptables_render import (
    comment_text,
    parse_set_name,
    quote,
    render_family,
    set_display,
    set_kernel_name,
    temp_set_name,
)
from fwsync.core.build import build_ruleset
from fwsync.core.observed import DockerNetwork, DockerState, LinkFacts, PublishedPort
from fwsync.rules.model import Endpoint, NetworkScope

from .helpers import aset, net, origin, policy, ports, rule

pytestmark = pytest.mark.unit
GOLDEN = Path(__file__).parent.parent / "golden"

POLICY = policy(
    rule(2, proto="tcp", dst=Endpoint(ports=ports(80, 443))),
    rule(4, proto="tcp", src=Endpoint(set="office"), dst=Endpoint(ports=ports(5432))),
    rule(5, "limit", proto="tcp", dst=Endpoint(ports=ports(2222))),
    rule(6, "reject", iface="eth+", src=Endpoint(net=net("203.0.113.0/24"),
                                                 ports=ports((1000, 2000)))),
    rule(7, "deny", dst=Endpoint(net=net("2001:db8::1/128"))),
    rule(8, src=Endpoint(net=net("198.51.100.10/32")),
         dst=Endpoint(container="metrics-*", ports=ports(9100))),
    rule(9, proto="tcp", src=Endpoint(set="office"),
         dst=Endpoint(network="routed", ports=ports(80))),
    sets=(aset("office", "198.51.100.0/25", "198.51.100.10", "2001:db8:1::/64"),),
    direct_routing_off=(NetworkScope(network="lan", origin=origin(
        3, "protect direct-routing off to network lan")),),
)
# A routed network (Docker 27+), a container on it with `-p 8080:80` (its IPv6 binding goes
# through docker-proxy), and a network the rules take out of the direct-routing protection.
DOCKER = DockerState(ports=(
    PublishedPort("0.0.0.0", 9100, "tcp", "metrics-1", 9100, networks=("bridge",)),
    PublishedPort("198.51.100.1", 9100, "tcp", "metrics-2", 9100, networks=("bridge",)),
    PublishedPort("::", 9100, "tcp", "metrics-1", 9100, networks=("bridge",)),
    PublishedPort("203.0.113.130", 80, "tcp", "rweb", 80, networks=("routed",),
                  routed="routed"),
    PublishedPort("::", 8080, "tcp", "rweb", 80, networks=("routed",)),
), networks=(
    DockerNetwork("bridge", "docker0", subnets=("198.51.100.128/25",)),
    DockerNetwork("lan", "br-1a2b3c4d5e6f", ((4, "nat-unprotected"),), ("203.0.113.144/28",)),
    DockerNetwork("routed", "br-2ea2169ac7f2", ((4, "routed"),), ("203.0.113.128/28",)),
    # Docker adopted the host's uplink bridge (`-o com.docker.network.bridge.name=br-uplink`):
    # refused, so nothing of it is in the kernel.
    DockerNetwork("adopted", "br-uplink", subnets=("203.0.113.160/28",)),
), links=(
    # What the host shows: docker0 and the routed network's bridge are Docker's; `lan`'s bridge
    # does not exist (yet); the uplink carries the host's own address and routes.
    LinkFacts("docker0", "bridge", addresses=("198.51.100.129/25",),
              routes=("198.51.100.128/25",)),
    LinkFacts("br-2ea2169ac7f2", "bridge", addresses=("203.0.113.129/28",),
              routes=("203.0.113.128/28",)),
    LinkFacts("br-uplink", "bridge", addresses=("203.0.113.161/28", "198.51.100.1/25"),
              routes=("0.0.0.0/0",)),
))


def rendered(family, entry=("FORWARD", "DOCKER-USER"), pol=POLICY, docker=DOCKER) -> str:
    objects = render_family(build_ruleset(pol, docker).ruleset, family, entry)
    return "".join(f"[{key}]\n" + "".join(f"{line}\n" for line in lines)
                   for key, lines in sorted(objects.items()))


@pytest.mark.parametrize("family", [4, 6])
def test_render_matches_golden(family):
    path = GOLDEN / f"iptables-ipv{family}.txt"
    text = rendered(family)
    if os.environ.get("FWSYNC_UPDATE_GOLDEN"):
        path.write_text(text)
    assert text == path.read_text()


def test_default_allow_and_reject_and_protections_off():
    allow = rendered(4, pol=policy(default="allow", protect_direct_routing=False,
                                   protect_localhost_publish=False))
    assert "protect" not in allow
    # (not the default's per-port counts, core/tallies: "fwsync port ...")
    assert [ln for ln in allow.splitlines() if "default" in ln and "fwsync port" not in ln] == [
        '-A FWSYNC-INBOUND -m comment --comment "10-test.rules:1 default allow" -j RETURN']
    reject = [ln for ln in rendered(6, pol=policy(default="reject")).splitlines()
              if "default" in ln and "fwsync port" not in ln]
    assert reject == [
        '-A FWSYNC-INBOUND -p tcp -m comment --comment "10-test.rules:1 default reject" '
        "-j REJECT --reject-with tcp-reset",
        '-A FWSYNC-INBOUND -m comment --comment "10-test.rules:1 default reject" '
        "-j REJECT --reject-with icmp6-port-unreachable"]


def test_jump_goes_where_the_entry_chain_is():
    assert "[ipv6 jump]\nFORWARD rule 1 -j FWSYNC-FORWARD\n" in rendered(6, entry="FORWARD")


def test_set_names_are_content_addressed_and_fit_ipset():
    a = set_kernel_name(4, set_display("office"), ("198.51.100.0/25",))
    b = set_kernel_name(4, set_display("office"), ("198.51.100.0/24",))
    assert a != b and parse_set_name(a) == (4, "office")
    long = set_display("a-very-long-set-name-that-goes-on-and-on")
    assert len(set_kernel_name(6, long, ())) <= 31
    assert set_display("a-very-long-set-name-that-goes-on-and-on-2") != long


def test_comment_quoting_follows_iptables_save():
    assert quote("plain-word_1") == "plain-word_1"
    assert quote("a b:1") == '"a b:1"'
    assert comment_text("allow 80 comment 'it\\'s \"web\"'") == "allow 80 comment its web"
    assert len(comment_text("x" * 400).encode()) == 255


def test_restore_text_moves_a_misplaced_jump_and_declares_own_chains():
    current = parse_save(
        ":DOCKER-USER - [0:0]\n-A DOCKER-USER -s 192.0.2.1/32 -j DROP\n"
        "-A DOCKER-USER -j FWSYNC-FORWARD\n-A DOCKER-USER -j RETURN\n")
    desired = {"ipv4 jump": ("DOCKER-USER rule 1 -j FWSYNC-FORWARD",),
               "ipv4 chain FWSYNC-INBOUND": ("-A FWSYNC-INBOUND -j DROP",)}
    text = _restore_text(desired, 4, current).splitlines()
    assert text == ["*filter", ":FWSYNC-FORWARD - [0:0]", ":FWSYNC-INBOUND - [0:0]",
                    ":FWSYNC-DIRECT - [0:0]", ":FWSYNC-INPUT - [0:0]",
                    "-A FWSYNC-INBOUND -j DROP", "-D DOCKER-USER -j FWSYNC-FORWARD",
                    "-I DOCKER-USER 1 -j FWSYNC-FORWARD", "COMMIT"]


def test_restore_text_rewrites_only_the_chains_the_plan_changed_or_that_are_missing():
    # A flushed chain put back deletes no other rule: the restore then does not wait for the
    # kernel to free deleted rules (backends/iptables.py, _restore_text).
    current = parse_save(
        ":FWSYNC-FORWARD - [0:0]\n:FWSYNC-INBOUND - [0:0]\n:FWSYNC-INPUT - [0:0]\n"
        "-A FWSYNC-FORWARD -j FWSYNC-INBOUND\n-A FWSYNC-INPUT -j RETURN\n")
    desired = {"ipv4 chain FWSYNC-FORWARD": ("-A FWSYNC-FORWARD -j FWSYNC-INBOUND",),
               "ipv4 chain FWSYNC-INBOUND": ("-A FWSYNC-INBOUND -j DROP",),
               "ipv4 chain FWSYNC-DIRECT": ("-A FWSYNC-DIRECT -j DROP",),
               "ipv4 chain FWSYNC-INPUT": ("-A FWSYNC-INPUT -j RETURN",)}
    text = _restore_text(desired, 4, current, {"ipv4 chain FWSYNC-INBOUND"}).splitlines()
    assert text == ["*filter", ":FWSYNC-INBOUND - [0:0]", ":FWSYNC-DIRECT - [0:0]",
                    "-A FWSYNC-INBOUND -j DROP", "-A FWSYNC-DIRECT -j DROP", "COMMIT"]
    assert len(_restore_text(desired, 4, current).splitlines()) == 10  # all, for a rollback


def test_only_sets_named_and_typed_as_fwsync_makes_them_are_read_as_its_own() -> None:
    saved = (
        "create fwsblock hash:ip family inet hashsize 1024 maxelem 65536\n"
        "add fwsblock 203.0.113.66\n"
        "create fws4-office-zzzzzz hash:net family inet hashsize 1024 maxelem 65536\n"
        "add fws4-office-zzzzzz 203.0.113.0/28\n"
        "create fws6-office-abcdef hash:net family inet hashsize 1024 maxelem 65536\n"
        "create fws4-web-abcdef hash:ip family inet hashsize 1024 maxelem 65536\n"
        "create fws4-office-0123ab hash:net family inet hashsize 1024 maxelem 65536\n"
        "add fws4-office-0123ab 198.51.100.0/25\n"
        "create fws6-office-0123ab hash:net family inet6 hashsize 1024 maxelem 65536\n"
    )
    assert parse_ipset_save(saved) == {"fws4-office-0123ab": ["198.51.100.0/25"],
                                       "fws6-office-0123ab": []}


def test_a_set_is_filled_under_a_temporary_name_that_fwsync_owns_and_no_define_can_have():
    from fwsync.backends.iptables_render import is_temp_set, temp_set_name

    display = set_display("a_define_name_much_longer_than_eighteen")
    final = set_kernel_name(6, display, ("2001:db8::/32",))
    temp = temp_set_name(final)
    assert len(final) <= 31 and len(temp) <= 31  # ipset's limit
    assert parse_set_name(temp) == (6, "~" + display) and is_temp_set(temp)
    assert not is_temp_set(final)


def test_plan_sees_the_set_the_rules_use_and_every_other_one_of_fwsyncs():
    from fwsync.backends.iptables import FamilyState, KernelView, _set_keys

    used, old, temp = "fws4-office-aaaaaa", "fws4-office-000000", "fws4-~office-bbbbbb"
    view = KernelView(
        families={4: FamilyState({"FWSYNC-INBOUND": [
            f"-A FWSYNC-INBOUND -m set --match-set {used} src -j RETURN"]}), 6: FamilyState()},
        sets={old: 1, used: 1, temp: 0})  # element counts
    assert _set_keys(view) == {
        used: "ipv4 set office",
        old: f"ipv4 set office (unused: {old})",
        temp: f"ipv4 set ~office (unused: {temp})"}


def test_restore_text_puts_the_input_jump_first_in_input():
    # ufw appends its INPUT jumps: fwsync's goes first, and moves back there if pushed down.
    current = parse_save(
        ":INPUT DROP [0:0]\n:DOCKER-USER - [0:0]\n-A INPUT -j ufw-before-logging-input\n"
        "-A INPUT -j FWSYNC-INPUT\n-A DOCKER-USER -j FWSYNC-FORWARD\n")
    assert current.jump_lines == ("DOCKER-USER rule 1 -j FWSYNC-FORWARD",
                                  "INPUT rule 2 -j FWSYNC-INPUT")
    desired = {"ipv4 jump": ("DOCKER-USER rule 1 -j FWSYNC-FORWARD",
                             "INPUT rule 1 -j FWSYNC-INPUT")}
    text = _restore_text(desired, 4, current).splitlines()
    assert text[-5:] == ["-D DOCKER-USER -j FWSYNC-FORWARD", "-D INPUT -j FWSYNC-INPUT",
                         "-I DOCKER-USER 1 -j FWSYNC-FORWARD", "-I INPUT 1 -j FWSYNC-INPUT",
                         "COMMIT"]
    removed = _remove_text(current).splitlines()
    assert removed[1:3] == ["-D DOCKER-USER -j FWSYNC-FORWARD", "-D INPUT -j FWSYNC-INPUT"]


def _long_defines(count: int) -> tuple:
    """`count` defines whose names share a 25-character prefix, each with its own address."""
    return tuple(aset(f"office_in_the_north_wing_{i}", f"198.51.{i // 250}.{i % 250 + 1}")
                 for i in range(count))


def test_long_define_names_sharing_a_prefix_get_distinct_ipset_names():
    """Before: 13 characters and 4 hex digits of a digest; of 700 names sharing a prefix,
    office_in_the_north_wing_37 and _626 both became office_in_the~3426, and one define's rule
    then matched the other's set."""
    sets = _long_defines(700)
    pol = policy(*(rule(10 + i, src=Endpoint(set=s.name), dst=Endpoint(ports=ports(8080)))
                   for i, s in enumerate(sets)), sets=sets)
    objects = render_family(build_ruleset(pol, DockerState()).ruleset, 4, "DOCKER-USER")
    keys = [k for k in objects if k.startswith("ipv4 set ")]
    assert len(keys) == len(sets), f"{len(sets) - len(keys)} ipset names taken twice"
    inbound = objects["ipv4 chain FWSYNC-INBOUND"]
    used = [ln.split("--match-set ")[1].split()[0] for ln in inbound if "--match-set" in ln]
    assert len(set(used)) == len(sets) and all(len(n) <= 31 for n in used)
    temp = [len(temp_set_name(n)) for n in used]
    assert max(temp) <= 31


def test_a_shortened_name_taken_twice_is_refused_never_shared(monkeypatch):
    """Should two long names ever shorten alike, the render refuses (nothing reaches the
    kernel) instead of letting one rule match the other define's addresses."""
    from fwsync.backends import iptables_render
    from fwsync.backends.base import BackendError

    monkeypatch.setattr(iptables_render, "set_display", lambda name: name[:13] + "~0000")
    sets = _long_defines(2)
    pol = policy(*(rule(10 + i, src=Endpoint(set=s.name), dst=Endpoint(ports=ports(8080)))
                   for i, s in enumerate(sets)), sets=sets)
    with pytest.raises(BackendError, match=r"'office_in_the_north_wing_0' and "
                                           r"'office_in_the_north_wing_1' would share"):
        render_family(build_ruleset(pol, DockerState()).ruleset, 4, "DOCKER-USER")
