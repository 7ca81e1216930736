"""nftables rendering is pure: the table's objects compared with a reviewed golden file
(refresh with FWSYNC_UPDATE_GOLDEN=1), and the JSON → lines formatting both sides share."""

import json
import os
from dataclasses import replace
from pathlib import Path

import pytest

from fwsync.backends.nft_sets import set_names
from fwsync.backends.nft_state import objects_state
from fwsync.backends.nft_table import TEXT_RULE
from fwsync.backends.nft_transactions import cleanup_batch, staging_batch, switch_batch
from fwsync.backends.nftables_render import render, table_objects
from fwsync.core.build import build_ruleset
from fwsync.core.observed import DockerState, ProxyCgroup, PublishedPort
from fwsync.reconcile import choose_backend
from fwsync.rules.model import Endpoint

from .helpers import aset, net, policy, ports, rule
from .test_iptables_render import DOCKER, POLICY

pytestmark = pytest.mark.unit
GOLDEN = Path(__file__).parent.parent / "golden"


def test_render_matches_golden():
    state = render(build_ruleset(POLICY, DOCKER).ruleset)
    text = "".join(f"[{key}]\n" + "".join(f"{line}\n" for line in lines)
                   for key, lines in sorted(state.items()))
    path = GOLDEN / "nftables.txt"
    if os.environ.get("FWSYNC_UPDATE_GOLDEN"):
        path.write_text(text)
    assert text == path.read_text()


def _objects() -> list[dict]:
    return table_objects(build_ruleset(POLICY, DOCKER).ruleset)


def test_new_sets_are_committed_before_the_rules_that_use_them():
    objects = _objects()
    names = set_names(objects)
    kept = names[0]
    staging = staging_batch(objects, [kept, "old_v4_0000"])
    table = {"table": {"family": "inet", "name": "fwsync"}}
    assert staging[:2] == [{"metainfo": {"json_schema_version": 1}}, {"add": table}]
    staged = [op["add"]["set"]["name"] for op in staging[2:]]
    meters = [n for n in names if n.startswith(("limit.", "seen."))]
    assert meters and staged == [n for n in names[1:] if n not in meters], \
        "only the address and port sets that do not exist yet, and nothing else"

    switch = switch_batch(objects, [kept, "old_v4_0000"])
    assert switch[:3] == [{"metainfo": {"json_schema_version": 1}}, {"add": table},
                          {"flush": table}]
    old = {"delete": {"set": {"family": "inet", "table": "fwsync", "name": "old_v4_0000"}}}
    assert switch[3] == old
    added = [next(iter(op["add"])) for op in switch[4:]]
    assert set(added) == {"set", "chain", "rule"}
    assert [op["add"]["set"]["name"] for op in switch[4:] if "set" in op["add"]] == meters, \
        "the only sets the switch adds are the limit meters, with the rules that update them"
    chain = next(op["add"]["chain"] for op in switch[4:] if "hook" in op["add"].get("chain", {}))
    assert chain["prio"] == -1 and isinstance(chain["prio"], int)


def test_set_names_follow_their_content():
    a = set_names(_objects())
    office = rule(4, proto="tcp", src=Endpoint(set="office"), dst=Endpoint(ports=ports(5432)))
    other = policy(office, sets=(aset("office", "198.51.100.0/24"),))
    b = set_names(table_objects(build_ruleset(other, DockerState()).ruleset))
    assert a == set_names(_objects()), "the same content gives the same name"
    office_a = next(n for n in a if n.startswith("office_v4_"))
    office_b = next(n for n in b if n.startswith("office_v4_"))
    assert office_a != office_b


def test_a_hand_edited_set_is_refilled_in_the_switch():
    objects = _objects()
    office = next(n for n in set_names(objects) if n.startswith("office_v4_"))
    switch = switch_batch(objects, set_names(objects), rebuild=[office])
    flush = {"flush": {"set": {"family": "inet", "table": "fwsync", "name": office}}}
    i = switch.index(flush)
    assert switch[i + 1]["add"]["element"]["name"] == office
    assert cleanup_batch([office], table_existed=True)[2:] == [
        {"delete": {"set": {"family": "inet", "table": "fwsync", "name": office}}}]


