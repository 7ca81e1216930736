"""What the backends would write for a ruleset, without a kernel: the state `read()` would list
after an apply (the renderers' pure entry points), for the verifier's tests."""

from __future__ import annotations

from fwsync.backends import iptables_render, nftables_render
from fwsync.core.diff import State
from fwsync.core.ruleset import Ruleset


def rendered(backend: str, ruleset: Ruleset) -> State:
    """`backend.render(ruleset).state`: iptables with both families, hung off DOCKER-USER as on
    a host where FORWARD jumps there first (the common Docker host)."""
    if backend == "iptables":
        return {**iptables_render.render_family(ruleset, 4, "DOCKER-USER"),
                **iptables_render.render_family(ruleset, 6, "DOCKER-USER")}
    return nftables_render.render(ruleset)
