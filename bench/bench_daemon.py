"""`fwsync daemon`: event-to-enforced latency, burst coalescing, RSS and idle CPU.

    .venv/bin/python bench/bench_daemon.py [--starts 100] [--idle 60] [--burst 30] [--json FILE]

Builds its own DockerLab (a real dockerd 20.10 in network namespaces, tests/lab.py) and runs the
daemon in its HOST namespace with default settings (drift check every 1 s), rules
`allow from $office to container bench-*`, so every container start needs a kernel update.

1. Latency: `--starts` containers started one after another, each publishing its own port; the
   next one is started once the previous one is enforced and the coalescer's 1 s spacing of
   event reconciles has passed (so each start is measured alone, not queued behind the previous
   one). The daemon logs, for each reconcile that serves a Docker event, when the event was
   received and when the kernel was updated (the backend's apply returned): that difference is
   the event-to-enforced latency. The containers stay up, so the last starts are measured with
   `--starts` containers running (observing Docker costs one inspect per container).
   Also reported: from the bench calling the Docker API's start to the kernel updated.
2. Burst: the containers of step 1 removed (the lab's bridge is a /25), then `--burst`
   containers started 8 at a time, as `docker compose up` would; how many reconciles served
   them.
3. Idle: `--idle` seconds with nothing happening: the daemon's CPU time over that span (its own,
   and with its children — the iptables-save/ipset processes of the drift checks — included),
   and its RSS (VmRSS now, VmHWM peak).
4. A 100k-entry set, per backend (`--big` entries, `--big-backends`): the daemon restarted with
   `define big file` of that many entries added to the rules, idle for `--idle` seconds (CPU,
   RSS), then `--drifts` times fwsync's entry into its rules taken out by hand (iptables: the
   jump from DOCKER-USER; nftables: the rules of its forward chain), each time measuring from
   the edit to the daemon's log line of the reconcile that repaired it.

5. Repair after a flush, per backend whose rules are nf_tables' (`--flush-backends`: the nftables
   backend, and the iptables backend on iptables-nft, which Debian's dockerd uses): `--flushes`
   times fwsync's inbound chain emptied by hand (`nft flush chain inet fwsync inbound`,
   `iptables -F FWSYNC-INBOUND`), each 1 s apart, while the drift tick is 1 s. Reported: the
   daemon's own logged time from detecting it to the kernel repaired (`drift_latency_ms`), what
   detected it (`detected_by`: the netlink event or the tick), and from the bench starting the
   edit (`nft`/`iptables`, run in HOST through nsenter) to the repair's log line (millisecond
   clock; the tool's own start-up is in it).
6. Docker 20.10's jump window, per backend (`--window-backends`): the daemon running, an
   attacker starting a connection to a port no rule allows every 20 ms while Docker creates
   (and removes again) 30 networks; each create deletes and re-inserts FORWARD's jump to
   DOCKER-USER. Reported: the attacker's connections that got in, of its attempts.

Everything is removed at the end (containers, dockerd, namespaces).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.daemon_helpers import DaemonProc  # noqa: E402
from tests.lab import DockerLab, require, run_fwsync  # noqa: E402

RULES = """default deny incoming
define office 198.51.100.0/25
allow from $office to container bench-*
"""
SPACING = 1.05  # the coalescer's min_interval between event reconciles is 1 s
# Timed as an installed package runs: with bytecode (the lab's environment may forbid writing it).
BYTECODE = {"PYTHONDONTWRITEBYTECODE": ""}


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def summary(values: list[float]) -> dict[str, float]:
    return {"n": len(values), "min": min(values), "p50": percentile(values, 50),
            "p90": percentile(values, 90), "p99": percentile(values, 99), "max": max(values),
            "mean": statistics.fmean(values)}


def cpu_seconds(pid: int) -> tuple[float, float]:
    """(own, own + reaped children) CPU seconds of a process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    utime, stime, cutime, cstime = (int(fields[i]) / tick for i in (11, 12, 13, 14))
    return utime + stime, utime + stime + cutime + cstime


def memory_kib(pid: int) -> dict[str, int]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0])
    return out


