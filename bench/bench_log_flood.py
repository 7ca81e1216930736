"""A SYN flood against a port the default refuses, with `logging low` and without: what logging
costs the host (issue 20, item 3).

    .venv/bin/python bench/bench_log_flood.py [--rate 5000] [--duration 10] [--sources 120]
                                              [--backends nftables,iptables] [--json FILE]

A Docker-like host (tests/lab.py's KernelLab: Docker 20.10's DNAT of [host]:5432 to the
container, written by hand) with `fwsync daemon` running. From the attacker's namespace, a raw
socket sends `--rate` SYNs a second for `--duration` seconds to HOST:5432, each from one of
`--sources` addresses of the attacker's /25 (so the host's reverse-path check lets them in) and
a fresh source port: every one is a new connection to the kernel, and the default drops it.
Run twice per backend, with the rules' `logging low` and with `logging off`, and reported:

- lines: decisions the daemon wrote in the window, a second (target: ≤ 20);
- the decisions file's growth, bytes a second;
- the daemon's CPU (its /proc utime + stime) in the window, as a share of one core, and the
  difference logging makes (target: ≤ 5 % of a core);
- the kernel's: the whole machine's softirq time (where forwarded packets are processed) in
  the window, as a share of one core, logging on against off (machine-wide: other load counts);
- lost: packets the kernel sent to the NFLOG group that the daemon did not get (the group's
  sequence numbers and socket overruns, which the daemon logs): must be 0 — what the rate limit
  lets through is not lost.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.daemon_helpers import DaemonProc  # noqa: E402
from tests.lab import HOST_ATTACKER_V4, TRUSTED_V4, KernelLab  # noqa: E402

PORT = 5432
LINES_TARGET = 20.0
CPU_TARGET = 0.05

# Runs in the attacker's namespace: SYNs with IP_HDRINCL, spread over `sources` addresses and
# paced to `rate` a second. Prints how many it sent.
FLOOD = r"""
import json, random, socket, struct, sys, time
dst, port, rate, duration, base, count = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), \
    float(sys.argv[4]), sys.argv[5], int(sys.argv[6])
prefix = base.rsplit(".", 1)[0]
sources = [f"{prefix}.{i}" for i in range(10, 10 + count)]
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
s.setsockopt(socket.IPPROTO_IP, socket.IP_HDRINCL, 1)
def csum(data):
    if len(data) % 2: data += b"\0"
    total = sum(struct.unpack(f"!{len(data)//2}H", data))
    while total >> 16: total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF
daddr = socket.inet_aton(dst)
sent, start = 0, time.monotonic()
while True:
    now = time.monotonic() - start
    if now >= duration: break
    due = int(now * rate)
    while sent < due:
        src = socket.inet_aton(sources[sent % len(sources)])
        sport = 1024 + (sent * 7919) % 64000
        tcp = struct.pack("!HHIIBBHHH", sport, port, random.getrandbits(32), 0, 5 << 4, 0x02,
                          64240, 0, 0)
        pseudo = src + daddr + struct.pack("!BBH", 0, 6, len(tcp))
        tcp = tcp[:16] + struct.pack("!H", csum(pseudo + tcp)) + tcp[18:]
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), sent & 0xFFFF, 0, 64, 6, 0,
                         src, daddr)
        s.sendto(ip + tcp, (dst, 0))
        sent += 1
    time.sleep(0.001)
