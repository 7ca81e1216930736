"""The Docker engines the test bed runs, and where a fetched one lives.

Debian's archive carries three generations of Docker whose daemons run on Debian 12:

    20.10  bookworm's docker.io, installed on the machine by `make install` (PATH as it is)
    26.1   trixie's docker.io + containerd 1.7            } fetched by tools/fetch-engines into
    28.5   sid's docker.io + containerd 2.1               } FWSYNC_ENGINES_DIR/NAME/bin

A fetched engine runs with bookworm's runc and tini-static (as docker-init) beside it: the newer
runc builds need a newer glibc, and the unpacked packages' own docker-init links point at a
tini-static that is not in them. Its bin/ folder holds symlinks to exactly the programs dockerd
starts (dockerd, docker-proxy, containerd, containerd-shim-runc-v2, runc, docker-init) plus the
docker CLI, and goes first on PATH for the dockerd a DockerLab starts.

Which engine a test run uses: `pytest --engine NAME` (repeatable, or `all`), else FWSYNC_ENGINE,
else 20.10. Stdlib only: tools/fetch-engines imports this with Debian's python3, before any venv.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from tests.docker_layouts import Layout


@dataclass(frozen=True)
class Engine:
    name: str  # "28.5": also the prefix every version it reports must start with
    suite: str | None  # Debian suite it comes from; None: the machine's installed docker.io
    packages: tuple[str, ...] = ()
    # How long its dockerd may take to answer after a start. 28.5 with restart=always
    # containers took 19-37 s here (20.10: 2-5 s); a lab waits for it rather than fail.
    start_timeout: float = 30.0
    # How long a SIGTERM'd dockerd may take to exit: 28.5 can use its full 15 s shutdown timeout.
    stop_timeout: float = 30.0

    @property
    def release(self) -> tuple[int, int]:
        major, minor = self.name.split(".")
        return int(major), int(minor)

    # What each generation writes, so a test states what it expects of this engine instead of
    # encoding one engine's layout (versions from moby's release notes and its generated dumps
    # in integration/network/bridge/iptablesdoc/generated/).

    @property
    def ip6_docker_user(self) -> bool:
        """ip6tables has DOCKER-USER, jumped to from FORWARD (23.0+; 20.10 has neither)."""
        return self.release >= (23, 0)

    @property
    def docker_forward_chain(self) -> bool:
        """FORWARD is just `-j DOCKER-USER`, `-j DOCKER-FORWARD` (28.0.1+)."""
        return self.release >= (28, 0)

    @property
    def raw_direct_access_drops(self) -> bool:
        """raw PREROUTING drops packets for a container address that come from outside its
        bridge (28.0+)."""
        return self.release >= (28, 0)

    @property
    def kernel_layout(self) -> Layout:
        """The KernelLab layout (tests/docker_layouts.py) that writes what this engine writes."""
        return "28" if self.docker_forward_chain else "20.10"

    @property
    def reports_firewall_backend(self) -> bool:
        """GET /info has FirewallBackend.Driver (28.1+)."""
        return self.release >= (28, 1)

    @property
    def fetched(self) -> bool:
        return self.suite is not None

    @property
    def test_id(self) -> str:
        """How a test's id names it: test_x[docker-28.5]."""
        return f"docker-{self.name}"

    def bin_dir(self) -> Path | None:
        """The folder to put first on PATH, or None for the machine's own engine."""
        return engines_dir() / self.name / "bin" if self.fetched else None

    def is_fetched(self) -> bool:
        return not self.fetched or (engines_dir() / self.name / STAMP).is_file()

    def matches(self, version: str) -> bool:
        """Whether a daemon reporting `version` (e.g. "28.5.2") is this engine."""
        return version == self.name or version.startswith(self.name + ".")


PACKAGES = ("docker.io", "containerd", "docker-cli")
ENGINES: dict[str, Engine] = {e.name: e for e in (
    Engine("20.10", None),
    Engine("26.1", "trixie", PACKAGES, start_timeout=60.0),
    Engine("28.5", "sid", PACKAGES, start_timeout=90.0),
)}
DEFAULT_ENGINE = "20.10"
# Bookworm's runtime pieces every fetched engine uses: package -> (file in it, name in bin/).
RUNTIME_SUITE = "bookworm"
RUNTIME = {"runc": ("usr/sbin/runc", "runc"), "tini": ("usr/bin/tini-static", "docker-init")}
# Programs a fetched engine's bin/ links to: name in bin/ -> path inside its unpacked packages.
ENGINE_PROGRAMS = {
    "dockerd": "usr/sbin/dockerd",
    "docker-proxy": "usr/sbin/docker-proxy",
    "containerd": "usr/bin/containerd",
    "containerd-shim-runc-v2": "usr/bin/containerd-shim-runc-v2",
    "docker": "usr/bin/docker",
}
STAMP = "VERSIONS"  # written last by tools/fetch-engines: its presence means complete


def engines_dir() -> Path:
    return Path(os.environ.get("FWSYNC_ENGINES_DIR") or "/var/cache/fwsync-engines")


def engine(name: str) -> Engine:
    try:
        return ENGINES[name]
    except KeyError:
        raise ValueError(f"unknown Docker engine {name!r}: choose from "
                         f"{', '.join(ENGINES)} (or 'all')") from None


def select(names: list[str] | None = None) -> list[Engine]:
    """The engines a run asked for: names from --engine (each may be `all` or comma-separated),
    else FWSYNC_ENGINE (same syntax), else the default."""
    raw = names or [os.environ.get("FWSYNC_ENGINE") or DEFAULT_ENGINE]
    wanted = [n.strip() for item in raw for n in item.split(",") if n.strip()]
    if "all" in wanted:
        return list(ENGINES.values())
    return [engine(n) for n in dict.fromkeys(wanted)]


def default_engine() -> Engine:
    """The engine a DockerLab made without one uses (the demo, the benchmark, a bare script)."""
    return select()[0]
