"""A container publishing a large port range (`docker run -p 10000-40000:10000-40000`, 30k
bindings a family) in a real kernel, both backends, both iptables variants: the policy applies
in a few seconds as a handful of kernel rules, and real packets to ports in the range show the
allowed source gets in and another does not. Bindings that form no range (every other port)
degrade closed: the allow is dropped, the default decides, a note says why, and a rule change
still applies.

The lab has no dockerd: a handful of the range's ports are published with Docker's rules
written by hand (KernelLab.publish), and what fwsync observes of Docker is given as a
DockerState with every binding (as tests/kernel/test_nodnat.py does)."""

from __future__ import annotations

import pickle
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from fwsync.core.observed import DockerNetwork, DockerState, PublishedPort
from tests.lab import CTR_NET_V4, CTR_NET_V6, KernelLab
from tests.steps import write_rules

pytestmark = pytest.mark.kernel

# Runs inside HOST (without -I, which would drop PYTHONPATH and import the installed fwsync):
# apply with the DockerState pickled in a file (30k bindings do not fit in an
# argument); prints the plan's notes, one a line.
_APPLY = r"""
import pickle, sys
from pathlib import Path
from fwsync.reconcile import apply_planned, make_plan
rules, backend, state = sys.argv[1], sys.argv[2], pickle.loads(Path(sys.argv[3]).read_bytes())
planned = make_plan(Path(rules), backend, docker=state)
apply_planned(planned)
print("\n".join(planned.plan.notes))
"""

RULES = """\
default deny incoming
allow from 198.51.100.0/25 to container media
"""
NETWORKS = (DockerNetwork("bridge", "docker0", subnets=(CTR_NET_V4, CTR_NET_V6)),)
PROBED = (10000, 25001)  # published for real below: the range's first port and one inside


def media(host_ports: range) -> DockerState:
    return DockerState(ports=tuple(
        PublishedPort(ip, p, "tcp", "media", 80, networks=("bridge",), container_ipv6=True)
        for ip in ("0.0.0.0", "::") for p in host_ports), networks=NETWORKS,
        containers=("media",))


def apply_seeing(lab: KernelLab, rules: Path, backend: str, docker: DockerState
                 ) -> tuple[float, str]:
    blob = lab.dir / "docker-state.pickle"
    blob.write_bytes(pickle.dumps(docker))
    t0 = time.monotonic()
    res = lab.host.run([sys.executable, "-c", _APPLY, str(rules), backend, str(blob)],
                       check=False, env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
                                         "PYTHONPATH": str(Path(__file__).parents[2])})
    took = time.monotonic() - t0
    assert res.returncode == 0, res.stderr[-3000:] + res.stdout[-2000:]
    return took, res.stdout


def kernel_rule_lines(lab: KernelLab, backend: str) -> int:
    if backend == "nftables":
        listing = lab.host.run(["nft", "list", "table", "inet", "fwsync"]).stdout
        return sum(1 for line in listing.splitlines()
                   if line.strip() and not line.strip().startswith(("table", "chain", "type",
                                                                    "}", "set", "elements",
                                                                    "flags", "policy")))
    return sum(line.startswith("-A FWSYNC-") for v6 in (False, True)
               for line in lab.save(v6=v6).splitlines())


def test_a_published_range_applies_as_a_few_rules_and_packets_agree(
        kernel_lab: KernelLab, tmp_path: Path, backend: str) -> None:
    lab = kernel_lab
    for port in PROBED:
        lab.publish(port, 80)
    rules = write_rules(tmp_path, RULES)
    took, notes = apply_seeing(lab, rules, backend, media(range(10000, 40001)))
    print(f"apply with 60,002 bindings ({backend}, {lab.variant}): {took:.2f} s")
    assert took < 10, f"apply took {took:.1f} s"
    assert "Docker publishes" not in notes, "a range needs no degrading: " + notes
    assert kernel_rule_lines(lab, backend) < 60
    for port in PROBED:
        assert lab.trusted.probe(port) == "open", port
        assert lab.attacker.probe(port) == "filtered", port


def test_bindings_that_form_no_range_degrade_closed_and_a_rule_change_still_applies(
        make_kernel_lab: Callable[..., KernelLab], tmp_path: Path, backend: str) -> None:
    lab = make_kernel_lab("nft")
    for port in PROBED:
        lab.publish(port, 80)
    rules = write_rules(tmp_path, RULES)
    scattered = media(range(10000, 60000, 2))  # 25,000 a family; 25001 is not one of them
    scattered = DockerState(ports=(*scattered.ports, *media(range(25001, 25002)).ports),
                            networks=NETWORKS, containers=("media",))
    took, notes = apply_seeing(lab, rules, backend, scattered)
    print(f"apply with 50,002 scattered bindings ({backend}): {took:.2f} s")
    assert "this allow is dropped" in notes and "'media'" in notes, notes
    for port in PROBED:
        assert lab.trusted.probe(port) == "filtered", "dropped: the default (deny) decides"
        assert lab.attacker.probe(port) == "filtered"
    # The urgent change: the office gets in by port, and it applies despite Docker's bindings.
    write_rules(tmp_path, RULES + "allow from 198.51.100.0/25 to any port 10000 proto tcp\n")
    apply_seeing(lab, rules, backend, scattered)
    assert lab.trusted.probe(10000) == "open"
    assert lab.attacker.probe(10000) == "filtered"
