"""Output shared by every system: aligned text columns and JSON files (one schema-version key)."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

#: The key that carries the format version in every JSON document tokenguard writes (the
#: ``--tokenguard-report`` file, baselines, ``tokenguard check --format json``).
SCHEMA_VERSION_KEY = "schema_version"


def clean_summary(guarded: int) -> str:
    """The terminal summary of a run whose guarded tests had no finding at all."""
    return f"tokenguard: clean, {guarded} guarded test{'s' if guarded != 1 else ''}, no token-alignment warnings"


def columns(rows: Sequence[Sequence[str]]) -> list[str]:
    """Rows of cells -> lines with every column left-aligned to its widest cell (two spaces apart)."""
    if not rows:
        return []
    widths = [max(len(row[i]) for row in rows if i < len(row)) for i in range(max(len(row) for row in rows))]
    return ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in rows]


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` as stable JSON (sorted keys, indent 2) to ``path``, atomically.

    The file gets the permissions a plain ``open(path, "w")`` would give (``0o666`` minus the umask),
    not ``mkstemp``'s 0600. Raises ``OSError`` when the folder cannot be created or written.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=2, sort_keys=True)
            handle.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
