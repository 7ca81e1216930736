"""What text the rules language accepts: its characters, and interface names. Pure.

The language refuses characters an editor would not show as they are (controls, bidi
overrides, line separators the parser does not see).

Interface names come from the rules (`in on IFACE`) and from Docker (a network's
`com.docker.network.bridge.name`, chosen by whoever may run `docker network create`), and both
backends would read some of them as syntax: iptables-restore unquotes `"+"` into its every-
interface wildcard, a trailing `+` is a prefix in iptables, a trailing `*` is one in nftables,
and nftables refuses `*` alone. So a name is written to the kernel only when every character of
it means itself in both backends (letters, digits, `_`, `.`, `-`, not first `.` or `-`), and
fwsync's only wildcard is a trailing `+` in the rules (a prefix), which each backend renders in
its own spelling. Anything else is refused by name and governed another way (see core/build).
"""

from __future__ import annotations

import re
import unicodedata

IFNAMSIZ = 16  # the kernel's buffer for a name, terminating NUL included: 15 bytes at most
PREFIX_WILDCARD = "+"
# Characters that mean themselves to iptables, iptables-restore, iptables-save and nftables.
_LITERAL = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
LITERAL_CHARS = "letters, digits, '_', '.' and '-' (not first: '.' or '-')"


def kernel_problem(name: str) -> str | None:
    """Why the kernel would refuse `name` as an interface name (dev_valid_name), or None."""
    if not name:
        return "it is empty"
    if len(name.encode()) >= IFNAMSIZ:
        return f"it is longer than {IFNAMSIZ - 1} bytes"
    if name in (".", ".."):
        return f"{name!r} is not allowed"
    if any(c in "/: \t\n\v\f\r\0" for c in name):
        return "it contains '/', ':', a space or a NUL"
    return None


def literal_problem(name: str) -> str | None:
    """Why `name` cannot be written into a rule so that both backends read it literally."""
    problem = kernel_problem(name)
    if problem is not None:
        return problem
    if not _LITERAL.fullmatch(name):
        return f"fwsync writes only names of {LITERAL_CHARS} into the kernel"
    return None


def rule_iface_problem(name: str) -> str | None:
    """`in on IFACE`: a literal name, or a literal prefix followed by `+` (every interface whose
    name starts with it). None when fine."""
    if name.endswith(PREFIX_WILDCARD):
        base = name[: -len(PREFIX_WILDCARD)]
        if not base:
            return "'+' alone would match every interface: leave 'on' out instead"
        if len(name.encode()) >= IFNAMSIZ:
            return f"it is longer than {IFNAMSIZ - 1} bytes"
        return literal_problem(base)
    if "*" in name:
        return "'*' is not a wildcard here: a trailing '+' matches a prefix ('eth+')"
    return literal_problem(name)


# The forbidden characters an ASCII text can hold: C0 controls but TAB and LF, and DEL. (A CR
# is only allowed before an LF; `lines()` strips it there.)
_ASCII_FORBIDDEN = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]|\r(?!\n)")


def forbidden_char(text: str) -> tuple[int, str] | None:
    """The first character the rules language refuses (0-based index, description): control
    characters other than TAB, line and paragraph separators (an editor would show a line break
    the parser does not see), and format characters (bidi overrides can make a rule read
    differently from what it says; zero-width ones hide)."""
    if text.isascii():  # the usual case, and 100k-line address lists: one regex scan
        m = _ASCII_FORBIDDEN.search(text)
        return None if m is None else (m.start(), f"control character U+{ord(m.group()[0]):04X}")
    for i, c in enumerate(text):
        if c == "\t":
            continue
        category = unicodedata.category(c)
        if category in ("Cc", "Cf", "Zl", "Zp", "Cs"):
            name = unicodedata.name(c, "")
            kind = {"Cc": "control character", "Cf": "invisible formatting character",
                    "Zl": "line separator", "Zp": "paragraph separator",
                    "Cs": "lone surrogate"}[category]
            return i, f"{kind} U+{ord(c):04X}{f' ({name})' if name else ''}"
    return None
