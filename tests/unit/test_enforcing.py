"""fwsync.core.enforcing: the one answer to "are fwsync's rules reached first?"."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from fwsync.backends.nftables import NftablesBackend
from fwsync.backends.nftables_render import table_objects
from fwsync.core.build import build_ruleset
from fwsync.core.enforcing import Enforcement, NftBaseChain, iptables_reach, nftables_reach
from fwsync.core.observed import DockerNetwork, DockerState, PublishedPort

from .helpers import policy, rule

pytestmark = pytest.mark.unit

OWN = {"FWSYNC-FORWARD": ["-A FWSYNC-FORWARD -o docker0 -j FWSYNC-INBOUND"],
       "FWSYNC-INBOUND": ["-A FWSYNC-INBOUND -j DROP"],
       "FWSYNC-INPUT": [], "INPUT": ["-A INPUT -j FWSYNC-INPUT"]}
INPUT_PATH = "; INPUT rule 1 → FWSYNC-INPUT"


def reach(forward: list[str], docker_user: list[str] | None = None) -> tuple[bool, str]:
    chains = {**OWN, "FORWARD": forward}
    if docker_user is not None:
        chains["DOCKER-USER"] = docker_user
    r = iptables_reach(4, chains)
    return r.reached, r.why


def test_fwsync_first_in_docker_user_behind_forwards_jump_is_reached() -> None:
    ok, why = reach(["-A FORWARD -j DOCKER-USER", "-A FORWARD -o docker0 -j ACCEPT"],
                    ["-A DOCKER-USER -j FWSYNC-FORWARD", "-A DOCKER-USER -j RETURN"])
    assert ok and why == "FORWARD rule 1 → DOCKER-USER rule 1 → FWSYNC-FORWARD" + INPUT_PATH


@pytest.mark.parametrize(("forward", "docker_user", "first"), [
    (["-A FORWARD -p tcp -j ACCEPT", "-A FORWARD -j DOCKER-USER"],
     ["-A DOCKER-USER -j FWSYNC-FORWARD"], "-A FORWARD -p tcp -j ACCEPT"),
    (["-A FORWARD -j DOCKER-USER"], ["-A DOCKER-USER -s 198.51.100.7/32 -j RETURN",
                                     "-A DOCKER-USER -j FWSYNC-FORWARD"],
     "-A DOCKER-USER -s 198.51.100.7/32 -j RETURN"),
    (["-A FORWARD -j ufw-before-forward", "-A FORWARD -j DOCKER-USER"],
     ["-A DOCKER-USER -j FWSYNC-FORWARD"], "-A FORWARD -j ufw-before-forward"),
    (["-A FORWARD -i eth0 -j DOCKER-USER", "-A FORWARD -j ACCEPT"],
     ["-A DOCKER-USER -j FWSYNC-FORWARD"], "-A FORWARD -i eth0 -j DOCKER-USER"),
])
def test_whatever_may_accept_before_fwsyncs_jump_is_a_bypass(
        forward: list[str], docker_user: list[str], first: str) -> None:
    ok, why = reach(forward, docker_user)
    assert not ok and why.startswith(f"`{first}`")


def test_rules_that_cannot_accept_are_passed_and_an_empty_docker_user_returns() -> None:
    ok, why = reach(["-A FORWARD -s 192.0.2.1/32 -j DROP", "-A FORWARD -j LOG",
                     "-A FORWARD -j DOCKER-USER", "-A FORWARD -j FWSYNC-FORWARD"], [])
    assert ok and why == "FORWARD rule 4 → FWSYNC-FORWARD" + INPUT_PATH


def test_no_path_or_no_chains_is_not_reached() -> None:
    assert reach(["-A FORWARD -j DOCKER-USER"], []) == (
        False, "nothing in FORWARD leads to fwsync's chains")
    assert not iptables_reach(6, {"FORWARD": ["-A FORWARD -j FWSYNC-FORWARD"]}).reached
    emptied = {**OWN, "FWSYNC-INBOUND": [], "FORWARD": ["-A FORWARD -j FWSYNC-FORWARD"]}
    assert not iptables_reach(4, emptied).reached


@pytest.mark.parametrize(("input_chain", "why"), [
    (["-A INPUT -i lo -j ACCEPT", "-A INPUT -j FWSYNC-INPUT"],
     "`-A INPUT -i lo -j ACCEPT` (INPUT rule 1) comes before fwsync's jump and may accept"),
    (["-A INPUT -j ufw-before-input"],
     "`-A INPUT -j ufw-before-input` (INPUT rule 1) comes before fwsync's jump and may accept"),
    ([], "nothing in INPUT leads to fwsync's INPUT-path chain"),
])
def test_the_input_path_must_be_reached_too(input_chain: list[str], why: str) -> None:
    """docker-proxy's ports (IPv6 to a container without IPv6) arrive on INPUT: an ACCEPT or
    another chain's jump before fwsync's lets them past fwsync's rules."""
    chains = {**OWN, "FORWARD": ["-A FORWARD -j FWSYNC-FORWARD"], "INPUT": input_chain}
    assert (iptables_reach(4, chains).reached, iptables_reach(4, chains).why) == (False, why)
    passive = {**chains, "INPUT": ["-A INPUT -p tcp --dport 23 -j DROP", "-A INPUT -j FWSYNC-INPUT",
                                   "-A INPUT -j ACCEPT"]}
    assert iptables_reach(4, passive).reached
    no_chain = {k: v for k, v in chains.items() if k != "FWSYNC-INPUT"}
    assert "INPUT-path chain is missing" in iptables_reach(4, no_chain).why


