"""systemd/fwsync.service and systemd/fwsync.env agree with `fwsync daemon`: the command line the
unit runs is one the CLI accepts, every setting the env file offers is one fwsync reads, and
the defaults it shows are the CLI's. The unit runs /usr/local/bin/fwsync, where docs/install.md
puts it."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import typer

from fwsync.cli import app

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "systemd" / "fwsync.service"
ENV_FILE = REPO / "systemd" / "fwsync.env"
SETTING = re.compile(r"^#?(FWSYNC_[A-Z_]+)=(.*)$")


def daemon_command() -> Any:
    group: Any = typer.main.get_command(app)
    return group.get_command(typer.Context(group), "daemon")


def exec_start() -> list[str]:
    (line,) = [ln for ln in UNIT.read_text().splitlines() if ln.startswith("ExecStart=")]
    return shlex.split(line.removeprefix("ExecStart="))


def env_settings() -> dict[str, str]:
    return {m.group(1): m.group(2) for ln in ENV_FILE.read_text().splitlines()
            if (m := SETTING.match(ln.strip()))}


def test_the_unit_runs_the_daemon_command_with_arguments_the_cli_accepts() -> None:
    binary, command, *args = exec_start()
    assert binary == "/usr/local/bin/fwsync"
    assert command == "daemon"
    daemon_command().make_context(command, args)  # raises on an unknown option
    assert "/usr/local/bin/fwsync" in (REPO / "docs" / "install.md").read_text()


def test_env_file_offers_only_settings_fwsync_reads_with_the_cli_defaults() -> None:
    options = {p.envvar: p for p in daemon_command().params if getattr(p, "envvar", None)}
    sources = "\n".join(p.read_text() for p in (REPO / "fwsync").rglob("*.py"))
    settings = env_settings()
    assert {"FWSYNC_RULES", "FWSYNC_BACKEND"} <= settings.keys()
    for name, shown in settings.items():
        if name in options:
            default = options[name].default
            if default is None:
                continue  # off unless set: the file shows an example value
            assert shown == str(getattr(default, "value", default)).removesuffix(".0"), name
        else:
            assert f'"{name}"' in sources, f"{name} is offered but fwsync never reads it"
    assert set(options) <= settings.keys(), "a daemon option missing from the env file"