def measure_starts(lab: DockerLab, d: DaemonProc, count: int) -> dict[str, Any]:
    event_ms: list[float] = []
    call_ms: list[float] = []
    durations: list[float] = []
    steps: dict[str, list[float]] = {}
    api = lab.client.api
    loads = [Path("/proc/loadavg").read_text().split()[0]]
    served_before: list[str] = []
    for i in range(count):
        name = f"bench-{i}"
        host_config = api.create_host_config(port_bindings={"80/tcp": 20000 + i})
        cid = api.create_container("fwsync-test/busybox:1", ["/bin/sh", "-c",
                                   "trap 'exit 0' TERM; httpd -f -p 80 -h /bin & wait"],
                                   name=name, ports=[80], host_config=host_config)["Id"]
        before = len(d.reconciles())
        called = time.time()
        api.start(cid)
        rec = d.wait_reconcile(lambda r, n=name: f"start {n}" in r["trigger"], after=before,
                               what=f"the reconcile of {name}")
        if rec["result"] != "applied":
            # An earlier reconcile (a resync, or one a busy machine delayed this one behind)
            # already put this container's rules in: nothing to measure for this start.
            served_before.append(name)
            time.sleep(SPACING)
            continue
        event_ms.append(rec["event_latency_ms"])
        call_ms.append((rec["enforced"] - called) * 1000)
        durations.append(rec["duration_ms"])
        for step in ("observe_ms", "plan_ms", "apply_ms"):
            steps.setdefault(step, []).append(rec[step])
        time.sleep(SPACING)
        if (i + 1) % 10 == 0 and event_ms:
            print(f"  {i + 1} starts: last event-to-enforced {event_ms[-1]:.1f} ms",
                  file=sys.stderr)
    by_decile = [summary(event_ms[k:k + 10])["p50"] for k in range(0, len(event_ms), 10)]
    loads.append(Path("/proc/loadavg").read_text().split()[0])
    return {"event_to_enforced_ms": summary(event_ms), "start_call_to_enforced_ms":
            summary(call_ms), "reconcile_duration_ms": summary(durations),
            "event_to_enforced_p50_by_tens_of_running_containers_ms": by_decile,
            "loadavg": loads,
            "served_by_an_earlier_reconcile": served_before,
            "steps_p50_ms": {k: percentile(v, 50) for k, v in steps.items()},
            "steps_p50_last_ten_ms": {k: percentile(v[-10:], 50) for k, v in steps.items()}}


def measure_burst(lab: DockerLab, d: DaemonProc, count: int) -> dict[str, Any]:
    from concurrent.futures import ThreadPoolExecutor

    # The lab's bridge is a /25: make room (and let the removals' reconciles pass).
    lab.remove_containers()
    d.wait_reconcile(lambda r: r.get("ports") == 0, timeout=60, what="all removed")
    time.sleep(SPACING)
    before = len(d.reconciles())
    t0 = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: lab.run_web(f"bench-burst-{i}", {"80/tcp": 30000 + i},
                                            wait=False), range(count)))
    burst = time.monotonic() - t0
    want = len(lab.client.containers.list()) * 2  # each binding twice: 0.0.0.0 and ::
    d.wait_reconcile(lambda r: r.get("ports") == want, after=before, timeout=60,
                     what="the reconcile that sees the whole burst")
    served = [r for r in d.reconciles()[before:] if "docker:" in r["trigger"]]
    return {"containers": count, "burst_seconds": round(burst, 2), "reconciles": len(served)}


def measure_idle(d: DaemonProc, seconds: float) -> dict[str, Any]:
    time.sleep(3)  # let the last reconcile settle
    load0 = Path("/proc/loadavg").read_text().split()[0]
    own0, all0 = cpu_seconds(d.pid)
    t0 = time.monotonic()
    time.sleep(seconds)
    own1, all1 = cpu_seconds(d.pid)
    span = time.monotonic() - t0
    return {"seconds": round(span, 1),
            "loadavg": [load0, Path("/proc/loadavg").read_text().split()[0]],
            "cpu_percent_own": round(100 * (own1 - own0) / span, 3),
            "cpu_percent_with_children": round(100 * (all1 - all0) / span, 3),
            **{k.lower() + "_mib": round(v / 1024, 1) for k, v in memory_kib(d.pid).items()}}


