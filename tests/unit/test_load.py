"""Loading rules from disk: one file or a directory, define lists, and problems as Diagnostics."""

from __future__ import annotations

from pathlib import Path

import pytest

from fwsync.rules.load import load_rules

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def texts(path: Path) -> list[str]:
    return [str(d) for d in load_rules(path).diagnostics]


def test_one_file_uses_the_path_as_given_for_its_name(tmp_path):
    f = write(tmp_path / "fw.conf", "default reject\nallow 80/tcp\n")
    result = load_rules(f)
    assert result.ok and result.policy is not None
    assert result.policy.default == "reject"
    assert [r.origin.file for r in result.policy.rules] == [str(f)]


def test_directory_reads_rules_files_in_lexical_order_as_one_file(tmp_path):
    write(tmp_path / "20-services.rules", "allow from $office to any port 5432\n")
    write(tmp_path / "10-base.rules", "default deny\ndefine office 198.51.100.0/24\n")
    write(tmp_path / "9-late.rules", "allow 9/tcp\n")  # "9" sorts after "2" as text
    write(tmp_path / "README", "not rules\n")
    write(tmp_path / "30-old.rules.bak", "not rules\n")
    write(tmp_path / ".50-hidden.rules", "not rules\n")
    (tmp_path / "40-dir.rules").mkdir()
    result = load_rules(tmp_path)
    assert result.ok and result.policy is not None
    assert [(r.origin.file, r.origin.line) for r in result.policy.rules] == [
        (str(tmp_path / "20-services.rules"), 1), (str(tmp_path / "9-late.rules"), 1)]
    assert result.policy.sets["office"].origin.file == str(tmp_path / "10-base.rules")


def test_directory_order_decides_define_before_use(tmp_path):
    write(tmp_path / "10-rules.rules", "allow from $office\n")
    write(tmp_path / "20-sets.rules", "define office 198.51.100.0/24\n")
    assert texts(tmp_path) == [
        f"{tmp_path / '10-rules.rules'}:1:12: error: unknown set '$office': a set must be "
        "defined before the rules that use it"]


def test_second_default_in_another_file_names_the_first(tmp_path):
    write(tmp_path / "10-a.rules", "default deny\n")
    write(tmp_path / "20-b.rules", "\ndefault allow\n")
    assert texts(tmp_path) == [
        f"{tmp_path / '20-b.rules'}:2:1: error: duplicate 'default': the default is already set "
        f"at {tmp_path / '10-a.rules'}:1 ('default deny')"]


def test_errors_from_several_files_come_in_file_order(tmp_path):
    write(tmp_path / "b.rules", "allow 0\nallow x\n")
    write(tmp_path / "a.rules", "allow 70000\n")
    result = load_rules(tmp_path)
    assert [(Path(d.file).name, d.line) for d in result.diagnostics] == [
        ("a.rules", 1), ("b.rules", 1), ("b.rules", 2)]
    assert result.policy is None


def test_missing_path(tmp_path):
    missing = tmp_path / "nope"
    assert texts(missing) == [
        f"{missing}:1:1: error: cannot read 'nope': No such file or directory"]


def test_empty_directory(tmp_path):
    write(tmp_path / "notes.txt", "")
    assert texts(tmp_path) == [
        f"{tmp_path}:1:1: error: no '*.rules' files in directory '{tmp_path.name}'"]


def test_empty_file_is_an_empty_policy(tmp_path):
    result = load_rules(write(tmp_path / "a.rules", ""))
    assert result.ok and result.policy is not None and result.policy.rules == ()


def test_dangling_symlink_in_a_directory_is_reported_not_skipped(tmp_path):
    write(tmp_path / "10-a.rules", "allow 80\n")
    (tmp_path / "20-b.rules").symlink_to(tmp_path / "gone")
    assert texts(tmp_path) == [
        f"{tmp_path / '20-b.rules'}:1:1: error: cannot read '20-b.rules': "
        "No such file or directory"]


def test_unreadable_file(tmp_path):
    # Root reads files whatever their mode, so use a file no one can read: /proc/self/mem
    # answers read() at offset 0 with EIO.
    f = tmp_path / "a.rules"
    f.symlink_to("/proc/self/mem")
    assert texts(f) == [f"{f}:1:1: error: cannot read 'a.rules': Input/output error"]


def test_non_utf8_file_is_located_at_the_bad_byte(tmp_path):
    # Columns count characters: the valid 'é' before the bad byte is one column, not two.
    f = write(tmp_path / "a.rules", b"allow 80\nallow 81 comment '\xc3\xa9\xff'\n")
    assert texts(f) == [f"{f}:2:20: error: not UTF-8 text: byte '0xff' cannot be decoded"]


def test_utf8_with_bom_and_non_ascii_comments(tmp_path):
    f = write(tmp_path / "a.rules", "\ufeffallow 80 comment 'café ☕'\n".encode())
    result = load_rules(f)
    assert result.ok and result.policy is not None
    assert result.policy.rules[0].comment == "café ☕"


def test_define_file_is_relative_to_the_rules_file(tmp_path):
    rules = tmp_path / "etc" / "rules"
    write(rules / "10-base.rules", "define office file lists/office.txt\nallow from $office\n")
    write(rules / "lists" / "office.txt", "# office\n198.51.100.0/24\n\n2001:db8:1::/64 # v6\n")
    write(tmp_path / "lists" / "office.txt", "203.0.113.0/24\n")  # relative to the cwd: not read
    result = load_rules(rules)
    assert result.ok and result.policy is not None
    assert [str(n) for n in result.policy.sets["office"].networks] == [
        "198.51.100.0/24", "2001:db8:1::/64"]


