"""Logging in the rules language, as ufw has it: `logging LEVEL`, and a rule's own `log` /
`log-all` where ufw puts it (`ufw [rule] ACTION [in|out [on IFACE]] [log|log-all] ...`)."""

from __future__ import annotations

import ipaddress
from dataclasses import replace

import pytest

from fwsync.rules.model import Endpoint, Origin, PortRange, Rule
from fwsync.rules.shadow import shadowed
from fwsync.rules.syntax import ParseResult, parse_sources

pytestmark = pytest.mark.unit

F = "t.rules"


def parse(text: str) -> ParseResult:
    return parse_sources([(F, text)], lambda path: "")


def messages(text: str) -> list[str]:
    return [str(d) for d in parse(text).diagnostics]


def one(text: str) -> Rule:
    result = parse(text)
    assert result.diagnostics == (), [str(d) for d in result.diagnostics]
    assert result.policy is not None
    (rule,) = result.policy.rules
    return rule


def ports(*items: int) -> tuple[PortRange, ...]:
    return tuple(PortRange(low=i, high=i) for i in items)


# ---------------------------------------------------------------- logging LEVEL


@pytest.mark.parametrize(("text", "level"), [
    ("logging off", "off"), ("logging low", "low"), ("logging medium", "medium"),
    ("logging high", "high"), ("logging on", "low"), ("  logging high   # all of it", "high"),
])
def test_logging_sets_the_level_and_its_origin(text: str, level: str) -> None:
    result = parse(f"default deny incoming\n{text}")
    assert result.diagnostics == () and result.policy is not None
    assert result.policy.logging == level
    # Built as the default's origin is: the statement as written, without its comment.
    assert result.policy.logging_origin == Origin(file=F, line=2,
                                                  text=text.split("#")[0].strip())


def test_without_a_logging_statement_nothing_is_logged() -> None:
    result = parse("default deny incoming\nallow 22/tcp")
    assert result.policy is not None
    assert result.policy.logging == "off" and result.policy.logging_origin is None
    assert result.policy.rules[0].log == ""


def test_logging_twice_across_files_names_the_first() -> None:
    result = parse_sources([("a.rules", "default deny\n\nlogging low # base"),
                            ("b.rules", "allow 22/tcp\nlogging high")], lambda path: "")
    assert [str(d) for d in result.diagnostics] == [
        "b.rules:2:1: error: duplicate 'logging': the logging level is already set at "
        "a.rules:3 ('logging low')"]
    assert result.policy is None


def test_the_same_level_twice_is_a_duplicate_too() -> None:
    assert messages("logging on\nlogging low") == [
        "t.rules:2:1: error: duplicate 'logging': the logging level is already set at "
        "t.rules:1 ('logging on')"]


LOGGING_ERRORS = [
    ("logging", "1:8: error: unexpected end of line after 'logging', expected one of 'off', "
                "'on', 'low', 'medium', 'high'"),
    ("logging verbose", "1:9: error: unexpected 'verbose', expected one of 'off', 'on', 'low', "
                        "'medium', 'high'"),
    ("logging  full", "1:10: error: unexpected 'full', expected one of 'off', 'on', 'low', "
                      "'medium', 'high'; fwsync has no 'full': 'high' is the most it logs"),
    ("logging High", "1:9: error: unexpected 'High', expected one of 'off', 'on', 'low', "
                     "'medium', 'high'"),
    ("logging 'low'", "1:9: error: unexpected \"'low'\", expected one of 'off', 'on', 'low', "
                      "'medium', 'high'"),
    ("logging low incoming", "1:13: error: unexpected 'incoming', expected end of line"),
    ("Logging low", "1:1: error: unexpected 'Logging', expected one of 'default', 'allow', "
                    "'deny', 'reject', 'limit', 'audit', 'define', 'protect', 'logging', "
                    "'mode'"),
]


@pytest.mark.parametrize(("text", "expected"), LOGGING_ERRORS, ids=[e[0] for e in LOGGING_ERRORS])
def test_logging_errors_are_located_at_the_word(text: str, expected: str) -> None:
    assert messages(text) == [f"{F}:{expected}"]
    assert parse(text).policy is None


