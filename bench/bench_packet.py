"""Packet-path cost: the new-connection rate through fwsync's firewall, as a ratio to the same path
with no firewall, for allowlists of N entries, both backends, in one run.

    .venv/bin/python bench/bench_packet.py [--rounds 5] [--duration 2] [--sizes 10,1k,10k,100k]
                                           [--linear-sizes 10k] [--json FILE]

Every configuration is its own Docker-like host (tests/lab.py's KernelLab), made once and kept for
the whole run, three namespaces on the path:

    client ──veth── HOST (router: Docker 20.10's DNAT of [host]:5432 to the container's port 80,
                          FORWARD chains, fwsync's firewall) ──bridge── container (accept-and-close)

- the client (two loadgen.py processes, asyncio, 8 concurrent connectors each) connects over
  IPv6 to HOST port 5432, waits for the server's FIN, closes; its address is the LAST entry of
  the allowlist. Two processes, because one alone is the bottleneck (a core at 100%, the machine
  ~65% busy); with two the machine is saturated and the rate is what the host can carry;
- the container namespace runs the lab's accept-and-close server (one Python process);
- "no firewall" is the same host with Docker's rules and no fwsync; "set" configurations apply
  `allow from $big to any port 5432 proto tcp` with `define big file` of N entries; "linear" ones
  apply N rules `allow from ADDR to any port 5432` (both backends merge them into one rule
  with a source set per protocol).

Before measuring, each configuration is checked with real packets: the client's connections go
through, the attacker namespace's (not in the allowlist) are filtered, so the rate is measured on
the allow path of a firewall that really is there. Then rounds: in each round the no-firewall
host is measured before and after every other configuration (B c1 B c2 ... cn B, the order of
the c's rotating), and each run is compared with the mean of the two no-firewall runs around it,
so load from elsewhere on the machine that changes more slowly than a few seconds cancels out.

Two figures per configuration, median and min-max over the rounds:
- the rate ratio (the target: >= 0.9 of the no-firewall rate with 10k entries);
- CPU per connection: the CPU time the clients and the server were charged in the window
  (the kernel's work for their packets, the firewall's included, runs in their context and is
  charged to them), divided by the connections. Other load on the machine takes CPU away from
  them but adds nothing to this, so it is far less noisy than the rate; its increase over the
  no-firewall runs is what the firewall costs per new connection, and no-firewall CPU / this
  CPU is the rate ratio that a machine busy with this work alone would show.
Diagnostics per run: the clients', the server's and the machine's CPU, connect latency, stalls
(connects > 0.5 s: a lost SYN), errors, conntrack drop counters, to tell a firewall-bound figure
from a client-bound or a stalling one.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import (
    BACKENDS,
    BENCH,
    PORT,
    Spread,
    Variant,
    allowlist,
    close_all,
    dump_json,
    fwsync,
    interruptible,
    leftover_namespaces,
    md_table,
    new_lab,
    parse_sizes,
    prepare_python,
    size_label,
    write_rules,
)

from tests.lab import HOST_TRUSTED_V6, KernelLab, LabError

TARGET_RATIO = 0.9  # with 10k entries, >= 0.9 of the no-firewall rate
TARGET_N = 10_000
CT_COUNTERS = ("invalid", "insert_failed", "drop", "early_drop", "search_restart")


@dataclass
class Config:
    name: str
    backend: str | None = None  # None: no firewall
    variant: Variant | None = None
    n: int = 0
    lab: KernelLab | None = None
    status: str = "ok"  # ok | n/a | error
    detail: str = ""
    apply_seconds: float | None = None
    runs: list[dict[str, Any]] = field(default_factory=list)  # one per round
    conntrack: dict[str, int] = field(default_factory=dict)

    @property
    def baseline(self) -> bool:
        return self.backend is None


def configurations(sizes: list[int], linear_sizes: list[int],
                   backends: tuple[str, ...]) -> list[Config]:
    configs = [Config("no firewall")]
    configs += [Config(f"{b} set N={size_label(n)}", b, "set", n) for n in sizes for b in backends]
    configs += [Config(f"{b} linear N={size_label(n)}", b, "linear", n)
                for n in linear_sizes for b in backends]
    return configs


def setup(config: Config, tmp: Path) -> None:
    """Apply the configuration's rules (nothing for the baseline) and check it with packets."""
    try:
        _setup(config, tmp)
    except (LabError, subprocess.SubprocessError, OSError) as exc:
        config.status, config.detail = "error", f"set-up: {exc}"


