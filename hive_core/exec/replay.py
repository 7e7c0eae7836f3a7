"""Recomputing disputed stage steps on this node's own copy of the model (`trust.Replayer`).

`LocalReplayer` holds the model files this node has (by digest), loads the layers a piece of
evidence is about (the last few loads are kept), and runs its steps in order from an empty
KV cache, the way a shard server runs them. Where it can compute in the offender's kernel
class (same weights mode, a kernel path this CPU has, the same thread count for the replay)
it does, so the verdict is bit for bit; otherwise it computes in its own class and the
verdict takes the calibrated bound between the two.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Iterable

import torch

from hive_core.base.stage import Stage
from hive_core.exec.errors import ExecError
from hive_core.exec.kernel import VARIANTS, kernel_class, load_stages, model_digest, native_path
from hive_core.exec.wire import WireError, hidden_bytes, hidden_from_bytes, split_kv
from hive_core.model.errors import ModelError
from hive_core.model.executor import ShardExecutor
from hive_core.model.gguf_file import GGUFModelFile
from hive_core.model.kv.factory import kv_factory
from hive_core.protocol.inference import KvKind
from hive_core.protocol.tensor import Dtype
from hive_core.trust import (
    EvidenceError,
    Replayed,
    ReplayJob,
    TrustError,
    parse_class,
    use_replayer,
)

logger = logging.getLogger(__name__)
KEEP_LOADED = 2  # stage loads kept for the next replay
KV_NAMES = {int(KvKind.FP32): "fp32", int(KvKind.INT4): "int4"}
_shared: LocalReplayer | None = None
_shared_lock = threading.Lock()


def shared_replayer(*files: GGUFModelFile) -> LocalReplayer:
    """This process's replayer, holding every model file it was given; it is also what
    `trust.check_evidence` uses when called without one (feeds, the game's state)."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = LocalReplayer()
            use_replayer(_shared)
        for f in files:
            _shared.add(f)
        return _shared


class LocalReplayer:
    """Replays evidence about the models in `files` (thread-safe; compute runs in the caller)."""

    def __init__(self, files: Iterable[GGUFModelFile] = ()) -> None:
        self._files: dict[bytes, GGUFModelFile] = {}
        self._loaded: OrderedDict[tuple[bytes, Stage, str, str], ShardExecutor] = OrderedDict()
        self._lock = threading.Lock()
        for f in files:
            self.add(f)

    def add(self, file: GGUFModelFile) -> bytes:
        """Hold `file` for replays; returns its digest."""
        digest = model_digest(file.path)
        with self._lock:
            self._files.setdefault(digest, file)
        return digest

    def _path_for(self, weights: str, wanted: str) -> str | None:
        """The kernel path to load with: the offender's where this CPU has it, else ours."""
        if weights != "packed":
            return None
        here = native_path()
        if wanted == here or wanted == "int4" or (wanted in VARIANTS and here != "int4"):
            return wanted
        return here

    def _executor(self, digest: bytes, stage: Stage, weights: str, path: str | None) -> ShardExecutor:
        key = (digest, stage, weights, path or "")
        ex = self._loaded.get(key)
        if ex is None:
            ex = load_stages(self._files[digest], [stage], weights, path)
            self._loaded[key] = ex
            while len(self._loaded) > KEEP_LOADED:
                self._loaded.popitem(last=False)
        self._loaded.move_to_end(key)
        return ex

    def replay(self, job: ReplayJob) -> Replayed:
        file = self._files.get(job.model)
        if file is None:
            raise EvidenceError(f"model {job.model.hex()[:12]} is not held here")
        try:
            wanted = parse_class(job.kernel)
        except TrustError as exc:
            raise EvidenceError(str(exc)) from None
        try:
            kind, wire = split_kv(job.kv)  # the cache kind and the wire's rounding of outputs
        except WireError as exc:
            raise EvidenceError(str(exc)) from None
        kv = KV_NAMES.get(kind)
        if kv is None:
            raise EvidenceError(f"unknown KV kind {kind}")
        stage = Stage(job.layer_start, job.layer_end, job.part)
        hidden = file.config.hidden
        with self._lock:
            path = self._path_for(wanted.weights, wanted.path)
            try:
                stage.check(file.config.n_layers)
                ex = self._executor(job.model, stage, wanted.weights, path)
            except (ModelError, ExecError, ValueError) as exc:
                raise EvidenceError(f"cannot load {stage} here: {exc}") from None
            threads = torch.get_num_threads()
            torch.set_num_threads(wanted.threads)  # same summation split as the offender's
            try:
                out = self._run(ex, stage, kv, hidden, job, wire)
                mine = kernel_class(wanted.weights, path, wanted.threads)
            finally:
                torch.set_num_threads(threads)
        return Replayed(out, mine)

    @staticmethod
    def _run(ex: ShardExecutor, stage: Stage, kv: str, hidden: int, job: ReplayJob,
             wire: Dtype) -> bytes:
        caches = ex.new_caches(kv_factory(kv)) if stage.part.has_attention else {}
        out = b""
        try:
            with torch.inference_mode():
                for position, tokens, data in job.steps:
                    for cache in caches.values():
                        if len(cache) > position:
                            cache.truncate(position)
                    x = torch.from_numpy(hidden_from_bytes(data, tokens, hidden).copy())
                    out = hidden_bytes(ex.run_stage(stage, x, position,
                                                    {layer: caches[layer] for layer in stage.layers}
                                                    if caches else {}), wire)
        except (ModelError, ExecError, ValueError) as exc:
            raise EvidenceError(f"the steps do not replay: {exc}") from None
        return out
