"""INT4 KV cache after KIVI: keys per channel, values per token, recent tokens in 16 bits."""

from __future__ import annotations

import struct
from dataclasses import dataclass

import torch

from hive_core.model.kv.cache import (
    MAX_WIRE_BYTES,
    WIRE_VERSION,
    KVWireError,
    WireReader,
    check_magic,
    check_shape,
    dtype_code,
    dtype_from_code,
    tensor_to_bytes,
)
from hive_core.model.kv.quant import dequantise, pack_codes, quantise, unpack_codes

__all__ = ["INT4_MAGIC", "NAIVE_G32", "Int4Config", "Int4KV", "dequantise", "pack_codes",
           "quantise", "unpack_codes"]

INT4_MAGIC = b"CKV4"


@dataclass(frozen=True)
class Int4Config:
    """How keys and values are quantised; travels in the wire header."""

    bits: int = 4
    """Code width: 4 (two codes a byte) or 2 (four a byte, the low-memory variant)."""
    key_group: int = 128
    """Per-channel keys: tokens sharing one scale/min per channel. Per-token keys: channels
    sharing one scale/min per token."""
    value_group: int = 64
    """Values: channels sharing one scale/min per token (the head dim or a divisor of it)."""
    residual: int = 48
    """At least this many of the most recent tokens stay in 16 bits (KIVI's window)."""
    key_per_channel: bool = True
    """KIVI keys (per channel, over groups of tokens); False is naive per-token keys."""
    sink: int = 4
    """The first this many tokens stay in 16 bits for good: the attention sink (the first
    token, which most heads attend to) is where a quantisation error costs the most."""

    def __post_init__(self) -> None:
        if self.bits not in (2, 4):
            raise ValueError(f"bits must be 2 or 4, got {self.bits}")
        for name in ("key_group", "value_group"):
            if not 1 <= getattr(self, name) <= 0xFFFF:
                raise ValueError(f"{name} must be in 1..65535, got {getattr(self, name)}")
        for name in ("residual", "sink"):
            if not 0 <= getattr(self, name) <= 0xFFFF:
                raise ValueError(f"{name} must be in 0..65535, got {getattr(self, name)}")


    def bytes_per_value(self) -> float:
        """Long-run bytes per stored key or value element, the 16-bit windows amortised away:
        the codes plus a float16 scale and min per group (fp16 would be 2)."""
        scales = 4 / self.key_group + 4 / self.value_group
        return self.bits / 8 + scales / 2


NAIVE_G32 = Int4Config(bits=4, key_group=32, value_group=32, residual=0, key_per_channel=False,
                       sink=0)
"""The baseline KIVI improves on: keys and values both per token, 32 channels a group."""


def _residual_dtype(compute: torch.dtype) -> torch.dtype:
    # 16 bits on the wire and in RAM; bfloat16 compute keeps its own format (no loss).
    return torch.bfloat16 if compute == torch.bfloat16 else torch.float16


class _Buf:
    """A [heads, capacity, width] tensor grown by doubling; rows [0, n) are live."""

    def __init__(self, heads: int, width: int, dtype: torch.dtype) -> None:
        self.t = torch.empty(heads, 0, width, dtype=dtype)
        self.n = 0

    def push(self, x: torch.Tensor) -> None:
        need = self.n + x.shape[1]
        if need > self.t.shape[1]:
            grown = torch.empty(
                self.t.shape[0], max(need, 2 * self.t.shape[1], 16), self.t.shape[2],
                dtype=self.t.dtype,
            )
            grown[:, :self.n] = self.t[:, :self.n]
            self.t = grown
        self.t[:, self.n:need] = x
        self.n = need

    def view(self) -> torch.Tensor:
        return self.t[:, :self.n]

    def drop_front(self, m: int) -> None:
        rest = self.n - m
        if rest:
            self.t[:, :rest] = self.t[:, m:self.n].clone()
        self.n = rest

    def nbytes(self) -> int:
        return self.t.shape[0] * self.n * self.t.shape[2] * self.t.element_size()


