"""`--max-memory`: a node publishes its cap as its free RAM, refuses loads past it (a full
context's KV cache counted with each attention), and the planner, reading the cap, gives such a
node the MLP half of an attention/MLP split where it cannot take whole layers."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from cadencia.cli import build_parser
from hive_core.base.health import HealthRecord
from hive_core.base.stage import Part, Stage
from hive_core.model.config import LlamaConfig
from hive_core.protocol.inference import ShardInfo
from hive_core.sched.health import measure_health
from hive_core.sched.memory import (
    MB,
    LayerBytes,
    MemoryBudget,
    MemoryCapError,
    check_max_memory,
    layer_bytes,
    published_free_mb,
)
from hive_core.sched.planner import Candidate, CostModel
from hive_core.sched.routing import candidate

# Llama-3.1-8B's shape and its 128K context: a layer's float32 KV cache (1 GiB) outweighs its
# MLP matrices, so a node with room for the MLPs may have none for a whole layer.
CFG = LlamaConfig(n_layers=4, hidden=4096, ffn=14336, n_heads=32, n_kv_heads=8,
                  vocab_size=128256, context_length=131072, rope_base=500000.0, rms_eps=1e-5)
ALPHA, BETA = bytes([1]) * 20, bytes([2]) * 20


def test_a_stage_costs_its_parts_and_the_cache_goes_with_the_attention() -> None:
    lb = LayerBytes(attention=10, mlp=30, kv=100)
    assert (lb.of(Part.FULL), lb.of(Part.ATTENTION), lb.of(Part.MLP)) == (140, 110, 30)
    budget = MemoryBudget(1000, [lb] * 4)
    assert budget.cost(Stage(1, 3)) == 280 and budget.cost(Stage(0, 4, Part.MLP)) == 120


def test_the_budget_admits_up_to_the_cap_and_frees_what_is_released() -> None:
    lb = LayerBytes(attention=100 * MB, mlp=300 * MB, kv=1024 * MB)
    budget = MemoryBudget(1000 * MB, [lb] * 4)
    budget.admit(Stage(0, 1, Part.MLP))
    budget.admit(Stage(1, 2, Part.MLP))
    budget.admit(Stage(1, 2, Part.MLP))  # held already: counted once
    assert budget.used_bytes == 600 * MB
    with pytest.raises(MemoryCapError) as err:
        budget.admit(Stage(2, 3))  # its 1 GiB cache alone passes the cap
    assert str(err.value) == ("stage 2:3:full needs 1424 MB (weights, and a full context's KV cache "
                              "for each attention) but this node gives at most 1000 MB "
                              "(--max-memory) and holds 600 MB")
    with pytest.raises(MemoryCapError):
        budget.admit(Stage(2, 4, Part.MLP))  # 600 more: 1200 > 1000
    budget.release(Stage(0, 1, Part.MLP))
    budget.admit(Stage(2, 3, Part.MLP))
    assert budget.used_bytes == 600 * MB
    with pytest.raises(MemoryCapError, match="stages 0:1:mlp, 3:4:mlp need 600 MB"):
        budget.check([Stage(0, 1, Part.MLP), Stage(3, 4, Part.MLP)])
    assert budget.used_bytes == 600 * MB  # check holds nothing


@pytest.mark.parametrize("bad", [0.0, 0.5, -3.0, 2e9, True])
def test_a_cap_out_of_range_is_refused(bad: float) -> None:
    with pytest.raises(MemoryCapError, match="--max-memory must be 1 to"):
        check_max_memory(bad)


def test_the_published_free_ram_is_the_cap_where_the_machine_has_more() -> None:
    assert published_free_mb(20_000.0, None) == 20_000.0
    assert published_free_mb(20_000.0, 3000.0) == 3000.0
    assert published_free_mb(2000.0, 3000.0) == 2000.0
    assert measure_health(uptime_s=1.0, tflops=1.0, max_memory_mb=1.0).free_ram_mb == 1.0
    assert measure_health(uptime_s=1.0, tflops=1.0).free_ram_mb > 1.0


def test_layer_bytes_count_the_file_as_each_mode_holds_it(tiny_gguf: Path) -> None:
    from hive_core.model.gguf_file import GGUFModelFile
    from hive_core.model.weights import weights_need

    cfg = GGUFModelFile(tiny_gguf).config
    kv = 2 * cfg.kv_dim * cfg.context_length * 4
    for mode in ("packed", "fp32", "bf16"):
        layers = layer_bytes(tiny_gguf, mode)
        assert len(layers) == cfg.n_layers and all(lb.kv == kv for lb in layers)
        held = sum(lb.attention + lb.mlp for lb in layers)
        # weights_need counts the same matrices (norms aside) plus shared tensors
        assert abs(held - weights_need(tiny_gguf, range(cfg.n_layers), mode)) <= (
            cfg.n_layers * 2 * cfg.hidden * 4)
    fp32, bf16 = layer_bytes(tiny_gguf, "fp32")[0], layer_bytes(tiny_gguf, "bf16")[0]
    assert fp32.mlp == 2 * bf16.mlp == 4 * (3 * cfg.hidden * cfg.ffn + cfg.hidden)


def test_a_host_refuses_a_load_past_the_cap_and_frees_what_it_lets_go(tiny_gguf: Path) -> None:
    from hive_core.exec.stage_host import HostConfig, StageHost
    from hive_core.model.gguf_file import GGUFModelFile

    layers = layer_bytes(tiny_gguf, "fp32")
    mlp, full = layers[0].of(Part.MLP), layers[0].of(Part.FULL)
    host = StageHost(GGUFModelFile(tiny_gguf), HostConfig(weights="fp32"))
    host.budget = MemoryBudget(4 * mlp + full // 2, layers)  # the MLPs, no whole layer
    host.load(Stage(0, 4, Part.MLP))
    with pytest.raises(MemoryCapError):
        host.executor_for(Stage(1, 2))
    assert [str(s) for s in host.budget.held] == ["0:4:mlp"] and len(host.executors) == 1
    host = StageHost(GGUFModelFile(tiny_gguf), HostConfig(weights="fp32"))
    host.budget = MemoryBudget(full + mlp, layers)  # a served layer and one MLP more
    host.load(Stage(0, 1))  # served: held for good
    host.executor_for(Stage(1, 2, Part.MLP))  # outside the served span: held while asked
    host.executor_for(Stage(2, 3, Part.MLP))  # the next one fits once the last one went
    assert set(host.budget.held) == {Stage(0, 1), Stage(2, 3, Part.MLP)}
    with pytest.raises(MemoryCapError):
        host.executor_for(Stage(1, 3))  # a whole stage never fits beside the served one


def beta_record(ram_mb: float, tflops: float) -> HealthRecord:
    return HealthRecord(tflops=tflops, battery_pct=None, on_ac=True, rtt_median_ms=1.0,
                        uptime_s=60.0, success_rate=1.0, free_ram_mb=ram_mb, temperature_c=None,
                        measured_at_ms=0)


def test_the_planner_splits_over_a_capped_beta_and_whole_layers_leave_it_out() -> None:
    """A slow alpha with room for everything and a fast beta whose cap holds every MLP of the
    layers asked but not one whole layer with its cache: the asker's route puts attention on
    alpha and the MLPs on beta; with the split switched off, every layer goes to alpha."""
    from hive_core.exec.remote import route

    cost = CostModel.for_model(CFG)
    cap = 2 * cost.layer_bytes * (1 - cost.attn_share) / cost.ram_share / MB + 100  # 2 MLPs
    assert cost.max_layers(candidate_with(cap)) == 0
    infos = {n: ShardInfo(1, "m.gguf", 4, 4096, 0, 0, 1.0, 1e5, True) for n in (ALPHA, BETA)}
    health = {ALPHA: beta_record(100_000.0, 0.01), BETA: beta_record(cap, 0.1)}
    roles = {ALPHA: ("alpha",), BETA: ("beta",)}
    kw = {"first_layer": 1, "last_layer": 3, "health": health, "roles": roles, "salt": b"s"}
    rtt = {ALPHA: 1.0, BETA: 1.0}
    split = route(infos, CFG, "m.gguf", 1, rtt, **kw)  # type: ignore[arg-type]
    assert [(str(s.stage), s.nodes) for s in split.stages] == [
        ("1:2:attention", (ALPHA,)), ("1:2:mlp", (BETA,)),
        ("2:3:attention", (ALPHA,)), ("2:3:mlp", (BETA,))]
    whole = route(infos, CFG, "m.gguf", 1, rtt, split=False, **kw)  # type: ignore[arg-type]
    assert [(str(s.stage), s.nodes) for s in whole.stages] == [("1:3:full", (ALPHA,))]
    assert whole.left_out == (BETA,) and whole.est_token_s > split.est_token_s


def candidate_with(ram_mb: float) -> Candidate:
    return candidate(BETA, tflops=1.0, free_ram_mb=ram_mb, on_ac=True)


def parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(list(argv))


def test_node_and_hive_up_take_max_memory_and_publish_it() -> None:
    from cadencia.commands.hive import _child_args
    from hive_core.mesh.runner import node_config

    args = parse("node", "--join", "ws://127.0.0.1:9", "--role", "beta", "--max-memory", "3000")
    assert node_config(args, listen=None, join=args.join).max_memory_mb == 3000.0
    plain = parse("node", "--join", "ws://127.0.0.1:9")
    assert node_config(plain, listen=None, join=plain.join).max_memory_mb is None
    up = parse("hive", "up", "--nodes", "2", "--plan", "--max-memory", "2500")
    flags = _child_args(up)
    assert flags[flags.index("--max-memory") + 1] == "2500.0"
    assert "--max-memory" not in _child_args(parse("hive", "up"))


@pytest.mark.parametrize("bad", ["0", "-5", "abc", "1e12"])
def test_a_bad_max_memory_is_refused_while_parsing(bad: str,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        parse("node", "--join", "ws://127.0.0.1:9", "--max-memory", bad)
    assert exit_.value.code == 2
    assert "argument --max-memory" in capsys.readouterr().err


def test_the_planner_switch_is_read_and_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    from hive_core.exec.errors import ExecError
    from hive_core.exec.join import PLANNER_ENV, planner_mode

    monkeypatch.delenv(PLANNER_ENV, raising=False)
    assert planner_mode() == "auto"
    for mode in ("auto", "spans", "whole"):
        monkeypatch.setenv(PLANNER_ENV, mode)
        assert planner_mode() == mode
    monkeypatch.setenv(PLANNER_ENV, "nosplit")
    with pytest.raises(ExecError, match="CADENCIA_PLANNER='nosplit': expected one of auto, "
                                        "spans, whole"):
        planner_mode()
