"""What fwsync makes of each real engine it runs against: the API version it speaks, the
backend `auto` picks from what the daemon says of its firewall (GET /info's FirewallBackend,
28.1+; older engines report none and write iptables), and doctor on a Docker 29 nftables host."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from fwsync.observe.docker import docker_client
from tests.docker_layouts import Bridge, Published, nftables_restart_script
from tests.engines import Engine
from tests.json_schemas import assert_valid
from tests.lab import CTR_NET_V4, CTR_NET_V6, DockerLab, run_fwsync, set_forwarding
from tests.steps import write_rules

pytestmark = pytest.mark.e2e


def test_the_client_speaks_the_engines_own_api_version(dlab: DockerLab,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", dlab.docker_host)
    client = docker_client(timeout=10)
    try:
        assert client.api.api_version == dlab.client.version()["ApiVersion"]
    finally:
        client.close()


def test_auto_picks_the_backend_the_engine_reports(dlab: DockerLab, engine: Engine,
                                                   tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FWSYNC_BACKEND", raising=False)
    dlab.run_web("web-auto", {"80/tcp": 5432})
    res = run_fwsync(dlab, "plan", "--format", "json",
                     rules=write_rules(tmp_path, "default deny\n"))
    assert res.returncode in (0, 2), res.stderr
    plan = json.loads(res.stdout)
    assert plan["backend"] == "iptables"  # what every engine here writes
    if engine.reports_firewall_backend:
        assert plan["backend_reason"].startswith(
            "auto: Docker reports its firewall backend is iptables;"), plan["backend_reason"]
    else:
        assert plan["backend_reason"].startswith(
            f"auto: Docker {dlab.version} writes iptables (it reports no firewall backend)"
        ), plan["backend_reason"]


def test_doctor_finds_docker29_nftables_dropped_by_ufws_forward_policy(
        make_docker_lab: Callable[..., DockerLab], tmp_path: Path) -> None:
    """Docker 29's nftables firewall on a ufw host, around a real dockerd: the daemon writes no
    firewall of its own (--iptables=false), the lab writes Docker 29's tables for its real
    container exactly as moby's dumps show them, and ufw is really enabled."""
    lab = make_docker_lab(extra_args=["--iptables=false", "--ip6tables=false"])
    ctr = lab.run_web("db", {"80/tcp": 5432})
    assert "DOCKER" not in lab.host.run(["iptables-save"]).stdout
    published = (Published(ctr.attrs["NetworkSettings"]["IPAddress"], 5432, 80),)
    set_forwarding(lab.host, True)
    lab.host.run(["nft", "-f", "-"], input=nftables_restart_script(
        [Bridge("docker0", CTR_NET_V4, published)], [Bridge("docker0", CTR_NET_V6)],
        forward_policy="drop"))
    rules = write_rules(tmp_path, "allow 5432/tcp\n")

    def findings() -> dict[str, list[str]]:
        res = run_fwsync(lab, "doctor", "--format", "json", "--sample", "0", rules=rules)
        doc = json.loads(res.stdout)
        assert_valid("doctor", doc)
        return {f["details"]["table"]: f["details"]["chains"] for f in doc["findings"]
                if f["check"] == "nftables-forward-drop"}

    assert lab.trusted.probe(5432) == "open"
    assert findings() == {}
    lab.enable_ufw()
    assert lab.trusted.probe(5432) == "filtered", "Docker's chain accepted it, ufw's dropped it"
    assert findings() == {"ip docker-bridges": ["ip filter FORWARD"],
                          "ip6 docker-bridges": ["ip6 filter FORWARD"]}
    lab.ufw("default", "allow", "routed")  # the finding's fix
    assert lab.trusted.probe(5432) == "open"
    assert findings() == {}
