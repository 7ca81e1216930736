"""`allow ... to container web` names a container, not a host port: when web is removed and
another container takes its port (no daemon, no second apply), the allow must not admit anyone
to the newcomer. The rule also matches web's own address after Docker's DNAT, so the change
fails closed until the next apply. Real dockerd (20.10, 26.1, 28.5), both backends.

Before (main at 5117a09): the office, allowed to web only, connected to the newcomer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.lab import DockerLab, run_fwsync
from tests.steps import fwsync_ok, write_rules

pytestmark = [pytest.mark.e2e]

RULES = """\
default deny incoming
define office 198.51.100.0/25, 2001:db8:1::/64
allow from $office to container web port 8080 proto tcp
"""


def test_an_allow_to_a_container_does_not_follow_its_port_to_another(
        make_docker_lab: Any, tmp_path: Path, backend: str) -> None:
    lab: DockerLab = make_docker_lab()
    lab.run_web("web", {"80/tcp": 8080})
    rules = write_rules(tmp_path, RULES)
    fwsync_ok(lab, "apply", rules=rules)
    # The kernel lists the new matches back as they were rendered: nothing to change.
    plan = run_fwsync(lab, "plan", "--detailed-exitcode", rules=rules)
    assert plan.returncode == 0, plan.stdout + plan.stderr
    assert [lab.trusted.probe(8080), lab.attacker.probe(8080)] == ["open", "filtered"]
    lab.client.containers.get("web").remove(force=True)
    lab.run_web("spacer")  # takes web's address if Docker hands it out again at once
    lab.run_web("evil", {"80/tcp": 8080})
    assert lab.trusted.probe(8080) == "filtered", "the allow was web's, not evil's"
    fwsync_ok(lab, "apply", rules=rules)
    assert lab.trusted.probe(8080) == "filtered", "no rule names evil: the default"
