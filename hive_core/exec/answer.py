"""One replica's answer to one stage step, checked: sealed for us, signed, about our input."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hive_core.base.stage import Stage
from hive_core.exec.errors import ExecError
from hive_core.exec.wire import from_wire, seal_context
from hive_core.protocol.inference import StageResult
from hive_core.protocol.messages import ErrorCode
from hive_core.protocol.tensor import Dtype
from hive_core.protocol.trust import Attestation
from hive_core.trust import TrustError, check_attestation, merkle_root, open_sealed, worker_id


class BadAnswer(ExecError):
    """A replica's answer that cannot be used (forged, corrupt, refused): it is dropped."""


class OtherInput(BadAnswer):
    """A signed answer about another input than the one asked of it (in a cascade: the carrier
    before it forwarded other bytes than it reported, or the node misstates what it got)."""


class Unavailable(ExecError):
    """A replica that is gone (link closed, timed out, crashed)."""


class NeedsRebuild(ExecError):
    """The replica lost (or never had) this session's KV cache."""


@dataclass(frozen=True)
class Hop:
    """What was asked of a stage: the key every answer must match."""

    session_id: bytes
    step: int
    stage: Stage
    position: int
    tokens: int
    input_bytes: bytes


@dataclass(frozen=True)
class Answer:
    """A usable answer: its output, the signed statement behind it, the worker's time."""

    node: bytes
    out: np.ndarray  # float32 [tokens, hidden]
    out_bytes: bytes  # `out`'s float32 bytes: what the worker attested (the wire's image)
    attestation: Attestation | None
    compute_s: float  # what the worker says it spent computing
    wall_s: float = 0.0  # what the asker measured, request to answer

    @property
    def kernel(self) -> str:
        """The kernel class the worker attested ("" without an attestation)."""
        return self.attestation.kernel if self.attestation is not None else ""


def check_answer(node: bytes, hop: Hop, result: StageResult, box: object, hidden: int,
                 attest: bool, wall_s: float = 0.0, wire: Dtype = Dtype.F32) -> Answer:
    """Decrypt and verify `result` for `hop` (its payload in `wire`); BadAnswer / NeedsRebuild
    when unusable."""
    if not result.ok:
        if result.code is ErrorCode.NEEDS_REBUILD:
            raise NeedsRebuild(result.error)
        raise BadAnswer(f"{node.hex()[:12]} refused: {result.error}")
    ctx = seal_context(b"out", hop.session_id, hop.step, hop.stage, hop.position)
    try:
        sent = open_sealed(box, result.payload, ctx)  # type: ignore[arg-type]
        out = from_wire(sent, hop.tokens, hidden, wire)
    except (TrustError, ExecError) as exc:
        raise BadAnswer(f"{node.hex()[:12]}: {exc}") from None
    raw = sent if wire is Dtype.F32 else out.tobytes()
    att = result.attestation
    if attest:
        if att is None:
            raise BadAnswer(f"{node.hex()[:12]} sent no attestation")
        check_statement(node, hop, att, raw)
    return Answer(node, out, raw, att, max(result.compute_s, 0.0), wall_s)


def check_statement(node: bytes, hop: Hop, att: Attestation, output: bytes | None) -> None:
    """BadAnswer unless `att` is `node`'s signature over `hop`'s task and input (and over
    `output`, when given)."""
    try:
        check_attestation(att, output)
    except TrustError as exc:
        raise BadAnswer(str(exc)) from None
    expected = (hop.session_id, hop.step, hop.stage.start, hop.stage.end,
                hop.stage.part, hop.position, hop.tokens)
    got = (att.session_id, att.step, att.layer_start, att.layer_end, att.part, att.position,
           att.tokens)
    if worker_id(att) != node or got != expected:
        raise BadAnswer(f"{node.hex()[:12]} attested another task or identity")
    if att.input_digest != merkle_root(hop.input_bytes):
        raise OtherInput(f"{node.hex()[:12]} attested another input")
