"""`fwsync import-ufw`: ufw's tuples → fwsync rules, everything untranslatable listed.

The tuples below are as ufw 0.36.2 writes them (captured from a real ufw in a namespace); the
golden directory holds a whole user.rules / user6.rules pair written by these ufw commands:
  default deny incoming; allow 22/tcp; allow 80; allow 53/udp; allow 60000:61000/udp;
  allow 80,443/tcp; allow from 198.51.100.0/25 to any port 5432 proto tcp comment 'pg office';
  limit 2222/tcp; deny from 203.0.113.0/24; reject 23; allow in on eth0 to any port 8080 proto tcp;
  allow out 25/tcp; deny out to 203.0.113.9;
  route allow in on eth0 out on docker0 to 172.17.0.2 port 80 proto tcp; allow 'WWW Full';
  allow from 2001:db8:1::/64 to any port 9100 proto tcp; allow log 8443/tcp;
  allow log-all from 198.51.100.10 port 1234 to 198.51.100.1 port 99 proto udp;
  allow in on eth1 from any to any; allow proto esp from 198.51.100.5 to any;
  insert 1 deny from 198.51.100.66; allow to 198.51.100.1 port 3000 proto tcp;
  allow Sambaish (137,138/udp|139,445/tcp); allow from 198.51.100.0/25 to any app Anyish;
  allow from any app Anyish (Anyish: ports=7000); allow in on eth0 to 198.51.100.1
"""

from __future__ import annotations

import ipaddress
import json
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from fwsync.cli import app
from fwsync.importers.ufw import (
    ImportResult,
    UfwFiles,
    import_ufw,
    merge_families,
    parse_shell_vars,
    parse_user_rules,
)
from fwsync.importers.ufw_files import read_ufw_files
from fwsync.rules.load import load_rules, read_list
from fwsync.rules.model import Rule
from fwsync.rules.syntax import parse_sources

pytestmark = pytest.mark.unit

GOLDEN = Path(__file__).parent.parent / "golden" / "ufw-import"
DEFAULTS = 'IPV6=yes\nDEFAULT_INPUT_POLICY="DROP"\nDEFAULT_OUTPUT_POLICY="ACCEPT"\n'


def tuples(*lines: str) -> str:
    """A user.rules body: ufw writes an iptables line under each tuple, which must be ignored."""
    return "*filter\n### RULES ###\n" + "".join(
        f"\n### tuple ### {t}\n-A ufw-user-input -j ACCEPT\n" for t in lines) + "COMMIT\n"


def v6_twin(line: str) -> str:
    return line.replace("0.0.0.0/0", "::/0")


def run(v4: tuple[str, ...] = (), v6: tuple[str, ...] | None = None,
        defaults: str | None = DEFAULTS, conf: str | None = "ENABLED=yes\nLOGLEVEL=off\n"
        ) -> ImportResult:
    """Import; without an explicit v6, every v4 tuple that names no address gets its IPv6 twin,
    as `ufw allow ...` writes one to each file."""
    if v6 is None:
        v6 = tuple(v6_twin(t) for t in v4 if t.split()[3] == t.split()[5] == "0.0.0.0/0")
    result = import_ufw(UfwFiles(user_rules=tuples(*v4), user6_rules=tuples(*v6),
                                 defaults=defaults, ufw_conf=conf))
    check = parse_sources([("imported.rules", result.text)], read_list)
    assert check.ok, [str(d) for d in check.diagnostics] + [result.text]
    return result


def statements(result: ImportResult) -> list[str]:
    """The generated statements (comments and the default left out)."""
    return [ln for ln in result.text.splitlines()
            if ln and not ln.startswith("#") and not ln.startswith("default ")]


# ---------------------------------------------------------------- one rule at a time

