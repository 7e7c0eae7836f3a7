"""A careful liar's tool: a perturbation of one stage's output, crafted by gradient descent
through the rest of the model, that makes the asker pick a chosen token.

The route is the client's default on the real SmolLM2: the asker runs layer 0 and layer 29,
the hive runs 1-15 and 15-29. `Route.steps` replays a greedy answer locally to get every
step's input and output of the first remote stage; `craft` finds a perturbation of one
step's output (its last row) inside a given budget that makes the head's argmax the target.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from hive_core.base.stage import Stage
from hive_core.model.executor import ShardExecutor
from hive_core.model.gguf_file import GGUFModelFile
from hive_core.model.kv.factory import kv_factory

FIRST, SECOND, TAIL = Stage(1, 15), Stage(15, 29), Stage(29, 30)
Budget = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (delta, honest) -> scale <= 1


@dataclass
class Step:
    """One forward pass of a greedy answer, seen at the first remote stage."""

    position: int
    x: np.ndarray  # the stage's input rows
    out: np.ndarray  # its honest output rows
    logits: np.ndarray  # the head's logits for the step's last row


class Route:
    """The real model split as the client splits it by default, all in float32 here."""

    def __init__(self, file: GGUFModelFile) -> None:
        self.file = file
        self.ex = ShardExecutor.load(file, [Stage(0, 30)], embed=True, head=True)

    def steps(self, ids: list[int], n_new: int) -> tuple[list[Step], list[int]]:
        ex, caches = self.ex, self.ex.new_caches(kv_factory("fp32"))
        steps, new, pos, feed = [], [], 0, list(ids)
        with torch.inference_mode():
            for _ in range(n_new):
                h0 = ex.run_stage(Stage(0, 1), ex.embed(torch.tensor(feed)), pos, caches)
                h1 = ex.run_stage(FIRST, h0, pos, caches)
                h = ex.run_stage(TAIL, ex.run_stage(SECOND, h1, pos, caches), pos, caches)
                logits = ex.head(h[-1:])[0]
                steps.append(Step(pos, h0.numpy().copy(), h1.numpy().copy(), logits.numpy()))
                pos += len(feed)
                feed = [int(logits.argmax())]
                new.append(feed[0])
        return steps, new

    def _before(self, steps: list[Step], k: int) -> dict[int, object]:
        """The later layers' caches after the honest steps before step `k`."""
        ex = self.ex
        caches = ex.new_caches(kv_factory("fp32"))
        with torch.no_grad():
            for s in steps[:k]:
                x = torch.from_numpy(s.out)
                ex.run_stage(TAIL, ex.run_stage(SECOND, x, s.position, caches), s.position, caches)
        return caches

    def _rest(self, caches: dict[int, object], p: int, out: torch.Tensor) -> torch.Tensor:
        """Logits of the step at position `p` when its first-stage output is `out`."""
        ex = self.ex
        mine = copy.deepcopy(caches)
        h = ex.run_stage(TAIL, ex.run_stage(SECOND, out, p, mine), p, mine)  # type: ignore[arg-type]
        return ex.head(h[-1:])[0]

    def craft(self, steps: list[Step], k: int, target: int, budget: Budget,
              iters: int = 40) -> np.ndarray | None:
        """A perturbation of step `k`'s last output row within `budget` that makes `target`
        the argmax, or None if the descent finds none."""
        base = self._before(steps, k)
        honest = torch.from_numpy(steps[k].out)
        delta = torch.zeros_like(honest[-1:], requires_grad=True)
        opt = torch.optim.Adam([delta], lr=float(honest[-1].norm()) * 0.02)
        for _ in range(iters):
            with torch.no_grad():
                delta.mul_(budget(delta, honest))
            out = torch.cat([honest[:-1], honest[-1:] + delta])
            logits = self._rest(base, steps[k].position, out)
            if int(logits.argmax()) == target:
                full = torch.zeros_like(honest)
                full[-1:] = delta.detach()
                return full.numpy()
            loss = torch.logsumexp(logits, 0) - logits[target]
            opt.zero_grad()
            loss.backward()
            opt.step()
        return None


def whole_tensor(eps: float) -> Budget:
    """The old comparison's budget: relative L2 over the whole [tokens, hidden] output."""
    def scale(delta: torch.Tensor, honest: torch.Tensor) -> torch.Tensor:
        return torch.clamp(eps * honest.norm() / delta.norm().clamp_min(1e-30), max=1.0)
    return scale


def per_row(eps: float) -> Budget:
    """The new comparison's budget: relative L2 of the perturbed row alone."""
    def scale(delta: torch.Tensor, honest: torch.Tensor) -> torch.Tensor:
        return torch.clamp(eps * honest[-1].norm() / delta.norm().clamp_min(1e-30), max=1.0)
    return scale


def runner_up(step: Step) -> int:
    return int(np.argsort(step.logits)[-2])


def margin(step: Step) -> float:
    top = np.sort(step.logits)[-2:]
    return float(top[1] - top[0])


def perturb_at(x: np.ndarray, delta: np.ndarray) -> Callable[[torch.Tensor, torch.Tensor],
                                                                torch.Tensor]:
    """A `Fault.crafted` perturbation: adds `delta` to the output of the step whose input is
    `x` (bit for bit), leaves every other step honest."""
    key = np.ascontiguousarray(x, dtype="<f4").tobytes()

    def apply(out: torch.Tensor, inp: torch.Tensor) -> torch.Tensor:
        if np.ascontiguousarray(inp.numpy(), dtype="<f4").tobytes() == key:
            return out + torch.from_numpy(delta)
        return out
    return apply
