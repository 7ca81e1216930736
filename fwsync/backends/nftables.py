"""The nftables backend: fwsync's own `table inet fwsync`, through libnftables' JSON API.

Every apply is one batch that empties the table and fills it anew, so the kernel swaps the whole
ruleset in one transaction. `plan` sends the same batch in dry-run mode: the kernel validates it
without committing, so a plan that apply could not carry out says so.
"""

from __future__ import annotations

from typing import Any

from fwsync.backends.base import BackendError
from fwsync.backends.nftables_render import (
    FAMILY,
    TABLE,
    Batch,
    delete_batch,
    objects_state,
    replace_batch,
    table_objects,
)
from fwsync.core.diff import Plan, State
from fwsync.core.ruleset import Ruleset


def _nft() -> Any:
    try:
        import nftables  # Debian's python3-nftables: ctypes over libnftables
    except ImportError as exc:
        raise BackendError(
            "the nftables backend needs libnftables' Python bindings (Debian: python3-nftables, "
            "seen from a venv made with --system-site-packages)") from exc
    nft = nftables.Nftables()
    nft.set_json_output(True)
    nft.set_handle_output(False)
    return nft


class NftablesBackend:
    name = "nftables"

    def __init__(self) -> None:
        self._nft: Any = None
        self._batches: dict[int, Batch] = {}

    @property
    def nft(self) -> Any:
        if self._nft is None:
            self._nft = _nft()
        return self._nft

    def _cmd(self, batch: Batch, what: str, dry_run: bool = False) -> Any:
        self.nft.set_dry_run(dry_run)
        try:
            rc, output, error = self.nft.json_cmd({"nftables": batch})
        except ValueError as exc:  # the bindings parse libnftables' output as JSON
            raise BackendError(f"{what}: libnftables answered with something that is not "
                               f"JSON ({exc})") from exc
        finally:
            self.nft.set_dry_run(False)
        if rc != 0:
            raise BackendError(f"{what}: libnftables said: {' '.join(str(error).split())}")
        return output

    def detect(self) -> str:
        self.nft  # noqa: B018 - fails early, with the install hint, if the bindings are missing
        return f"nftables: fwsync's own table {FAMILY} {TABLE}, forward hook, priority -1"

    def exists(self) -> bool:
        out = self._cmd([{"list": {"tables": {"family": FAMILY}}}], "list tables")
        return any(o.get("table", {}).get("name") == TABLE for o in out.get("nftables", []))

    def read(self) -> State:
        if not self.exists():
            return {}
        out = self._cmd([{"list": {"table": {"family": FAMILY, "name": TABLE}}}],
                        f"list table {FAMILY} {TABLE}")
        objects = [o for o in out.get("nftables", []) if "metainfo" not in o and "table" not in o]
        return objects_state(objects)

    def render(self, ruleset: Ruleset) -> State:
        objects = table_objects(ruleset)
        state = objects_state(objects)
        # apply() receives the Plan, which carries lines, not JSON: keep the batch it came from.
        self._batches[hash(tuple(sorted(state.items())))] = objects
        return state

    def _batch_for(self, plan: Plan) -> Batch:
        objects = self._batches.get(hash(tuple(sorted(plan.desired.items()))))
        if objects is None:
            raise BackendError("internal: apply() got a plan this backend did not render")
        return replace_batch(objects, self._set_names())

    def _set_names(self) -> list[str]:
        if not self.exists():
            return []
        out = self._cmd([{"list": {"sets": {"family": FAMILY}}}], f"list sets {FAMILY}")
        return [o["set"]["name"] for o in out.get("nftables", [])
                if o.get("set", {}).get("table") == TABLE]

    def check(self, plan: Plan) -> None:
        self._cmd(self._batch_for(plan), "dry run of the planned batch", dry_run=True)

    def apply(self, plan: Plan) -> None:
        try:
            self._cmd(self._batch_for(plan), f"replacing table {FAMILY} {TABLE}")
        except BackendError as exc:
            raise BackendError(f"{exc}; nothing was changed (the batch is all or nothing)"
                               ) from exc

    def remove(self) -> State:
        before = self.read()
        if before:
            self._cmd(delete_batch(), f"deleting table {FAMILY} {TABLE}")
        return before
