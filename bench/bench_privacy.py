"""Privacy: what a node can read back from the hidden states it is given (an inversion attack).

Run: `.venv/bin/python -m bench.bench_privacy [--quick]`. Prints markdown tables.

The attacker is a serving node that holds the public model. It runs the model itself over
public text (Python's own documentation, `pydoc_data`: 30,000 tokens, 8,000 with --quick)
and fits a ridge
regression from the hidden states a node at that place in the route receives to the token
embeddings; then, for each state it is sent, it takes the vocabulary entry nearest to the
regression's output. Against the asker's prompt, for 0..4 layers kept on the asker (the
first node receives the output of the last local layer; 0: raw embeddings), it reports how
many prompt tokens it recovers, and how many of the private ones (a PIN, a name).

The last node of the route sees what it returns. With no layer kept on the asker after it,
that is the final hidden state: the public head reads the answer off it. With the last 1 or 2
layers kept local, the table reports how many answer tokens the last node still recovers,
by the head applied to what it returns and by a ridge regression (fitted the same way) from
what it returns to the final state, then the head.
"""

from __future__ import annotations

import argparse
import pydoc_data.topics
import sys
import time

import numpy as np
import torch

from hive_core.base.stage import Stage
from hive_core.model.chat import prompt_ids
from hive_core.model.executor import ShardExecutor
from hive_core.model.gguf_file import GGUFModelFile
from hive_core.model.kv.factory import kv_factory
from hive_core.model.locate import resolve_model_path
from hive_core.model.tokenizer import GGUFTokenizer

PROMPTS = ("My PIN is 4821 and my name is Ada Lovelace. Please remember both.",
           "I live at 12 Baker Street and my password is tulip-seven. Is that safe?")
SECRETS = ("4821", "Ada", "Lovelace", "12", "Baker", "tulip", "seven")
CHUNK = 128


def corpus(tok: GGUFTokenizer, n_tokens: int) -> list[list[int]]:
    text = "\n".join(pydoc_data.topics.topics[k] for k in sorted(pydoc_data.topics.topics))
    ids = tok.encode(text)[:n_tokens]
    return [ids[i:i + CHUNK] for i in range(0, len(ids) - CHUNK + 1, CHUNK)]


def states(ex: ShardExecutor, ids: list[int], layers: list[int]) -> dict[int, np.ndarray]:
    """Hidden states after each of `layers` layers (0: the embeddings) for one sequence."""
    caches = ex.new_caches(kv_factory("fp32"))
    out: dict[int, np.ndarray] = {}
    with torch.inference_mode():
        h = ex.embed(torch.tensor(ids))
        if 0 in layers:
            out[0] = h.numpy().copy()
        for layer in range(max(layers)):
            h = ex.run_stage(Stage(layer, layer + 1), h, 0, caches)
            if layer + 1 in layers:
                out[layer + 1] = h.numpy().copy()
    return out


