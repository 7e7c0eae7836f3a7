"""The real SmolLM2 with packed weights against its float32 path: teacher-forced agreement,
an exact LM head choice, bit-identical splits, and a fraction of the memory."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from hive_core.base.stage import Stage, even_stages
from hive_core.model.executor import ShardExecutor
from hive_core.model.fixed_prompts import fixed_prompts
from hive_core.model.generation import generate
from hive_core.model.kv.factory import kv_factory
from hive_core.model.packed import PACKED, BlockLinear, RowTable, unfused
from hive_core.model.pipeline import LocalPipeline
from hive_core.model.weights import HeadWeights, ShardWeights

pytestmark = pytest.mark.real_model

TEXT = (
    "The hive shards a transformer across phones and home computers. Each node serves a few "
    "layers of the model, checks every tensor it receives against a Merkle root, and is paid "
    "in credits for the work it does. A city grows on top of it: every node is a district, "
    "placed on the map by the latencies measured between nodes, and every inference task is "
    "played as a game. Rivers in temperate regions freeze from the surface down, because water "
    "is densest at four degrees and the colder layer floats on top; fish survive the winter in "
    "the warmer water below the ice. In 1854 John Snow traced a cholera outbreak in London to a "
    "single pump on Broad Street by plotting deaths on a map, and the handle was removed. "
    "A recipe for bread needs flour, water, salt and yeast; the dough rises while the yeast "
    "turns sugar into carbon dioxide, and baking sets the structure. def fibonacci(n):\n"
    "    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n    return a\n"
    "The mitochondria produce most of a cell's supply of adenosine triphosphate, which cells "
    "use as a source of chemical energy. Chess openings such as the Sicilian Defence begin "
    "with 1. e4 c5, trading central control for an unbalanced position. The Pacific Ocean is "
    "the largest and deepest of the oceanic divisions, extending from the Arctic in the north "
    "to the Southern Ocean. To reset the router, hold the button for ten seconds until the "
    "light blinks orange, then wait two minutes before connecting again. Photosynthesis in "
    "plants converts light energy into chemical energy stored in glucose, releasing oxygen as "
    "a by-product. The committee will meet on Thursday at three to review the budget, and "
    "every department must send its figures by Tuesday evening. Dear Maria, thank you for the "
    "lovely scarf; it arrived just as the first snow fell and I have worn it every day since. "
    "The theorem states that every continuous function on a closed interval attains a maximum "
    "and a minimum, a fact used throughout analysis and optimisation. The train to Lyon leaves "
    "platform six at 07:42 and arrives shortly after noon; passengers with bicycles must book a "
    "space in advance. Volcanic islands form where magma rises through the crust, building "
    "cones layer by layer until they break the surface of the sea. Knitting a sock begins at "
    "the cuff, continues down the leg, turns the heel with short rows and ends at the toe. "
    "Interest compounds when the interest earned is added to the principal, so the balance "
    "grows faster every year. "
)


@pytest.fixture(scope="module")
def packed(smollm: Any) -> LocalPipeline:
    return LocalPipeline.load_single(smollm.file, weights="packed")


@pytest.fixture(scope="module")
def forced(smollm: Any, packed: LocalPipeline) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits of 500 teacher-forced positions: float32 path, packed path."""
    ids = smollm.tokenizer.encode(TEXT)[:500]
    assert len(ids) == 500
    ref = smollm.pipeline.new_session(kv_factory("fp32")).forward(ids, all_logits=True)
    got = packed.new_session(kv_factory("fp32")).forward(ids, all_logits=True)
    return ref, got


def test_packed_holds_int4_weights_in_a_fraction_of_the_memory(
    smollm: Any, packed: LocalPipeline
) -> None:
    w = packed.client.weights
    assert isinstance(unfused(w.attention[0].q), PACKED) and isinstance(w.mlp[29].down, PACKED)
    assert isinstance(w.head, HeadWeights)
    # The tied Q8_0 head runs on our kernel from the file's blocks (int4 only without it).
    assert isinstance(w.head.output, BlockLinear) and isinstance(w.embedding, RowTable)
    assert w.nbytes() < smollm.pipeline.client.weights.nbytes() / 3


