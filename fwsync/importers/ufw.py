"""ufw's configuration → an equivalent fwsync rules file, plus everything that has no equivalent.

Pure: the caller reads the files and passes their text; nothing here touches the disk or a clock.

The source is the `### tuple ###` lines of ufw's user.rules and user6.rules, not `ufw show added`:
- they are what ufw itself reads back on every start (`_read_rules` in ufw's backend_iptables),
  and the iptables lines under each tuple are generated from it, so they are what is enforced;
- each file keeps its own family's exact rule order, while `show added` prints the two lists
  merged, deduplicated, in an order its own source calls "approximate" (and `any` for both
  0.0.0.0/0 and ::/0, so an IPv4-only rule can't be told from one for both families);
- an app profile's tuple records the ports it resolved to, and comments are hex-encoded, so no
  quoting is lost;
- reading them needs neither root nor a running ufw, so a copy taken from another host works.
"""

from __future__ import annotations

import binascii
import ipaddress
import re
import textwrap
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from fwsync.core.kernel_text import shown
from fwsync.rules.model import LOG_LEVELS
from fwsync.rules.text import rule_iface_problem

Family = Literal[4, 6]
Kind = Literal["skipped", "partial", "setting"]

ACTIONS = ("allow", "deny", "reject", "limit")
PROTOS = ("tcp", "udp", "any")
ANYWHERE = {4: "0.0.0.0/0", 6: "::/0"}
POLICIES = {"DROP": "deny", "ACCEPT": "allow", "REJECT": "reject"}

_TUPLE = re.compile(r"^### tuple ###\s*")
_PORTS = re.compile(r"[0-9]+(?::[0-9]+)?(?:,[0-9]+(?::[0-9]+)?)*")
_ASSIGN = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_]*)=(.*)")


@dataclass(frozen=True)
class UfwRule:
    """One tuple: `ACTION PROTO DPORT DST SPORT SRC [DAPP SAPP] DIRECTION[_IFACE] [comment=HEX]`,
    with ACTION `[route:]allow|deny|reject|limit[_log|_log-all]`."""

    family: Family
    where: str  # FILE:LINE
    action: str
    log: str  # "", "log" or "log-all"
    route: bool
    proto: str
    dport: str
    dst: str
    sport: str
    src: str
    dapp: str
    sapp: str
    direction: str  # "in" or "out"
    iface_in: str
    iface_out: str
    comment: str
    comment_ok: bool = True  # False: the hex did not decode cleanly

    def key(self) -> tuple[str, ...]:
        """Everything but the family: the two halves of one `ufw allow 22/tcp` agree on it."""
        return (self.action, self.log, str(self.route), self.proto, self.dport,
                _neutral(self.dst), self.sport, _neutral(self.src), self.dapp, self.sapp,
                self.direction, self.iface_in, self.iface_out, self.comment)

    @property
    def anywhere(self) -> bool:
        """Neither source nor destination names an address: the rule fits either family."""
        return _neutral(self.src) == "any" and _neutral(self.dst) == "any"


def _neutral(addr: str) -> str:
    return "any" if addr in ANYWHERE.values() else addr


@dataclass(frozen=True)
class Entry:
    """One rule of the merged list: the IPv4 tuple, the IPv6 tuple, or both halves of one rule."""

    v4: UfwRule | None
    v6: UfwRule | None

    @property
    def rule(self) -> UfwRule:
        rule = self.v4 or self.v6
        assert rule is not None
        return rule

    @property
    def where(self) -> str:
        return ", ".join(r.where for r in (self.v4, self.v6) if r is not None)


@dataclass(frozen=True)
class Untranslated:
    """What the generated file does not say that ufw does. `skipped`: a rule left out; `partial`:
    a rule imported without one of its options; `setting`: a ufw setting with no equivalent."""

    kind: Kind
    where: str
    ufw: str  # the ufw command, as `ufw show added` would print it
    reason: str

    def as_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "where": self.where, "ufw": self.ufw, "reason": self.reason}