SHAPES = [
    ("allow tcp 22 0.0.0.0/0 any 0.0.0.0/0 in", "allow 22/tcp"),
    ("allow any 80 0.0.0.0/0 any 0.0.0.0/0 in", "allow 80"),
    ("allow udp 53 0.0.0.0/0 any 0.0.0.0/0 in", "allow 53/udp"),
    ("allow udp 60000:61000 0.0.0.0/0 any 0.0.0.0/0 in", "allow 60000:61000/udp"),
    ("allow tcp 80,443 0.0.0.0/0 any 0.0.0.0/0 in", "allow 80,443/tcp"),
    ("allow tcp 80,8000:8100 0.0.0.0/0 any 0.0.0.0/0 in", "allow 80,8000:8100/tcp"),
    ("allow tcp 5432 0.0.0.0/0 any 198.51.100.0/25 in comment=7067206f6666696365",
     "allow from 198.51.100.0/25 to any port 5432 proto tcp comment 'pg office'"),
    ("limit tcp 2222 0.0.0.0/0 any 0.0.0.0/0 in", "limit 2222/tcp"),
    ("deny any any 0.0.0.0/0 any 203.0.113.0/24 in", "deny from 203.0.113.0/24"),
    ("deny any any 0.0.0.0/0 any 198.51.100.66 in", "deny from 198.51.100.66"),
    ("reject any 23 0.0.0.0/0 any 0.0.0.0/0 in", "reject 23"),
    ("reject tcp 25 0.0.0.0/0 any 203.0.113.0/24 in",
     "reject from 203.0.113.0/24 to any port 25 proto tcp"),
    ("allow tcp 8080 0.0.0.0/0 any 0.0.0.0/0 in_eth0",
     "allow in on eth0 to any port 8080 proto tcp"),
    ("allow any any 0.0.0.0/0 any 0.0.0.0/0 in_eth1", "allow in on eth1"),
    ("allow any any 198.51.100.1 any 0.0.0.0/0 in_eth0", "allow in on eth0 to 198.51.100.1"),
    ("allow tcp 3000 198.51.100.1 any 0.0.0.0/0 in", "allow to 198.51.100.1 port 3000 proto tcp"),
    ("allow any any 0.0.0.0/0 any 0.0.0.0/0 in", "allow to any"),
    ("allow tcp 80,443 0.0.0.0/0 any 0.0.0.0/0 WWW%20Full - in",
     "allow 80,443/tcp comment 'app WWW Full'"),
    ("allow udp 137,138 0.0.0.0/0 any 0.0.0.0/0 Sambaish - in comment=7368617265",
     "allow 137,138/udp comment 'share (app Sambaish)'"),
    ("allow any 7000 0.0.0.0/0 any 198.51.100.0/25 Anyish - in",
     "allow from 198.51.100.0/25 to any port 7000 comment 'app Anyish'"),
    ("allow any any 0.0.0.0/0 7000 0.0.0.0/0 - Anyish in",
     "allow from any port 7000 comment 'app Anyish'"),
    ("allow udp 99 198.51.100.1 1234 198.51.100.10 in",
     "allow from 198.51.100.10 port 1234 to 198.51.100.1 port 99 proto udp"),
    # ufw keeps host bits as written; iptables (and fwsync) match the network.
    ("allow any any 0.0.0.0/0 any 198.51.100.5/24 in", "allow from 198.51.100.0/24"),
    # A comment with an apostrophe needs the other quotes.
    ("allow tcp 443 0.0.0.0/0 any 0.0.0.0/0 in comment=" + b"it's web".hex(),
     "allow 443/tcp comment \"it's web\""),
    # Tuples of ufw before 0.30 have no direction: ufw reads them as incoming.
    ("allow tcp 22 0.0.0.0/0 any 0.0.0.0/0", "allow 22/tcp"),
]


@pytest.mark.parametrize(("tuple_line", "expected"), SHAPES, ids=[s[1] for s in SHAPES])
def test_rule_shapes_translate_to_ufw_like_fwsync_rules(tuple_line: str, expected: str) -> None:
    result = run((tuple_line,))
    assert statements(result) == [expected]
    assert result.untranslated == ()
    assert result.rules == 1


IPV6_SHAPES = [
    ("allow tcp 9100 ::/0 any 2001:db8:1::/64 in",
     "allow from 2001:db8:1::/64 to any port 9100 proto tcp"),
    ("deny any any ::/0 any 2001:db8:2::7 in", "deny from 2001:db8:2::7"),
    ("allow tcp 443 2001:db8:1::1 any ::/0 in", "allow to 2001:db8:1::1 port 443 proto tcp"),
]


