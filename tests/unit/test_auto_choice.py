"""`auto` on a Docker that writes iptables and does not say so (before 28.1) chooses iptables,
and trades nothing for it: Docker's jump window (20.10 and 26.1 delete and re-insert FORWARD's
jump to DOCKER-USER at every network they create) is closed by the iptables backend's own
FORWARD jump (tests/kernel/test_jump_guard.py, tests/e2e/test_jump_window.py). Before, the
reason said what was traded and pointed to --backend nftables."""

from __future__ import annotations

import pytest

import fwsync.reconcile
from fwsync.core.observed import DockerState
from fwsync.reconcile import choose_backend

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("version", ["20.10.24+dfsg1", "26.1.5+dfsg1", "28.0.4", ""])
def test_auto_chooses_iptables_where_docker_writes_it(monkeypatch: pytest.MonkeyPatch,
                                                      version: str) -> None:
    monkeypatch.setattr(fwsync.reconcile, "_ipv6_preempted", lambda: False)
    backend, why = choose_backend("auto", DockerState(version=version))
    assert backend.name == "iptables"
    assert why == f"auto: Docker {version} writes iptables (it reports no firewall backend)" \
        .replace("  ", " "), why