@dataclass(frozen=True)
class UfwFiles:
    """The text of ufw's files (None: the file is not there) and the names to quote them by."""

    user_rules: str
    user_rules_name: str = "user.rules"
    user6_rules: str | None = None
    user6_rules_name: str = "user6.rules"
    defaults: str | None = None
    defaults_name: str = "/etc/default/ufw"
    ufw_conf: str | None = None
    ufw_conf_name: str = "ufw.conf"


@dataclass(frozen=True)
class ImportResult:
    text: str  # the fwsync rules file
    default: str
    rules: int  # statements written (the default not counted)
    untranslated: tuple[Untranslated, ...]
    notes: tuple[str, ...]
    sources: tuple[str, ...]


# ---------------------------------------------------------------- reading ufw's files


def parse_user_rules(text: str, name: str, family: Family
                     ) -> tuple[list[UfwRule], list[Untranslated]]:
    """The tuples of one user.rules / user6.rules, in file order; malformed ones are reported."""
    rules: list[UfwRule] = []
    bad: list[Untranslated] = []
    for number, raw in enumerate(text.split("\n"), 1):
        if not _TUPLE.match(raw):
            continue
        where = f"{name}:{number}"
        line, _, hex_comment = raw.partition(" comment=")
        fields = _TUPLE.sub("", line).split()
        rule = _tuple(fields, family, where, hex_comment.strip())
        if isinstance(rule, str):
            bad.append(Untranslated("skipped", where, raw.strip(), rule))
        else:
            rules.append(rule)
    return rules, bad


def _tuple(fields: list[str], family: Family, where: str, hex_comment: str) -> UfwRule | str:
    if len(fields) not in (6, 7, 8, 9):
        return f"malformed tuple: {len(fields)} fields, ufw writes 7 or 9"
    # Old ufw wrote no direction (6 or 8 fields); ufw itself reads those as incoming.
    ifaces = fields[-1] if len(fields) in (7, 9) else "in"
    direction, iface_in, iface_out = _direction(ifaces)
    if direction not in ("in", "out"):
        return f"malformed tuple: direction {ifaces!r}"
    route, _, action = fields[0].rpartition(":")
    action, _, log = action.partition("_")
    if action not in ACTIONS or route not in ("", "route") or log not in ("", "log", "log-all"):
        return f"malformed tuple: action {fields[0]!r}"
    dapp, sapp = (_app(fields[6]), _app(fields[7])) if len(fields) >= 8 else ("", "")
    comment, comment_ok = _hex(hex_comment)
    return UfwRule(family=family, where=where, action=action, log=log, route=route == "route",
                   proto=fields[1], dport=fields[2], dst=fields[3], sport=fields[4],
                   src=fields[5], dapp=dapp, sapp=sapp, direction=direction,
                   iface_in=iface_in, iface_out=iface_out, comment=comment,
                   comment_ok=comment_ok)


def _direction(field: str) -> tuple[str, str, str]:
    """`in`, `out`, `in_eth0`, `out_eth0` or `in_eth0!out_eth1` → (direction, in, out)."""
    if "!" in field:
        first, _, second = field.partition("!")
        return "in", first.partition("_")[2], second.partition("_")[2]
    direction, _, iface = field.partition("_")
    return direction, iface if direction == "in" else "", iface if direction == "out" else ""


def _app(field: str) -> str:
    return "" if field == "-" else field.replace("%20", " ")


def _hex(text: str) -> tuple[str, bool]:
    if not text:
        return "", True
    try:
        return binascii.unhexlify(text).decode("utf-8"), True
    except (binascii.Error, ValueError):
        return "", False


def parse_shell_vars(text: str) -> dict[str, str]:
    """`KEY=VALUE` lines of /etc/default/ufw and ufw.conf (shell syntax, quotes optional)."""
    found: dict[str, str] = {}
    for raw in text.split("\n"):
        if raw.lstrip().startswith("#") or (m := _ASSIGN.match(raw)) is None:
            continue
        value = m.group(2).strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        else:
            value = value.split("#", 1)[0].strip()
        found[m.group(1)] = value
    return found


# ---------------------------------------------------------------- the two families as one list