@pytest.mark.parametrize(("tuple_line", "expected"), IPV6_SHAPES, ids=[s[1] for s in IPV6_SHAPES])
def test_ipv6_rules_come_from_user6_rules(tuple_line: str, expected: str) -> None:
    result = run((), (tuple_line,))
    assert statements(result) == [expected]


def test_a_rule_for_any_address_in_one_file_only_stays_in_its_family() -> None:
    # `ufw allow from 0.0.0.0/0 to any port 81 proto tcp` writes only user.rules.
    result = run(("allow tcp 81 0.0.0.0/0 any 0.0.0.0/0 in",), ())
    assert statements(result) == ["allow from 0.0.0.0/0 to any port 81 proto tcp"]
    assert "# IPv4 only" in result.text
    result = run((), ("allow tcp 81 ::/0 any ::/0 in",))
    assert statements(result) == ["allow from ::/0 to any port 81 proto tcp"]


def test_ufw_insert_into_one_family_keeps_each_familys_order() -> None:
    # `ufw insert 1 deny from 198.51.100.66` goes first in user.rules only.
    result = run(("deny any any 0.0.0.0/0 any 198.51.100.66 in",
                  "allow tcp 22 0.0.0.0/0 any 0.0.0.0/0 in"),
                 ("allow tcp 22 ::/0 any ::/0 in", "deny any any ::/0 any 2001:db8:2::7 in"))
    assert statements(result) == ["deny from 198.51.100.66", "allow 22/tcp",
                                  "deny from 2001:db8:2::7"]


def test_opposite_orders_in_the_two_files_are_kept_per_family() -> None:
    a, b = ("deny tcp 80 0.0.0.0/0 any 0.0.0.0/0 in", "allow tcp 80 0.0.0.0/0 any 0.0.0.0/0 in")
    result = run((a, b), (v6_twin(b), v6_twin(a)))
    assert statements(result) == ["deny from 0.0.0.0/0 to any port 80 proto tcp", "allow 80/tcp",
                                  "deny from ::/0 to any port 80 proto tcp"]


# ---------------------------------------------------------------- what cannot be translated

UNTRANSLATABLE = [
    ("allow tcp 25 0.0.0.0/0 any 0.0.0.0/0 out", "ufw allow out 25/tcp", "outgoing rule"),
    ("deny any any 203.0.113.9 any 0.0.0.0/0 out", "ufw deny out to 203.0.113.9",
     "outgoing rule"),
    ("allow tcp 53 0.0.0.0/0 any 0.0.0.0/0 out_eth1", "ufw allow out on eth1 to any port 53 "
     "proto tcp", "outgoing rule"),
    ("route:allow tcp 80 172.17.0.2 any 0.0.0.0/0 in_eth0!out_docker0",
     "ufw route allow in on eth0 out on docker0 to 172.17.0.2 port 80 proto tcp", "routed rule"),
    ("allow tcp 80 0.0.0.0/0 any 0.0.0.0/0 in_eth0!out_eth1",
     "ufw allow in on eth0 out on eth1 to any port 80 proto tcp", "outgoing interface 'eth1'"),
    ("route:deny any any 0.0.0.0/0 any 203.0.113.0/24 in", "ufw route deny from 203.0.113.0/24",
     "routed rule"),
    ("allow esp any 0.0.0.0/0 any 198.51.100.5 in", "ufw allow from 198.51.100.5 proto esp",
     "protocol 'esp'"),
    ("allow any any 0.0.0.0/0 any 0.0.0.0/0 WWW%20Full - in", "ufw allow to any app 'WWW Full'",
     "app profile 'WWW Full' could not be resolved"),
    ("allow tcp 8080 0.0.0.0/0 any 0.0.0.0/0 in_eth0:1",
     "ufw allow in on eth0:1 to any port 8080 proto tcp", "interface 'eth0:1'"),
    ("allow tcp 22 0.0.0.0/0 any 0.0.0.0/0 sideways", "### tuple ### allow tcp 22",
     "malformed tuple"),
    ("allow tcp 22 0.0.0.0/0", "### tuple ### allow tcp 22 0.0.0.0/0", "malformed tuple"),
    ("permit tcp 22 0.0.0.0/0 any 0.0.0.0/0 in", "### tuple ### permit", "malformed tuple"),
]


