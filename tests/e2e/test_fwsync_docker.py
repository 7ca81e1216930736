"""fwsync against a real dockerd inside a network namespace, with real packets from the trusted
host (198.51.100.10, inside the example rules' $office) and an attacker (203.0.113.7).
Every scenario runs once per backend."""

from __future__ import annotations

from pathlib import Path

import pytest

from fwsync.core.observed import PublishedPort
from tests.lab import DockerLab, ruleset_snapshot, run_fwsync, wait_for
from tests.steps import REPO_RULES, fwsync_ok, write_rules

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("backend")]



def assert_office_only(lab: DockerLab, port: int = 5432, v6: bool = False) -> None:
    assert lab.trusted.probe(port, v6=v6) == "open", "the office reaches postgres"
    assert lab.attacker.probe(port, v6=v6) == "filtered", "nobody else does"


def test_seed_gotcha_is_open_before_and_closed_after_apply(make_docker_lab) -> None:
    lab: DockerLab = make_docker_lab()
    lab.enable_ufw()  # default deny incoming, allow 22/tcp
    lab.run_web("db", {"80/tcp": 5432})
    assert lab.attacker.probe(5432) == "open", "the gotcha: ufw's deny does not cover Docker"
    assert lab.attacker.probe(80) == "filtered", "while ufw does block the host's own ports"

    plan = run_fwsync(lab, "plan", "--detailed-exitcode", rules=REPO_RULES)
    assert plan.returncode == 2 and "to add" in plan.stdout
    fwsync_ok(lab, "apply", rules=REPO_RULES)

    assert_office_only(lab)
    again = run_fwsync(lab, "plan", "--detailed-exitcode", rules=REPO_RULES)
    assert again.returncode == 0 and "No changes" in again.stdout
    status = fwsync_ok(lab, "status", rules=REPO_RULES).stdout
    assert "0.0.0.0:5432/tcp → db" in status
    assert "allow $office (" in status and "20-services.rules:5)" in status


def test_policy_holds_across_restarts_recreation_and_ip_reuse(make_docker_lab,
                                                             backend: str) -> None:
    lab: DockerLab = make_docker_lab()
    db = lab.run_web("db", {"80/tcp": 5432}, restart_policy="always")
    old_ip = db.attrs["NetworkSettings"]["IPAddress"]
    fwsync_ok(lab, "apply", rules=REPO_RULES)
    assert_office_only(lab)

    db.restart(timeout=1)
    wait_for(lab.trusted, lab.trusted.host_v4, 5432)
    assert_office_only(lab)

    # Another container takes db's old address and publishes a port no rule allows.
    db.remove(force=True)
    other = lab.run_web("other", {"80/tcp": 6000})
    assert other.attrs["NetworkSettings"]["IPAddress"] == old_ip
    assert lab.attacker.probe(6000) == "filtered" and lab.trusted.probe(6000) == "filtered"

    lab.run_web("db", {"80/tcp": 5432}, restart_policy="always")  # re-created, new address
    assert_office_only(lab)

    lab.stop_dockerd()
    # Docker down: apply still enforces everything that doesn't need container names.
    down = fwsync_ok(lab, "apply", rules=REPO_RULES)
    assert "cannot reach Docker" in down.stdout
    lab.start_dockerd()
    wait_for(lab.trusted, lab.trusted.host_v4, 5432)
    assert_office_only(lab)
    plan = run_fwsync(lab, "plan", "--detailed-exitcode", rules=REPO_RULES)
    if backend == "iptables":
        # The restarted dockerd put its FORWARD rules above fwsync's own FORWARD jump (and its
        # jump to DOCKER-USER, where fwsync's other jump is, first again): still enforcing, but
        # the jump that holds while Docker's to DOCKER-USER is gone is no longer first. plan
        # shows that (the daemon repairs it at once); apply puts it first again.
        assert plan.returncode == 2, plan.stdout
        assert "+ FORWARD rule 1 -j FWSYNC-FORWARD" in plan.stdout, plan.stdout
        assert "Enforcing: yes" in fwsync_ok(lab, "status", rules=REPO_RULES).stdout
        fwsync_ok(lab, "apply", rules=REPO_RULES)
        plan = run_fwsync(lab, "plan", "--detailed-exitcode", rules=REPO_RULES)
    assert plan.returncode == 0, plan.stdout


