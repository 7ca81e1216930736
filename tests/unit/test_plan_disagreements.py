"""A plan with nothing to write is in sync only when the kernel's objects, as listed, give the
policy's verdicts (fwsync.verify). The renderers have no known fault left to cause this for
real, so a backend renders another ruleset than it is given, and reads back what it rendered:
the one fault a diff of desired against read-back can never see."""

from __future__ import annotations

from dataclasses import replace

import pytest

from fwsync.backends.iptables_render import render_family
from fwsync.core.diff import Desired, Plan, State
from fwsync.core.enforcing import Enforcement, FamilyReach
from fwsync.core.observed import DockerState, PublishedPort
from fwsync.core.ruleset import Ruleset
from fwsync.present import plan_json, plan_text
from fwsync.reconcile import plan_policy, planned_enforcement
from fwsync.rules.model import Endpoint

from .helpers import policy, ports, rule

pytestmark = pytest.mark.unit

DOCKER = DockerState(ports=(PublishedPort("0.0.0.0", 5432, "tcp", "db", 5432),))
POLICY = policy(rule(5, proto="tcp", dst=Endpoint(ports=ports(22))))


class FaultyRenderer:
    """The iptables backend's objects, rendered for the ruleset with its default flipped to
    allow (a renderer that lost the default), and a kernel that holds exactly those."""

    name = "iptables"
    proxy_catchall = False

    def __init__(self, fault: bool) -> None:
        self.fault = fault
        self.kernel: dict[str, tuple[str, ...]] = {}

    def detect(self) -> str:
        return "a kernel in a dict"

    def render(self, ruleset: Ruleset) -> Desired:
        shown = replace(ruleset, default="allow") if self.fault else ruleset
        state = {**render_family(shown, 4, ("DOCKER-USER",)),
                 **render_family(shown, 6, ("DOCKER-USER",))}
        self.kernel = dict(state)  # as if applied before: the read gives it back
        return Desired(state)

    def read(self, desired: State | None = None) -> State:
        return dict(self.kernel)

    def enforcement(self) -> Enforcement:
        return Enforcement("iptables", (FamilyReach(4, True, "FORWARD rule 1 → DOCKER-USER"),
                                        FamilyReach(6, True, "FORWARD rule 1 → DOCKER-USER")))

    def check(self, plan: Plan) -> None:
        return None


@pytest.mark.parametrize("fault", [False, True])
def test_nothing_to_write_is_in_sync_only_when_the_kernel_gives_the_policys_verdicts(
        fault: bool) -> None:
    planned = plan_policy(POLICY, DOCKER, FaultyRenderer(fault))  # type: ignore[arg-type]
    plan = planned.plan
    assert plan.empty, "the kernel holds every desired object"
    assert plan.in_sync is not fault
    reach = planned_enforcement(planned)
    assert reach.reached and reach.enforcing is not fault
    if not fault:
        assert "No changes." in plan_text(plan, "why")
        return
    assert any("0.0.0.0:5432/tcp db: policy deny, kernel allow" in d
               for d in plan.disagreements), plan.disagreements
    text = plan_text(plan, "why")
    assert "Drift that no change can mend" in text and "kernel allow" in text, text
    assert plan_json(plan, "why")["disagreements"] == list(plan.disagreements)
    assert any("give other verdicts than the policy" in p for p in reach.problems)