@pytest.mark.parametrize(("tuple_line", "command", "reason"), UNTRANSLATABLE,
                         ids=[u[2] + ": " + u[1] for u in UNTRANSLATABLE])
def test_untranslatable_rules_are_listed_and_commented_never_dropped(
        tuple_line: str, command: str, reason: str) -> None:
    kept = "allow tcp 443 0.0.0.0/0 any 0.0.0.0/0 in"
    result = run((kept, tuple_line, kept.replace("443", "444")), ())
    assert statements(result) == ["allow from 0.0.0.0/0 to any port 443 proto tcp",
                                  "allow from 0.0.0.0/0 to any port 444 proto tcp"]
    (item,) = result.untranslated
    assert item.kind == "skipped" and item.where == "user.rules:7"
    assert item.ufw.startswith(command) and reason in item.reason
    assert f"# NOT IMPORTED (user.rules:7): {item.ufw}\n#   {item.reason[:40]}" in result.text


def test_a_rule_in_both_files_is_listed_once_with_both_places() -> None:
    result = run(("allow tcp 25 0.0.0.0/0 any 0.0.0.0/0 out",),
                 ("allow tcp 25 ::/0 any ::/0 out",))
    (item,) = result.untranslated
    assert item.where == "user.rules:4, user6.rules:4" and item.ufw == "ufw allow out 25/tcp"


LOGGED_SHAPES = [
    ("allow_log tcp 8443 0.0.0.0/0 any 0.0.0.0/0 in", "allow log 8443/tcp"),
    ("deny_log-all any any 0.0.0.0/0 any 203.0.113.0/24 in", "deny log-all from 203.0.113.0/24"),
    ("reject_log tcp 25 0.0.0.0/0 any 203.0.113.0/24 in",
     "reject log from 203.0.113.0/24 to any port 25 proto tcp"),
    # ufw's own place for it: after `in on IFACE` (`ufw allow in on eth0 log ...`).
    ("allow_log tcp 8080 0.0.0.0/0 any 0.0.0.0/0 in_eth0",
     "allow in on eth0 log to any port 8080 proto tcp"),
    ("allow_log-all udp 99 198.51.100.1 1234 198.51.100.10 in",
     "allow log-all from 198.51.100.10 port 1234 to 198.51.100.1 port 99 proto udp"),
]


@pytest.mark.parametrize(("tuple_line", "expected"), LOGGED_SHAPES,
                         ids=[s[1] for s in LOGGED_SHAPES])
def test_a_rules_log_option_is_carried_over(tuple_line: str, expected: str) -> None:
    result = run((tuple_line,), conf="LOGLEVEL=low\n")
    assert statements(result) == ["logging low", expected]
    assert result.untranslated == () and result.notes == ()
    check = parse_sources([("imported.rules", result.text)], read_list)
    assert check.policy is not None
    (rule,) = check.policy.rules
    assert rule.log == tuple_line.split()[0].partition("_")[2]


def test_log_on_a_limit_rule_is_carried_over() -> None:
    result = run(("limit_log tcp 2222 0.0.0.0/0 any 0.0.0.0/0 in",), conf="LOGLEVEL=low\n")
    assert statements(result) == ["logging low", "limit log 2222/tcp"]
    assert result.untranslated == ()


def test_logged_rules_under_ufws_logging_off_are_kept_with_a_note() -> None:
    # ufw logs nothing at all with logging off, its rules' `log` included; fwsync would.
    result = run(("allow_log tcp 8443 0.0.0.0/0 any 0.0.0.0/0 in",
                  "allow_log tcp 25 0.0.0.0/0 any 0.0.0.0/0 out"), conf="LOGLEVEL=off\n")
    assert statements(result) == ["allow log 8443/tcp"]
    (note,) = result.notes  # the outgoing rule is not imported, so not counted
    assert note.startswith("LOGLEVEL=off in ufw.conf: ufw logs nothing, not even its 1 rule(s) "
                           "with `log`/`log-all`; fwsync logs a rule's `log` whatever the level")


