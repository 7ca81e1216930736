"""Paths into containers that carry no DNAT, against a real dockerd with real packets, once per
backend and per Docker engine (20.10, 26.1, 28.5; the test ids name it):

- IPv6 to a container without IPv6, and every IPv6 publish while Docker's ip6tables is off,
  goes through docker-proxy on the host's INPUT path: fwsync judges it there (allowed sources
  in, others out), leaves the host's own services alone, and ufw still decides after its allow;
- a network in `routed` gateway mode (Docker 27+: 28.5 here; 20.10 and 26.1 have no gateway
  modes and NAT the network like any other, which each test states);
- direct routing that Docker 28 reopens (nat-unprotected, trusted host interfaces,
  allow-direct-routing, DOCKER_INSECURE_NO_IPTABLES_RAW; Docker before 28 never dropped it):
  still dropped, unless the rules say otherwise.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.engines import Engine
from tests.json_schemas import assert_valid
from tests.lab import CTR_NET_V6, DockerLab, LabError, Peer, probe, serve_tcp, wait_for
from tests.steps import fwsync_ok, write_rules

pytestmark = [pytest.mark.e2e]

OFFICE = """\
default deny incoming
define office 198.51.100.0/25, 2001:db8:1::/64
"""
ROUTED_MODE = "com.docker.network.bridge.gateway_mode_ipv4"



def fwsync_json(lab: DockerLab, *args: str, rules: Path) -> Any:
    return json.loads(fwsync_ok(lab, *args, "--format", "json", rules=rules).stdout)


def by_binding(status: Any) -> dict[str, Any]:
    return {f"{p['host_ip']}:{p['host_port']}/{p['proto']}": p for p in status["ports"]}


def direct(peer: Peer, addr: str, *ports: int) -> list[str]:
    return [probe(peer, addr, port) for port in ports]


def modern(engine: Engine) -> bool:
    """Docker 28: gateway modes (27+), raw-table drops of direct routing and their opt-outs."""
    return int(engine.name.split(".")[0]) >= 28


# ------------------------------------------------------------------ docker-proxy, INPUT path


def test_ipv6_through_docker_proxy_is_judged_and_ufw_decides_after_an_allow(
        make_docker_lab: Any, tmp_path: Path, backend: str, engine: Engine) -> None:
    lab: DockerLab = make_docker_lab()  # no --ipv6: the container has no IPv6 address
    lab.run_web("web", {"80/tcp": 8080})
    with serve_tcp(lab.host, [22]):  # the host's own sshd
        for peer in lab.peers:
            wait_for(peer, peer.host_v6, 8080)
        assert lab.attacker.probe(8080, v6=True) == "open", "before: docker-proxy serves anyone"

        rules = write_rules(tmp_path, OFFICE + "allow from $office to any port 8080 proto tcp\n")
        fwsync_ok(lab, "apply", rules=rules)
        for v6 in (False, True):
            assert lab.trusted.probe(8080, v6=v6) == "open", "the office gets in"
            assert lab.attacker.probe(8080, v6=v6) == "filtered", "nobody else does"
            assert lab.attacker.probe(22, v6=v6) == "open", "the host's sshd: not fwsync's"

        status = fwsync_json(lab, "status", rules=rules)
        assert_valid("status", status)
        assert status["enforcing"].startswith("yes"), status["enforcing"]
        v6 = by_binding(status)[":::8080/tcp"]
        assert (v6["governed"], v6["docker_proxy"]) == (True, True)
        assert [w["kind"] for w in v6["warnings"]] == ["ipv6-docker-proxy", "wide-binding"]
        denied = fwsync_json(lab, "explain", lab.attacker.v6, "8080", rules=rules)
        allowed = fwsync_json(lab, "explain", lab.trusted.v6, "8080", rules=rules)
        assert (denied["verdict"], allowed["verdict"]) == ("deny", "allow")
        assert any("host's own INPUT firewall" in n for n in allowed["notes"])

        # ufw's `default deny incoming` decides after fwsync's allow; its `allow 8080/tcp`
        # lets the office in, and fwsync still keeps everyone else out.
        lab.enable_ufw()
        assert lab.trusted.probe(8080, v6=True) == "filtered", "ufw said no"
        assert lab.trusted.probe(8080) == "open", "IPv4 is DNATed: ufw's INPUT never sees it"
        lab.ufw("allow", "8080/tcp")
        assert lab.trusted.probe(8080, v6=True) == "open"
        assert lab.attacker.probe(8080, v6=True) == "filtered"
        assert lab.attacker.probe(22, v6=True) == "open", "ufw's allow 22/tcp still holds"
        status = fwsync_json(lab, "status", rules=rules)
        assert status["enforcing"].startswith("yes") and status["in_sync"], \
            "ufw appends its INPUT jumps: fwsync's is still first"

        fwsync_ok(lab, "remove")
        assert lab.attacker.probe(8080, v6=True) == "open", "without fwsync: ufw's allow alone"


def test_ipv6_publish_with_ip6tables_off_is_judged_on_the_input_path(
        make_docker_lab: Any, tmp_path: Path, backend: str, engine: Engine) -> None:
    """--ipv6 without ip6tables rules: the container has an IPv6 address, but Docker does not
    DNAT IPv6 (docker-proxy serves it) nor filter IPv6 routed to the container."""
    lab: DockerLab = make_docker_lab(extra_args=[
        "--ipv6", "--fixed-cidr-v6", CTR_NET_V6, "--ip6tables=false"])
    ctr = lab.run_web("web", {"80/tcp": 8080}, expose=["81/tcp"])
    ctr_v6 = ctr.attrs["NetworkSettings"]["Networks"]["bridge"]["GlobalIPv6Address"]
    assert ctr_v6, "the container has IPv6"
    for peer in lab.peers:
        wait_for(peer, peer.host_v6, 8080)
    assert lab.attacker.probe(8080, v6=True) == "open"
    assert direct(lab.attacker, ctr_v6, 80, 81) == ["open", "open"], \
        "before: no ip6tables rules, IPv6 routed straight to the container"

    rules = write_rules(tmp_path, OFFICE + "allow from $office to container web\n")
    fwsync_ok(lab, "apply", rules=rules)
    assert lab.trusted.probe(8080, v6=True) == "open"
    assert lab.attacker.probe(8080, v6=True) == "filtered"
    for peer in lab.peers:
        assert direct(peer, ctr_v6, 80, 81) == ["filtered", "filtered"], \
            "direct routing is dropped (protect direct-routing)"
    v6 = by_binding(fwsync_json(lab, "status", rules=rules))[":::8080/tcp"]
    assert v6["governed"] is True


# ------------------------------------------------------------------ routed networks


@pytest.mark.parametrize("rule", ["container", "network", "address"])
def test_a_routed_network_is_reached_by_allowed_sources_only(
        make_docker_lab: Any, tmp_path: Path, backend: str, engine: Engine, rule: str) -> None:
    """By container, by network or by address: the office reaches the container on a routed
    network, nobody else does. Docker 20.10 and 26.1 have no gateway modes: they keep the
    option but NAT the network, which fwsync then treats (and protects) like any other."""
    lab: DockerLab = make_docker_lab()
    net = lab.client.networks.create("routed", driver="bridge", options={ROUTED_MODE: "routed"})
    net.reload()
    subnet = net.attrs["IPAM"]["Config"][0]["Subnet"]
    ctr = lab.run_web("rweb", {"80/tcp": 8080}, expose=["81/tcp"], network="routed")
    addr = ctr.attrs["NetworkSettings"]["Networks"]["routed"]["IPAddress"]
    allow = {"container": "allow from $office to container rweb",
             "network": "allow from $office to network routed",
             "address": f"allow from $office to {subnet} port 80 proto tcp"}[rule]
    rules = write_rules(tmp_path, OFFICE + allow + "\n")
    routed = modern(engine)  # 27+
    if routed:
        assert direct(lab.attacker, addr, 80, 81) == ["open", "filtered"], \
            "before: Docker routes the published container port to anyone"
        assert lab.attacker.probe(8080) == "closed", "the host port does not exist"
    else:
        assert lab.attacker.probe(8080) == "open", "NATed: the host port is published"

    fwsync_ok(lab, "apply", rules=rules)
    status = fwsync_json(lab, "status", rules=rules)
    assert_valid("status", status)
    rows = status["direct_routing"]["networks"]
    # IPv6 reaches the container through docker-proxy on host port 8080 (the network has no
    # IPv6): a container or network rule names that binding, an address rule does not.
    v6 = "filtered" if rule == "address" else "open"
    assert (lab.trusted.probe(8080, v6=True), lab.attacker.probe(8080, v6=True)) == (
        v6, "filtered")
    later = lab.run_web("later", {"80/tcp": 8081}, network="routed")
    later_addr = later.attrs["NetworkSettings"]["Networks"]["routed"]["IPAddress"]
    if routed:
        assert direct(lab.trusted, addr, 80, 81) == ["open", "filtered"], "the office gets in"
        assert direct(lab.attacker, addr, 80, 81) == ["filtered", "filtered"]
        [row] = [r for r in rows if r["network"] == "routed"]
        assert (row["family"], row["fwsync"], row["why"]) == (4, "rules", "routed network routed")
        port = by_binding(status)[f"{addr}:80/tcp"]
        assert port["routed"] == "routed" and port["decisions"][0]["action"] == "allow"
        assert fwsync_json(lab, "explain", lab.trusted.v4, "80", "--to", addr,
                           rules=rules)["verdict"] == "allow"
        assert fwsync_json(lab, "explain", lab.attacker.v4, "80", "--to", addr,
                           rules=rules)["verdict"] == "deny"
        # A container started after apply: a network or address rule covers it at once; a
        # container rule names rweb only.
        assert direct(lab.trusted, later_addr, 80) == [
            "filtered" if rule == "container" else "open"]
        assert direct(lab.attacker, later_addr, 80) == ["filtered"]
        # A routed network made after apply: dropped until the next apply (fail closed).
        lab.client.networks.create("other", driver="bridge", options={ROUTED_MODE: "routed"})
        other = lab.run_web("other", {"80/tcp": 8082}, network="other")
        other_addr = other.attrs["NetworkSettings"]["Networks"]["other"]["IPAddress"]
        assert direct(lab.attacker, other_addr, 80) == ["filtered"]
        assert direct(lab.trusted, other_addr, 80) == ["filtered"]
    else:
        office = "filtered" if rule == "address" else "open"  # the host port is no subnet's
        assert (lab.trusted.probe(8080), lab.attacker.probe(8080)) == (office, "filtered")
        for peer in lab.peers:
            assert direct(peer, addr, 80) == ["filtered"], "a NAT network stays protected"
        assert rows == [], "no gateway modes before Docker 27: nothing routed to report"
        # A container started after apply publishes a host port no rule named yet: the
        # default denies it until the next apply, after which a network rule names it too.
        assert lab.trusted.probe(8081) == "filtered"
        fwsync_ok(lab, "apply", rules=rules)
        assert lab.trusted.probe(8081) == ("open" if rule == "network" else "filtered")
        assert lab.attacker.probe(8081) == "filtered"


# ------------------------------------------------------------------ direct routing reopened


# Docker 28's ways of letting direct routing to container addresses through again.
REOPENED_NETWORKS = {
    "unprotected": {ROUTED_MODE: "nat-unprotected"},
    "trusted": {"com.docker.network.bridge.trusted_host_interfaces": "v-trusted:v-attacker"},
}


@pytest.mark.parametrize("how", ["networks", "allow-direct-routing", "no-iptables-raw"])
def test_direct_routing_docker_reopens_stays_dropped_unless_the_rules_say_otherwise(
        make_docker_lab: Any, tmp_path: Path, backend: str, engine: Engine, how: str) -> None:
    """On 20.10 and 26.1 the network options are kept but ignored, and DOCKER_INSECURE_NO_
    IPTABLES_RAW changes nothing: those Dockers never dropped direct routing in the first
    place. Their dockerd has no --allow-direct-routing (28.2+)."""
    if how == "allow-direct-routing" and not modern(engine):
        with pytest.raises(LabError, match="unknown flag: --allow-direct-routing"):
            make_docker_lab(extra_args=["--allow-direct-routing"])
        return
    lab: DockerLab = make_docker_lab(
        extra_args=["--allow-direct-routing"] if how == "allow-direct-routing" else [],
        dockerd_env={"DOCKER_INSECURE_NO_IPTABLES_RAW": "1"} if how == "no-iptables-raw" else {})
    names = list(REOPENED_NETWORKS) if how == "networks" else ["plain"]
    addrs = {}
    for name in names:
        lab.client.networks.create(name, driver="bridge",
                                   options=REOPENED_NETWORKS.get(name, {}))
        ctr = lab.run_web(f"c-{name}", {"80/tcp": None}, network=name)
        addrs[name] = ctr.attrs["NetworkSettings"]["Networks"][name]["IPAddress"]
    for name, addr in addrs.items():
        # Docker lets both neighbours in (28: reopened; older: never closed).
        assert direct(lab.attacker, addr, 80) == ["open"], name

    base = OFFICE + "allow from $office to any port 80 proto tcp\n"
    fwsync_ok(lab, "apply", rules=write_rules(tmp_path, base))
    for name, addr in addrs.items():
        for peer in lab.peers:
            assert direct(peer, addr, 80) == ["filtered"], f"{name}: the protection holds"

    # The rules say otherwise for one network: then they decide there, the default included.
    first = names[0]
    rules = write_rules(tmp_path, f"protect direct-routing off to network {first}\n" + base)
    fwsync_ok(lab, "apply", rules=rules)
    assert direct(lab.trusted, addrs[first], 80) == ["open"]
    assert direct(lab.attacker, addrs[first], 80) == ["filtered"]
    for name, addr in list(addrs.items())[1:]:
        assert direct(lab.trusted, addr, 80) == ["filtered"], f"{name}: still protected"
    rows = {(r["network"], r["family"]): r for r in
            fwsync_json(lab, "status", rules=rules)["direct_routing"]["networks"]}
    assert rows[(first, 4)]["fwsync"] == "rules"
    assert rows[(first, 4)]["origin"] == f"{rules / '10-test.rules'}:1"
    if how == "networks" and modern(engine):
        assert rows[("trusted", 4)]["fwsync"] == "dropped"
        assert rows[("trusted", 4)]["docker"].startswith("open to direct routing from")