def test_define_file_relative_to_a_relative_rules_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "rules" / "a.rules", "define x file x.txt\n")
    write(tmp_path / "rules" / "x.txt", "10.0.0.0/8\n")
    result = load_rules(Path("rules"))
    assert result.ok and result.policy is not None
    assert result.policy.sets["x"].origin.file == "rules/a.rules"


def test_define_file_errors_are_located_in_the_list_file(tmp_path):
    write(tmp_path / "a.rules", "define x file x.txt\n")
    write(tmp_path / "x.txt", "10.0.0.0/8\n\n  10.0.0.1/8\n")
    assert texts(tmp_path) == [
        f"{tmp_path / 'x.txt'}:3:3: error: '10.0.0.1/8' has host bits set: did you mean "
        "10.0.0.0/8?"]


def test_define_file_missing_or_not_utf8(tmp_path):
    write(tmp_path / "a.rules", "define x file x.txt\ndefine y file y.txt\ndefine z file .\n")
    write(tmp_path / "y.txt", b"10.0.0.1\n\xff\n")
    a = tmp_path / "a.rules"
    assert texts(tmp_path) == [
        f"{a}:1:15: error: cannot read 'x.txt': No such file or directory",
        f"{a}:2:15: error: 'y.txt' is not UTF-8 text (byte 0xff at offset 9)",
        f"{a}:3:15: error: cannot read '.': not a regular file (a directory)",
    ]


def test_shadow_warnings_are_added_to_a_valid_rule_set_in_file_order(tmp_path):
    write(tmp_path / "10-base.rules", "# base\n\n\nallow 80/tcp\nallow 22\n")
    write(tmp_path / "20-more.rules", "deny from 203.0.113.0/24 to any port 80 proto tcp\n"
                                      "deny 22/udp\n")
    result = load_rules(tmp_path)
    assert result.ok and result.policy is not None
    assert [str(d) for d in result.diagnostics] == [
        f"{tmp_path / '20-more.rules'}:1:1: warning: rule is never reached: shadowed by "
        f"{tmp_path / '10-base.rules'}:4 ('allow 80/tcp')",
        f"{tmp_path / '20-more.rules'}:2:1: warning: rule is never reached: shadowed by "
        f"{tmp_path / '10-base.rules'}:5 ('allow 22')",
    ]


def test_no_shadow_warnings_when_there_are_errors(tmp_path):
    f = write(tmp_path / "a.rules", "allow 80\nallow 80\nallow 0\n")
    result = load_rules(f)
    assert [d.severity for d in result.diagnostics] == ["error"]


def test_the_repository_rules_directory_is_valid():
    result = load_rules(REPO / "rules")
    assert result.ok, [str(d) for d in result.diagnostics]


def test_unreadable_file_even_as_root(tmp_path, monkeypatch):
    import fwsync.rules.load as load

    f = write(tmp_path / "a.rules", "allow 80\n")
    real = load.read_limited

    def read_limited(path: Path, limit: int, what: str) -> bytes:
        if path == f:
            raise PermissionError(13, "Permission denied", str(path))
        return real(path, limit, what)

    monkeypatch.setattr(load, "read_limited", read_limited)
    assert texts(tmp_path) == [f"{f}:1:1: error: cannot read 'a.rules': Permission denied"]


def test_the_digest_is_of_the_files_as_read_not_where_they_are(tmp_path):
    """Policy.digest (the daemon's fwsync_rules_info): the same rules and lists checked out in
    another place hash alike; any byte of a rules file or a list, or a file's name, does not."""
    def checkout(where: Path, rules: str = "define office file lists/office.txt\n"
                 "allow from $office to any port 22\n", office: str = "198.51.100.0/24\n",
                 name: str = "10-base.rules") -> str:
        write(where / name, rules)
        write(where / "lists" / "office.txt", office)
        policy = load_rules(where).policy
        assert policy is not None and len(policy.digest) == 64
        return policy.digest

    first = checkout(tmp_path / "a" / "rules")
    assert checkout(tmp_path / "elsewhere" / "fw") == first
    assert checkout(tmp_path / "c", office="198.51.100.0/25\n") != first
    assert checkout(tmp_path / "d", name="20-base.rules") != first
    assert checkout(tmp_path / "e", rules="define office file lists/office.txt\n"
                    "allow from $office to any port 23\n") != first
    # A comment is a change too: the digest says which files a host has, not what they mean.
    plain = load_rules(write(tmp_path / "f.rules", "allow 80/tcp\n")).policy
    commented = load_rules(write(tmp_path / "g" / "f.rules", "allow 80/tcp  # web\n")).policy
    assert plain is not None and commented is not None and plain.digest != commented.digest


def test_the_digest_keeps_names_and_contents_apart() -> None:
    from fwsync.rules.load import rules_digest

    assert rules_digest([("a.rules", "bc")]) != rules_digest([("ab.rules", "c")])
    assert rules_digest([("a", "x")], [("b", "y")]) != rules_digest([("a", "x"), ("b", "y")])
    assert rules_digest([("a", "x"), ("b", "y")]) == rules_digest([("b", "y"), ("a", "x")])