def _setup(config: Config, tmp: Path) -> None:
    lab = config.lab
    assert lab is not None
    # More ephemeral ports: a port comes back less often while the server's TIME_WAIT holds it.
    lab.trusted.ns.set_sysctls({"net.ipv4.ip_local_port_range": "1024 65535"})
    if config.backend is not None and config.variant is not None:
        rules = write_rules(tmp / config.name.replace(" ", "_").replace("=", ""),
                            config.variant, allowlist(config.n))
        res = fwsync(lab, "apply", "--backend", config.backend, "--yes", rules=rules)
        config.apply_seconds = res.seconds
        if res.returncode != 0:
            config.status = "n/a" if res.unavailable else "error"
            config.detail = f"apply: exit {res.returncode}: {res.tail()}"
            return
    want_attacker = "open" if config.baseline else "filtered"
    got = (lab.trusted.probe(PORT, v6=True, timeout=2.0),
           lab.attacker.probe(PORT, v6=True, timeout=1.0))
    if got != ("open", want_attacker):
        config.status = "error"
        config.detail = (f"packet check: client {got[0]} (want open), attacker {got[1]} "
                         f"(want {want_attacker})")
    config.conntrack = conntrack_counters(lab)


def conntrack_counters(lab: KernelLab) -> dict[str, int]:
    """Sums over CPUs of HOST's /proc/net/stat/nf_conntrack, plus the current entry count."""
    text = lab.host.run(["cat", "/proc/net/stat/nf_conntrack"], check=False).stdout.split("\n")
    header, rows = text[0].split(), [r.split() for r in text[1:] if r.strip()]
    sums = {name: sum(int(r[i], 16) for r in rows) for i, name in enumerate(header)
            if name in CT_COUNTERS}
    count = lab.host.run(["cat", "/proc/sys/net/netfilter/nf_conntrack_count"], check=False)
    sums["entries"] = int(count.stdout.strip() or 0)
    return sums


def measure(config: Config, args: argparse.Namespace) -> dict[str, Any]:
    """One run: --clients load generators at once in the client namespace, results summed."""
    lab = config.lab
    assert lab is not None
    cmd = [*lab.trusted.ns.nsenter_prefix(), sys.executable, "-I", str(BENCH / "loadgen.py"),
           HOST_TRUSTED_V6, str(PORT), "--connectors", str(args.connectors),
           "--warmup", str(args.warmup), "--duration", str(args.duration),
           *(a for pid in lab.ctr.pids() for a in ("--watch-pid", str(pid)))]
    procs: list[subprocess.Popen[str]] = []
    try:
        for _ in range(args.clients):
            procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                          text=True))
        outs = [p.communicate(timeout=args.warmup + args.duration + 30) for p in procs]
    finally:
        for p in procs:  # only on an error or an interrupt: the generators end by themselves
            if p.poll() is None:
                p.kill()
                p.wait(10)
    for p, (_out, err) in zip(procs, outs, strict=True):
        if p.returncode != 0:
            raise LabError(f"loadgen exited {p.returncode}: {err[-800:]}")
    parts: list[dict[str, Any]] = [json.loads(out) for out, _err in outs]
    errors: dict[str, int] = {}
    for part in parts:
        for name, count in part["errors"].items():
            errors[name] = errors.get(name, 0) + count
    rate = sum(p["rate"] for p in parts)
    client_cpu = sum(p["client_cpu"] for p in parts)
    server_cpu = statistics.mean(p["watched_cpu"] for p in parts)  # each saw the same server
    return {
        "rate": rate,
        "connections": sum(p["connections"] for p in parts),
        "connect_p50_ms": statistics.median(p["connect_p50_ms"] for p in parts),
        "connect_p99_ms": max(p["connect_p99_ms"] for p in parts),
        "connect_max_ms": max(p["connect_max_ms"] for p in parts),
        "stalls": sum(p["stalls"] for p in parts),
        "unfinished": sum(p["unfinished"] for p in parts),
        "errors": errors,
        "client_cpu": client_cpu,
        "server_cpu": server_cpu,
        "machine_busy": statistics.mean(p["machine_busy"] for p in parts),
        # CPU that the clients and the server were charged per connection, the kernel's work
        # done in their context (the firewall's too) included. Other load on the machine takes
        # CPU away from them but does not add to this, unlike to the rate.
        "cpu_us": 1e6 * (client_cpu + server_cpu) / rate if rate else float("nan"),
    }


