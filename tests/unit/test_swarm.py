"""Swarm services: what a manager and a worker observe, `to service` rules, and how status,
explain and the backend choice treat service ports. The Docker answers are trimmed copies of a
real Docker 20.10.24 in swarm mode (GET /services, GET /networks/ingress?verbose=true, the task
container in GET /containers/json) and of the nat DOCKER-INGRESS chain libnetwork writes."""

from __future__ import annotations

import pytest

from fwsync.core.build import build_ruleset, named_by
from fwsync.core.explain import explain, parse_connection
from fwsync.core.exposure_report import exposure_report
from fwsync.core.observed import DockerState, PublishedPort, SwarmNode
from fwsync.observe.docker import ports_of, ports_of_listed
from fwsync.observe.swarm import (
    claimed_ports,
    ingress_chain_ports,
    ingress_network,
    service_ports,
    swarm_node,
    worker_service_ports,
)
from fwsync.present_report import explain_json, explain_text
from fwsync.rules.model import Endpoint

from .helpers import aset, policy, ports, rule

pytestmark = pytest.mark.unit

SERVICES = [{
    "ID": "s879md7lxmv7o0lj5ef8m0mc8",
    "Spec": {"Name": "web",
             "TaskTemplate": {"ContainerSpec": {"Image": "fwsync-test/busybox:1@sha256:0123"}},
             "EndpointSpec": {"Mode": "vip", "Ports": [
                 {"Protocol": "tcp", "TargetPort": 80, "PublishedPort": 7777,
                  "PublishMode": "ingress"}]}},
    "Endpoint": {"Spec": {"Mode": "vip"}, "Ports": [
        {"Protocol": "tcp", "TargetPort": 80, "PublishedPort": 7777, "PublishMode": "ingress"},
        {"Protocol": "udp", "TargetPort": 81, "PublishedPort": 7778, "PublishMode": "ingress"},
        {"Protocol": "tcp", "TargetPort": 82, "PublishedPort": 7779, "PublishMode": "host"},
        {"Protocol": "sctp", "TargetPort": 83, "PublishedPort": 7780,
         "PublishMode": "ingress"}]}},
    {"ID": "q1", "Spec": {"Name": "worker-only"}, "Endpoint": {"Spec": {}}}]

VERBOSE_INGRESS = {
    "Name": "ingress", "Ingress": True, "Scope": "swarm",
    "Services": {
        "": {"VIP": "<nil>", "Ports": [], "LocalLBIndex": 0,
             "Tasks": [{"Name": "ingress-endpoint", "EndpointIP": "10.0.0.2"}]},
        "web": {"VIP": "10.0.0.3", "Ports": ["Target: 80, Publish: 7777",
                                             "Target: 81, Publish: 7778"],
                "LocalLBIndex": 256, "Tasks": [{"Name": "web.1.po40hiynftc9nglzigi936iur"}]},
        "dns-a": {"Ports": ["Target: 53, Publish: 53"]},
        "dns-b": {"Ports": ["Target: 5353, Publish: 53"]},
    }}

NAT_SAVE = """\
*nat
:DOCKER-INGRESS - [0:0]
-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER-INGRESS
-A DOCKER-INGRESS -p udp -m udp --dport 53 -j DNAT --to-destination 172.18.0.2:53
-A DOCKER-INGRESS -p tcp -m tcp --dport 53 -j DNAT --to-destination 172.18.0.2:53
-A DOCKER-INGRESS -p udp -m udp --dport 7778 -j DNAT --to-destination 172.18.0.2:7778
-A DOCKER-INGRESS -p tcp -m tcp --dport 7777 -j DNAT --to-destination 172.18.0.2:7777
-A DOCKER-INGRESS -j RETURN
-A DOCKER ! -i docker0 -p tcp -m tcp --dport 5432 -j DNAT --to-destination 172.17.0.2:80
COMMIT
"""

