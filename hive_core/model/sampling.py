"""Choosing the next token from logits: greedy, or temperature with nucleus (top-p) sampling."""

from __future__ import annotations

import math

import numpy as np
import torch

from hive_core.model.errors import ModelError


class Sampler:
    """Greedy when ``temperature == 0``; otherwise seeded sampling from the top-p nucleus."""

    def __init__(self, temperature: float = 0.0, top_p: float = 1.0, seed: int | None = None) -> None:
        if not math.isfinite(temperature) or temperature < 0:
            raise ModelError(f"temperature must be >= 0, got {temperature}")
        if not math.isfinite(top_p) or not 0 < top_p <= 1:
            raise ModelError(f"top-p must be in (0, 1], got {top_p}")
        self.temperature = temperature
        self.top_p = top_p
        self._gen = torch.Generator()
        if seed is not None:
            self._gen.manual_seed(seed)
        else:
            self._gen.seed()

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def __call__(self, logits: torch.Tensor) -> int:
        """The chosen token id from logits ``[vocab]``."""
        if self.greedy:  # numpy's argmax (first of equal maxima, like torch's) is many times faster
            return int(np.argmax(logits.detach().to(torch.float32).reshape(-1).numpy()))
        probs = torch.softmax(logits.float() / self.temperature, dim=-1)
        if self.top_p < 1:
            sorted_p, order = torch.sort(probs, descending=True)
            # Keep the smallest prefix whose mass reaches top_p (always at least one token).
            keep = torch.cumsum(sorted_p, dim=-1) - sorted_p < self.top_p
            sorted_p = torch.where(keep, sorted_p, torch.zeros_like(sorted_p))
            choice = torch.multinomial(sorted_p, 1, generator=self._gen)
            return int(order[choice])
        return int(torch.multinomial(probs, 1, generator=self._gen))
