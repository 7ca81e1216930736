"""What fwsync logs, as ufw does: `logging low|medium|high` and a rule's own `log` (rules/
model.py), turned into which kernel decisions send their new connections to the log, and the
rate limits every backend applies to them. Pure.

The kernel sends a logged connection's first packet to an NFLOG group (not to the kernel log:
the LOG target writes nothing from a network namespace other than the host's without a global
sysctl, and NFLOG's copy carries conntrack's original tuple, the address and port the client
dialled before Docker's DNAT). `fwsync daemon` reads the group (observe/nflog.py) and writes
each decision where people and fail2ban read them (daemon/decisions.py).

Every log line carries a prefix `fwsync TAG INDEX VERDICT`: TAG is a digest of the policy that
wrote the rule (the daemon names the rule only when it is its own policy's), INDEX the rule's
position in it (or `d` for the default). Nothing a rules file chooses (a file or define name)
reaches the prefix.
"""

from __future__ import annotations

import hashlib

from fwsync.core.audit import audits_anything, enforced_default
from fwsync.rules.model import Action, LogLevel, Policy, Rule

LOG_GROUP = 7171  # the NFLOG group fwsync's rules send to and `fwsync daemon` reads
# Rate limits, in the kernel, per log rule: each source at most PER_SOURCE a minute (after a
# burst), and the rule at most IN_ALL a second: a flood of SYNs from many sources writes at
# most IN_ALL lines a second per logged rule.
PER_SOURCE_PER_MINUTE, PER_SOURCE_BURST = 6, 3
IN_ALL_PER_SECOND, IN_ALL_BURST = 10, 20
PER_SOURCE_FORGET = 60  # seconds a quiet source's bucket is kept (it is full again by then)
# nftables: the per-source buckets' sets, `logsrc.0_v4_DIGEST` (fwsync's own namespace of names,
# core/merge.internal_name, which no define's name enters).
LOG_SET_BASE = "logsrc."
_REFUSES = ("deny", "reject")


def logged(level: LogLevel, action: Action | str, rule_log: str = "") -> bool:
    """Whether a decision with this action logs its new connections (a rule's own `log`
    whatever the level). For a `limit` rule: the connections it lets in, as an allow's (what
    it refuses over its rate: limit_refusals_logged)."""
    if rule_log:
        return True
    if level == "high":
        return True
    return level == "medium" and action in _REFUSES


def logged_rule(policy: Policy, rule: Rule, action: Action) -> bool:
    return logged(policy.logging, action, rule.log)


def limit_refusals_logged(level: LogLevel, rule_log: str = "") -> bool:
    """What a `limit` rule refuses over its rate is logged at every level but off, as ufw's
    `ufw-user-limit` chain logs `[UFW LIMIT BLOCK]`, and always with the rule's own `log`."""
    return bool(rule_log) or level != "off"


# The prefix's action for a connection a `limit` rule refused over its rate (its admissions
# are logged as `allow`).
LIMIT_REFUSED = "limit"


def logged_default(policy: Policy) -> bool:
    """low and up log what the default refuses; high also what it lets in."""
    if policy.logging == "off":
        return False
    return enforced_default(policy) in _REFUSES or policy.logging == "high"


def logs_anything(policy: Policy) -> bool:
    """Whether these rules log anything at all (a level, a rule's own `log`, or what an
    audited rule would refuse)."""
    return policy.logging != "off" or any(r.log for r in policy.rules) or audits_anything(policy)


UNREAD = ("the rules log decisions (`logging` or a rule's `log`), but `fwsync daemon` is not "
          f"running here: the kernel sends them to NFLOG group {LOG_GROUP} and nothing reads "
          "or writes them (docs/logging.md)")


def unread_logs(policy: Policy, daemon_running: bool) -> str | None:
    """status' note where logged decisions go nowhere."""
    return UNREAD if logs_anything(policy) and not daemon_running else None


def log_tag(policy: Policy) -> str:
    """A short digest of the policy (its files' digest when read from disk)."""
    basis = policy.digest or repr((policy.default, [r.origin for r in policy.rules]))
    return hashlib.sha256(basis.encode()).hexdigest()[:8]


def prefix(tag: str, index: int | None, action: str) -> str:
    """The log prefix of a decision: `index` None for the default."""
    return f"fwsync {tag} {'d' if index is None else index} {action}"


def parse_prefix(text: str) -> tuple[str, int | None, str] | None:
    """(tag, index or None for the default, action) of one of fwsync's prefixes, else None."""
    words = text.split()
    if len(words) != 4 or words[0] != "fwsync":
        return None
    _, tag, where, action = words
    if where == "d":
        return tag, None, action
    return (tag, int(where), action) if where.isdigit() else None
