"""`fwsync doctor` against a real dockerd in a namespace: each gotcha caused for real, then found
(and a well-configured host found clean). doctor runs inside HOST, where /proc/self/ns/net is
the lab's namespace, so it sees this lab's docker-proxy processes and not other labs'."""

from __future__ import annotations

import io
import json
import os
import selectors
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fwsync.observe.host_facts import swap_total_kb
from tests.json_schemas import assert_valid
from tests.lab import _ENV, BUSYBOX_IMAGE, DockerLab, require, run_fwsync, wait_for
from tests.steps import write_rules

pytestmark = pytest.mark.e2e

SERIOUS_EXIT = 3


def doctor(lab: DockerLab, rules: Path, *args: str) -> tuple[int, dict[str, Any]]:
    """Run `fwsync doctor --format json` in HOST; the exit status and the validated document."""
    res = run_fwsync(lab, "doctor", "--format", "json", *args, rules=rules)
    assert res.returncode in (0, SERIOUS_EXIT), f"doctor failed:\n{res.stderr}{res.stdout}"
    document: dict[str, Any] = json.loads(res.stdout)
    assert_valid("doctor", document)
    return res.returncode, document


def findings(document: dict[str, Any], check: str) -> list[dict[str, Any]]:
    return [f for f in document["findings"] if f["check"] == check]


def about(document: dict[str, Any], container: str) -> set[str]:
    """The checks that found something about this container."""
    return {f["check"] for f in document["findings"]
            if f["details"].get("container") == container}


def run(lab: DockerLab, name: str, command: str = "sleep 3600", *, memory: str | None = None,
        restart: str | None = None, ports: dict[str, Any] | None = None,
        env: dict[str, str] | None = None, image: str = BUSYBOX_IMAGE) -> Any:
    """`docker run -d` with the options the checks look at; stops at once on `docker stop`."""
    return lab.client.containers.run(
        image, ["/bin/sh", "-c", f"trap 'exit 0' TERM; {command} & wait"], name=name,
        detach=True, mem_limit=memory, ports=ports or {}, environment=env or {},
        restart_policy={"Name": restart} if restart else None)


def rules_allowing(tmp_path: Path, *ports: int) -> Path:
    return write_rules(tmp_path, "default deny incoming\n" +
                       "".join(f"allow {p}/tcp\n" for p in ports))


# --------------------------------------------------------------------------- swap


@pytest.fixture
def swap_on(tmp_path: Path) -> Iterator[None]:
    """Swap on this machine for the test. If it has none, a 32 MiB swap file is turned on and
    off again at the end: a machine-wide change, but harmless for its few seconds (with free
    memory the kernel writes nothing to it) and undone also when the test fails."""
    if (swap_total_kb() or 0) > 0:
        yield
        return
    require("mkswap", "swapon", "swapoff")
    path = tmp_path / "swapfile"
    with open(path, "wb") as f:  # written, not sparse: swapon refuses files with holes
        f.write(b"\0" * (32 << 20))
    path.chmod(0o600)
    subprocess.run(["mkswap", str(path)], check=True, capture_output=True)
    subprocess.run(["swapon", str(path)], check=True, capture_output=True)
    try:
        yield
    finally:
        subprocess.run(["swapoff", str(path)], check=True, capture_output=True)
        assert str(path) not in Path("/proc/swaps").read_text()


