"""`limit` at its edges, with real packets on both backends: a per-source table that is full
refuses a new source (fail closed, as the core's RateLimit says), and IPv6 sources are bucketed
per /64 (one IPv6 host owns 2^64 addresses: per address, it would have a fresh bucket for every
connection)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from fwsync.core.ruleset import LIMIT
from tests.lab import ATTACKER_V6, KernelLab, _run, add_addr, run_fwsync
from tests.steps import write_rules

pytestmark = pytest.mark.kernel

# fwsync's CLI, with every built ruleset's RateLimit given a small capacity: a handful of
# sources then fill the table. Only the capacity changes; the rendering and the apply are the
# production path's.
_APPLY_WITH_CAPACITY = r"""
import dataclasses, runpy, sys
import fwsync.reconcile as reconcile
capacity = int(sys.argv.pop(1))
built = reconcile.build_ruleset
def small(*args, **kwargs):
    result = built(*args, **kwargs)
    limit = dataclasses.replace(result.ruleset.limit, capacity=capacity)
    return dataclasses.replace(result, ruleset=dataclasses.replace(result.ruleset, limit=limit))
reconcile.build_ruleset = small
sys.argv = ["fwsync", *sys.argv[1:]]
runpy.run_module("fwsync", run_name="__main__")
"""

# One new connection from each (source address, count) in turn; prints the states seen.
_CONNECT_FROM = r"""
import json, socket, sys
addr, port, plan = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])
out = []
for source, count in plan:
    for _ in range(count):
        s = socket.socket(socket.AF_INET6 if ":" in addr else socket.AF_INET)
        s.settimeout(1.5)
        s.bind((source, 0))
        try:
            s.connect((addr, port))
            out.append("open")
        except ConnectionRefusedError:
            out.append("closed")
        except OSError:
            out.append("filtered")
        finally:
            s.close()
print(json.dumps(out))
"""


def apply_with_capacity(lab: KernelLab, rules: Path, capacity: int) -> None:
    # Into a fresh lab only: hashlimit finds its table by name, and one made with another
    # capacity would be kept.
    # run_fwsync's environment (the lab's Docker socket, lock and state files), for python -c.
    full = dict(os.environ)
    full.update({"FWSYNC_RULES": str(rules), "DOCKER_HOST": lab.docker_host,
                 "FWSYNC_LOCK_FILE": str(lab.dir / "fwsync.lock"),
                 "FWSYNC_DAEMON_STATE": str(lab.dir / "daemon.json"),
                 "FWSYNC_DOCKER_STATE": str(lab.dir / "docker.json")})
    res = _run([*lab.host.nsenter_prefix(), sys.executable, "-c", _APPLY_WITH_CAPACITY,
                str(capacity), "apply"], check=False, env=full)
    assert res.returncode == 0, res.stderr + res.stdout


def connect_from(lab: KernelLab, port: int, plan: list[tuple[str, int]], v6: bool = False
                 ) -> list[str]:
    res = lab.attacker.ns.run([sys.executable, "-I", "-c", _CONNECT_FROM,
                               lab.attacker.host_addr(v6), str(port), json.dumps(plan)])
    return list(json.loads(res.stdout))


def test_a_full_limit_table_refuses_a_new_source(
        kernel_lab: KernelLab, tmp_path: Path, backend: str) -> None:
    lab = kernel_lab
    lab.publish(2222, 80)
    sources = [f"203.0.113.{n}" for n in range(20, 25)]
    for source in sources:
        add_addr(lab.attacker.ns, "eth0", f"{source}/25")
    apply_with_capacity(lab, write_rules(tmp_path, "limit 2222/tcp\n"), capacity=3)
    got = connect_from(lab, 2222, [(s, 1) for s in sources])
    # Three sources fill the table; the fourth and fifth find it full and are dropped (a
    # silent drop on both: hashlimit's hotdrop, nftables' explicit drop after the meter).
    assert got == ["open"] * 3 + ["filtered"] * 2, got
    # A source already in the table keeps its own bucket: 5 of burst, one used.
    assert connect_from(lab, 2222, [(sources[0], 5)]) == ["open"] * 4 + ["closed"]


def test_ipv6_sources_in_one_64_share_one_bucket(
        kernel_lab: KernelLab, tmp_path: Path, backend: str) -> None:
    lab = kernel_lab
    lab.publish(2222, 80)
    other = ATTACKER_V6.rsplit(":", 1)[0] + ":99"  # the attacker's /64, another address
    add_addr(lab.attacker.ns, "eth0", f"{other}/64")
    rules = write_rules(tmp_path, "limit 2222/tcp\n")
    res = run_fwsync(lab, "apply", rules=rules)
    assert res.returncode == 0, res.stderr + res.stdout
    half = LIMIT.burst // 2 + 1
    got = connect_from(lab, 2222, [(ATTACKER_V6, half), (other, LIMIT.burst)], v6=True)
    # One bucket of `burst` for the /64: the second address gets what the first left.
    assert got == ["open"] * LIMIT.burst + ["closed"] * half, got
    assert run_fwsync(lab, "plan", "--detailed-exitcode", rules=rules).returncode == 0
