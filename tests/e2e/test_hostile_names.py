"""Names Docker hands fwsync are hostile input: a bridge name is chosen by whoever may run
`docker network create -o com.docker.network.bridge.name=NAME`, and Docker accepts names that
iptables-restore or nftables would read as syntax. Real dockerd, both backends, real packets."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.daemon_helpers import DaemonProc
from tests.lab import DockerLab, probe_many, run_fwsync
from tests.steps import fwsync_ok, write_rules

pytestmark = [pytest.mark.e2e]

BRIDGE_NAME = "com.docker.network.bridge.name"
# Each was seen doing harm: '"+"' became iptables' `-i +` (every interface: RETURN, so every
# published port opened), 'v*' matched the outside links (v-trusted, v-attacker) in nftables,
# '*' made every nftables apply fail; 'e+' is an iptables prefix; the last is quoting soup.
HOSTILE = ('"+"', "v*", "*", "e+", 'a"b\\c')
RULES = "default deny\nallow from 198.51.100.10 to any port 5432,6000:6099 proto tcp\n"



def hostile_network(lab: DockerLab, index: int, bridge: str, port: int) -> None:
    lab.client.networks.create(f"evil{index}", driver="bridge", options={BRIDGE_NAME: bridge})
    lab.run_web(f"web{index}", {"80/tcp": port}, network=f"evil{index}")


def verdicts(lab: DockerLab, ports: list[int]) -> dict[str, list[str]]:
    return {who: probe_many(peer, [(peer.host_v4, p) for p in ports])
            for who, peer in (("trusted", lab.trusted), ("attacker", lab.attacker))}


def test_hostile_bridge_names_open_nothing_and_block_nothing(
        make_docker_lab, tmp_path: Path, backend: str) -> None:
    lab: DockerLab = make_docker_lab()
    lab.run_web("db", {"80/tcp": 5432})
    ports = [6000 + i for i in range(len(HOSTILE))]
    for i, (name, port) in enumerate(zip(HOSTILE, ports, strict=True)):
        hostile_network(lab, i, name, port)
    rules = write_rules(tmp_path, RULES)

    out = fwsync_ok(lab, "apply", rules=rules).stdout
    for i in range(len(HOSTILE)):
        assert f"Docker network 'evil{i}' has a bridge named" in out, out
    got = verdicts(lab, [5432, *ports])
    assert got == {"trusted": ["open"] * (1 + len(ports)),
                   "attacker": ["filtered"] * (1 + len(ports))}
    again = run_fwsync(lab, "plan", "--detailed-exitcode", rules=rules)
    assert again.returncode == 0, again.stdout + again.stderr
    status = fwsync_ok(lab, "status", rules=rules).stdout
    assert "Docker network 'evil0' has a bridge named '\"+\"'" in status


def test_the_daemon_governs_a_hostile_bridge_created_while_it_runs(
        make_docker_lab, tmp_path: Path, backend: str) -> None:
    lab: DockerLab = make_docker_lab()
    rules = write_rules(tmp_path, RULES)
    with DaemonProc(lab, rules, "--backend", backend) as daemon:
        daemon.wait_ready()
        seen = len(daemon.reconciles())
        hostile_network(lab, 0, '"+"', 6000)
        hostile_network(lab, 1, "v*", 6001)
        lab.run_web("db", {"80/tcp": 5432})
        # Docker 26+ publishes on :: as well: at least the three IPv4 bindings.
        rec = daemon.wait_reconcile(lambda r: (r.get("ports") or 0) >= 3, after=seen,
                                    what="a reconcile that sees all three containers")
        assert verdicts(lab, [5432, 6000, 6001]) == {"trusted": ["open"] * 3,
                                                     "attacker": ["filtered"] * 3}
        assert rec["result"] in ("applied", "unchanged"), rec
        notes = " ".join(rec.get("notes", []))
        assert "'evil0' has a bridge named" in notes and "'evil1' has a bridge named" in notes