@pytest.mark.parametrize(("conf", "lines"), [
    ("LOGLEVEL=low\n", ["# LOGLEVEL=low in ufw.conf", "logging low"]),
    ('LOGLEVEL="medium"\n', ["# LOGLEVEL=medium in ufw.conf", "logging medium"]),
    ("LOGLEVEL=high\n", ["# LOGLEVEL=high in ufw.conf", "logging high"]),
    ("LOGLEVEL=full\n", ["# LOGLEVEL=full in ufw.conf",
                         "# ufw's `full` is `high` here: fwsync has no `full` (its chains see "
                         "only a connection's first packet)", "logging high"]),
])
def test_ufws_logging_level_becomes_a_logging_line_after_the_default(
        conf: str, lines: list[str]) -> None:
    result = run(conf=conf)
    text = result.text.splitlines()
    at = text.index("default deny incoming")
    assert text[at + 1:at + 1 + len(lines)] == lines
    assert result.untranslated == () and result.notes == ()
    check = parse_sources([("imported.rules", result.text)], read_list)
    assert check.policy is not None and check.policy.logging == lines[-1].split()[1]
    assert check.policy.logging_origin is not None
    assert check.policy.logging_origin.text == lines[-1]


@pytest.mark.parametrize("conf", ["LOGLEVEL=off\n", "ENABLED=yes\n", None])
def test_logging_off_missing_or_no_ufw_conf_writes_no_logging_line(conf: str | None) -> None:
    result = run(conf=conf)
    assert "logging" not in result.text and result.untranslated == ()
    check = parse_sources([("imported.rules", result.text)], read_list)
    assert check.policy is not None and check.policy.logging == "off"


def test_an_unknown_logging_level_is_listed_not_written() -> None:
    result = run(conf="LOGLEVEL=verbose\n")
    (item,) = result.untranslated
    assert (item.kind, item.where, item.ufw) == ("setting", "ufw.conf", "ufw logging verbose")
    assert "# NOT CARRIED OVER (ufw.conf): ufw logging verbose\n" in result.text
    assert "\nlogging " not in result.text


def test_a_comment_with_both_quotes_and_bad_hex_are_partial() -> None:
    both = b"say \"hi\" it's".hex()
    result = run((f"allow tcp 1 0.0.0.0/0 any 0.0.0.0/0 in comment={both}",
                  "allow tcp 2 0.0.0.0/0 any 0.0.0.0/0 in comment=zz"))
    assert statements(result) == ["allow 1/tcp comment \"say 'hi' it's\"", "allow 2/tcp"]
    assert [u.kind for u in result.untranslated] == ["partial", "partial"]


# ---------------------------------------------------------------- defaults and settings


@pytest.mark.parametrize(("policy", "default"), [("DROP", "deny"), ("ACCEPT", "allow"),
                                                 ("REJECT", "reject"), ("drop", "deny")])
def test_the_incoming_default_comes_from_default_input_policy(policy: str, default: str) -> None:
    result = run(defaults=f"IPV6=yes\nDEFAULT_INPUT_POLICY=\"{policy}\"\n")
    assert result.default == default and f"\ndefault {default} incoming\n" in result.text
    assert result.notes == ()


@pytest.mark.parametrize("defaults", [None, "IPV6=yes\n", 'DEFAULT_INPUT_POLICY="SKIP"\n'])
def test_an_unreadable_default_policy_becomes_deny_with_a_note(defaults: str | None) -> None:
    result = run(defaults=defaults)
    assert result.default == "deny" and len(result.notes) == 1
    assert "wrote `default deny incoming`" in result.notes[0]


def test_ipv6_no_ignores_user6_rules_and_denies_ipv6() -> None:
    result = run(("allow tcp 22 0.0.0.0/0 any 0.0.0.0/0 in",),
                 ("allow tcp 9100 ::/0 any 2001:db8:1::/64 in",),
                 defaults='IPV6=no\nDEFAULT_INPUT_POLICY="ACCEPT"\n')
    assert statements(result) == ["deny from ::/0 comment 'ufw: IPV6=no'", "allow 22/tcp"]
    assert "user6.rules" not in result.sources


def test_settings_without_an_equivalent_are_listed() -> None:
    result = run(defaults='DEFAULT_INPUT_POLICY="DROP"\nDEFAULT_OUTPUT_POLICY="DROP"\n'
                          'DEFAULT_FORWARD_POLICY="ACCEPT"\n',
                 conf="ENABLED=no\nLOGLEVEL=medium\n")
    assert [(u.kind, u.ufw) for u in result.untranslated] == [
        ("setting", "ufw default deny outgoing"), ("setting", "ufw default allow routed")]
    assert result.text.count("# NOT CARRIED OVER") == 2
    assert "\nlogging medium\n" in result.text
    assert any("ENABLED=no" in n for n in result.notes)


