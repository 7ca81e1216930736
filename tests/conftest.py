"""Fixtures for the kernel and e2e tests. Nothing here runs at import or collection time, so
`pytest tests/unit` works without root; each lab fixture first calls `require`, which skips
(or, under CI=true, fails) when the machine can't run it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.lab import DOCKER_TOOLS, DockerLab, KernelLab, Variant, kernel_tools, require

VARIANTS: tuple[Variant, ...] = ("nft", "legacy")


def _cleanup_checked(lab: KernelLab | DockerLab) -> None:
    # A lab that leaks would make later tests lie (or pile up namespaces): fail its test loudly.
    lab.cleanup()
    assert lab.leftovers() == [], f"test bed left behind: {lab.leftovers()}"


@pytest.fixture(params=VARIANTS)
def kernel_lab(request: pytest.FixtureRequest) -> Iterator[KernelLab]:
    """A fresh KernelLab (Docker 20.10's rules, fake container) per test, once per iptables
    variant. Published: nothing yet — call lab.publish()."""
    variant: Variant = request.param
    require(*kernel_tools(variant))
    lab = KernelLab(variant).start()
    try:
        yield lab
    finally:
        _cleanup_checked(lab)


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
def make_docker_lab() -> Iterator[Callable[..., DockerLab]]:
    """Factory for a private DockerLab (for tests that enable ufw, restart dockerd, or otherwise
    change the host in ways later tests should not see), e.g. make_docker_lab(ipv6=True)."""
    labs: list[DockerLab] = []

    def make(**kwargs: Any) -> DockerLab:
        require(*DOCKER_TOOLS)
        lab = DockerLab(**kwargs).start()
        labs.append(lab)
        return lab

    try:
        yield make
    finally:
        for lab in reversed(labs):
            _cleanup_checked(lab)


def _module_docker_lab(**kwargs: Any) -> Iterator[DockerLab]:
    require(*DOCKER_TOOLS)
    lab = DockerLab(**kwargs).start()
    try:
        yield lab
    finally:
        _cleanup_checked(lab)


@pytest.fixture(scope="module")
def docker_lab() -> Iterator[DockerLab]:
    """One real dockerd (IPv4 only) shared by the tests of a module. Prefer `dlab`, which also
    removes the containers each test made."""
    yield from _module_docker_lab()


@pytest.fixture(scope="module")
def docker_lab_v6() -> Iterator[DockerLab]:
    """Like docker_lab, with --ipv6 --ip6tables (containers in 2001:db8:d0c::/64)."""
    yield from _module_docker_lab(ipv6=True)


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