def doctor_seeing_no_swap(lab: DockerLab, rules: Path, tmp_path: Path) -> dict[str, Any]:
    """`fwsync doctor` in a mount namespace of its own in which /proc/meminfo and /proc/swaps
    are this machine's with the swap taken out (bind mounts over the two files): doctor reads
    the files as always, and nothing outside that namespace sees a change."""
    require("unshare", "mount")
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("".join(
        "SwapTotal:             0 kB\n" if line.startswith("SwapTotal:") else
        "SwapFree:              0 kB\n" if line.startswith("SwapFree:") else line + "\n"
        for line in Path("/proc/meminfo").read_text().splitlines()))
    swaps = tmp_path / "swaps"
    swaps.write_text(Path("/proc/swaps").read_text().splitlines()[0] + "\n")
    script = 'mount --bind "$1" /proc/meminfo && mount --bind "$2" /proc/swaps && shift 2 && ' \
             'exec "$@"'
    env = {**_ENV, "DOCKER_HOST": lab.docker_host, "FWSYNC_RULES": str(rules),
           "FWSYNC_LOCK_FILE": str(lab.dir / "fwsync.lock")}
    res = subprocess.run(
        [*lab.host.nsenter_prefix(), "unshare", "--mount", "--propagation", "private",
         "sh", "-c", script, "sh", str(meminfo), str(swaps),
         sys.executable, "-m", "fwsync", "doctor", "--format", "json"],
        capture_output=True, text=True, env=env, timeout=120, check=False)
    assert res.returncode in (0, SERIOUS_EXIT), f"doctor failed:\n{res.stderr}{res.stdout}"
    document: dict[str, Any] = json.loads(res.stdout)
    assert_valid("doctor", document)
    return document


def test_no_swap_is_found_and_swap_is_not(dlab: DockerLab, tmp_path: Path,
                                          request: pytest.FixtureRequest) -> None:
    """Both halves run on every machine: without swap as doctor sees it (through a private view
    of /proc, and on a machine that really has none, the real one too), and with swap (turned
    on for the test if the machine has none)."""
    rules = rules_allowing(tmp_path, 8080)
    without = [doctor_seeing_no_swap(dlab, rules, tmp_path)]
    if (swap_total_kb() or 0) == 0:
        without.append(doctor(dlab, rules)[1])
    for doc in without:
        [found] = findings(doc, "no-swap")
        assert found["severity"] == "warning" and found["details"]["swap_total_kb"] == 0
    request.getfixturevalue("swap_on")
    _, doc = doctor(dlab, rules)
    assert "no-swap" in doc["checks"] and findings(doc, "no-swap") == []
    # The private view holds with swap on too: it is what made the first half run here.
    assert len(findings(doctor_seeing_no_swap(dlab, rules, tmp_path), "no-swap")) == 1


# --------------------------------------------------------------------------- the gotchas


def test_internal_ports_on_all_addresses_are_found(dlab: DockerLab, tmp_path: Path) -> None:
    dlab.run_web("pg", {"80/tcp": 5432})  # busybox httpd on 0.0.0.0:5432, like `-p 5432:5432`
    dlab.run_web("cache-local", {"80/tcp": ("127.0.0.1", 6379)})
    dlab.client.images.get(BUSYBOX_IMAGE).tag("fwsync-test/redis", "7")
    try:
        run(dlab, "cache", "httpd -f -p 80 -h /bin", image="fwsync-test/redis:7",
            ports={"80/tcp": 18080})
        code, doc = doctor(dlab, write_rules(tmp_path, "allow 5432/tcp\nallow 18080/tcp\n"))
    finally:
        dlab.client.containers.get("cache").remove(force=True)
        dlab.client.images.remove("fwsync-test/redis:7")
    exposed = {f["details"]["container"]: f for f in findings(doc, "internal-port-exposed")}
    assert set(exposed) == {"pg", "cache"}, "not cache-local: it is published on 127.0.0.1"
    assert exposed["pg"]["severity"] == "serious", "allow 5432/tcp lets anyone connect"
    assert exposed["pg"]["details"]["host_ips"] == ["0.0.0.0", "::"]
    assert exposed["pg"]["details"]["service"] == "PostgreSQL"
    assert exposed["cache"]["details"]["service"] == "Redis", "found by the image's name"
    assert code == SERIOUS_EXIT and doc["worst"] == "serious"

    # The office-only rule of the example: still on all addresses, so still worth a warning.
    office = write_rules(tmp_path / "office", "define office 198.51.100.0/25\n"
                                              "allow from $office to any port 5432 proto tcp\n")
    code, doc = doctor(dlab, office, "--ignore", "ungoverned-port", "--ignore", "not-enforcing")
    [pg] = findings(doc, "internal-port-exposed")
    assert pg["severity"] == "warning" and code == 0


