"""The rules language's parser: every statement form, every error, located at its token."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fwsync.rules.model import (
    AddressSet,
    Diagnostic,
    Endpoint,
    Origin,
    Policy,
    PortRange,
    Rule,
)
from fwsync.rules.syntax import ParseResult, parse_sources, tokenize

pytestmark = pytest.mark.unit

F = "t.rules"


def no_files(path: str) -> str:
    raise FileNotFoundError(2, "No such file or directory", path)


def parse(text: str, read_file: Callable[[str], str] = no_files) -> ParseResult:
    return parse_sources([(F, text)], read_file)


def messages(text: str, read_file: Callable[[str], str] = no_files) -> list[str]:
    return [str(d) for d in parse(text, read_file).diagnostics]


def where(text: str) -> list[tuple[int, int]]:
    return [(d.line, d.col) for d in parse(text).diagnostics]


def rules(text: str) -> tuple[Rule, ...]:
    result = parse(text)
    assert result.diagnostics == (), [str(d) for d in result.diagnostics]
    assert result.policy is not None
    return result.policy.rules


def one(text: str) -> Rule:
    (rule,) = rules(text)
    return rule


def p(*items: int | tuple[int, int]) -> tuple[PortRange, ...]:
    return tuple(PortRange(low=i, high=i) if isinstance(i, int) else PortRange(low=i[0], high=i[1])
                 for i in items)


def net(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    return ipaddress.ip_network(text)


# ---------------------------------------------------------------- the spec's example

SPEC_EXAMPLE = """\
# rules/10-base.rules
default deny incoming
allow 80,443/tcp                                    comment 'public web'
define office 198.51.100.0/24, 2001:db8:1::/64
allow from $office to any port 5432 proto tcp      comment 'postgres for the office only'
limit 2222/tcp
deny from 203.0.113.0/24
allow from 198.51.100.10 to container metrics-* port 9100
"""


def test_spec_example_parses_to_the_expected_policy():
    f = "rules/10-base.rules"
    result = parse_sources([(f, SPEC_EXAMPLE)], no_files)
    assert result.ok and result.diagnostics == ()

    def at(line: int, text: str) -> Origin:
        return Origin(file=f, line=line, text=text)

    office = at(4, "define office 198.51.100.0/24, 2001:db8:1::/64")
    assert result.policy == Policy(
        default="deny",
        default_origin=at(2, "default deny incoming"),
        rules=(
            Rule(action="allow", proto="tcp", dst=Endpoint(ports=p(80, 443)), comment="public web",
                 origin=at(3, "allow 80,443/tcp                                    "
                              "comment 'public web'")),
            Rule(action="allow", proto="tcp", src=Endpoint(set="office"),
                 dst=Endpoint(ports=p(5432)), comment="postgres for the office only",
                 origin=at(5, "allow from $office to any port 5432 proto tcp      "
                              "comment 'postgres for the office only'")),
            Rule(action="limit", proto="tcp", dst=Endpoint(ports=p(2222)),
                 origin=at(6, "limit 2222/tcp")),
            Rule(action="deny", src=Endpoint(net=net("203.0.113.0/24")),
                 origin=at(7, "deny from 203.0.113.0/24")),
            Rule(action="allow", src=Endpoint(net=net("198.51.100.10/32")),
                 dst=Endpoint(container="metrics-*", ports=p(9100)),
                 origin=at(8, "allow from 198.51.100.10 to container metrics-* port 9100")),
        ),
        sets={"office": AddressSet.of("office", (net("198.51.100.0/24"),
                                                 net("2001:db8:1::/64")), office)},
        protect_direct_routing=True,
        protect_localhost_publish=True,
    )


def test_empty_text_is_an_empty_policy_with_the_deny_default():
    result = parse("\n# only a comment\n   \n")
    assert result.ok
    assert result.policy == Policy()


# ---------------------------------------------------------------- rules, simple form


@pytest.mark.parametrize(("text", "expected"), [
    ("allow 53", Rule(action="allow", dst=Endpoint(ports=p(53)), origin=Origin(
        file=F, line=1, text="allow 53"))),
    ("deny 22/udp", Rule(action="deny", proto="udp", dst=Endpoint(ports=p(22)), origin=Origin(
        file=F, line=1, text="deny 22/udp"))),
    ("reject 8000:8100,9000/any", Rule(
        action="reject", proto="any", dst=Endpoint(ports=p((8000, 8100), 9000)),
        origin=Origin(file=F, line=1, text="reject 8000:8100,9000/any"))),
    ("limit in on eth0 2222/tcp comment \"ssh\"", Rule(
        action="limit", iface="eth0", proto="tcp", dst=Endpoint(ports=p(2222)), comment="ssh",
        origin=Origin(file=F, line=1, text="limit in on eth0 2222/tcp comment \"ssh\""))),
    ("allow on eth+ 80", Rule(action="allow", iface="eth+", dst=Endpoint(ports=p(80)),
                              origin=Origin(file=F, line=1, text="allow on eth+ 80"))),
])
def test_simple_form(text, expected):
    assert one(text) == expected


def test_port_lists_are_kept_as_written_duplicates_and_overlaps_included():
    assert one("allow 443,80,80,70:90/tcp").dst.ports == p(443, 80, 80, (70, 90))


def test_port_boundaries_and_leading_zeros():
    assert one("allow 1,65535,1:65535,080").dst.ports == p(1, 65535, (1, 65535), 80)


def test_spaces_after_commas_in_a_port_list_are_tolerated():
    assert one("allow 80, 443 ,8080/tcp").dst.ports == p(80, 443, 8080)


def test_comment_keeps_hashes_inside_quotes_and_strips_the_trailing_comment():
    rule = one("allow 80 comment 'web # not a comment'   # a real comment")
    assert rule.comment == "web # not a comment"
    assert rule.origin.text == "allow 80 comment 'web # not a comment'"


def test_comment_may_hold_the_other_quote():
    assert one("allow 80 comment \"it's web\"").comment == "it's web"


def test_origin_text_is_stripped_and_leading_whitespace_does_not_matter():
    assert one("    allow 80/tcp    # web\n").origin == Origin(file=F, line=1, text="allow 80/tcp")


# ---------------------------------------------------------------- rules, full form


@pytest.mark.parametrize(("text", "fields"), [
    ("deny from 203.0.113.0/24", {"action": "deny", "src": Endpoint(net=net("203.0.113.0/24"))}),
    ("allow from 2001:db8::5", {"src": Endpoint(net=net("2001:db8::5/128"))}),
    ("allow from any port 53 to any port 53 proto udp",
     {"proto": "udp", "src": Endpoint(ports=p(53)), "dst": Endpoint(ports=p(53))}),
    ("allow proto tcp to 127.0.0.1 port 6379",
     {"proto": "tcp", "dst": Endpoint(net=net("127.0.0.1/32"), ports=p(6379))}),
    ("allow to any port 5432 from 198.51.100.0/24",
     {"src": Endpoint(net=net("198.51.100.0/24")), "dst": Endpoint(ports=p(5432))}),
    ("allow in on docker0 from 10.0.0.0/8 to container web port 80,443 comment 'w'",
     {"iface": "docker0", "src": Endpoint(net=net("10.0.0.0/8")),
      "dst": Endpoint(container="web", ports=p(80, 443)), "comment": "w"}),
    ("allow to container * port 80", {"dst": Endpoint(container="*", ports=p(80))}),
    ("allow to container web_1.prod-x", {"dst": Endpoint(container="web_1.prod-x")}),
    ("allow from 198.51.100.0/24 to service web port 80 proto tcp",
     {"src": Endpoint(net=ipaddress.ip_network("198.51.100.0/24")),
      "dst": Endpoint(service="web", ports=p(80)), "proto": "tcp"}),
    ("allow to service api-* port 8080", {"dst": Endpoint(service="api-*", ports=p(8080))}),
    ("allow from 198.51.100.0/24 to network lan port 80 proto tcp",
     {"src": Endpoint(net=ipaddress.ip_network("198.51.100.0/24")), "proto": "tcp",
      "dst": Endpoint(network="lan", ports=p(80))}),
    ("allow in on eth1 to network compose_*", {"iface": "eth1",
                                               "dst": Endpoint(network="compose_*")}),
    ("allow proto any to any port 53", {"dst": Endpoint(ports=p(53))}),
    ("reject proto tcp", {"action": "reject", "proto": "tcp"}),
    ("allow in on eth0", {"iface": "eth0"}),
    ("allow on eth0 comment 'all of eth0'", {"iface": "eth0", "comment": "all of eth0"}),
    ("allow to ::1", {"dst": Endpoint(net=net("::1/128"))}),
    ("allow from 0.0.0.0/0", {"src": Endpoint(net=net("0.0.0.0/0"))}),
    ("allow from 198.51.100.0/255.255.255.0", {"src": Endpoint(net=net("198.51.100.0/24"))}),
])
def test_full_form(text, fields):
    rule = one(text)
    fields = {"action": "allow", **fields}
    assert rule == Rule(**fields, origin=Origin(file=F, line=1, text=text))


def test_spec_order_with_proto_last_equals_proto_first():
    a = one("allow from 198.51.100.1 to any port 5432 proto tcp")
    b = one("allow proto tcp from 198.51.100.1 to any port 5432")
    assert replace(a, origin=b.origin) == b


def test_set_source():
    (rule,) = rules("define office 198.51.100.0/24\nallow from $office port 1024:65535")[0:1]
    assert rule.src == Endpoint(set="office", ports=p((1024, 65535)))


# ---------------------------------------------------------------- define


@pytest.mark.parametrize("items", [
    "198.51.100.0/24, 2001:db8:1::/64",
    "198.51.100.0/24,2001:db8:1::/64",
    "198.51.100.0/24 ,2001:db8:1::/64",
    "198.51.100.0/24 , 2001:db8:1::/64",
])
def test_define_list_spacing(items):
    result = parse(f"define office {items}")
    assert result.ok and result.policy is not None
    assert result.policy.sets["office"].networks == (net("198.51.100.0/24"),
                                                     net("2001:db8:1::/64"))


def test_define_single_address_is_a_host_network_and_names_may_use_underscore_and_dash():
    result = parse("define _mon-1 198.51.100.10\ndefine B2 2001:db8::1")
    assert result.policy is not None
    assert result.policy.sets["_mon-1"].networks == (net("198.51.100.10/32"),)
    assert result.policy.sets["B2"].networks == (net("2001:db8::1/128"),)


def test_define_file_reads_the_path_relative_to_the_rules_file_and_parses_it():
    asked: list[str] = []

    def read(path: str) -> str:
        asked.append(path)
        return "# the office\n198.51.100.0/24\r\n\n  2001:db8:1::/64   # v6\n198.51.100.7\n"

    result = parse_sources([("rules/10-base.rules", "define office file lists/office.txt\n"
                                                    "define more file 'with space.txt'")], read)
    assert asked == ["rules/lists/office.txt", "rules/with space.txt"]
    assert result.ok and result.policy is not None
    office = result.policy.sets["office"]
    assert office.networks == (net("198.51.100.0/24"), net("2001:db8:1::/64"),
                               net("198.51.100.7/32"))
    assert office.origin == Origin(file="rules/10-base.rules", line=1,
                                   text="define office file lists/office.txt")


def test_define_file_may_be_empty():
    result = parse("define blocked file blocked.txt\ndeny from $blocked", lambda _: "# none\n")
    assert result.ok and result.policy is not None
    assert result.policy.sets["blocked"].networks == ()


def test_define_file_errors_are_located_in_the_list_file_in_file_order():
    listing = "198.51.100.0/24\n  10.0.0.1/8\n\n198.51.100.1 198.51.100.2\nbogus # x\n"
    got = messages("allow 99999\ndefine x file lists/x.txt\nallow 0", lambda _: listing)
    assert got == [
        "t.rules:1:7: error: '99999' is not a port number (1-65535)",
        "lists/x.txt:2:3: error: '10.0.0.1/8' has host bits set: did you mean 10.0.0.0/8?",
        "lists/x.txt:4:14: error: unexpected '198.51.100.2': one address or CIDR a line",
        "lists/x.txt:5:1: error: 'bogus' is not an IP address or CIDR",
        "t.rules:3:7: error: '0' is not a port number (1-65535)",
    ]


def test_define_file_with_many_errors_shows_twenty_and_counts_the_rest():
    got = parse("define x file x.txt", lambda _: "nope\n" * 25).diagnostics
    assert len(got) == 21
    assert [(d.file, d.line) for d in got[:20]] == [("x.txt", n) for n in range(1, 21)]
    assert str(got[20]) == "t.rules:1:15: error: 'x.txt': 5 more errors not shown"


def test_define_file_that_cannot_be_read_is_an_error_at_the_path():
    assert messages("define x file missing.txt") == [
        "t.rules:1:15: error: cannot read 'missing.txt': No such file or directory"]


def test_define_file_that_is_not_utf8_is_an_error_at_the_path():
    def read(_: str) -> str:
        return b"10.0.0.1\n\xff".decode("utf-8")

    assert messages("define x file bad.txt", read) == [
        "t.rules:1:15: error: 'bad.txt' is not UTF-8 text (byte 0xff at offset 9)"]


def test_large_define_file_parses():
    hosts = "\n".join(str(ipaddress.IPv4Address(0x0A000000 + i)) for i in range(100_000))
    result = parse("define big file big.txt\ndeny from $big", lambda _: hosts)
    assert result.ok and result.policy is not None
    assert len(result.policy.sets["big"].networks) == 100_000


def test_a_broken_define_does_not_make_its_uses_unknown():
    assert where("define x 10.0.0.1/8\nallow from $x\ndefine y 10.0.0.0/8 10.1.0.0/16\n"
                 "allow from $y") == [(1, 10), (3, 21)]


# ---------------------------------------------------------------- default and protect


def test_default_forms():
    for text, action in [("default allow", "allow"), ("default reject incoming", "reject"),
                         ("default deny", "deny")]:
        result = parse(text)
        assert result.policy is not None
        assert result.policy.default == action
        assert result.policy.default_origin == Origin(file=F, line=1, text=text)


def test_default_twice_across_files_names_the_first():
    result = parse_sources([("a.rules", "\ndefault deny incoming # base"),
                            ("b.rules", "default allow")], no_files)
    assert [str(d) for d in result.diagnostics] == [
        "b.rules:1:1: error: duplicate 'default': the default is already set at a.rules:2 "
        "('default deny incoming')"]
    assert result.policy is None


def test_protect_switches():
    result = parse("protect direct-routing off\nprotect localhost-publish on")
    assert result.policy is not None
    assert not result.policy.protect_direct_routing
    assert result.policy.protect_localhost_publish
    result = parse("protect localhost-publish off")
    assert result.policy is not None
    assert result.policy.protect_direct_routing
    assert not result.policy.protect_localhost_publish


def test_protect_direct_routing_off_for_one_network():
    result = parse("protect direct-routing off to network lan\n"
                   "protect direct-routing off to network compose_*")
    assert result.policy is not None and result.policy.protect_direct_routing
    assert [(s.network, s.origin.line) for s in result.policy.direct_routing_off] == [
        ("lan", 1), ("compose_*", 2)]
    assert messages("protect direct-routing off to network lan\n"
                    "protect direct-routing off to network lan") == [
        "t.rules:2:39: error: duplicate 'protect direct-routing off to network lan': already "
        "set at t.rules:1 ('protect direct-routing off to network lan')"]


def test_protect_twice_is_an_error_naming_the_first():
    assert messages("protect direct-routing off\nprotect direct-routing off") == [
        "t.rules:2:9: error: duplicate 'protect direct-routing': already set at t.rules:1 "
        "('protect direct-routing off')"]


# ---------------------------------------------------------------- errors

FULL_ERRORS = [
    ("Allow 80", "1:1: error: unexpected 'Allow', expected one of 'default', 'allow', 'deny', "
                 "'reject', 'limit', 'audit', 'define', 'protect', 'logging', "
                 "'mode'"),
    ("allow", "1:6: error: unexpected end of line after 'allow', expected one of 'in', 'on', "
              "'log', 'log-all', 'proto', 'from', 'to', PORTS"),
    ("allow in http", "1:10: error: unexpected 'http', expected one of 'on', 'log', 'log-all', "
                      "'proto', 'from', 'to', PORTS"),
    ("allow 70000/tcp", "1:7: error: '70000' is not a port number (1-65535)"),
    ("allow 0", "1:7: error: '0' is not a port number (1-65535)"),
    ("allow 1:99999999999999999999999", "1:9: error: '99999999999999999999999' is not a port "
                                        "number (1-65535)"),
    ("allow 90:80", "1:7: error: '90:80': the range's low end is above its high end "
                    "(did you mean 80:90?)"),
    ("allow 80-90", "1:7: error: '80-90' is not a port or a port range (N or N:M)"),
    ("allow 80/icmp", "1:10: error: unknown protocol 'icmp' in '80/icmp', expected one of 'tcp', "
                      "'udp', 'any'"),
    ("allow 80/tcp,443", "1:7: error: unexpected '80/tcp': the protocol goes once, after the last "
                         "port, e.g. '80,443/tcp'"),
    ("allow to any port 53/udp", "1:19: error: unexpected '53/udp': after 'port' the protocol is "
                                 "given with 'proto', e.g. 'port 53 proto udp'"),
    ("allow 80,", "1:10: error: unexpected end of line after ',', expected PORTS"),
    ("allow from 198.51.100.5/24", "1:12: error: '198.51.100.5/24' has host bits set: did you "
                                   "mean 198.51.100.0/24?"),
    ("allow from 2001:db8::1/32", "1:12: error: '2001:db8::1/32' has host bits set: did you mean "
                                  "2001:db8::/32?"),
    ("allow from 300.1.1.1", "1:12: error: '300.1.1.1' is not an IP address or CIDR"),
    ("allow from $office", "1:12: error: unknown set '$office': a set must be defined before "
                           "the rules that use it"),
    ("allow to $office", "1:10: error: unexpected '$office' after 'to': a set can only be a "
                         "source ('from $NAME'); a destination is 'any', an address, a CIDR, "
                         "'container NAME', 'service NAME' or 'network NAME'"),
    ("allow from 198.51.100.1 to 2001:db8::1",
     "1:28: error: '2001:db8::1' is IPv6 but the source '198.51.100.1' is IPv4: the rule can "
     "never match"),
    ("define v4 198.51.100.0/24\nallow from $v4 to 2001:db8::/64 port 22",
     "2:19: error: '2001:db8::/64' is IPv6 but set '$v4' holds only IPv4: the rule can never "
     "match"),
    ("allow 80 comment 'public web", "1:18: error: unterminated quoted text \"'public web\": "
                                     "no closing '"),
    ("allow 80 comment web", "1:18: error: unexpected 'web', expected a quoted TEXT "
                             "('...' or \"...\")"),
    ("allow 80 from 198.51.100.1", "1:10: error: unexpected 'from', expected one of 'comment', "
                                   "end of line; with 'from', name the ports with 'port', "
                                   "e.g. 'allow from 198.51.100.1 to any port 80 proto tcp'"),
    ("allow proto tcp from any proto udp", "1:26: error: duplicate 'proto': already given at "
                                           "column 7"),
    ("define office 198.51.100.0/24\ndefine office 203.0.113.0/24",
     "2:8: error: set 'office' is already defined at t.rules:1"),
    ("define 1st 198.51.100.0/24", "1:8: error: '1st' is not a set name: a letter or '_', then "
                                   "letters, digits, '_' or '-'"),
    ("default limit", "1:9: error: unexpected 'limit', expected one of 'allow', 'deny', 'reject'"),
    ("default deny outgoing", "1:14: error: unexpected 'outgoing', expected one of 'incoming', "
                              "end of line"),
    ("protect everything off", "1:9: error: unexpected 'everything', expected one of "
                               "'direct-routing', 'localhost-publish'"),
    ("allow on eth0/1 80", "1:10: error: 'eth0/1' is not an interface name fwsync can match: "
                           "it contains '/', ':', a space or a NUL"),
    ("allow on averyveryverylong0 80", "1:10: error: 'averyveryverylong0' is not an interface "
                                       "name fwsync can match: it is longer than 15 bytes"),
    ("allow on eth* 80", "1:10: error: 'eth*' is not an interface name fwsync can match: '*' is "
                         "not a wildcard here: a trailing '+' matches a prefix ('eth+')"),
    ("allow on e+th 80", "1:10: error: 'e+th' is not an interface name fwsync can match: fwsync "
                         "writes only names of letters, digits, '_', '.' and '-' (not first: "
                         "'.' or '-') into the kernel"),
    ("deny on + 80", "1:9: error: '+' is not an interface name fwsync can match: '+' alone would "
                     "match every interface: leave 'on' out instead"),
    ("allow 80 comment 'a\x00b'", "1:20: error: control character U+0000 is not allowed in "
                                  "rules text"),
    ("allow 80 # \u202e", "1:12: error: invisible formatting character U+202E (RIGHT-TO-LEFT "
                          "OVERRIDE) is not allowed in rules text"),
    ("allow 80 comment 'x\u2028y'", "1:20: error: line separator U+2028 (LINE SEPARATOR) is not "
                                    "allowed in rules text"),
    ("allow to container web*x", "1:20: error: 'web*x' is not a container name (letters, digits, "
                                 "'_', '.', '-'), optionally ending in '*' to match a prefix"),
    ("allow from container web", "1:12: error: unexpected 'container' after 'from': a container "
                                 "can only be a destination ('to container NAME')"),
    ("allow to service web*x", "1:18: error: 'web*x' is not a Swarm service name (letters, "
                               "digits, '_', '.', '-'), optionally ending in '*' to match a "
                               "prefix"),
    ("allow from service web port 80", "1:12: error: unexpected 'service' after 'from': a Swarm "
                                       "service can only be a destination ('to service NAME')"),
    ("allow to service", "1:17: error: unexpected end of line after 'service', expected NAME"),
    ("allow from network lan", "1:12: error: unexpected 'network' after 'from': a network "
                               "can only be a destination ('to network NAME')"),
    ("allow to network lan*x", "1:18: error: 'lan*x' is not a network name (letters, digits, "
                               "'_', '.', '-'), optionally ending in '*' to match a prefix"),
    ("protect localhost-publish off to network lan",
     "1:31: error: unexpected 'to': only 'protect direct-routing off' can name a network "
     "('protect direct-routing off to network NAME'); 'protect localhost-publish off' is for "
     "every network"),
    ("protect direct-routing on to network lan",
     "1:27: error: unexpected 'to': only 'protect direct-routing off' can name a network "
     "('protect direct-routing off to network NAME'); 'protect direct-routing on' is for "
     "every network"),
    ("protect direct-routing off to container web", "1:31: error: unexpected 'container', "
                                                    "expected 'network'"),
    ("protect direct-routing off to network", "1:38: error: unexpected end of line after "
                                              "'network', expected NAME"),
    ("protect direct-routing off to network lan port 80", "1:43: error: unexpected 'port', "
                                                          "expected end of line"),
    ("protect direct-routing off now", "1:28: error: unexpected 'now', expected one of 'to', "
                                       "end of line"),
]


@pytest.mark.parametrize(("text", "expected"), FULL_ERRORS)
def test_error_message(text, expected):
    result = parse(text)
    assert [str(d) for d in result.diagnostics] == [f"{F}:{expected}"]
    assert result.policy is None and not result.ok


LOCATED_ERRORS = [
    ("allow in", (1, 9)),
    ("allow on", (1, 9)),
    ("allow on from 1.2.3.4", (1, 10)),
    ("allow on + 80", (1, 10)),
    ("allow on . 80", (1, 10)),
    ("allow on a:b 80", (1, 10)),
    ("allow on ä 80", (1, 10)),
    ("allow on -x 80", (1, 10)),
    ("allow on \"+\" 80", (1, 10)),
    ("allow on eth0 in 80", (1, 15)),
    ("allow in comment 'x'", (1, 10)),
    ("allow comment 'x'", (1, 7)),
    ("allow 'x'", (1, 7)),
    ("allow , 80", (1, 7)),
    ("allow 80 80", (1, 10)),
    ("allow 80/", (1, 10)),
    ("allow 80:", (1, 7)),
    ("allow :80", (1, 7)),
    ("allow from", (1, 11)),
    ("allow from to any", (1, 12)),
    ("allow from any port", (1, 20)),
    ("allow from any port http", (1, 21)),
    ("allow from $ to any", (1, 12)),
    ("allow from $1x", (1, 12)),
    ("allow from fe80::1%eth0", (1, 12)),
    ("allow from 10.0.0.1 10.0.0.2", (1, 21)),
    ("allow to", (1, 9)),
    ("allow to container", (1, 19)),
    ("allow to network", (1, 17)),
    ("allow to network from any", (1, 18)),
    ("allow to container /web", (1, 20)),
    ("allow to container -web", (1, 20)),
    ("allow to any proto", (1, 19)),
    ("allow to any proto icmp", (1, 20)),
    ("allow to any to any", (1, 14)),
    ("allow from any from any", (1, 16)),
    ("allow to any comment 'x' extra", (1, 26)),
    ("allow to any comment", (1, 21)),
    ("allow from 2001:db8::/32 to 198.51.100.1", (1, 29)),
    ("default", (1, 8)),
    ("default deny incoming now", (1, 23)),
    ("default 'deny'", (1, 9)),
    ("protect direct-routing", (1, 23)),
    ("protect direct-routing off now", (1, 28)),
    ("define", (1, 7)),
    ("define x", (1, 9)),
    ("define x 10.0.0.1,", (1, 19)),
    ("define x any", (1, 10)),
    ("define x $y", (1, 10)),
    ("define x file", (1, 14)),
    ("define x file a b", (1, 17)),
    ("define x file ,", (1, 15)),
    ("define x.y 10.0.0.1", (1, 8)),
    (",", (1, 1)),
    ("'allow'", (1, 1)),
    ("80/tcp", (1, 1)),
    ("allow 80 comment \"x", (1, 18)),
]


@pytest.mark.parametrize(("text", "location"), [
    ("allow 80\x01", (1, 9)),
    ("\x7fallow 80", (1, 1)),
    ("allow 80\rcomment 'x'", (1, 9)),
    ("allow 80 comment '\x1b[31m'", (1, 19)),
    ("allow 80 comment 'a\x85'", (1, 20)),  # C1 control (NEL)
    ("allow 80 comment '\u200b'", (1, 19)),  # zero-width space
    ("allow 80\n\ndeny 22 comment '\x00'", (3, 18)),
])
def test_control_and_invisible_characters_are_errors_at_their_column(text, location):
    """A NUL in a comment cut the iptables-restore line short: the deny lost its DROP."""
    result = parse(text)
    assert [(d.line, d.col) for d in result.diagnostics] == [location]
    assert "is not allowed in rules text" in result.diagnostics[0].message
    assert result.policy is None


def test_tab_and_non_ascii_text_are_fine():
    result = parse("allow\t80 comment 'café ünïcode 🚀'")
    assert result.ok and result.policy is not None
    assert result.policy.rules[0].comment == "café ünïcode 🚀"


def test_control_characters_in_an_address_list_are_located_there():
    result = parse_sources([(F, "define x file l.list")],
                           lambda _path: "198.51.100.1\n198.51.100.2 # \x00\n")
    assert [(d.file, d.line, d.col) for d in result.diagnostics] == [("l.list", 2, 16)]


@pytest.mark.parametrize(("text", "location"), LOCATED_ERRORS)
def test_error_location(text, location):
    result = parse(text)
    assert [(d.line, d.col) for d in result.diagnostics] == [location]
    assert result.diagnostics[0].severity == "error"
    assert "'" in result.diagnostics[0].message or '"' in result.diagnostics[0].message


def test_every_value_error_in_a_statement_is_reported():
    assert where("allow from 10.0.0.1/8 port 0 to 10.0.0.300 port 70000,1:2:3") == [
        (1, 12), (1, 28), (1, 33), (1, 49), (1, 55)]


def test_errors_never_stop_later_lines_and_come_in_file_order():
    text = "allow\nallow 80/tcp\nbogus\ndefault deny\n\nallow from 1.2.3.4/8\n"
    result = parse(text)
    assert [(d.line, d.col) for d in result.diagnostics] == [(1, 6), (3, 1), (6, 12)]


def test_file_order_is_evaluation_order_not_name_order():
    result = parse_sources([("b.rules", "oops\nallow 0"), ("a.rules", "oops")], no_files)
    assert [(d.file, d.line) for d in result.diagnostics] == [
        ("b.rules", 1), ("b.rules", 2), ("a.rules", 1)]


def test_a_set_must_be_defined_before_use_across_files():
    result = parse_sources([("10.rules", "allow from $x"), ("20.rules", "define x 10.0.0.0/8")],
                           no_files)
    assert [(d.file, d.line, d.col) for d in result.diagnostics] == [("10.rules", 1, 12)]
    result = parse_sources([("10.rules", "define x 10.0.0.0/8"), ("20.rules", "allow from $x")],
                           no_files)
    assert result.ok


def test_set_with_both_families_may_go_to_either():
    assert parse("define both 198.51.100.0/24, 2001:db8::/32\n"
                 "allow from $both to 2001:db8::1\nallow from $both to 198.51.100.1").ok


def test_keywords_are_case_sensitive():
    assert where("allow FROM 10.0.0.1") == [(1, 7)]
    assert where("allow 80/TCP") == [(1, 10)]


def test_crlf_and_bom_are_tolerated():
    result = parse("\ufeffallow 80/tcp\r\nallow 81\r\n")
    assert result.ok and result.policy is not None
    assert [r.origin.text for r in result.policy.rules] == ["allow 80/tcp", "allow 81"]


def test_parse_result_ok_ignores_warnings():
    warning = Diagnostic(file=F, line=1, col=1, severity="warning", message="w")
    assert ParseResult(policy=Policy(), diagnostics=(warning,)).ok
    error = replace(warning, severity="error")
    assert not ParseResult(policy=None, diagnostics=(warning, error)).ok


def test_tokenizer_keeps_one_based_columns_and_the_code_before_a_comment():
    line = tokenize("  allow 80,443/tcp comment 'a # b' # c", 7)
    assert [(t.kind, t.text, t.line, t.col) for t in line.tokens] == [
        ("word", "allow", 7, 3), ("word", "80", 7, 9), ("comma", ",", 7, 11),
        ("word", "443/tcp", 7, 12), ("word", "comment", 7, 20), ("string", "'a # b'", 7, 28)]
    assert line.code == "allow 80,443/tcp comment 'a # b'"
    assert tokenize("x 'open # and more", 1).tokens[-1].kind == "open"


# ---------------------------------------------------------------- properties

port_items = st.tuples(st.integers(1, 65535), st.integers(1, 65535)).map(sorted)


@given(st.lists(port_items, min_size=1, max_size=8), st.sampled_from(["", "/tcp", "/udp", "/any"]))
def test_port_lists_round_trip(items, suffix):
    text = ",".join(str(PortRange(low=lo, high=hi)) for lo, hi in items)
    rule = one(f"allow {text}{suffix}")
    assert rule.dst.ports == tuple(PortRange(low=lo, high=hi) for lo, hi in items)
    assert rule.proto == (suffix[1:] or "any")
    assert ",".join(map(str, rule.dst.ports)) == text


@given(st.integers(1, 65535), st.integers(1, 65535))
def test_a_range_is_valid_exactly_when_low_is_not_above_high(low, high):
    assert parse(f"allow to any port {low}:{high}").ok == (low <= high)


networks = st.one_of(st.ip_addresses(v=4).flatmap(
    lambda a: st.integers(0, 32).map(lambda n: ipaddress.ip_network(f"{a}/{n}", strict=False))),
    st.ip_addresses(v=6).flatmap(
    lambda a: st.integers(0, 128).map(lambda n: ipaddress.ip_network(f"{a}/{n}", strict=False))))


@given(networks, st.booleans())
def test_addresses_and_cidrs_round_trip(network, as_address):
    single = as_address and network.prefixlen == network.max_prefixlen
    text = str(network.network_address) if single else str(network)
    rule = one(f"deny from {text}")
    assert rule.src.net == network
    result = parse(f"define s {text}, {text}")
    assert result.policy is not None
    assert result.policy.sets["s"].networks == (network, network)


@given(st.ip_addresses(), st.integers(0, 128))
def test_host_bits_error_suggests_the_network(address, prefix):
    prefix = min(prefix, address.max_prefixlen)
    network = ipaddress.ip_network(f"{address}/{prefix}", strict=False)
    diagnostics = parse(f"allow from {address}/{prefix}").diagnostics
    if network.network_address == address:
        assert diagnostics == ()
    else:
        assert [d.message for d in diagnostics] == [
            f"'{address}/{prefix}' has host bits set: did you mean {network}?"]


vocabulary = st.sampled_from([
    "allow", "deny", "reject", "limit", "default", "define", "protect", "in", "on", "from", "to",
    "port", "proto", "tcp", "udp", "any", "comment", "container", "network", "file",
    "incoming", "$x", "logging", "log", "log-all", "low", "high", "full",
    "10.0.0.1", "10.0.0.0/8", "2001:db8::1", "80", "80,443", "1:2", "eth+", "'t'", '"', "'",
    ",", "#", "direct-routing", "off", "web-*", "/tcp", "x", "\t", " "])


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.lists(vocabulary, max_size=10).map(" ".join), max_size=6).map("\n".join))
def test_statement_like_text_never_raises(text):
    check_result(parse_sources([("a.rules", text), ("b.rules", text)], lambda _: text))


@given(st.text(max_size=300))
def test_arbitrary_text_never_raises(text):
    check_result(parse_sources([(F, text)], lambda _: text))
    check_result(parse(f"define x file y\n{text}", lambda _: text))


def check_result(result: ParseResult) -> None:
    assert (result.policy is None) == (not result.ok)
    for d in result.diagnostics:
        assert d.line >= 1 and d.col >= 1
    keys = [(d.line, d.col) for d in result.diagnostics if d.file == F]
    assert keys == sorted(keys)


def test_one_rule_past_the_limit_is_one_error_at_its_line():
    from fwsync.rules.limits import MAX_RULES

    text = "".join(f"deny from 2001:db8::{i:x}\n" for i in range(MAX_RULES + 5))
    result = parse(text)
    assert [(d.line, d.col) for d in result.diagnostics] == [(MAX_RULES + 1, 1)]
    assert result.diagnostics[0].message.startswith("more than 10,000 rules: fwsync's limit")


def test_a_list_past_the_set_limit_stops_at_the_line_that_crosses_it():
    from fwsync.rules.limits import MAX_SET_ENTRIES

    listed = "# header\n" + "".join(f"2001:db8::{i >> 16:x}:{i & 0xffff:x}\n"
                                     for i in range(MAX_SET_ENTRIES + 3))
    result = parse_sources([(F, "define big file big.list\ndeny from $big\n")],
                           lambda _path: listed)
    assert [(d.file, d.line, d.col) for d in result.diagnostics] == [
        ("big.list", MAX_SET_ENTRIES + 2, 1)]
    assert "entry 100,001 of this list is one too many" in result.diagnostics[0].message


def test_sets_together_have_a_limit_and_an_inline_list_counts_too():
    from fwsync.rules.limits import MAX_ENTRIES, MAX_SET_ENTRIES

    first = "".join(f"2001:db8::{i >> 16:x}:{i & 0xffff:x}\n" for i in range(MAX_SET_ENTRIES))
    inline = ", ".join(f"2001:db9::{i >> 16:x}:{i & 0xffff:x}"
                       for i in range(MAX_ENTRIES - MAX_SET_ENTRIES + 1))
    result = parse_sources([(F, f"define a file a.list\ndefine b {inline}\n")],
                           lambda _path: first)
    assert [(d.line, d.col) for d in result.diagnostics] == [(2, 8)]
    assert "limit is 150,000 in all sets together" in result.diagnostics[0].message
