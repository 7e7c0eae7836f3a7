"""Pure helpers of the quantised KV cache: bit packing and asymmetric min/max quantisation."""

from __future__ import annotations

import torch

F16_MAX = 65504.0


def pack_codes(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Pack uint8 codes (< 2**bits) along the last dim, lowest code in the low bits."""
    per = 8 // bits
    c = codes.reshape(*codes.shape[:-1], codes.shape[-1] // per, per)
    out = c[..., 0].clone()
    for i in range(1, per):
        out |= c[..., i] << (bits * i)
    return out


def unpack_codes(packed: torch.Tensor, bits: int) -> torch.Tensor:
    """Inverse of `pack_codes`."""
    per = 8 // bits
    shifts = torch.arange(0, 8, bits, dtype=torch.uint8)
    c = (packed.unsqueeze(-1) >> shifts) & ((1 << bits) - 1)
    return c.reshape(*packed.shape[:-1], packed.shape[-1] * per)


def quantise(x: torch.Tensor, dim: int, bits: int) -> tuple[torch.Tensor, ...]:
    """Asymmetric min/max quantisation of float32 `x` along `dim`: (codes, scale, min).

    Scale and min are rounded to float16 first and the codes computed against the rounded
    values, so that dequantising what is stored is exactly what the cache returns.
    """
    levels = (1 << bits) - 1
    mn = x.amin(dim=dim, keepdim=True).clamp(-F16_MAX, F16_MAX).to(torch.float16)
    mx = x.amax(dim=dim, keepdim=True)
    sc = ((mx - mn.float()) / levels).clamp(0, F16_MAX).to(torch.float16)
    scf = sc.float()
    q = torch.where(scf > 0, (x - mn.float()) / scf, 0.0)
    codes = q.round_().clamp_(0, levels).to(torch.uint8)
    return codes, sc, mn


def dequantise(codes: torch.Tensor, scale: torch.Tensor, mn: torch.Tensor) -> torch.Tensor:
    """float32 `min + code * scale`, broadcasting scale/min; one fixed op order everywhere."""
    return codes.float().mul_(scale.float()).add_(mn.float())
