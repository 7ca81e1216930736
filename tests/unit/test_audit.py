"""Audit (issue 21, item 1): `audit deny|reject|limit ...` and `mode audit` in the rules
language; an audited rule decides nothing anywhere fwsync answers (the matcher, status'
decisions, explain) and is named beside what decides; both backends render it as a counter and
a log rule that the verifier reads as deciding nothing; the kernel's audited rules make the
enforcing predicate say no. Pure; real packets: tests/kernel/test_audit.py."""

from __future__ import annotations

import ipaddress

import pytest

from fwsync.backends.iptables import decided_of, parse_save
from fwsync.backends.iptables_render import render_family
from fwsync.backends.nft_rule_counts import decided as nft_decided
from fwsync.backends.nftables_render import render as render_nftables
from fwsync.backends.nftables_render import table_objects
from fwsync.core.audit import audited_in_kernel, audited_names
from fwsync.core.build import build_ruleset
from fwsync.core.enforcing import Enforcement, FamilyReach
from fwsync.core.explain import Connection, decide
from fwsync.core.observed import DockerState, PublishedPort
from fwsync.core.port_decisions import decisions_for
from fwsync.daemon.decisions import LogDecision, ufw_line
from fwsync.doctor.checks import check_enforcement
from fwsync.rules.model import Policy
from fwsync.rules.syntax import parse_sources
from fwsync.verify.agree import disagreements

pytestmark = pytest.mark.unit

WEB = PublishedPort("0.0.0.0", 80, "tcp", "web", 80, container_addrs=("172.17.0.2",))
ATTACKER = ipaddress.ip_address("203.0.113.7")


def parsed(text: str) -> Policy:
    res = parse_sources([("t.rules", text)], lambda _p: "")
    assert res.policy is not None, res.diagnostics
    return res.policy


def errors(text: str) -> list[str]:
    return [str(d) for d in parse_sources([("t.rules", text)], lambda _p: "").diagnostics]


def test_audit_and_mode_in_the_rules_language() -> None:
    pol = parsed("audit deny from 203.0.113.0/24 to any port 80\naudit limit 22/tcp\n"
                 "allow 443\nmode audit\n")
    assert [(r.action, r.audit) for r in pol.rules] == \
        [("deny", True), ("limit", True), ("allow", False)]
    assert pol.mode == "audit" and pol.mode_origin is not None
    assert errors("audit allow 80\n") == [
        "t.rules:1:7: error: unexpected 'allow', expected one of 'deny', 'reject', 'limit'; "
        "an allow refuses nothing: only a refusal is audited"]
    assert errors("mode audit\nmode enforce\n")[0].startswith(
        "t.rules:2:1: error: duplicate 'mode': the mode is already set at t.rules:1")
    assert errors("mode loud\n") == [
        "t.rules:1:6: error: unexpected 'loud', expected one of 'enforce', 'audit'"]


def _q(ruleset, text: str):  # type: ignore[no-untyped-def]
    return decide(ruleset, Connection(source=ATTACKER, port=80, proto="tcp"), None)


def test_an_audited_rule_decides_nothing_and_is_named_beside_what_decides() -> None:
    pol = parsed("default allow\naudit deny from 203.0.113.0/24 to any port 80 proto tcp\n")
    ruleset = build_ruleset(pol, DockerState(ports=(WEB,))).ruleset
    decided = _q(ruleset, "")
    assert decided.action == "allow" and decided.origin == "t.rules:1"
    assert [(u.action, u.origin, u.when) for u in decided.audited] == [("deny", "t.rules:2", "")]
    assert [d.action for d in decisions_for(pol, ruleset, WEB)] == ["audit deny", "allow"]
    # The same rule, enforced, decides.
    enforced = build_ruleset(parsed("default allow\ndeny from 203.0.113.0/24 to any port 80 "
                                    "proto tcp\n"), DockerState(ports=(WEB,))).ruleset
    assert _q(enforced, "").action == "deny"


def test_mode_audit_audits_the_default_and_every_refusal_but_no_allow() -> None:
    pol = parsed("default deny\nmode audit\nallow from 198.51.100.0/24\nreject 80/udp\n")
    ruleset = build_ruleset(pol, DockerState(ports=(WEB,))).ruleset
    assert ruleset.default == "allow" and ruleset.audit_default == "deny"
    assert {(r.action, r.audit) for r in ruleset.rules} == {("allow", False), ("reject", True)}
    decided = _q(ruleset, "")
    assert decided.action == "allow" and "audited" in decided.rule
    assert [(u.action, u.origin) for u in decided.audited] == [("deny", "t.rules:1")]
    assert [d.action for d in decisions_for(pol, ruleset, WEB)] == \
        ["allow", "audit deny", "allow"]