def merge_families(v4: Sequence[UfwRule], v6: Sequence[UfwRule]) -> list[Entry]:
    """One list whose IPv4 rules keep user.rules' order and whose IPv6 rules keep user6.rules'.

    A rule present in both files with the same fields (`ufw allow 22/tcp` writes one tuple to
    each) becomes one entry when the pairing keeps both orders: the pairs are a longest common
    subsequence of the two lists. A rule that matches only one family can sit anywhere between
    them, since it never meets the other family's connections; it goes where ufw's own
    `show added` would print it, IPv4 first.
    """
    merged: list[Entry] = []
    i = j = 0
    for pi, pj in _twins(v4, v6):
        merged += [Entry(r, None) for r in v4[i:pi]] + [Entry(None, r) for r in v6[j:pj]]
        merged.append(Entry(v4[pi], v6[pj]))
        i, j = pi + 1, pj + 1
    return merged + [Entry(r, None) for r in v4[i:]] + [Entry(None, r) for r in v6[j:]]


def _twins(v4: Sequence[UfwRule], v6: Sequence[UfwRule]) -> list[tuple[int, int]]:
    """Index pairs of a longest common subsequence of the two lists' keys. Only rules that name
    no address can have a twin, so only they enter the quadratic table: a blocklist of thousands
    of `ufw deny from ADDR` costs nothing here."""
    a = [i for i, r in enumerate(v4) if r.anywhere]
    b = [j for j, r in enumerate(v6) if r.anywhere]
    ka, kb = [v4[i].key() for i in a], [v6[j].key() for j in b]
    n, m = len(a), len(b)
    longest = [[0] * (m + 1) for _ in range(n + 1)]
    for x in range(n - 1, -1, -1):
        for y in range(m - 1, -1, -1):
            longest[x][y] = (longest[x + 1][y + 1] + 1 if ka[x] == kb[y]
                             else max(longest[x + 1][y], longest[x][y + 1]))
    pairs: list[tuple[int, int]] = []
    x = y = 0
    while x < n and y < m:
        if ka[x] == kb[y]:
            pairs.append((a[x], b[y]))
            x, y = x + 1, y + 1
        elif longest[x + 1][y] >= longest[x][y + 1]:
            x += 1
        else:
            y += 1
    return pairs


# ---------------------------------------------------------------- ufw's words and fwsync's


def ufw_command(r: UfwRule) -> str:
    """The rule as `ufw show added` prints it (ufw's UFWCommandRule.get_command)."""
    words = ["ufw"] + (["route"] if r.route else []) + [r.action]
    short = (r.anywhere and r.sport == "any" and not r.sapp and not r.iface_in
             and not r.iface_out and r.dport != "any")
    if r.iface_in:
        words += ["in", "on", r.iface_in]
    if r.iface_out:
        words += ["out", "on", r.iface_out]
    elif r.direction == "out":
        words.append("out")
    if r.log:
        words.append(r.log)
    if short:
        words.append(_app_word(r.dapp) if r.dapp
                     else r.dport + ("" if r.proto == "any" else f"/{r.proto}"))
    else:
        for word, addr, port, app in (("from", r.src, r.sport, r.sapp),
                                      ("to", r.dst, r.dport, r.dapp)):
            if _neutral(addr) != "any" or port != "any" or app:
                words += [word, _neutral(addr)]
                words += ["app", _app_word(app)] if app else (["port", port]
                                                              if port != "any" else [])
        if "from" not in words and "to" not in words and not r.iface_in and not r.iface_out:
            words += ["to", "any"]
        if r.proto != "any" and not r.dapp and not r.sapp:
            words += ["proto", r.proto]
    if r.comment:
        words += ["comment", f"'{r.comment}'"]
    return " ".join(words)


def _wrapped(reason: str) -> list[str]:
    return [f"#   {line}" for line in textwrap.wrap(reason, 92)]


def _app_word(app: str) -> str:
    return f"'{app}'" if " " in app else app


def _quote(text: str) -> tuple[str, bool]:
    """fwsync's comment has no escapes: a text with both quote characters loses its `"`."""
    text = " ".join(text.split())  # newlines would end the statement
    if "'" not in text:
        return f"'{text}'", True
    if '"' not in text:
        return f'"{text}"', True
    return '"' + text.replace('"', "'") + '"', False


