"""fwsync installed the ways a user installs it — a wheel into a fresh venv with pip, the source
with `pipx install --system-site-packages .` — and run from there, outside this checkout.

pip resolves fwsync's dependencies on PyPI (measured here: ~8 s for a full install into a fresh
venv, ~10 s for pipx, with pip's download cache warm). Plans run inside `unshare --net`, a network
namespace of their own that vanishes with the process: the host's firewall is only ever read
there, never here, and nothing is left to clean up.
"""

from __future__ import annotations

import json
import time
import tomllib
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.packaging.tools import (
    REPO,
    SYSTEM_PYTHON,
    copy_source,
    environ,
    need,
    run,
    source_files,
)

pytestmark = pytest.mark.packaging

COMMANDS = ("check", "plan", "apply", "status", "daemon", "remove")
# No Docker here: plans say so and go on (the policy needs no container state to be safe).
NO_DOCKER = {"DOCKER_HOST": "unix:///nonexistent/fwsync-test-docker.sock"}
BAD_RULES = "default deny incoming\nallow 80/icmp\n"
BAD_DIAGNOSTIC = "20-bad.rules:2:10: error: unknown protocol 'icmp'"


@pytest.fixture(scope="module")
def plain_venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh venv *without* system site packages (so without python3-nftables), fwsync's wheel
    and its dependencies installed from PyPI. Yields its bin directory."""
    need(SYSTEM_PYTHON)
    venv = tmp_path_factory.mktemp("pip") / "venv"
    run([SYSTEM_PYTHON, "-m", "venv", venv])
    started = time.monotonic()
    run([venv / "bin" / "pip", "install", "-q", "--disable-pip-version-check", wheel])
    print(f"pip install (with dependencies) took {time.monotonic() - started:.1f}s")
    yield venv / "bin"


def bad_rules(tmp_path: Path) -> Path:
    rules = tmp_path / "bad"
    rules.mkdir()
    (rules / "20-bad.rules").write_text(BAD_RULES)
    return rules


def assert_cli_works(fwsync: Path, tmp_path: Path) -> None:
    """--help names every command; check accepts the repo's rules and locates a mistake."""
    from fwsync import __version__

    version = run([fwsync, "--version"])
    assert version.stdout == f"fwsync {__version__}\n"
    helped = run([fwsync, "--help"], env=environ(COLUMNS="120"))
    for command in COMMANDS:
        assert f" {command} " in helped.stdout, helped.stdout
    good = run([fwsync, "check", REPO / "rules"])
    assert f"{REPO / 'rules'}: OK" in good.stdout
    bad = run([fwsync, "check", bad_rules(tmp_path)], check=False)
    assert bad.returncode == 1
    assert f"{tmp_path}/bad/{BAD_DIAGNOSTIC}" in bad.stdout, bad.stdout + bad.stderr
    assert "Traceback" not in bad.stdout + bad.stderr


