"""The INPUT path's missing catch-all (issue 19, item 2). With Docker's userland proxy, IPv6 to a
container without IPv6 is accepted by docker-proxy on the host (INPUT), and fwsync's INPUT-path
chain names the bindings known at apply: a port published later is open over IPv6 to whatever
the host's INPUT firewall admits until the next apply.

The DNAT path's catch-all is name-free (`ct status dnat`). What would be one here — "a new
connection to a socket docker-proxy serves" — is measured below on each engine with real IPv6
connections from another namespace, dockerd in a cgroup of its own as systemd runs it
(docker.service), and the host's own listener on 2222 beside docker-proxy's 8080:

- nftables `socket cgroupv2 level 2 "<dockerd's cgroup>"` on the input hook matches the SYN
  to docker-proxy's listener (8080 filtered, also a port published after the rule was loaded)
  and not the host's (2222 open);
- iptables `-m cgroup --path <it>` on INPUT matches neither: xt_cgroup reads the socket attached
  to the packet, and a SYN to a listener has none yet at the INPUT hook;
- iptables `-m socket --nowildcard` matches every local listener, the host's own included;
- libnftables 1.0.6 (Debian 12), through whose JSON the nftables backend writes everything in one
  transaction, refuses the `socket cgroupv2` expression ("Invalid socket key value"), and its
  JSON listing drops the level.

So the nftables backend writes that rule in nft's text syntax, in a chain of its own
(nftables_render.py, `proxy`), on dockerd's cgroup as observe/proxy_cgroup.py finds it; the
iptables backend has no catch-all here, and plan, apply and status say so (core/build.py,
later_proxy_ports). `test_a_port_published_after_apply_is_judged_over_ipv6` tests both."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.engines import Engine
from tests.lab import CGROUP2, DockerLab, run_fwsync, serve_tcp, wait_for
from tests.steps import fwsync_ok, write_rules

pytestmark = [pytest.mark.e2e]

OFFICE = """\
default deny incoming
define office 198.51.100.0/25, 2001:db8:1::/64
allow from $office to any port 8080,9090 proto tcp
"""

def own_cgroup(lab: DockerLab) -> str:
    """The lab's dockerd cgroup (DockerLab(own_cgroup=True)), as nft names it below
    /sys/fs/cgroup."""
    assert lab.cgroup is not None
    return f"{(CGROUP2 / lab.cgroup).relative_to('/sys/fs/cgroup')}"


def in_host(lab: DockerLab, *cmd: str, text: str | None = None) -> subprocess.CompletedProcess[str]:
    # nsenter, not `ip netns exec`: the latter remounts /sys, and nft finds no cgroup there.
    return subprocess.run([*lab.host.nsenter_prefix(), *cmd], input=text, capture_output=True,
                          text=True, timeout=30, check=False)


def attacker_v6(lab: DockerLab, *ports: int) -> list[str]:
    return [lab.attacker.probe(p, v6=True) for p in ports]


_JSON_CGROUPV2 = """
import json, sys, nftables
nft = nftables.Nftables()
t = {"family": "inet", "table": "fwsync_probe"}
rc, _out, err = nft.json_cmd({"nftables": [
    {"add": {"table": {"family": "inet", "name": "fwsync_probe"}}},
    {"add": {"chain": {**t, "name": "c"}}},
    {"add": {"rule": {**t, "chain": "c", "expr": [
        {"match": {"op": "==", "left": {"socket": {"key": "cgroupv2", "level": 2}},
                   "right": sys.argv[1]}}, {"drop": None}]}}}]})
