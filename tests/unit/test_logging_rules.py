"""Logging (issue 20): which decisions log, the kernel rules both backends write for them, and
how the daemon names a logged packet (the rule from the prefix's tag and index, the address
and port the client dialled). Pure; real packets: tests/kernel/test_logging.py."""

from __future__ import annotations

import ipaddress
import json
from dataclasses import replace

import pytest

from fwsync.backends.iptables_render import render_family
from fwsync.backends.nftables_render import render as render_nftables
from fwsync.core.build import build_ruleset
from fwsync.core.logging_rules import (
    limit_refusals_logged,
    log_tag,
    logged,
    parse_prefix,
    prefix,
)
from fwsync.core.observed import DockerState, PublishedPort
from fwsync.daemon.decisions import decision_of, ufw_line
from fwsync.observe.nflog import Logged
from fwsync.rules.model import Endpoint
from fwsync.verify.agree import disagreements

from .helpers import net, policy, ports, rule

pytestmark = pytest.mark.unit

WEB = PublishedPort("0.0.0.0", 8080, "tcp", "web", 80, container_addrs=("172.17.0.2",))


def test_each_level_logs_what_ufws_does() -> None:
    assert not logged("off", "deny") and logged("off", "allow", "log")
    assert not logged("low", "deny")  # low: the default only (logged_default)
    assert logged("medium", "deny") and logged("medium", "reject")
    assert not logged("medium", "allow") and logged("high", "allow")
    # a limit's admissions log as an allow's; its refusals over the rate at any level but off
    assert logged("high", "limit") and logged("off", "limit", "log")
    assert not logged("medium", "limit")
    assert limit_refusals_logged("low") and limit_refusals_logged("off", "log")
    assert not limit_refusals_logged("off")


def _limit_pol(level: str, log: str = ""):  # type: ignore[no-untyped-def]
    ssh = replace(rule(2, "limit", proto="tcp", dst=Endpoint(ports=ports(8080))), log=log)
    web = rule(3, "limit", proto="tcp", dst=Endpoint(ports=ports(9090)))
    return replace(policy(ssh, web), logging=level)


@pytest.mark.parametrize("level", ["low", "off"])
def test_a_limit_rules_refusals_go_through_a_chain_that_logs_and_rejects(level: str) -> None:
    """The rate is asked once: over it, a jump to the chain of logged refusals, which logs (with
    the log's own rate limits) and rejects; what the rules decide is unchanged (the verifier's
    walk of both backends' objects agrees with the policy)."""
    pol = _limit_pol(level)
    ruleset = build_ruleset(pol, DockerState(ports=(WEB,))).ruleset
    tag = log_tag(pol)
    v4 = render_family(ruleset, 4, "DOCKER-USER")
    nft = render_nftables(ruleset)
    if level == "off":
        assert "ipv4 chain FWSYNC-LIMITED" not in v4 and "inet fwsync chain limited" not in nft
        assert not any("NFLOG" in line for line in v4["ipv4 chain FWSYNC-INBOUND"])
        return
    over = [line for line in v4["ipv4 chain FWSYNC-INBOUND"] if "--hashlimit-above" in line]
    assert len(over) == 2 and all(line.endswith("-j FWSYNC-LIMITED") for line in over)
    limited = v4["ipv4 chain FWSYNC-LIMITED"]
    assert f'--nflog-prefix "{prefix(tag, 0, "limit")}"' in limited[0]
    assert "--ctorigdstport 8080" in limited[0] and "tcp-reset" in limited[1]
    assert limited[-1].endswith("icmp-port-unreachable")  # anything else: refused
    chain = nft["inet fwsync chain limited"]
    assert sum(f'log prefix "{prefix(tag, i, "limit")}" group 7171' in line
               for line in chain for i in (0, 1)) == 4  # a limit is per family
    assert any("jump limited" in line for line in nft["inet fwsync chain inbound"])
    for backend, state in (("iptables", {**v4, **render_family(ruleset, 6, "DOCKER-USER")}),
                           ("nftables", nft)):
        assert disagreements(ruleset, (WEB,), backend, state) == ()


