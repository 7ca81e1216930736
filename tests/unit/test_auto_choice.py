"""`auto` on a Docker that writes iptables and does not say so (before 28.1) chooses iptables,
and says what that trades where Docker deletes and re-inserts FORWARD's jump to DOCKER-USER at
every network it creates (measured on 20.10 and 26.1, not on 28.5: tests/e2e/
test_jump_window.py)."""

from __future__ import annotations

import pytest

import fwsync.reconcile
from fwsync.core.observed import DockerState
from fwsync.reconcile import choose_backend

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(("version", "window"), [
    ("20.10.24+dfsg1", True), ("26.1.5+dfsg1", True), ("28.0.4", False), ("", False)])
def test_auto_says_what_iptables_trades(monkeypatch: pytest.MonkeyPatch, version: str,
                                        window: bool) -> None:
    monkeypatch.setattr(fwsync.reconcile, "_ipv6_preempted", lambda: False)
    backend, why = choose_backend("auto", DockerState(version=version))
    assert backend.name == "iptables"
    assert ("not judged by fwsync" in why and "--backend nftables" in why) == window, why