@pytest.mark.parametrize(("chain", "reached"), [
    (NftBaseChain("forward", -1, "accept", True, True), True),
    (NftBaseChain("forward", 0, "accept", True, True), False),
    (NftBaseChain("input", -1, "accept", True, True), False),
    (NftBaseChain("forward", -1, "accept", False, True), False),
    (NftBaseChain("forward", -1, "accept", True, False), False),
    (NftBaseChain(None, None, None, True, True), False),
    (None, False),
])
def test_nftables_base_chain_must_hook_forward_before_filter_and_lead_to_the_rules(
        chain: NftBaseChain | None, reached: bool) -> None:
    families = nftables_reach(chain, INPUT_HOOK)
    assert [f.family for f in families] == [4, 6]
    assert all(f.reached == reached for f in families)


INPUT_HOOK = NftBaseChain("input", -1, "accept", True, True)


@pytest.mark.parametrize("input_chain", [None, NftBaseChain("input", 0, "accept", True, True),
                                         NftBaseChain("forward", -1, "accept", True, True),
                                         NftBaseChain("input", -1, "drop", True, True),
                                         NftBaseChain("input", -1, "accept", False, True,
                                                      holds_rules=False)])
def test_nftables_input_base_chain_must_run_before_ufw(input_chain: NftBaseChain | None) -> None:
    families = nftables_reach(NftBaseChain("forward", -1, "accept", True, True), input_chain)
    assert not any(f.reached for f in families)
    assert "input base chain" in families[0].why


def test_nftables_input_chain_without_a_docker_proxy_port_is_reached() -> None:
    """With no port docker-proxy serves, fwsync's input chain holds only its `return`s."""
    quiet_input = NftBaseChain("input", -1, "accept", False, True)
    assert all(f.reached for f in nftables_reach(NftBaseChain("forward", -1, "accept", True, True),
                                                 quiet_input))


# fwsync's table as `nft -j list` gives it back (what NftablesBackend.enforcement reads), with
# a docker-proxy port on the input path (IPv6 to a container without IPv6).
PROXIED = DockerState(ports=(
    PublishedPort("0.0.0.0", 8080, "tcp", "web", 80, networks=("bridge",), container_ipv6=False),
    PublishedPort("::", 8080, "tcp", "web", 80, networks=("bridge",), container_ipv6=False),
), networks=(DockerNetwork("bridge", "docker0", subnets=("172.17.0.0/16",)),))


