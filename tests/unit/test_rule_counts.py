"""Counts per rule (core/counts): the kernel's comments placed on the policy's own rules, and
the backends' readers and carry-over (pure parts)."""

from __future__ import annotations

import pytest

from fwsync.backends.iptables import _restore_text, decided_of, parse_save
from fwsync.backends.iptables_render import render_family
from fwsync.backends.nft_rule_counts import carried, decided, held_counters
from fwsync.backends.nftables_render import render as render_nftables
from fwsync.backends.nftables_render import table_objects
from fwsync.core.build import build_ruleset
from fwsync.core.counts import Decided, RuleCount, by_origin, port_counts, rule_counts
from fwsync.core.observed import DockerState, PublishedPort
from fwsync.core.tallies import MAX_TALLIES, TALLY_VERDICT, parse_tally
from fwsync.present import counts_json, counts_lines
from fwsync.rules.model import Endpoint, Origin
from fwsync.verify.agree import disagreements

from .helpers import net, policy, ports, rule

pytestmark = pytest.mark.unit


def test_a_comment_is_placed_on_the_rule_whose_origin_starts_it_not_on_a_longer_lines():
    rules = [rule(4), *(rule(n, "deny") for n in range(5, 40)), rule(40, "deny")]
    pol = policy(*rules)
    decided_ = [Decided("10-test.rules:40 deny from x", "deny", 2),
                Decided("10-test.rules:4 allow 80", "allow", 3),
                Decided("10-test.rules:4 allow 80", "allow", 1),  # its IPv6 twin
                Decided("10-test.rules:1 default deny", "deny", 7),
                Decided("10-test.rules:5 to 10-test.rules:7: 3 rules with one verdict, merged",
                        "deny", 4),
                Decided("fwsync protect localhost-publish", "deny", 0),
                Decided("written by something else", "allow", 9)]
    got = rule_counts(pol, decided_)
    assert [(c.origin, c.verdict, c.connections) for c in got] == [
        ("rules/10-test.rules:4", "allow", 4),  # as status and explain name a rule
        ("rules/10-test.rules:5 to 10-test.rules:7", "deny", 4),
        ("rules/10-test.rules:40", "deny", 2),
        ("rules/10-test.rules:1", "deny", 7),  # the default
        ("protect localhost-publish", "deny", 0),
        ("written by something else", "allow", 9)]
    assert got[3].text == "default deny"
    assert by_origin(got)["rules/10-test.rules:4"] == 4


def test_a_file_name_that_looks_like_another_rules_origin_does_not_take_its_count():
    hostile = rule(2)
    hostile = type(hostile)(action="allow", src=hostile.src, dst=hostile.dst,
                            origin=Origin("10-test.rules:4 x.rules", 2, "allow 22"))
    pol = policy(rule(4), hostile)
    got = rule_counts(pol, [Decided("10-test.rules:4 x.rules:2 allow 22", "allow", 5),
                            Decided("10-test.rules:4 allow 80", "allow", 1)])
    assert {c.origin: c.connections for c in got} == {"10-test.rules:4 x.rules:2": 5,
                                                       "rules/10-test.rules:4": 1}


def test_status_shows_counts_per_rule_and_on_each_ports_decision():
    counts = (RuleCount("r:2", "allow 80", "allow", 3), RuleCount("r:1", "default deny",
                                                                    "deny", 5))
    data = {"ports": [{"decisions": [{"origin": "r:2"}, {"origin": "r:1"},
                                     {"origin": "protect x"}]}]}
    counts_json(data, counts, {}, 0.0)
    assert [d["connections"] for d in data["ports"][0]["decisions"]] == [3, 5, None]
    assert data["rules"][0] == {"origin": "r:2", "rule": "allow 80", "verdict": "allow",
                                "connections": 3, "last_connection": None,
                                "sampled_since": None}
    lines = counts_lines(counts, {}, 0.0)
    assert lines[1].split()[:3] == ["r:2", "allow", "3"]
    failed: dict[str, object] = {"ports": []}
    counts_json(failed, "iptables-save failed", {}, 0.0)
    assert failed["rules"] is None and failed["rules_error"] == "iptables-save failed"


