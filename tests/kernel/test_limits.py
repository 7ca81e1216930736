"""How big a rule set fwsync takes (fwsync/rules/limits.py): beyond the limits it refuses with an
error at the file, line and column that crosses them, before any kernel call, in little time
and memory; at the limits it works. Before: a million-address list took 374 s and 2.6 GB to
apply (nftables), `remove` listed every set element first, and a rules path that was a named
pipe hung forever. Peak memory is measured (it does not depend on the machine's speed); no
time is asserted, but every command runs under run_fwsync's timeout."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from fwsync.rules.limits import MAX_KERNEL_RULES, MAX_RULES, MAX_SET_ENTRIES
from tests.lab import _ENV, KernelLab, ruleset_snapshot, run_fwsync
from tests.steps import fwsync_ok, write_rules

pytestmark = pytest.mark.kernel

# Peak memory of a refused command: the interpreter and fwsync's imports (~30 MB here), plus at
# most one capped file. Applying a million addresses took 2.6 GB.
REFUSED_MB = 120
_PEAK = ("import resource, subprocess, sys\n"
         "r = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
         "sys.stdout.write(r.stdout); sys.stderr.write(r.stderr)\n"
         "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024, "
         "file=sys.stderr)\n"
         "sys.exit(r.returncode)\n")


def v6(i: int, prefix: str = "2001:db8") -> str:
    return f"{prefix}:{i >> 16:x}:{i & 0xffff:x}::/64"


def measured(lab: KernelLab, *args: str, backend: str) -> tuple[int, str, int]:
    """(exit status, stderr, peak RSS in MB) of `fwsync ARGS` in HOST."""
    env = {**_ENV, "DOCKER_HOST": lab.docker_host, "FWSYNC_BACKEND": backend,
           "FWSYNC_LOCK_FILE": str(lab.dir / "fwsync.lock"),
           "FWSYNC_DOCKER_STATE": str(lab.dir / "docker.json")}
    proc = subprocess.Popen([*lab.host.nsenter_prefix(), sys.executable, "-c", _PEAK,
                             sys.executable, "-m", "fwsync", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)
    try:
        _out, stderr = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # fwsync too, or it would keep holding the lock
        proc.communicate()
        raise
    *err, peak = stderr.strip().splitlines()
    return proc.returncode, "\n".join(err), int(peak)


def oversized(tmp: Path) -> dict[str, tuple[str, str]]:
    """Rule sets beyond a limit → (rules path, the error they must get)."""
    cases: dict[str, tuple[str, str]] = {}

    def rules(name: str, text: str, **lists: str) -> Path:
        d = tmp / name
        d.mkdir(parents=True)
        (d / "10-r.rules").write_text(text)
        for list_name, body in lists.items():
            (d / list_name).write_text(body)
        return d

    million = "".join(f"{v6(i)}\n" for i in range(1_000_000))  # 24 MB
    d = rules("million", "define big file big.list\ndeny from $big\n", **{"big.list": million})
    cases["a million-address list"] = (
        str(d), f"{d}/10-r.rules:1:17: error: cannot read 'big.list': larger than 8,388,608 "
                "bytes, fwsync's limit for an address list")
    one_more = "".join(f"{v6(i)}\n" for i in range(MAX_SET_ENTRIES + 1))
    d = rules("entries", "define big file big.list\ndeny from $big\n", **{"big.list": one_more})
    cases["one entry too many"] = (
        str(d), f"{d}/big.list:100001:1: error: entry 100,001 of this list is one too many: "
                "fwsync's limit is 100,000 entries in one set")
    half = MAX_SET_ENTRIES * 4 // 5
    d = rules("total", "define a file a.list\ndefine b file b.list\ndeny from $a\n",
              **{"a.list": "".join(f"{v6(i)}\n" for i in range(half)),
                 "b.list": "".join(f"{v6(i, '2001:db9')}\n" for i in range(half))})
    cases["too many entries in all sets"] = (
        str(d), f"{d}/b.list:70001:1: error: entry 70,001 of this list is one too many: "
                "fwsync's limit is 150,000 entries in all sets together")
    d = rules("rules", "".join(f"deny from {v6(i)}\n" for i in range(MAX_RULES + 1)))
    cases["one rule too many"] = (
        str(d), f"{d}/10-r.rules:10001:1: error: more than 10,000 rules: fwsync's limit")
    ports = ",".join(str(p) for p in range(1, MAX_KERNEL_RULES // 4 + 2))
    d = rules("expansion", f"allow {ports}\n")
    cases["a rule that expands too far"] = (
        str(d), f"{d}/10-r.rules:1:1: error: with this rule the rules expand to more than "
                "20,000 kernel rules")
    fifo = tmp / "fifo.rules"  # the directories above made tmp
    os.mkfifo(fifo)
    cases["a rules path that is a named pipe"] = (
        str(fifo), f"{fifo}:1:1: error: cannot read 'fifo.rules': not a regular file (a named "
                   "pipe)")
    d = rules("fifo-list", "define x file x.list\ndeny from $x\n")
    os.mkfifo(d / "x.list")
    cases["an address list that is a named pipe"] = (
        str(d), f"{d}/10-r.rules:1:15: error: cannot read 'x.list': not a regular file")
    d = rules("zero", "define x file /dev/zero\ndeny from $x\n")
    cases["/dev/zero as an address list"] = (
        str(d), f"{d}/10-r.rules:1:15: error: cannot read '/dev/zero': not a regular file (a "
                "character device)")
    return cases


@pytest.mark.parametrize("backend", ["iptables", "nftables"])
def test_beyond_the_limits_apply_refuses_at_once_and_changes_nothing(
        make_kernel_lab, tmp_path: Path, backend: str) -> None:
    lab: KernelLab = make_kernel_lab("nft")
    lab.publish(5432, 80)
    fwsync_ok(lab, "apply", rules=write_rules(tmp_path, "deny from 203.0.113.0/25\n"),
              env={"FWSYNC_BACKEND": backend})
    before = ruleset_snapshot(lab)
    failures = {}
    for name, (rules, error) in oversized(tmp_path / "cases").items():
        try:
            status, stderr, peak = measured(lab, "apply", "--rules", rules, backend=backend)
        except subprocess.TimeoutExpired:
            failures[name] = "still running after 120 s"
            continue
        print(f"{name}: exit {status}, peak {peak} MB")
        if status != 1 or error not in stderr or peak > REFUSED_MB:
            failures[name] = f"exit {status}, peak {peak} MB: {stderr[-300:]}"
    assert failures == {}, "\n".join(f"{k}: {v}" for k, v in failures.items())
    assert ruleset_snapshot(lab) == before
    assert lab.attacker.probe(5432) == "filtered"


@pytest.mark.parametrize("backend", ["iptables", "nftables"])
def test_a_set_at_the_limit_applies_in_proportion(
        make_kernel_lab, tmp_path: Path, backend: str) -> None:
    """100,000 entries: applied, planned clean, enforced; memory in proportion (nftables
    peaked at ~290 MB here, iptables ~80 MB; a million took 2.6 GB)."""
    lab: KernelLab = make_kernel_lab("nft")
    lab.publish(5432, 80)
    entries = [v6(i) for i in range(MAX_SET_ENTRIES - 1)] + ["203.0.113.0/25"]
    rules = write_rules(tmp_path, "default allow\ndefine big file big.list\ndeny from $big\n")
    (rules / "big.list").write_text("".join(f"{e}\n" for e in entries))
    status, stderr, peak = measured(lab, "apply", "--rules", str(rules), backend=backend)
    assert status == 0, stderr
    assert peak < 600, f"{peak} MB"
    assert lab.attacker.probe(5432) == "filtered"
    assert lab.trusted.probe(5432) == "open"
    plan = run_fwsync(lab, "plan", "--detailed-exitcode", rules=rules,
                      env={"FWSYNC_BACKEND": backend})
    assert plan.returncode == 0, plan.stdout[-500:]


def test_remove_of_a_big_table_lists_no_element(make_kernel_lab) -> None:
    """A 200k-element set in fwsync's table (made by hand: fwsync refuses to make one): remove
    took ~26 s and ~490 MB listing it first; now it lists chains only."""
    lab: KernelLab = make_kernel_lab("nft")
    elements = ",".join(v6(i) for i in range(200_000))
    lab.host.run(["nft", "-f", "-"], input=(
        "add table inet fwsync\n"
        "add chain inet fwsync forward { type filter hook forward priority -1; }\n"
        "add set inet fwsync big { type ipv6_addr; flags interval; }\n"
        f"add element inet fwsync big {{ {elements} }}\n"), timeout=120)
    status, stderr, peak = measured(lab, "remove", backend="nftables")
    assert status == 0, stderr
    assert peak < 80, f"{peak} MB"
    assert "fwsync" not in lab.host.run(["nft", "list", "tables"]).stdout
