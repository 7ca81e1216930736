"""Direct routing (the attacker routes a container subnet via the host and connects to the
container's own address, no DNAT) into networks fwsync did not know at `apply`, with no daemon
and no second apply. Real dockerd, both backends, per engine:

- 20.10 and 26.1 never drop direct routing themselves: their FORWARD accepts it for every
  published container port. 28.5 drops it in its raw table, except on `nat-unprotected`
  networks (every port open), which these tests use there.
- A network created after `apply` under a bridge name of its own: the nftables backend judges
  it (`meta oifkind "bridge"`); the iptables backend cannot match an interface's kind and
  leaves it open until the next apply (status says so first).
- `protect direct-routing off to network lan`, then lan removed and `lan2` created on the same
  subnet: the exception was lan's (its subnet out of its bridge), and lan2 is protected.

Before (main at 5117a09), see each test.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.engines import Engine
from tests.lab import DockerLab, probe
from tests.steps import fwsync_ok, write_rules

pytestmark = [pytest.mark.e2e]

BRIDGE_NAME = "com.docker.network.bridge.name"
GATEWAY_MODE = "com.docker.network.bridge.gateway_mode_ipv4"
SUBNET = "203.0.113.208/28"  # in DockerLab's pool; the attacker routes it via the host
RULES = """\
default deny incoming
define office 198.51.100.0/25, 2001:db8:1::/64
allow from $office to any port 5432 proto tcp
"""


def modern(engine: Engine) -> bool:
    return int(engine.name.split(".")[0]) >= 28


def options(engine: Engine, **extra: str) -> dict[str, str]:
    """Docker 28 drops direct routing on a plain `nat` network itself: `nat-unprotected`."""
    return {**extra, **({GATEWAY_MODE: "nat-unprotected"} if modern(engine) else {})}


def container_address(lab: DockerLab, name: str, network: str) -> str:
    ctr = lab.client.containers.get(name)
    return str(ctr.attrs["NetworkSettings"]["Networks"][network]["IPAddress"])


def test_a_network_with_a_bridge_name_of_its_own_made_after_apply(
        make_docker_lab: Any, tmp_path: Path, backend: str, engine: Engine) -> None:
    """Before: the attacker connected to the container's own address on every engine and
    backend."""
    lab: DockerLab = make_docker_lab()
    rules = write_rules(tmp_path, RULES)
    fwsync_ok(lab, "apply", rules=rules)
    lab.client.networks.create("late", driver="bridge",
                               options=options(engine, **{BRIDGE_NAME: "late0"}))
    lab.run_web("web", {"80/tcp": 8080}, network="late")
    addr = container_address(lab, "web", "late")
    got = probe(lab.attacker, addr, 80)
    if backend == "iptables":
        assert got == "open", "iptables has no interface kind: open until the next apply"
        status = fwsync_ok(lab, "status", rules=rules).stdout.splitlines()
        assert any(line.startswith("Not governed: Direct routing into a Docker network created")
                   for line in status[:4]), status[:6]
        fwsync_ok(lab, "apply", rules=rules)
        assert probe(lab.attacker, addr, 80) == "filtered", "the next apply knows its bridge"
    else:
        assert got == "filtered"


def test_an_exception_is_not_inherited_by_a_network_that_reuses_the_subnet(
        make_docker_lab: Any, tmp_path: Path, backend: str, engine: Engine) -> None:
    """Before: lan2 inherited lan's exception: the attacker (whom the rules allow to port 80)
    connected to lan2's container too."""
    lab: DockerLab = make_docker_lab()
    ipam = {"Driver": "default", "Config": [{"Subnet": SUBNET}]}
    lab.client.networks.create("lan", driver="bridge", ipam=ipam, options=options(engine))
    lab.run_web("web", {"80/tcp": 8080}, network="lan")
    addr = container_address(lab, "web", "lan")
    rules = write_rules(tmp_path, RULES + "allow from 203.0.113.0/25 to any port 80 proto tcp\n"
                        "protect direct-routing off to network lan\n")
    fwsync_ok(lab, "apply", rules=rules)
    assert probe(lab.attacker, addr, 80) == "open", "the rules let it in, on lan"
    lab.client.containers.get("web").remove(force=True)
    lab.client.networks.get("lan").remove()
    lab.client.networks.create("lan2", driver="bridge", ipam=ipam, options=options(engine))
    lab.run_web("web2", {"80/tcp": 8081}, network="lan2")
    assert container_address(lab, "web2", "lan2") == addr
    assert probe(lab.attacker, addr, 80) == "filtered", "lan2 is not lan"
