"""The fwsync demo: a throw-away Docker host in a network namespace, the exposed-postgres gotcha,
and fwsync closing it. Everything it makes (namespaces, dockerd, files) is removed at the end.

    tools/dev demo             (as root; or: make demo)
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.lab import DOCKER_TOOLS, DockerLab, require, run_fwsync, wait_for  # noqa: E402

RULES = REPO / "rules"
BOLD, DIM, GREEN, RED, RESET = "\033[1m", "\033[2m", "\033[32m", "\033[31m", "\033[0m"
if not sys.stdout.isatty():
    BOLD = DIM = GREEN = RED = RESET = ""


def step(title: str) -> None:
    print(f"\n{BOLD}== {title}{RESET}")


def show(text: str) -> None:
    for line in text.rstrip().splitlines():
        print(f"   {DIM}|{RESET} {line}")


def verdicts(lab: DockerLab, port: int, note: str = "") -> dict[str, str]:
    got = {"office (198.51.100.10)": lab.trusted.probe(port),
           "stranger (203.0.113.7)": lab.attacker.probe(port)}
    for who, state in got.items():
        colour = GREEN if state == "open" else RED
        print(f"   {who:<24} → host port {port}: {colour}{state}{RESET} {note}")
    return got


def fwsync(lab: DockerLab, *args: str) -> None:
    print(f"   $ fwsync {' '.join(args)} --rules rules/")
    res = run_fwsync(lab, *args, rules=RULES)
    show(res.stdout + res.stderr)
    if res.returncode not in (0, 2):
        raise SystemExit(f"fwsync {args[0]} failed with exit status {res.returncode}")


def main() -> int:
    require(*DOCKER_TOOLS)
    t0 = time.monotonic()
    step("A Docker host in a network namespace, with ufw set to `default deny incoming`")
    with DockerLab() as lab:
        lab.enable_ufw()
        show(lab.ufw("status", "verbose").stdout)
        print("   Its neighbours: the office host 198.51.100.10 and a stranger at 203.0.113.7.")

        step("`docker run -p 5432:80 ...` — a database published on port 5432")
        lab.run_web("db", {"80/tcp": 5432}, restart_policy="always")
        print("   (a busybox server stands in for postgres: no registry is reachable here)")
        before = verdicts(lab, 5432)
        lab_port = verdicts(lab, 8080, "(nothing published there: ufw's default deny)")
        if before["stranger (203.0.113.7)"] == "open":
            print(f"   {RED}The gotcha:{RESET} ufw says deny, yet the stranger reaches the "
                  "database.\n   Docker DNATs published ports before ufw's INPUT rules "
                  "ever see them.")
        del lab_port

        step("The rules, kept in git (rules/)")
        for path in sorted(RULES.glob("*.rules")):
            print(f"   {BOLD}{path.relative_to(REPO)}{RESET}")
            show(path.read_text())

        step("fwsync check, then plan: what would change")
        fwsync(lab, "check")
        fwsync(lab, "plan")

        step("fwsync apply: one iptables-restore transaction per address family")
        fwsync(lab, "apply")
        after = verdicts(lab, 5432)

        step("Container restarts get new addresses; the rules don't care")
        lab.client.containers.get("db").restart(timeout=1)
        wait_for(lab.trusted, lab.trusted.host_v4, 5432)
        verdicts(lab, 5432, "(after docker restart)")
        lab.run_web("late", {"80/tcp": 9000})
        verdicts(lab, 9000, "(published after apply: denied without re-applying)")

        step("fwsync status: who may reach each published port, and why")
        fwsync(lab, "status")

        step("fwsync remove: takes out fwsync's rules and nothing else")
        fwsync(lab, "remove")
        verdicts(lab, 5432, "(fwsync removed: back to Docker's default)")
        print("\n   Cleaning up the namespaces, dockerd and its files...")
    ok = (before["stranger (203.0.113.7)"] == "open"
          and after == {"office (198.51.100.10)": "open", "stranger (203.0.113.7)": "filtered"})
    step(f"Done in {time.monotonic() - t0:.0f} s: "
         + (f"{GREEN}the gotcha was shown and closed.{RESET}" if ok
            else f"{RED}unexpected verdicts, see above.{RESET}"))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