def test_ungoverned_ports_are_found(dlab: DockerLab, tmp_path: Path) -> None:
    dlab.run_web("web", {"80/tcp": 8080})
    dlab.run_web("other", {"80/tcp": 8081})
    _, doc = doctor(dlab, rules_allowing(tmp_path, 8080))
    [found] = findings(doc, "ungoverned-port")
    assert (found["details"]["container"], found["details"]["host_port"]) == ("other", 8081)
    assert found["severity"] == "info" and found["details"]["default"] == "deny"

    code, doc = doctor(dlab, tmp_path / "no-such-rules")
    assert {f["details"]["container"] for f in findings(doc, "ungoverned-port")} == {
        "web", "other"}
    assert all(f["severity"] == "serious" for f in findings(doc, "ungoverned-port"))
    assert code == SERIOUS_EXIT


def test_memory_limit_and_restart_policy(dlab: DockerLab, tmp_path: Path) -> None:
    run(dlab, "bare")
    run(dlab, "limited", memory="64m", restart="unless-stopped")
    run(dlab, "half", memory="64m")
    code, doc = doctor(dlab, rules_allowing(tmp_path, 8080))
    assert about(doc, "bare") == {"no-memory-limit", "no-restart-policy"}
    assert about(doc, "limited") == set()
    assert about(doc, "half") == {"no-restart-policy"}
    assert code == 0, "warnings alone don't fail the run"
    res = run_fwsync(dlab, "doctor", "--fail-on", "warning", rules=rules_allowing(tmp_path, 1))
    assert res.returncode == SERIOUS_EXIT and "[no-memory-limit] bare" in res.stdout


def _image_tar(content: bytes) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("data.bin")
        info.size = len(content)
        tar.addfile(info, io.BytesIO(content))
    return buf.getvalue()


def test_dangling_images_are_found_with_their_size(dlab: DockerLab, tmp_path: Path) -> None:
    api = dlab.client.api
    first = os.urandom(3 << 20)  # 3 MiB of its own, shared with no other image
    api.import_image_from_data(_image_tar(first), repository="fwsync-test/app", tag="1")
    old = dlab.client.images.get("fwsync-test/app:1").id
    try:
        rules = rules_allowing(tmp_path, 8080)
        _, doc = doctor(dlab, rules)
        assert findings(doc, "dangling-images") == [], "still tagged"
        # Re-importing under the same tag takes the tag away from the first image.
        api.import_image_from_data(_image_tar(b"new"), repository="fwsync-test/app", tag="1")
        assert dlab.client.images.get(old).tags == []
        _, doc = doctor(dlab, rules)
    finally:
        dlab.client.images.remove("fwsync-test/app:1")
        dlab.client.images.remove(old)
    [found] = findings(doc, "dangling-images")
    assert found["severity"] == "info" and found["details"]["count"] == 1
    assert (3 << 20) <= found["details"]["bytes"] < (4 << 20)
    assert old.removeprefix("sha256:")[:12] in found["message"]


def test_an_environment_holding_another_containers_address(dlab: DockerLab,
                                                           tmp_path: Path) -> None:
    db = run(dlab, "db")
    db.reload()
    address = db.attrs["NetworkSettings"]["IPAddress"]
    run(dlab, "app-by-ip", env={"DATABASE_URL": f"postgres://u@{address}:5432/app"})
    run(dlab, "app-by-name", env={"DATABASE_URL": "postgres://u@db:5432/app"})
    _, doc = doctor(dlab, rules_allowing(tmp_path, 8080))
    [found] = findings(doc, "env-container-ip")
    assert found["details"] == {"container": "app-by-ip", "variable": "DATABASE_URL",
                                "address": address, "owner": "db"}
    assert found["subject"] == "app-by-ip: DATABASE_URL"


# --------------------------------------------------------------------------- docker-proxy CPU

# Sends as fast as it can to HOST_IP:PORT until killed: through docker-proxy when the port is
# published on 127.0.0.1 (Docker's nat OUTPUT rule leaves 127.0.0.0/8 to the userland proxy).
# docker-proxy accepts before its own connection to the container succeeds, so "flowing" is
# said only once data really went through; a refused attempt is retried.
_SENDER = r"""
import socket, sys, time
chunk, sent = b"x" * (256 << 10), 0
while True:
    try:
        with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5) as s:
            while True:
                s.sendall(chunk)
                sent += len(chunk)
                if sent == 256 * len(chunk):
                    print("flowing", flush=True)
    except OSError:
        time.sleep(0.1)
"""


