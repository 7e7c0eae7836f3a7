"""Where a node keeps its files: `--data-dir`, else $CADENCIA_DATA_DIR, else the user data dir."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs


def data_dir(explicit: str | os.PathLike[str] | None = None) -> Path:
    """Resolve and create the data directory."""
    if explicit:
        path = Path(explicit)
    elif os.environ.get("CADENCIA_DATA_DIR"):
        path = Path(os.environ["CADENCIA_DATA_DIR"])
    else:
        path = Path(platformdirs.user_data_dir("cadencia", appauthor=False))
    path = path.expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path