def log_time(rec: dict[str, Any]) -> float:
    """A JSON log line's time (ISO 8601, UTC, milliseconds) as Unix time."""
    from datetime import datetime

    return datetime.fromisoformat(str(rec["time"]).replace("Z", "+00:00")).timestamp()


def _break_entry(lab: DockerLab, backend: str) -> None:
    if backend == "iptables":
        lab.host.run(["iptables", "-D", "DOCKER-USER", "-j", "FWSYNC-FORWARD"])
    else:
        lab.host.run(["nft", "flush", "chain", "inet", "fwsync", "forward"])


def measure_big(lab: DockerLab, rules: Path, backend: str, entries: int, idle: float,
                drifts: int) -> dict[str, Any]:
    """The daemon with a set of `entries` addresses: idle CPU and RSS, drift detection time."""
    sys.path.insert(0, str(REPO / "bench"))
    from benchlib import allowlist

    big = rules.parent / f"big-{backend}"
    big.mkdir(exist_ok=True)
    (big / "big.txt").write_text("\n".join(allowlist(entries)) + "\n")
    (big / "10-bench.rules").write_text(
        RULES + "define big file big.txt\nallow from $big to any port 5432 proto tcp\n")
    d = DaemonProc(lab, big, "--backend", backend, name=f"bench-big-{backend}",
                   env=BYTECODE).start()
    try:
        d.wait_ready(timeout=120)
        d.wait_for(lambda r: r.get("msg") == "reconcile"
                   and r["trigger"].startswith("reconnect"), timeout=120)
        out: dict[str, Any] = {"backend": backend, "entries": entries,
                               "idle": measure_idle(d, idle)}
        seen: list[float] = []
        for _ in range(drifts):
            before = len(d.reconciles())
            t0 = time.time()
            _break_entry(lab, backend)
            rec = d.wait_reconcile(lambda r: r["trigger"].startswith("drift")
                                   and r["result"] == "applied", after=before, timeout=30,
                                   what="the drift repair")
            seen.append(log_time(rec) - t0)
            time.sleep(1.5)
        out["drift_repaired_s"] = [round(x, 3) for x in seen]
        return out
    finally:
        d.stop()
        run_fwsync(lab, "remove")


def _flush(lab: DockerLab, backend: str) -> None:
    if backend == "iptables":
        lab.host.run(["iptables", "-w", "-F", "FWSYNC-INBOUND"])
    else:
        lab.host.run(["nft", "flush", "chain", "inet", "fwsync", "inbound"])


def measure_flush_repairs(lab: DockerLab, rules: Path, backend: str,
                          count: int) -> dict[str, Any]:
    """fwsync's inbound chain flushed by hand `count` times: how fast, and by what, repaired."""
    d = DaemonProc(lab, rules, "--backend", backend, name=f"bench-flush-{backend}",
                   env=BYTECODE).start()
    try:
        d.wait_ready()
        d.wait_for(lambda r: r.get("msg") == "reconcile"
                   and r["trigger"].startswith("reconnect"))
        time.sleep(1.0)
        detected: list[float] = []
        edit_to_log: list[float] = []
        by: dict[str, int] = {}
        steps: dict[str, list[float]] = {}  # the reconcile's own phases (observe, plan, apply)
        for _ in range(count):
            before = len(d.reconciles())
            t0 = time.time()  # before: the tool's own start is in the figure (an upper bound)
            _flush(lab, backend)
            rec = d.wait_reconcile(lambda r: bool(r.get("drift")), after=before, timeout=30,
                                   what="the repair of the flushed chain")
            by[str(rec.get("detected_by"))] = by.get(str(rec.get("detected_by")), 0) + 1
            if rec.get("drift_latency_ms") is not None:
                detected.append(float(rec["drift_latency_ms"]))
            for step in ("observe_ms", "plan_ms", "apply_ms"):
                if rec.get(step) is not None:
                    steps.setdefault(step, []).append(float(rec[step]))
            edit_to_log.append((log_time(rec) - t0) * 1000)
            time.sleep(1.0)
        return {"backend": backend, "flushes": count, "detected_by": by,
                "loadavg": Path("/proc/loadavg").read_text().split()[0],
                "detection_to_repair_ms": summary(detected) if detected else None,
                "edit_to_repair_logged_ms": summary(edit_to_log),
                "repair_steps_ms": {k: summary(v) for k, v in steps.items()}}
    finally:
        d.stop()
        run_fwsync(lab, "remove")


