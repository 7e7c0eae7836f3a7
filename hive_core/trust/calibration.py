"""Measured honest per-row differences between kernel families (``python -m bench calibrate``).

Each figure is the largest per-row relative L2 difference the bench saw between honest
outputs of two kernel classes of those families: MEASURED between two classes running the
same steps (replicas compared step by step), AUDIT between a class's steps and a one-prefill
recomputation of the same inputs in any class (end-of-session audits). The tolerances allow
SAFETY times them (`hive_core.trust.kernels`).
Measured on 4 prompts, 238 rows each, in 24 classes: bf16/torch/AVX2/t1/2.13.0,
bf16/torch/AVX2/t2/2.13.0, bf16/torch/AVX512/t1/2.13.0, bf16/torch/AVX512/t2/2.13.0,
fp32/torch/AVX2/t1/2.13.0, fp32/torch/AVX2/t2/2.13.0, fp32/torch/AVX512/t1/2.13.0,
fp32/torch/AVX512/t2/2.13.0, packed/avx2/AVX2/t1/2.13.0, packed/avx2/AVX2/t2/2.13.0,
packed/avx2/AVX512/t1/2.13.0, packed/avx2/AVX512/t2/2.13.0, packed/avx512/AVX2/t1/2.13.0,
packed/avx512/AVX2/t2/2.13.0, packed/avx512/AVX512/t1/2.13.0,
packed/avx512/AVX512/t2/2.13.0, packed/int4/AVX2/t1/2.13.0, packed/int4/AVX2/t2/2.13.0,
packed/int4/AVX512/t1/2.13.0, packed/int4/AVX512/t2/2.13.0, packed/portable/AVX2/t1/2.13.0,
packed/portable/AVX2/t2/2.13.0, packed/portable/AVX512/t1/2.13.0,
packed/portable/AVX512/t2/2.13.0.
"""

from __future__ import annotations

SAFETY = 8.0  # tolerance = SAFETY x the largest honest difference measured
MEASURED: dict[tuple[str, str], float] = {
    ('bf16', 'bf16'): 3.45e-02,
    ('f32', 'f32'): 1.01e-05,
    ('f32', 'int4'): 1.36e-04,
    ('int4', 'int4'): 7.24e-05,
}
AUDIT: dict[tuple[str, str], float] = {
    ('bf16', 'bf16'): 3.45e-02,
    ('f32', 'f32'): 1.01e-05,
    ('f32', 'int4'): 1.48e-04,
    ('int4', 'int4'): 8.01e-05,
}