def schedule(configs: list[Config], rounds: int) -> list[list[Config]]:
    """Per round: the no-firewall host before and after every other configuration
    (B c1 B c2 B ... cn B), their order rotating from round to round."""
    base = next(c for c in configs if c.baseline)
    others = [c for c in configs if not c.baseline]
    plan = []
    for r in range(rounds):
        shift = r % len(others) if others else 0
        order = others[shift:] + others[:shift]
        plan.append([base, *(x for c in order for x in (c, base))])
    return plan


def run(sizes: list[int], linear_sizes: list[int], backends: tuple[str, ...],
        args: argparse.Namespace, log: Any = print) -> dict[str, Any]:
    configs = configurations(sizes, linear_sizes, backends)
    prepare_python()
    t_start = time.monotonic()
    problems: list[str] = []
    stack = contextlib.ExitStack()
    try:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="fwsb-packet-")))
        for c in configs:
            c.lab = new_lab(stack)
        # Two at a time (two cores): the 100k and the linear applies take a while.
        biggest_first = sorted(configs, key=lambda c: -(c.n * (100 if c.variant == "linear"
                                                             else 1)))
        with ThreadPoolExecutor(max_workers=2) as pool:
            list(pool.map(lambda c: setup(c, tmp), biggest_first))
        for c in configs:
            applied = f"apply {c.apply_seconds:.1f} s" if c.apply_seconds is not None else ""
            log(f"packet: {c.name:24} {c.status:5} {applied} {c.detail}".rstrip())
        live = [c for c in configs if c.status == "ok"]
        if not any(c.baseline for c in live):
            raise LabError("the no-firewall host failed its packet check: nothing to compare to")
        plan = schedule(live, args.rounds)
        log(f"packet: {len(configs)} hosts set up in {time.monotonic() - t_start:.0f} s; "
            f"{args.rounds} rounds of {len(plan[0])} runs of {args.duration:g} s "
            f"(+{args.warmup:g} s warm-up)")
        for r, sequence in enumerate(plan):
            done: list[dict[str, Any]] = []
            for i, c in enumerate(sequence):
                one = measure(c, args)
                one["round"], one["seq"] = r, i
                c.runs.append(one)
                done.append(one)
                log(f"  round {r + 1}/{args.rounds} {c.name:24} {one['rate']:8.0f}/s  "
                    f"cpu/conn {one['cpu_us']:5.0f} µs  clients {one['client_cpu']:.2f} "
                    f"server {one['server_cpu']:.2f} machine {one['machine_busy']:.0%}  "
                    f"stalls {one['stalls']}"
                    + (f"  errors {one['errors']}" if one["errors"] else ""))
            for i, c in enumerate(sequence):  # each run between two baseline runs
                if not c.baseline:
                    before, after = done[i - 1], done[i + 1]
                    done[i]["base_rate"] = (before["rate"] + after["rate"]) / 2
                    done[i]["base_cpu_us"] = (before["cpu_us"] + after["cpu_us"]) / 2
        for c in live:
            after_ct = conntrack_counters(c.lab) if c.lab is not None else {}
            c.conntrack = {k: v - c.conntrack.get(k, 0) if k != "entries" else v
                           for k, v in after_ct.items()}
    finally:
        problems += close_all(stack)
        problems += [f"namespace left behind: {n}" for n in leftover_namespaces()]
    return {
        "rounds": args.rounds, "duration": args.duration, "warmup": args.warmup,
        "connectors": args.connectors, "clients": args.clients, "sizes": sizes,
        "linear_sizes": linear_sizes, "backends": list(backends),
        "seconds": time.monotonic() - t_start, "cleanup_problems": problems,
        "configs": [{"name": c.name, "backend": c.backend, "variant": c.variant, "n": c.n,
                     "status": c.status, "detail": c.detail, "apply_seconds": c.apply_seconds,
                     "conntrack": c.conntrack, "runs": c.runs} for c in configs],
    }