def test_container_rules_follow_names_and_never_widen(dlab: DockerLab, tmp_path: Path) -> None:
    rules = write_rules(tmp_path, "allow from 198.51.100.10 to container metrics-* port 9100\n"
                                  "allow to container ghost\n")
    dlab.run_web("metrics-a", {"80/tcp": 9100})
    dlab.run_web("web-x", {"80/tcp": 8081})
    out = fwsync_ok(dlab, "apply", rules=rules).stdout
    assert "no running container matches 'ghost'" in out
    assert dlab.trusted.probe(9100) == "open"
    assert dlab.attacker.probe(9100) == "filtered"
    assert dlab.trusted.probe(8081) == "filtered", "a missing container's rule matches nothing"

    dlab.run_web("ghost", {"80/tcp": 8082})
    assert dlab.attacker.probe(8082) == "filtered", "fail closed until the next apply"
    fwsync_ok(dlab, "apply", rules=rules)
    assert dlab.attacker.probe(8082) == "open"


@pytest.mark.parametrize("backend", ["n/a"], indirect=True)  # fwsync's kernel side not used
def test_observed_bindings_from_a_real_dockerd(dlab_v6: DockerLab) -> None:
    from fwsync.observe.docker import observe_docker

    lab = dlab_v6
    lab.run_web("pg-a", {"80/tcp": 15432, "81/tcp": ("127.0.0.1", 16379), "53/udp": 15353})
    lab.run_web("range-b", {"8000/tcp": 18000, "8001/tcp": 18001})
    anyport = lab.run_web("auto-c", publish_all=True, expose=["82/tcp"])
    auto = lab.host_port(anyport, "82/tcp")
    import os
    old = os.environ.get("DOCKER_HOST")
    os.environ["DOCKER_HOST"] = lab.docker_host
    try:
        state = observe_docker()
    finally:
        if old is None:
            del os.environ["DOCKER_HOST"]
        else:
            os.environ["DOCKER_HOST"] = old
    assert state.error is None
    got = {(p.container, p.host_ip, p.host_port, p.proto, p.container_port) for p in state.ports}
    assert {("pg-a", "0.0.0.0", 15432, "tcp", 80), ("pg-a", "::", 15432, "tcp", 80),
            ("pg-a", "127.0.0.1", 16379, "tcp", 81), ("pg-a", "0.0.0.0", 15353, "udp", 53),
            ("range-b", "0.0.0.0", 18000, "tcp", 8000), ("range-b", "0.0.0.0", 18001, "tcp", 8001),
            ("auto-c", "0.0.0.0", auto, "tcp", 82)} <= got
    assert all(isinstance(p, PublishedPort) and p.image for p in state.ports)


def test_ipv6_published_port_is_governed(dlab_v6: DockerLab) -> None:
    lab = dlab_v6
    lab.run_web("db6", {"80/tcp": 5432})
    wait_for(lab.attacker, lab.attacker.host_v6, 5432)
    assert lab.attacker.probe(5432, v6=True) == "open", "published over IPv6 via ip6tables DNAT"
    fwsync_ok(lab, "apply", rules=REPO_RULES)
    assert_office_only(lab, v6=True)
    assert_office_only(lab)
    fwsync_ok(lab, "remove")


def test_invalid_rules_and_remove_leave_the_kernel_exactly_so(make_docker_lab,
                                                              tmp_path: Path) -> None:
    lab: DockerLab = make_docker_lab()
    lab.enable_ufw()
    lab.run_web("db", {"80/tcp": 5432})
    lab.host.run(["iptables", "-I", "DOCKER-USER", "-s", "198.51.100.99/32", "-j", "DROP"])
    pristine = ruleset_snapshot(lab)

    bad = write_rules(tmp_path, "default deny\nallow from $nowhere to any port 5432\n")
    res = run_fwsync(lab, "apply", rules=bad)
    assert res.returncode == 1 and "10-test.rules:2:12: error:" in res.stderr
    assert ruleset_snapshot(lab) == pristine

    fwsync_ok(lab, "apply", rules=REPO_RULES)
    assert "-A DOCKER-USER -s 198.51.100.99/32 -j DROP" in lab.host.run(["iptables-save"]).stdout
    assert_office_only(lab)
    fwsync_ok(lab, "remove")
    assert ruleset_snapshot(lab) == pristine, "remove takes out fwsync's objects and nothing else"
    assert lab.attacker.probe(5432) == "open"