TASK_LISTED = {
    "Id": "0d5e0a9fea541f779e4a2186cc77be51570d2b6f799c7c5e95ac456132f2c31c",
    "Names": ["/web.1.po40hiynftc9nglzigi936iur"], "Image": "fwsync-test/busybox:1",
    "Ports": [{"IP": "0.0.0.0", "PrivatePort": 82, "PublicPort": 7779, "Type": "tcp"}],
    "Labels": {"com.docker.swarm.service.name": "web",
               "com.docker.swarm.task.name": "web.1.po40hiynftc9nglzigi936iur"},
    "NetworkSettings": {"Networks": {"docker_gwbridge": {}, "ingress": {}}}}

WEB_MESH = PublishedPort("0.0.0.0", 7777, "tcp", "", 80, image="fwsync-test/busybox:1",
                         service="web", mode="ingress")
WEB_UDP = PublishedPort("0.0.0.0", 7778, "udp", "", 81, image="fwsync-test/busybox:1",
                        service="web", mode="ingress")
WEB_TASK = PublishedPort("0.0.0.0", 7779, "tcp", "web.1.po40hiynftc9nglzigi936iur", 82,
                         container_id="0d5e0a9fea54", image="fwsync-test/busybox:1",
                         networks=("docker_gwbridge", "ingress"), container_ipv6=False,
                         service="web", mode="host")
DB = PublishedPort("0.0.0.0", 5432, "tcp", "db", 80, image="postgres:16")
MANAGER = SwarmNode(manager=True, node_addr="198.51.100.1")


def test_info_says_where_this_node_stands() -> None:
    assert swarm_node({"Swarm": {"LocalNodeState": "inactive"}}) is None
    assert swarm_node({}) is None
    assert swarm_node({"Swarm": {"LocalNodeState": "active", "ControlAvailable": True,
                                 "NodeAddr": "198.51.100.1"}}) == MANAGER
    assert swarm_node({"Swarm": {"LocalNodeState": "active", "ControlAvailable": False}}) \
        == SwarmNode(manager=False)
    assert ingress_network([{"Name": "bridge", "Id": "b1"},
                            {"Name": "ingress", "Id": "x0og", "Ingress": True}]) == "x0og"
    assert ingress_network([{"Name": "bridge", "Id": "b1"}]) is None


def test_a_manager_sees_every_service_s_mesh_ports() -> None:
    assert service_ports(SERVICES) == sorted([WEB_MESH, WEB_UDP])  # host mode, sctp: not here


def test_the_ingress_chain_gives_each_mesh_port_its_protocol() -> None:
    assert ingress_chain_ports(NAT_SAVE) == {("udp", 53), ("tcp", 53), ("udp", 7778),
                                             ("tcp", 7777)}


def test_a_worker_pairs_the_ingress_network_with_the_chain() -> None:
    found, notes = worker_service_ports(VERBOSE_INGRESS, ingress_chain_ports(NAT_SAVE))
    assert found == sorted([
        PublishedPort("0.0.0.0", 7777, "tcp", "", 80, service="web", mode="ingress"),
        PublishedPort("0.0.0.0", 7778, "udp", "", 81, service="web", mode="ingress")])
    # Two services on port 53, one per protocol: the worker can't tell which is whose.
    assert len(notes) == 1 and "services dns-a, dns-b publish it" in notes[0]


def test_a_port_in_the_chain_no_service_claims_is_pending() -> None:
    """The ingress network's gossip can lag the chain: the daemon looks again for those."""
    assert sorted(claimed_ports(VERBOSE_INGRESS)) == [53, 53, 7777, 7778]


def test_a_worker_that_cannot_read_the_chain_resolves_nothing() -> None:
    found, notes = worker_service_ports(VERBOSE_INGRESS, None)
    assert found == [] and len(notes) == 3
    assert all("could not read the nat DOCKER-INGRESS chain" in n for n in notes)


def test_a_task_publishing_in_host_mode_is_its_service_s_binding_on_this_node() -> None:
    assert ports_of_listed(TASK_LISTED) == [WEB_TASK]
    inspected = {"Name": "/web.1.x", "Config": {"Image": "i", "Labels": {
        "com.docker.swarm.service.name": "web"}}, "NetworkSettings": {"Ports": {
            "82/tcp": [{"HostIp": "0.0.0.0", "HostPort": "7779"}]}}}
    [port] = ports_of(inspected)
    assert (port.service, port.mode, port.container) == ("web", "host", "web.1.x")
    assert WEB_TASK.owner == "web.1.po40hiynftc9nglzigi936iur (service web, host mode)"
    assert WEB_MESH.owner == "service web (ingress mesh)" and WEB_MESH.target_word == "target port"


