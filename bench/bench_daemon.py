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
            raise SystemExit(f"{name}: expected a kernel update, got {rec}")
        event_ms.append(rec["event_latency_ms"])
        call_ms.append((rec["enforced"] - called) * 1000)
        durations.append(rec["duration_ms"])
        for step in ("observe_ms", "plan_ms", "apply_ms"):
            steps.setdefault(step, []).append(rec[step])
        time.sleep(SPACING)
        if (i + 1) % 10 == 0:
            print(f"  {i + 1} starts: last event-to-enforced {event_ms[-1]:.1f} ms",
                  file=sys.stderr)
    by_decile = [summary(event_ms[k:k + 10])["p50"] for k in range(0, len(event_ms), 10)]
    return {"event_to_enforced_ms": summary(event_ms), "start_call_to_enforced_ms":
            summary(call_ms), "reconcile_duration_ms": summary(durations),
            "event_to_enforced_p50_by_tens_of_running_containers_ms": by_decile,
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
    own0, all0 = cpu_seconds(d.pid)
    t0 = time.monotonic()
    time.sleep(seconds)
    own1, all1 = cpu_seconds(d.pid)
    span = time.monotonic() - t0
    return {"seconds": round(span, 1),
            "cpu_percent_own": round(100 * (own1 - own0) / span, 3),
            "cpu_percent_with_children": round(100 * (all1 - all0) / span, 3),
            **{k.lower() + "_mib": round(v / 1024, 1) for k, v in memory_kib(d.pid).items()}}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--starts", type=int, default=100)
    ap.add_argument("--burst", type=int, default=30)
    ap.add_argument("--idle", type=float, default=60.0)
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()
    require("dockerd", "containerd", "runc", "iptables", "ipset", "nft")
    results: dict[str, Any] = {"command": " ".join(["bench/bench_daemon.py", *sys.argv[1:]]),
                               "cpus": os.cpu_count()}
    with DockerLab() as lab:
        rules = lab.dir / "rules"
        rules.mkdir()
        (rules / "10-bench.rules").write_text(RULES)
        d = DaemonProc(lab, rules, name="bench-daemon").start()
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
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