def _listed(edit: Callable[[list[dict[str, Any]]], list[dict[str, Any]]]) -> Enforcement:
    objects = [o for o in table_objects(build_ruleset(policy(rule(2)), PROXIED).ruleset)
               if "table" not in o]
    backend = NftablesBackend()
    listing = edit(copy.deepcopy(objects))
    backend._list_terse = lambda: listing  # type: ignore[method-assign]
    return backend.enforcement()


def _chain(name: str, **fields: object) -> Callable[[list[dict[str, Any]]], list[dict[str, Any]]]:
    def edit(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for o in objects:
            if o.get("chain", {}).get("name") == name:
                o["chain"].update(fields)
        return objects
    return edit


def _flushed(name: str) -> Callable[[list[dict[str, Any]]], list[dict[str, Any]]]:
    return lambda objects: [o for o in objects if o.get("rule", {}).get("chain") != name]


def test_fwsyncs_table_as_rendered_is_enforcing() -> None:
    reach = _listed(lambda objects: objects)
    assert reach.enforcing, reach.summary()


@pytest.mark.parametrize(("edit", "why"), [
    (_flushed("input"), "input base chain"),
    (_chain("input", prio=0), "input base chain"),
    (_chain("input", hook="output"), "input base chain"),
    (_chain("input", policy="drop"), "policy drop"),
    (_chain("forward", policy="drop"), "policy drop"),
    (lambda objects: [o for o in objects if o.get("chain", {}).get("name") != "input"],
     "input base chain"),
])
def test_the_nftables_input_chain_is_read_from_the_kernel(
        edit: Callable[[list[dict[str, Any]]], list[dict[str, Any]]], why: str) -> None:
    """The input chain's fields come from the kernel's listing, not from fwsync's constants: a
    flushed input chain sends nothing to `inbound` (docker-proxy's ports are not judged), one
    re-hooked or at the filter priority runs after ufw's INPUT, and a base chain whose policy
    is not accept drops what fwsync's rules let on."""
    reach = _listed(edit)
    assert not reach.enforcing and why in reach.summary(), reach.summary()


@pytest.mark.parametrize("forward", [
    ["-A FORWARD -j DOCKER-USER", "-A FORWARD -j ACCEPT"],
    ["-A FORWARD -s 192.0.2.1/32 -j DROP", "-A FORWARD -j LOG", "-A FORWARD -j DOCKER-USER"],
    ["-A FORWARD -j ufw-before-forward", "-A FORWARD -j DOCKER-USER"],
    ["-A FORWARD -j FWSYNC-FORWARD", "-A FORWARD -j DOCKER-USER"],
    ["-A FORWARD -j ACCEPT"],
])
def test_the_iptables_backend_jumps_from_forward_whatever_forward_holds(
        forward: list[str]) -> None:
    """FamilyState.entries: FORWARD always, and DOCKER-USER too where Docker made it. Before,
    DOCKER-USER alone while it was reached: a connection that arrived while Docker 20.10 had
    deleted FORWARD's jump to it (at every network it creates) passed no rule of fwsync's."""
    from fwsync.backends.iptables import FamilyState

    state = FamilyState({**OWN, "FORWARD": forward, "DOCKER-USER": []})
    assert state.entries == ("FORWARD", "DOCKER-USER")
    assert FamilyState({**OWN, "FORWARD": forward}).entries == ("FORWARD",)


def test_dockers_jump_put_back_above_fwsyncs_is_not_drift() -> None:
    """Docker before 28 inserts its jump to DOCKER-USER on top of FORWARD again at every network
    it creates: fwsync's FORWARD jump, second then, still counts as first (no repair at each
    `docker network create`). Anything else above it does not."""
    from fwsync.backends.iptables import FamilyState

    def jumps(forward: list[str]) -> tuple[str, ...]:
        return FamilyState({**OWN, "FORWARD": forward,
                            "DOCKER-USER": ["-A DOCKER-USER -j FWSYNC-FORWARD"]}).jump_lines

    ours = "-A FORWARD -j FWSYNC-FORWARD"
    want = ("FORWARD rule 1 -j FWSYNC-FORWARD", "DOCKER-USER rule 1 -j FWSYNC-FORWARD",
            "INPUT rule 1 -j FWSYNC-INPUT")
    assert jumps([ours, "-A FORWARD -j DOCKER-USER"]) == want
    assert jumps(["-A FORWARD -j DOCKER-USER", ours]) == want
    assert jumps(["-A FORWARD -o docker0 -j DOCKER", "-A FORWARD -j DOCKER-USER", ours])[0] \
        == "FORWARD rule 2 -j FWSYNC-FORWARD"


def test_a_conditional_jump_to_fwsyncs_own_chain_is_judged_by_fwsync_not_a_bypass() -> None:
    """Someone's `-s NET -j FWSYNC-INPUT` (or `-j FWSYNC-FORWARD`) sends packets to fwsync's
    own judgement: the walk goes on past it to fwsync's own jump, which alone counts as it."""
    chains = {**OWN, "FORWARD": ["-A FORWARD -s 203.0.113.0/24 -j FWSYNC-FORWARD",
                                 "-A FORWARD -j FWSYNC-FORWARD"],
              "INPUT": ["-A INPUT -s 203.0.113.0/24 -j FWSYNC-INPUT", "-A INPUT -j FWSYNC-INPUT"]}
    r = iptables_reach(4, chains)
    assert r.reached, r.why
    assert r.why == "FORWARD rule 2 → FWSYNC-FORWARD; INPUT rule 2 → FWSYNC-INPUT"
    alone = {**chains, "INPUT": ["-A INPUT -s 203.0.113.0/24 -j FWSYNC-INPUT"]}
    assert not iptables_reach(4, alone).reached, "only fwsync's own jump reaches it for all"
    goto = {**chains, "INPUT": ["-A INPUT -s 203.0.113.0/24 -g FWSYNC-INPUT",
                                "-A INPUT -j FWSYNC-INPUT"]}
    assert not iptables_reach(4, goto).reached, "a goto ends INPUT when fwsync's chain returns"


def test_enforcing_per_family_is_the_same_predicate() -> None:
    """fwsync_enforcing{family}: Enforcement.enforcing_in, of which `enforcing` is the all."""
    from fwsync.core.enforcing import FamilyReach, nothing_held

    both = Enforcement("iptables", (FamilyReach(4, True, "ok"), FamilyReach(6, True, "ok")))
    assert both.enforcing and both.enforcing_in(4) and both.enforcing_in(6)
    v6_bypassed = Enforcement("iptables", (FamilyReach(4, True, "ok"),
                                           FamilyReach(6, False, "ACCEPT first")))
    assert v6_bypassed.enforcing_in(4) and not v6_bypassed.enforcing_in(6)
    assert not v6_bypassed.enforcing
    disagreeing = Enforcement("iptables", both.families, disagreements=("x: policy deny, "
                                                                          "kernel allow",))
    assert not disagreeing.enforcing_in(4) and not disagreeing.enforcing_in(6)
    held_nothing = nothing_held("nftables")
    assert not held_nothing.enforcing_in(4) and not held_nothing.enforcing_in(6)


def test_enforcing_is_still_reached_and_agreeing() -> None:
    """Every combination of up to three family answers: `enforcing`, now the all of
    enforcing_in, says what it said before it."""
    import itertools

    from fwsync.core.enforcing import FamilyReach

    answers = [FamilyReach(f, r, "") for f in (4, 6) for r in (True, False)]
    for n in range(4):
        for families in itertools.product(answers, repeat=n):
            for held, disagreements in itertools.product((True, False), ((), ("x",))):
                e = Enforcement("iptables", families, held=held, disagreements=disagreements)
                assert e.enforcing == (e.reached and not e.disagreements), e
