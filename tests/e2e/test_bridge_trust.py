"""`docker network create -o com.docker.network.bridge.name=<the host's uplink>`: Docker adopts
the uplink bridge (`br-lan`, the attacker behind it). Before, fwsync trusted the bridge by its
name (the `br-+` wildcard, and any name Docker reports) and wrote `iifname "br-lan" return`:
every published port was open to the attacker. Now a bridge is trusted only when the host shows
it as one Docker made for its network (core/bridges.py); this one carries the host's address
and routes, so it is not, and status and doctor say so first. A real container's connection to
a published port on its own bridge (Docker hairpins it through docker-proxy, the INPUT path)
still works: docker0 passes the check. Real dockerd (20.10, 26.1, 28.5), both backends.
"""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path

import pytest

from tests.lab import HOST_ATTACKER_V6, HOST_TRUSTED_V4, DockerLab, run_fwsync
from tests.lab_networks import UPLINK, make_uplink_bridge
from tests.steps import fwsync_ok, write_rules

pytestmark = [pytest.mark.e2e]

BRIDGE_NAME = "com.docker.network.bridge.name"
RULES = """\
default deny incoming
define office 198.51.100.0/25, 2001:db8:1::/64
allow from $office to any port 5432 proto tcp
"""


def test_a_network_that_adopts_the_uplink_is_not_trusted(
        make_docker_lab, tmp_path: Path, backend: str) -> None:
    lab: DockerLab = make_docker_lab(ipv6=True)
    make_uplink_bridge(lab)
    lan = lab.client.networks.create("lan", driver="bridge", options={BRIDGE_NAME: UPLINK})
    lan.reload()
    ipam = lan.attrs["IPAM"]["Config"][0]
    subnet = ipaddress.ip_network(ipam["Subnet"])
    # Docker replaces the uplink's IPv4 address with the network's gateway (20.10 drops its
    # IPv6 address too; 26.1 and 28.5 keep it). The attacker, still on the uplink, takes an
    # address in the network's subnet and routes through the gateway.
    lab.attacker.ns.ip("addr", "add", f"{subnet[-2]}/{subnet.prefixlen}", "dev", "eth0")
    lab.attacker.ns.ip("route", "replace", "default", "via", ipam["Gateway"])
    uplink_v6 = HOST_ATTACKER_V6 in lab.host.ip("-6", "addr", "show", UPLINK)
    lab.run_web("db", {"80/tcp": 5432})
    client = lab.run_web("client")  # another container on the default bridge
    rules = write_rules(tmp_path, RULES)

    applied = fwsync_ok(lab, "apply", rules=rules)

    got = {"attacker to the gateway": lab.attacker.probe(5432, addr=ipam["Gateway"]),
           "attacker to the office's address": lab.attacker.probe(5432, addr=HOST_TRUSTED_V4),
           "attacker over IPv6": lab.attacker.probe(5432, v6=True),
           "office v4": lab.trusted.probe(5432), "office v6": lab.trusted.probe(5432, v6=True)}
    assert got == {"attacker to the gateway": "filtered",
                   "attacker to the office's address": "filtered",
                   "attacker over IPv6": "filtered", "office v4": "open", "office v6": "open"}, (
        f"uplink keeps its IPv6 address: {uplink_v6}")
    # A container to a published port through the host's address: its own network's traffic.
    # (busybox nc: exit 0 once connected and the server closed; busybox wget segfaults here.)
    fetch = client.exec_run(["sh", "-c", f"nc -w 3 {HOST_TRUSTED_V4} 5432 </dev/null"])
    assert fetch.exit_code == 0, fetch.output
    assert f"its bridge '{UPLINK}' is not trusted" in applied.stdout + applied.stderr

    status = fwsync_ok(lab, "status", rules=rules).stdout.splitlines()
    head = [line for line in status[:4] if line.startswith("Not governed:")]
    assert any(f"'{UPLINK}' is not trusted" in line for line in head), status[:6]
    doctor = run_fwsync(lab, "doctor", "--format", "json", "--sample", "0", rules=rules)
    report = json.loads(doctor.stdout)
    [finding] = [f for f in report["findings"] if f["check"] == "untrusted-bridge"]
    assert finding["details"]["bridge"] == UPLINK and finding["details"]["network"] == "lan"
    assert report["findings"][0]["severity"] == "serious"
