import cProfile, pstats, subprocess, time, sys
from pathlib import Path
from fwsync.core.observed import DockerState, PublishedPort
from fwsync.reconcile import make_plan, apply_planned
from fwsync.backends.nftables import NftablesBackend
ports = tuple(PublishedPort(h, p, "tcp", f"c{p}", 80, container_ipv6=False) for p in (8080, 9090, 5432, 2222) for h in ("0.0.0.0", "::"))
docker = DockerState(ports=ports, containers=tuple(f"c{p}" for p in (8080,9090,5432,2222)))
b = NftablesBackend()
rules = Path("/tmp/prof/rules")
apply_planned(make_plan(rules, b, docker, watching=True))
times = []
pr = cProfile.Profile()
for i in range(int(sys.argv[1])):
    subprocess.run(["nft", "flush", "chain", "inet", "fwsync", "inbound"], check=True)
    t0 = time.perf_counter()
    pr.enable()
    planned = make_plan(rules, b, docker, watching=True)
    t1 = time.perf_counter()
    apply_planned(planned)
    pr.disable()
    t2 = time.perf_counter()
    times.append(((t1-t0)*1000, (t2-t1)*1000))
    assert not planned.plan.empty
times.sort(key=lambda t: t[0]+t[1])
print("plan/apply ms p50:", times[len(times)//2], "max:", times[-1])
pstats.Stats(pr).sort_stats("cumulative").print_stats(30)
