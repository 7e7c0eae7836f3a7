"""Red team: liars that try to change the answer, against the hive's verification.

Adversaries, each one shard server (named in each test's docstring):
- careful: a gradient-crafted perturbation of one step's output that makes the asker pick a
  chosen token, small enough to pass the old whole-tensor tolerance (1e-3), at prefill and
  at decode, replicated or alone on its stage;
- noisy or lazy: scaled, zeroed or stale outputs;
- replaying: an answer signed and sealed for another step sent again.
Every attack that changes a token is caught and its node slashed on evidence the asker
recomputed; honest nodes of different kernel classes are never slashed.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

import numpy as np
import pytest

from hive_core.base.stage import Stage
from hive_core.exec import ClientConfig, Fault, generate_hive
from hive_core.exec.hive import build_hive
from hive_core.model.sampling import Sampler
from hive_core.protocol.inference import StageResult
from hive_core.trust import check_evidence, row_tolerance

PROMPT = [5, 9, 12, 7, 5, 9, 12, 33, 40, 11, 3]
ALL_REMOTE = ClientConfig(local_layers=0, local_tail_layers=0, hedge_floor_s=60.0)
# Our kernel's three paths are one grade (float32 arithmetic): replicas of a stage may mix them.
PATHS = {0: "avx2", 1: "portable", 2: "", 3: "avx2"}


async def tokens(hive: Any, prompt: list[int] = PROMPT, n: int = 10, seed: int | None = None
                 ) -> tuple[list[int], Any]:
    s = hive.client.new_session()
    sampler = Sampler(1.0, seed=seed) if seed is not None else None
    g = await asyncio.wait_for(generate_hive(s, prompt, max_new_tokens=n, context_length=64,
                                             sampler=sampler), 60)
    await s.finish()
    return g.new_ids, s


async def honest(tiny_gguf: Any) -> list[int]:
    hive = await build_hive(tiny_gguf, 2, weights="packed", client_config=ALL_REMOTE)
    try:
        return (await tokens(hive))[0]
    finally:
        await hive.close()


@pytest.mark.parametrize("fault", ["scale", "zero", "stale"])
async def test_lazy_and_noisy_liars_are_slashed_across_kernel_classes(
        tiny_gguf, tiny_file, fault) -> None:
    """Noisy or lazy adversary on packed weights, its replica on another of our kernel's
    paths: scaling by 1.002 (inside the old tolerance), zeros, or its previous answer."""
    hive = await build_hive(tiny_gguf, 4, replicas=2, model=tiny_file, weights="packed",
                            server_kernels=PATHS, faults={2: Fault.parse(fault)},
                            client_config=ALL_REMOTE)
    try:
        assert len({srv.kernel for srv in hive.servers}) == 3  # avx2, portable, this CPU's
        ids, s = await tokens(hive)
        honest_ids = await honest(tiny_gguf)
        liar = hive.servers[2].node.node_id
        assert ids == honest_ids and s.verified
        assert hive.client.reputation.slashed == [liar]
        [ev] = hive.client.reputation.evidence
        assert check_evidence(ev) == liar
    finally:
        await hive.close()


async def test_replayed_answers_are_refused(tiny_gguf, tiny_file) -> None:
    """Replaying adversary: it sends the answer it signed and sealed for an earlier step
    (its output, attestation and seal are genuine, for another step) instead of computing."""
    hive = await build_hive(tiny_gguf, 4, replicas=2, model=tiny_file, weights="packed",
                            client_config=ALL_REMOTE)
    liar = hive.servers[0]
    kept: list[StageResult] = []
    send = liar.node.send

    async def replaying(peer: bytes, msg: Any) -> None:
        if isinstance(msg, StageResult) and msg.ok:
            if kept:
                old = kept[0]
                msg = StageResult(msg.rpc_id, old.code, old.error, msg.cache_len, old.compute_s,
                                  old.attestation, old.payload)
            else:
                kept.append(msg)
        await send(peer, msg)

    liar.node.send = replaying  # type: ignore[method-assign]
    try:
        ids, s = await tokens(hive)
        assert ids == await honest(tiny_gguf)
        assert liar.node.node_id not in s.stages[0].nodes  # dropped: its answers do not open
    finally:
        await hive.close()


async def test_fifty_honest_runs_mixing_kernel_classes_slash_nobody(tiny_gguf, tiny_file) -> None:
    """Honest nodes on our kernel's AVX-512, AVX2 and portable paths, side by side in one
    stage, and on torch's int4 kernel (a grade of its own: a stage of two), audited by the
    asker: 50 sampled answers, no node slashed, banned or distrusted, every one verified."""
    from hive_core.exec.kernel import native_path

    kernels = {0: "", 1: "avx2", 2: "portable", 3: "avx2", 4: "int4", 5: "int4"}
    if native_path() == "int4":
        pytest.skip("our kernel cannot be built here: one class only")
    hive = await build_hive(tiny_gguf, 6, replicas=2, model=tiny_file, weights="packed",
                            stages=[Stage(0, 2), Stage(2, 3), Stage(3, 4)],
                            server_kernels=kernels, client_config=ALL_REMOTE)
    try:
        assert len({srv.kernel for srv in hive.servers}) >= 4
        rng = random.Random(17)
        for run in range(50):
            prompt = [rng.randrange(3, 200) for _ in range(rng.randrange(2, 12))]
            _, s = await tokens(hive, prompt, n=4, seed=run)
            assert s.verified, f"run {run} not verified"
        rep = hive.client.reputation
        assert rep.slashed == [] and rep.bans == {} and rep.evidence == []
        assert not any(rep.excluded(n) for n in hive.node_ids)
    finally:
        await hive.close()


# -- the careful liar on the real model ---------------------------------------------------


@pytest.fixture(scope="module")
def route(smollm: Any) -> Any:
    from tests.exec.steering import Route

    return Route(smollm.file)


@pytest.fixture(scope="module")
def answer(smollm: Any, route: Any) -> tuple[list[int], list[Any], list[int]]:
    """An answer whose first token is a near tie ("The" 0.08 logits over "L")."""
    from hive_core.model.chat import prompt_ids

    ids = prompt_ids(smollm.file, smollm.tokenizer, "What is the capital of France?")
    steps, new = route.steps(ids, 6)
    return ids, steps, new


@pytest.fixture(scope="module")
def decoded(smollm: Any, route: Any) -> tuple[list[int], list[Any], list[int]]:
    """An answer with a near tie while decoding (its third token: 0.04 logits apart)."""
    from hive_core.model.chat import prompt_ids

    ids = prompt_ids(smollm.file, smollm.tokenizer, "Give me a random word.")
    steps, new = route.steps(ids, 4)
    return ids, steps, new


async def _hive_answer(smollm: Any, ids: list[int], n: int, **kw: Any) -> tuple[list[int], Any, Any]:
    from tests.exec.steering import FIRST, SECOND

    hive = await build_hive(smollm.path, 4, model=smollm.file, stages=[FIRST, SECOND],
                            weights="fp32", **kw)
    s = hive.client.new_session()
    g = await asyncio.wait_for(generate_hive(s, ids, max_new_tokens=n,
                                             context_length=smollm.file.config.context_length), 300)
    await s.finish()
    return g.new_ids, s, hive


@pytest.mark.real_model
async def test_a_steering_lie_at_prefill_passes_the_old_check_and_is_slashed(
        smollm, route, answer) -> None:
    """Careful adversary (issue 17's): at prefill it adds a perturbation crafted through the
    rest of the model to its last output row, within the old whole-tensor tolerance (1e-3,
    about 18 % of that row here), which turns the first answer token into the runner-up."""
    from tests.exec.steering import perturb_at, runner_up, whole_tensor

    ids, steps, honest = answer
    target = runner_up(steps[0])
    delta = route.craft(steps, 0, target, whole_tensor(1e-3))
    assert delta is not None, "the old budget no longer steers this prompt"
    lied = steps[0].out + delta
    assert np.linalg.norm(delta) / np.linalg.norm(steps[0].out) <= 1e-3 + 1e-6
    row_err = np.linalg.norm(delta[-1]) / np.linalg.norm(lied[-1])
    assert row_err > 100 * row_tolerance("fp32/torch/AVX512/t2/2.13.0",
                                         "packed/avx2/AVX512/t2/2.13.0")
    fault = Fault.crafted(perturb_at(steps[0].x, delta))
    got, s, hive = await _hive_answer(smollm, ids, len(honest), replicas=2, spares=0,
                                      faults={0: fault},
                                      client_config=ClientConfig(hedge_floor_s=60.0))
    try:
        liar = hive.servers[0].node.node_id
        assert got == honest and s.verified and not s.tainted
        assert hive.client.reputation.slashed == [liar]
        assert check_evidence(hive.client.reputation.evidence[0]) == liar
    finally:
        await hive.close()


@pytest.mark.real_model
async def test_a_lone_steering_liar_is_caught_by_the_audit(smollm, route, answer) -> None:
    """Careful adversary alone on its stage (no replica compares it step by step): its
    prefill lie changes the first token; the end-of-session audit recomputes the stage in
    one prefill, the liar is slashed on its own signed steps, the answer is marked tainted,
    and the next answer (without it) is the honest one."""
    from tests.exec.steering import perturb_at, runner_up, whole_tensor

    ids, steps, honest = answer
    delta = route.craft(steps, 0, runner_up(steps[0]), whole_tensor(1e-3))
    assert delta is not None
    fault = Fault.crafted(perturb_at(steps[0].x, delta))
    got, s, hive = await _hive_answer(smollm, ids, 4, spares=1, faults={0: fault},
                                      client_config=ClientConfig(hedge_floor_s=60.0))
    try:
        liar = hive.servers[0].node.node_id
        assert got[0] == runner_up(steps[0]) != honest[0]  # the lie did steer the answer
        assert s.tainted and not s.verified
        assert hive.client.reputation.slashed == [liar]
        again = hive.client.new_session()
        g = await generate_hive(again, ids, max_new_tokens=4,
                                context_length=smollm.file.config.context_length)
        await again.finish()
        assert g.new_ids == honest[:4] and again.verified
        assert liar not in [n for st in again.stages for n in st.nodes]
    finally:
        await hive.close()


@pytest.mark.real_model
async def test_a_steering_lie_at_decode_is_slashed(smollm, route, decoded) -> None:
    """Careful adversary at decode: on the answer step whose top two logits are closest it
    crafts a flip to the runner-up within the old tolerance of that one row (1e-3)."""
    from tests.exec.steering import margin, perturb_at, runner_up, whole_tensor

    ids, steps, honest = decoded
    k = min(range(1, len(steps)), key=lambda j: margin(steps[j]))
    delta = route.craft(steps, k, runner_up(steps[k]), whole_tensor(1e-3), iters=30)
    assert delta is not None, f"the old budget no longer flips step {k}"
    fault = Fault.crafted(perturb_at(steps[k].x, delta))
    got, s, hive = await _hive_answer(smollm, ids, len(steps), replicas=2, spares=0,
                                      faults={1: fault},
                                      client_config=ClientConfig(hedge_floor_s=60.0))
    try:
        assert got == honest and s.verified
        assert hive.client.reputation.slashed == [hive.servers[1].node.node_id]
    finally:
        await hive.close()


@pytest.mark.real_model
def test_within_the_new_per_row_bound_no_steering_succeeds(route, answer, decoded) -> None:
    """Careful adversary held to what the new comparison lets pass between two honest kernel
    classes (the calibrated per-row bound; within one class nothing passes): on the same two
    near ties the old budget flipped, the descent finds no flip."""
    from tests.exec.steering import margin, per_row, runner_up

    bound = row_tolerance("packed/avx512/AVX512/t2/2.13.0", "packed/avx2/AVX512/t2/2.13.0")
    for steps, k in ((answer[1], 0),
                     (decoded[1], min(range(1, len(decoded[1])), key=lambda j: margin(decoded[1][j])))):
        assert route.craft(steps, k, runner_up(steps[k]), per_row(bound), iters=15) is None
