"""Docker before 28 deletes FORWARD's jump to DOCKER-USER and inserts it again on top at every
network it creates (libnetwork's EnsureJumpRule: two iptables runs). A new connection to a
published port that arrives in between passes no rule in DOCKER-USER. The iptables backend
therefore jumps to its chain from FORWARD itself too, and a conntrack label keeps a packet that
passes both jumps from being judged (and a `limit` counting it) twice.

Here the moment is held open instead of raced: Docker's jump is deleted by hand, as Docker
deletes it, and real packets are sent meanwhile. Before (fwsync jumping from DOCKER-USER alone
while FORWARD reached it), the attacker connected to the published port; with the daemon, 14
of 444 attacker connections got in during 30 `docker network create` on Docker 20.10 (issue 19,
item 8). iptables backend only: the nftables backend's own forward hook never depended on
Docker's jump. Both iptables variants, under Docker 20.10's and 28's chain layouts.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from fwsync.core.ruleset import LIMIT
from tests.kernel.test_backends import send_burst
from tests.lab import KernelLab, run_fwsync
from tests.steps import OFFICE_ONLY, fwsync_ok, office_and_attacker, write_rules

pytestmark = pytest.mark.kernel

RULES = """\
default deny incoming
define office 198.51.100.0/25, 2001:db8:1::/64
allow from $office to any port 5432 proto tcp
limit 2222/tcp
"""
DOCKER_JUMP = ("-j", "DOCKER-USER")


def verdicts(lab: KernelLab) -> dict[str, str]:
    return office_and_attacker(lab, 5432)


def forward(lab: KernelLab, v6: bool = False) -> list[str]:
    return [line for line in lab.save(v6).splitlines() if line.startswith("-A FORWARD ")]


def test_a_connection_while_dockers_jump_is_gone_is_judged(
        kernel_lab: KernelLab, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lab = kernel_lab
    monkeypatch.setenv("FWSYNC_BACKEND", "iptables")
    lab.publish(5432, 80)
    rules = write_rules(tmp_path, RULES)
    fwsync_ok(lab, "apply", rules=rules)
    assert verdicts(lab) == OFFICE_ONLY
    families = [v6 for v6 in (False, True) if "-A FORWARD -j DOCKER-USER" in forward(lab, v6)]
    assert families, "the layout has Docker's jump to DOCKER-USER"

    # Docker creating a network: its jump deleted ...
    for v6 in families:
        lab.iptables("-D", "FORWARD", *DOCKER_JUMP, v6=v6)
    assert verdicts(lab) == OFFICE_ONLY, "fwsync's rules still judge while Docker's jump is gone"

    # ... and inserted again on top, above fwsync's own FORWARD jump.
    for v6 in families:
        lab.iptables("-I", "FORWARD", *DOCKER_JUMP, v6=v6)
        assert forward(lab, v6)[:2] == ["-A FORWARD -j DOCKER-USER",
                                        "-A FORWARD -j FWSYNC-FORWARD"]
    assert verdicts(lab) == OFFICE_ONLY
    # Where Docker put its jump back is not drift: nothing to repair, and still enforcing.
    plan = run_fwsync(lab, "plan", "--detailed-exitcode", rules=rules, check=False)
    assert plan.returncode == 0, plan.stdout + plan.stderr
    status = fwsync_ok(lab, "status", rules=rules).stdout
    assert "Enforcing: yes" in status, status


def test_a_connection_passing_both_jumps_is_counted_once(
        kernel_lab: KernelLab, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Docker's jump on top, fwsync's below it: a connection fwsync lets on in DOCKER-USER
    passes fwsync's chain again from FORWARD, and its `limit` must not count it twice (the
    burst would then end after about half as many connections)."""
    lab = kernel_lab
    monkeypatch.setenv("FWSYNC_BACKEND", "iptables")
    lab.publish(2222, 81)
    fwsync_ok(lab, "apply", rules=write_rules(tmp_path, RULES))
    if "-A FORWARD -j DOCKER-USER" not in forward(lab):
        pytest.fail("the layout has Docker's jump to DOCKER-USER")
    lab.iptables("-D", "FORWARD", *DOCKER_JUMP)
    lab.iptables("-I", "FORWARD", *DOCKER_JUMP)
    assert forward(lab)[:2] == ["-A FORWARD -j DOCKER-USER", "-A FORWARD -j FWSYNC-FORWARD"]
    times, seen = send_burst(lab, 2222, [(0, 7)])
    model = ["open" if ok else "closed" for ok in LIMIT.verdicts(times)]
    assert seen == model, f"kernel {seen}, model {model} at {times}"
    assert seen.count("open") == LIMIT.burst, seen


_RECEIVER = r"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", int(sys.argv[1])))
print("ready", flush=True)
while True:
    data, _addr = s.recvfrom(100)
    print(data.decode(), flush=True)
"""
_SEND = ("import socket, sys\n"
         "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
         "s.bind(('', int(sys.argv[3])))\n"
         "s.sendto(sys.argv[4].encode(), (sys.argv[1], int(sys.argv[2])))\n")


def test_a_later_packet_still_new_is_judged_again(
        kernel_lab: KernelLab, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The label skips a second pass only while the connection's entry is unconfirmed (its
    first packet). One-way UDP stays NEW: a datagram of a flow that was let in, sent after a
    deny is applied, is judged by the deny (without the `! --ctstatus CONFIRMED` part the
    label would let the whole flow through unjudged)."""
    lab = kernel_lab
    monkeypatch.setenv("FWSYNC_BACKEND", "iptables")
    lab.publish(5353, 82, "udp")
    receiver = lab.ctr.spawn([sys.executable, "-I", "-c", _RECEIVER, "82"],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert receiver.stdout is not None and receiver.stdout.readline().strip() == "ready"

        def send(word: str) -> None:
            lab.attacker.ns.run([sys.executable, "-I", "-c", _SEND, lab.attacker.host_v4,
                                 "5353", "40053", word])

        fwsync_ok(lab, "apply", rules=write_rules(tmp_path, "default allow\n"))
        send("first")
        fwsync_ok(lab, "apply", rules=write_rules(tmp_path, "default deny incoming\n"))
        send("second")  # the same flow (source port 40053), still NEW: no answer was sent
        time.sleep(0.5)
    finally:
        receiver.kill()
    out, _err = receiver.communicate(timeout=5)
    assert out.split() == ["first"], out