class _Stream:
    """The keys or the values of one cache: codes, scales/mins, 16-bit tail, dequant cache.

    ``per_channel`` streams (KIVI keys) quantise whole groups of ``group`` tokens with one
    scale/min per channel, so the tail holds between ``residual`` and
    ``residual + group - 1`` tokens. Per-token streams (values) quantise each token on its
    own over groups of ``group`` channels, so the tail holds exactly ``residual`` tokens.
    Group sizes are remembered one by one: truncating into a group keeps its scale and the
    surviving codes, so no token is ever quantised twice.
    """

    def __init__(self, per_channel: bool, group: int, residual: int, bits: int, sink: int,
                 heads: int, dim: int, dtype: torch.dtype) -> None:
        self.per_channel, self.group, self.residual, self.bits = per_channel, group, residual, bits
        self.sink = sink
        self.heads, self.dim, self.dtype = heads, dim, dtype
        nscale = dim if per_channel else dim // group
        self.codes = _Buf(heads, dim * bits // 8, torch.uint8)
        self.scale = _Buf(heads, nscale, torch.float16)
        self.mn = _Buf(heads, nscale, torch.float16)
        self.sizes: list[int] = []  # tokens in each per-channel group
        self.head = _Buf(heads, dim, _residual_dtype(dtype))  # the sink, kept in 16 bits
        self.tail = _Buf(heads, dim, _residual_dtype(dtype))
        self.out = _Buf(heads, dim, dtype)  # dequantised prefix + tail, in compute dtype

    @property
    def n_quant(self) -> int:
        return self.codes.n

    def __len__(self) -> int:
        return self.head.n + self.codes.n + self.tail.n

    def append(self, x: torch.Tensor) -> None:
        x16 = x.to(self.tail.t.dtype)
        self.out.push(x16)
        room = self.sink - self.head.n
        if room > 0:
            self.head.push(x16[:, :room])
            x16 = x16[:, room:]
            if x16.shape[1] == 0:
                return
        self.tail.push(x16)
        if self.per_channel:
            while self.tail.n >= self.residual + self.group:
                self._flush(self.group)
        elif self.tail.n > self.residual:
            self._flush(self.tail.n - self.residual)

    def _flush(self, m: int) -> None:
        x = self.tail.t[:, :m].float()
        if self.per_channel:
            codes, sc, mn = quantise(x, 1, self.bits)
            self.sizes.append(m)
            deq = dequantise(codes, sc, mn)
        else:
            xg = x.reshape(self.heads, m, self.dim // self.group, self.group)
            codes, sc, mn = quantise(xg, 3, self.bits)
            deq = dequantise(codes, sc, mn).reshape(self.heads, m, self.dim)
            codes = codes.reshape(self.heads, m, self.dim)
            sc, mn = sc.squeeze(3), mn.squeeze(3)
        start = self.head.n + self.codes.n
        self.codes.push(pack_codes(codes, self.bits))
        self.scale.push(sc)
        self.mn.push(mn)
        self.tail.drop_front(m)
        self.out.t[:, start:start + m] = deq

    def dequantised_prefix(self) -> torch.Tensor:
        """Dequantise every stored code afresh (the slow path and the wire rebuild)."""
        codes = unpack_codes(self.codes.view(), self.bits)
        if self.per_channel:
            reps = torch.tensor(self.sizes, dtype=torch.long)
            sc = self.scale.view().repeat_interleave(reps, dim=1)
            mn = self.mn.view().repeat_interleave(reps, dim=1)
            return dequantise(codes, sc, mn)
        n = codes.shape[1]
        shape = (self.heads, n, self.dim // self.group, self.group)
        deq = dequantise(codes.reshape(shape), self.scale.view().unsqueeze(3),
                         self.mn.view().unsqueeze(3))
        return deq.reshape(self.heads, n, self.dim)

    def rebuild_out(self) -> None:
        self.out = _Buf(self.heads, self.dim, self.dtype)
        self.out.push(self.head.view())
        self.out.push(self.dequantised_prefix().to(self.dtype))
        self.out.push(self.tail.view())

    def truncate(self, length: int) -> None:
        if length >= len(self):
            return
        self.out.n = length
        if length <= self.head.n:
            self.head.n = length
            length = 0  # drop every code and the tail below
        else:
            length -= self.head.n
        if length >= self.codes.n:
            self.tail.n = length - self.codes.n
            return
        self.tail.n = 0
        self.codes.n = length
        if not self.per_channel:
            self.scale.n = self.mn.n = length
            return
        kept, total = 0, 0
        for size in self.sizes:
            if total >= length:
                break
            kept += 1
            total += size
        self.sizes = self.sizes[:kept]
        if total > length:
            self.sizes[-1] -= total - length
        self.scale.n = self.mn.n = kept

    def nbytes(self) -> int:
        return sum(b.nbytes() for b in (self.head, self.codes, self.scale, self.mn, self.tail))

    def ram_bytes(self) -> int:
        bufs = (self.head, self.codes, self.scale, self.mn, self.tail, self.out)
        return sum(b.t.numel() * b.t.element_size() for b in bufs)


_HEADER = struct.Struct("<4sHBBBHHHHIII")
_STREAM = struct.Struct("<II")


class Int4KV:
    """Quantised per-layer cache (KIVI): 2- or 4-bit codes with float16 scale and min.

    `append` returns views into a dequantised copy kept in the compute dtype, so a decode
    step dequantises only the group it completes; the views are valid until the next
    `append` or `truncate`. `nbytes` counts what is stored and sent (codes, scales, mins,
    16-bit tail); `ram_bytes` adds that dequantised copy and spare capacity. With
    ``cache_dequantised=False`` no copy is kept and every `append` dequantises the whole
    prefix again (less RAM, more time).
    """

    kind = "int4"

    def __init__(self, config: Int4Config | None = None, *,
                 cache_dequantised: bool = True) -> None:
        self.config = config or Int4Config()
        self.cache_dequantised = cache_dequantised
        self._k: _Stream | None = None
        self._v: _Stream | None = None

    def _start(self, heads: int, dim: int, dtype: torch.dtype) -> tuple[_Stream, _Stream]:
        c = self.config
        per = 8 // c.bits
        # A channel group never spans heads: a head narrower than the group is one group.
        v_group = min(c.value_group, dim)
        k_group = c.key_group if c.key_per_channel else min(c.key_group, dim)
        if dim % per or dim % v_group or (not c.key_per_channel and dim % k_group):
            raise ValueError(
                f"head_dim {dim} must be a multiple of {per} codes a byte and of the channel "
                f"groups (value_group={c.value_group}, key_group={c.key_group})"
            )
        dtype_code(dtype)  # rejects dtypes without a wire form
        self._k = _Stream(c.key_per_channel, k_group, c.residual, c.bits, c.sink,
                          heads, dim, dtype)
        self._v = _Stream(False, v_group, c.residual, c.bits, c.sink, heads, dim, dtype)
        return self._k, self._v

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if k.dim() != 3 or k.shape != v.shape or k.dtype != v.dtype:
            raise ValueError(f"k and v must be equal [heads, seq, head_dim], got "
                             f"{tuple(k.shape)} {k.dtype} and {tuple(v.shape)} {v.dtype}")
        if self._k is None or self._v is None:
            ks, vs = self._start(k.shape[0], k.shape[2], k.dtype)
        else:
            ks, vs = self._k, self._v
            if (k.shape[0], k.shape[2], k.dtype) != (ks.heads, ks.dim, ks.dtype):
                raise ValueError(f"k of shape {tuple(k.shape)} {k.dtype} does not match the "
                                 f"cache's [{ks.heads}, *, {ks.dim}] {ks.dtype}")
        ks.append(k)
        vs.append(v)
        if self.cache_dequantised:
            return ks.out.view(), vs.out.view()
        return self._fresh(ks), self._fresh(vs)

    @staticmethod
    def _fresh(s: _Stream) -> torch.Tensor:
        parts = (s.head.view(), s.dequantised_prefix(), s.tail.view())
        return torch.cat([p.to(s.dtype) for p in parts], dim=1)

    def __len__(self) -> int:
        return 0 if self._k is None else len(self._k)

    def truncate(self, length: int) -> None:
        if length < 0:
            raise ValueError(f"truncate length must be >= 0, got {length}")
        if self._k is not None and self._v is not None:
            self._k.truncate(length)
            self._v.truncate(length)

    def nbytes(self) -> int:
        if self._k is None or self._v is None:
            return 0
        return self._k.nbytes() + self._v.nbytes()

    def ram_bytes(self) -> int:
        """Bytes of RAM held, including the dequantised copy and unused capacity."""
        if self._k is None or self._v is None:
            return 0
        return self._k.ram_bytes() + self._v.ram_bytes()

    def to_bytes(self) -> bytes:
        """Header (magic, version, dtype, config, shape) then each stream's raw arrays."""
        c = self.config
        ks, vs = self._k, self._v
        if ks is None or vs is None:
            shape: tuple[int, int, int, int] = (0, 0, 0, 0)
        else:
            shape = (dtype_code(ks.dtype), ks.heads, ks.dim, len(ks))
        parts = [_HEADER.pack(INT4_MAGIC, WIRE_VERSION, shape[0], c.bits, int(c.key_per_channel),
                              c.key_group, c.value_group, c.residual, c.sink, *shape[1:])]
        for s in (ks, vs):
            if s is None:
                continue
            n_groups = len(s.sizes) if s.per_channel else s.n_quant
            parts.append(_STREAM.pack(s.n_quant, n_groups))
            if s.per_channel:
                parts.append(struct.pack(f"<{n_groups}H", *s.sizes))
            bufs = (s.head, s.codes, s.scale, s.mn, s.tail)
            parts += [tensor_to_bytes(b.view()) for b in bufs]
        return b"".join(parts)

    @classmethod
    def from_bytes(cls, data: bytes, *, max_bytes: int = MAX_WIRE_BYTES,
                   cache_dequantised: bool = True) -> Int4KV:
        """Inverse of `to_bytes`; raises `KVWireError` on anything malformed or over size."""
        reader = WireReader(data, max_bytes)
        (magic, version, code, bits, per_channel, key_group, value_group, residual, sink,
         heads, dim, length) = reader.unpack(_HEADER)
        check_magic(magic, version, INT4_MAGIC)
        if per_channel not in (0, 1):
            raise KVWireError(f"key_per_channel flag must be 0 or 1, got {per_channel}")
        try:
            config = Int4Config(bits, key_group, value_group, residual, bool(per_channel), sink)
        except ValueError as exc:
            raise KVWireError(f"bad INT4 config: {exc}") from None
        cache = cls(config, cache_dequantised=cache_dequantised)
        if heads == dim == length == code == 0:
            reader.finish()
            return cache
        check_shape(heads, length, dim)
        dtype = dtype_from_code(code)
        try:
            streams = cache._start(heads, dim, dtype)
        except ValueError as exc:
            raise KVWireError(str(exc)) from None
        for s in streams:
            _read_stream(reader, s, length)
        reader.finish()
        return cache


def _read_stream(reader: WireReader, s: _Stream, length: int) -> None:
    """Fill one stream from the blob, checking every count against the header."""
    n_quant, n_groups = reader.unpack(_STREAM)
    assert isinstance(n_quant, int) and isinstance(n_groups, int)
    n_head = min(length, s.sink)  # the sink fills first, so it is full whenever codes exist
    n_tail = length - n_head - n_quant
    if n_tail < 0:
        raise KVWireError(f"{n_quant} quantised positions exceed the length {length}")
    max_tail = s.residual + s.group - 1 if s.per_channel else s.residual
    if n_tail > max_tail:
        raise KVWireError(f"16-bit tail of {n_tail} positions exceeds the window {max_tail}")
    if s.per_channel:
        if not (n_quant + s.group - 1) // s.group <= n_groups <= n_quant:
            raise KVWireError(f"{n_groups} key groups cannot hold {n_quant} positions")
        sizes = list(struct.unpack(f"<{n_groups}H", reader.take(2 * n_groups)))
        if sum(sizes) != n_quant or any(not 1 <= g <= s.group for g in sizes):
            raise KVWireError(f"key group sizes do not add up to {n_quant} in 1..{s.group}")
        s.sizes = sizes
    elif n_groups != n_quant:
        raise KVWireError(f"per-token stream has {n_groups} scale rows for {n_quant} positions")
    h = s.heads
    head = reader.tensor(s.head.t.dtype, (h, n_head, s.dim))
    if not bool(torch.isfinite(head).all()):
        raise KVWireError("non-finite value in the 16-bit sink of an INT4 KV blob")
    s.head.push(head)
    s.codes.push(reader.tensor(torch.uint8, (h, n_quant, s.codes.t.shape[2])))
    for buf in (s.scale, s.mn):
        t = reader.tensor(torch.float16, (h, n_groups, buf.t.shape[2]))
        if not bool(torch.isfinite(t).all()):
            raise KVWireError("non-finite scale or min in INT4 KV blob")
        buf.push(t)
    tail = reader.tensor(s.tail.t.dtype, (h, n_tail, s.dim))
    if not bool(torch.isfinite(tail).all()):
        raise KVWireError("non-finite value in the 16-bit tail of an INT4 KV blob")
    s.tail.push(tail)
    s.rebuild_out()