nft.cmd("delete table inet fwsync_probe")
print(json.dumps([rc, err]))
"""


def test_what_matches_a_new_connection_to_docker_proxy(make_docker_lab: Any, tmp_path: Path,
                                                       engine: Engine) -> None:
    # no --ipv6: IPv6 goes through docker-proxy
    lab: DockerLab = make_docker_lab(own_cgroup=True)
    nft_path = own_cgroup(lab)
    with serve_tcp(lab.host, [2222]):
        lab.run_web("web", {"80/tcp": 8080})
        wait_for(lab.attacker, lab.attacker.host_v6, 8080)
        assert attacker_v6(lab, 8080, 2222) == ["open", "open"]

        loaded = in_host(lab, "nft", "-f", "-", text=(
            "table inet fwsync_probe {\n chain input {\n"
            "  type filter hook input priority -1; policy accept;\n"
            f'  meta nfproto ipv6 ct state new socket cgroupv2 level 2 "{nft_path}" drop\n'
            " }\n}\n"))
        assert loaded.returncode == 0, loaded.stderr
        try:
            assert attacker_v6(lab, 8080, 2222) == ["filtered", "open"], \
                "socket cgroupv2: docker-proxy's sockets, not the host's"
            lab.run_web("later", {"80/tcp": 9090})
            wait_for(lab.host, "127.0.0.1", 9090)
            assert attacker_v6(lab, 9090) == ["filtered"], "a port published after the rule"
        finally:
            in_host(lab, "nft", "delete", "table", "inet", "fwsync_probe")

        assert lab.cgroup is not None
        for match, want in ((["-m", "cgroup", "--path", lab.cgroup], ["open", "open"]),
                            (["-m", "socket", "--nowildcard"], ["filtered", "filtered"])):
            rule = ["INPUT", "-p", "tcp", "-m", "conntrack", "--ctstate", "NEW", *match,
                    "-j", "DROP"]
            added = in_host(lab, "ip6tables", "-w", "-I", *rule)
            assert added.returncode == 0, added.stderr
            try:
                assert attacker_v6(lab, 8080, 2222) == want, match
            finally:
                in_host(lab, "ip6tables", "-w", "-D", *rule)

        refused = in_host(lab, "/usr/bin/python3", "-c", _JSON_CGROUPV2, nft_path)
        rc, err = json.loads(refused.stdout)
        assert rc != 0 and "Invalid socket key value" in err, \
            "libnftables' JSON takes socket cgroupv2 now: the nftables backend can use it"
        assert attacker_v6(lab, 8080, 2222) == ["open", "open"], "every probe rule is gone"

    # Before fwsync's catch-all is in the kernel, doctor says a later port is open.
    rules = write_rules(tmp_path, OFFICE)
    doc = json.loads(run_fwsync(lab, "doctor", "--format", "json", "--sample", "0",
                                rules=rules).stdout)
    [found] = [f for f in doc["findings"] if f["check"] == "ipv6-proxy-later"]
    assert found["severity"] == "warning" and "[::]:8080/tcp" in found["details"]["bindings"]
    fwsync_ok(lab, "apply", "--backend", "nftables", rules=rules)
    doc = json.loads(run_fwsync(lab, "doctor", "--format", "json", "--sample", "0",
                                rules=rules, env={"FWSYNC_BACKEND": "nftables"}).stdout)
    assert not [f for f in doc["findings"] if f["check"] == "ipv6-proxy-later"], doc


def test_a_port_published_after_apply_is_judged_over_ipv6(
        make_docker_lab: Any, tmp_path: Path, backend: str, engine: Engine) -> None:
    """The catch-all, with dockerd in a cgroup of its own (as docker.service): on the nftables
    backend a port published after the apply, with no daemon and no apply since, is judged by
    the rules over IPv6 (the office in, the attacker out). The iptables backend has no match for
    it: plan and apply say that a later port is open until the next apply, and why."""
    lab: DockerLab = make_docker_lab(own_cgroup=True)
    lab.run_web("web", {"80/tcp": 8080})
    rules = write_rules(tmp_path, OFFICE)
    out = fwsync_ok(lab, "apply", rules=rules).stdout
    if backend == "nftables":
        # What the kernel holds is what fwsync renders, read back: nothing to do, enforcing.
        fwsync_ok(lab, "plan", "--detailed-exitcode", rules=rules)
        status = fwsync_ok(lab, "status", rules=rules).stdout
        assert "Enforcing: yes" in status, status
    lab.run_web("later", {"80/tcp": 9090})  # no daemon, no apply since
    for port in (8080, 9090):
        wait_for(lab.trusted, lab.trusted.host_v6, port)
    assert attacker_v6(lab, 8080) == ["filtered"], "listed at apply: judged"
    if backend == "iptables":
        assert "a port Docker publishes after this apply is open over IPv6" in out, out
        assert "this backend has no match for it" in out, out
        return
    assert "published through docker-proxy" not in out, out
    assert attacker_v6(lab, 9090) == ["filtered"], "published after apply: the attacker got in"
    assert lab.trusted.probe(9090, v6=True) == "open", "the office must still get in"
    listed = in_host(lab, "nft", "list", "chain", "inet", "fwsync", "proxy").stdout
    assert f'socket cgroupv2 level 2 "{own_cgroup(lab)}" jump inbound' in listed, listed


def _proxy_rule(lab: DockerLab) -> str:
    """The proxy chain's rules with their handles, as nft lists them."""
    return in_host(lab, "nft", "-a", "list", "chain", "inet", "fwsync", "proxy").stdout