def _address(addr: str) -> str | None:
    """ufw's address as fwsync writes it: `any`, an address, or a CIDR (host bits cleared, as
    iptables matches them); None when it is not an address at all."""
    if addr in ANYWHERE.values():
        return "any"
    try:
        net = ipaddress.ip_network(addr, strict=False)
    except ValueError:
        return None
    return str(net.network_address) if net.prefixlen == net.max_prefixlen else str(net)


def _skip_reason(r: UfwRule) -> str | None:
    """Why a rule cannot become an fwsync rule at all, or None."""
    if r.route:
        return ("routed rule (`ufw route`): it matches forwarded traffic by outgoing interface "
                "and inner address, which fwsync's rules cannot express; write an incoming rule "
                "for the published host port instead")
    if r.direction == "out":
        return ("outgoing rule: fwsync governs only incoming connections to the ports Docker "
                "publishes")
    if r.iface_out:
        return (f"rule on the outgoing interface {r.iface_out!r}: fwsync matches only the "
                "interface a connection arrives on")
    if r.proto not in PROTOS:
        return (f"protocol {r.proto!r}: Docker publishes only tcp and udp ports, so the rule "
                "can never apply to a container")
    for app, port in ((r.dapp, r.dport), (r.sapp, r.sport)):
        if app and not _PORTS.fullmatch(port):
            return (f"app profile {app!r} could not be resolved: the tuple records no ports for "
                    "it; write its ports by hand")
    for port in (r.dport, r.sport):
        if port != "any" and not _PORTS.fullmatch(port):
            return f"malformed tuple: {port!r} is not a port list"
    for addr in (r.src, r.dst):
        if _address(addr) is None:
            return f"{addr!r} is not an address fwsync can match"
    iface = r.iface_in
    if iface and (problem := rule_iface_problem(iface)) is not None:
        return f"interface {shown(iface)!r} is not a name fwsync can match: {problem}"
    return None


def fwsync_statement(entry: Entry, keep_family: bool = True
                     ) -> tuple[list[str], list[Untranslated]]:
    """The entry's lines in the generated file (comments included) and what it loses.
    keep_family: a rule for any address found in one file only is kept to that family (off
    when the other family is handled as a whole, as with IPV6=no)."""
    r = entry.rule
    command = ufw_command(r)
    reason = _skip_reason(r)
    if reason is not None:
        skipped = Untranslated("skipped", entry.where, command, reason)
        return [f"# NOT IMPORTED ({entry.where}): {command}", *_wrapped(reason)], [skipped]
    lines: list[str] = []
    partial: list[str] = []
    if not r.comment_ok:
        partial.append("its comment is not valid hex-encoded UTF-8 and was left out")
    src, dst = _address(r.src) or "any", _address(r.dst) or "any"
    if keep_family and r.anywhere and (entry.v4 is None or entry.v6 is None):
        # Only one file has it (e.g. `ufw allow from 0.0.0.0/0 ...`): keep it to that family.
        src = ANYWHERE[r.family]
        other = "user6.rules" if r.family == 4 else "user.rules"
        lines.append(f"# IPv{r.family} only: ({entry.where}) has no twin in {other}")
    comment = r.comment
    for app in (r.dapp, r.sapp):
        if app:
            comment = f"{comment} (app {app})" if comment else f"app {app}"
    quoted, clean = _quote(comment) if comment else ("", True)
    if not clean:
        partial.append('its comment has both quote characters; its " became \'')
    lines.append(_render(r, src, dst, quoted))
    lost = [Untranslated("partial", entry.where, command, why) for why in partial]
    said = [f"# PARTLY IMPORTED ({entry.where}): {command}"] if partial else []
    said += [line for why in partial for line in _wrapped(why)]
    return said + lines, lost


def _render(r: UfwRule, src: str, dst: str, comment: str) -> str:
    """ufw's own word order, which fwsync's language accepts as it is."""
    words = [r.action]
    if r.iface_in:
        words += ["in", "on", r.iface_in]
    if r.log:
        words.append(r.log)
    if src == "any" and dst == "any" and r.sport == "any" and r.dport != "any" and not r.iface_in:
        words.append(r.dport + ("" if r.proto == "any" else f"/{r.proto}"))
    else:
        for word, addr, port in (("from", src, r.sport), ("to", dst, r.dport)):
            if addr != "any" or port != "any":
                words += [word, addr] + (["port", port] if port != "any" else [])
        if "from" not in words and "to" not in words and not r.iface_in:
            words += ["to", "any"]
        if r.proto != "any":
            words += ["proto", r.proto]
    if comment:
        words += ["comment", comment]
    return " ".join(words)


