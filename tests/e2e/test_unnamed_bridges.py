"""A real dockerd creates a network with a bridge name of its own
(`-o com.docker.network.bridge.name=...`) after `fwsync apply`: its published ports are governed
at once, with no daemon and no second apply. Both backends, real packets."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.lab import DockerLab, run_fwsync
from tests.steps import fwsync_ok, write_rules

pytestmark = pytest.mark.e2e

RULES = """\
default deny incoming
define office 198.51.100.0/25, 2001:db8:1::/64
allow from $office to any port 8443 proto tcp
"""
BRIDGE = "fwsnet0"
BRIDGE_NAME_OPTION = "com.docker.network.bridge.name"



@contextlib.contextmanager
def named_network(lab: DockerLab, name: str) -> Iterator[str]:
    net = lab.client.networks.create(name, driver="bridge",
                                     options={BRIDGE_NAME_OPTION: BRIDGE})
    try:
        yield name
    finally:
        lab.remove_containers()
        net.remove()


def test_bridge_named_after_apply_is_governed_at_once(
        dlab: DockerLab, tmp_path: Path, backend: str) -> None:
    rules = write_rules(tmp_path, RULES)
    fwsync_ok(dlab, "apply", rules=rules)
    with named_network(dlab, "fwsnet") as net:
        ctr = dlab.run_web("named", {"80/tcp": 8443, "81/tcp": 9443}, network=net)
        assert dlab.trusted.probe(8443) == "open", "the office gets in"
        assert dlab.attacker.probe(8443) == "filtered", "the rule is for the office only"
        assert dlab.trusted.probe(9443) == "filtered", "no rule: the default denies"

        # Direct routing to the container's own address is kept out once Docker lists the
        # bridge: at the next apply, or at once by the daemon (the network's create event).
        addr = ctr.attrs["NetworkSettings"]["Networks"][net]["IPAddress"]
        plan = run_fwsync(dlab, "plan", "--detailed-exitcode", rules=rules)
        assert plan.returncode == 2 and BRIDGE in plan.stdout, plan.stdout
        fwsync_ok(dlab, "apply", rules=rules)
        assert dlab.attacker.probe(80, addr=addr) == "filtered", "direct routing"
        assert dlab.trusted.probe(8443) == "open"
        assert dlab.attacker.probe(8443) == "filtered"
    fwsync_ok(dlab, "remove")
