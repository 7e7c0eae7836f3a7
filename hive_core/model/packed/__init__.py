"""Linear weights kept in their GGUF block form and multiplied without a float32 copy.

Two kernels, the first that runs here:

- **Our CPU kernel** (`BlockLinear`, `hive_core.native`, `tiles`): each block's weights are
  expanded to float32 in registers and multiplied by the float32 input, one call a product,
  for every block format of `FORMATS` (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K .. Q6_K). The
  result is a float32 product; only the order of the additions differs from a dense float32
  matrix product, and a row of a batch gets the same bits as alone. Matrices sit in four-row
  tiles of the GGUF's own bytes.
- **torch's int4 kernel** (`PackedLinear`, `int4`), when ours cannot be built (no compiler)
  or is turned off (``CADENCIA_NATIVE=0``): Q4_0, Q4_1 and Q8_0 only; and for the LM head
  (`RescoredHead`, `head`), requantised from any type.

Embedding tables are read row by row from the file (`RowTable`, `rows`); `memory` gives a
load's pages and heap back; `fallback` words the refusal to dequantise a matrix no kernel
takes. The implementation modules are private: import from here.
"""

from hive_core.model.packed.fallback import check_dequant, dequant_line
from hive_core.model.packed.formats import FORMATS, GROUP, PACKABLE, BlockFormat, dequantize_rows
from hive_core.model.packed.head import RESCORE_ROWS, RescoredHead, requantise_head
from hive_core.model.packed.int4 import (
    INT4_FORMATS,
    SPARE_GROUPS,
    PackedLinear,
    int4_packable,
    int4_shape,
    pack_blocks,
)
from hive_core.model.packed.matrix import (
    PACKED,
    DenseLinear,
    Matrix,
    RowSlice,
    Table,
    fuse_rows,
    packable,
    packed_matrix,
    unfused,
)
from hive_core.model.packed.memory import LIBC, release_pages, trim_heap
from hive_core.model.packed.rows import RowFile, RowTable, row_table
from hive_core.model.packed.tiles import NATIVE_QTYPE, BlockLinear, block_matrix, native_kernel

__all__ = [
    "FORMATS", "GROUP", "INT4_FORMATS", "LIBC", "NATIVE_QTYPE", "PACKABLE", "PACKED",
    "RESCORE_ROWS", "SPARE_GROUPS", "BlockFormat", "BlockLinear", "DenseLinear", "Matrix",
    "PackedLinear", "RescoredHead", "RowFile", "RowSlice", "RowTable", "Table", "block_matrix",
    "check_dequant", "dequant_line", "dequantize_rows", "fuse_rows", "int4_packable",
    "int4_shape", "native_kernel", "pack_blocks", "packable", "packed_matrix", "release_pages",
    "requantise_head", "row_table", "trim_heap", "unfused",
]