def test_wheel_holds_every_module_the_entry_point_and_the_dependencies(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        meta_dir = next(n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA"))
        entry_points = zf.read(f"{meta_dir}/entry_points.txt").decode()
        metadata = zf.read(f"{meta_dir}/METADATA").decode()
    # Everything under fwsync/ that a commit would hold — modules and any data files alike.
    package = {p for p in source_files() if p.startswith("fwsync/")}
    assert package, "no package files found: is this a git checkout?"
    assert sorted(package - names) == []
    assert not [n for n in names if n.startswith(("tests/", "demo/", "bench/"))]
    assert "fwsync = fwsync.cli:main" in entry_points
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert f"Requires-Python: {project['requires-python']}" in metadata
    requires = [ln.removeprefix("Requires-Dist: ") for ln in metadata.splitlines()
                if ln.startswith("Requires-Dist: ") and "extra ==" not in ln]
    # Compared as requirements, not strings: the build writes a specifier's clauses in its own
    # order (`typer>=0.12,<0.29` comes out as `typer<0.29,>=0.12`).
    assert sorted(map(_requirement, requires)) == sorted(map(_requirement,
                                                             project["dependencies"]))


def _requirement(text: str) -> tuple[str, frozenset[str]]:
    from packaging.requirements import Requirement  # pytest's own dependency

    req = Requirement(text.split("#")[0])
    return req.name.lower(), frozenset(str(s) for s in req.specifier)


def test_wheel_carries_the_one_version_the_licence_and_index_metadata(wheel: Path) -> None:
    """Built with the declared build requirements (pip's isolated build): the version comes from
    fwsync/__init__.py alone, the licence is an SPDX expression with its file inside."""
    from fwsync import __version__

    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        meta_dir = next(n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA"))
        metadata = zf.read(f"{meta_dir}/METADATA").decode()
        licence = zf.read(f"{meta_dir}/licenses/LICENSE").decode()
    assert wheel.name.startswith(f"fwsync-{__version__}-")
    assert f"Version: {__version__}" in metadata.splitlines()
    assert "License-Expression: MIT" in metadata.splitlines()
    assert "License-File: LICENSE" in metadata.splitlines()
    assert licence == (REPO / "LICENSE").read_text()
    assert "Classifier: Topic :: System :: Networking :: Firewalls" in metadata
    assert any(ln.startswith("Keywords: ") and "docker" in ln for ln in metadata.splitlines())
    build = tomllib.loads((REPO / "pyproject.toml").read_text())["build-system"]["requires"]
    assert build == ["setuptools>=77"]  # the first that reads `license` as an SPDX expression


def test_pip_install_into_a_fresh_venv(plain_venv: Path, tmp_path: Path) -> None:
    assert_cli_works(plain_venv / "fwsync", tmp_path)
    # `python -m fwsync` too; run elsewhere than this checkout, whose fwsync/ `-m` would import.
    res = run([plain_venv / "python", "-m", "fwsync", "check", REPO / "rules"], cwd=tmp_path)
    assert "OK" in res.stdout


def test_without_nftables_bindings_iptables_works_and_nftables_says_what_is_missing(
        plain_venv: Path) -> None:
    need("unshare", "iptables", root=True)
    probe = run([plain_venv / "python", "-c", "import nftables"], check=False)
    assert probe.returncode != 0, "this venv was meant to be without python3-nftables"
    env = environ(**NO_DOCKER)
    plan: list[str | Path] = [plain_venv / "fwsync", "plan", "--rules", REPO / "rules"]

    iptables = run(["unshare", "--net", *plan, "--backend", "iptables"], env=env)
    assert iptables.stdout.startswith("Backend: iptables"), iptables.stdout
    auto = run(["unshare", "--net", *plan], env=env)  # auto must not trip over the bindings
    assert auto.stdout.startswith("Backend: iptables"), auto.stdout

    nft = run(["unshare", "--net", *plan, "--backend", "nftables"], env=env, check=False)
    assert nft.returncode == 1
    assert nft.stdout == ""
    assert nft.stderr.count("\n") == 1, nft.stderr  # one line, no traceback
    assert nft.stderr.startswith("error: the nftables backend needs libnftables' Python bindings")
    assert "python3-nftables" in nft.stderr and "--system-site-packages" in nft.stderr


def test_pipx_install_with_system_site_packages(tmp_path: Path) -> None:
    """The README's command, run in a copy of the checkout: `pipx install --system-site-packages
    .`, with PIPX_HOME and PIPX_BIN_DIR where a root install would put them (/opt/pipx,
    /usr/local/bin, which systemd/fwsync.service runs), here in a temp dir."""
    need("pipx")
    src = copy_source(tmp_path / "src")
    home, bindir = tmp_path / "opt-pipx", tmp_path / "usr-local-bin"
    env = environ(PIPX_HOME=str(home), PIPX_BIN_DIR=str(bindir), **NO_DOCKER)
    started = time.monotonic()
    run(["pipx", "install", "--system-site-packages", "."], cwd=src, env=env)
    print(f"pipx install took {time.monotonic() - started:.1f}s")
    fwsync = bindir / "fwsync"
    assert_cli_works(fwsync, tmp_path)
    python = home / "venvs" / "fwsync" / "bin" / "python"
    found = run([python, "-c", "import nftables, fwsync; print(fwsync.__file__)"], cwd=tmp_path)
    assert found.stdout.startswith(str(home)), "fwsync must run from pipx's venv, not the checkout"

    need("unshare", "nft", root=True)
    plan = run(["unshare", "--net", fwsync, "plan", "--rules", REPO / "rules",
                "--backend", "nftables", "--format", "json"], env=env)
    data = json.loads(plan.stdout)
    assert data["backend"] == "nftables"
    assert "inet fwsync chain inbound" in {c["object"] for c in data["changes"]}
