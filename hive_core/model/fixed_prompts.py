"""The project's fixed prompts: every execution path (transformers, float32, packed, split
across stages) is checked on them, in tests and in `bench/bench_packed.py`."""

from __future__ import annotations

from hive_core.model.chat import chat_text
from hive_core.model.gguf_file import GGUFModelFile
from hive_core.model.tokenizer import GGUFTokenizer

TEXT_PROMPTS = (
    "The capital of France is",
    "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n",
    "Once upon a time, in a village of 1,234 people, numbers like 3.14159 and émigré café",
)
CHAT_PROMPT = "Name three colours of the rainbow."


def fixed_prompts(file: GGUFModelFile, tokenizer: GGUFTokenizer) -> list[str]:
    """The text prompts, then the chat prompt rendered."""
    return [*TEXT_PROMPTS, chat_text(file, tokenizer, [{"role": "user", "content": CHAT_PROMPT}])]
