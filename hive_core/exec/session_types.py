"""What the asker is told (`ClientConfig`) and what it keeps of each stage of a session
(`StageState`): shared by the client, the cascade, verdicts and audits."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from hive_core.base.stage import Stage
from hive_core.exec.wire import wire_dtype
from hive_core.protocol.inference import KvKind
from hive_core.protocol.trust import Attestation


@dataclass(frozen=True)
class ClientConfig:
    """How the asker dispatches and checks stages. Every client path (ask, demo, play, the
    API) starts from these defaults: verified, first and last layers kept here."""

    kv: KvKind = KvKind.FP32  # cache kind the shard servers keep for this session
    verify: bool = True  # signed roots, replica comparison and audits (False: --no-verify)
    audit_rate: float = 1.0  # share of sessions whose single-replica stages are audited
    # Audits stream to their auditors while the answer decodes (`exec.audit_stream`), leaving
    # the session's end only the last rows. Off by default: where nodes share the asker's cores
    # (one machine, bench_infer) the chunks slow the decode by more than they save at the end.
    stream_audits: bool = False
    request_timeout_s: float = 120.0  # one stage request (covers a first-use weight load)
    hedge_factor: float = 4.0  # a step unanswered this many times its expected time is hedged
    hedge_floor_s: float = 1.0  # ...but never sooner than this
    max_hop_tokens: int = 0  # rows per request; 0: as many as fit in one frame
    late_wait_s: float = 30.0  # at the end, how long lagging replicas may still be judged
    # Layers 0..local_layers run here too (the `local` executor must hold them): the first
    # remote node then sees mixed hidden states, not embeddings it could look up as tokens.
    local_layers: int = 1
    # The last layers run here as well: no node returns a state the public head reads as
    # the answer's next token.
    local_tail_layers: int = 1
    compute_nice: int = 0  # OS priority of the local compute thread (the game uses 10)
    # "star": the asker sends each stage its input and takes its output back; "cascade":
    # hidden states go node to node and commitments come back (`exec.cascade`).
    topology: str = "star"
    # Hidden states on the wire: fp32, fp16 or bf16 (`exec.wire`; measured in `exec.cascade`).
    wire: str = "fp32"

    def __post_init__(self) -> None:
        if self.topology not in ("star", "cascade"):
            raise ValueError(f"topology must be star or cascade, got {self.topology!r}")
        wire_dtype(self.wire)
        if not 0.0 <= self.audit_rate <= 1.0:
            raise ValueError(f"audit rate must be in [0, 1], got {self.audit_rate}")
        if self.local_layers < 0 or self.local_tail_layers < 0:
            raise ValueError("local layer counts must be >= 0")
        if self.hedge_factor < 1.0 or self.hedge_floor_s <= 0:
            raise ValueError("hedging needs a factor >= 1 and a positive floor")


@dataclass
class StageState:
    """One hop of the route within one session."""

    stage: Stage
    nodes: list[bytes]  # replicas still in use, primary first
    # Accepted steps: (step, position, input rows, output rows, node that answered).
    segments: list[tuple[int, int, np.ndarray, np.ndarray, bytes]] = field(default_factory=list)
    steps: int = 0
    verified_steps: int = 0
    audited: bool = False  # an audit recomputed every accepted step and found them right
    failed: set[bytes] = field(default_factory=set)  # nodes dropped from this stage
    weights: str | None = None  # the replicas' weights mode (None: not reported)
    # node -> [rows served, wall seconds the asker measured for them]
    work: dict[bytes, list[float]] = field(default_factory=dict)
    # node -> its signed steps with their inputs and outputs, in the order it served them
    history: dict[bytes, list[tuple[Attestation, bytes, bytes]]] = field(default_factory=dict)