# --------------------------------------------------------------------------- report


def rate_ratios(c: dict[str, Any]) -> list[float]:
    """Per round: the rate over the mean of the two no-firewall runs around it."""
    return [r["rate"] / r["base_rate"] for r in c["runs"] if r.get("base_rate")]


def cpu_ratios(c: dict[str, Any]) -> list[float]:
    """Per round: the no-firewall CPU per connection over this one's (the rate ratio that a
    machine busy with this work alone would show)."""
    return [r["base_cpu_us"] / r["cpu_us"] for r in c["runs"] if r.get("base_cpu_us")]


def added_us(c: dict[str, Any]) -> list[float]:
    """Per round: CPU per connection minus the no-firewall one around it: the firewall's cost."""
    return [r["cpu_us"] - r["base_cpu_us"] for r in c["runs"] if r.get("base_cpu_us")]


def _fmt(s: Spread | None, spec: str) -> str:
    if s is None:
        return "—"
    return f"{s.median:{spec}} ({s.low:{spec}} to {s.high:{spec}})"


def _what(c: dict[str, Any]) -> str:
    if c["backend"] is None:
        return "Docker's rules only"
    if c["variant"] == "set":
        return f"1 rule, set of {size_label(c['n'])}"
    # Both backends merge neighbouring rules with one verdict into a source set per protocol.
    return f"{size_label(c['n'])} rules → 2 rules, sets of {size_label(c['n'])}"


def report(result: dict[str, Any]) -> str:
    configs = result["configs"]
    rows, diag = [], []
    for c in configs:
        if c["status"] != "ok":
            note = "n/a (backend not available)" if c["status"] == "n/a" else "error (see notes)"
            rows.append([c["name"], _what(c), note, "", "", "", ""])
            continue
        runs = c["runs"]
        is_base = c["backend"] is None
        rows.append([
            c["name"], _what(c), _fmt(Spread.of([r["rate"] for r in runs]), ".0f"),
            "1 (reference)" if is_base else _fmt(Spread.of(rate_ratios(c)), ".2f"),
            _fmt(Spread.of([r["cpu_us"] for r in runs]), ".0f"),
            "—" if is_base else _fmt(Spread.of(added_us(c)), ".0f"),
            "1 (reference)" if is_base else _fmt(Spread.of(cpu_ratios(c)), ".2f"),
        ])
        ct = c["conntrack"]
        ct_bad = {k: v for k, v in ct.items() if k in ("insert_failed", "drop", "early_drop") and v}
        diag.append([
            c["name"],
            f"{statistics.median(r['client_cpu'] for r in runs):.2f}",
            f"{statistics.median(r['server_cpu'] for r in runs):.2f}",
            f"{statistics.median(r['machine_busy'] for r in runs) * 100:.0f}%",
            f"{statistics.median(r['connect_p50_ms'] for r in runs):.2f} / "
            f"{max(r['connect_p99_ms'] for r in runs):.2f} / "
            f"{max(r['connect_max_ms'] for r in runs):.0f}",
            str(sum(r["stalls"] for r in runs) + sum(r["unfinished"] for r in runs)),
            str(sum(sum(r["errors"].values()) for r in runs)),
            ", ".join(f"{k} {v}" for k, v in ct_bad.items()) or "0",
        ])
    out = [
        f"**New-connection rate through the firewall** (IPv6, allowed client = last entry; "
        f"{result['rounds']} rounds, {result['duration']:g} s runs, {result['clients']} client "
        f"processes x {result['connectors']} connectors; median (min to max) over the rounds; "
        "each run's ratio is to the two no-firewall runs just before and after it)\n\n"
        + md_table(["configuration", "in the kernel", "connections/s",
                    "rate ratio to no firewall", "CPU µs per connection",
                    "added by the firewall, µs", "ratio from CPU per connection"], rows),
        "Diagnostics (medians over the runs; latency maximum and counts over all runs):\n\n"
        + md_table(["configuration", "clients' CPU (cores)", "server CPU (cores)",
                    "machine busy", "connect ms p50 / p99 / max", "stalls > 0.5 s", "errors",
                    "conntrack drops"], diag),
    ]
    setup_rows = [[c["name"], f"{c['apply_seconds']:.1f} s"] for c in configs
                  if c["apply_seconds"] is not None]
    if setup_rows:
        out.append("Set-up apply time per configuration (one run, two applies in parallel):\n\n"
                   + md_table(["configuration", "apply"], setup_rows))
    notes = [f"- {c['name']}: {c['status']}: {c['detail']}" for c in configs
             if c["status"] == "error"]
    if notes:
        out.append("Notes:\n" + "\n".join(notes))
    out.append(target_verdict(result))
    return "\n\n".join(out)