def measure_jump_window(lab: DockerLab, rules: Path, backend: str,
                        creates: int = 30) -> dict[str, Any]:
    """Attacker connections (a connect every 20 ms) that get in while Docker creates networks."""
    from tests.daemon_helpers import TightLoop

    ctr = lab.run_web("bench-window", {"80/tcp": 6100})
    d = DaemonProc(lab, rules, "--backend", backend, name=f"bench-window-{backend}",
                   env=BYTECODE).start()
    try:
        d.wait_ready()
        d.wait_for(lambda r: r.get("msg") == "reconcile"
                   and r["trigger"].startswith("reconnect"))
        time.sleep(1.0)
        with TightLoop(lab.attacker, [6100], gap=0.02, give_up=0.5) as attacker:
            for i in range(creates):  # removed again: the lab's address pool holds eight
                lab.client.networks.create(f"bench-w{i}", driver="bridge").remove()
            time.sleep(0.5)
            seen = attacker.stop()[6100]
        return {"backend": backend, "creates": creates, "docker": lab.version,
                "attempts": seen["attempts"], "got_in": seen["open"],
                "loadavg": Path("/proc/loadavg").read_text().split()[0]}
    finally:
        d.stop()
        ctr.remove(force=True)
        run_fwsync(lab, "remove")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--starts", type=int, default=100)
    ap.add_argument("--burst", type=int, default=30)
    ap.add_argument("--idle", type=float, default=60.0)
    ap.add_argument("--big", type=int, default=100_000, help="entries of the big set (0: skip)")
    ap.add_argument("--big-backends", default="iptables,nftables")
    ap.add_argument("--drifts", type=int, default=5)
    ap.add_argument("--flushes", type=int, default=50, help="flushed chains per backend (0: skip)")
    ap.add_argument("--flush-backends", default="nftables,iptables")
    ap.add_argument("--window-backends", default="iptables,nftables",
                    help="Docker 20.10's jump window, per backend ('': skip)")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()
    results = run(args)
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


def run(args: argparse.Namespace) -> dict[str, Any]:
    require("dockerd", "containerd", "runc", "iptables", "ipset", "nft")
    results: dict[str, Any] = {"command": " ".join(["bench/bench_daemon.py", *sys.argv[1:]]),
                               "cpus": os.cpu_count()}
    with DockerLab() as lab:
        rules = lab.dir / "rules"
        rules.mkdir()
        (rules / "10-bench.rules").write_text(RULES)
        d = DaemonProc(lab, rules, name="bench-daemon", env=BYTECODE).start()
        try:
            d.wait_ready()
            d.wait_for(lambda r: r.get("msg") == "reconcile"
                       and r["trigger"].startswith("reconnect"))
            results["idle_at_start"] = measure_idle(d, min(args.idle, 20.0))
            print(f"latency over {args.starts} starts...", file=sys.stderr)
            results["starts"] = measure_starts(lab, d, args.starts)
            print(f"burst of {args.burst}...", file=sys.stderr)
            results["burst"] = measure_burst(lab, d, args.burst)
            print(f"idle for {args.idle:.0f} s...", file=sys.stderr)
            results["idle"] = measure_idle(d, args.idle)
            results["containers_running_when_idle"] = len(lab.client.containers.list())
        finally:
            d.stop()
            run_fwsync(lab, "remove")
        results["flush"] = []
        for backend in (b for b in args.flush_backends.split(",") if b and args.flushes):
            print(f"{args.flushes} flushed chains, {backend}...", file=sys.stderr)
            results["flush"].append(measure_flush_repairs(lab, rules, backend, args.flushes))
        results["jump_window"] = [measure_jump_window(lab, rules, b)
                                  for b in args.window_backends.split(",") if b]
        results["big"] = []
        for backend in (b for b in args.big_backends.split(",") if b and args.big):
            print(f"{args.big} entries, {backend}: idle for {args.idle:.0f} s, "
                  f"{args.drifts} drifts...", file=sys.stderr)
            results["big"].append(measure_big(lab, rules, backend, args.big, args.idle,
                                              args.drifts))
    return results


if __name__ == "__main__":
    raise SystemExit(main())
