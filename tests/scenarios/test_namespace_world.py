"""The scenario suite (tests/scenarios/suite.py) in the namespace test bed: every scenario that
needs no whole machine, in order, on one DockerLab with ufw enabled and fwsync's daemon. The same
scenarios run on the Vagrant machines through `make vagrant-test`."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.engines import Engine
from tests.lab import DOCKER_TOOLS, DockerLab, require
from tests.scenarios.lab_world import LabWorld
from tests.scenarios.runner import run_one
from tests.scenarios.suite import SCENARIOS, Scenario
from tests.steps import REPO_RULES

pytestmark = pytest.mark.e2e

LAB_SCENARIOS = [s for s in SCENARIOS if s.needs <= LabWorld.capabilities]


@pytest.fixture(scope="module")
def lab_world(engine: Engine) -> Iterator[LabWorld]:
    require(*DOCKER_TOOLS, engine=engine)
    lab = DockerLab(ipv6=True, engine=engine).start()
    world = LabWorld(lab, REPO_RULES)
    try:
        lab.enable_ufw()
        yield world
    finally:
        world.close()
        lab.cleanup()
        assert lab.leftovers() == [], f"test bed left behind: {lab.leftovers()}"


@pytest.mark.parametrize("scenario", LAB_SCENARIOS, ids=[s.name for s in LAB_SCENARIOS])
def test_scenario(lab_world: LabWorld, scenario: Scenario) -> None:
    result = run_one(lab_world, scenario)
    assert result.verdict == "pass", f"{scenario.name}: {result.verdict}: {result.detail}"
