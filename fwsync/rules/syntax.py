"""The rules language's syntax: source text → Policy, every problem a Diagnostic at its token.

Pure: no file I/O (a `define NAME file PATH` list is read through the caller's callback), no
clock, no mutable globals. As in ufw, each statement keyword has its own small parse function;
a rule's clauses are read by keyword, not by position.

Port lists are kept as written (duplicates and overlaps included): the builder expands each item,
and the user's own order is what messages should quote back.
"""

from __future__ import annotations

import contextlib
import ipaddress
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Literal, cast

from fwsync.rules.addresses import bulk_entries, entry_of, fast_entry
from fwsync.rules.limits import MAX_ENTRIES, MAX_RULES, MAX_SET_ENTRIES, count
from fwsync.rules.model import (
    Action,
    AddressSet,
    DefaultAction,
    Diagnostic,
    Endpoint,
    LogLevel,
    Mode,
    Network,
    NetworkScope,
    Origin,
    Policy,
    PortRange,
    Proto,
    Rule,
    RuleLog,
    Span,
)
from fwsync.rules.text import forbidden_char, rule_iface_problem

ACTIONS = ("allow", "deny", "reject", "limit")
DEFAULT_ACTIONS = ("allow", "deny", "reject")
PROTOS = ("tcp", "udp", "any")
PROTECTIONS = ("direct-routing", "localhost-publish")
# `logging LEVEL`: `on` is `low`, as in ufw. (ufw's `full` has no counterpart: `high` is the most.)
LOGGING_WORDS = ("off", "on", "low", "medium", "high")
RULE_LOGS = ("log", "log-all")  # a rule's own logging, right after its action (ufw's place)
AUDITED = ("deny", "reject", "limit")  # what `audit ACTION` takes: refusals
MODES = ("enforce", "audit")
STATEMENTS = ("default", *ACTIONS, "audit", "define", "protect", "logging", "mode")
RULE_KEYWORDS = ("in", "on", "proto", "from", "to", "port", "comment")
END = "end of line"
MAX_LIST_ERRORS = 20  # a wrong file given as an address list would otherwise flood the output

_LEXEME = re.compile(
    r"""(?P<space>\s+)
      | (?P<comment>\#.*)
      | (?P<comma>,)
      | (?P<string>'[^']*'|"[^"]*")
      | (?P<open>['"].*)
      | (?P<word>[^\s\#,'"]+)""",
    re.VERBOSE | re.DOTALL,
)
_SET_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
_CONTAINER = re.compile(r"(?:[A-Za-z0-9][A-Za-z0-9_.-]*)?\*?")  # Docker's name rule + a prefix `*`
_PORT_ITEM = re.compile(r"([0-9]+)(?::([0-9]+))?")
_ADDRESS_CHARS = re.compile(r"[0-9A-Fa-f.:/]+")  # keeps ipaddress's scope ids and oddities out


@dataclass(frozen=True)
class ParseResult:
    policy: Policy | None  # None when any error was found
    diagnostics: tuple[Diagnostic, ...]  # errors and warnings, in file order

    @property
    def ok(self) -> bool:
        return not any(d.severity == "error" for d in self.diagnostics)


TokenKind = Literal["word", "comma", "string", "open"]  # `open`: a quote that is never closed


@dataclass(frozen=True)
class Token:
    kind: TokenKind
    text: str  # as written, quotes included
    line: int
    col: int  # 1-based

    @property
    def value(self) -> str:
        return self.text[1:-1] if self.kind == "string" else self.text

    def part(self, start: int, end: int | None = None) -> Token:
        """A slice of a word, located where it sits (for `443/icmp`, the `icmp`)."""
        return Token("word", self.text[start:end], self.line, self.col + start)


@dataclass(frozen=True)
class Line:
    tokens: tuple[Token, ...]
    code: str  # the statement without its `#` comment, stripped: Origin.text


def tokenize(text: str, line: int) -> Line:
    tokens: list[Token] = []
    code_end = len(text)
    pos = 0
    while (m := _LEXEME.match(text, pos)) is not None:
        kind = m.lastgroup
        if kind == "comment":
            code_end = pos
            break
        if kind in ("comma", "string", "open", "word"):
            tokens.append(Token(cast(TokenKind, kind), m.group(), line, pos + 1))
        pos = m.end()
    return Line(tuple(tokens), text[:code_end].strip())


