"""fwsync's Docker client negotiates the API version, and `auto` follows the firewall backend
Docker reports. Docker 29 can't run here (not in Debian), so the daemon is a stand-in: a small
HTTP server on a unix socket that answers the few calls fwsync makes the way Docker 29 does,
refusing every API version below 1.44 with Docker's own message. (Against the real 20.10, 26.1
and 28.5 the e2e layer proves the same, with no stand-in.)"""

from __future__ import annotations

import json
import os
import re
import socketserver
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest

import fwsync.reconcile
from fwsync.core.observed import DockerState
from fwsync.observe.docker import docker_client, observe_docker
from fwsync.reconcile import choose_backend

pytestmark = pytest.mark.unit

API, MIN_API = "1.52", "1.44"  # Docker 29.1's


class _Docker29(BaseHTTPRequestHandler):
    seen: list[str]
    driver: str

    def do_GET(self) -> None:
        self.seen.append(self.path)
        m = re.match(r"^/v(\d+)\.(\d+)(/.*)$", self.path)
        path = m.group(3) if m else self.path
        if m and (int(m.group(1)), int(m.group(2))) < (1, 44):
            version = f"{m.group(1)}.{m.group(2)}"
            return self._json(400, {"message": f"client version {version} is too old. Minimum "
                                    f"supported API version is {MIN_API}, please upgrade your "
                                    "client to a newer version"})
        path = path.split("?")[0]
        if path == "/version":
            return self._json(200, {"Version": "29.1.0", "ApiVersion": API,
                                    "MinAPIVersion": MIN_API})
        if path in ("/containers/json", "/networks"):
            return self._json(200, [])
        if path == "/info":
            return self._json(200, {"ServerVersion": "29.1.0",
                                    "FirewallBackend": {"Driver": self.driver}})
        return self._json(404, {"message": f"page not found: {path}"})

    def _json(self, code: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


class _UnixHTTP(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


def _serve(sock: Path, driver: str) -> tuple[_UnixHTTP, list[str]]:
    seen: list[str] = []
    handler = type("Handler", (_Docker29,), {"seen": seen, "driver": driver})
    server = _UnixHTTP(str(sock), handler)
    # BaseHTTPRequestHandler wants a (host, port) client address; a unix peer has none.
    server.get_request = lambda: (server.socket.accept()[0], ("docker29", 0))  # type: ignore
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, seen


@pytest.fixture
def docker29(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
             request: pytest.FixtureRequest) -> Iterator[list[str]]:
    driver = getattr(request, "param", "nftables")
    server, seen = _serve(tmp_path / "docker.sock", driver)
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/docker.sock")
    try:
        yield seen
    finally:
        server.shutdown()
        server.server_close()


def test_the_stand_in_refuses_an_old_api_version_like_docker29(docker29: list[str]) -> None:
    import docker
    from docker.errors import APIError

    # A client fixed at 20.10's API version, as older SDKs and tools default to.
    old = docker.DockerClient(base_url=os.environ["DOCKER_HOST"], version="1.41", timeout=5)
    with pytest.raises(APIError, match=r"Minimum supported API version is 1\.44"):
        old.api.containers()
    old.close()


def test_fwsync_negotiates_and_auto_picks_nftables(docker29: list[str]) -> None:
    client = docker_client(timeout=5)
    assert client.api.api_version == API
    client.close()
    state = observe_docker(timeout=5)
    assert state.error is None, state.error
    assert (state.firewall_backend, state.version) == ("nftables", "29.1.0")
    assert {p.split("?")[0] for p in docker29} >= {"/version", f"/v{API}/containers/json",
                                                   f"/v{API}/info"}
    backend, why = choose_backend("auto", state)
    assert backend.name == "nftables"
    assert why == "auto: Docker reports its firewall backend is nftables"


@pytest.mark.parametrize(("driver", "chosen"), [
    ("nftables", "nftables"), ("nftables+firewalld", "nftables"),
    ("iptables", "iptables"), ("iptables+firewalld", "iptables")])
def test_auto_follows_every_driver_docker_reports(driver: str, chosen: str,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    # No kernel here: fwsync holds no nftables table.
    monkeypatch.setattr(fwsync.reconcile, "_holds_objects", lambda backend: False)
    assert choose_backend("auto", DockerState(firewall_backend=driver))[0].name == chosen
