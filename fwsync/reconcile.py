"""The one path from rules on disk to a Plan, shared by the CLI and the daemon.

rules ──load──▶ Policy ─┐
Docker ──observe──▶ DockerState ─┼─▶ build ─▶ Ruleset ─▶ backend.render ─┐
kernel ──backend.read────────────────────────────────────────────────────┴─▶ diff ─▶ Plan

The plan also takes out whatever the other backend left in the kernel, so switching backends
(`apply --backend nftables` where iptables was applied) is one run: the new rules go in first,
then the old ones come out.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from fwsync.backends.base import Backend, BackendError
from fwsync.backends.iptables import IptablesBackend
from fwsync.backends.nftables import NftablesBackend
from fwsync.core.audit import audited_in_kernel, audited_names
from fwsync.core.build import build_ruleset, later_proxy_ports, unresolvable
from fwsync.core.counts import RuleCount, port_counts, rule_counts
from fwsync.core.diff import Desired, Plan, State, diff
from fwsync.core.enforcing import Enforcement, nothing_held
from fwsync.core.observed import DockerState, as_remembered
from fwsync.core.ruleset import Ruleset
from fwsync.observe.docker import observe_docker
from fwsync.observe.memory import memory_path, recall, remember
from fwsync.rules.load import load_rules
from fwsync.rules.model import Diagnostic, Policy

if TYPE_CHECKING:
    from fwsync.verify.impact import Impact

BACKENDS = ("auto", "iptables", "nftables")


class RulesInvalid(Exception):
    def __init__(self, diagnostics: tuple[Diagnostic, ...]) -> None:
        super().__init__(f"{sum(d.severity == 'error' for d in diagnostics)} error(s) in rules")
        self.diagnostics = diagnostics


@dataclass(frozen=True)
class Planned:
    policy: Policy
    docker: DockerState
    plan: Plan
    backend_reason: str
    warnings: tuple[Diagnostic, ...]
    backend: Backend
    others: tuple[Backend, ...] = ()  # other backends that still hold fwsync objects
    # Why this plan must not be applied (apply_planned raises it); None when it may be.
    refusal: str | None = None
    # The desired ruleset the plan was rendered from (status shows it without building again).
    ruleset: Ruleset | None = None
    # The chosen backend's objects as the plan read them from the kernel (status asks no
    # second read; another backend's leftovers, which the plan removes, are not in it).
    current: State = field(default_factory=dict, repr=False)


def _new(name: str) -> Backend:
    if name == "iptables":
        return IptablesBackend()
    if name == "nftables":
        return NftablesBackend()
    raise BackendError(f"unknown backend {name!r}; expected one of {', '.join(BACKENDS)}")


def _holds_objects(backend: Backend) -> bool:
    try:
        return backend.holds()
    except BackendError:
        return False  # its tools are missing or unusable: then it holds nothing of ours


def choose_backend(name: str, docker: DockerState) -> tuple[Backend, str]:
    """The backend to use and why. `auto` takes nftables where iptables cannot work (Docker
    writes nftables, or overtakes fwsync's IPv6 jump); otherwise where fwsync's objects are:
    its nftables table, when the kernel holds it (an `apply --backend nftables` earlier), and
    iptables, Docker's default firewall, when not."""
    if name != "auto":
        return _new(name), f"--backend {name}"
    if docker.firewall_backend and "nftables" in docker.firewall_backend:
        return _new("nftables"), f"auto: Docker reports its firewall backend is " \
                                 f"{docker.firewall_backend}"
    if not docker.firewall_backend and _ipv6_preempted():
        # Docker before 28.1 does not report its firewall backend
        why = ("auto: Docker writes its IPv6 rules without a DOCKER-USER chain (20.10 with "
               "--ip6tables) and puts them above any jump of fwsync's at every start and new "
               "network; fwsync's nftables table runs before every iptables chain")
        if nftables_available():
            return _new("nftables"), why
        return _new("iptables"), (f"{why}, but this Python cannot import libnftables' bindings "
                                  "(python3-nftables): iptables, whose IPv6 jump Docker "
                                  "overtakes until the next apply (the daemon: a drift tick)")
    # iptables would do. fwsync's nftables table, where it is in the kernel, is what is
    # enforced now: it runs before Docker's iptables chains as well, and an earlier `apply
    # --backend nftables` is not undone by a command run with the default.
    nft = NftablesBackend()
    if _holds_objects(nft):
        return nft, "auto: fwsync's nftables table is what is enforced now"
    if docker.firewall_backend:
        return _new("iptables"), f"auto: Docker reports its firewall backend is " \
                                 f"{docker.firewall_backend}"
    if docker.error is None and not (docker.stale is not None and docker.seen_at is None):
        return _new("iptables"), (f"auto: Docker {docker.version or ''} writes iptables "
                                   "(it reports no firewall backend)").replace("  ", " ")
    # Docker cannot be asked and has never answered (a memory that knows nothing).
    return _new("iptables"), "auto: Docker unreachable; iptables is Docker's default firewall"


def _ipv6_preempted() -> bool:
    try:
        return IptablesBackend().docker_ipv6_without_user_chain()
    except BackendError:
        return False  # no iptables to read: nothing of Docker's to be overtaken by either


def nftables_available() -> bool:
    try:
        import nftables  # noqa: F401  # Debian's python3-nftables
    except ImportError:
        return False
    return True


def select_backend(name: str) -> Backend:
    """A backend by name, for commands that don't need Docker to choose (`auto` → the one
    that holds fwsync's objects now, else iptables)."""
    if name == "auto":
        nft = NftablesBackend()
        return nft if _holds_objects(nft) else IptablesBackend()
    return _new(name)


def all_backends() -> tuple[Backend, ...]:
    return IptablesBackend(), NftablesBackend()


def load_policy(rules: Path) -> tuple[Policy, tuple[Diagnostic, ...]]:
    result = load_rules(rules)
    if not result.ok or result.policy is None:
        raise RulesInvalid(result.diagnostics)
    return result.policy, result.diagnostics


def observe_now() -> DockerState:
    """Docker now, or, when it cannot be asked, what it reported when rules were last
    enforced (observe/memory.py): the one way every command sees Docker."""
    observed = observe_docker()
    return as_remembered(observed, recall() if observed.error is not None else None)


def remember_enforced(docker: DockerState) -> str | None:
    """After a successful apply or reconcile: keep what Docker reported, for the next time it
    cannot be asked. A state from memory is kept as it is; with Docker never having answered,
    an empty record says that the rules were built knowing nothing of it (a later apply then
    narrows nothing by knowing nothing). An error message if it could not be written."""
    if docker.stale is not None:
        return None
    return remember(docker if docker.error is None else DockerState())


def make_plan(rules: Path, backend: Backend | str = "auto",
              docker: DockerState | None = None, *, full: bool = False,
              watching: bool = False) -> Planned:
    """Everything is read before anything could be written: an invalid rules file stops here.
    `backend` as a name is chosen here (and others' leftovers are planned for removal); as an
    instance it is used as it is."""
    policy, warnings = load_policy(rules)
    observed = docker if docker is not None else observe_now()
    return plan_policy(policy, observed, backend, warnings, full=full, watching=watching)


def plan_policy(policy: Policy, observed: DockerState, backend: Backend | str,
                warnings: tuple[Diagnostic, ...] = (), *, full: bool = False,
                watching: bool = False) -> Planned:
    """A loaded policy → a Plan (build → render → read → diff). make_plan's second half, and
    what the daemon runs for the last good policy while the rules on disk are invalid.

    The kernel is read against what is desired: a set whose name is the digest of the content
    desired gives it is not listed element by element (Backend.read). `full` lists every
    element, to find a hand edit inside such a set.

    `watching`: the caller (the daemon) reconciles again as soon as Docker answers, so a rule
    that cannot be resolved now is enforced from then on, instead of refusing the plan: at boot
    the daemon runs before dockerd (systemd/fwsync.service, Before=docker.service), and a
    refusal there would keep Docker from ever starting."""
    if isinstance(backend, str):
        chosen, why = choose_backend(backend, observed)
        if backend == "auto" and observed.stale is not None:
            why += " (Docker cannot be asked now: as it last reported)"
        others = tuple(b for b in all_backends() if b.name != chosen.name and _holds_objects(b))
    else:
        chosen, why, others = backend, backend.name, ()
    detail = chosen.detect()
    built = build_ruleset(policy, observed)
    if built.problems:  # too big: refused before the kernel is even read
        raise RulesInvalid(built.problems)
    desired = chosen.render(built.ruleset)
    held = dict(chosen.read(None if full else desired.state))
    current = dict(held)
    for other in others:
        current.update(other.read({}))
    window = later_proxy_ports(built.ruleset, observed.ports, chosen.proxy_catchall)
    notes = built.notes + ((window,) if window else ()) + tuple(
        f"the {o.name} backend's objects will be removed (switching to {chosen.name})"
        for o in others)
    plan = diff(chosen.name, desired, current, notes=notes)
    if plan.empty and held:
        # The kernel holds what fwsync renders: whether that gives the policy's verdicts is
        # asked of the objects as listed, not assumed from the renderers.
        plan = replace(plan, disagreements=kernel_disagreements(
            built.ruleset, observed, chosen.name, held))
    refusal = None
    if observed.error is not None and current and not plan.empty:
        # fwsync's rules are in the kernel, made when Docker answered (or from a memory that is
        # gone): built knowing nothing of Docker now, they would lose every `to container` rule
        # and every bridge Docker named, and open what those deny.
        refusal = (f"Docker could not be asked ({observed.error}) and fwsync has no record of "
                   f"what it reported when the rules in the kernel were made ({memory_path()}):"
                   " applying now could drop `to container` rules and Docker's bridges and open "
                   "what they deny. Start Docker (or point DOCKER_HOST at it) and apply again")
    blind = () if watching else unresolvable(policy, observed)
    if refusal is None and blind:
        # An empty kernel too: an apply would say "enforced" with these rules void.
        first = blind[0]
        more = f" and {len(blind) - 1} more" if len(blind) > 1 else ""
        refusal = (f"Docker could not be asked ({observed.error or observed.stale}) and fwsync "
                   f"has no record of what it reported ({memory_path()}): "
                   f"{first.origin} `{first.origin.text}`{more} cannot be resolved to any "
                   "port, and applying now would leave open what it denies. Start Docker (or "
                   "point DOCKER_HOST at it) and apply again")
    return Planned(policy=policy, docker=observed, plan=plan, backend_reason=f"{why}; {detail}",
                   warnings=warnings, backend=chosen, others=others, refusal=refusal,
                   ruleset=built.ruleset, current=held)


def kernel_disagreements(ruleset: Ruleset, docker: DockerState, backend: str,
                         held: State) -> tuple[str, ...]:
    """Where fwsync's objects as the kernel lists them (`held`, a backend's read) give another
    verdict than the policy, for every published binding (fwsync.verify.agree)."""
    from fwsync.verify.agree import disagreements

    return tuple(str(d) for d in disagreements(ruleset, docker.ports, backend, held))


def check_enforced(backend: Backend, ruleset: Ruleset, docker: DockerState,
                   held: State) -> Enforcement:
    """Is the policy enforced, as the kernel holds it now? fwsync's rules reached first
    (core/enforcing, from the chains around them) and, as listed (`held`), giving the policy's
    verdicts (fwsync.verify). The one answer behind status' "Enforcing", apply's last line,
    doctor's not-enforcing and the daemon's STATUS."""
    if not held:
        return nothing_held(backend.name)
    return replace(backend.enforcement(),
                   disagreements=kernel_disagreements(ruleset, docker, backend.name, held),
                   audited=audited_names(ruleset, audited_in_kernel(held)))


def planned_enforcement(planned: Planned) -> Enforcement:
    """check_enforced for what a plan read (the plan's own answer, when it had nothing to
    write, is not computed twice)."""
    backend = planned.backend
    if not planned.current:
        return nothing_held(backend.name)
    assert planned.ruleset is not None
    if planned.plan.empty:
        return replace(backend.enforcement(), disagreements=planned.plan.disagreements,
                       audited=audited_names(planned.ruleset,
                                             audited_in_kernel(planned.current)))
    return check_enforced(backend, planned.ruleset, planned.docker, planned.current)


def rule_counts_now(backend: Backend, policy: Policy) -> tuple[RuleCount, ...]:
    """New connections each rule decided, from the kernel's counters (core/counts): what
    `status` shows and the daemon's metrics export. Raises BackendError."""
    return counts_now(backend, policy)[0]


def counts_now(backend: Backend, policy: Policy
               ) -> tuple[tuple[RuleCount, ...], dict[tuple[str, str], int]]:
    """rule_counts_now, and from the same read each rule's count per published port
    (core/tallies; (origin, port key) → count): what status shows beside a port's decision."""
    decided = backend.decided()
    return rule_counts(policy, decided), port_counts(policy, decided)


def planned_impact(planned: Planned) -> Impact | None:
    """Which clients the kernel tracks now would be treated otherwise by this plan (verify/
    impact.py): `plan` and `apply` show it. None when the plan changes nothing."""
    from fwsync.observe.conntrack import tracked_flows
    from fwsync.verify.impact import Impact, plan_impact

    if planned.plan.empty or planned.ruleset is None:
        return None
    try:
        flows = tracked_flows()
    except (OSError, struct.error) as exc:
        return Impact((), 0, 0, unread=f"conntrack could not be read ({exc})")
    return plan_impact(planned.ruleset, planned.docker, planned.backend.name, planned.current,
                       flows)


def restore_plan(backend: Backend, held: Desired, *, full: bool = False) -> Plan:
    """Put back what a backend's snapshot() found in the kernel (the daemon, started on invalid
    rules, has no policy to rebuild from): the kernel now → diff → Plan. `full` as make_plan."""
    return diff(backend.name, held, backend.read(None if full else held.state))


def apply_planned(planned: Planned) -> None:
    """The new backend's rules first, then the old one's out: never a moment with neither."""
    if planned.refusal is not None:
        raise BackendError(f"{planned.refusal}; nothing was changed")
    planned.backend.apply(planned.plan)
    for other in planned.others:
        other.remove()