def lines(text: str) -> Iterator[str]:
    """Split on \\n only, so line numbers agree with editors (str.splitlines splits on more).
    One line at a time: a 100k-line list is not held a second time as a list of lines."""
    start = 1 if text.startswith("\ufeff") else 0
    while True:
        end = text.find("\n", start)
        if end < 0:
            yield text[start:].removesuffix("\r")
            return
        yield text[start:end].removesuffix("\r")
        start = end + 1


def quoted(text: str) -> str:
    text = text if len(text) <= 60 else text[:57] + "..."
    return f'"{text}"' if "'" in text else f"'{text}'"


def one_of(expected: Sequence[str]) -> str:
    return expected[0] if len(expected) == 1 else "one of " + ", ".join(expected)


def keywords(*words: str) -> list[str]:
    return [f"'{w}'" for w in words]


def parse_network(text: str) -> Network | str:
    """An address (→ /32 or /128) or a CIDR; a message naming the text when it is neither."""
    if _ADDRESS_CHARS.fullmatch(text):
        try:
            return ipaddress.ip_network(text)
        except ValueError:
            try:
                network = ipaddress.ip_network(text, strict=False)
            except ValueError:
                pass
            else:
                return f"{quoted(text)} has host bits set: did you mean {network}?"
    return f"{quoted(text)} is not an IP address or CIDR"


# ---------------------------------------------------------------- state across statements

Key = tuple[int, int, int, int, int]  # source index, line, col, list-file line, list-file col


@dataclass
class _State:
    read_file: Callable[[str], str]
    diagnostics: list[tuple[Key, Diagnostic]] = field(default_factory=list)
    rules: list[Rule] = field(default_factory=list)
    sets: dict[str, AddressSet] = field(default_factory=dict)
    set_families: dict[str, frozenset[int]] = field(default_factory=dict)
    # Every define, good or bad: a broken one must not make each `$NAME` an "unknown set" too.
    set_origins: dict[str, Origin] = field(default_factory=dict)
    default: tuple[DefaultAction, Origin] | None = None
    logging: tuple[LogLevel, Origin] | None = None
    mode: tuple[Mode, Origin] | None = None
    protect: dict[str, tuple[bool, Origin]] = field(default_factory=dict)
    protect_off: dict[str, NetworkScope] = field(default_factory=dict)  # network → its line
    lists_read: list[str] = field(default_factory=list)  # `define NAME file PATH`'s paths
    entry_count: int = 0  # addresses and networks in all sets so far (limits.MAX_ENTRIES)
    too_many_rules: bool = False  # reported once, at the first rule past limits.MAX_RULES


class _Stop(Exception):
    """The statement's structure is broken: its error is recorded, the rest of the line skipped."""


class _Statement:
    """A cursor over one statement's tokens, and where its problems go."""

    def __init__(self, state: _State, index: int, file: str, line: Line, number: int) -> None:
        self.state, self.index, self.file, self.number = state, index, file, number
        self.tokens = line.tokens
        self.origin = Origin(file=file, line=number, text=line.code)
        self.pos = 0
        # Said after "unexpected 'log'" (a rule sets it: where its `log` may go).
        self.log_hint = ""

    def peek(self) -> Token | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self) -> Token:
        self.pos += 1
        return self.tokens[self.pos - 1]

    def take_word(self, expected: Sequence[str]) -> Token:
        tok = self.peek()
        if tok is None or tok.kind != "word":
            raise self.unexpected(tok, expected)
        return self.take()

    def accept(self, text: str) -> Token | None:
        tok = self.peek()
        return self.take() if tok is not None and tok.text == text else None

    def end(self, expected: Sequence[str], hint: str = "") -> None:
        if (tok := self.peek()) is not None:
            raise self.unexpected(tok, expected, hint)

    def error(self, tok: Token, message: str) -> None:
        self.state.diagnostics.append(((self.index, self.number, tok.col, 0, 0), Diagnostic(
            file=self.file, line=self.number, col=tok.col, severity="error", message=message)))

    def fail(self, tok: Token, message: str) -> _Stop:
        self.error(tok, message)
        return _Stop()

    def unexpected(self, tok: Token | None, expected: Sequence[str], hint: str = "") -> _Stop:
        if tok is None:
            last = self.tokens[-1]
            at = Token("word", "", self.number, last.col + len(last.text))
            return self.fail(at, f"unexpected end of line after {quoted(last.text)}, "
                                 f"expected {one_of(expected)}{hint}")
        if tok.text in RULE_LOGS and not hint:
            hint = self.log_hint
        return self.fail(tok, f"unexpected {quoted(tok.text)}, expected {one_of(expected)}{hint}")


