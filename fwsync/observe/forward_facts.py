"""Who else decides forwarded packets on this host: Docker's own nftables tables (its
`firewall-backend: nftables`, Docker 29) and the other firewalls' forward-hook chains whose
policy is drop (iptables' FORWARD under ufw's default forward policy). Read from the kernel:
libnftables for everything nf_tables holds (iptables-nft included), iptables-legacy-save for the
legacy tables, which nftables cannot see."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

from fwsync.core.facts import DOCKER_NFT_TABLE, ForwardFacts

# /proc/net lists the legacy tables in use; reading one that does not exist would create it.
LEGACY = {"ip": ("ip_tables_names", "iptables-legacy-save"),
          "ip6": ("ip6_tables_names", "ip6tables-legacy-save")}


def _nft_json(cmd: str) -> list[dict[str, Any]]:
    import nftables  # Debian's python3-nftables (see the nftables backend)

    nft = nftables.Nftables()
    nft.set_json_output(True)
    rc, output, error = nft.json_cmd({"nftables": [{"list": {cmd: {}}}]})
    if rc != 0:
        raise OSError(f"nft list {cmd}: {' '.join(str(error).split())}")
    return [o for o in output.get("nftables", []) if "metainfo" not in o]


def _legacy_forward_drop(family: str, proc: Path) -> bool:
    names_file, save = LEGACY[family]
    try:
        names = (proc / "net" / names_file).read_text().split()
    except OSError:
        return False
    if "filter" not in names:
        return False
    out = subprocess.run([save, "-t", "filter"], capture_output=True, text=True, check=False)
    return out.returncode == 0 and ":FORWARD DROP" in out.stdout


def forward_facts(proc: Path = Path("/proc")) -> ForwardFacts:
    """Raises OSError (or ImportError without the nftables bindings) when the kernel can't be
    read; the doctor then reports the check as not run."""
    tables = [o["table"] for o in _nft_json("tables")]
    docker = tuple(sorted(t["family"] for t in tables if t.get("name") == DOCKER_NFT_TABLE))
    dropping = [f"{c['family']} {c['table']} {c['name']}"
                for c in (o["chain"] for o in _nft_json("chains") if "chain" in o)
                if c.get("hook") == "forward" and c.get("policy") == "drop"
                and c.get("table") != DOCKER_NFT_TABLE]
    dropping += [f"{fam} filter FORWARD (iptables-legacy)" for fam in LEGACY
                 if _legacy_forward_drop(fam, proc)]
    return ForwardFacts(docker_nftables=docker, dropping=tuple(dropping))