SWARM = DockerState(ports=(DB, WEB_MESH, WEB_UDP, WEB_TASK), swarm=MANAGER,
                    services=("web", "worker-only"), containers=("db", WEB_TASK.container))
OFFICE = aset("office", "198.51.100.0/25")


def test_to_service_names_the_mesh_ports_and_the_tasks_bindings_only() -> None:
    web = Endpoint(service="web")
    assert [p for p in SWARM.ports if named_by(web, p)] == [WEB_MESH, WEB_UDP, WEB_TASK]
    assert [p for p in SWARM.ports if named_by(Endpoint(service="w*"), p)] == \
        [WEB_MESH, WEB_UDP, WEB_TASK]
    # A container pattern never takes in a mesh port: no container on this node holds it.
    assert [p for p in SWARM.ports if named_by(Endpoint(container="*"), p)] == [DB, WEB_TASK]
    pol = policy(rule(3, proto="tcp", src=Endpoint(set="office"),
                      dst=Endpoint(service="web", ports=ports(7777))), sets=(OFFICE,))
    built = build_ruleset(pol, SWARM)
    assert [(r.match.family, r.match.proto, r.match.daddr, str(r.match.dport), r.match.sset)
            for r in built.ruleset.rules] == [(4, "tcp", None, "7777", "office")]
    assert built.notes == ()


@pytest.mark.parametrize(("docker", "why"), [
    (DockerState(ports=(DB,)), "no Swarm service matches 'web': this node is in no swarm"),
    (DockerState(ports=(DB,), swarm=MANAGER, services=("api",)),
     "no Swarm service matches 'web'"),
    (DockerState(ports=(DB,), swarm=SwarmNode(manager=False)),
     "no Swarm service this worker knows of"),
    (DockerState(ports=(DB,), swarm=MANAGER, services=("web",)),
     "Swarm service web publishes no port on this node"),
])
def test_a_service_rule_that_names_nothing_here_matches_nothing_and_says_why(
        docker: DockerState, why: str) -> None:
    pol = policy(rule(3, dst=Endpoint(service="web")))
    built = build_ruleset(pol, docker)
    assert built.ruleset.rules == ()
    assert len(built.notes) == 1 and why in built.notes[0] and "never widens" in built.notes[0]
    [surprise] = [s for s in exposure_report(pol, docker).surprises]
    assert surprise.kind == "missing-service" and why in surprise.message


def test_status_and_explain_show_service_ports_through_the_one_matcher() -> None:
    pol = policy(rule(3, proto="tcp", src=Endpoint(set="office"),
                      dst=Endpoint(service="web", ports=ports(7777))), sets=(OFFICE,))
    report = exposure_report(pol, SWARM)
    row = next(r for r in report.ports if r.port == WEB_MESH)
    assert [(d.action, d.who, d.origin) for d in row.decisions] == [
        ("allow", "$office", "rules/10-test.rules:3"),
        ("deny", "anyone else", "rules/10-test.rules:1")]
    ruleset = build_ruleset(pol, SWARM).ruleset
    e = explain(ruleset, SWARM, parse_connection("198.51.100.7", "7777/tcp"))
    assert e.outcome == "allow" and [r.binding for r in e.reaches] == [WEB_MESH]
    assert "→ service web (ingress mesh) (fwsync-test/busybox:1), target port 80" \
        in explain_text(e)
    reach = explain_json(e)["reaches"][0]
    assert (reach["service"], reach["mode"], reach["container"]) == ("web", "ingress", "")
    denied = explain(ruleset, SWARM, parse_connection("203.0.113.7", "7777/tcp"))
    assert denied.outcome == "deny"


def test_a_node_rejoining_after_a_reboot_is_still_a_swarm_node() -> None:
    assert swarm_node({"Swarm": {"LocalNodeState": "pending", "ControlAvailable": False}}) \
        == SwarmNode(manager=False)
    assert swarm_node({"Swarm": {"LocalNodeState": "error"}}) is None
