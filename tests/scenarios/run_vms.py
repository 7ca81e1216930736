"""The scenario suite on the Vagrant machines: `python -m tests.scenarios.run_vms SSH_CONFIG`
(SSH_CONFIG from `vagrant ssh-config`; run where those addresses are reachable). Prints one line
per scenario as it goes, then the pass/fail table; exit 1 unless every scenario passed."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tests.scenarios.runner import run_all, table
from tests.scenarios.vm_world import VmWorld


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="run_vms", description=__doc__)
    ap.add_argument("ssh_config", type=Path)
    ap.add_argument("--only", action="append", help="run only this scenario (repeatable)")
    ap.add_argument("--boot-timeout", type=float, default=900.0)
    args = ap.parse_args(argv)
    world = VmWorld(args.ssh_config.resolve(), boot_timeout=args.boot_timeout)
    try:
        world.setup()
        results = run_all(world, set(args.only) if args.only else None)
    finally:
        world.close()
    print("\n" + table(results))
    return 0 if results and all(r.verdict == "pass" for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