# ---------------------------------------------------------------- the whole import


@dataclass
class _Out:
    lines: list[str] = field(default_factory=list)
    lost: list[Untranslated] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    rules: int = 0


def import_ufw(files: UfwFiles) -> ImportResult:
    """ufw's files → an fwsync rules file whose verdicts for published ports are ufw's verdicts
    for the host's own ports, and a list of everything that could not be carried over."""
    out = _Out()
    defaults = parse_shell_vars(files.defaults) if files.defaults is not None else {}
    conf = parse_shell_vars(files.ufw_conf) if files.ufw_conf is not None else {}
    sources = [files.user_rules_name]

    v4, bad4 = parse_user_rules(files.user_rules, files.user_rules_name, 4)
    v6: list[UfwRule] = []
    bad6: list[Untranslated] = []
    ipv6 = defaults.get("IPV6", "yes").lower() != "no"
    if ipv6 and files.user6_rules is not None:
        sources.append(files.user6_rules_name)
        v6, bad6 = parse_user_rules(files.user6_rules, files.user6_rules_name, 6)
    elif ipv6:
        out.notes.append(f"{files.user6_rules_name} not found: no IPv6 rules imported; "
                         "IPv4 rules for any address are kept to IPv4")
    if files.defaults is not None:
        sources.append(files.defaults_name)
    if files.ufw_conf is not None:
        sources.append(files.ufw_conf_name)

    entries = merge_families(v4, v6)
    default = _default(files, defaults, out)
    _logging(files, conf, out, logged=sum(1 for e in entries
                                          if e.rule.log and _skip_reason(e.rule) is None))
    _settings(files, defaults, conf, out)
    out.lines.append("")
    if not ipv6:
        out.lines += [f"# IPV6=no in {files.defaults_name}: ufw accepts no incoming IPv6",
                      "deny from ::/0 comment 'ufw: IPV6=no'"]
        out.rules += 1
    for entry in entries:
        lines, lost = fwsync_statement(entry, keep_family=ipv6)
        out.lines += lines
        out.lost += lost
        out.rules += sum(1 for ln in lines if not ln.startswith("#"))
    for item in bad4 + bad6:
        out.lines += [f"# NOT IMPORTED ({item.where}): {item.ufw}", *_wrapped(item.reason)]
        out.lost.append(item)
    if conf.get("ENABLED", "yes").lower() == "no":
        out.notes.append(f"ufw is disabled (ENABLED=no in {files.ufw_conf_name}): the host does "
                         "not enforce these rules now, but the generated file does for containers")

    header = [
        "# fwsync rules imported from ufw by `fwsync import-ufw` from:",
        *(f"#   {s}" for s in sources),
        "# Each port is a published host port: what ufw allows to the host's own port, this",
        "# file allows to a container published on that port. Review it, then run",
        "# `fwsync check` and `fwsync plan`.",
    ]
    if out.lost:
        header += [f"# {len(out.lost)} item(s) could not be carried over in full: see the lines",
                   "# NOT IMPORTED, PARTLY IMPORTED and NOT CARRIED OVER below."]
    text = "\n".join([*header, "", *out.lines]).rstrip("\n") + "\n"
    return ImportResult(text=text, default=default, rules=out.rules,
                        untranslated=tuple(out.lost), notes=tuple(out.notes),
                        sources=tuple(sources))