def test_teacher_forced_top1_and_logit_difference(forced: tuple[torch.Tensor, torch.Tensor]) -> None:
    ref, got = forced
    top1 = (got.argmax(-1) == ref.argmax(-1)).float().mean().item()
    chosen = ref.argmax(-1, keepdim=True)
    near = ref >= ref.amax(-1, keepdim=True) - 1.0  # the logits a greedy or sampled pick sees
    diff_chosen = (got.gather(1, chosen) - ref.gather(1, chosen)).abs()
    diff_near = (got - ref).abs()[near]
    print(f"packed vs fp32 over {ref.shape[0]} tokens: top-1 {top1:.4f}, |diff| of the top "
          f"logit max {diff_chosen.max():.2e}, of logits within 1 of the top max {diff_near.max():.2e}")
    # Measured 1.0000 and 4e-4: the three-call products leave about 2**-17 relative error.
    assert top1 >= 0.995
    assert diff_chosen.max() < 0.01 and diff_near.max() < 0.01
    # The head, like every matrix, is a float32 product of the file's weights.
    assert (got - ref).abs().max() < 0.01


@pytest.mark.parametrize("index", range(4))
def test_greedy_tokens_equal_the_float32_path(smollm: Any, packed: LocalPipeline, index: int) -> None:
    """The project's fixed prompts (the transformers reference set and its chat prompt)."""
    ids = smollm.tokenizer.encode(fixed_prompts(smollm.file, smollm.tokenizer)[index])
    ctx = smollm.pipeline.config.context_length

    def run(pipe: LocalPipeline) -> list[int]:
        session = pipe.new_session(kv_factory("fp32"))
        return generate(session.forward, ids, max_new_tokens=32, context_length=ctx).new_ids

    assert run(packed) == run(smollm.pipeline)


def test_the_packed_head_chooses_exactly_the_float32_top(smollm: Any, packed: LocalPipeline) -> None:
    """Given the same hidden states, the packed head's top token is the float32 head's."""
    torch.manual_seed(0)
    h = torch.randn(64, smollm.file.config.hidden) * 2
    ref = smollm.pipeline.client.head(h)
    got = packed.client.head(h)
    assert torch.equal(got.argmax(-1), ref.argmax(-1))
    top = ref.argmax(-1, keepdim=True)
    assert torch.allclose(got.gather(1, top), ref.gather(1, top), rtol=1e-5, atol=1e-4)


def test_packed_splits_of_the_real_model_are_bit_identical(
    smollm: Any, packed: LocalPipeline
) -> None:
    ex = packed.client
    w = ex.weights
    client = ShardExecutor(ex.config, ShardWeights({}, {}, w.embedding, w.head), (), ex.dtype)
    hops = []
    for stage in even_stages(ex.config.n_layers, 3):
        part = ShardWeights({i: w.attention[i] for i in stage.layers},
                            {i: w.mlp[i] for i in stage.layers})
        hops.append((ShardExecutor(ex.config, part, [stage], ex.dtype), stage))
    split = LocalPipeline(client, hops)
    prompt = smollm.tokenizer.encode("The three primary colours are red, yellow and")
    a, b = packed.new_session(kv_factory("fp32")), split.new_session(kv_factory("fp32"))
    assert torch.equal(a.forward(prompt, all_logits=True), b.forward(prompt, all_logits=True))
    for token in smollm.tokenizer.encode(" blue, which mix"):
        assert torch.equal(a.forward([token]), b.forward([token]))


def test_a_packed_shard_loads_only_its_stage(smollm_path: Any) -> None:
    from hive_core.model.gguf_file import GGUFModelFile

    file = GGUFModelFile(smollm_path)
    ex = ShardExecutor.load(file, [Stage(10, 12)], weights="packed")
    assert sorted(ex.weights.attention) == [10, 11]
    assert sorted({n.split(".")[1] for n in file.loaded}) == ["10", "11"]


def test_a_packed_decode_step_materialises_no_weight_matrix(packed: LocalPipeline) -> None:
    """Everything a decode step allocates adds up to less than one layer's float32 weights
    (14 MB): activations and logits only, never a dequantised matrix."""
    from torch.profiler import ProfilerActivity, profile

    session = packed.new_session(kv_factory("fp32"))
    session.forward([1, 2, 3, 4, 5])
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        session.forward([7])
    allocated = sum(max(e.self_cpu_memory_usage, 0) for e in prof.key_averages())
    assert 0 < allocated < 12e6, f"a decode step allocated {allocated / 1e6:.1f} MB"
