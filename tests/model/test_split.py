"""Splitting the model into stages, or each layer into attention and MLP objects, changes no bit.

Each split runs a prefill and several decode steps next to the unsplit model, and every
step's logits must be equal bit for bit (same process, so the same torch thread count).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from hive_core.base.stage import Part, Stage, even_stages, split_parts
from hive_core.model.errors import StageError
from hive_core.model.executor import ShardExecutor
from hive_core.model.gguf_file import GGUFModelFile
from hive_core.model.kv.factory import kv_factory
from hive_core.model.pipeline import LocalPipeline
from hive_core.model.weights import ShardWeights


def three_stages(file: GGUFModelFile, dtype: torch.dtype = torch.float32) -> LocalPipeline:
    """A client holding only embedding and head, and 3 executors each loading only its stage."""
    client = ShardExecutor.load(file, (), embed=True, head=True, dtype=dtype)
    hops = []
    for stage in even_stages(file.config.n_layers, 3):
        hops.append((ShardExecutor.load(file, [stage], dtype=dtype), stage))
    return LocalPipeline(client, hops)


def every_part_alone(file: GGUFModelFile, dtype: torch.dtype = torch.float32) -> LocalPipeline:
    """Every layer's attention and every layer's MLP in an executor of its own."""
    client = ShardExecutor.load(file, (), embed=True, head=True, dtype=dtype)
    hops = []
    for stage in split_parts(Stage(0, file.config.n_layers)):
        hops.append((ShardExecutor.load(file, [stage], dtype=dtype), stage))
    return LocalPipeline(client, hops)


def parts_sharing_weights(single: LocalPipeline) -> LocalPipeline:
    """Per-part executors built over the unsplit model's tensors (no second dequantisation)."""
    ex = single.client
    w = ex.weights
    client = ShardExecutor(ex.config, ShardWeights({}, {}, w.embedding, w.head), (), ex.dtype)
    hops = []
    for stage in split_parts(Stage(0, ex.config.n_layers)):
        layer = stage.start
        part = ShardWeights(
            attention={layer: w.attention[layer]} if stage.part is Part.ATTENTION else {},
            mlp={layer: w.mlp[layer]} if stage.part is Part.MLP else {},
        )
        hops.append((ShardExecutor(ex.config, part, [stage], ex.dtype), stage))
    return LocalPipeline(client, hops)


def run_steps(pipeline: LocalPipeline, prompt: list[int], follow: list[int], kv: str) -> list[Any]:
    """Logits of every prompt position, then of each decode step feeding `follow`."""
    session = pipeline.new_session(kv_factory(kv))
    out = [session.forward(prompt, all_logits=True)]
    for token in follow:
        out.append(session.forward([token]))
    return out


def assert_bit_identical(a: list[torch.Tensor], b: list[torch.Tensor]) -> None:
    assert len(a) == len(b)
    for step, (x, y) in enumerate(zip(a, b, strict=True)):
        assert x.dtype == y.dtype and x.shape == y.shape
        diff = (x.float() - y.float()).abs().max().item()
        assert torch.equal(x, y), f"step {step}: logits differ by up to {diff}"


@pytest.mark.parametrize("kv", ["fp32", "int4"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_tiny_splits_are_bit_identical(tiny_gguf: Path, kv: str, dtype: torch.dtype) -> None:
    file = GGUFModelFile(tiny_gguf)
    single = LocalPipeline.load_single(file, dtype=dtype)
    prompt = [5, 70, 200, 31, 99, 4, 150, 8, 17]
    follow = [33, 101, 7, 250, 3, 64]
    ref = run_steps(single, prompt, follow, kv)
    assert_bit_identical(ref, run_steps(three_stages(file, dtype), prompt, follow, kv))
    assert_bit_identical(ref, run_steps(every_part_alone(file, dtype), prompt, follow, kv))


def test_three_stage_executors_hold_only_their_layers(tiny_gguf: Path) -> None:
    pipeline = three_stages(GGUFModelFile(tiny_gguf))
    held = [sorted(ex.weights.attention) for ex, _ in pipeline.hops]
    assert held == [[0, 1], [2], [3]]
    assert all(ex.weights.embedding is None and ex.weights.head is None for ex, _ in pipeline.hops)
    assert pipeline.client.weights.attention == {} and pipeline.client.weights.mlp == {}


def test_a_split_that_skips_or_repeats_a_part_is_refused(tiny_gguf: Path) -> None:
    file = GGUFModelFile(tiny_gguf)
    ex = ShardExecutor.load(file, [Stage(0, 4)], embed=True, head=True)
    with pytest.raises(StageError, match="exactly once"):
        LocalPipeline(ex, [(ex, Stage(0, 2)), (ex, Stage(3, 4))])
    with pytest.raises(StageError, match="exactly once"):
        LocalPipeline(ex, [(ex, Stage(0, 4)), (ex, Stage(3, 4, Part.MLP))])
    with pytest.raises(StageError, match="exactly once"):
        LocalPipeline(ex, [(ex, Stage(0, 4, Part.MLP)), (ex, Stage(0, 4, Part.ATTENTION))])


def test_an_executor_refuses_a_stage_it_has_no_weights_for(tiny_gguf: Path) -> None:
    file = GGUFModelFile(tiny_gguf)
    ex = ShardExecutor.load(file, [Stage(0, 2, Part.ATTENTION)])
    h = torch.zeros(3, file.config.hidden)
    with pytest.raises(StageError, match="MLP weights of layer 0"):
        ex.run_stage(Stage(0, 2), h, 0, ex.new_caches(kv_factory("fp32")))
    with pytest.raises(StageError, match="no KV cache given for layer 1"):
        ex.run_stage(Stage(0, 2, Part.ATTENTION), h, 0, {0: kv_factory("fp32")()})
    with pytest.raises(StageError, match=r"must be \[seq, 64\]"):
        ex.run_stage(Stage(0, 2, Part.ATTENTION), torch.zeros(3, 8), 0, {})
    with pytest.raises(StageError, match="cache holds 0 positions but input starts at 2"):
        ex.run_stage(Stage(0, 1, Part.ATTENTION), h, 2, ex.new_caches(kv_factory("fp32")))
    with pytest.raises(StageError, match="exceed the context"):
        ex.run_stage(Stage(0, 1, Part.ATTENTION), h, 62, {0: kv_factory("fp32")()})


@pytest.mark.real_model
def test_real_model_splits_are_bit_identical(smollm: Any) -> None:
    prompt = smollm.tokenizer.encode("The three primary colours are red, yellow and")
    follow = smollm.tokenizer.encode(" blue, which mix into every other")
    ref = run_steps(smollm.pipeline, prompt, follow, "fp32")
    assert_bit_identical(ref, run_steps(three_stages(smollm.file), prompt, follow, "fp32"))
    assert_bit_identical(ref, run_steps(parts_sharing_weights(smollm.pipeline), prompt, follow,
                                        "fp32"))
