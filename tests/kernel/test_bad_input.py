"""Bad input to the commands that read or write the firewall: one line on stderr, exit 1, and
the kernel exactly as it was. Inside a KernelLab's namespace, since a check that failed would
let the command run (tests/unit/test_cli_bad_input.py has the ones that never touch it)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.lab import KernelLab, ruleset_snapshot, run_fwsync
from tests.steps import fwsync_ok, write_rules

pytestmark = pytest.mark.kernel

BAD = {
    # FWSYNC_LOCK_TIMEOUT was read at import: a traceback from every command taking the lock
    "lock timeout that is no number": (["apply"], {"FWSYNC_LOCK_TIMEOUT": "abc"},
                                       "FWSYNC_LOCK_TIMEOUT='abc' is not a number of seconds"),
    "lock timeout nan, daemon": (["daemon"], {"FWSYNC_LOCK_TIMEOUT": "nan"},
                                 "FWSYNC_LOCK_TIMEOUT='nan'"),
    # an unwritable lock path was a FileNotFoundError traceback
    "a lock file that cannot be made": (["apply"], {"FWSYNC_LOCK_FILE": "/proc/no/fwsync.lock"},
                                        "cannot open fwsync's lock file /proc/no/fwsync.lock"),
    "a backend that does not exist": (["plan"], {"FWSYNC_BACKEND": "bogus"},
                                      "'bogus' is not one of 'auto', 'iptables', 'nftables'"),
    "an iptables variant that does not exist": (["apply", "--backend", "iptables"],
                                                {"FWSYNC_IPTABLES": "bogus"},
                                                "iptables-bogus-save is not installed"),
    # nan and inf passed typer's min=0.1: drift was never checked again
    "a drift interval that is no number": (["daemon", "--drift-interval", "nan"], {},
                                           "--drift-interval nan"),
    "an endless drift interval": (["daemon", "--drift-interval", "inf"], {},
                                  "--drift-interval inf"),
    "a drift interval from the environment": (["daemon"], {"FWSYNC_DRIFT_INTERVAL": "x"},
                                              "'x' is not a valid float"),
    "a metrics address that is no address": (["daemon", "--metrics-address", "[::1"], {},
                                             "--metrics-address"),
    "an endless doctor sample": (["doctor", "--sample", "inf"], {}, "--sample inf"),
}


@pytest.mark.parametrize("backend", ["iptables", "nftables"])
def test_bad_input_to_kernel_commands_is_one_line_and_changes_nothing(
        make_kernel_lab, tmp_path: Path, backend: str) -> None:
    lab: KernelLab = make_kernel_lab("nft")
    rules = write_rules(tmp_path, "deny from 203.0.113.0/25\n")
    fwsync_ok(lab, "apply", rules=rules, env={"FWSYNC_BACKEND": backend})
    before = ruleset_snapshot(lab)
    failures = {}
    for name, (args, env, expected) in BAD.items():
        res = run_fwsync(lab, *args, rules=rules, env={"FWSYNC_BACKEND": backend, **env},
                         timeout=60)
        lines = res.stderr.strip().splitlines()
        if res.returncode != 1 or len(lines) != 1 or expected not in lines[0] \
                or "Traceback" in res.stdout + res.stderr:
            failures[name] = f"exit {res.returncode}: {res.stderr[-400:]}"
    assert failures == {}, "\n".join(f"{k}: {v}" for k, v in failures.items())
    assert ruleset_snapshot(lab) == before


def test_an_unparsable_docker_host_is_an_unreachable_docker(
        kernel_lab: KernelLab, tmp_path: Path) -> None:
    """DOCKER_HOST=tcp://[::1 was a ValueError traceback out of the Docker SDK."""
    res = run_fwsync(kernel_lab, "plan", rules=write_rules(tmp_path, "allow 80/tcp\n"),
                     env={"DOCKER_HOST": "tcp://[::1"})
    assert res.returncode == 0, res.stderr
    assert "cannot reach Docker at tcp://[::1" in res.stdout
    assert "Traceback" not in res.stderr
