"""`cadencia generate`: bad input gives one clear line and a non-zero exit; good input streams
or prints the JSON object the issue specifies."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from cadencia.cli import main
from hive_core.model.tiny import TinySpec, write_tiny_llama


def error_line(capsys: pytest.CaptureFixture[str], argv: list[str]) -> tuple[int, str]:
    """Run the CLI in-process; return the exit code and its only stderr line."""
    code = main(["generate", *argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) >= 1 and "Traceback" not in "\n".join(err)
    return code, err[-1]


def test_missing_model_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, line = error_line(capsys, ["hi", "--model", str(tmp_path / "nope.gguf")])
    assert code == 2
    assert line == f"cadencia generate: error: model file not found: {tmp_path / 'nope.gguf'}"


def test_missing_model_from_environment(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CADENCIA_MODEL", str(tmp_path / "gone.gguf"))
    code, line = error_line(capsys, ["hi"])
    assert code == 2 and line.endswith("gone.gguf (from $CADENCIA_MODEL)")


def test_truncated_model_file(capsys: pytest.CaptureFixture[str], tiny_gguf: Path,
                              tmp_path: Path) -> None:
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(tiny_gguf.read_bytes()[: tiny_gguf.stat().st_size * 2 // 3])
    code, line = error_line(capsys, ["hi", "--model", str(cut)])
    assert code == 2
    assert line.startswith("cadencia generate: error: ") and "truncated" in line


def test_not_a_gguf_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    bad = tmp_path / "weights.bin"
    bad.write_bytes(b"\x00" * 64)
    code, line = error_line(capsys, ["hi", "--model", str(bad)])
    assert code == 2 and "is not a GGUF file" in line


def test_non_llama_architecture(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = write_tiny_llama(tmp_path / "g.gguf", TinySpec(architecture="gpt2", n_layers=1))
    code, line = error_line(capsys, ["hi", "--model", str(path)])
    assert code == 2
    assert line == ("cadencia generate: error: unsupported architecture 'gpt2': only "
                    "llama, mistral, qwen2 GGUF files are supported")


@pytest.mark.parametrize("prompt", ["", "   \n\t"])
def test_empty_prompt(capsys: pytest.CaptureFixture[str], tiny_gguf: Path, prompt: str) -> None:
    code, line = error_line(capsys, [prompt, "--model", str(tiny_gguf)])
    assert (code, line) == (2, "cadencia generate: error: the prompt is empty")


@pytest.mark.parametrize("raw", [True, False])
def test_prompt_longer_than_context(capsys: pytest.CaptureFixture[str], tiny_gguf: Path,
                                    raw: bool) -> None:
    argv = ["the " * 80, "--model", str(tiny_gguf)] + (["--raw"] if raw else [])
    code, line = error_line(capsys, argv)
    assert code == 2
    assert "the model's context is 64" in line and line.startswith("cadencia generate: error: ")


@pytest.mark.parametrize("argv,needle", [
    (["hi", "--bogus"], "unrecognized arguments: --bogus"),
    (["hi", "--max-new-tokens", "many"], "invalid int value: 'many'"),
    (["hi", "--kv", "int3"], "invalid choice: 'int3'"),
    ([], "the following arguments are required: prompt"),
    (["hi", "--max-new-tokens", "0"], "--max-new-tokens: must be in 1..1_000_000, got '0'"),
    (["hi", "--threads", "0"], "--threads: must be in 1..1_024, got '0'"),
    (["hi", "--temperature", "-1"], "--temperature: must be in 0..100, got '-1'"),
    (["hi", "--top-p", "1.5"], "--top-p: must be in 0.001..1, got '1.5'"),
])
def test_bad_flags_exit_2_with_the_reason(capsys: pytest.CaptureFixture[str],
                                          argv: list[str], needle: str) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["generate", *argv])
    assert exc.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert re.match(r"cadencia( generate)?: error: ", lines[0])
    assert needle in lines[0] and lines[0].endswith("--help')")


def test_an_answer_that_cannot_fit_the_context_is_refused_before_loading(
        capsys: pytest.CaptureFixture[str], tiny_gguf: Path) -> None:
    code = main(["generate", "hi", "--model", str(tiny_gguf), "--max-new-tokens", "100"])
    [line] = capsys.readouterr().err.splitlines()  # no "loading ..." before it
    assert code == 2 and "--max-new-tokens 100 does not fit" in line and "context holds 64" in line


def run_cli(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cadencia", "generate", *argv], check=False, capture_output=True,
        text=True, timeout=120, env={**os.environ, **(env or {})},
    )


def test_subprocess_error_is_one_line_without_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "half.gguf"
    bad.write_bytes(b"GGUF\x03\x00\x00\x00" + b"\xff" * 40)
    proc = run_cli("hello", "--model", str(bad))
    assert proc.returncode == 2
    assert proc.stdout == ""
    *progress, last = proc.stderr.strip().splitlines()
    assert progress == [], proc.stderr  # refused before the load began
    assert last.startswith("cadencia generate: error: ") and "half.gguf is truncated" in last


def test_tiny_model_json(capsys: pytest.CaptureFixture[str], tiny_gguf: Path) -> None:
    code = main(["generate", "the sand", "--model", str(tiny_gguf), "--max-new-tokens", "5",
                 "--json", "--threads", "1"])
    out: dict[str, Any] = json.loads(capsys.readouterr().out)
    assert code == 0
    assert set(out) >= {"text", "prompt_ids", "new_ids", "ttft_s", "tokens_per_s", "kv"}
    assert out["kv"] == "fp32"
    assert 1 <= len(out["new_ids"]) <= 5
    assert out["prompt_ids"][:1] == [1]  # <|im_start|> of the chat template
    assert all(isinstance(i, int) for i in out["new_ids"])


@pytest.mark.real_model
def test_real_model_greedy_answer_and_int4(smollm_path: Path) -> None:
    proc = run_cli("What is the capital of France?", "--max-new-tokens", "12", "--json",
                   "--kv", "int4", env={"CADENCIA_MODEL": str(smollm_path)})
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["kv"] == "int4"
    assert "Paris" in out["text"]
    assert "mapping tensors 272/272" in proc.stderr  # loading shows progress (packed: the default)