def test_a_limit_rules_own_log_logs_what_it_lets_in() -> None:
    ruleset = build_ruleset(_limit_pol("off", "log"), DockerState(ports=(WEB,))).ruleset
    v4 = render_family(ruleset, 4, "DOCKER-USER")["ipv4 chain FWSYNC-INBOUND"]
    admitted = [i for i, line in enumerate(v4) if " allow\"" in line or ' allow"' in line]
    assert admitted and v4[admitted[0] + 1].endswith("-j RETURN")


def _pol(level: str):  # type: ignore[no-untyped-def]
    db = Endpoint(ports=ports(5432))
    return replace(policy(rule(2, proto="tcp", src=Endpoint(net=net("198.51.100.0/25")), dst=db),
                          replace(rule(3, "allow", proto="tcp", dst=Endpoint(ports=ports(22))),
                                  log="log")), logging=level)


def test_both_backends_write_a_rate_limited_log_rule_before_each_logged_decision() -> None:
    pol = _pol("low")
    ruleset = build_ruleset(pol, DockerState(ports=(WEB,))).ruleset
    tag = log_tag(pol)
    v4 = render_family(ruleset, 4, "DOCKER-USER")["ipv4 chain FWSYNC-INBOUND"]
    logs = [i for i, line in enumerate(v4) if "-j NFLOG" in line]
    # rule 3 (its own `log`) and the default (low); rule 2 is not logged
    assert [v4[i + 1].split("-j ")[-1] for i in logs] == ["RETURN", "DROP"]
    assert f'--nflog-prefix "{prefix(tag, 1, "allow")}" --nflog-group 7171' in v4[logs[0]]
    assert "--hashlimit-upto 6/min" in v4[logs[1]] and "--limit 10/sec" in v4[logs[1]]
    nft = render_nftables(ruleset)["inet fwsync chain inbound"]
    logged_lines = [line for line in nft if " log prefix " in line]
    assert len(logged_lines) == 4  # rule 3 and the default, each for IPv4 and IPv6
    assert all("limit rate 10/second burst 20" in line for line in logged_lines)
    assert f'log prefix "{prefix(tag, None, "deny")}" group 7171' in logged_lines[-1]
    off = build_ruleset(replace(pol, logging="off"), DockerState(ports=(WEB,))).ruleset
    assert sum(" log prefix " in line
               for line in render_nftables(off)["inet fwsync chain inbound"]) == 2  # rule 3's


def _logged(prefix_: str, dest: str = "172.17.0.2", dport: int = 80,
            orig: tuple[str, int] | None = None) -> Logged:
    return Logged(prefix=prefix_, family=4, proto="tcp",
                  source=ipaddress.ip_address("203.0.113.7"), sport=40000,
                  dest=ipaddress.ip_address(dest), dport=dport,
                  orig_dest=ipaddress.ip_address(orig[0]) if orig else None,
                  orig_dport=orig[1] if orig else None, indev="eth0", outdev="docker0",
                  time=1.8e9)


def test_a_logged_packet_is_named_with_its_rule_container_and_the_port_dialled() -> None:
    pol = _pol("medium")
    tag = log_tag(pol)
    d = decision_of(_logged(prefix(tag, None, "deny")), pol, (WEB,))
    assert d is not None
    assert (d.host_ip, d.port, d.dialled_from, d.container, d.verdict, d.origin) == \
        ("0.0.0.0", 8080, "docker", "web", "deny", "rules/10-test.rules:1")
    exact = decision_of(_logged(prefix(tag, 1, "allow"), orig=("198.51.100.1", 8080)), pol,
                        (WEB,))
    assert exact is not None
    assert (exact.host_ip, exact.port, exact.dialled_from, exact.origin) == \
        ("198.51.100.1", 8080, "conntrack", "rules/10-test.rules:3")
    other = decision_of(_logged(prefix("00000000", 1, "deny")), pol, (WEB,))
    assert other is not None and other.origin.startswith("unknown")
    assert decision_of(_logged("someone else's prefix"), pol, (WEB,)) is None