# ---------------------------------------------------------------- statements


def _default(s: _Statement) -> None:
    keyword = s.take()
    action = s.take_word(keywords(*DEFAULT_ACTIONS))
    if action.text not in DEFAULT_ACTIONS:
        raise s.unexpected(action, keywords(*DEFAULT_ACTIONS))
    s.accept("incoming")
    s.end([*keywords("incoming"), END])
    if s.state.default is not None:
        first = s.state.default[1]
        s.error(keyword, f"duplicate 'default': the default is already set at {first} "
                         f"({quoted(first.text)})")
        return
    s.state.default = (cast(DefaultAction, action.text), s.origin)


def _logging(s: _Statement) -> None:
    """`logging off|on|low|medium|high`, as ufw's `ufw logging LEVEL` (`on` is `low`)."""
    keyword, level = _setting(s, LOGGING_WORDS, {
        "full": "; fwsync has no 'full': 'high' is the most it logs"})
    if _first(s, keyword, s.state.logging, "the logging level"):
        s.state.logging = (cast(LogLevel, "low" if level.text == "on" else level.text),
                           s.origin)


def _setting(s: _Statement, words: Sequence[str], hints: Mapping[str, str] | None = None
             ) -> tuple[Token, Token]:
    """`KEYWORD WORD` and nothing after it: (the keyword, the word), one of `words`."""
    keyword = s.take()
    value = s.take_word(keywords(*words))
    if value.text not in words:
        raise s.unexpected(value, keywords(*words), (hints or {}).get(value.text, ""))
    s.end([END])
    return keyword, value


def _first(s: _Statement, keyword: Token, earlier: tuple[object, Origin] | None, what: str
           ) -> bool:
    """Whether this is the setting's first line in all the files (else an error, at it)."""
    if earlier is None:
        return True
    first = earlier[1]
    s.error(keyword, f"duplicate {quoted(keyword.text)}: {what} is already set at {first} "
                     f"({quoted(first.text)})")
    return False


def _protect(s: _Statement) -> None:
    s.take()
    what = s.take_word(keywords(*PROTECTIONS))
    if what.text not in PROTECTIONS:
        raise s.unexpected(what, keywords(*PROTECTIONS))
    value = s.take_word(keywords("on", "off"))
    if value.text not in ("on", "off"):
        raise s.unexpected(value, keywords("on", "off"))
    if (to := s.accept("to")) is not None:
        _protect_scope(s, what, value, to)
        return
    s.end([*keywords("to"), END] if what.text == "direct-routing" and value.text == "off"
          else [END])
    if (first := s.state.protect.get(what.text)) is not None:
        s.error(what, f"duplicate 'protect {what.text}': already set at {first[1]} "
                      f"({quoted(first[1].text)})")
        return
    s.state.protect[what.text] = (value.text == "on", s.origin)


def _protect_scope(s: _Statement, what: Token, value: Token, to: Token) -> None:
    """`protect direct-routing off to network NAME`: only that network's direct routing goes to
    the rules (Docker 28's nat-unprotected networks, trusted host interfaces, ...)."""
    if what.text != "direct-routing" or value.text != "off":
        raise s.fail(to, f"unexpected 'to': only 'protect direct-routing off' can name a "
                         f"network ('protect direct-routing off to network NAME'); "
                         f"'protect {what.text} {value.text}' is for every network")
    kind = s.take_word(keywords("network"))
    if kind.text != "network":
        raise s.unexpected(kind, keywords("network"))
    at = s.peek()
    name = _network_name(s)
    s.end([END])
    if name is None or at is None:
        return
    if (first := s.state.protect_off.get(name)) is not None:
        s.error(at, f"duplicate 'protect direct-routing off to network {name}': already set "
                      f"at {first.origin} ({quoted(first.origin.text)})")
        return
    s.state.protect_off[name] = NetworkScope(network=name, origin=s.origin)


def _network_name(s: _Statement) -> str | None:
    name = s.take_word(["NAME"])
    if name.text in RULE_KEYWORDS:
        raise s.unexpected(name, ["NAME"])
    if _CONTAINER.fullmatch(name.text) and name.text:
        return name.text
    s.error(name, f"{quoted(name.text)} is not a network name (letters, digits, '_', '.', "
                  "'-'), optionally ending in '*' to match a prefix")
    return None


