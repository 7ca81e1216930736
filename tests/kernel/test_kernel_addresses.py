"""Addresses the rules language accepts, in a real kernel on both backends: the apply succeeds,
a re-plan finds nothing to change (the kernel lists every address as fwsync wrote it), and a
rule whose sources are a whole family (a `/0` in a define, a run of rules that collapses to
one) matches real packets. The unit property test (tests/unit/test_kernel_addresses.py) holds
the rendered objects to the same over many more policies."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings

from tests.address_policies import policies
from tests.lab import KernelLab, run_fwsync
from tests.steps import write_rules

pytestmark = pytest.mark.kernel

WHOLE_FAMILY = """\
define everyone 0.0.0.0/0, ::/0
allow from $everyone to any port 8081 proto tcp
allow from 0.0.0.0/1 to any port 8082 proto tcp
allow from 0.0.0.0/2 to any port 8082 proto tcp
allow from 128.0.0.0/1 to any port 8082 proto tcp
allow from ::/0 to any port 8083 proto tcp
allow from ::ffff:0.0.0.0/96 to any port 8084 proto tcp
allow from ::ffff:203.0.113.7 to any port 8084 proto tcp
"""
PORTS = (8081, 8082, 8083, 8084)


def _applied_in_sync(lab: KernelLab, rules: Path) -> None:
    applied = run_fwsync(lab, "apply", rules=rules)
    assert applied.returncode == 0, (rules / "10-test.rules").read_text() + applied.stderr + \
        applied.stdout
    again = run_fwsync(lab, "plan", "--detailed-exitcode", rules=rules)
    assert again.returncode == 0, (rules / "10-test.rules").read_text() + again.stdout


def test_whole_family_sources_apply_stay_in_sync_and_match_packets(
        kernel_lab: KernelLab, tmp_path: Path, backend: str) -> None:
    lab = kernel_lab
    for port in PORTS:
        lab.publish(port, 80)
    _applied_in_sync(lab, write_rules(tmp_path, "default deny incoming\n" + WHOLE_FAMILY))
    got = {(port, v6): lab.attacker.probe(port, v6=v6) for port in PORTS for v6 in (False, True)}
    assert got == {(8081, False): "open", (8081, True): "open",
                   (8082, False): "open", (8082, True): "filtered",
                   (8083, False): "filtered", (8083, True): "open",
                   # IPv4-mapped sources are IPv6 ones: no IPv4 packet carries them.
                   (8084, False): "filtered", (8084, True): "filtered"}


@settings(max_examples=6, derandomize=True, database=None, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=policies())
def test_generated_address_policies_apply_and_stay_in_sync(
        kernel_lab: KernelLab, tmp_path: Path, backend: str, text: str) -> None:
    _applied_in_sync(kernel_lab, write_rules(tmp_path, text))