# ---------------------------------------------------------------- a rule's log / log-all

LOGGED_RULES = [
    ("allow log 22/tcp", Rule(action="allow", proto="tcp", dst=Endpoint(ports=ports(22)),
                              log="log", origin=Origin(F, 1, "allow log 22/tcp"))),
    ("allow log-all 80,443/tcp comment 'web'",
     Rule(action="allow", proto="tcp", dst=Endpoint(ports=ports(80, 443)), comment="web",
          log="log-all", origin=Origin(F, 1, "allow log-all 80,443/tcp comment 'web'"))),
    ("limit log 2222/tcp", Rule(action="limit", proto="tcp", dst=Endpoint(ports=ports(2222)),
                                log="log", origin=Origin(F, 1, "limit log 2222/tcp"))),
    ("reject log 23", Rule(action="reject", dst=Endpoint(ports=ports(23)), log="log",
                           origin=Origin(F, 1, "reject log 23"))),
    ("deny log-all from 203.0.113.0/24 to any port 5432",
     Rule(action="deny", src=Endpoint(net=ipaddress.ip_network("203.0.113.0/24")),
          dst=Endpoint(ports=ports(5432)), log="log-all",
          origin=Origin(F, 1, "deny log-all from 203.0.113.0/24 to any port 5432"))),
    ("allow log proto udp to any port 53",
     Rule(action="allow", proto="udp", dst=Endpoint(ports=ports(53)), log="log",
          origin=Origin(F, 1, "allow log proto udp to any port 53"))),
    # After `in`, and after `in on IFACE`: where ufw takes it too.
    ("allow in log 22/tcp", Rule(action="allow", proto="tcp", dst=Endpoint(ports=ports(22)),
                                 log="log", origin=Origin(F, 1, "allow in log 22/tcp"))),
    ("allow in on eth0 log 22/tcp",
     Rule(action="allow", iface="eth0", proto="tcp", dst=Endpoint(ports=ports(22)), log="log",
          origin=Origin(F, 1, "allow in on eth0 log 22/tcp"))),
    ("allow in on eth+ log-all to any port 8080 proto tcp",
     Rule(action="allow", iface="eth+", proto="tcp", dst=Endpoint(ports=ports(8080)),
          log="log-all",
          origin=Origin(F, 1, "allow in on eth+ log-all to any port 8080 proto tcp"))),
    ("deny in on wg0 log", Rule(action="deny", iface="wg0", log="log",
                                origin=Origin(F, 1, "deny in on wg0 log"))),
    ("allow on eth1 log-all", Rule(action="allow", iface="eth1", log="log-all",
                                   origin=Origin(F, 1, "allow on eth1 log-all"))),
]


@pytest.mark.parametrize(("text", "expected"), LOGGED_RULES, ids=[r[0] for r in LOGGED_RULES])
def test_a_rules_log_option_sets_its_field_and_keeps_its_text(text: str, expected: Rule) -> None:
    assert one(text) == expected


def test_log_changes_nothing_but_the_log_field() -> None:
    for plain, logged in [("allow 22/tcp", "allow log 22/tcp"),
                          ("allow in on eth0 from 198.51.100.0/24 port 1024:65535 to container "
                           "web port 80 proto tcp comment 'x'",
                           "allow in on eth0 log-all from 198.51.100.0/24 port 1024:65535 to "
                           "container web port 80 proto tcp comment 'x'")]:
        a, b = one(plain), one(logged)
        assert a.log == "" and b.log != ""
        assert replace(b, log="", origin=a.origin) == a