def test_rules_without_addresses_serve_both_families_once():
    state = render(build_ruleset(policy(), DockerState()).ruleset)
    inbound = state["inet fwsync chain inbound"]
    assert inbound[-1] == 'counter drop comment "10-test.rules:1 default deny"'
    assert sum("default" in line for line in inbound) == 1


def test_listing_shapes_format_like_rendered_ones():
    # As libnftables 1.0.6 lists them: elements with options, handles, extra keys.
    listed = [
        {"set": {"family": "inet", "name": "x_v4", "table": "fwsync", "type": "ipv4_addr",
                 "handle": 3, "flags": ["interval"],
                 "elem": [{"prefix": {"addr": "198.51.100.0", "len": 25}}, "203.0.113.7"]}},
        {"chain": {"family": "inet", "table": "fwsync", "name": "inbound", "handle": 2}},
        {"rule": {"family": "inet", "table": "fwsync", "chain": "inbound", "handle": 9,
                  "expr": json.loads('[{"match": {"op": "!=", "left": {"&": [{"ct": {"key": '
                                     '"status"}}, "dnat"]}, "right": "dnat"}}, '
                                     '{"drop": null}]')}},
    ]
    assert objects_state(listed) == {
        "inet fwsync set x_v4 (ipv4_addr)": ("198.51.100.0/25", "203.0.113.7"),
        "inet fwsync chain inbound": ("regular chain", "ct status & dnat != dnat drop"),
    }


def test_auto_follows_what_docker_reports(monkeypatch: pytest.MonkeyPatch):
    """What auto asks of the host (Docker's IPv6 rules, fwsync's nftables table, whether
    libnftables' bindings import) is given here: no kernel and no python3-nftables needed."""
    import fwsync.reconcile

    held: set[str] = set()
    monkeypatch.setattr(fwsync.reconcile, "_holds_objects", lambda b: b.name in held)
    monkeypatch.setattr(fwsync.reconcile, "nftables_available", lambda: True)
    monkeypatch.setattr(fwsync.reconcile, "_ipv6_preempted", lambda: False)
    backend, why = choose_backend("auto", DockerState(firewall_backend="nftables"))
    assert backend.name == "nftables" and "nftables" in why
    backend, why = choose_backend("auto", DockerState(firewall_backend="iptables"))
    assert backend.name == "iptables"
    backend, why = choose_backend("auto", DockerState(version="20.10.24"))
    assert backend.name == "iptables" and "20.10.24" in why
    monkeypatch.setattr(fwsync.reconcile, "_ipv6_preempted", lambda: True)
    backend, why = choose_backend("auto", DockerState(version="20.10.24"))
    assert backend.name == "nftables"
    assert why.startswith("auto: Docker writes its IPv6 rules without a DOCKER-USER chain")
    monkeypatch.setattr(fwsync.reconcile, "nftables_available", lambda: False)
    backend, why = choose_backend("auto", DockerState(version="20.10.24"))
    assert backend.name == "iptables" and "python3-nftables" in why
    # Docker 28.1+ says which firewall it writes, and has an IPv6 DOCKER-USER: no guessing.
    assert choose_backend("auto", DockerState(firewall_backend="iptables"))[0].name == \
        "iptables"
    assert choose_backend("nftables", DockerState(firewall_backend="iptables"))[0].name == \
        "nftables"
    # fwsync's nftables table in the kernel (`apply --backend nftables`): auto finds it there.
    monkeypatch.setattr(fwsync.reconcile, "_ipv6_preempted", lambda: False)
    held.add("nftables")
    for docker in (DockerState(version="20.10.24"), DockerState(firewall_backend="iptables"),
                   DockerState(error="unreachable")):
        backend, why = choose_backend("auto", docker)
        assert backend.name == "nftables" and "is what is enforced now" in why, docker