def _define(s: _Statement) -> None:
    s.take()
    name_tok = s.take_word(["NAME"])
    name = name_tok.text
    valid = True
    if not _SET_NAME.fullmatch(name):
        valid = False
        s.error(name_tok, f"{quoted(name)} is not a set name: a letter or '_', then letters, "
                          "digits, '_' or '-'")
    elif (first := s.state.set_origins.get(name)) is not None:
        valid = False
        s.error(name_tok, f"set {quoted(name)} is already defined at {first}")
    else:
        s.state.set_origins[name] = s.origin
    found = _address_file(s) if s.accept("file") is not None else _address_items(s)
    if found is not None and not _within_limits(s, name_tok, len(found[0])):
        found = None
    if valid and found is not None:
        entries, spans = found
        s.state.sets[name] = AddressSet(name=name, entries=tuple(entries), origin=s.origin,
                                        spans=tuple(spans))
        s.state.set_families[name] = frozenset({span[0] for span in spans})


Entries = tuple[list[str], list[Span]]  # canonical CIDR texts, and the same as integers


def _within_limits(s: _Statement, at: Token, size: int) -> bool:
    """A set's size against limits.MAX_SET_ENTRIES and, with the sets before it, MAX_ENTRIES.
    (A list file stops being read at the line that crosses either: _address_list.)"""
    s.state.entry_count += size
    if size > MAX_SET_ENTRIES:
        s.error(at, f"{count(size)} entries in one set: fwsync's limit is "
                    f"{count(MAX_SET_ENTRIES)}")
    elif s.state.entry_count > MAX_ENTRIES:
        s.error(at, f"the sets so far hold {count(s.state.entry_count)} entries: fwsync's "
                    f"limit is {count(MAX_ENTRIES)} in all sets together")
    else:
        return True
    return False


def _address_items(s: _Statement) -> Entries | None:
    networks: list[Network] = []
    valid = True
    expected = ["ADDRESS", "CIDR", "'file'"]
    while True:
        tok = s.take_word(expected)
        network = parse_network(tok.text)
        if isinstance(network, str):
            s.error(tok, network)
            valid = False
        else:
            networks.append(network)
        if s.peek() is None:
            if not valid:
                return None
            pairs = [entry_of(n) for n in networks]
            return [e for e, _ in pairs], [span for _, span in pairs]
        if s.accept(",") is None:
            raise s.unexpected(s.peek(), ["','", END])
        expected = ["ADDRESS", "CIDR"]


def _address_file(s: _Statement) -> Entries | None:
    path = s.peek()
    if path is None or path.kind not in ("word", "string"):
        raise s.unexpected(path, ["PATH"])
    s.take()
    s.end([END])
    display = str(PurePath(s.file).parent / path.value)
    s.state.lists_read.append(display)
    try:
        text = s.state.read_file(display)
    except OSError as e:
        s.error(path, f"cannot read {quoted(path.value)}: {e.strerror or e}")
        return None
    except UnicodeDecodeError as e:
        s.error(path, f"{quoted(path.value)} is not UTF-8 text (byte 0x{e.object[e.start]:02x} "
                      f"at offset {e.start})")
        return None
    return _address_list(s, path, display, text)


def _address_list(s: _Statement, path: Token, display: str, text: str) -> Entries | None:
    """One address or CIDR a line; problems are located in the list file itself."""
    entries: list[str] = []
    spans: list[Span] = []
    problems = 0

    def problem(number: int, col: int, message: str) -> None:
        nonlocal problems
        problems += 1
        if problems <= MAX_LIST_ERRORS:
            key = (s.index, s.number, path.col, number, col)
            s.state.diagnostics.append((key, Diagnostic(
                file=display, line=number, col=col, severity="error", message=message)))

    clean = forbidden_char(text) is None  # one scan of the whole list, not one per line
    room = min(MAX_SET_ENTRIES, MAX_ENTRIES - s.state.entry_count)
    if clean and (bulk := bulk_entries(text)) is not None and len(bulk[0]) <= room:
        return bulk  # every line plain and within the limits: no problem to locate
    for number, raw in enumerate(lines(text), 1):
        if not clean and (bad := forbidden_char(raw)) is not None:
            problem(number, bad[0] + 1, f"{bad[1]} is not allowed in an address list")
            continue
        body = raw.split("#", 1)[0]
        items = body.split()
        if not items:
            continue
        col = len(body) - len(body.lstrip()) + 1
        fast = fast_entry(items[0])
        if fast is None:
            network = parse_network(items[0])
            if isinstance(network, str):
                problem(number, col, network)
            else:
                fast = entry_of(network)
        if fast is not None:
            if len(entries) >= room:
                # Reading on would only hold more of what is refused anyway.
                limit = (f"{count(MAX_SET_ENTRIES)} entries in one set" if room == MAX_SET_ENTRIES
                         else f"{count(MAX_ENTRIES)} entries in all sets together")
                problem(number, col, f"entry {count(len(entries) + 1)} of this list is one too "
                                     f"many: fwsync's limit is {limit}")
                break
            entries.append(fast[0])
            spans.append(fast[1])
        if len(items) > 1:
            problem(number, body.index(items[1], col - 1 + len(items[0])) + 1,
                    f"unexpected {quoted(items[1])}: one address or CIDR a line")
    if problems > MAX_LIST_ERRORS:
        s.state.diagnostics.append(((s.index, s.number, path.col, number + 1, 0), Diagnostic(
            file=s.file, line=s.number, col=path.col, severity="error",
            message=f"{quoted(path.value)}: {problems - MAX_LIST_ERRORS} more errors not shown")))
    return None if problems else (entries, spans)