def test_the_catch_all_is_kept_across_applies_and_put_back_when_flushed(
        make_docker_lab: Any, tmp_path: Path, engine: Engine,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The proxy chain is written apart from the table's JSON transactions: an apply that
    changes other rules leaves its rule as it is (the same handle: no moment without it), and a
    hand flush of it is drift that plan shows, status does not call enforcing, and apply puts
    back (real IPv6 connections to a port published after each)."""
    monkeypatch.setenv("FWSYNC_BACKEND", "nftables")
    lab: DockerLab = make_docker_lab(own_cgroup=True)
    lab.run_web("web", {"80/tcp": 8080})
    rules = write_rules(tmp_path, OFFICE)
    fwsync_ok(lab, "apply", rules=rules)
    before = _proxy_rule(lab)
    assert "socket cgroupv2" in before, before
    write_rules(tmp_path, OFFICE + "allow from $office to any port 9091 proto tcp\n")
    changed = fwsync_ok(lab, "apply", rules=rules).stdout
    assert "chain inbound" in changed and "chain proxy" not in changed, changed
    assert _proxy_rule(lab) == before, "an apply that does not change it leaves it alone"

    flushed = in_host(lab, "nft", "flush", "chain", "inet", "fwsync", "proxy")
    assert flushed.returncode == 0, flushed.stderr
    lab.run_web("later", {"80/tcp": 9090})
    wait_for(lab.trusted, lab.trusted.host_v6, 9090)
    assert attacker_v6(lab, 9090) == ["open"], "the lab: without it a later port is open"
    plan = run_fwsync(lab, "plan", "--detailed-exitcode", rules=rules)
    assert plan.returncode == 2 and "chain proxy" in plan.stdout, plan.stdout
    status = run_fwsync(lab, "status", rules=rules).stdout
    assert "Enforcing: yes" not in status, status
    fwsync_ok(lab, "apply", rules=rules)
    assert "socket cgroupv2" in _proxy_rule(lab)
    lab.run_web("later2", {"80/tcp": 9091})
    wait_for(lab.trusted, lab.trusted.host_v6, 9091)
    assert attacker_v6(lab, 9091) == ["filtered"]


def test_without_a_cgroup_of_its_own_dockerd_gets_no_catch_all_and_plan_says_why(
        make_docker_lab: Any, tmp_path: Path, engine: Engine,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """dockerd started from this test shares its cgroup with the test runner (the machine's
    root cgroup here): judging that cgroup's sockets would judge every listener of the host,
    so there is no proxy chain, and plan says why a later port is open."""
    monkeypatch.setenv("FWSYNC_BACKEND", "nftables")
    lab: DockerLab = make_docker_lab()
    lab.run_web("web", {"80/tcp": 8080})
    rules = write_rules(tmp_path, OFFICE)
    out = fwsync_ok(lab, "apply", rules=rules).stdout
    assert "a port Docker publishes after this apply is open over IPv6" in out, out
    assert "dockerd runs in the root cgroup" in out or "shares its cgroup" in out, out
    assert in_host(lab, "nft", "list", "chain", "inet", "fwsync", "proxy").returncode != 0


def test_dockerds_own_sockets_are_left_to_the_hosts_firewall(
        make_docker_lab: Any, tmp_path: Path, engine: Engine,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """dockerd's own listeners share docker-proxy's cgroup: its API over TCP (here [::]:2375)
    is the host's to govern (ufw), not a container's port, so the catch-all returns it
    untouched (the lab has no INPUT firewall: open) while a port published later is judged.
    Without the exemption the default deny cut the API off."""
    monkeypatch.setenv("FWSYNC_BACKEND", "nftables")
    # dockerd 20.10-28 wait 15 s before serving a TCP API without TLS.
    lab: DockerLab = make_docker_lab(own_cgroup=True, extra_args=("-H", "tcp://[::]:2375"))
    lab.run_web("web", {"80/tcp": 8080})
    rules = write_rules(tmp_path, OFFICE)
    fwsync_ok(lab, "apply", rules=rules)
    lab.run_web("later", {"80/tcp": 9090})
    wait_for(lab.trusted, lab.trusted.host_v6, 9090)
    assert attacker_v6(lab, 2375, 9090) == ["open", "filtered"]
    listed = in_host(lab, "nft", "list", "chain", "inet", "fwsync", "proxy").stdout
    assert "meta l4proto tcp ct original proto-dst 2375 return" in listed, listed


def test_the_daemon_follows_docker_service_to_its_new_cgroup(
        make_docker_lab: Any, tmp_path: Path, engine: Engine) -> None:
    """A restart of docker.service makes its cgroup anew (same path, new id): the rule in the
    kernel names the old id, which nothing is in any more, so a later port would be open. The
    daemon's reconcile at Docker's reconnect reads that as drift and writes the rule for the
    new cgroup: a port published after the restart is filtered, with no apply by hand."""
    from tests.daemon_helpers import DaemonProc

    lab: DockerLab = make_docker_lab(own_cgroup=True)
    rules = write_rules(tmp_path, OFFICE)
    with DaemonProc(lab, rules, "--backend", "nftables") as daemon:
        daemon.wait_ready()
        wait_until_listed = time.monotonic() + 20
        while f'"{own_cgroup(lab)}"' not in _proxy_rule(lab):
            assert time.monotonic() < wait_until_listed, _proxy_rule(lab)
            time.sleep(0.1)
        before = _proxy_rule(lab)
        lab.stop_dockerd()
        lab.renew_cgroup()
        lab.start_dockerd()
        deadline = time.monotonic() + 20
        while (now := _proxy_rule(lab)) == before or f'"{own_cgroup(lab)}"' not in now:
            assert time.monotonic() < deadline, f"not rewritten:\n{now}\n{daemon.tail()}"
            time.sleep(0.1)
        lab.run_web("later", {"80/tcp": 9090})
        wait_for(lab.trusted, lab.trusted.host_v6, 9090)
        assert attacker_v6(lab, 9090) == ["filtered"]
    run_fwsync(lab, "remove")
