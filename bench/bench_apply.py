"""Apply time: `fwsync apply` wall time for an allowlist of N entries, both backends side by side.

    .venv/bin/python bench/bench_apply.py [--reps 5] [--sizes 10,1k,10k,100k]
                                          [--linear-sizes 10,1k,10k] [--json FILE]

Each backend gets its own Docker-like host (tests/lab.py's KernelLab, in network namespaces, no
dockerd), so neither sees the other's objects. For every size N, repetition and backend:

  1. `fwsync remove` (not timed), so the next apply starts from a host without fwsync;
  2. first apply: rules = `define big file big.txt` + `allow from $big to any port 5432 proto tcp`;
  3. re-apply: the same rules with one entry of big.txt replaced;
  4. `fwsync plan --detailed-exitcode` must answer "nothing to do" (the kernel holds exactly
     what was asked for), timed too, and so is `fwsync status` (it reads the kernel, checks that
     it enforces and answers for every published port).

The "linear" variant writes the same N entries as N rules `allow from ADDR to any port 5432`
(what sets avoid). Times are the whole CLI as a user runs it: interpreter start-up, reading the
rules, asking Docker (a socket that does not exist: fails at once), reading the kernel, writing,
reading back. Backends alternate in each repetition so drift on a shared machine hits both.
Sizes of 100k and more get --big-reps repetitions (3) instead of --reps (5), to keep the whole
benchmark under 10 minutes; a cell whose apply takes longer than --slow seconds is measured once
and not re-applied.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import (
    BACKENDS,
    Spread,
    Timed,
    Variant,
    allowlist,
    children_cpu,
    close_all,
    dump_json,
    fmt_seconds,
    fwsync,
    interruptible,
    leftover_namespaces,
    loadavg,
    md_table,
    new_lab,
    parse_sizes,
    prepare_python,
    size_label,
    with_one_changed,
    write_rules,
)

from tests.lab import KernelLab

BIG = 100_000  # sizes from here on get --big-reps repetitions
RAW_N = 10_000  # the size at which the raw kernel tools are timed beside fwsync


@dataclass
class Cell:
    """One (variant, N, backend): every timing and what went wrong, if anything."""

    first: list[float] = field(default_factory=list)
    reapply: list[float] = field(default_factory=list)
    plan: list[float] = field(default_factory=list)
    show: list[float] = field(default_factory=list)  # `fwsync status` after the no-op plan
    raw: list[float] = field(default_factory=list)  # the kernel tools alone, same content
    cpu: dict[str, list[float]] = field(default_factory=dict)  # the same four, CPU seconds
    loadavg: list[str] = field(default_factory=list)  # at each first apply
    status: str = "ok"  # ok | n/a | error | slow
    detail: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"first": self.first, "reapply": self.reapply, "plan": self.plan,
                "show": self.show, "raw": self.raw, "cpu": self.cpu, "loadavg": self.loadavg,
                "status": self.status, "detail": self.detail}


# --------------------------------------------------------------------------- raw baselines
#
# What fwsync's first apply writes, written by the kernel's own tools in one go, with no
# Python, no reading and no planning: `nft -j -f` of one batch that creates the table, its sets
# with their elements, its chains and rules (libnftables, as fwsync calls it); `ipset restore`
# of the sets, then `iptables-restore --noflush` and `ip6tables-restore --noflush` of the
# chains and the jump (what fwsync runs). The content comes from fwsync's own renderers, for
# the same rules files, so it is the same content.


def raw_nft_batch(rules: Path) -> str:
    from fwsync.backends.nftables_render import table_objects
    from fwsync.core.build import build_ruleset
    from fwsync.core.observed import DockerState
    from fwsync.rules.load import load_rules

    policy = load_rules(rules).policy
    assert policy is not None
    objects = table_objects(build_ruleset(policy, DockerState(error="not asked")).ruleset)
    batch = [{"metainfo": {"json_schema_version": 1}}, *({"add": o} for o in objects)]
    return json.dumps({"nftables": batch})


def raw_iptables_files(rules: Path, directory: Path) -> list[Path]:
    from fwsync.backends.iptables import FamilyState, _ipset_create, _restore_text, _wanted_sets
    from fwsync.backends.iptables_render import render_family
    from fwsync.core.build import build_ruleset
    from fwsync.core.observed import DockerState
    from fwsync.rules.load import load_rules

    policy = load_rules(rules).policy
    assert policy is not None
    ruleset = build_ruleset(policy, DockerState(error="not asked")).ruleset
    state: dict[str, tuple[str, ...]] = {}
    for family in (4, 6):
        state.update(render_family(ruleset, family, ("DOCKER-USER",)))  # type: ignore[arg-type]
    sets = directory / "sets.ipset"
    sets.write_text("\n".join(_ipset_create(n, e) for n, e in _wanted_sets(state).items())
                    + "\n")
    out = [sets]
    for family in (4, 6):
        path = directory / f"filter.v{family}"
        path.write_text(_restore_text(state, family, FamilyState()))  # type: ignore[arg-type]
        out.append(path)
    return out


def raw_apply(lab: KernelLab, backend: str, rules: Path, directory: Path) -> Timed:
    """The raw tools' time for `rules`' content, on a host without fwsync's objects (made so
    before, and again after, by `fwsync remove`, untimed)."""
    fwsync(lab, "remove", "--backend", backend)
    directory.mkdir(parents=True, exist_ok=True)
    if backend == "nftables":
        batch = directory / "batch.json"
        batch.write_text(raw_nft_batch(rules))
        script = f"nft -j -f {batch}"
    else:
        sets, v4, v6 = raw_iptables_files(rules, directory)
        tool = "nft" if lab.variant == "nft" else "legacy"
        script = (f"ipset restore < {sets} && iptables-{tool}-restore --noflush < {v4} && "
                  f"ip6tables-{tool}-restore --noflush < {v6}")
    cpu0 = children_cpu()
    t0 = time.perf_counter()
    res = subprocess.run([*lab.host.nsenter_prefix(), "sh", "-c", script], capture_output=True,
                         text=True, check=False)
    timed = Timed(time.perf_counter() - t0, res.returncode, res.stdout, res.stderr,
                  children_cpu() - cpu0)
    fwsync(lab, "remove", "--backend", backend)
    return timed


def _fail(cell: Cell, what: str, res: Timed) -> None:
    cell.status = "n/a" if res.unavailable else "error"
    cell.detail = f"{what}: exit {res.returncode}: {res.tail()}"


def measure_cell(lab: KernelLab, backend: str, rules_a: Path, rules_b: Path, cell: Cell,
                 last: bool, slow: float, raw_dir: Path | None = None) -> None:
    b = ("--backend", backend)
    if raw_dir is not None:
        raw = raw_apply(lab, backend, rules_a, raw_dir)
        if raw.returncode != 0:
            return _fail(cell, f"raw {backend} tools", raw)
        cell.raw.append(raw.seconds)
        cell.cpu.setdefault("raw", []).append(raw.cpu)
    res = fwsync(lab, "remove", *b)
    if res.returncode != 0:
        return _fail(cell, "remove", res)
    cell.loadavg.append(loadavg())
    first = fwsync(lab, "apply", *b, "--yes", rules=rules_a)
    if first.returncode != 0 or "Applied" not in first.stdout:
        return _fail(cell, "first apply", first)
    cell.first.append(first.seconds)
    cell.cpu.setdefault("first", []).append(first.cpu)
    if first.seconds > slow:  # measured once; a re-apply would take as long again
        cell.status, cell.detail = "slow", f"first apply took {first.seconds:.0f} s: measured once"
        return None
    again = fwsync(lab, "apply", *b, "--yes", rules=rules_b)
    if again.returncode != 0 or "Applied" not in again.stdout:
        return _fail(cell, "re-apply", again)
    cell.reapply.append(again.seconds)
    cell.cpu.setdefault("reapply", []).append(again.cpu)
    plan = fwsync(lab, "plan", *b, "--detailed-exitcode", rules=rules_b)
    if plan.returncode != 0:
        return _fail(cell, "plan after re-apply (expected nothing to do)", plan)
    cell.plan.append(plan.seconds)
    cell.cpu.setdefault("plan", []).append(plan.cpu)
    show = fwsync(lab, "status", *b, "--format", "json", rules=rules_b)
    if show.returncode != 0:
        return _fail(cell, "status after re-apply", show)
    cell.show.append(show.seconds)
    cell.cpu.setdefault("show", []).append(show.cpu)
    if last:  # the same once more with every element read: the kernel holds exactly the list
        full = fwsync(lab, "plan", *b, "--detailed-exitcode", "--full", rules=rules_b)
        if full.returncode != 0:
            return _fail(cell, "plan --full after re-apply (expected nothing to do)", full)
    return None


def run(sizes: list[int], linear_sizes: list[int], reps: int, backends: tuple[str, ...],
        slow: float = 30.0, big_reps: int = 3, log: Any = print) -> dict[str, Any]:
    variants: list[tuple[Variant, list[int]]] = [("set", sizes), ("linear", linear_sizes)]
    cells: dict[tuple[str, int, str], Cell] = {
        (v, n, b): Cell() for v, ns in variants for n in ns for b in backends}
    startup: list[float] = []
    prepare_python()
    t0 = time.monotonic()
    problems: list[str] = []
    stack = contextlib.ExitStack()
    try:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="fwsb-apply-")))
        labs = {b: new_lab(stack) for b in backends}
        files: dict[tuple[str, int], tuple[Path, Path]] = {}
        for v, ns in variants:
            for n in ns:
                entries = allowlist(n)
                files[v, n] = (write_rules(tmp / f"{v}-{n}-a", v, entries),
                               write_rules(tmp / f"{v}-{n}-b", v, with_one_changed(entries)))
        log(f"apply: labs up in {time.monotonic() - t0:.1f} s; {reps} repetitions")
        for rep in range(reps):
            startup.append(fwsync(labs[backends[0]], "--version").seconds)
            order = backends if rep % 2 == 0 else tuple(reversed(backends))
            for v, ns in variants:
                for n in ns:
                    n_reps = min(reps, big_reps) if n >= BIG else reps
                    if rep >= n_reps:
                        continue
                    for b in order:
                        cell = cells[v, n, b]
                        if cell.status != "ok":
                            continue
                        last = rep == n_reps - 1
                        raw_dir = tmp / f"raw-{b}" if (v, n) == ("set", RAW_N) else None
                        measure_cell(labs[b], b, *files[v, n], cell, last, slow, raw_dir)
                        log(f"  rep {rep + 1}/{n_reps} {v:6} N={size_label(n):>4} {b:8} "
                            f"first {_last(cell.first)} re-apply {_last(cell.reapply)}"
                            + (f"  [{cell.status}: {cell.detail}]" if cell.status != "ok"
                               else ""))
    finally:
        problems += close_all(stack)
        problems += [f"namespace left behind: {n}" for n in leftover_namespaces()]
    return {
        "reps": reps, "big_reps": big_reps, "sizes": sizes, "linear_sizes": linear_sizes,
        "backends": list(backends),
        "startup": startup, "seconds": time.monotonic() - t0, "cleanup_problems": problems,
        "cells": [{"variant": v, "n": n, "backend": b, **c.as_dict()}
                  for (v, n, b), c in cells.items()],
    }


def _last(values: list[float]) -> str:
    return f"{values[-1]:.3f} s" if values else "—"


def _cell_text(c: dict[str, Any], key: str) -> str:
    if c["status"] == "n/a":
        return "n/a (backend not available)"
    if c["status"] == "error" and not c[key]:
        return "error (see notes)"
    return fmt_seconds(Spread.of(c[key]))


def report(result: dict[str, Any]) -> str:
    """Markdown: one table per variant, medians with min-max over the repetitions."""
    backends: list[str] = result["backends"]
    by_key = {(c["variant"], c["n"], c["backend"]): c for c in result["cells"]}
    out: list[str] = []
    titles = {"set": "`define big file` + one rule (sets)",
              "linear": "one rule per entry (linear)"}
    for variant, sizes in (("set", result["sizes"]), ("linear", result["linear_sizes"])):
        if not sizes:
            continue
        headers = ["N"] + [f"{b} {what}" for b in backends for what in ("first", "re-apply")]
        rows = []
        for n in sizes:
            row = [size_label(n)]
            for b in backends:
                c = by_key[variant, n, b]
                row += [_cell_text(c, "first"), _cell_text(c, "reapply")]
            rows.append(row)
        runs = f"{result['reps']} runs"
        if any(n >= BIG for n in sizes) and result["big_reps"] < result["reps"]:
            runs += f" ({result['big_reps']} for N >= {size_label(BIG)})"
        out.append(f"**Apply time, {titles[variant]}**: median (min-max) of {runs}\n\n"
                   + md_table(headers, rows))
        plan_rows = [[size_label(n)] + [_cell_text(by_key[variant, n, b], "plan")
                                        for b in backends] for n in sizes]
        out.append(f"`fwsync plan` right after each re-apply ({titles[variant]}; every one "
                   "said nothing to do, and so did a `plan --full` after the last one, which "
                   "reads every element), median (min-max)\n\n"
                   + md_table(["N", *backends], plan_rows))
        show_rows = [[size_label(n)] + [_cell_text(by_key[variant, n, b], "show")
                                        for b in backends] for n in sizes]
        out.append(f"`fwsync status --format json` right after that plan ({titles[variant]}), "
                   "median (min-max)\n\n" + md_table(["N", *backends], show_rows))
    raw_rows = []
    for b in backends:
        c = by_key.get(("set", RAW_N, b))
        if c is None or not c["raw"]:
            continue
        tools = "`nft -j -f` of one batch" if b == "nftables" else (
            "`ipset restore` + `iptables-restore` + `ip6tables-restore`")
        raw, first = Spread.of(c["raw"]), Spread.of(c["first"])
        ratio = f"{first.median / raw.median:.1f}x" if raw and first else "—"
        raw_rows.append([b, tools, fmt_seconds(raw), fmt_seconds(first), ratio])
    if raw_rows:
        out.append(f"The kernel's own tools writing the same content as fwsync's first apply "
                   f"(N={size_label(RAW_N)}, rendered by fwsync's renderers; no Python, no "
                   "reading, no planning), timed in the same host right before each fwsync "
                   "apply\n\n" + md_table(["backend", "raw tools", "raw", "fwsync first apply",
                                            "fwsync / raw"], raw_rows))
    start = Spread.of(result["startup"])
    if start is not None:
        out.append(f"CLI floor: `fwsync --version` in the same namespace takes {fmt_seconds(start)}"
                   " (interpreter start-up and imports, included in every time above).")
    notes = [f"- {c['variant']} N={size_label(c['n'])} {c['backend']}: {c['status']}: "
             f"{c['detail']}" for c in result["cells"] if c["status"] not in ("ok", "n/a")]
    if notes:
        out.append("Notes:\n" + "\n".join(notes))
    return "\n\n".join(out)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--sizes", type=parse_sizes, default=parse_sizes("10,1k,10k,100k"))
    p.add_argument("--linear-sizes", type=parse_sizes, default=parse_sizes("10,1k,10k"),
                   help="10k linear rules take minutes per apply (see docs/benchmarks.md)")
    p.add_argument("--backends", default=",".join(BACKENDS))
    p.add_argument("--big-reps", type=int, default=3, help="repetitions for N >= 100k")
    p.add_argument("--slow", type=float, default=30.0,
                   help="a cell whose first apply takes longer is measured once")
    p.add_argument("--json", help="also write the raw measurements here")
    args = p.parse_args(argv)
    if not 1 <= args.reps <= 50:
        p.error("--reps must be 1..50")
    args.backends = tuple(b for b in args.backends.split(",") if b)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result = run(args.sizes, args.linear_sizes, args.reps, args.backends, args.slow,
                 args.big_reps)
    dump_json(args.json, result)
    print()
    print(report(result))
    print(f"\n(apply benchmark: {result['seconds']:.0f} s)")
    failed = any(c["status"] == "error" for c in result["cells"]) or result["cleanup_problems"]
    for p in result["cleanup_problems"]:
        print(f"cleanup: {p}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(interruptible(main))
