"""explain against real packets, both families, both backends: the matcher that explain, status
and doctor share (fwsync.core.matching) must give the kernel's verdict. The KernelLab has no
dockerd, so explain answers from the rules alone (`if_published`), as for any published port."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.lab import KernelLab, Peer, State, probe_many, run_fwsync
from tests.steps import fwsync_ok, write_rules

pytestmark = pytest.mark.kernel

RULES = """\
default deny incoming
define office 198.51.100.0/25, 2001:db8:1::/64
allow from 203.0.113.0/24 to any port 8080
allow from $office to any port 5432 proto tcp
reject from 2001:db8:2::/64 to any port 2222 proto tcp
allow 2222/tcp
allow 53/udp
"""
PORTS: list[tuple[int, str]] = [(8080, "tcp"), (5432, "tcp"), (2222, "tcp"), (7777, "tcp"),
                                (53, "udp")]
EXPECTED: dict[str, State] = {"allow": "open", "deny": "filtered", "reject": "closed"}


@pytest.mark.parametrize("backend", ["iptables", "nftables"])
def test_explain_is_what_packets_see_in_both_families(
        make_kernel_lab, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,  # type: ignore[no-untyped-def]
        backend: str) -> None:
    monkeypatch.setenv("FWSYNC_BACKEND", backend)
    lab: KernelLab = make_kernel_lab("nft")
    lab.publish(8080, 80)
    lab.publish(5432, 80)
    lab.publish(2222, 81)
    lab.publish(7777, 81)
    lab.publish(53, 80, "udp")
    rules = write_rules(tmp_path, RULES)
    fwsync_ok(lab, "apply", rules=rules)

    verdicts: dict[tuple[str, int, int, str], str] = {}
    seen: dict[tuple[str, int, int, str], State] = {}
    for peer in (lab.trusted, lab.attacker):
        targets: list[tuple[str, int, str]] = []
        for v6 in (False, True):
            source, to = (peer.v6, peer.host_v6) if v6 else (peer.v4, peer.host_v4)
            for port, proto in PORTS:
                doc = json.loads(fwsync_ok(lab, "explain", source, f"{port}/{proto}", "--to", to,
                                           "--format", "json", rules=rules).stdout)
                verdicts[(peer.name, 6 if v6 else 4, port, proto)] = \
                    doc["if_published"]["action"]
                targets.append((to, port, proto))
        for (to, port, proto), state in zip(targets, probe_many(peer.ns, targets), strict=True):
            seen[(peer.name, 6 if ":" in to else 4, port, proto)] = state
    disagree = {k: (verdicts[k], seen[k]) for k in verdicts if EXPECTED[verdicts[k]] != seen[k]}
    assert not disagree, f"explain vs packets: {disagree}"
    assert set(verdicts.values()) == {"allow", "deny", "reject"}
    attacker: Peer = lab.attacker
    # The case: an IPv4 source never matches an IPv6 connection.
    assert verdicts[(attacker.name, 4, 8080, "tcp")] == "allow"
    assert verdicts[(attacker.name, 6, 8080, "tcp")] == "deny"
    assert run_fwsync(lab, "plan", "--detailed-exitcode", rules=rules).returncode == 0
