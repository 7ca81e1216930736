"""fwsync.core.enforcing: the one answer to "are fwsync's rules reached first?"."""

from __future__ import annotations

import pytest

from fwsync.core.enforcing import NftBaseChain, iptables_reach, nftables_reach

pytestmark = pytest.mark.unit

OWN = {"FWSYNC-FORWARD": ["-A FWSYNC-FORWARD -o docker0 -j FWSYNC-INBOUND"],
       "FWSYNC-INBOUND": ["-A FWSYNC-INBOUND -j DROP"]}


def reach(forward: list[str], docker_user: list[str] | None = None) -> tuple[bool, str]:
    chains = {**OWN, "FORWARD": forward}
    if docker_user is not None:
        chains["DOCKER-USER"] = docker_user
    r = iptables_reach(4, chains)
    return r.reached, r.why


def test_fwsync_first_in_docker_user_behind_forwards_jump_is_reached() -> None:
    ok, why = reach(["-A FORWARD -j DOCKER-USER", "-A FORWARD -o docker0 -j ACCEPT"],
                    ["-A DOCKER-USER -j FWSYNC-FORWARD", "-A DOCKER-USER -j RETURN"])
    assert ok and why == "FORWARD rule 1 → DOCKER-USER rule 1 → FWSYNC-FORWARD"


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
    assert ok and why == "FORWARD rule 4 → FWSYNC-FORWARD"


def test_no_path_or_no_chains_is_not_reached() -> None:
    assert reach(["-A FORWARD -j DOCKER-USER"], []) == (
        False, "nothing in FORWARD leads to fwsync's chains")
    assert not iptables_reach(6, {"FORWARD": ["-A FORWARD -j FWSYNC-FORWARD"]}).reached
    emptied = {**OWN, "FWSYNC-INBOUND": [], "FORWARD": ["-A FORWARD -j FWSYNC-FORWARD"]}
    assert not iptables_reach(4, emptied).reached


@pytest.mark.parametrize(("chain", "reached"), [
    (NftBaseChain("forward", -1, True, True), True),
    (NftBaseChain("forward", 0, True, True), False),
    (NftBaseChain("input", -1, True, True), False),
    (NftBaseChain("forward", -1, False, True), False),
    (NftBaseChain("forward", -1, True, False), False),
    (NftBaseChain(None, None, True, True), False),
    (None, False),
])
def test_nftables_base_chain_must_hook_forward_before_filter_and_lead_to_the_rules(
        chain: NftBaseChain | None, reached: bool) -> None:
    families = nftables_reach(chain)
    assert [f.family for f in families] == [4, 6]
    assert all(f.reached == reached for f in families)
