"""`cadencia generate`: run the model locally on one prompt and stream the answer."""

from __future__ import annotations

import argparse
import json
import sys
import time

from cadencia.commands._prompt_flags import StreamedText, add_prompt_arguments, check_room
from hive_core.mesh.runner import number
from hive_core.model.modes import DEFAULT_WEIGHTS, WEIGHT_MODES

NAME = "generate"
HELP = "run the model locally on a prompt and stream the answer"
DESCRIPTION = (
    "Run the llama-architecture GGUF model on this device. The prompt goes through the "
    "model's chat template as one user message unless --raw. Greedy unless --temperature > 0. "
    "The model is --model PATH, else $CADENCIA_MODEL, else the bundled SmolLM2-135M-Instruct."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_prompt_arguments(parser)
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32",
                        help="compute dtype (default float32)")
    parser.add_argument("--weights", choices=WEIGHT_MODES, default=DEFAULT_WEIGHTS,
                        help="how matrices are held: packed (GGUF blocks multiplied where the "
                        "file holds them; several times faster), fp32 (dequantised) or bf16 "
                        f"(default {DEFAULT_WEIGHTS})")
    from hive_core.exec.serve import add_allow_dequant_argument

    add_allow_dequant_argument(parser)
    parser.add_argument("--kv", choices=("fp32", "int4"), default="fp32",
                        help="KV cache: full precision or INT4 (default fp32)")
    parser.add_argument("--threads", type=number(int, 1, 1024), default=None, metavar="N",
                        help="torch threads (default: physical cores)")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object at the end instead of streaming text")


def run(args: argparse.Namespace) -> int:
    from hive_core.model.errors import ModelError, PromptError

    if not args.prompt.strip():
        raise PromptError("the prompt is empty")
    if args.max_new_tokens < 1:
        raise ModelError(f"--max-new-tokens must be at least 1, got {args.max_new_tokens}")
    if args.threads is not None and args.threads < 1:
        raise ModelError(f"--threads must be at least 1, got {args.threads}")

    from hive_core.model.chat import prompt_ids as encode_prompt
    from hive_core.model.executor import DTYPES
    from hive_core.model.generation import generate
    from hive_core.model.gguf_file import GGUFModelFile
    from hive_core.model.kv.factory import kv_factory
    from hive_core.model.locate import resolve_model_path
    from hive_core.model.packed_run import chunked, prepare_compute
    from hive_core.model.pipeline import LocalPipeline
    from hive_core.model.sampling import Sampler
    from hive_core.model.tokenizer import GGUFTokenizer

    path = resolve_model_path(args.model)
    t0 = time.perf_counter()
    model = GGUFModelFile(path)  # the header only: refuse a prompt that cannot fit first
    tokenizer = GGUFTokenizer(model)
    prompt_ids = encode_prompt(model, tokenizer, args.prompt, raw=args.raw)
    check_room(args.max_new_tokens, len(prompt_ids), model.config.context_length)
    prepare_compute(args.threads)
    kv = kv_factory(args.kv)  # fail before loading when INT4 is unavailable
    sampler = Sampler(args.temperature, args.top_p, args.seed)
    from hive_core.base.stage import Stage
    from hive_core.model.packed import check_fits
    from hive_core.model.weights import check_loadable, weights_need

    # What the load would refuse, and weights this machine cannot hold: refused before it.
    check_loadable(model, [Stage(0, model.config.n_layers)], head=True, mode=args.weights,
                   allow_dequant=args.allow_dequant)
    check_fits(weights_need(path, range(model.config.n_layers), args.weights, head=True),
               f"{path.name}'s {model.config.n_layers} layers and head ({args.weights} weights)")
    print(f"loading {path.name} ...", file=sys.stderr, flush=True)
    verb = "mapping" if args.weights == "packed" else "dequantising"

    def progress(done: int, total: int) -> None:
        if sys.stderr.isatty() or done == total:
            end = "\n" if done == total else ""
            print(f"\r{verb} tensors {done}/{total}", end=end, file=sys.stderr, flush=True)

    pipeline = LocalPipeline.load_single(model, dtype=DTYPES[args.dtype], progress=progress,
                                         weights=args.weights, allow_dequant=args.allow_dequant)
    print(f"model ready in {time.perf_counter() - t0:.1f}s ({model.config.n_layers} layers, "
          f"{len(prompt_ids)} prompt tokens)", file=sys.stderr, flush=True)

    session = pipeline.new_session(kv)
    on_token = StreamedText(tokenizer, quiet=args.json)
    result = generate(
        chunked(session.forward), prompt_ids, max_new_tokens=args.max_new_tokens,
        context_length=model.config.context_length, sampler=sampler,
        stop_ids=tokenizer.stop_ids, on_token=on_token,
    )
    text_out = on_token.finish()
    if args.json:
        print(json.dumps({
            "text": text_out,
            "prompt_ids": result.prompt_ids,
            "new_ids": result.new_ids,
            "ttft_s": round(result.ttft_s, 6),
            "tokens_per_s": round(result.tokens_per_s, 3),
            "kv": session.kv_kind,
            "weights": args.weights,
        }))
    else:
        sys.stdout.write(on_token.tail + "\n")
        sys.stdout.flush()
        print(f"{len(result.new_ids)} tokens, first after {result.ttft_s:.2f}s, "
              f"{result.tokens_per_s:.1f} tokens/s", file=sys.stderr)
    return 0
