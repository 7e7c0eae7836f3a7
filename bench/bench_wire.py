"""What a 16-bit wire costs in accuracy: SmolLM2 run as a hive would run it (the asker's first
and last layers, 4 stages between), its hidden states rounded to the wire's dtype at every hop,
and the final hidden state (before the head) compared per row with the float32 wire's, against
the replica tolerances `hive_core.trust` calibrated; and whether greedy decoding still gives the
same tokens. `python -m bench.bench_wire [--quick] [--model PATH] [--weights packed|fp32]`.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch

from hive_core.base.stage import Stage, even_stages
from hive_core.exec.kernel import kernel_class
from hive_core.exec.wire import WIRE_NAMES, round_wire
from hive_core.model.executor import ShardExecutor
from hive_core.model.gguf_file import GGUFModelFile
from hive_core.model.kv.factory import kv_factory
from hive_core.model.locate import resolve_model_path
from hive_core.model.tokenizer import GGUFTokenizer
from hive_core.trust.compare import row_errors
from hive_core.trust.kernels import row_tolerance

PROMPT = ("<|im_start|>user\nExplain in two sentences why the sky is blue and the sunset "
          "red.<|im_end|>\n<|im_start|>assistant\n")


def run(ex: ShardExecutor, stages: list[Stage], ids: list[int], new: int,
        wire: str) -> tuple[np.ndarray, list[int]]:
    """Final hidden rows of every position (prefill then greedy decode), and the tokens."""
    dtype = WIRE_NAMES[wire]
    caches = ex.new_caches(kv_factory("fp32"))
    rows, out, pos, step = [], [], 0, list(ids)
    with torch.inference_mode():
        for _ in range(new + 1):
            h = ex.embed(torch.tensor(step, dtype=torch.long))
            for k, stage in enumerate(stages):
                h = ex.run_stage(stage, h, pos, {n: caches[n] for n in stage.layers})
                if k < len(stages) - 1:  # every hop but the tail's (it stays on the asker)
                    h = torch.from_numpy(round_wire(h.numpy(), dtype).copy())
            rows.append(h.numpy().copy())
            token = int(ex.head(h[-1:]).argmax())
            pos += len(step)
            step = [token]
            out.append(token)
    return np.concatenate(rows), out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_wire", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="8 new tokens instead of 32")
    parser.add_argument("--model", default=None, help="GGUF file (default: the bundled SmolLM2)")
    parser.add_argument("--weights", default="packed", choices=("packed", "fp32"))
    args = parser.parse_args(argv)
    file = GGUFModelFile(resolve_model_path(args.model))
    n = file.config.n_layers
    # The asker keeps layer 0 and the last layer; 4 stages serve the rest (5 rounded hops).
    stages = [Stage(0, 1), *(Stage(s.start + 1, s.end + 1) for s in even_stages(n - 2, 4)),
              Stage(n - 1, n)]
    t0 = time.perf_counter()
    ex = ShardExecutor.load(file, stages, embed=True, head=True, weights=args.weights)
    ids = GGUFTokenizer(file).encode(PROMPT)
    new = 8 if args.quick else 32
    ref, ref_tokens = run(ex, stages, ids, new, "fp32")
    mine = kernel_class(args.weights, None)
    across = row_tolerance(kernel_class("packed", None), kernel_class("fp32", None))
    print(f"{file.path.name}, {args.weights} weights ({mine}), {len(ids)}-token prompt + {new} "
          f"greedy tokens, hops rounded after layers "
          f"{', '.join(str(s.end) for s in stages[:-1])}; loaded in {time.perf_counter() - t0:.1f} s\n")
    print(f"Replica tolerance (per row, relative L2): between two f32-family classes "
          f"{across:.1e}; one class: bit for bit (0)\n")
    print("| wire | bytes/row | final hidden: max row error | median | rows over tolerance "
          "| greedy tokens equal |")
    print("| --- | --- | --- | --- | --- | --- |")
    hidden = file.config.hidden
    for wire in ("fp32", "fp16", "bf16"):
        rows, tokens = (ref, ref_tokens) if wire == "fp32" else run(ex, stages, ids, new, wire)
        err = row_errors(rows, ref)
        over = int((err > across).sum())
        size = 4 if wire == "fp32" else 2
        print(f"| {wire} | {hidden * size} | {err.max():.2e} | {np.median(err):.2e} | "
              f"{over} of {len(err)} | {tokens == ref_tokens} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
