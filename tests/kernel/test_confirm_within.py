"""`apply --confirm-within` (issue 21, item 3): an unconfirmed apply is put back after its
window although the shell that ran it was killed, and a confirmed one stays. Real connections
from the lab's peers, both backends, all three lab layouts. The timer here is the detached
process: systemd is not PID 1 on the test machine, and a lab's network namespace is not PID 1's
anyway (the systemd timer's command line: tests/unit/test_rollout.py).

Each run prints the revert's timing (deadline → revert started → kernel written, and the first
probe that got in again): pytest -s shows it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.daemon_helpers import DaemonProc
from tests.kernel.test_plan_impact import remember_web
from tests.lab import TRUSTED_V4, KernelLab, run_fwsync
from tests.steps import fwsync_ok, write_rules

pytestmark = pytest.mark.kernel
# Long enough for the checks made inside it (two status runs, an apply refused, probes: ~3 s
# with iptables-legacy under -n 3), short enough to keep the test quick.
WINDOW = 5
OPEN_RULES = "default deny\nallow 80/tcp\n"
NARROW_RULES = f"default deny\nallow from {TRUSTED_V4} to any port 80 proto tcp\n"


def apply_from_a_shell_then_kill_it(lab: KernelLab, rules: Path, backend: str,
                                    tmp_path: Path) -> dict[str, Any]:
    """`fwsync apply --confirm-within` run by a shell in a session of its own (as an SSH login
    is), which is SIGKILLed with its whole process group as soon as apply has returned: the
    revert must not depend on it. The pending record as apply left it."""
    env = {**DaemonProc(lab, rules).env, "FWSYNC_BACKEND": backend}
    done = tmp_path / "apply.status"
    out = tmp_path / "apply.out"
    script = (f"{sys.executable} -m fwsync apply --yes --confirm-within {WINDOW} "
              f"> {out} 2>&1; echo $? > {done}; sleep 600")
    shell = subprocess.Popen([*lab.host.nsenter_prefix(), "bash", "-c", script], env=env,
                             start_new_session=True, stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(600):
            if done.exists() and done.read_text().strip():
                break
            time.sleep(0.05)
        record = json.loads((lab.dir / "pending-apply.json").read_text())
    finally:
        os.killpg(shell.pid, signal.SIGKILL)  # the session's shell and all it runs
        shell.wait()
    assert done.read_text().strip() == "0", out.read_text()
    assert f"Unconfirmed: run `fwsync confirm` within {WINDOW} s" in out.read_text()
    assert record["timer"]["kind"] == "process"
    return record


def status_json(lab: KernelLab, rules: Path) -> dict[str, Any]:
    res = run_fwsync(lab, "status", "--format", "json", rules=rules)
    assert res.returncode == 0, res.stderr
    data: dict[str, Any] = json.loads(res.stdout)
    return data


def alive(record: dict[str, Any]) -> bool:
    from fwsync.rollout.timer import is_revert_process

    return is_revert_process(record["timer"], record["token"])


def test_an_unconfirmed_apply_is_reverted_with_its_shell_killed(
        kernel_lab: KernelLab, tmp_path: Path, backend: str) -> None:
    lab = kernel_lab
    lab.publish(80, 80)
    remember_web(lab)
    old = write_rules(tmp_path / "old", OPEN_RULES)
    fwsync_ok(lab, "apply", rules=old)
    assert lab.attacker.probe(80) == "open"
    new = write_rules(tmp_path / "new", NARROW_RULES)
    record = apply_from_a_shell_then_kill_it(lab, new, backend, tmp_path)
    # In the window: the revert process survived its shell, another apply is refused, status
    # says what is pending, the new rules hold.
    assert alive(record)
    refused = run_fwsync(lab, "apply", "--yes", rules=old)
    assert refused.returncode == 1 and "waiting for confirmation" in refused.stderr
    during = status_json(lab, new)["rollout"]
    assert during["pending"]["deadline"] == record["deadline"], during
    text = run_fwsync(lab, "status", rules=new).stdout
    assert "unless `fwsync confirm`" in text
    assert lab.attacker.probe(80, timeout=0.5) == "filtered" and lab.trusted.probe(80) == "open"
    assert time.time() < record["deadline"], "the checks above outlasted the window"
    # After the deadline: the attacker gets in again, the kernel holds the old objects.
    back_in = None
    for _ in range(40):
        if lab.attacker.probe(80, timeout=0.25) == "open":
            back_in = time.time()
            break
    assert back_in is not None, "not reverted within ~10 s of the apply"
    res = run_fwsync(lab, "plan", "--detailed-exitcode", rules=old)
    assert res.returncode == 0, res.stdout + res.stderr  # exactly the old objects
    after = status_json(lab, old)["rollout"]
    last = after["last_revert"]
    assert after["pending"] is None and last["result"] == "reverted", after
    assert last["reverted_by"] == "timer" and last["hold"] is True
    assert "was reverted at" in run_fwsync(lab, "status", rules=old).stdout
    assert not (lab.dir / "pending-apply.json").exists()
    for _ in range(50):
        if not alive(record):
            break
        time.sleep(0.1)
    assert not alive(record)
    nothing = run_fwsync(lab, "confirm")
    assert nothing.returncode == 1 and "was reverted at" in nothing.stderr
    revert = json.loads((lab.dir / "last-revert.json").read_text())
    due = revert["deadline"]
    print(f"\n[{backend} {lab.variant}] revert: started {revert['revert_started'] - due:+.3f} s"
          f" after the deadline, done and read back {revert['reverted_at'] - due:+.3f} s, "
          f"attacker in again by {back_in - due:+.3f} s (probe granularity ~0.25 s)")


def test_a_confirmed_apply_stays(kernel_lab: KernelLab, tmp_path: Path, backend: str) -> None:
    lab = kernel_lab
    lab.publish(80, 80)
    remember_web(lab)
    fwsync_ok(lab, "apply", rules=write_rules(tmp_path / "old", OPEN_RULES))
    new = write_rules(tmp_path / "new", NARROW_RULES)
    record = apply_from_a_shell_then_kill_it(lab, new, backend, tmp_path)
    res = fwsync_ok(lab, "confirm")
    assert "Confirmed." in res.stdout and str(new) in res.stdout
    assert not (lab.dir / "pending-apply.json").exists()
    time.sleep(max(0.0, record["deadline"] - time.time()) + 2)
    assert lab.attacker.probe(80) == "filtered" and lab.trusted.probe(80) == "open"
    assert not alive(record), "the revert process is left"
    assert not (lab.dir / "last-revert.json").exists()
    res = run_fwsync(lab, "plan", "--detailed-exitcode", rules=new)
    assert res.returncode == 0, res.stdout + res.stderr
    assert status_json(lab, new)["rollout"] == {"pending": None, "last_revert": None}
    again = run_fwsync(lab, "confirm")
    assert again.returncode == 1 and "nothing to confirm" in again.stderr


def test_a_daemon_neither_applies_over_the_window_nor_fights_the_revert(
        make_kernel_lab: Any, tmp_path: Path, backend: str) -> None:
    """The daemon's rules say `allow 80/tcp`; an operator tries the narrow rules with a
    window, from another directory, and copies them into the daemon's during the window. The
    daemon writes nothing in the window (its drift tick sees the kernel changed, its rules
    watch sees the edit), leaves the revert alone, and holds off the reverted rules until they
    are edited again."""
    lab = make_kernel_lab("nft")
    lab.publish(80, 80)
    remember_web(lab)
    rules = write_rules(tmp_path / "daemon", OPEN_RULES)
    with DaemonProc(lab, rules, "--backend", backend, "--drift-interval", "0.2") as daemon:
        daemon.wait_ready()
        assert lab.attacker.probe(80) == "open"
        staging = write_rules(tmp_path / "staging", NARROW_RULES)
        seen = len(daemon.reconciles())
        res = run_fwsync(lab, "apply", "--yes", "--confirm-within", str(WINDOW), "--rules",
                         str(staging), "--backend", backend, env=daemon.env)
        assert res.returncode == 0, res.stderr + res.stdout
        deadline = json.loads((lab.dir / "pending-apply.json").read_text())["deadline"]
        daemon.wait_reconcile(lambda r: r.get("result") == "held", after=seen,
                              what="a reconcile that holds off in the window")
        (rules / "10-test.rules").write_text(NARROW_RULES)  # the operator moves them in
        daemon.wait_reconcile(lambda r: r.get("result") == "held" and "rules" in r["trigger"],
                              after=seen, what="the edit held off")
        assert lab.attacker.probe(80, timeout=0.5) == "filtered"
        assert time.time() < deadline
        # The revert: the attacker is in again, and stays in: the daemon holds off the rules
        # on disk, which are the reverted ones.
        while lab.attacker.probe(80, timeout=0.25) != "open":
            assert time.time() < deadline + 10, daemon.tail()
        time.sleep(2)  # ten drift ticks
        assert lab.attacker.probe(80) == "open", daemon.tail()
        assert not any(r.get("result") == "applied" for r in daemon.reconciles()[seen:]), \
            daemon.tail()
        held = json.loads(run_fwsync(lab, "status", "--format", "json", rules=rules,
                                     env=daemon.env).stdout)
        assert held["rollout"]["last_revert"]["hold"] is True
        # An edit ends the hold: the daemon applies the rules on disk again.
        (rules / "10-test.rules").write_text(NARROW_RULES + "# reviewed\n")
        daemon.wait_reconcile(lambda r: r.get("result") == "applied", after=seen,
                              what="the edited rules applied")
        assert lab.attacker.probe(80) == "filtered"