# ---------------------------------------------------------------- rules


@dataclass
class _Clauses:
    proto: Proto = "any"
    src: Endpoint = field(default_factory=Endpoint)
    src_tok: Token | None = None
    dst: Endpoint = field(default_factory=Endpoint)
    dst_tok: Token | None = None
    comment: str | None = None


def _audit(s: _Statement) -> None:
    """`audit deny|reject|limit ...`: the rule as written after `audit`, audited."""
    s.take()
    tok = s.peek()
    if tok is None or tok.kind != "word" or tok.text not in AUDITED:
        hint = ("; an allow refuses nothing: only a refusal is audited" if tok is not None
                and tok.text == "allow" else "")
        raise s.unexpected(tok, keywords(*AUDITED), hint)
    _rule(s, audit=True)


def _mode(s: _Statement) -> None:
    """`mode audit`: the whole policy, the default included, is audited (decides nothing);
    `mode enforce` is the default."""
    keyword, mode = _setting(s, MODES)
    if _first(s, keyword, s.state.mode, "the mode"):
        s.state.mode = (cast(Mode, mode.text), s.origin)


def _rule(s: _Statement, audit: bool = False) -> None:
    action = cast(Action, s.take().text)
    s.log_hint = ("; 'log' and 'log-all' go right after the action, or after 'in on IFACE' "
                  "(e.g. 'allow log 22/tcp')")
    lead = [*keywords("on", *RULE_LOGS, "proto", "from", "to"), "PORTS"]
    direction = s.accept("in")
    if direction is None:
        lead.insert(0, "'in'")
    on = s.accept("on")
    iface = _iface(s) if on is not None else None
    log = _rule_log(s, action, interface_said=direction is not None or on is not None)
    if log:
        lead = [*keywords("proto", "from", "to"), "PORTS"]
    # `allow in on eth0` alone is a rule, as in ufw: all traffic arriving on eth0.
    clauses = _simple(s) if _is_port(s.peek()) else _full(s, lead, has_any=on is not None)
    _check_families(s, clauses)
    if len(s.state.rules) >= MAX_RULES:
        if not s.state.too_many_rules:
            s.state.too_many_rules = True
            s.error(s.tokens[0], f"more than {count(MAX_RULES)} rules: fwsync's limit (many "
                                 "rules that differ only in their source belong in a set: "
                                 "'define NAME file PATH', 'from $NAME')")
        return
    s.state.rules.append(Rule(
        action=action, iface=iface, proto=clauses.proto, src=clauses.src, dst=clauses.dst,
        comment=clauses.comment, origin=s.origin, log=log, audit=audit))


def _rule_log(s: _Statement, action: Action, interface_said: bool) -> RuleLog:
    """`log` or `log-all` where ufw takes it: after `ACTION [in] [on IFACE]`."""
    tok = s.peek()
    if tok is None or tok.kind != "word" or tok.text not in RULE_LOGS:
        return ""
    s.take()
    s.log_hint = f"; {quoted(tok.text)} is already given at column {tok.col}"
    after = s.peek()
    if not interface_said and after is not None and after.text in ("in", "on"):
        raise s.fail(after, f"unexpected {quoted(after.text)}: 'in on IFACE' goes before "
                            f"{quoted(tok.text)}, as in ufw: '{action} in on IFACE {tok.text} "
                            "...'")
    return cast(RuleLog, tok.text)


