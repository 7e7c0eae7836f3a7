"""KV caches: the dense float32 cache, the INT4 (KIVI) cache, and how each is chosen and measured.

`factory.kv_factory("fp32" | "int4")` makes fresh caches; `cache` holds the protocol and the
dense cache, `int4` and `quant` the quantised one, `quality` measures what a kind costs.
"""