def test_a_busy_docker_proxy_is_found(dlab: DockerLab, tmp_path: Path) -> None:
    # dd reads in 1 MiB blocks: a plain `nc -l >/dev/null` reads 1 KiB at a time and would be
    # the bottleneck, leaving docker-proxy little to do.
    run(dlab, "sink", "nc -ll -p 80 -e dd of=/dev/null bs=1M",
        ports={"80/tcp": ("127.0.0.1", 15000)}, memory="64m", restart="unless-stopped")
    dlab.run_web("idle", {"80/tcp": 15001})
    wait_for(dlab.host, "127.0.0.1", 15001)
    sender = subprocess.Popen([*dlab.host.nsenter_prefix(), sys.executable, "-I", "-c", _SENDER,
                               "127.0.0.1", "15000"], stdout=subprocess.PIPE, text=True)
    try:
        assert sender.stdout is not None
        with selectors.DefaultSelector() as sel:
            sel.register(sender.stdout, selectors.EVENT_READ)
            flowing = sel.select(30) and sender.stdout.readline().strip() == "flowing"
        assert flowing, "no data went through docker-proxy to the sink in 30 s"
        code, doc = doctor(dlab, rules_allowing(tmp_path, 15001), "--sample", "2",
                           "--ignore", "not-enforcing")
        assert sender.poll() is None, "the sender stopped while doctor sampled"
    finally:
        sender.kill()
        sender.wait()
    [found] = findings(doc, "docker-proxy-cpu")
    details = found["details"]
    assert (details["container"], details["host_ip"], details["host_port"]) == (
        "sink", "127.0.0.1", 15000), "the busy one, not the idle proxies of 15001"
    assert details["cpu_percent"] >= 10 and details["interval_seconds"] >= 1.5
    assert "userland-proxy" in found["fix"]
    assert code == 0


# --------------------------------------------------------------------------- clean, and errors


@pytest.mark.usefixtures("swap_on")
def test_a_well_configured_host_is_clean(dlab: DockerLab, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    # On IPv4 only: published on `::` too, docker-proxy would serve IPv6 for a container
    # without it, and ports published after apply are open that way (ipv6-proxy-later).
    # The nftables backend: the iptables one cannot close direct routing into a network made
    # later with a bridge name of its creator's, which doctor says (direct-routing-gap).
    monkeypatch.setenv("FWSYNC_BACKEND", "nftables")
    run(dlab, "web", "httpd -f -p 80 -h /bin", memory="64m", restart="unless-stopped",
        ports={"80/tcp": ("0.0.0.0", 8080)})
    run(dlab, "api", memory="64m", restart="always", env={"UPSTREAM": "http://web:80"})
    run(dlab, "db", memory="128m", restart="on-failure",
        ports={"5432/tcp": ("127.0.0.1", 5432)})
    wait_for(dlab.host, "127.0.0.1", 8080)
    rules = rules_allowing(tmp_path, 8080)
    run_fwsync(dlab, "apply", rules=rules, check=True)  # well configured: fwsync enforces
    code, doc = doctor(dlab, rules)
    assert doc["findings"] == [] and doc["worst"] is None, doc["findings"]
    assert doc["skipped"] == [] and len(doc["checks"]) == 14
    assert code == 0
    text = run_fwsync(dlab, "doctor", rules=rules)
    assert text.returncode == 0
    assert text.stdout.strip() == "No problems found. 14 checks ran: 0 serious, 0 warning, 0 info."


def test_docker_unreachable_is_one_line_and_exit_1(dlab: DockerLab, tmp_path: Path) -> None:
    res = run_fwsync(dlab, "doctor", rules=rules_allowing(tmp_path, 8080),
                     env={"DOCKER_HOST": f"unix://{dlab.dir}/nothing.sock"})
    assert res.returncode == 1 and res.stdout == ""
    [line] = res.stderr.strip().splitlines()
    assert line.startswith("error: cannot reach Docker at unix://") and "DOCKER_HOST" in line
