"""`plan`'s impact on real clients (verify/impact.py): tracked flows to published ports, asked of
the kernel's rules now (rendered here by the backends' own renderers, as the kernel lists them)
and of the new rules. Pure; the kernel test with real connections is
tests/kernel/test_plan_impact.py."""

from __future__ import annotations

import ipaddress

import pytest

from fwsync.backends.iptables_render import render_family
from fwsync.backends.nftables_render import render as render_nftables
from fwsync.core.build import build_ruleset
from fwsync.core.diff import State
from fwsync.core.observed import DockerState, PublishedPort
from fwsync.core.ruleset import Ruleset
from fwsync.observe.conntrack import Flow, parse_flow
from fwsync.present import impact_json, impact_lines
from fwsync.rules.model import Endpoint
from fwsync.verify.impact import plan_impact
from tests.json_schemas import assert_valid

from .helpers import net, policy, ports, rule

pytestmark = pytest.mark.unit

DB = PublishedPort("0.0.0.0", 5432, "tcp", "db", 5432)
DOCKER = DockerState(ports=(DB, PublishedPort("::", 5432, "tcp", "db", 5432)))
ALICE, MALLORY = ipaddress.ip_address("198.51.100.10"), ipaddress.ip_address("203.0.113.7")
HOST = ipaddress.ip_address("198.51.100.1")


def _state(backend: str, ruleset: Ruleset) -> State:
    if backend == "iptables":
        return {**render_family(ruleset, 4, "DOCKER-USER"), **render_family(ruleset, 6, "FORWARD")}
    return render_nftables(ruleset)


def flow(src: ipaddress.IPv4Address, sport: int, port: int = 5432) -> Flow:
    return Flow("tcp", src, sport, HOST, port, True)


@pytest.mark.parametrize("backend", ["iptables", "nftables"])
def test_the_plan_names_the_tracked_clients_the_new_rules_refuse(backend: str) -> None:
    db = Endpoint(ports=ports(5432))
    old = build_ruleset(policy(rule(2, proto="tcp", dst=db)), DOCKER).ruleset
    new = build_ruleset(policy(rule(2, "deny", proto="tcp", src=Endpoint(net=net(str(MALLORY))),
                                    dst=db), rule(3, proto="tcp", dst=db)), DOCKER).ruleset
    flows = [flow(MALLORY, 40000), flow(MALLORY, 40001), flow(ALICE, 40002),
             flow(ALICE, 40003, port=22)]  # not a published port: not looked at
    impact = plan_impact(new, DOCKER, backend, _state(backend, old), flows)
    assert (impact.clients, impact.flows) == (2, 3)
    [change] = impact.changes
    assert (change.change, change.source, change.connections, change.before, change.after) == \
        ("refuses", MALLORY, 2, "allow", "deny")
    assert change.binding == DB and change.origin.endswith(":2")
    lines = impact_lines(impact)
    assert "- refuses 203.0.113.7 → 198.51.100.1:5432/tcp (db, 0.0.0.0:5432/tcp): 2 " \
           "connection(s) tracked now; allow now, deny by" in lines[2], lines
    # Undone: the client refused now has no tracked connection, so none to name.
    back = plan_impact(old, DOCKER, backend, _state(backend, new), [flow(ALICE, 40002)])
    assert back.changes == () and back.clients == 1


def test_with_nothing_of_fwsyncs_in_the_kernel_docker_admitted_everyone() -> None:
    new = build_ruleset(policy(), DOCKER).ruleset  # default deny
    impact = plan_impact(new, DOCKER, "nftables", {}, [flow(ALICE, 40000)])
    assert [(c.change, c.before, c.after) for c in impact.changes] == [
        ("refuses", "unjudged", "deny")]
    doc = impact_json(impact)
    assert doc is not None and doc["changes"][0]["source"] == str(ALICE)


def test_the_plan_json_carries_the_impact(tmp_path: object) -> None:
    from fwsync.core.diff import diff
    from fwsync.present import plan_json

    ruleset = build_ruleset(policy(), DOCKER).ruleset
    doc = plan_json(diff("nftables", render_nftables(ruleset), {}), "--backend nftables")
    doc["impact"] = impact_json(plan_impact(ruleset, DOCKER, "nftables", {},
                                            [flow(ALICE, 40000)]))
    assert_valid("plan", doc)
    doc["impact"] = {"unread": "conntrack could not be read (not root)"}
    assert_valid("plan", doc)


def test_a_conntrack_message_is_read_as_the_client_dialled_it() -> None:
    from fwsync.backends.netlink import attr

    def nest(kind: int, *parts: bytes) -> bytes:
        return attr(kind | 0x8000, b"".join(parts))

    ip = nest(1, attr(1, MALLORY.packed), attr(2, HOST.packed))
    proto = nest(2, attr(1, bytes([6])), attr(2, (40000).to_bytes(2, "big")),
                 attr(3, (5432).to_bytes(2, "big")))
    from fwsync.backends.netlink import attrs
    body = nest(1, ip, proto) + attr(3, (0x20 | 0x8).to_bytes(4, "big"))
    got = parse_flow(attrs(body, 0, len(body)))
    assert got == Flow("tcp", MALLORY, 40000, HOST, 5432, True)
    icmp = nest(1, ip, nest(2, attr(1, bytes([1]))))
    assert parse_flow(attrs(icmp, 0, len(icmp))) is None
