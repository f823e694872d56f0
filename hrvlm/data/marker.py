"""The mark of fabricated test data: a root written by ``hrvlm data fabricate`` (:mod:`hrvlm.data.fabricate`)
holds :data:`MARKER`, which the loaders read (its datasets are never reported as real ones) and whose md5s
verify the fabricated files."""
from __future__ import annotations

import json
from pathlib import Path

MARKER = "HRVLM-FABRICATED.json"
FORMAT = "hrvlm-fabricated/1"


class FabricatedRootError(ValueError):
    """A fabricated root's marker is unreadable, or a root already holds real data."""


def read_marker(root: str | Path) -> dict | None:
    """The parsed marker of ``root``, or ``None`` if it is not a fabricated root."""
    path = Path(root) / MARKER
    if not path.is_file():
        return None
    try:
        entry = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise FabricatedRootError(f"{path} is not a readable fabrication marker ({err}); delete the folder and run "
                                  f"`hrvlm data fabricate --root {root}` again") from None
    if not isinstance(entry, dict) or entry.get("format") != FORMAT:
        raise FabricatedRootError(f"{path} is not a {FORMAT} marker; delete the folder and run "
                                  f"`hrvlm data fabricate --root {root}` again")
    return entry


def is_fabricated(root: str | Path) -> bool:
    """Whether ``root`` was written by :func:`hrvlm.data.fabricate.fabricate` (its datasets are test data, not real ones)."""
    return read_marker(root) is not None


def checksums(root: str | Path) -> dict[str, str]:
    """``relative path -> md5`` of the files :func:`hrvlm.data.fabricate.fabricate` wrote under ``root`` ({} if not fabricated)."""
    entry = read_marker(root)
    return dict(entry["md5"]) if entry else {}