def _simple(s: _Statement) -> _Clauses:
    """`ACTION [in] [on IFACE] PORTS[/PROTO] [comment 'TEXT']`."""
    ports, proto = _ports(s, suffix=True)
    clauses = _Clauses(proto=proto or "any", dst=Endpoint(ports=ports))
    if s.accept("comment") is not None:
        clauses.comment = _comment(s)
        s.end([END])
        return clauses
    hint = ""
    if (tok := s.peek()) is not None and tok.text in ("from", "to", "proto"):
        hint = (f"; with {quoted(tok.text)}, name the ports with 'port', "
                f"e.g. 'allow from 198.51.100.1 to any port 80 proto tcp'")
    s.end([*keywords("comment"), END], hint)
    return clauses


def _full(s: _Statement, lead: list[str], has_any: bool) -> _Clauses:
    """`ACTION [in] [on IFACE] [proto P] [from SRC [port PORTS]] [to DST [port PORTS]] ...`,
    the three clauses in any order (the spec's own example puts `proto` last), each once."""
    clauses = _Clauses()
    seen: dict[str, Token] = {}
    while True:
        tok = s.peek()
        left = [k for k in _CLAUSES if k not in seen]
        expected = [*keywords(*left), *keywords("comment"), END] if seen or has_any else lead
        if tok is None:
            if seen or has_any:
                return clauses
            raise s.unexpected(tok, expected)
        if tok.kind == "word" and tok.text in seen:
            raise s.fail(tok, f"duplicate {quoted(tok.text)}: already given at column "
                              f"{seen[tok.text].col}")
        if tok.text == "comment" and (seen or has_any):
            s.take()
            clauses.comment = _comment(s)
            s.end([END])
            return clauses
        if tok.text not in left:
            raise s.unexpected(tok, expected)
        seen[tok.text] = s.take()
        _CLAUSES[tok.text](s, clauses)


def _proto_clause(s: _Statement, clauses: _Clauses) -> None:
    proto = s.take_word(keywords(*PROTOS))
    if proto.text not in PROTOS:
        raise s.unexpected(proto, keywords(*PROTOS))
    clauses.proto = cast(Proto, proto.text)


def _from_clause(s: _Statement, clauses: _Clauses) -> None:
    clauses.src_tok, clauses.src = _source(s)


def _to_clause(s: _Statement, clauses: _Clauses) -> None:
    clauses.dst_tok, clauses.dst = _destination(s)


_CLAUSES: dict[str, Callable[[_Statement, _Clauses], None]] = {
    "proto": _proto_clause, "from": _from_clause, "to": _to_clause,
}
_SRC_EXPECTED = ("'any'", "ADDRESS", "CIDR", "$SET")
_DST_EXPECTED = ("'any'", "ADDRESS", "CIDR", "'container'", "'service'", "'network'")
# What names a destination by a name from Docker, and what that name is in words.
_SELECTORS = {"container": "container", "service": "Swarm service", "network": "network"}


def _source(s: _Statement) -> tuple[Token, Endpoint]:
    tok = s.take_word(_SRC_EXPECTED)
    if tok.text in RULE_KEYWORDS:
        raise s.unexpected(tok, _SRC_EXPECTED)
    if tok.text in _SELECTORS:
        raise s.fail(tok, f"unexpected {quoted(tok.text)} after 'from': a "
                          f"{_SELECTORS[tok.text]} can only be a destination "
                          f"('to {tok.text} NAME')")
    net: Network | None = None
    name: str | None = None
    if tok.text.startswith("$"):
        name = _set_ref(s, tok)
    elif tok.text != "any":
        net = _network(s, tok)
    return tok, Endpoint(net=net, set=name, ports=_port_clause(s))


