"""Fixtures for the distributed execution tests: the tiny model opened once, local reference."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest


@pytest.fixture(scope="session")
def tiny_file(tiny_gguf: Path) -> Any:
    from hive_core.model.gguf_file import GGUFModelFile

    return GGUFModelFile(tiny_gguf)


@pytest.fixture(scope="session")
def tiny_local(tiny_file: Any) -> Any:
    from hive_core.model.pipeline import LocalPipeline

    return LocalPipeline.load_single(tiny_file)
