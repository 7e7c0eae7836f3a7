"""A llama-architecture transformer loaded from GGUF, as separable shard ops."""
