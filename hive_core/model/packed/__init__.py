"""Linear weights kept in their GGUF block form and multiplied without a float32 copy.

Two kernels, the first that runs here:

- **Our CPU kernel** (`BlockLinear`, `hive_core.native`, `blocks`): each block's weights are
  expanded to float32 in registers and multiplied by the float32 input, one call a product,
  for every block format of `FORMATS` (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K .. Q6_K). The
  result is a float32 product; only the order of the additions differs from a dense float32
  matrix product, and a row of a batch gets the same bits as alone. Matrices stay where the
  model file holds them (`mapped`: one memory map, rows picked by byte offset): a load
  copies nothing, and a process holds the file pages of the layers it runs.
- **torch's int4 kernel** (`PackedLinear`, `int4`), when ours cannot be built (no compiler)
  or is turned off (``CADENCIA_NATIVE=0``): Q4_0, Q4_1 and Q8_0 only; and for a Q8_0 LM head
  (`RescoredHead`, `head`; `head_matrix` chooses), requantised.

Embedding tables are read row by row from the file (`RowTable`, `rows`); `memory` gives a
load's pages and heap back; `fallback` words the refusal to dequantise a matrix no kernel
takes. The implementation modules are private: import from here.
"""

from hive_core.model.packed.blocks import (
    NATIVE_QTYPE,
    BlockLinear,
    block_matrix,
    joined_matrix,
    native_kernel,
)
from hive_core.model.packed.fallback import check_dequant, dequant_line
from hive_core.model.packed.formats import (
    FORMATS,
    GROUP,
    PACKABLE,
    BlockFormat,
    dequantize_rows,
    row_bytes,
)
from hive_core.model.packed.head import RESCORE_ROWS, RescoredHead, requantise_head
from hive_core.model.packed.int4 import (
    INT4_FORMATS,
    SPARE_GROUPS,
    PackedLinear,
    int4_packable,
    int4_shape,
    pack_blocks,
)
from hive_core.model.packed.mapped import file_bytes, file_of, populate
from hive_core.model.packed.matrix import (
    PACKED,
    RESCORED_HEADS,
    DenseLinear,
    Matrix,
    RowSlice,
    Table,
    fuse_rows,
    head_matrix,
    held_bytes,
    packable,
    packed_matrix,
    unfused,
)
from hive_core.model.packed.memory import (
    LIBC,
    NotEnoughMemoryError,
    check_fits,
    release_pages,
    trim_heap,
)
from hive_core.model.packed.rows import RowFile, RowTable, row_table

__all__ = [
    "FORMATS", "GROUP", "INT4_FORMATS", "LIBC", "NATIVE_QTYPE", "PACKABLE", "PACKED",
    "RESCORED_HEADS", "RESCORE_ROWS", "SPARE_GROUPS", "BlockFormat", "BlockLinear",
    "DenseLinear", "Matrix", "NotEnoughMemoryError", "PackedLinear", "RescoredHead", "RowFile", "RowSlice", "RowTable",
    "Table", "block_matrix", "check_dequant", "check_fits", "dequant_line", "dequantize_rows", "file_bytes",
    "file_of", "fuse_rows", "head_matrix", "held_bytes", "int4_packable", "int4_shape",
    "joined_matrix", "native_kernel", "pack_blocks", "packable", "packed_matrix", "populate",
    "release_pages", "requantise_head", "row_bytes", "row_table", "trim_heap", "unfused",
]
