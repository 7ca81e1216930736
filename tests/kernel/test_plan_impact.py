"""`plan` names the real clients its change would refuse: connections the kernel tracks now
(conntrack), asked of the rules the kernel holds and of the new ones. Real connections from
the lab's peers to a published port, both backends (issue 21, item 2)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.lab import (
    ATTACKER_V4,
    CTR_NET_V4,
    CTR_NET_V6,
    CTR_V4,
    CTR_V6,
    HOST_ATTACKER_V4,
    TRUSTED_V4,
    KernelLab,
    run_fwsync,
)
from tests.steps import fwsync_ok, write_rules

pytestmark = pytest.mark.kernel


def remember_web(lab: KernelLab, host_ports: tuple[int, ...] = (80,)) -> None:
    """What Docker last reported (the lab has no dockerd): `web` publishing its port 80 on
    docker0 as `host_ports` (the lab's publish() adds the kernel's side)."""
    port = {"proto": "tcp", "container": "web", "container_port": 80,
            "container_id": "0123456789ab", "image": "web", "networks": ["bridge"],
            "container_ipv6": True, "service": "", "mode": "", "routed": "",
            "container_addrs": [CTR_V4, CTR_V6]}
    data = {"format_version": 1, "seen_at": time.time() - 60,
            "ports": [{**port, "host_port": hp, "host_ip": ip} for hp in host_ports
                      for ip in ("0.0.0.0", "::")],
            "extra_bridges": [], "containers": ["web"], "firewall_backend": None,
            "version": "20.10.24", "services": [], "swarm": None,
            "networks": [{"name": "bridge", "bridge": "docker0", "gateway_modes": [],
                          "subnets": [CTR_NET_V4, CTR_NET_V6], "trusted_host_interfaces": []}]}
    (lab.dir / "docker.json").write_text(json.dumps(data))


def test_plan_names_a_client_that_connected_a_moment_ago_and_the_new_rules_refuse(
        kernel_lab: KernelLab, tmp_path: Path, backend: str) -> None:
    lab = kernel_lab
    lab.publish(80, 80)
    remember_web(lab)
    rules = write_rules(tmp_path, "default deny\nallow 80/tcp\n")
    fwsync_ok(lab, "apply", rules=rules)
    assert lab.attacker.probe(80) == "open" and lab.trusted.probe(80) == "open"
    rules.joinpath("10-test.rules").write_text(
        f"default deny\nallow from {TRUSTED_V4} to any port 80 proto tcp\n")
    res = run_fwsync(lab, "plan", "--format", "json", rules=rules)
    assert res.returncode == 0, res.stderr
    impact = json.loads(res.stdout)["impact"]
    assert impact["clients"] >= 2, impact
    assert [(c["change"], c["source"], c["dest"], c["host_port"], c["container"], c["before"],
             c["after"]) for c in impact["changes"]] == [
        ("refuses", ATTACKER_V4, HOST_ATTACKER_V4, 80, "web", "allow", "deny")], impact
    assert impact["changes"][0]["origin"].endswith("10-test.rules:1")  # the default
    text = run_fwsync(lab, "plan", rules=rules).stdout
    assert f"- refuses {ATTACKER_V4} → {HOST_ATTACKER_V4}:80/tcp (web, 0.0.0.0:80/tcp)" in text
    # Applied: the attacker is refused. Its connection from before is still tracked (closed,
    # for about two minutes), so the plan back names it as admitted again; the trusted client
    # is admitted by both and not named.
    fwsync_ok(lab, "apply", rules=rules)
    assert lab.attacker.probe(80) == "filtered" and lab.trusted.probe(80) == "open"
    rules.joinpath("10-test.rules").write_text("default deny\nallow 80/tcp\n")
    back = json.loads(run_fwsync(lab, "plan", "--format", "json", rules=rules).stdout)["impact"]
    assert [(c["change"], c["source"], c["before"], c["after"]) for c in back["changes"]] == [
        ("admits", ATTACKER_V4, "deny", "allow")], back
