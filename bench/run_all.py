"""The whole benchmark of issue #3 in one run (`make bench`): apply time, then packet-path cost,
both backends side by side, each in namespaces of its own that are removed at the end.

    .venv/bin/python bench/run_all.py [--json FILE]

Prints the machine, the results as markdown tables (docs/benchmarks.md is made from them) and
the total time. Exit 1 if a measurement failed (a backend that is not built yet is "n/a", not a
failure). About 8 minutes on a 2-core machine.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_apply
import bench_packet
from benchlib import dump_json, interruptible, machine_info

from tests.lab import kernel_tools, missing


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", help="also write the raw measurements here")
    p.add_argument("--skip-apply", action="store_true")
    p.add_argument("--skip-packet", action="store_true")
    args = p.parse_args(argv)
    problems = missing(*kernel_tools("nft"))
    if problems:
        print("bench: cannot run here: " + "; ".join(problems), file=sys.stderr)
        return 2
    t0 = time.monotonic()
    machine = machine_info()
    print("Machine: " + ", ".join(f"{k} {v}" for k, v in machine.items()), flush=True)
    data: dict[str, object] = {"machine": machine}
    sections: list[str] = []
    failed = False
    if not args.skip_apply:
        a_args = bench_apply.parse_args([])
        applied = bench_apply.run(a_args.sizes, a_args.linear_sizes, a_args.reps,
                                  a_args.backends, a_args.slow, a_args.big_reps)
        data["apply"] = applied
        sections.append(bench_apply.report(applied))
        failed |= bool(applied["cleanup_problems"]) or any(
            c["status"] == "error" for c in applied["cells"])
    if not args.skip_packet:
        p_args = bench_packet.parse_args([])
        packets = bench_packet.run(p_args.sizes, p_args.linear_sizes, p_args.backends,
                                   p_args)
        data["packet"] = packets
        sections.append(bench_packet.report(packets))
        failed |= bool(packets["cleanup_problems"]) or any(
            c["status"] == "error" for c in packets["configs"])
    total = time.monotonic() - t0
    data["seconds"] = total
    dump_json(args.json, data)
    print()
    print("\n\n".join(sections))
    print(f"\nTotal: {total / 60:.1f} min (`{' '.join([Path(sys.executable).name, *sys.argv])}`"
          f", {machine['date']})")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(interruptible(main))