def test_iptables_counts_are_read_from_save_c_and_carried_into_the_restore():
    saved = parse_save(
        "*filter\n:FWSYNC-INBOUND - [0:0]\n"
        '[0:0] -A FWSYNC-INBOUND -m conntrack ! --ctstate DNAT -m comment --comment '
        '"fwsync protect direct-routing" -j FWSYNC-DIRECT\n'
        '[3:180] -A FWSYNC-INBOUND -p tcp -m comment --comment "r:2 allow 80" -j RETURN\n'
        '[2:120] -A FWSYNC-INBOUND -m comment --comment r:3 -j REJECT --reject-with tcp-reset\n'
        '[5:300] -A FWSYNC-INBOUND -m comment --comment "r:1 default deny" -j DROP\nCOMMIT\n')
    assert saved.chains["FWSYNC-INBOUND"][1] == \
        '-A FWSYNC-INBOUND -p tcp -m comment --comment "r:2 allow 80" -j RETURN'
    assert decided_of(saved) == [Decided("r:2 allow 80", "allow", 3), Decided("r:3", "reject", 2),
                                 Decided("r:1 default deny", "deny", 5)]
    kept = '-A FWSYNC-INBOUND -m comment --comment "r:1 default deny" -j DROP'
    new = '-A FWSYNC-INBOUND -s 192.0.2.9/32 -j RETURN'
    text = _restore_text({"ipv4 chain FWSYNC-INBOUND": (new, kept)}, 4, saved,
                         {"ipv4 chain FWSYNC-INBOUND"})
    assert f"[5:300] {kept}" in text.splitlines() and new in text.splitlines()


def test_nftables_counts_are_read_from_the_listing_and_carried_into_the_rewrite():
    def r(comment: str, verdict: str, packets: int | None) -> dict[str, object]:
        counter = {"packets": packets, "bytes": packets * 60} if packets is not None else None
        return {"rule": {"family": "inet", "table": "fwsync", "chain": "inbound",
                         "comment": comment, "expr": [{"counter": counter}, {verdict: None}]}}

    listed = [r("r:2 allow 80", "accept", 3), r("r:1 default deny", "drop", 5),
              {"rule": {"family": "inet", "table": "fwsync", "chain": "forward",
                        "expr": [{"jump": {"target": "inbound"}}]}}]
    assert decided(listed) == (Decided("r:2 allow 80", "allow", 3),
                               Decided("r:1 default deny", "deny", 5))
    rendered = [r("r:9 new", "accept", None), r("r:1 default deny", "drop", None)]
    out = carried(rendered, held_counters(listed))
    assert out[0] == rendered[0]
    assert out[1]["rule"]["expr"][0] == {"counter": {"packets": 5, "bytes": 300}}
    assert rendered[1]["rule"]["expr"][0] == {"counter": None}  # the plan's own is untouched


def test_activity_says_when_a_count_last_grew_and_which_rules_sat_idle():
    from fwsync.core.activity import DAY, Activity, idle, last_used, observe

    t0 = 1.7e9
    first = observe({}, [RuleCount("a:2", "x", "allow", 0), RuleCount("a:3", "y", "deny", 4)],
                     t0)
    assert first[("a:2", "allow")] == Activity(0, t0, None)
    later = observe(first, [RuleCount("a:2", "x", "allow", 2), RuleCount("a:3", "y", "deny", 4)],
                    t0 + 60)
    assert later[("a:2", "allow")] == Activity(2, t0, t0 + 60)
    assert later[("a:3", "deny")] == first[("a:3", "deny")]  # unchanged: not used since
    assert last_used(later, "a:2") == t0 + 60 and last_used(later, "a:3") is None
    # Written anew (edited, host rebooted): the count went down, it starts over.
    reset = observe(later, [RuleCount("a:2", "x", "allow", 1)], t0 + 120)
    assert reset == {("a:2", "allow"): Activity(1, t0 + 120, None)}  # a:3 is gone: forgotten
    # Nobody used a:2 for 31 days after its last use; a:3 was used before sampling began, so
    # its quiet time starts with the first sample.
    assert idle(later, t0 + 60 + 31 * DAY) == [("a:2", t0 + 60), ("a:3", t0)]
    assert idle(later, t0 + 29 * DAY) == []
    never = observe({}, [RuleCount("a:9", "z", "allow", 0)], t0)
    assert idle(never, t0 + 30 * DAY) == [("a:9", t0)]


def test_status_says_when_a_rule_was_last_used_and_hints_at_an_idle_one():
    from fwsync.core.activity import DAY, Activity

    now = 1.8e9
    counts = (RuleCount("r:2", "allow 80", "allow", 3), RuleCount("r:5", "allow 22", "allow", 0))
    activity = {("r:2", "allow"): Activity(3, now - 40 * DAY, now - 7200),
                ("r:5", "allow"): Activity(0, now - 40 * DAY, None)}
    lines = counts_lines(counts, activity, now)
    assert "last: 2 h ago" in lines[1] and "last: none in 40 d " in lines[2]
    assert lines[-1] == "Hint: r:5 has decided no connection in 40 d (the daemon's samples): " \
                        "is it still needed?"
    assert counts_lines(counts, {}, now)[-1].startswith("(When each rule was last used")


