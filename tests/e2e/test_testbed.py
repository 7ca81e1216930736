"""The DockerLab reproduces reality with a real dockerd of each engine, without fwsync: the
gotcha fwsync exists to fix, the chains each engine writes, IPv6 publishing, restarts, and a
cleanup that leaves nothing behind."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.engines import Engine
from tests.lab import (
    ATTACKER_V4,
    CTR_V4,
    CTR_V6,
    DOCKER_TOOLS,
    DockerLab,
    KernelLab,
    netns_names,
    pid_running,
    probe_many,
    require,
    wait_for,
)

pytestmark = pytest.mark.e2e


def test_seed_gotcha_ufw_does_not_cover_published_ports(
        make_docker_lab: Callable[..., DockerLab]) -> None:
    lab = make_docker_lab()
    t, a = lab.trusted, lab.attacker
    # Before ufw, HOST answers for itself: refused, not silent.
    assert probe_many(a, [(a.host_v4, 80)]) == ["closed"]
    lab.enable_ufw()
    status = lab.ufw("status", "verbose").stdout
    assert "Status: active" in status and "deny (incoming)" in status and "22/tcp" in status
    lab.run_web("web-gotcha", {"80/tcp": 5432})
    for peer in (t, a):
        # 5432 published: open despite "deny incoming"; 80 (container port, not published on
        # HOST): dropped by ufw; 22: allowed by ufw, nothing listens.
        assert probe_many(peer, [(peer.host_v4, 5432), (peer.host_v4, 80), (peer.host_v4, 22)]
                          ) == ["open", "filtered", "closed"], peer.name
    # The documented manual fix, applied by hand, filters that one neighbour only.
    lab.host.run(["iptables", "-I", "DOCKER-USER", "-s", ATTACKER_V4, "-j", "DROP"])
    assert probe_many(a, [(a.host_v4, 5432)]) == ["filtered"]
    assert probe_many(t, [(t.host_v4, 5432)]) == ["open"]
    # ufw's own config stayed private to HOST.
    assert "ENABLED=no" in Path("/etc/ufw/ufw.conf").read_text()


def test_rules_docker_wrote(dlab: DockerLab) -> None:
    lab = dlab
    lab.run_web("web-rules", {"80/tcp": 5432})
    v4 = lab.host.run(["iptables-save"]).stdout
    assert ":FORWARD DROP" in v4 and _forward(v4)[0] == "-A FORWARD -j DOCKER-USER"
    if lab.engine.docker_forward_chain:  # 28.0.1+: Docker's own FORWARD rules moved out
        assert _forward(v4) == ["-A FORWARD -j DOCKER-USER", "-A FORWARD -j DOCKER-FORWARD"]
    else:
        assert "DOCKER-FORWARD" not in v4 and "-A FORWARD -j DOCKER-ISOLATION-STAGE-1" in v4
    assert "-A DOCKER ! -i docker0 -p tcp -m tcp --dport 5432 -j DNAT --to-destination " \
           "198.51.100.130:80" in v4
    assert lab.host.sysctl("net.ipv4.ip_forward") == "1"  # dockerd turned it on


def test_publish_all_and_loopback_binding(dlab: DockerLab) -> None:
    lab, a = dlab, dlab.attacker
    ctr = lab.run_web("web-all", publish_all=True, expose=["80/tcp"])
    random_port = lab.host_port(ctr)
    assert ctr.attrs["HostConfig"]["PortBindings"] in (None, {})  # -P, as the notes say
    local = lab.run_web("web-local", {"80/tcp": ("127.0.0.1", 6379)})
    assert lab.host_port(local) == 6379
    assert probe_many(a, [(a.host_v4, random_port), (a.host_v4, 6379)]) == ["open", "closed"]


def test_containers_of_previous_test_are_gone(dlab: DockerLab) -> None:
    names = {c.name for c in dlab.client.containers.list(all=True)}
    assert not names & {"web-rules", "web-all", "web-local"}


def _forward(save: str) -> list[str]:
    return [line for line in save.splitlines() if line.startswith("-A FORWARD ")]


def test_ipv6_published_and_docker_user_per_engine(dlab_v6: DockerLab) -> None:
    lab = dlab_v6
    lab.run_web("web-v6", {"80/tcp": 5432})
    for peer in lab.peers:
        wait_for(peer, peer.host_v6, 5432)  # container IPv6 needs a moment after start
        assert probe_many(peer, [(peer.host_v4, 5432), (peer.host_v6, 5432)]) == ["open"] * 2
    v6 = lab.host.run(["ip6tables-save"]).stdout
    assert "--to-destination [2001:db8:d0c::" in v6
    if lab.engine.ip6_docker_user:  # 23.0+: IPv6's FORWARD starts with DOCKER-USER, as IPv4's
        assert _forward(v6)[0] == "-A FORWARD -j DOCKER-USER"
    else:  # 20.10 only hooks DOCKER-USER into IPv4's FORWARD
        assert "DOCKER-USER" not in v6


_SAVE_NOISE = re.compile(r"^#.*\n|\s*\[\d+:\d+\]", re.M)


def _tables(save: str) -> dict[str, dict[str, list[str]]]:
    """iptables-save as {table: {chain: [policy line, rules in order]}}: the order of tables
    and chains in a dump depends on the order they were made in, which is not a difference."""
    tables: dict[str, dict[str, list[str]]] = {}
    chains: dict[str, list[str]] = {}
    for line in _SAVE_NOISE.sub("", save).splitlines():
        if line.startswith("*"):
            chains = tables.setdefault(line[1:], {})
        elif line.startswith(":"):
            chains.setdefault(line.split()[0][1:], []).insert(0, line)
        elif line.startswith("-A "):
            chains.setdefault(line.split()[1], []).append(line)
    return tables


def test_kernel_lab_writes_what_this_engine_writes(dlab_v6: DockerLab, engine: Engine) -> None:
    """The KernelLab's hand-written layout for this engine is, rule for rule, what the real
    daemon writes for one published container (IPv4 and IPv6): the kernel tests built on it
    test the chains users have."""
    lab = dlab_v6
    assert {n.name for n in lab.client.networks.list()} == {"bridge", "host", "none"}
    ctr = lab.run_web("web-layout", {"80/tcp": 8080})
    net = ctr.attrs["NetworkSettings"]
    addrs = {net["IPAddress"]: CTR_V4, net["GlobalIPv6Address"]: CTR_V6}
    real = {}
    for v6 in (False, True):
        save = lab.host.run(["ip6tables-save" if v6 else "iptables-save"]).stdout
        for addr, lab_addr in addrs.items():  # 20.10 derives the IPv6 address from the MAC
            save = save.replace(addr, lab_addr)
        real[v6] = _tables(save)
    with KernelLab("nft", docker=engine.kernel_layout,
                   v6_docker_user=engine.ip6_docker_user) as klab:
        klab.publish(8080, 80)
        written = {v6: _tables(klab.save(v6=v6)) for v6 in (False, True)}
    assert written == real


def test_dockerd_restart_keeps_restart_policy_containers(dlab: DockerLab) -> None:
    lab, a = dlab, dlab.attacker
    lab.run_web("web-always", {"80/tcp": 5432}, restart_policy="always")
    lab.run_web("web-once", {"80/tcp": 5433})
    old_pid = lab.pid
    lab.stop_dockerd()
    assert lab.pid is None and old_pid is not None and not Path(f"/proc/{old_pid}").exists()
    lab.start_dockerd()
    assert lab.pid != old_pid
    wait_for(a, a.host_v4, 5432)
    status = {c.name: c.status for c in lab.client.containers.list(all=True)}
    assert status["web-always"] == "running" and status["web-once"] == "exited"
    assert probe_many(a, [(a.host_v4, 5433)]) == ["closed"]


def test_cleanup_leaves_nothing(engine: Engine) -> None:
    require(*DOCKER_TOOLS, engine=engine)
    root_before = subprocess.run(["nft", "-s", "list", "ruleset"], capture_output=True,
                                 text=True, check=True).stdout
    lab = DockerLab(engine=engine).start()
    try:
        lab.enable_ufw()
        lab.run_web("web-cleanup", {"80/tcp": 5432}, restart_policy="always")
        inside = {pid for ns in lab.namespaces for pid in ns.pids()}
        assert lab.pid in inside  # dockerd, containerd, shims, docker-proxy: all in HOST
        names = [ns.name for ns in lab.namespaces]
        etc = Path("/etc/netns") / lab.host.name
        assert etc.is_dir()
    finally:
        lab.cleanup()
    assert lab.leftovers() == []
    assert not set(names) & set(netns_names())
    assert not etc.exists() and not lab.dir.exists()
    assert not [pid for pid in inside if pid_running(pid)]
    root_after = subprocess.run(["nft", "-s", "list", "ruleset"], capture_output=True,
                                text=True, check=True).stdout
    assert root_after == root_before