def _destination(s: _Statement) -> tuple[Token, Endpoint]:
    tok = s.take_word(_DST_EXPECTED)
    if tok.text in RULE_KEYWORDS:
        raise s.unexpected(tok, _DST_EXPECTED)
    if tok.text.startswith("$"):
        raise s.fail(tok, f"unexpected {quoted(tok.text)} after 'to': a set can only be a "
                          "source ('from $NAME'); a destination is 'any', an address, a CIDR, "
                          "'container NAME', 'service NAME' or 'network NAME'")
    net: Network | None = None
    names: dict[str, str | None] = dict.fromkeys(_SELECTORS)
    if tok.text in _SELECTORS:
        name = s.take_word(["NAME"])
        if name.text in RULE_KEYWORDS:  # `to container port 80`: the NAME is missing
            raise s.unexpected(name, ["NAME"])
        # Docker's rule for container (and network) names; Swarm's for services is narrower.
        if _CONTAINER.fullmatch(name.text) and name.text:
            names[tok.text] = name.text
        else:
            s.error(name, f"{quoted(name.text)} is not a {_SELECTORS[tok.text]} name (letters, "
                          "digits, '_', '.', '-'), optionally ending in '*' to match a prefix")
    elif tok.text != "any":
        net = _network(s, tok)
    return tok, Endpoint(net=net, container=names["container"], service=names["service"],
                         network=names["network"],
                         ports=_port_clause(s))


def _network(s: _Statement, tok: Token) -> Network | None:
    network = parse_network(tok.text)
    if isinstance(network, str):
        s.error(tok, network)
        return None
    return network


def _set_ref(s: _Statement, tok: Token) -> str | None:
    name = tok.text[1:]
    if not _SET_NAME.fullmatch(name):
        s.error(tok, f"{quoted(tok.text)} is not a set reference: '$' then a letter or '_', "
                     "then letters, digits, '_' or '-'")
        return None
    if name not in s.state.set_origins:
        s.error(tok, f"unknown set {quoted(tok.text)}: a set must be defined before the rules "
                     "that use it")
        return None
    return name


def _check_families(s: _Statement, c: _Clauses) -> None:
    """An IPv4 source and an IPv6 destination (or the reverse) can never be one connection."""
    if c.dst.net is None or c.dst_tok is None or c.src_tok is None:
        return
    families: frozenset[int]
    if c.src.net is not None:
        source, families = f"the source {quoted(c.src_tok.text)} is", frozenset({c.src.net.version})
    elif c.src.set is not None and (found := s.state.set_families.get(c.src.set)):
        source, families = f"set {quoted(c.src_tok.text)} holds only", found
    else:
        return
    if c.dst.net.version not in families:
        other = "IPv4" if c.dst.net.version == 6 else "IPv6"
        s.error(c.dst_tok, f"{quoted(c.dst_tok.text)} is IPv{c.dst.net.version} but {source} "
                           f"{other}: the rule can never match")


def _iface(s: _Statement) -> str | None:
    tok = s.take_word(["IFACE"])
    if tok.text in RULE_KEYWORDS:
        raise s.unexpected(tok, ["IFACE"])
    problem = rule_iface_problem(tok.text)
    if problem is None:
        return tok.text
    s.error(tok, f"{quoted(tok.text)} is not an interface name fwsync can match: {problem}")
    return None


def _comment(s: _Statement) -> str:
    tok = s.peek()
    if tok is None or tok.kind != "string":
        s.log_hint = ""  # `comment log`: an unquoted text, not a misplaced option
        raise s.unexpected(tok, ["a quoted TEXT ('...' or \"...\")"])
    return s.take().value


# ---------------------------------------------------------------- ports


def _is_port(tok: Token | None) -> bool:
    return tok is not None and tok.kind == "word" and "0" <= tok.text[:1] <= "9"


def _port_clause(s: _Statement) -> tuple[PortRange, ...]:
    return _ports(s, suffix=False)[0] if s.accept("port") is not None else ()


def _ports(s: _Statement, suffix: bool) -> tuple[tuple[PortRange, ...], Proto | None]:
    """`N`, `N:M`, comma lists of them; with `suffix`, a `/PROTO` after the last item."""
    ranges: list[PortRange] = []
    proto: Proto | None = None
    while True:
        tok = s.peek()
        if not _is_port(tok):
            raise s.unexpected(tok, ["PORTS"])
        tok = s.take()
        if "/" in tok.text:
            cut = tok.text.index("/")
            name = tok.part(cut + 1)
            if not suffix:
                example = name.text if name.text in PROTOS else "tcp"
                s.error(tok, f"unexpected {quoted(tok.text)}: after 'port' the protocol is "
                             f"given with 'proto', e.g. 'port {tok.text[:cut]} proto {example}'")
            elif (after := s.peek()) is not None and after.kind == "comma":
                s.error(tok, f"unexpected {quoted(tok.text)}: the protocol goes once, after the "
                             "last port, e.g. '80,443/tcp'")
            elif name.text not in PROTOS:
                what = f"unknown protocol {quoted(name.text)}" if name.text else "no protocol"
                s.error(name, f"{what} in {quoted(tok.text)}, "
                              f"expected {one_of(keywords(*PROTOS))}")
            else:
                proto = cast(Proto, name.text)
            tok = tok.part(0, cut)
        if (item := _port_range(s, tok)) is not None:
            ranges.append(item)
        if s.accept(",") is None:
            return tuple(ranges), proto


