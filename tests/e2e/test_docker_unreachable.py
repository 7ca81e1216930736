"""Docker unreachable: its socket is gone (dockerd and its containers keep running), and fwsync
must keep enforcing what Docker made known last. Before, `apply` (and a daemon started then)
dropped every `deny`/`reject ... to container` rule and every bridge Docker had named, and
exited 0 saying the rules were enforced: the containers the rules deny became reachable.
Real dockerd, both backends, real packets."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.daemon_helpers import DaemonProc
from tests.lab import DockerLab, probe_many, ruleset_snapshot, run_fwsync
from tests.steps import fwsync_ok, write_rules

pytestmark = [pytest.mark.e2e]

RULES = "default allow\ndeny to container db\nreject to container api\n"



@contextlib.contextmanager
def socket_gone(lab: DockerLab) -> Iterator[None]:
    """Docker's socket moved away: every client fails to connect, dockerd runs on."""
    sock = Path(lab.docker_host.removeprefix("unix://"))
    away = sock.with_name("docker.sock.away")
    os.rename(sock, away)
    try:
        yield
    finally:
        os.rename(away, sock)


def verdicts(lab: DockerLab, direct: str) -> dict[str, str]:
    """The attacker on db's and api's published ports, and straight at app's own address (a
    container on a bridge Docker named: only fwsync's knowledge of that bridge protects it)."""
    got = probe_many(lab.attacker, [(lab.attacker.host_v4, 5432), (lab.attacker.host_v4, 7000),
                                    (direct, 80)])
    return dict(zip(("db", "api", "app direct"), got, strict=True))


EXPECTED = {"db": "filtered", "api": "closed", "app direct": "filtered"}


def test_without_docker_the_last_known_state_is_enforced(
        make_docker_lab, tmp_path: Path, backend: str) -> None:
    lab: DockerLab = make_docker_lab()
    lab.run_web("db", {"80/tcp": 5432})
    lab.run_web("api", {"80/tcp": 7000})
    net = lab.client.networks.create("lan", driver="bridge",
                                     options={"com.docker.network.bridge.name": "fwslan0"})
    app = lab.run_web("app", {"80/tcp": 6000}, network="lan")
    net.reload()
    subnet = net.attrs["IPAM"]["Config"][0]["Subnet"]
    direct = app.attrs["NetworkSettings"]["Networks"]["lan"]["IPAddress"]
    lab.attacker.ns.ip("route", "add", subnet, "via", lab.attacker.host_v4)  # routes to app
    rules = write_rules(tmp_path, RULES)
    fwsync_ok(lab, "apply", rules=rules)
    assert verdicts(lab, direct) == EXPECTED

    with socket_gone(lab):
        out = fwsync_ok(lab, "apply", rules=rules).stdout
        assert verdicts(lab, direct) == EXPECTED
        assert "cannot reach Docker" in out and "the rules use what it reported at" in out
        assert run_fwsync(lab, "plan", "--detailed-exitcode", rules=rules).returncode == 0
        status = fwsync_ok(lab, "status", rules=rules).stdout
        assert "0.0.0.0:5432/tcp → db" in status, status  # as Docker last reported it

        # A daemon started now (after a reboot of fwsync, say) builds from the same memory.
        fwsync_ok(lab, "remove")
        assert verdicts(lab, direct)["db"] == "open"
        with DaemonProc(lab, rules, "--backend", backend) as daemon:
            daemon.wait_ready()
            assert verdicts(lab, direct) == EXPECTED

        # Without any memory of Docker, an apply that would change the kernel refuses.
        (lab.dir / "docker.json").unlink()
        (rules / "10-test.rules").write_text(RULES + "deny from 198.51.100.99\n")
        before = ruleset_snapshot(lab)
        refused = run_fwsync(lab, "apply", rules=rules)
        assert refused.returncode == 1, refused.stdout
        assert "has no record of what it reported" in refused.stderr
        assert "nothing was changed" in refused.stderr
        plan = run_fwsync(lab, "plan", rules=rules)
        assert plan.returncode == 1 and "apply would refuse this plan" in plan.stderr
        assert ruleset_snapshot(lab) == before
        assert verdicts(lab, direct) == EXPECTED

    fwsync_ok(lab, "apply", rules=rules)  # Docker back: it is asked again, and remembered
    assert verdicts(lab, direct) == EXPECTED
    assert (lab.dir / "docker.json").exists()


def test_what_docker_last_reported_only_narrows(make_docker_lab, tmp_path: Path,
                                                backend: str) -> None:
    """Docker's socket goes away while its containers run on. What fwsync remembers of it may be
    out of date: here web was removed and db took its port before that (no daemon). An `allow
    ... to container web` taken from the memory opened web's old port, now db's, to the
    attacker, and apply said the rules were enforced. And with no memory at all, an apply of
    `deny ... to container` rules succeeded with the denies void."""
    lab: DockerLab = make_docker_lab()
    lab.run_web("web", {"80/tcp": 5432})
    rules = write_rules(tmp_path, f"default deny\nallow from {lab.attacker.v4} to container web\n")
    fwsync_ok(lab, "apply", rules=rules)
    assert lab.attacker.probe(5432) == "open"  # web: allowed to the attacker
    lab.client.containers.get("web").remove(force=True)
    lab.run_web("db", {"80/tcp": 5432})  # another container on web's port, before the socket went

    with socket_gone(lab):
        out = fwsync_ok(lab, "apply", rules=rules).stdout
        assert lab.attacker.probe(5432) == "filtered", "the attacker got into db"
        assert "an `allow` is not taken from what it last reported" in out, out

        # No memory and nothing of fwsync's in the kernel: a deny that cannot be resolved is
        # refused, as it is where the kernel holds fwsync's rules.
        fwsync_ok(lab, "remove")
        (lab.dir / "docker.json").unlink()
        (rules / "10-test.rules").write_text("default allow\ndeny to container db\n")
        before = ruleset_snapshot(lab)
        refused = run_fwsync(lab, "apply", rules=rules)
        assert refused.returncode == 1, refused.stdout + refused.stderr
        assert "10-test.rules:2 `deny to container db` cannot be resolved" in refused.stderr, \
            refused.stderr
        assert "nothing was changed" in refused.stderr
        plan = run_fwsync(lab, "plan", rules=rules)
        assert plan.returncode == 1 and "apply would refuse this plan" in plan.stderr
        assert ruleset_snapshot(lab) == before
        assert lab.attacker.probe(5432) == "open"  # Docker's own rules, as before: no pretence