print(json.dumps({"sent": sent, "seconds": time.monotonic() - start}))
"""


def _cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100.0  # utime + stime, in USER_HZ (100)


def _softirq() -> float:
    cpu = Path("/proc/stat").read_text().splitlines()[0].split()
    return int(cpu[7]) / 100.0  # the machine's softirq time, all CPUs


def _lines(path: Path) -> tuple[int, int]:
    if not path.exists():
        return 0, 0
    data = path.read_bytes()
    return data.count(b"\n"), len(data)


def flood(lab: KernelLab, backend: str, level: str, rate: float, duration: float,
          sources: int, tmp: Path) -> dict[str, Any]:
    rules = tmp / f"rules-{backend}-{level}"
    rules.mkdir(parents=True, exist_ok=True)
    (rules / "10-bench.rules").write_text(
        f"default deny\nlogging {level}\nallow from {TRUSTED_V4} to any port {PORT} proto tcp\n")
    name = f"flood-{backend}-{level}"
    d = DaemonProc(lab, rules, "--backend", backend, name=name,
                   env={"FWSYNC_DECISIONS": str(tmp / f"{name}.jsonl")}).start()
    decisions = tmp / f"{name}.jsonl"
    try:
        d.wait_ready(timeout=60)
        d.wait_for(lambda r: r.get("msg") == "reconcile" and r.get("result") == "applied",
                   timeout=60)
        time.sleep(1.0)
        lines0, bytes0 = _lines(decisions)
        cpu0, soft0, t0 = _cpu(d.pid), _softirq(), time.monotonic()
        out = lab.attacker.ns.run([sys.executable, "-I", "-c", FLOOD, HOST_ATTACKER_V4,
                                   str(PORT), str(rate), str(duration), lab.attacker.v4,
                                   str(sources)]).stdout
        time.sleep(0.5)  # what the kernel sent in the last moment reaches the daemon
        seconds = time.monotonic() - t0
        cpu, soft = _cpu(d.pid) - cpu0, _softirq() - soft0
        lines, size = (a - b for a, b in zip(_lines(decisions), (lines0, bytes0), strict=True))
        lost = [r for r in d.records() if r.get("msg") == "logged decisions lost"]
        sent = json.loads(out)
        return {"backend": backend, "logging": level, "sent": sent["sent"],
                "syn_per_second": round(sent["sent"] / sent["seconds"]),
                "lines_per_second": round(lines / seconds, 2), "lines": lines,
                "log_bytes_per_second": round(size / seconds),
                "daemon_core_share": round(cpu / seconds, 4),
                "softirq_core_share": round(soft / seconds, 4),
                "lost": lost[-1] if lost else None}
    finally:
        d.stop()


def run(rate: float = 5000.0, duration: float = 20.0, sources: int = 100,
        backends: str = "nftables,iptables") -> dict[str, Any]:
    results: list[dict[str, Any]] = []
    load = Path("/proc/loadavg").read_text().split()[0]
    with KernelLab("nft") as lab:
        lab.publish(PORT, 80)
        tmp = lab.dir / "flood"
        for backend in backends.split(","):
            for level in ("off", "low"):
                print(f"{backend}, logging {level}: {rate:.0f} SYN/s for {duration:.0f} s...",
                      file=sys.stderr)
                results.append(flood(lab, backend, level, rate, duration, sources, tmp))
    summary = []
    for backend in backends.split(","):
        on = next(r for r in results if r["backend"] == backend and r["logging"] == "low")
        off = next(r for r in results if r["backend"] == backend and r["logging"] == "off")
        extra = on["daemon_core_share"] - off["daemon_core_share"]
        summary.append({"backend": backend, "lines_per_second": on["lines_per_second"],
                        "lines_met": on["lines_per_second"] <= LINES_TARGET,
                        "daemon_extra_core_share": round(extra, 4),
                        "daemon_met": extra <= CPU_TARGET,
                        "softirq_extra_core_share": round(on["softirq_core_share"]
                                                          - off["softirq_core_share"], 4),
                        "lost": on["lost"]})
    return {"runs": results, "summary": summary, "rate": rate, "duration": duration,
            "sources": sources, "loadavg": load}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rate", type=float, default=5000.0)
    ap.add_argument("--duration", type=float, default=20.0)
    ap.add_argument("--sources", type=int, default=100)
    ap.add_argument("--backends", default="nftables,iptables")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    data = run(args.rate, args.duration, args.sources, args.backends)
    text = json.dumps(data, indent=2)
    if args.json:
        args.json.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