def _port_range(s: _Statement, tok: Token) -> PortRange | None:
    m = _PORT_ITEM.fullmatch(tok.text)
    if m is None:
        s.error(tok, f"{quoted(tok.text)} is not a port or a port range (N or N:M)")
        return None
    low = _port_number(s, tok.part(0, m.end(1)))
    high = low if m.group(2) is None else _port_number(s, tok.part(m.start(2)))
    if low is None or high is None:
        return None
    if low > high:
        s.error(tok, f"{quoted(tok.text)}: the range's low end is above its high end "
                     f"(did you mean {high}:{low}?)")
        return None
    return PortRange(low=low, high=high)


def _port_number(s: _Statement, tok: Token) -> int | None:
    digits = tok.text.lstrip("0")
    # Bounded before int(): Python refuses to convert very long digit strings.
    value = int(digits) if 0 < len(digits) <= 5 else (0 if not digits else 65536)
    if 1 <= value <= 65535:
        return value
    s.error(tok, f"{quoted(tok.text)} is not a port number (1-65535)")
    return None


# ---------------------------------------------------------------- the whole rule set

_PARSERS: dict[str, Callable[[_Statement], None]] = {
    "default": _default, "define": _define, "protect": _protect, "logging": _logging,
    "audit": _audit, "mode": _mode,
    **dict.fromkeys(ACTIONS, _rule),
}


def parse_sources(sources: Sequence[tuple[str, str]],
                  read_file: Callable[[str], str]) -> ParseResult:
    """Parse (display name, text) pairs in evaluation order into one Policy.

    `read_file` gets `define NAME file PATH`'s PATH joined to the directory of the rules file
    that names it, and returns the text or raises OSError (reported at the PATH token).
    """
    state = _State(read_file=read_file)
    for index, (file, text) in enumerate(sources):
        for number, raw in enumerate(lines(text), 1):
            if (bad := forbidden_char(raw)) is not None:
                # Before tokenizing: such a character must reach neither a message nor a kernel
                # comment (a NUL cut an iptables-restore line short, and a deny lost its DROP).
                at = Token("word", "", number, bad[0] + 1)
                _Statement(state, index, file, Line((at,), ""), number).error(
                    at, f"{bad[1]} is not allowed in rules text")
                continue
            line = tokenize(raw, number)
            if not line.tokens:
                continue
            s = _Statement(state, index, file, line, number)
            unclosed = next((t for t in line.tokens if t.kind == "open"), None)
            if unclosed is not None:
                s.error(unclosed, f"unterminated quoted text {quoted(unclosed.text)}: "
                                  f"no closing {unclosed.text[0]}")
                continue
            first = line.tokens[0]
            parser = _PARSERS.get(first.text) if first.kind == "word" else None
            if parser is None:
                s.error(first, f"unexpected {quoted(first.text)}, expected "
                               f"{one_of(keywords(*STATEMENTS))}")
                continue
            with contextlib.suppress(_Stop):  # recorded already; go on with the next line
                parser(s)
    state.diagnostics.sort(key=lambda kd: kd[0])
    diagnostics = tuple(d for _, d in state.diagnostics)
    if any(d.severity == "error" for d in diagnostics):
        return ParseResult(policy=None, diagnostics=diagnostics)
    default, default_origin = state.default or ("deny", None)
    logging, logging_origin = state.logging or ("off", None)
    mode, mode_origin = state.mode or ("enforce", None)
    policy = Policy(
        default=default, default_origin=default_origin, rules=tuple(state.rules),
        sets=state.sets,
        protect_direct_routing=state.protect.get("direct-routing", (True, None))[0],
        protect_localhost_publish=state.protect.get("localhost-publish", (True, None))[0],
        logging=logging, logging_origin=logging_origin, mode=mode, mode_origin=mode_origin,
        direct_routing_off=tuple(state.protect_off.values()),
        list_files=tuple(dict.fromkeys(state.lists_read)),
    )
    return ParseResult(policy=policy, diagnostics=diagnostics)
