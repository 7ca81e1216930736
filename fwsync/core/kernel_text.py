"""Text that reaches the kernel: interface names and rule comments, as the renderers write
them. Pure. Which names the rules language accepts, and why, is fwsync/rules/text.py's.
"""

from __future__ import annotations

import re

from fwsync.rules.text import rule_iface_problem

# A cgroup path written into nft's text syntax as it is (the INPUT path's catch-all): systemd's
# unit and slice names, Docker's own. A quote, a space or a backslash (systemd's escapes) would
# be syntax, so such a cgroup gets no catch-all.
_CGROUP_PATH = re.compile(r"[A-Za-z0-9_.@:+-]+(/[A-Za-z0-9_.@:+-]+)*")


def cgroup_path_problem(path: str) -> str | None:
    if not _CGROUP_PATH.fullmatch(path) or len(path) > 1024:
        return f"its path {shown(path)!r} holds characters fwsync does not write into a rule"
    return None


def checked_iface(name: str) -> str:
    """The renderers' last line of defence: a name that reaches them unchecked is a bug, and it
    must stop the apply rather than become syntax."""
    problem = rule_iface_problem(name)
    if problem is not None:
        raise ValueError(f"internal: interface name {shown(name)!r} reached a renderer "
                         f"unchecked ({problem})")
    return name


def shown(text: str) -> str:
    """A name from outside, safe to print on a terminal or in a log line: what is not printable
    (control bytes, escape sequences, bidi overrides) is shown as a \\x / \\u escape."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii")
                   for c in text)


def comment_text(text: str, max_bytes: int, drop: str = "\"") -> str:
    """A rule comment for the kernel: printable characters only (a NUL cut an iptables-restore
    line short, a newline would start another one; a rules file's *name* reaches the comment
    too), the characters in `drop` left out, runs of spaces made one, and at most `max_bytes`
    of UTF-8, never cut inside a character."""
    kept = "".join(" " if not c.isprintable() else "" if c in drop else c for c in text)
    return " ".join(kept.split()).encode()[:max_bytes].decode(errors="ignore")
