"""Traffic fwsync does not judge (a Docker network's own: container egress, container to
container, a container to a published port) is recognised by what an outsider cannot choose,
never by an interface's name: it comes from a Docker network's subnet, on that network's
bridge, and the bridge passed a check of what the host shows (it carries no address and no
route outside the network's subnets, and every port of it is a veth).

The host's uplink here is a bridge called `br-lan` (as on many routers and VM hosts), with the
attacker behind it. Before: fwsync's `br-+` wildcard (and `docker network create -o
com.docker.network.bridge.name=br-lan`, which makes Docker adopt the uplink) exempted
everything arriving on it, and the attacker reached every published port over IPv4 and IPv6.
Real packets, both backends, both iptables variants, Docker 20.10's and 28's chain layouts.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.lab import (
    CTR_NET_V4,
    CTR_NET_V6,
    HOST_ATTACKER_V4,
    HOST_TRUSTED_V4,
    HOST_TRUSTED_V6,
    KernelLab,
    probe,
    run_fwsync,
    serve_tcp,
)
from tests.lab_networks import UPLINK, make_uplink_bridge
from tests.steps import OFFICE_ONLY, fwsync_ok, office_and_attacker, write_rules

pytestmark = pytest.mark.kernel

RULES = """\
default deny incoming
define office 198.51.100.0/25, 2001:db8:1::/64
allow from $office to any port 8443 proto tcp
"""


def remember_docker(lab: KernelLab, *, adopted: bool) -> None:
    """What Docker last reported (fwsync's memory, read when Docker cannot be asked, as here):
    a container `web` publishing 8443 on the default network (docker0, the lab's container),
    and with `adopted`, a network `lan` created with `-o com.docker.network.bridge.name=br-lan`
    (Docker adopted the uplink and gave it a subnet of its own pool)."""
    networks = [{"name": "bridge", "bridge": "docker0", "gateway_modes": [],
                 "subnets": [CTR_NET_V4, CTR_NET_V6], "trusted_host_interfaces": []}]
    extra = []
    if adopted:
        networks.append({"name": "lan", "bridge": UPLINK, "gateway_modes": [],
                         "subnets": ["203.0.113.128/28"], "trusted_host_interfaces": []})
        extra.append({"name": UPLINK, "network": "lan", "subnets": ["203.0.113.128/28"]})
    port = {"host_port": 8443, "proto": "tcp", "container": "web", "container_port": 80,
            "container_id": "0123456789ab", "image": "web", "networks": ["bridge"],
            "container_ipv6": True, "service": "", "mode": "", "routed": ""}
    data = {"format_version": 1, "seen_at": time.time() - 60,
            "ports": [{**port, "host_ip": "0.0.0.0"}, {**port, "host_ip": "::"}],
            "extra_bridges": extra, "containers": ["web"], "firewall_backend": None,
            "version": "20.10.24", "services": [], "swarm": None, "networks": networks}
    (lab.dir / "docker.json").write_text(json.dumps(data))


def _attacker_and_office(lab: KernelLab) -> dict[str, str]:
    return office_and_attacker(lab, 8443)


EXPECTED = OFFICE_ONLY


def test_an_uplink_named_br_lan_is_not_exempt(kernel_lab: KernelLab, tmp_path: Path,
                                              backend: str) -> None:
    """No Docker network is known (Docker cannot be asked, nothing remembered): nothing is
    exempt by its name alone."""
    lab = kernel_lab
    lab.publish(8443, 80)
    make_uplink_bridge(lab)
    fwsync_ok(lab, "apply", rules=write_rules(tmp_path, RULES))
    assert _attacker_and_office(lab) == EXPECTED


def test_a_docker_network_that_adopted_the_uplink_is_reported_not_trusted(
        kernel_lab: KernelLab, tmp_path: Path, backend: str) -> None:
    """Docker reports a network whose bridge is the uplink: the bridge fails the host check
    (it carries 203.0.113.1/25 and routes to 203.0.113.0/25, outside the network's subnet), so
    its traffic is judged like outside traffic, and plan, apply and status say why. A real
    network (docker0, the container's subnet) keeps its exemption: the container reaches a
    port published on the host's address that no rule allows it."""
    lab = kernel_lab
    lab.publish(8443, 80)
    make_uplink_bridge(lab)
    remember_docker(lab, adopted=True)
    rules = write_rules(tmp_path, RULES)
    applied = fwsync_ok(lab, "apply", rules=rules)
    assert _attacker_and_office(lab) == EXPECTED
    said = applied.stdout + applied.stderr
    assert UPLINK in said and "not trusted" in said, said
    status = run_fwsync(lab, "status", rules=rules)
    assert UPLINK in status.stdout and "not trusted" in status.stdout, status.stdout
    # The container (198.51.100.130 on docker0) to the host's published port, which a
    # docker-proxy-like listener serves on the host (Docker 20.10 hairpins a container's
    # connection to its own bridge's published port through docker-proxy, the INPUT path).
    with serve_tcp(lab.host, [8443]):
        for addr in (HOST_TRUSTED_V4, HOST_TRUSTED_V6):
            assert probe(lab.ctr, addr, 8443) == "open", f"container to [{addr}]:8443"
        # The attacker's own address is on the uplink, not in a Docker subnet.
        assert probe(lab.attacker, HOST_ATTACKER_V4, 8443) == "filtered"
