"""Start-up: `fwsync --version` and `fwsync check` on the repository's 3-file rules directory,
whole process as a user runs it, against `python -c pass` measured in the same run.

    .venv/bin/python bench/bench_startup.py [--reps 20] [--json FILE]

The three commands are run in turn, --reps times each (interleaved, so load from elsewhere hits
all three alike), with the interpreter of fwsync's virtualenv. Wall time and the CPU time the
process was charged (user + system, from the kernel's accounting of the child) are reported:
the CPU time moves far less than wall time on a shared machine. Bytecode is compiled first, as
pip and pipx do at install (a checkout run with PYTHONDONTWRITEBYTECODE would otherwise compile
fwsync's modules from source on every start).
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import REPO, Spread, dump_json, fmt_seconds, loadavg, md_table, prepare_python

# The console script pip installs (what a user types), else the module.
_FWSYNC = ([str(Path(sys.executable).parent / "fwsync")]
           if (Path(sys.executable).parent / "fwsync").exists() else [sys.executable, "-m",
                                                                       "fwsync"])
COMMANDS: dict[str, list[str]] = {  # run in the repository: rules/ holds 3 files
    "python -c pass": [sys.executable, "-c", "pass"],
    "fwsync --version": [*_FWSYNC, "--version"],
    "fwsync check rules/": [*_FWSYNC, "check", "rules/"],
}
TARGETS = {"fwsync --version": 0.12, "fwsync check rules/": 0.15}  # seconds, whole process
TARGET_FACTOR = 10  # and at most 10x `python -c pass`


def timed(cmd: list[str], env: dict[str, str]) -> tuple[float, float, int]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    res = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                         text=True, check=False, cwd=REPO)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {res.returncode}: {res.stderr[-400:]}")
    return wall, cpu, res.returncode


def run(reps: int = 20, log: Any = print) -> dict[str, Any]:
    prepare_python()
    env = dict(os.environ)
    for cmd in COMMANDS.values():  # warm the page cache and write any missing bytecode
        timed(cmd, env)
    walls: dict[str, list[float]] = {k: [] for k in COMMANDS}
    cpus: dict[str, list[float]] = {k: [] for k in COMMANDS}
    load = [loadavg()]
    for _ in range(reps):
        for name, cmd in COMMANDS.items():
            wall, cpu, _rc = timed(cmd, env)
            walls[name].append(wall)
            cpus[name].append(cpu)
    load.append(loadavg())
    log(f"startup: {reps} runs each; load average {load[0]} -> {load[1]}")
    return {"reps": reps, "wall": walls, "cpu": cpus, "loadavg": load,
            "commands": {k: " ".join(_short(c) for c in v) for k, v in COMMANDS.items()}}


def _short(word: str) -> str:
    return Path(word).name if word.startswith("/") else word


def verdicts(result: dict[str, Any]) -> dict[str, tuple[Spread, float, bool]]:
    """name → (wall spread, ratio to python -c pass, target met)."""
    base = Spread.of(result["wall"]["python -c pass"])
    assert base is not None
    out = {}
    for name, target in TARGETS.items():
        s = Spread.of(result["wall"][name])
        assert s is not None
        ratio = s.median / base.median
        out[name] = (s, ratio, s.median <= target and ratio <= TARGET_FACTOR)
    return out


def report(result: dict[str, Any]) -> str:
    rows = []
    for name, cmd in result["commands"].items():
        wall, cpu = Spread.of(result["wall"][name]), Spread.of(result["cpu"][name])
        rows.append([name, f"`{cmd}`", fmt_seconds(wall), fmt_seconds(cpu)])
    return (f"**Start-up**, whole process, median (min-max) of {result['reps']} runs each, "
            f"interleaved (load average {result['loadavg'][0]} at the start)\n\n"
            + md_table(["what", "command", "wall", "CPU (user + system)"], rows))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reps", type=int, default=20)
    p.add_argument("--json", help="also write the raw measurements here")
    args = p.parse_args(argv)
    result = run(args.reps)
    dump_json(args.json, result)
    print(report(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