def test_shell_variables_as_ufw_writes_them() -> None:
    assert parse_shell_vars('# c\nA="x y"\nB=z # tail\n  C=\'q\'\nnot a var\n') == {
        "A": "x y", "B": "z", "C": "q"}


# ---------------------------------------------------------------- a whole real configuration


def golden_result() -> ImportResult:
    return import_ufw(UfwFiles(
        user_rules=(GOLDEN / "user.rules").read_text(), user6_rules=(GOLDEN / "user6.rules")
        .read_text(), defaults=(GOLDEN / "default-ufw").read_text(),
        defaults_name="/etc/default/ufw", ufw_conf=(GOLDEN / "ufw.conf").read_text()))


def test_a_real_ufw_configuration_matches_the_reviewed_golden_file(tmp_path: Path) -> None:
    result = golden_result()
    path = GOLDEN / "imported.rules"
    if os.environ.get("FWSYNC_UPDATE_GOLDEN"):
        path.write_text(result.text)
    assert result.text == path.read_text()
    out = tmp_path / "imported.rules"
    out.write_text(result.text)
    loaded = load_rules(out)
    assert loaded.ok and loaded.policy is not None
    assert len(loaded.policy.rules) == result.rules == 22
    # ufw.conf's LOGLEVEL=low and the two logged rules are carried over: only skipped rules
    # are left.
    assert {u.kind for u in result.untranslated} == {"skipped"}
    assert len(result.untranslated) == 4
    assert loaded.policy.logging == "low"
    assert [(r.origin.text, r.log) for r in loaded.policy.rules if r.log] == [
        ("allow log 8443/tcp", "log"),
        ("allow log-all from 198.51.100.10 port 1234 to 198.51.100.1 port 99 proto udp",
         "log-all")]


# ---------------------------------------------------------------- order, as a property

_V4 = ["0.0.0.0/0", "198.51.100.0/25", "203.0.113.7"]
_V6 = ["::/0", "2001:db8:1::/64"]
_RULE = st.tuples(st.sampled_from(["allow", "deny", "reject", "limit"]),
                  st.sampled_from(["tcp", "udp", "any"]), st.sampled_from(["22", "80,443", "any"]))


def _family_view(rules: tuple[Rule, ...], family: int) -> list[tuple[str, str, str, str]]:
    """The rules that can match a connection of this family, in order, as ufw-ish tuples."""
    view = []
    for r in rules:
        nets = [n for n in (r.src.net, r.dst.net) if n is not None]
        if all(n.version == family for n in nets):
            ports = ",".join(str(p) for p in r.dst.ports) or "any"
            src = str(r.src.net) if r.src.net is not None and r.src.net.prefixlen else "any"
            if r.src.net is not None and r.src.net.num_addresses == 1:
                src = str(r.src.net.network_address)
            view.append((r.action, r.proto, ports, src))
    return view


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(_RULE, st.sampled_from(_V4)), max_size=7),
       st.lists(st.tuples(_RULE, st.sampled_from(_V6)), max_size=7))
def test_each_family_sees_exactly_its_own_rules_in_its_own_order(
        v4: list[tuple[tuple[str, str, str], str]],
        v6: list[tuple[tuple[str, str, str], str]]) -> None:
    def lines(items: list[tuple[tuple[str, str, str], str]], anywhere: str) -> tuple[str, ...]:
        return tuple(f"{a} {p} {port} {anywhere} any {src} in" for (a, p, port), src in items)

    result = import_ufw(UfwFiles(user_rules=tuples(*lines(v4, "0.0.0.0/0")),
                                 user6_rules=tuples(*lines(v6, "::/0")), defaults=DEFAULTS))
    parsed = parse_sources([("x.rules", result.text)], read_list)
    assert parsed.ok and parsed.policy is not None, result.text
    for family, items in ((4, v4), (6, v6)):
        expected = [(a, p, port, "any" if ipaddress.ip_network(src).prefixlen == 0 else src)
                    for (a, p, port), src in items]
        assert _family_view(parsed.policy.rules, family) == expected, result.text