RULE_LOG_ERRORS = [
    ("allow log", "1:10: error: unexpected end of line after 'log', expected one of 'proto', "
                  "'from', 'to', PORTS"),
    ("allow log bogus", "1:11: error: unexpected 'bogus', expected one of 'proto', 'from', "
                        "'to', PORTS"),
    ("allow bogus 22", "1:7: error: unexpected 'bogus', expected one of 'in', 'on', 'log', "
                       "'log-all', 'proto', 'from', 'to', PORTS"),
    ("allow logs 22", "1:7: error: unexpected 'logs', expected one of 'in', 'on', 'log', "
                      "'log-all', 'proto', 'from', 'to', PORTS"),
    ("allow log log 22", "1:11: error: unexpected 'log', expected one of 'proto', 'from', 'to', "
                         "PORTS; 'log' is already given at column 7"),
    ("allow log-all log 22", "1:15: error: unexpected 'log', expected one of 'proto', 'from', "
                             "'to', PORTS; 'log-all' is already given at column 7"),
    ("allow log in on eth0 22/tcp", "1:11: error: unexpected 'in': 'in on IFACE' goes before "
                                    "'log', as in ufw: 'allow in on IFACE log ...'"),
    ("deny log-all on eth0", "1:14: error: unexpected 'on': 'in on IFACE' goes before "
                             "'log-all', as in ufw: 'deny in on IFACE log-all ...'"),
    ("allow 22/tcp log", "1:14: error: unexpected 'log', expected one of 'comment', end of line; "
                         "'log' and 'log-all' go right after the action, or after 'in on IFACE' "
                         "(e.g. 'allow log 22/tcp')"),
    ("allow from any log-all", "1:16: error: unexpected 'log-all', expected one of 'proto', "
                               "'to', 'comment', end of line; 'log' and 'log-all' go right after "
                               "the action, or after 'in on IFACE' (e.g. 'allow log 22/tcp')"),
    ("allow 22 comment 'x' log", "1:22: error: unexpected 'log', expected end of line; 'log' and "
                                 "'log-all' go right after the action, or after 'in on IFACE' "
                                 "(e.g. 'allow log 22/tcp')"),
    # An unquoted comment text is not a misplaced option.
    ("allow 22 comment log", "1:18: error: unexpected 'log', expected a quoted TEXT ('...' or "
                             "\"...\")"),
    ("default log deny", "1:9: error: unexpected 'log', expected one of 'allow', 'deny', "
                         "'reject'"),
    ("allow log 22/tcp,80", "1:11: error: unexpected '22/tcp': the protocol goes once, after "
                            "the last port, e.g. '80,443/tcp'"),
]


@pytest.mark.parametrize(("text", "expected"), RULE_LOG_ERRORS, ids=[e[0] for e in RULE_LOG_ERRORS])
def test_a_misplaced_log_option_is_an_error_at_its_word(text: str, expected: str) -> None:
    assert messages(text) == [f"{F}:{expected}"]
    assert parse(text).policy is None


# ---------------------------------------------------------------- shadowed rules and log


def warnings(text: str) -> list[str]:
    result = parse(text)
    assert result.policy is not None, [str(d) for d in result.diagnostics]
    return [str(d) for d in shadowed(result.policy)]


def test_a_logged_rule_after_the_same_rule_without_log_says_its_log_is_lost() -> None:
    assert warnings("allow 22/tcp\nallow log 22/tcp") == [
        "t.rules:2:1: warning: rule is never reached: shadowed by t.rules:1 ('allow 22/tcp'); "
        "its 'log' never applies: the earlier rule, without 'log', decides these connections "
        "(add 'log' there to log them)"]
    assert warnings("deny from 203.0.113.0/24\ndeny log-all from 203.0.113.7") == [
        "t.rules:2:1: warning: rule is never reached: shadowed by t.rules:1 "
        "('deny from 203.0.113.0/24'); its 'log-all' never applies: the earlier rule, without "
        "'log-all', decides these connections (add 'log-all' there to log them)"]


def test_a_rule_without_log_after_a_logged_one_is_plainly_shadowed() -> None:
    # Nothing is lost by deleting it: the earlier rule decides, and logs.
    assert warnings("allow log 22/tcp\nallow 22/tcp") == [
        "t.rules:2:1: warning: rule is never reached: shadowed by t.rules:1 "
        "('allow log 22/tcp')"]
    assert warnings("allow log 22/tcp\nallow log-all 22/tcp") == [
        "t.rules:2:1: warning: rule is never reached: shadowed by t.rules:1 "
        "('allow log 22/tcp')"]


def test_log_does_not_change_what_a_rule_matches() -> None:
    # Neither rule covers the other: no warning either way, with or without log.
    assert warnings("allow log 22/tcp\nallow 23/tcp\nallow log-all 22/udp") == []
