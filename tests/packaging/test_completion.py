"""Shell completion (typer's --show-completion / --install-completion), used as bash uses it:
the script is sourced and its function asked for completions, which runs fwsync itself."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from tests.packaging.tools import dev_bin, environ, need, run

pytestmark = pytest.mark.packaging


def bash(script: str, **env: str) -> str:
    """Run bash with this venv's fwsync first on PATH. The trailing `true` keeps bash from exec-ing
    the last command, so fwsync's parent is bash: that is how typer (shellingham) detects it."""
    need("bash")
    path = f"{dev_bin('fwsync').parent}:{environ()['PATH']}"
    return run(["bash", "-c", script + "\ntrue"], env=environ(PATH=path, **env)).stdout


def completions(*words: str) -> list[str]:
    """What bash would offer after `words` (the last one is the word being completed)."""
    setup = "source <(fwsync --show-completion)"
    ask = (f"COMP_WORDS=({' '.join(shlex.quote(w) for w in words)}); "
           f"COMP_CWORD={len(words) - 1}; _fwsync_completion fwsync; "
           'printf "%s\\n" "${COMPREPLY[@]}"')
    return bash(f"{setup}\n{ask}").split()


def test_show_completion_detects_bash_and_prints_a_script_for_fwsync() -> None:
    script = bash("fwsync --show-completion")
    assert "complete -o default -F _fwsync_completion fwsync" in script
    assert "_FWSYNC_COMPLETE=complete_bash" in script


def test_the_bash_script_completes_commands_options_and_choices() -> None:
    assert completions("fwsync", "ch") == ["check"]
    assert completions("fwsync", "plan", "--back") == ["--backend"]
    assert completions("fwsync", "plan", "--backend", "") == ["auto", "iptables", "nftables"]
    assert "--detailed-exitcode" in completions("fwsync", "plan", "--")


@pytest.mark.parametrize("shell", ["zsh", "fish"])
def test_show_completion_for_other_shells(shell: str) -> None:
    # typer's own switch to name the shell instead of detecting it (zsh/fish need not be here).
    script = bash(f"fwsync --show-completion {shell}",
                  _TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION="1")
    assert "fwsync" in script and f"complete_{shell}" in script


def test_install_completion_writes_the_script_and_sources_it_from_bashrc(tmp_path: Path) -> None:
    said = bash("fwsync --install-completion", HOME=str(tmp_path))
    installed = tmp_path / ".bash_completions" / "fwsync.sh"
    assert f"bash completion installed in {installed}" in said
    assert "_fwsync_completion" in installed.read_text()
    assert f"source '{installed}'" in (tmp_path / ".bashrc").read_text()