def test_merge_pairs_twins_and_keeps_singles() -> None:
    v4, _ = parse_user_rules(tuples("allow tcp 22 0.0.0.0/0 any 0.0.0.0/0 in"), "u", 4)
    v6, _ = parse_user_rules(tuples("allow tcp 22 ::/0 any ::/0 in",
                                    "allow tcp 23 ::/0 any ::/0 in"), "u6", 6)
    merged = merge_families(v4, v6)
    assert [(e.v4 is not None, e.v6 is not None) for e in merged] == [(True, True), (False, True)]


# ---------------------------------------------------------------- the command


def ufw_dir(tmp_path: Path) -> tuple[Path, Path]:
    d = tmp_path / "ufw"
    d.mkdir()
    for name in ("user.rules", "user6.rules", "ufw.conf"):
        (d / name).write_text((GOLDEN / name).read_text())
    default = tmp_path / "default-ufw"
    default.write_text((GOLDEN / "default-ufw").read_text())
    return d, default


def test_command_writes_a_file_that_fwsync_check_accepts(tmp_path: Path) -> None:
    d, default = ufw_dir(tmp_path)
    out = tmp_path / "rules" / "10-ufw.rules"
    out.parent.mkdir()
    runner = CliRunner()
    res = runner.invoke(app, ["import-ufw", "--ufw-dir", str(d), "--default-file", str(default),
                              "--output", str(out)])
    assert res.exit_code == 0, res.output
    assert "Imported 22 rule(s)" in res.stderr
    assert "not imported: ufw allow out 25/tcp" in res.stderr
    assert res.stdout == ""
    assert out.read_text() == import_ufw(read_ufw_files(d, default)).text
    check = runner.invoke(app, ["check", str(out.parent)])
    assert check.exit_code == 0 and "OK (22 rules" in check.stdout

    again = runner.invoke(app, ["import-ufw", "--ufw-dir", str(d), "--default-file",
                                str(default), "--output", str(out)])
    assert again.exit_code == 1 and "exists; nothing was written (--force" in again.stderr
    forced = runner.invoke(app, ["import-ufw", "--ufw-dir", str(d), "--default-file",
                                 str(default), "--output", str(out), "--force"])
    assert forced.exit_code == 0


def test_command_prints_rules_on_stdout_and_the_report_on_stderr(tmp_path: Path) -> None:
    d, default = ufw_dir(tmp_path)
    res = CliRunner().invoke(app, ["import-ufw", "--ufw-dir", str(d), "--default-file",
                                   str(default)])
    assert res.exit_code == 0
    assert res.stdout.startswith("# fwsync rules imported from ufw")
    assert "default deny incoming" in res.stdout and "Imported" not in res.stdout
    assert "4 item(s) could not be carried over in full" in res.stderr


def test_command_json_report(tmp_path: Path) -> None:
    d, default = ufw_dir(tmp_path)
    res = CliRunner().invoke(app, ["import-ufw", "--ufw-dir", str(d), "--default-file",
                                   str(default), "--format", "json"])
    assert res.exit_code == 0
    doc = json.loads(res.stdout)
    assert doc["format_version"] == 1 and doc["default"] == "deny" and doc["rules"] == 22
    assert doc["output"] is None and doc["rules_text"].startswith("# fwsync rules imported")
    assert {"kind": "skipped", "where": f"{d}/user.rules:60", "ufw": "ufw deny out to 203.0.113.9",
            "reason": "outgoing rule: fwsync governs only incoming connections to the ports "
                      "Docker publishes"} in doc["untranslated"]
    assert len(doc["untranslated"]) == 4 and doc["notes"]


def test_command_errors_are_one_line(tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["import-ufw", "--ufw-dir", str(tmp_path / "nowhere")])
    assert res.exit_code == 1
    assert res.stderr.count("\n") == 1 and "nowhere/user.rules: no such file" in res.stderr
    res = CliRunner().invoke(app, ["import-ufw", "--ufw-dir", str(GOLDEN), "--output",
                                   str(tmp_path)])
    assert res.exit_code == 1 and "is a directory: give a file name" in res.stderr