def ridge(x: np.ndarray, y: np.ndarray, lam: float = 1e-3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Least squares with a ridge of `lam` (relative to the features' scale); returns the
    standardisation and the weights."""
    mu, sd = x.mean(0), x.std(0) + 1e-6
    z = (x - mu) / sd
    a = z.T @ z
    w = np.linalg.solve(a + lam * np.trace(a) / a.shape[0] * np.eye(a.shape[0]), z.T @ y)
    return mu, sd, w


def nearest(pred: np.ndarray, table: np.ndarray) -> np.ndarray:
    p = pred / (np.linalg.norm(pred, axis=1, keepdims=True) + 1e-9)
    t = table / (np.linalg.norm(table, axis=1, keepdims=True) + 1e-9)
    return np.argmax(p @ t.T, axis=1)


def first_node(ex: ShardExecutor, tok: GGUFTokenizer, file: GGUFModelFile,
               train: list[list[int]], table: np.ndarray) -> list[tuple[int, int, int, int, int]]:
    layers = [0, 1, 2, 3, 4]
    xs: dict[int, list[np.ndarray]] = {k: [] for k in layers}
    ys: list[np.ndarray] = []
    for chunk in train:
        st = states(ex, chunk, layers)
        for k in layers:
            xs[k].append(st[k])
        ys.append(table[chunk])
    y = np.concatenate(ys)
    prompts = [prompt_ids(file, tok, p) for p in PROMPTS]
    secret = {t for s in SECRETS for t in tok.encode(" " + s) + tok.encode(s)}
    rows = []
    for k in layers:
        if k == 0:
            fit = None
        else:
            fit = ridge(np.concatenate(xs[k]), y)
        got = total = sec_got = sec_total = 0
        for ids in prompts:
            h = states(ex, ids, [k])[k]
            pred = h if fit is None else ((h - fit[0]) / fit[1]) @ fit[2]
            guess = nearest(pred, table)
            hit = guess == np.array(ids)
            got += int(hit.sum())
            total += len(ids)
            mask = np.array([t in secret for t in ids])
            sec_got += int(hit[mask].sum())
            sec_total += int(mask.sum())
        rows.append((k, got, total, sec_got, sec_total))
    return rows


def last_node(ex: ShardExecutor, tok: GGUFTokenizer, file: GGUFModelFile,
              train: list[list[int]], n_new: int) -> list[tuple[int, int, int, int]]:
    n = file.config.n_layers
    tails = [0, 1, 2]
    xs: dict[int, list[np.ndarray]] = {t: [] for t in tails}
    for chunk in train:
        st = states(ex, chunk, [n - t for t in tails])
        for t in tails:
            xs[t].append(st[n - t])
    fits = {t: ridge(np.concatenate(xs[t]), np.concatenate(xs[0])) for t in tails if t}
    rows = []
    for t in tails:
        direct = mapped = total = 0
        for text in PROMPTS:
            ids = prompt_ids(file, tok, text)
            caches = ex.new_caches(kv_factory("fp32"))
            pos, feed = 0, ids
            with torch.inference_mode():
                for _ in range(n_new):
                    h = ex.run_stage(Stage(0, n - t), ex.embed(torch.tensor(feed)), pos, caches)
                    seen = h[-1:]  # what the last remote node returns for the next token
                    final = ex.run_stage(Stage(n - t, n), h, pos, caches) if t else h
                    token = int(ex.head(final[-1:]).argmax())
                    direct += int(ex.head(seen).argmax()) == token
                    if t:
                        mu, sd, w = fits[t]
                        guess = torch.from_numpy((((seen.numpy() - mu) / sd) @ w).astype("<f4"))
                        mapped += int(ex.head(guess).argmax()) == token
                    else:
                        mapped += 1
                    pos += len(feed)
                    feed = [token]
                    total += 1
        rows.append((t, direct, mapped, total))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smaller public corpus")
    parser.add_argument("--tokens", type=int, default=30_000,
                        help="public-text tokens the attacker fits on (default 30,000)")
    parser.add_argument("--model", default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    file = GGUFModelFile(resolve_model_path(args.model))
    tok = GGUFTokenizer(file)
    ex = ShardExecutor.load(file, [Stage(0, file.config.n_layers)], embed=True, head=True)
    table = ex.weights.embedding
    table = np.asarray(table.rows(np.arange(file.config.vocab_size)) if hasattr(table, "rows")
                       else table, dtype=np.float32)
    t0 = time.perf_counter()
    train = corpus(tok, 8_000 if args.quick else args.tokens)
    print(f"## Inversion from the states the first node receives (ridge on "
          f"{len(train) * CHUNK} tokens of public text, {len(PROMPTS)} prompts)\n")
    print("| layers kept on the asker | prompt tokens recovered | private tokens recovered |")
    print("|---|---|---|")
    for k, got, total, sg, st in first_node(ex, tok, file, train, table):
        print(f"| {k} | {got}/{total} ({got / total:.0%}) | {sg}/{st} |")
    n_new = 8 if args.quick else 24
    print(f"\n## The answer as the last node sees it ({n_new} greedy tokens per prompt)\n")
    print("| last layers kept on the asker | answer tokens: head on what it returns | "
          "ridge to the final state, then head |")
    print("|---|---|---|")
    for t, direct, mapped, total in last_node(ex, tok, file, train[: len(train) // 2], n_new):
        print(f"| {t} | {direct}/{total} ({direct / total:.0%}) | {mapped}/{total} "
              f"({mapped / total:.0%}) |")
    print(f"\n{time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
