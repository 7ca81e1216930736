"""Docker 29's nftables firewall backend (`firewall-backend: nftables`), reproduced: Docker 29 is
not in Debian, so the KernelLab writes its `ip`/`ip6 docker-bridges` tables by hand, exactly as
moby's own generated dumps show them (test_lab.py compares them), and fwsync's nftables backend
is judged against them with real packets. There is no DOCKER-USER on such a host: fwsync's own
table, on the same forward hook at priority -1, runs before Docker's (priority filter) and a drop
there is final, whatever Docker's chain accepts."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.kernel.test_backends import SEED_RULES, publish_seed
from tests.lab import (
    CTR_NET_V4,
    CTR_V4,
    HOST_ATTACKER_V4,
    KernelLab,
    ruleset_snapshot,
    run_fwsync,
)
from tests.steps import fwsync_ok, write_rules

pytestmark = pytest.mark.kernel

OFFICE_ONLY = """default deny
define office 198.51.100.0/25, 2001:db8:1::/64
allow from $office to any port 5432 proto tcp
"""


@pytest.fixture
def lab(make_kernel_lab: Callable[..., KernelLab], monkeypatch: pytest.MonkeyPatch) -> KernelLab:
    # `auto` needs Docker's GET /info to pick nftables; the kernel lab has no Docker API.
    monkeypatch.setenv("FWSYNC_BACKEND", "nftables")
    return make_kernel_lab("nft", docker="29-nftables")


def nft_tables(lab: KernelLab) -> set[str]:
    return set(lab.host.run(["nft", "list", "tables"]).stdout.splitlines())


def fwsync_table(lab: KernelLab) -> str:
    return lab.host.run(["nft", "-s", "list", "table", "inet", "fwsync"]).stdout


def test_the_lab_is_a_docker29_nftables_host(lab: KernelLab) -> None:
    publish_seed(lab)
    assert nft_tables(lab) == {"table ip docker-bridges", "table ip6 docker-bridges"}
    # No iptables rules at all, so no DOCKER-USER to hook into.
    assert "DOCKER" not in lab.save() and "DOCKER" not in lab.save(v6=True)
    for peer in lab.peers:  # published: open to everyone, over both families
        for v6 in (False, True):
            assert peer.probe(5432, v6=v6) == "open" and peer.probe(53, "udp", v6=v6) == "open"
    # Direct routing to the container's address: Docker drops it (raw-PREROUTING).
    lab.attacker.ns.ip("route", "add", CTR_NET_V4, "via", HOST_ATTACKER_V4)
    assert lab.attacker.probe(80, addr=CTR_V4) == "filtered"


def test_seed_policy_with_real_packets(lab: KernelLab, tmp_path: Path) -> None:
    publish_seed(lab)
    fwsync_ok(lab, "apply", rules=write_rules(tmp_path, SEED_RULES))
    for v6 in (False, True):
        assert lab.trusted.probe(5432, v6=v6) == "open", "the office keeps postgres"
        assert lab.attacker.probe(5432, v6=v6) == "filtered", "deny drops silently"
        assert lab.trusted.probe(2222, v6=v6) == "filtered", "default deny"
        assert lab.trusted.probe(53, "udp", v6=v6) == "open"
        assert lab.attacker.probe(53, "udp", v6=v6) == "open"
    assert lab.attacker.probe(2222) == "closed", "reject answers with a TCP reset"
    # Docker's tables are untouched: fwsync only writes its own.
    assert nft_tables(lab) == {"table ip docker-bridges", "table ip6 docker-bridges",
                               "table inet fwsync"}


def test_a_port_published_after_apply_is_denied(lab: KernelLab, tmp_path: Path) -> None:
    fwsync_ok(lab, "apply", rules=write_rules(tmp_path, OFFICE_ONLY))
    lab.publish(8080, 81)  # a new container port, no apply since: default deny holds
    lab.publish(5432, 80)
    for v6 in (False, True):
        assert lab.attacker.probe(8080, v6=v6) == "filtered"
        assert lab.trusted.probe(8080, v6=v6) == "filtered"
        assert lab.trusted.probe(5432, v6=v6) == "open"
        assert lab.attacker.probe(5432, v6=v6) == "filtered"


def test_policy_holds_while_docker_recreates_its_tables(lab: KernelLab, tmp_path: Path) -> None:
    """dockerd deletes and recreates both tables at every start, then adds the rules of each
    container as it comes back: fwsync's table is another table and must not notice."""
    lab.publish(5432, 80)
    rules = write_rules(tmp_path, OFFICE_ONLY)
    fwsync_ok(lab, "apply", rules=rules)
    mine = fwsync_table(lab)
    published, lab.published = list(lab.published), []
    lab.write_docker_rules()  # the daemon is back, its container not yet
    for peer in lab.peers:
        assert peer.probe(5432) == "closed", "no DNAT yet: HOST itself answers"
    for host_port, ctr_port, proto, host_ip in published:  # the container is back
        lab.publish(host_port, ctr_port, proto, host_ip)
    for v6 in (False, True):
        assert lab.trusted.probe(5432, v6=v6) == "open"
        assert lab.attacker.probe(5432, v6=v6) == "filtered"
    assert fwsync_table(lab) == mine
    again = run_fwsync(lab, "plan", "--detailed-exitcode", rules=rules)
    assert again.returncode == 0, again.stdout + again.stderr


