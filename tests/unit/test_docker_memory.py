"""What Docker last reported, kept on disk for when it cannot be asked (observe/memory.py), and
how the core uses it (core/observed.as_remembered, build's note)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from fwsync.core.build import build_ruleset
from fwsync.core.observed import (
    Bridge,
    DockerNetwork,
    DockerState,
    LinkFacts,
    PublishedPort,
    SwarmNode,
    as_remembered,
)
from fwsync.observe.memory import recall, remember
from fwsync.rules.model import Endpoint

from .helpers import policy, rule

pytestmark = pytest.mark.unit

SEEN = DockerState(
    ports=(PublishedPort("0.0.0.0", 5432, "tcp", "db", 80, "abc", "img", ("bridge",), True),
           PublishedPort("::", 53, "udp", "dns", 53),
           PublishedPort("0.0.0.0", 8080, "tcp", "", 80, service="web", mode="ingress"),
           PublishedPort("203.0.113.130", 80, "tcp", "rweb", 80, networks=("routed",),
                         routed="routed")),
    extra_bridges=(Bridge("lan0", "lan", ("203.0.113.128/28",)),),
    containers=("db", "dns"), firewall_backend="iptables", version="28.5.2",
    swarm=SwarmNode(manager=True, node_addr="198.51.100.1"), services=("web",), seen_at=1e9,
    networks=(DockerNetwork("routed", "br-2ea2169ac7f2", ((4, "routed"), (6, "nat-unprotected")),
                            ("203.0.113.128/28",), ("eth1",)),))


def test_what_was_remembered_is_recalled_as_it_was(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "docker.json"
    assert remember(SEEN, path) is None
    assert recall(path) == SEEN
    assert [p.name for p in path.parent.iterdir()] == ["docker.json"]  # no temporary left


@pytest.mark.parametrize("content", [b"", b"{", b"[]", b'{"format_version": 2}',
                                     b'{"format_version": 1, "seen_at": null}',
                                     b'{"format_version": 1, "seen_at": null, "ports": [[1]],'
                                     b' "extra_bridges": [], "containers": [],'
                                     b' "firewall_backend": null, "version": ""}'])
def test_a_file_that_is_not_fwsyncs_memory_is_no_memory(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "docker.json"
    path.write_bytes(content)
    assert recall(path) is None
    assert recall(tmp_path / "missing.json") is None


def test_an_unwritable_memory_is_an_error_message_not_an_exception(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    error = remember(SEEN, tmp_path / "file" / "docker.json")
    assert error is not None and "cannot keep what Docker reported" in error


def test_unreachable_docker_is_seen_as_it_was_remembered() -> None:
    down = DockerState(error="cannot reach Docker at unix:///x: no such socket")
    assert as_remembered(down, None) == down
    now = as_remembered(down, SEEN)
    assert now.error is None and now.stale == down.error and now.ports == SEEN.ports
    fresh = DockerState(ports=(), seen_at=2e9)
    assert as_remembered(fresh, SEEN) == fresh  # Docker answered: the memory is not used


def test_a_deny_to_container_stays_while_docker_cannot_be_asked() -> None:
    pol = policy(rule(2, "deny", dst=Endpoint(container="db")))
    down = DockerState(error="cannot reach Docker at unix:///x: no such socket")
    forgotten = build_ruleset(pol, down)
    assert forgotten.ruleset.rules == ()  # what used to happen: the deny was gone
    kept = build_ruleset(pol, as_remembered(down, SEEN))
    assert [(r.action, r.match.dport.low) for r in kept.ruleset.rules
            if r.match.dport is not None] == [("deny", 5432)]
    # A remembered bridge is not trusted: only what the host shows now could make it so.
    assert kept.ruleset.bridges == ()
    assert any("the rules use what it reported at 2001-09-09 01:46:40 UTC (4 published ports,"
               " 1 bridges of its own)" in n for n in kept.notes)


@pytest.mark.parametrize(("where", "value"), [
    (("ports", 0, "host_port"), "a lot"),
    (("ports", 0, "proto"), "sctp"),
    (("ports", 2, "mode"), "mesh"),
    (("networks", 0, "gateway_modes"), [[5, "routed"]]),
    (("swarm", "manager"), "maybe"),
    (("containers",), "db"),
])
def test_a_memory_with_a_value_of_the_wrong_type_is_no_memory(
        tmp_path: Path, where: tuple[str | int, ...], value: object) -> None:
    """Every field is checked against DockerState's own types (pydantic): a file edited by hand
    is no memory (fwsync then knows nothing of Docker and refuses to narrow a deny), not a
    memory of something else. (The converter written by hand before took sctp as tcp, "maybe"
    as a manager, a string of container names as its letters, and dropped a gateway mode it
    did not know.)"""
    path = tmp_path / "docker.json"
    assert remember(SEEN, path) is None
    data = json.loads(path.read_text())
    parent = data
    for key in where[:-1]:
        parent = parent[key]
    parent[where[-1]] = value
    path.write_text(json.dumps(data))
    assert recall(path) is None


def test_a_key_the_memory_does_not_write_is_not_taken_from_it(tmp_path: Path) -> None:
    path = tmp_path / "docker.json"
    assert remember(SEEN, path) is None
    data = json.loads(path.read_text())
    data["error"] = "planted"
    data["stale"] = "planted"
    path.write_text(json.dumps(data))
    assert recall(path) == SEEN


# What Docker last reported may be out of date (a container removed since, its port taken by
# another): from it, only what narrows access is taken.
DOWN = DockerState(error="cannot reach Docker at unix:///x: no such socket")


def _by_port(built: object) -> list[tuple[str, int]]:
    rules = built.ruleset.rules  # type: ignore[attr-defined]
    return sorted({(r.action, r.match.dport.low) for r in rules if r.match.dport is not None})


def test_an_allow_to_a_container_is_not_taken_from_memory() -> None:
    pol = policy(rule(2, "allow", dst=Endpoint(container="db")),
                 rule(3, "allow", dst=Endpoint(service="web")),
                 rule(4, "allow", dst=Endpoint(network="routed")))
    fresh = build_ruleset(pol, SEEN)  # Docker answers: the allows resolve
    assert ("allow", 5432) in _by_port(fresh) and ("allow", 8080) in _by_port(fresh)
    stale = build_ruleset(pol, as_remembered(DOWN, SEEN))
    assert stale.ruleset.rules == ()  # 5432 may be another container's now: default decides
    assert sum("an `allow` is not taken from what it last reported" in n
               for n in stale.notes) == 3


@pytest.mark.parametrize(("action", "kernel"), [("deny", "deny"), ("reject", "reject"),
                                                ("limit", "reject")])
def test_what_narrows_is_taken_from_memory(action: str, kernel: str) -> None:
    pol = policy(rule(2, action, dst=Endpoint(container="db")), default="allow")
    stale = build_ruleset(pol, as_remembered(DOWN, SEEN))
    assert _by_port(stale) == [(kernel, 5432)]
    # A limit admits connections below its rate; to a port that may be another container's
    # now, only its refusing half narrows.
    assert any("rejects every new connection" in n for n in stale.notes) == (action == "limit")


def test_direct_routing_stays_dropped_when_docker_is_known_from_memory() -> None:
    from fwsync.rules.model import NetworkScope

    from .helpers import origin

    pol = policy(direct_routing_off=(NetworkScope("routed", origin(3)),))
    # The host shows the network's bridge as Docker's (core/bridges.py): only memory says no.
    links = (LinkFacts("br-2ea2169ac7f2", "bridge", addresses=("203.0.113.129/28",),
                       routes=("203.0.113.128/28",)),)
    # the routed network and the exception
    assert build_ruleset(pol, replace(SEEN, links=links)).ruleset.direct_ok
    remembered = as_remembered(replace(DOWN, links=links), SEEN)
    assert build_ruleset(pol, remembered).ruleset.direct_ok == ()


def test_a_narrowing_container_rule_cannot_be_resolved_without_any_memory() -> None:
    from fwsync.core.build import unresolvable

    deny = rule(2, "deny", dst=Endpoint(container="db"))
    limit = rule(3, "limit", dst=Endpoint(network="lan"))
    allow = rule(4, "allow", dst=Endpoint(container="web"))
    pol = policy(deny, limit, allow)
    assert unresolvable(pol, DOWN) == (deny, limit)  # the allow only matches nothing
    never = as_remembered(DOWN, DockerState())  # a memory made when Docker never answered
    assert unresolvable(pol, never) == (deny, limit)
    assert unresolvable(pol, as_remembered(DOWN, SEEN)) == ()
    assert unresolvable(pol, SEEN) == ()


def test_a_deny_for_a_container_the_memory_lacks_says_it_may_run_now() -> None:
    pol = policy(rule(2, "deny", dst=Endpoint(container="cache")))
    notes = build_ruleset(pol, as_remembered(DOWN, SEEN)).notes
    assert any("no running container matches 'cache' in what Docker last reported (it may run "
               "now): the rule matches nothing" in n for n in notes), notes