def target_verdict(result: dict[str, Any]) -> str:
    what = (f"Target (nftables, {size_label(TARGET_N)} entries, "
            f"rate >= {TARGET_RATIO} x no firewall)")
    for c in result["configs"]:
        if (c["backend"], c["variant"], c["n"]) == ("nftables", "set", TARGET_N):
            rates = Spread.of(rate_ratios(c)) if c["status"] == "ok" else None
            cpus = Spread.of(cpu_ratios(c)) if c["status"] == "ok" else None
            if rates is None or cpus is None:
                return f"{what}: not measured ({c['status']})"
            ok = "met" if min(rates.median, cpus.median) >= TARGET_RATIO else "NOT met"
            return (f"{what}: {ok}: median rate ratio {rates.median:.2f} "
                    f"(rounds {rates.low:.2f} to {rates.high:.2f}), ratio from CPU per "
                    f"connection {cpus.median:.2f} ({cpus.low:.2f} to {cpus.high:.2f})")
    return f"{what}: not in this run"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--duration", type=float, default=2.0, help="seconds measured per run")
    p.add_argument("--warmup", type=float, default=0.5, help="seconds not counted per run")
    p.add_argument("--clients", type=int, default=2,
                   help="load generator processes (2: one alone is the bottleneck, see docs)")
    p.add_argument("--connectors", type=int, default=8, help="per load generator")
    p.add_argument("--sizes", type=parse_sizes, default=parse_sizes("10,1k,10k,100k"))
    p.add_argument("--linear-sizes", type=parse_sizes, default=parse_sizes("10k"))
    p.add_argument("--backends", default=",".join(BACKENDS))
    p.add_argument("--json", help="also write the raw measurements here")
    args = p.parse_args(argv)
    if not (1 <= args.rounds <= 50 and 0 < args.duration <= 60 and 0 <= args.warmup <= 10
            and 1 <= args.clients <= 8):
        p.error("--rounds 1..50, --duration (0, 60], --warmup [0, 10], --clients 1..8")
    args.backends = tuple(b for b in args.backends.split(",") if b)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result = run(args.sizes, args.linear_sizes, args.backends, args)
    dump_json(args.json, result)
    print()
    print(report(result))
    print(f"\n(packet benchmark: {result['seconds']:.0f} s)")
    for problem in result["cleanup_problems"]:
        print(f"cleanup: {problem}", file=sys.stderr)
    failed = any(c["status"] == "error" for c in result["configs"])
    return 1 if failed or result["cleanup_problems"] else 0


if __name__ == "__main__":
    raise SystemExit(interruptible(main))