def test_each_decision_gets_a_counter_per_published_port_it_can_decide_for():
    """core/tallies: the decision's match narrowed to each published port of its family and
    protocol (and its port range), before it, with no verdict; both backends' objects still
    give the policy's verdicts (the verifier walks them), and the counts read back are placed
    on the rule and the port."""
    web = PublishedPort("0.0.0.0", 80, "tcp", "web", 80, container_addrs=("172.17.0.2",))
    dns = PublishedPort("0.0.0.0", 53, "udp", "dns", 53, container_addrs=("172.17.0.3",))
    alt = PublishedPort("0.0.0.0", 8080, "tcp", "web", 80, container_addrs=("172.17.0.2",))
    bindings = (web, dns, alt)
    pol = policy(rule(2, src=Endpoint(net=net("198.51.100.0/24"))),
                 rule(3, proto="tcp", dst=Endpoint(ports=ports(8000, (8080, 8090)))))
    ruleset = build_ruleset(pol, DockerState(ports=bindings)).ruleset
    assert ruleset.published == ((4, "tcp", 80), (4, "tcp", 8080), (4, "udp", 53))
    v4 = render_family(ruleset, 4, "DOCKER-USER")
    inbound = v4["ipv4 chain FWSYNC-INBOUND"]
    tallied = [line.split('--comment "')[1].split(" 10-test")[0] for line in inbound
               if "fwsync port" in line]
    # rule 2 (any port): all three; rule 3 (tcp 8000, 8080-8090): 8080 only; the default: all
    assert tallied == ["fwsync port ipv4 80/tcp", "fwsync port ipv4 8080/tcp",
                       "fwsync port ipv4 53/udp", "fwsync port ipv4 8080/tcp",
                       "fwsync port ipv4 80/tcp", "fwsync port ipv4 8080/tcp",
                       "fwsync port ipv4 53/udp"]
    state = {**v4, **render_family(ruleset, 6, "DOCKER-USER")}
    assert disagreements(ruleset, bindings, "iptables", state) == ()
    assert disagreements(ruleset, bindings, "nftables", render_nftables(ruleset)) == ()
    saved = "*filter\n:FWSYNC-INBOUND - [0:0]\n" + "".join(
        f"[{4 if 'port ipv4 8080/tcp 10-test.rules:1' in line else 0}:0] {line}\n"
        for line in inbound) + "COMMIT\n"
    decided_ = decided_of(parse_save(saved))
    assert {(o.rsplit("/", 1)[-1], p): n for (o, p), n in port_counts(pol, decided_).items()} \
        == {("10-test.rules:2", "ipv4 80/tcp"): 0, ("10-test.rules:2", "ipv4 8080/tcp"): 0,
            ("10-test.rules:2", "ipv4 53/udp"): 0, ("10-test.rules:3", "ipv4 8080/tcp"): 0,
            ("10-test.rules:1", "ipv4 80/tcp"): 0, ("10-test.rules:1", "ipv4 8080/tcp"): 4,
            ("10-test.rules:1", "ipv4 53/udp"): 0}
    assert all(c.verdict != TALLY_VERDICT for c in rule_counts(pol, decided_))
    nft_objects = [o for o in table_objects(ruleset) if "rule" in o]
    assert {d.port for d in decided(o for o in nft_objects) if d.port} == {
        "ipv4 80/tcp", "ipv4 8080/tcp", "ipv4 53/udp"}


def test_a_ports_decision_shows_that_ports_count_where_the_kernel_has_one():
    counts = (RuleCount("r:2", "allow from x", "allow", 7), RuleCount("r:1", "default deny",
                                                                      "deny", 5))
    data = {"ports": [{"host_ip": "0.0.0.0", "host_port": 80, "proto": "tcp",
                       "decisions": [{"origin": "r:2"}, {"origin": "r:1"}]}]}
    counts_json(data, counts, {}, 0.0, {("r:2", "ipv4 80/tcp"): 3})
    assert [(d["connections"], d["connections_of"]) for d in data["ports"][0]["decisions"]] \
        == [(3, "port"), (5, "rule")]
    assert parse_tally("fwsync port ipv6 443/tcp a.rules:3 allow 443") == \
        ("ipv6 443/tcp", "a.rules:3 allow 443")
    assert parse_tally("fwsync protect localhost-publish") is None


def test_per_port_counters_are_capped_whatever_docker_publishes():
    """Their number is the decisions times the ports: whoever reaches Docker's socket picks the
    ports. Past MAX_TALLIES there are none, and plan says so."""
    many = tuple(PublishedPort("0.0.0.0", 10000 + i, "tcp", f"c{i}", 80,
                               container_addrs=("172.17.0.2",)) for i in range(MAX_TALLIES))
    built = build_ruleset(policy(rule(2, src=Endpoint(net=net("198.51.100.0/24")))),
                          DockerState(ports=many))
    assert built.ruleset.published == ()
    assert any("per-port counters would be needed" in n for n in built.notes)
    inbound = render_family(built.ruleset, 4, "DOCKER-USER")["ipv4 chain FWSYNC-INBOUND"]
    assert not any("fwsync port" in line for line in inbound)