def test_remove_leaves_dockers_tables_as_they_were(lab: KernelLab, tmp_path: Path) -> None:
    publish_seed(lab)
    before = ruleset_snapshot(lab)
    fwsync_ok(lab, "apply", rules=write_rules(tmp_path, SEED_RULES))
    fwsync_ok(lab, "remove")
    assert ruleset_snapshot(lab) == before
    assert lab.attacker.probe(5432) == "open"


# What doctor reads of the kernel (fwsync/observe/forward_facts.py) and concludes, run in HOST:
# the CLI's `fwsync doctor` also needs Docker's API, which a kernel lab does not have (the e2e
# layer runs the whole command).
_DOCTOR = """
import json
from fwsync.doctor.checks import check_nftables_forward_drop
from fwsync.observe.forward_facts import forward_facts
print(json.dumps([dict(f.details) for f in check_nftables_forward_drop(forward_facts())]))
"""


def doctor_findings(lab: KernelLab) -> dict[str, list[str]]:
    out = lab.host.run([sys.executable, "-c", _DOCTOR]).stdout
    return {d["table"]: d["chains"] for d in json.loads(out)}


def test_ufw_forward_drop_breaks_docker29_publishing_and_doctor_finds_it(
        lab: KernelLab, tmp_path: Path) -> None:
    lab.publish(5432, 80)
    assert [lab.trusted.probe(5432, v6=v6) for v6 in (False, True)] == ["open", "open"]
    assert doctor_findings(lab) == {}
    lab.enable_ufw()  # ufw's defaults: deny incoming, and forward policy DROP
    assert "policy drop" in lab.host.run(["nft", "list", "chain", "ip", "filter",
                                          "FORWARD"]).stdout
    # Docker's table accepts the DNATed packet; ufw's FORWARD chain drops it all the same.
    for peer in lab.peers:
        assert [peer.probe(5432, v6=v6) for v6 in (False, True)] == ["filtered", "filtered"]
    assert doctor_findings(lab) == {"ip docker-bridges": ["ip filter FORWARD"],
                                    "ip6 docker-bridges": ["ip6 filter FORWARD"]}
    # The fix the finding names works, and fwsync's rules still decide who gets in.
    lab.ufw("default", "allow", "routed")
    assert doctor_findings(lab) == {}
    fwsync_ok(lab, "apply", rules=write_rules(tmp_path, OFFICE_ONLY))
    for v6 in (False, True):
        assert lab.trusted.probe(5432, v6=v6) == "open"
        assert lab.attacker.probe(5432, v6=v6) == "filtered"