def _default(files: UfwFiles, defaults: dict[str, str], out: _Out) -> str:
    policy = defaults.get("DEFAULT_INPUT_POLICY")
    default = POLICIES.get((policy or "").upper())
    if default is None:
        found = ("not found" if files.defaults is None
                 else f"has DEFAULT_INPUT_POLICY={policy!r}" if policy is not None
                 else "sets no DEFAULT_INPUT_POLICY")
        out.notes.append(f"{files.defaults_name} {found}: wrote `default deny incoming`, "
                         "fwsync's and ufw's usual default")
        default = "deny"
        out.lines.append("# the incoming policy could not be read; ufw's usual default:")
    else:
        out.lines.append(f'# DEFAULT_INPUT_POLICY="{policy}" in {files.defaults_name}')
    out.lines.append(f"default {default} incoming")
    return default


def _logging(files: UfwFiles, conf: dict[str, str], out: _Out, logged: int) -> None:
    """ufw's LOGLEVEL (ufw.conf, what `ufw logging LEVEL` writes) as a `logging` line. `off`, or
    no ufw.conf, writes none: fwsync's default is off. `logged`: the imported rules with `log`."""
    if files.ufw_conf is None:
        return
    written = conf.get("LOGLEVEL", "off")
    level = written.lower() or "off"
    if level == "off":
        if logged:
            # ufw puts a RETURN atop its user logging chains while its logging is off.
            out.notes.append(f"LOGLEVEL=off in {files.ufw_conf_name}: ufw logs nothing, not "
                             f"even its {logged} rule(s) with `log`/`log-all`; fwsync logs a "
                             "rule's `log` whatever the level (remove it to keep those rules "
                             "silent)")
        return
    said = [f"# LOGLEVEL={written} in {files.ufw_conf_name}"]
    if level == "full":
        said.append("# ufw's `full` is `high` here: fwsync has no `full` (its chains see only "
                    "a connection's first packet)")
        level = "high"
    if level in LOG_LEVELS:
        out.lines += [*said, f"logging {level}"]
        return
    item = Untranslated("setting", files.ufw_conf_name, f"ufw logging {written}",
                        f"LOGLEVEL={written!r} is not a level ufw knows (off, low, medium, high, "
                        "full): no `logging` line written, so fwsync logs at its default, off")
    out.lines += [f"# NOT CARRIED OVER ({item.where}): {item.ufw}", *_wrapped(item.reason)]
    out.lost.append(item)


def _settings(files: UfwFiles, defaults: dict[str, str], conf: dict[str, str],
              out: _Out) -> None:
    """ufw settings that change what ufw does but have no fwsync equivalent."""
    found: list[Untranslated] = []
    outgoing = defaults.get("DEFAULT_OUTPUT_POLICY", "ACCEPT").upper()
    if outgoing != "ACCEPT":
        found.append(Untranslated(
            "setting", files.defaults_name,
            f"ufw default {POLICIES.get(outgoing, outgoing.lower())} outgoing",
            "outgoing policy: fwsync governs only incoming connections to published ports"))
    routed = defaults.get("DEFAULT_FORWARD_POLICY", "DROP").upper()
    if routed != "DROP":
        found.append(Untranslated(
            "setting", files.defaults_name,
            f"ufw default {POLICIES.get(routed, routed.lower())} routed",
            "routed policy: Docker's own FORWARD rules decide routed traffic; fwsync's "
            "`default` covers connections to published ports"))
    for item in found:
        out.lines += [f"# NOT CARRIED OVER ({item.where}): {item.ufw}", *_wrapped(item.reason)]
    out.lost += found


# ---------------------------------------------------------------- the report


def report_lines(result: ImportResult) -> Iterable[str]:
    """The report for people: what was written, then each thing that was not."""
    yield (f"Imported {result.rules} rule(s) and `default {result.default} incoming` from "
           f"{', '.join(result.sources)}.")
    labels = {"skipped": "not imported", "partial": "partly imported",
              "setting": "not carried over"}
    if result.untranslated:
        yield f"{len(result.untranslated)} item(s) could not be carried over in full:"
    for item in result.untranslated:
        yield f"  {labels[item.kind]}: {item.ufw}  ({item.where})"
        yield f"      {item.reason}"
    for note in result.notes:
        yield f"note: {note}"


def report_json(result: ImportResult) -> dict[str, Any]:
    return {
        "format_version": 1,
        "sources": list(result.sources),
        "default": result.default,
        "rules": result.rules,
        "untranslated": [item.as_dict() for item in result.untranslated],
        "notes": list(result.notes),
    }