def test_the_ufw_style_line_keeps_a_hostile_name_from_looking_like_a_field() -> None:
    pol = _pol("medium")
    evil = replace(WEB, container="x SRC=198.51.100.66 y")
    d = decision_of(_logged(prefix(log_tag(pol), None, "deny")), pol, (evil,))
    assert d is not None
    line = ufw_line(d)
    assert line.startswith("[FWSYNC BLOCK] IN=eth0 OUT= SRC=203.0.113.7 DST=0.0.0.0 PROTO=TCP "
                           "SPT=40000 DPT=8080 ")
    assert line.count("SRC=") == 1 and "CONTAINER=x_SRC_198.51.100.66_y" in line


def test_a_prefix_says_which_rules_wrote_it() -> None:
    assert parse_prefix(prefix("ab12cd34", 7, "deny")) == ("ab12cd34", 7, "deny")
    assert parse_prefix(prefix("ab12cd34", None, "reject")) == ("ab12cd34", None, "reject")
    assert parse_prefix("fwsync ab x deny") is None and parse_prefix("UFW BLOCK") is None


def test_fwsync_log_reads_what_the_daemon_wrote(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import json
    import time

    from typer.testing import CliRunner

    import fwsync.cli
    from fwsync.daemon.decisions import DecisionFile

    path = tmp_path / "decisions.jsonl"
    monkeypatch.setenv("FWSYNC_DECISIONS", str(path))
    pol = _pol("medium")
    now = time.time()
    old = decision_of(replace(_logged(prefix(log_tag(pol), None, "deny")), time=now - 7200),
                      pol, (WEB,))
    new = decision_of(replace(_logged(prefix(log_tag(pol), 1, "allow")), time=now), pol, (WEB,))
    assert old is not None and new is not None
    assert DecisionFile(path).append([old, new]) is None
    res = CliRunner().invoke(fwsync.cli.app, ["log", "--since", "1h", "--format", "json"])
    assert res.exit_code == 0, res.output
    rows = [json.loads(line) for line in res.output.splitlines()]
    assert [r["verdict"] for r in rows] == ["allow"]  # the one two hours ago is left out
    text = CliRunner().invoke(fwsync.cli.app, ["log"]).output.splitlines()
    assert text[0].split()[1:4] == ["DENY", "203.0.113.7:40000", "→"]
    assert "0.0.0.0:8080/tcp (web) by rules/10-test.rules:1 in eth0" in text[0]
    bad = CliRunner().invoke(fwsync.cli.app, ["log", "--since", "yesterday"])
    assert bad.exit_code != 0 and "expected a number and s, m, h or d" in bad.output


def test_status_says_when_logged_decisions_go_nowhere(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """With `logging` in the rules and no daemon, the kernel sends the decisions to NFLOG and
    nothing reads them: status says so rather than leave the user expecting lines."""
    from typer.testing import CliRunner

    import fwsync.cli
    from fwsync.core.logging_rules import unread_logs
    from fwsync.reconcile import Planned, load_policy, plan_policy

    from .test_daemon_reconciler import MemoryBackend

    assert unread_logs(_pol("off"), daemon_running=False) is not None  # rule 3 says `log`
    assert unread_logs(replace(_pol("off"), rules=_pol("off").rules[:1]), False) is None
    assert unread_logs(_pol("low"), daemon_running=True) is None
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "10.rules").write_text("default deny incoming\nlogging low\n")
    monkeypatch.setenv("FWSYNC_DAEMON_STATE", str(tmp_path / "daemon.json"))  # none: not running
    backend = MemoryBackend()

    def planned(rules, _backend, full=False) -> Planned:  # type: ignore[no-untyped-def]
        policy, warnings = load_policy(rules)
        return plan_policy(policy, DockerState(ports=(WEB,)), backend, warnings)

    monkeypatch.setattr(fwsync.cli, "_plan", planned)
    out = CliRunner().invoke(fwsync.cli.app, ["status", "--rules", str(tmp_path / "rules")])
    assert out.exit_code == 0, out.output
    assert "`fwsync daemon` is not running here: the kernel sends them to NFLOG group 7171" \
        in out.output
    data = CliRunner().invoke(fwsync.cli.app, ["status", "--rules", str(tmp_path / "rules"),
                                               "--format", "json"])
    assert any("NFLOG group 7171" in n for n in json.loads(data.output)["notes"])
