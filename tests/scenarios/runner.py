"""Run the applicable scenarios in order on one world and keep a result per scenario."""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass
from typing import Literal

from tests.scenarios.suite import Scenario, applicable
from tests.scenarios.world import ScenarioFailed, World, WorldError

Verdict = Literal["pass", "FAIL", "ERROR"]


@dataclass(frozen=True)
class Result:
    scenario: Scenario
    verdict: Verdict
    seconds: float
    detail: str = ""


def run_one(world: World, scenario: Scenario) -> Result:
    t0 = time.monotonic()
    try:
        world.reset(fwsync=scenario.fwsync)
        note = scenario.run(world)
    except ScenarioFailed as exc:
        return Result(scenario, "FAIL", time.monotonic() - t0, str(exc))
    except WorldError as exc:
        return Result(scenario, "ERROR", time.monotonic() - t0, str(exc))
    except Exception:  # a bug in a world adapter: report it and go on with the next scenario
        return Result(scenario, "ERROR", time.monotonic() - t0,
                      traceback.format_exc(limit=3).strip().splitlines()[-1])
    return Result(scenario, "pass", time.monotonic() - t0, note or "")


def run_all(world: World, only: set[str] | None = None) -> list[Result]:
    results = []
    for scenario in applicable(world):
        if only and scenario.name not in only:
            continue
        print(f"--- {scenario.name}: {scenario.summary}", flush=True)
        result = run_one(world, scenario)
        print(f"    {result.verdict} in {result.seconds:.0f} s"
              + (f": {result.detail}" if result.detail else ""), flush=True)
        results.append(result)
    return results


def table(results: list[Result]) -> str:
    width = max([len(r.scenario.name) for r in results] + [8])
    rows = [f"{'scenario':<{width}}  result  seconds  what", "-" * (width + 50)]
    for r in results:
        rows.append(f"{r.scenario.name:<{width}}  {r.verdict:<6}  {r.seconds:7.0f}  "
                    f"{r.scenario.summary}")
        if r.detail:
            rows.append(f"{'':<{width}}  └ {r.detail}")
    passed = sum(r.verdict == "pass" for r in results)
    rows.append(f"{passed} passed, {len(results) - passed} failed")
    return "\n".join(rows)
