"""Rules text that would reach the kernel as syntax: control bytes in a comment, and interface
names (`in on IFACE`). Real kernel, both backends, both iptables variants, real packets."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.lab import KernelLab, ruleset_snapshot, run_fwsync
from tests.steps import fwsync_ok, write_rules

pytestmark = pytest.mark.kernel



DENY = "default allow\ndeny from 203.0.113.0/25 to any port 5432 proto tcp comment 'abuse'\n"


def test_a_nul_in_a_comment_is_refused_and_the_deny_stays(
        kernel_lab: KernelLab, tmp_path: Path, backend: str) -> None:
    """A NUL cut the iptables-restore line short: the deny lost its DROP while check said OK
    and apply said Applied (nftables refused every apply instead)."""
    lab = kernel_lab
    lab.publish(5432, 80)
    rules = write_rules(tmp_path, DENY)
    fwsync_ok(lab, "apply", rules=rules)
    assert lab.attacker.probe(5432) == "filtered"
    before = ruleset_snapshot(lab, lab.variant)

    bad = DENY.replace("'abuse'", "'ab\x00use'").encode()
    (rules / "10-test.rules").write_bytes(bad)
    check = run_fwsync(lab, "check", str(rules))
    assert check.returncode == 1, check.stdout
    assert f"{rules}/10-test.rules:2:64: error: control character U+0000 is not allowed" \
        in check.stdout
    applied = run_fwsync(lab, "apply", rules=rules)
    assert applied.returncode == 1 and "nothing was changed" in applied.stderr
    assert "10-test.rules:2:64: error: control character U+0000" in applied.stderr
    assert ruleset_snapshot(lab, lab.variant) == before
    assert lab.attacker.probe(5432) == "filtered"
    assert lab.trusted.probe(5432) == "open"


def test_a_rules_file_name_with_control_bytes_reaches_no_kernel_comment_raw(
        kernel_lab: KernelLab, tmp_path: Path, backend: str) -> None:
    """The file's name is part of every kernel comment (FILE:LINE): a newline in it would have
    started another iptables-restore line."""
    lab = kernel_lab
    lab.publish(5432, 80)
    rules = write_rules(tmp_path, "default allow\n"
                                  "deny from 203.0.113.0/25 to any port 5432 proto tcp\n",
                        name="10-x\n-j ACCEPT\x01.rules")
    fwsync_ok(lab, "apply", rules=rules)
    assert lab.attacker.probe(5432) == "filtered"
    assert lab.trusted.probe(5432) == "open"
    assert run_fwsync(lab, "plan", "--detailed-exitcode", rules=rules).returncode == 0


def test_on_iface_has_one_wildcard_meaning_in_both_backends(
        kernel_lab: KernelLab, tmp_path: Path, backend: str) -> None:
    """`+` at the end is a prefix, everything else is literal: the same packets pass on both
    backends (before, a `*` was literal to iptables and a wildcard to nftables). The trusted
    peer arrives on HOST's `v-trusted`, the attacker on `v-attacker`."""
    lab = kernel_lab
    for port in (5432, 5433, 5434):
        lab.publish(port, 80)
    rules = write_rules(tmp_path, "allow in on v-trust 5432/tcp\n"      # literal: no such link
                                  "allow in on v-tr+ 5433/tcp\n"        # prefix: v-trusted
                                  "allow in on v-attacker 5434/tcp\n")  # literal
    fwsync_ok(lab, "apply", rules=rules)
    got = {(who, port): peer.probe(port) for who, peer in (("trusted", lab.trusted),
                                                         ("attacker", lab.attacker))
           for port in (5432, 5433, 5434)}
    assert got == {("trusted", 5432): "filtered", ("trusted", 5433): "open",
                   ("trusted", 5434): "filtered", ("attacker", 5432): "filtered",
                   ("attacker", 5433): "filtered", ("attacker", 5434): "open"}
    assert run_fwsync(lab, "plan", "--detailed-exitcode", rules=rules).returncode == 0

    before = ruleset_snapshot(lab, lab.variant)
    (rules / "10-test.rules").write_text("deny in on v-*\n")
    refused = run_fwsync(lab, "apply", rules=rules)
    assert refused.returncode == 1
    assert "10-test.rules:1:12: error: 'v-*' is not an interface name fwsync can match: '*' " \
           "is not a wildcard here" in refused.stderr
    assert ruleset_snapshot(lab, lab.variant) == before