def test_neighbours_with_one_verdict_become_one_set_lookup():
    def src(line: int, action: str, cidr: str) -> object:
        return rule(line, action, proto="tcp", src=Endpoint(net=net(cidr)),
                    dst=Endpoint(ports=ports(5432)))
    pol = policy(src(2, "allow", "198.51.100.0/25"), src(3, "allow", "198.51.100.64/26"),
                 src(4, "allow", "203.0.113.9/32"), src(5, "deny", "203.0.113.0/24"),
                 src(6, "allow", "192.0.2.0/24"))
    state = render(build_ruleset(pol, DockerState()).ruleset)
    inbound = [line for line in state["inet fwsync chain inbound"] if "5432" in line]
    assert len(inbound) == 4, inbound
    # One merged set, held as a hash set of its single addresses and an interval set of its
    # networks: one rule for each, side by side.
    assert "saddr @src.0.0_v4_h_" in inbound[0] and "saddr @src.0.0_v4_" in inbound[1]
    assert all("10-test.rules:2 to 10-test.rules:4: 3 rules" in line for line in inbound[:2])
    assert inbound[2].endswith('counter drop comment "10-test.rules:5 rule 5"')
    assert "ip saddr 192.0.2.0/24 counter accept" in inbound[3]
    hosts = next(v for k, v in state.items() if "set src.0.0_v4_h_" in k)
    nets = next(v for k, v in state.items() if "set src.0.0_v4_" in k and "_h_" not in k)
    assert (hosts, nets) == (("203.0.113.9",), ("198.51.100.0/25",)), "overlaps collapsed"


def test_an_allowlist_written_as_rules_for_both_protocols_is_two_lookups():
    rules = [rule(i, src=Endpoint(net=net(f"198.51.{i}.0/24")), dst=Endpoint(ports=ports(5432)))
             for i in range(2, 202)]
    rules.append(rule(300, "reject", src=Endpoint(net=net("203.0.113.0/24"))))
    state = render(build_ruleset(policy(*rules), DockerState()).ruleset)
    inbound = state["inet fwsync chain inbound"]
    merged = [line for line in inbound if "saddr @src." in line]
    assert len(merged) == 2 and {"tcp", "udp"} == {line.split()[2] for line in merged}
    assert all("200 rules with one verdict" in line for line in merged)
    assert len([line for line in inbound if "203.0.113.0/24" in line]) == 1, "reject stays apart"


def test_switch_remakes_chains_that_are_not_fwsyncs_own():
    objects = table_objects(build_ruleset(POLICY, DOCKER).ruleset)
    existing = {"forward": ("filter", "forward", 10), "inbound": (None, None, None),
                "stray": (None, None, None)}
    batch = switch_batch(objects, set_names(objects), (), existing)
    deleted = [o["delete"]["chain"]["name"] for o in batch if "chain" in o.get("delete", {})]
    assert deleted == ["forward", "stray"]  # inbound is as fwsync makes it: kept
    added = [o["add"]["chain"] for o in batch if "chain" in o.get("add", {})]
    assert {c["name"]: c.get("prio") for c in added} == {"forward": -1, "inbound": None,
                                                         "input": -1, "direct": None}
    first_add = next(i for i, o in enumerate(batch) if "add" in o and "table" not in o["add"])
    last_delete = max(i for i, o in enumerate(batch) if "delete" in o)
    assert last_delete < first_add


def test_an_address_set_is_a_hash_set_of_addresses_and_an_interval_set_of_networks():
    office = Endpoint(set="office")
    pol = policy(rule(5, proto="tcp", src=office, dst=Endpoint(ports=ports(5432))),
                 rule(6, "limit", proto="tcp", src=Endpoint(set="hosts"),
                      dst=Endpoint(ports=ports(22))),
                 rule(7, "deny", src=Endpoint(set="nets")),
                 sets=(aset("office", "198.51.100.7/32", "203.0.113.0/24"),
                       aset("hosts", "198.51.100.7/32", "198.51.100.9/32"),
                       aset("nets", "203.0.113.0/24")))
    objects = table_objects(build_ruleset(pol, DockerState()).ruleset)
    sets = {o["set"]["name"].rsplit("_", 1)[0]: o["set"] for o in objects if "set" in o
            and not o["set"]["name"].startswith(("limit.", "seen."))}
    assert sets["office_v4_h"]["elem"] == ["198.51.100.7"] and "flags" not in sets["office_v4_h"]
    assert sets["office_v4"]["elem"] == [{"prefix": {"addr": "203.0.113.0", "len": 24}}]
    assert sets["office_v4"]["flags"] == ["interval"]
    assert set(sets) == {"office_v4_h", "office_v4", "hosts_v4_h", "nets_v4"}, "no empty part"
    lines = objects_state(objects)["inet fwsync chain inbound"]
    # One rule per part, side by side, the hash part first; a limit's two rules each.
    office_rules = [line for line in lines if "@office_v4" in line]
    assert [line.split("@")[1].split()[0].rsplit("_", 1)[0] for line in office_rules] == \
        ["office_v4_h", "office_v4"]
    assert lines.index(office_rules[1]) == lines.index(office_rules[0]) + 1
    # A limit's four: the source taken into `seen`, dropped when it could not be (full),
    # rejected when over its rate, accepted.
    assert len([line for line in lines if "@hosts_v4_h_" in line]) == 4
    assert len([line for line in lines if "@nets_v4_" in line]) == 1


