"""`make bench`: every figure of fwsync's speed targets in one run, side by side with what it is
compared to (`python -c pass`, the kernel's own tools writing the same content, no firewall),
and docs/benchmarks.md's results section rewritten from it.

    .venv/bin/python bench/run_all.py [--json FILE] [--no-docs] [--skip-startup] [--skip-apply]
                                      [--skip-packet] [--skip-daemon]

Parts, each also runnable alone with options (`--help`): bench_startup.py (start-up),
bench_apply.py (apply and plan time, raw tools), bench_packet.py (connection rate through the
firewall), bench_daemon.py (a real dockerd: event-to-enforced latency, idle CPU, RSS, drift).
Everything runs in network namespaces the benchmark makes and removes. Exit 1 if a measurement
failed (a target that is missed is reported, not a failure). About 20 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_apply
import bench_daemon
import bench_log_flood
import bench_packet
import bench_startup
from benchlib import REPO, Spread, dump_json, interruptible, loadavg, machine_info, md_table

from tests.lab import kernel_tools, missing

DOCS = REPO / "docs" / "benchmarks.md"
BEGIN = "<!-- bench/run_all.py writes from here to the end marker: edit the script, not this -->"
END = "<!-- end of what bench/run_all.py writes -->"


# --------------------------------------------------------------------------- the targets table


def _s(values: list[float]) -> Spread | None:
    return Spread.of(values) if values else None


def _sec(s: Spread | None) -> str:
    if s is None:
        return "not measured"
    return f"{s.median:.3f} s" + (f" ({s.low:.3f}-{s.high:.3f}, {s.n} runs)" if s.n > 1 else "")


def _verdict(value: float | None, target: float, unit: str, higher_is_better: bool = False
             ) -> str:
    if value is None:
        return "not measured"
    ok = value >= target if higher_is_better else value <= target
    if ok:
        return "**met**"
    by = target - value if higher_is_better else value - target
    return f"**missed** by {by:.3g}{unit} ({100 * by / target:.0f} %)"


def _cpu(cell: dict[str, Any], key: str) -> float | None:
    """The median CPU seconds of one kind of run of an apply cell (whole process and the
    processes it ran): it moves much less than wall time on a shared machine."""
    values = cell.get("cpu", {}).get(key)
    return statistics.median(values) if values else None


def _both(*verdicts: str) -> str:
    if all(v == "**met**" for v in verdicts):
        return "**met**"
    return "; ".join(v for v in verdicts if v != "**met**")


def target_rows(data: dict[str, Any]) -> list[list[str]]:
    rows: list[list[str]] = []
    start = data.get("startup")
    if start is not None:
        base = _s(start["wall"]["python -c pass"])
        for name, target in bench_startup.TARGETS.items():
            s = _s(start["wall"][name])
            ratio = s.median / base.median if s and base else None
            rows.append([
                f"`{start['commands'][name]}`, whole process (in the repository: `rules/` has "
                "3 files)", f"≤ {target} s, ≤ {bench_startup.TARGET_FACTOR}x `python -c pass`",
                _sec(s) + (f"; CPU {statistics.median(start['cpu'][name]):.3f} s" if s else ""),
                f"`python -c pass`: {_sec(base)}" + (f"; {ratio:.1f}x" if ratio else ""),
                _both(_verdict(s.median if s else None, target, " s"),
                      _verdict(ratio, bench_startup.TARGET_FACTOR, "x")),
                str(start["loadavg"][0])])
    apply_ = data.get("apply")
    if apply_ is not None:
        cells = {(c["variant"], c["n"], c["backend"]): c for c in apply_["cells"]}
        for b in apply_["backends"]:
            c = cells.get(("set", bench_apply.RAW_N, b))
            if c is None:
                continue
            first, raw = _s(c["first"]), _s(c["raw"])
            ratio = first.median / raw.median if first and raw else None
            tools = ("`nft -j -f` of one batch" if b == "nftables"
                     else "`ipset restore` + `iptables-restore` + `ip6tables-restore`")
            cpu, raw_cpu = _cpu(c, "first"), _cpu(c, "raw")
            rows.append([f"full `fwsync apply`, 10k-entry set, {b}", "≤ 0.25 s and ≤ 3x raw",
                         _sec(first) + (f"; CPU {cpu:.3f} s" if cpu is not None else ""),
                         f"{tools}: {_sec(raw)}"
                         + (f"; CPU {raw_cpu:.3f} s" if raw_cpu is not None else "")
                         + (f"; fwsync {ratio:.1f}x" if ratio else "")
                         + (f" (CPU {cpu / raw_cpu:.1f}x)" if cpu and raw_cpu else ""),
                         _both(_verdict(first.median if first else None, 0.25, " s"),
                               _verdict(ratio, 3.0, "x")), ",".join(c["loadavg"][:1])])
        for key, what, target in (("first", "first apply, 100k entries", 1.5),
                                  ("reapply", "re-apply, 100k entries, one entry changed", 2.0),
                                  ("plan", "no-op `fwsync plan`, 100k entries", 0.5)):
            for b in apply_["backends"]:
                c = cells.get(("set", bench_apply.BIG, b))
                if c is None:
                    continue
                s = _s(c[key])
                cpu = _cpu(c, key)
                rows.append([f"{what}, {b}", f"≤ {target} s",
                             _sec(s) + (f"; CPU {cpu:.3f} s" if cpu is not None else ""), "",
                             _verdict(s.median if s else None, target, " s"),
                             ",".join(c["loadavg"][:1])])
    packet = data.get("packet")
    if packet is not None:
        for c in packet["configs"]:
            if (c["backend"], c["variant"], c["n"]) != ("iptables", "linear", 10_000):
                continue
            rates = _s(bench_packet.rate_ratios(c)) if c["status"] == "ok" else None
            cpus = _s(bench_packet.cpu_ratios(c)) if c["status"] == "ok" else None
            value = min(rates.median, cpus.median) if rates and cpus else None
            rows.append([
                "iptables backend, 10k rules `allow from ADDR to any port 5432` (one per "
                "source), new-connection rate / no firewall",
                "≥ 0.9",
                (f"{rates.median:.2f} ({rates.low:.2f}-{rates.high:.2f}); from CPU per "
                 f"connection {cpus.median:.2f} ({cpus.low:.2f}-{cpus.high:.2f})")
                if rates and cpus else f"not measured ({c['status']}: {c['detail']})",
                "no firewall, the same host, runs before and after each",
                _verdict(value, 0.9, "", higher_is_better=True), packet.get("loadavg", "")])
    daemon = data.get("daemon")
    if daemon is not None:
        starts = daemon.get("starts")
        if starts:
            e = starts["event_to_enforced_ms"]
            rows.append([f"daemon: Docker event → enforced, p99 over {e['n']} starts",
                         "≤ 50 ms", f"p99 {e['p99']:.1f} ms (p50 {e['p50']:.1f}, max "
                         f"{e['max']:.1f})", "", _verdict(e["p99"], 50, " ms"),
                         starts["loadavg"][0]])
        idle = daemon.get("idle")
        if idle:
            rows.append([f"daemon RSS, idle, {daemon.get('containers_running_when_idle')} "
                         "containers", "≤ 45 MiB", f"{idle['vmrss_mib']} MiB (peak "
                         f"{idle['vmhwm_mib']})", "", _verdict(idle["vmrss_mib"], 45, " MiB"),
                         idle["loadavg"][0]])
        for f in daemon.get("flush", []):
            r = f["detection_to_repair_ms"]
            e = f["edit_to_repair_logged_ms"]
            by = ", ".join(f"{k} {v}" for k, v in sorted(f["detected_by"].items()))
            rows.append([f"daemon: fwsync's chain flushed by hand → repaired, {f['backend']}"
                         f" (nf_tables), p99 over {f['flushes']} flushes", "≤ 50 ms",
                         (f"detection → repair p99 {r['p99']:.1f} ms (p50 {r['p50']:.1f}, max "
                          f"{r['max']:.1f})" if r else "not measured")
                         + f"; flush → repair logged p50 {e['p50']:.0f} ms, p99 "
                           f"{e['p99']:.0f} ms; detected by: {by}",
                         "the drift tick (1 s) before",
                         _verdict(r["p99"] if r else None, 50, " ms"), f["loadavg"]])
        for w in daemon.get("jump_window", []):
            rows.append([f"daemon: attacker connections during {w['creates']} network creates "
                         f"(Docker {w['docker']}'s jump window), {w['backend']}", "0",
                         f"{w['got_in']} of {w['attempts']} (a connect every 20 ms)", "",
                         "**met**" if w["got_in"] == 0 else f"**missed**: {w['got_in']} got in",
                         w["loadavg"]])
        for big in daemon.get("big", []):
            i = big["idle"]
            worst = max(big["drift_repaired_s"]) if big["drift_repaired_s"] else None
            rows.append([f"daemon idle with a {big['entries'] // 1000}k-entry set, "
                         f"{big['backend']}: CPU over {i['seconds']:.0f} s; drift (fwsync's "
                         f"entry rule removed by hand) repaired", "≤ 2 % of a core; ≤ 2 s",
                         f"{i['cpu_percent_with_children']} % (own {i['cpu_percent_own']} %); "
                         f"repaired after {', '.join(f'{x:.2f}' for x in big['drift_repaired_s'])}"
                         " s", "", _both(_verdict(i["cpu_percent_with_children"], 2, " %"),
                                         _verdict(worst, 2, " s")), i["loadavg"][0]])
            rows.append([f"daemon RSS, idle with a {big['entries'] // 1000}k-entry set, "
                         f"{big['backend']}", "≤ 120 MiB", f"{i['vmrss_mib']} MiB (peak "
                         f"{i['vmhwm_mib']})", "", _verdict(i["vmrss_mib"], 120, " MiB"),
                         i["loadavg"][0]])
    flood = data.get("logflood")
    for f in flood["summary"] if flood else ():
        rows.append([f"SYN flood ({flood['rate']:.0f}/s from {flood['sources']} sources, "
                     f"{flood['duration']:.0f} s) on a port the default refuses, `logging low`, "
                     f"{f['backend']}: log lines a second; the daemon's extra CPU",
                     "≤ 20 lines/s; ≤ 5 % of a core", f"{f['lines_per_second']} lines/s; "
                     f"{100 * f['daemon_extra_core_share']:.2f} % of a core (softirq, machine-"
                     f"wide: {100 * f['softirq_extra_core_share']:+.2f} %); lost: "
                     f"{'none' if not f['lost'] else f['lost']}", "`logging off`, the same flood",
                     _both(_verdict(f["lines_per_second"], 20, " lines/s"),
                           _verdict(100 * f["daemon_extra_core_share"], 5, " %")),
                     flood["loadavg"]])
    return rows


def targets_table(data: dict[str, Any]) -> str:
    return md_table(["figure", "target", "measured: median (min-max)", "compared with",
                     "verdict", "load avg"], target_rows(data))


def daemon_report(d: dict[str, Any]) -> str:
    out = []
    s = d.get("starts")
    if s:
        e, c = s["event_to_enforced_ms"], s["start_call_to_enforced_ms"]
        out.append(md_table(["daemon", "value"], [
            ["event → enforced p50 / p90 / p99 / max (ms)",
             f"{e['p50']:.1f} / {e['p90']:.1f} / {e['p99']:.1f} / {e['max']:.1f}"],
            ["min / mean (ms)", f"{e['min']:.1f} / {e['mean']:.1f}"],
            ["p50 by running containers, per 10 starts (ms)",
             ", ".join(f"{x:.1f}" for x in
                       s["event_to_enforced_p50_by_tens_of_running_containers_ms"])],
            ["reconcile steps p50: observe, plan, apply (ms)",
             ", ".join(f"{v:.1f}" for v in s["steps_p50_ms"].values())],
            ["Docker API `start` call → enforced, p50 / p99 (ms)",
             f"{c['p50']:.0f} / {c['p99']:.0f}"],
            ["burst", f"{d['burst']['containers']} containers in {d['burst']['burst_seconds']} "
                      f"s → {d['burst']['reconciles']} reconciles"],
            ["idle CPU own / with children (% of a core), RSS (MiB), "
             f"{d.get('containers_running_when_idle')} containers",
             f"{d['idle']['cpu_percent_own']} / {d['idle']['cpu_percent_with_children']}, "
             f"{d['idle']['vmrss_mib']} (peak {d['idle']['vmhwm_mib']})"],
        ]))
    return "\n\n".join(out)


def write_docs(generated: str) -> None:
    text = DOCS.read_text()
    pattern = re.compile(re.escape(BEGIN) + r".*?" + re.escape(END), re.S)
    if not pattern.search(text):
        raise SystemExit(f"{DOCS}: the markers for the generated section are missing")
    DOCS.write_text(pattern.sub(lambda _m: f"{BEGIN}\n\n{generated}\n\n{END}", text))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", help="also write the raw measurements here")
    p.add_argument("--no-docs", action="store_true", help="don't rewrite docs/benchmarks.md")
    for part in ("startup", "apply", "packet", "daemon", "logflood"):
        p.add_argument(f"--skip-{part}", action="store_true")
    args = p.parse_args(argv)
    problems = missing(*kernel_tools("nft"))
    if problems:
        print("bench: cannot run here: " + "; ".join(problems), file=sys.stderr)
        return 2
    t0 = time.monotonic()
    machine = machine_info()
    print("Machine: " + ", ".join(f"{k} {v}" for k, v in machine.items()), flush=True)
    data: dict[str, Any] = {"machine": machine}
    sections: list[str] = []
    failed = False
    def part(name: str, measure: Any, report: Any) -> None:
        """One part; a part that fails is reported and the others still run."""
        nonlocal failed
        try:
            data[name] = measure()
            sections.append(report(data[name]))
        except Exception as exc:  # a broken part must not lose the others' measurements
            failed = True
            data[f"{name}_error"] = f"{type(exc).__name__}: {exc}"
            sections.append(f"**{name}**: failed: `{type(exc).__name__}: {exc}`")
        dump_json(args.json, data)  # as it goes: a later failure keeps what was measured

    if not args.skip_startup:
        part("startup", bench_startup.run, bench_startup.report)
    if not args.skip_apply:
        a_args = bench_apply.parse_args([])
        part("apply", lambda: bench_apply.run(a_args.sizes, a_args.linear_sizes, a_args.reps,
                                              a_args.backends, a_args.slow, a_args.big_reps),
             bench_apply.report)
        applied = data.get("apply")
        failed |= applied is not None and (bool(applied["cleanup_problems"]) or any(
            c["status"] == "error" for c in applied["cells"]))
    if not args.skip_packet:
        p_args = bench_packet.parse_args([])

        def packet() -> dict[str, Any]:
            load = loadavg()
            out = bench_packet.run(p_args.sizes, p_args.linear_sizes, p_args.backends, p_args)
            out["loadavg"] = load
            return out

        part("packet", packet, bench_packet.report)
        packets = data.get("packet")
        failed |= packets is not None and (bool(packets["cleanup_problems"]) or any(
            c["status"] == "error" for c in packets["configs"]))
    if not args.skip_daemon:
        d_args = argparse.Namespace(starts=100, burst=30, idle=60.0, big=100_000,
                                     big_backends="iptables,nftables", drifts=5,
                                     flushes=50, flush_backends="nftables,iptables",
                                     window_backends="iptables,nftables")
        part("daemon", lambda: bench_daemon.run(d_args), daemon_report)
    if not args.skip_logflood:
        part("logflood", bench_log_flood.run, lambda _d: "")
    total = time.monotonic() - t0
    data["seconds"] = total
    dump_json(args.json, data)
    command = "make bench (.venv/bin/python bench/run_all.py" + (
        " " + " ".join(argv if argv is not None else sys.argv[1:])).rstrip() + ")"
    head = md_table(["", ""], [
        ["command", f"`{command}`, {total / 60:.1f} min"],
        ["when", machine["date"]],
        ["machine", f"{machine['nproc']} cores ({machine['cpu']}), kernel {machine['kernel']}, "
                    f"Python {machine['python']}, {machine['iptables']}, {machine['nft']}, "
                    f"{machine['ipset']}"],
        ["fwsync", f"commit {machine['fwsync_commit']}"],
        ["load average", f"{' '.join(machine['loadavg'])} at the start (1, 5, 15 min); each "
                         "row below gives the 1-minute one when it was measured"],
    ])
    generated = "\n\n".join([
        "## Results", head, "### Targets", targets_table(data), "### Details", *sections])
    print()
    print(generated)
    if not args.no_docs:
        write_docs(generated)
        print(f"\n(written to {DOCS.relative_to(REPO)})")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(interruptible(main))
