"""Fixtures for the kernel and e2e tests. Nothing here runs at import or collection time, so
`pytest tests/unit` works without root; each lab fixture first calls `require`, which skips
(or, under CI=true, fails) when the machine can't run it.

Every test that runs a dockerd (through the fixtures below or the `engine` fixture) runs once per
selected Docker engine, named in its id: `test_x[docker-28.5]`. Select with `--engine NAME`
(repeatable, comma-separated, or `all`) or FWSYNC_ENGINE; the default is the machine's 20.10."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests import engines
from tests.docker_layouts import Layout
from tests.engines import Engine
from tests.lab import DOCKER_TOOLS, DockerLab, KernelLab, Variant, kernel_tools, require

VARIANTS: tuple[Variant, ...] = ("nft", "legacy")
# The KernelLabs every kernel_lab test runs on: both iptables variants under Docker 20.10's
# chain layout, and iptables-nft (what Docker 28 hosts run) under 28's.
KERNEL_LABS: tuple[tuple[Variant, Layout], ...] = (
    ("nft", "20.10"), ("legacy", "20.10"), ("nft", "28"))


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--engine", action="append", default=None, metavar="NAME",
        help="Docker engine(s) for the tests that run a dockerd: "
             f"{', '.join(engines.ENGINES)} or all; repeatable (default: $FWSYNC_ENGINE, else "
             f"{engines.DEFAULT_ENGINE}). Fetched ones come from tools/fetch-engines.")


def selected_engines(config: pytest.Config) -> list[Engine]:
    try:
        return engines.select(config.getoption("--engine"))
    except ValueError as exc:
        raise pytest.UsageError(str(exc)) from None


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    # Module scope: a module's shared dockerd (docker_lab) is made once per engine, and pytest
    # orders the tests so each engine's lab is up only while its tests run.
    if "engine" in metafunc.fixturenames:
        chosen = selected_engines(metafunc.config)
        metafunc.parametrize("engine", chosen, ids=[e.test_id for e in chosen],
                             indirect=True, scope="module")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Under pytest-xdist (make test: -n 2 --dist loadgroup) each engine's tests stay together on
    # one worker, in order: its module-scoped dockerds are made once, and at most one test per
    # worker runs a dockerd at a time.
    if not config.pluginmanager.hasplugin("xdist"):
        return
    for item in items:
        callspec = getattr(item, "callspec", None)
        eng = callspec.params.get("engine") if callspec is not None else None
        if isinstance(eng, Engine):
            item.add_marker(pytest.mark.xdist_group(eng.test_id))


# A phase that takes this long is printed as it ends (CI shows only the output of a run it
# stops at its time limit: this says where a slow or stuck run spent its time).
SLOW_PHASE_S = 60.0


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.duration < SLOW_PHASE_S:
        return
    reporter = _config.pluginmanager.get_plugin("terminalreporter") if _config else None
    if reporter is not None:
        reporter.ensure_newline()
        reporter.write_line(f"slow: {report.nodeid} {report.when} took {report.duration:.0f}s")


_config: pytest.Config | None = None


def pytest_configure(config: pytest.Config) -> None:
    global _config
    _config = config


@pytest.fixture(scope="module")
def engine(request: pytest.FixtureRequest) -> Engine:
    """The Docker engine this test runs against (parametrized by pytest_generate_tests)."""
    eng: Engine = request.param
    return eng


@pytest.fixture(autouse=True)
def _own_docker_memory(tmp_path_factory: pytest.TempPathFactory,
                       monkeypatch: pytest.MonkeyPatch) -> None:
    """fwsync keeps what Docker last reported in /var/lib/fwsync/docker.json: no test reads or
    writes the machine's, nor its rule-activity.json (a lab's fwsync runs use the lab's own,
    see run_fwsync)."""
    memory = tmp_path_factory.mktemp("memory")
    monkeypatch.setenv("FWSYNC_DOCKER_STATE", str(memory / "docker.json"))
    # And the daemon's samples of each rule's use (/var/lib/fwsync/rule-activity.json).
    monkeypatch.setenv("FWSYNC_RULE_ACTIVITY", str(memory / "rule-activity.json"))
    monkeypatch.setenv("FWSYNC_DECISIONS", str(memory / "decisions.jsonl"))  # /var/log/fwsync
    # And `apply --confirm-within`'s records (/var/lib/fwsync/pending-apply.json, ...).
    monkeypatch.setenv("FWSYNC_PENDING", str(memory / "pending-apply.json"))


def _cleanup_checked(lab: KernelLab | DockerLab) -> None:
    # A lab that leaks would make later tests lie (or pile up namespaces): fail its test loudly.
    lab.cleanup()
    assert lab.leftovers() == [], f"test bed left behind: {lab.leftovers()}"


@pytest.fixture(params=KERNEL_LABS, ids=[f"{v}-docker{d}" for v, d in KERNEL_LABS])
def kernel_lab(request: pytest.FixtureRequest) -> Iterator[KernelLab]:
    """A fresh KernelLab (Docker's rules written by hand, fake container) per test, once per
    entry of KERNEL_LABS. Published: nothing yet — call lab.publish()."""
    variant, docker = request.param
    require(*kernel_tools(variant))
    lab = KernelLab(variant, docker=docker).start()
    try:
        yield lab
    finally:
        _cleanup_checked(lab)


@pytest.fixture(params=["iptables", "nftables"])
def backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each backend in turn, for the tests that take this fixture: run_fwsync passes the
    environment on, so every fwsync call in the test uses it."""
    monkeypatch.setenv("FWSYNC_BACKEND", request.param)
    return str(request.param)


@pytest.fixture
def make_kernel_lab() -> Iterator[Callable[..., KernelLab]]:
    """Factory for KernelLabs with options, e.g. make_kernel_lab("legacy", v6_docker_user=False,
    bridge="br-fwstest"); all are removed when the test ends."""
    labs: list[KernelLab] = []

    def make(variant: Variant = "nft", **kwargs: Any) -> KernelLab:
        require(*kernel_tools(variant))
        lab = KernelLab(variant, **kwargs).start()
        labs.append(lab)
        return lab

    try:
        yield make
    finally:
        for lab in reversed(labs):
            _cleanup_checked(lab)


@pytest.fixture
def make_docker_lab(engine: Engine) -> Iterator[Callable[..., DockerLab]]:
    """Factory for a private DockerLab of the test's engine (for tests that enable ufw, restart
    dockerd, or otherwise change the host in ways later tests should not see), e.g.
    make_docker_lab(ipv6=True)."""
    labs: list[DockerLab] = []

    def make(**kwargs: Any) -> DockerLab:
        require(*DOCKER_TOOLS, engine=engine)
        lab = DockerLab(engine=engine, **kwargs).start()
        labs.append(lab)
        return lab

    try:
        yield make
    finally:
        for lab in reversed(labs):
            _cleanup_checked(lab)


def _module_docker_lab(engine: Engine, **kwargs: Any) -> Iterator[DockerLab]:
    require(*DOCKER_TOOLS, engine=engine)
    lab = DockerLab(engine=engine, **kwargs).start()
    try:
        yield lab
    finally:
        _cleanup_checked(lab)


@pytest.fixture(scope="module")
def docker_lab(engine: Engine) -> Iterator[DockerLab]:
    """One real dockerd (IPv4 only) shared by the tests of a module. Prefer `dlab`, which also
    removes the containers each test made."""
    yield from _module_docker_lab(engine)


@pytest.fixture(scope="module")
def docker_lab_v6(engine: Engine) -> Iterator[DockerLab]:
    """Like docker_lab, with --ipv6 --ip6tables (containers in 2001:db8:d0c::/64)."""
    yield from _module_docker_lab(engine, ipv6=True)


def _per_test(lab: DockerLab) -> Iterator[DockerLab]:
    # If the test stopped dockerd (restart tests) and failed midway, bring it back for the next.
    if lab.pid is None:
        lab.start_dockerd()
    before = lab.container_ids()
    try:
        yield lab
    finally:
        if lab.pid is None:
            lab.start_dockerd()
        for ctr in lab.client.containers.list(all=True):
            if ctr.id not in before:
                ctr.remove(force=True)


@pytest.fixture
def dlab(docker_lab: DockerLab) -> Iterator[DockerLab]:
    """The module's shared DockerLab; containers created by the test are removed after it.
    (Firewall changes are not undone: tests that change them should use make_docker_lab.)"""
    yield from _per_test(docker_lab)


@pytest.fixture
def dlab_v6(docker_lab_v6: DockerLab) -> Iterator[DockerLab]:
    """docker_lab_v6, with the per-test container cleanup of dlab."""
    yield from _per_test(docker_lab_v6)