POLICIES = [
    "default allow\naudit deny from 203.0.113.0/24 to any port 80 proto tcp\n",
    "default allow\naudit reject 80\naudit limit 80/tcp\nallow from 198.51.100.0/24\n",
    "default reject\nmode audit\nallow from 198.51.100.0/24 to any port 80\nlimit 80/tcp\n",
]


@pytest.mark.parametrize("text", POLICIES)
def test_both_backends_render_audited_rules_that_decide_nothing(text: str) -> None:
    """The verifier walks both backends' objects for each source it tries (trusted, outside,
    the audited ones) and finds the policy's verdicts, audited rules passed by."""
    ruleset = build_ruleset(parsed(text), DockerState(ports=(WEB,))).ruleset
    v4 = render_family(ruleset, 4, "DOCKER-USER")
    state = {**v4, **render_family(ruleset, 6, "DOCKER-USER")}
    nft = render_nftables(ruleset)
    assert disagreements(ruleset, (WEB,), "iptables", state) == ()
    assert disagreements(ruleset, (WEB,), "nftables", nft) == ()
    inbound = v4["ipv4 chain FWSYNC-INBOUND"]
    assert any(" would-" in line for line in inbound)
    assert sum("would-" in line for line in nft["inet fwsync chain inbound"]) >= 1
    # The kernel's own listing names them: what the enforcing predicate reads.
    for held in (state, nft):
        assert audited_in_kernel(held), held


def test_audited_counts_are_read_back_as_audit_on_both_backends() -> None:
    ruleset = build_ruleset(parsed(POLICIES[0]), DockerState(ports=(WEB,))).ruleset
    lines = render_family(ruleset, 4, "DOCKER-USER")["ipv4 chain FWSYNC-INBOUND"]
    saved = "*filter\n:FWSYNC-INBOUND - [0:0]\n" + "".join(
        f"[{7 if 'would-' not in line and '203.0.113.0/24' in line else 0}:0] {line}\n"
        for line in lines) + "COMMIT\n"
    audit = [d for d in decided_of(parse_save(saved)) if d.verdict == "audit"]
    assert [(d.comment.split()[0], d.connections) for d in audit] == [("t.rules:2", 7)]
    objects = [o for o in table_objects(ruleset) if "rule" in o]
    counted = [o["rule"] for o in objects if o["rule"]["chain"] == "inbound"
               and any("counter" in e for e in o["rule"]["expr"] if isinstance(e, dict))]
    verdicts = {(d.comment.split()[0], d.verdict) for d in nft_decided({"rule": r}
                                                                       for r in counted)}
    assert ("t.rules:2", "audit") in verdicts and ("t.rules:1", "allow") in verdicts


def test_the_enforcing_predicate_says_no_for_audited_rules_the_kernel_holds() -> None:
    ruleset = build_ruleset(parsed("default deny\nmode audit\n"), DockerState(ports=(WEB,))
                            ).ruleset
    names = audited_names(ruleset, audited_in_kernel(render_nftables(ruleset)))
    assert names == ("t.rules:1 would deny",)
    reach = (FamilyReach(4, True, "x"), FamilyReach(6, True, "y"))
    audited = Enforcement("nftables", reach, audited=names)
    assert Enforcement("nftables", reach).enforcing and not audited.enforcing
    assert audited.problems == ("audited, not enforced: t.rules:1 would deny (counted and "
                                "logged, nothing refused by them)",)
    (finding,) = check_enforcement(audited)
    assert (finding.check, finding.severity) == ("audit-mode", "warning")


def test_what_an_audited_rule_saw_is_an_audit_line_not_a_block() -> None:
    d = LogDecision(0.0, "203.0.113.7", 40000, "0.0.0.0", 80, "tcp", "web", "would-deny",
                    "t.rules:2", "eth0", "172.17.0.2", 80)
    line = ufw_line(d)
    assert line.startswith("[FWSYNC AUDIT] ") and "BLOCK" not in line


def test_the_metrics_count_what_an_audited_rule_saw_but_not_as_denied() -> None:
    """docs/rolling-out.md: `fwsync_rule_connections_total{verdict="audit"}`, and nothing of it
    in fwsync_denied_connections_total (nothing was refused)."""
    from fwsync.core.counts import RuleCount
    from fwsync.daemon.metrics import RuleCounts

    counts = (RuleCount("t.rules:2", "audit deny 80", "audit", 7),
              RuleCount("t.rules:1", "default deny", "deny", 3))
    families = {f.name: f for f in RuleCounts(lambda: counts).collect()}
    per_rule = {tuple(s.labels.values()): s.value
                for s in families["fwsync_rule_connections"].samples if s.name.endswith("_total")}
    assert per_rule[("t.rules:2", "audit")] == 7
    (denied,) = [s.value for s in families["fwsync_denied_connections"].samples
                 if s.name.endswith("_total")]
    assert denied == 3