def test_a_rule_without_an_address_is_for_both_families_only_when_it_is_in_both():
    """`to container web` with web bound on IPv4 alone is an IPv4 rule: rendered without
    `meta nfproto`, the inet table's rule also let IPv6 through to db's binding."""
    docker = DockerState(ports=(
        PublishedPort("0.0.0.0", 8080, "tcp", "web", 80, networks=("bridge",)),
        PublishedPort("::", 8080, "tcp", "db", 80, networks=("bridge",))))
    pol = policy(rule(2, dst=Endpoint(container="web")), rule(3, proto="tcp",
                                                             dst=Endpoint(ports=ports(22))))
    inbound = render(build_ruleset(pol, docker).ruleset)["inet fwsync chain inbound"]
    web = [line for line in inbound if "rules:2" in line and "fwsync port" not in line]
    assert web == ['meta nfproto ipv4 meta l4proto tcp ct original proto-dst 8080 counter accept '
                   'comment "10-test.rules:2 rule 2"']
    both = [line for line in inbound if "rules:3" in line and "fwsync port" not in line]
    assert both == ['meta l4proto tcp ct original proto-dst 22 counter accept '
                    'comment "10-test.rules:3 rule 3"'], "one rule serves both families"


def test_the_proxy_chain_is_rendered_in_text_and_kept_out_of_the_json_switch():
    """With dockerd's cgroup known, `input` ends with a jump to `proxy`, whose one rule is nft
    text (libnftables' JSON refuses `socket cgroupv2`): it is in the state the diff compares,
    never in a JSON batch, and a switch that keeps it flushes the other chains one by one."""
    cgroup = ProxyCgroup("system.slice/docker.service", 2, "system.slice/docker.service",
                         own_ports=(("tcp", 2376), ("udp", 7946)))
    objects = table_objects(build_ruleset(POLICY, replace(DOCKER, proxy_cgroup=cgroup)).ruleset)
    state = objects_state(objects)
    own = 'return comment "fwsync dockerd\'s own socket: the host\'s firewall decides"'
    # Only what dockerd listens on now: not a port it might open later (a Swarm's), which a
    # container published later could hold.
    assert state["inet fwsync chain proxy"] == (
        "regular chain", f"meta l4proto tcp ct original proto-dst 2376 {own}",
        f"meta l4proto udp ct original proto-dst 7946 {own}",
        'socket cgroupv2 level 2 "system.slice/docker.service" jump inbound '
        'comment "fwsync docker-proxy: any port, published now or later"')
    assert state["inet fwsync chain input"][-1] == \
        'jump proxy comment "fwsync docker-proxy: a port published later"'
    existing = {"forward": ("filter", "forward", -1), "input": ("filter", "input", -1),
                "inbound": (None, None, None), "direct": (None, None, None),
                "proxy": (None, None, None)}
    batch = switch_batch(objects, set_names(objects), (), existing, keep=["proxy"])
    flushed = [o["flush"] for o in batch if "flush" in o]
    assert flushed == [{"chain": {"family": "inet", "table": "fwsync", "name": n}}
                       for n in ("forward", "input", "inbound", "direct")]
    assert not any("delete" in o for o in batch), "proxy is fwsync's own chain"
    assert all(TEXT_RULE not in o.get("add", {}) for o in batch)
    assert [o["add"]["chain"]["name"] for o in batch if "chain" in o.get("add", {})][-1] == \
        "proxy"
    without = table_objects(build_ruleset(POLICY, DOCKER).ruleset)
    assert "inet fwsync chain proxy" not in objects_state(without)
    gone = switch_batch(without, set_names(without), (), existing)
    assert {"flush": {"table": {"family": "inet", "name": "fwsync"}}} in gone
    assert {"delete": {"chain": {"family": "inet", "table": "fwsync", "name": "proxy"}}} in gone
