"""The bottom of the hive: types every layer shares, importing nothing else of ours.

Identities and ids, `Stage` with its one `Part`, the Health Vector records, and the
declarative binary codec that every wire object, DHT value, receipt and edit is written
with. `hive_core.protocol`, `economy`, `trust`, `mesh`, `sched`, `exec` and `world` all
import from here; nothing here imports them.
"""

from hive_core.base.codec import (
    MAX_FRAME_BYTES,
    PROTOCOL_VERSION,
    Nested,
    decode,
    decode_struct,
    encode,
    encode_struct,
    message,
    registered_messages,
    wire_struct,
)
from hive_core.base.errors import ProtocolError
from hive_core.base.fields import (
    Blob,
    Bool,
    EnumOf,
    Field,
    Fixed,
    Float,
    Int,
    ListOf,
    Maybe,
    Text,
    UInt,
)
from hive_core.base.health import HealthRecord, HealthVector, PeerRtt
from hive_core.base.identity import Identity, IdentityError, is_valid, node_id_of, verify
from hive_core.base.ids import ID_BYTES, KEY_BYTES, SESSION_BYTES, SIGNATURE_BYTES, new_session_id
from hive_core.base.stage import Part, Stage, StageError, even_stages, split_parts

__all__ = [
    "ID_BYTES", "KEY_BYTES", "MAX_FRAME_BYTES", "PROTOCOL_VERSION", "SESSION_BYTES",
    "SIGNATURE_BYTES", "Blob", "Bool", "EnumOf", "Field", "Fixed", "Float", "HealthRecord",
    "HealthVector", "Identity", "IdentityError", "Int", "ListOf", "Maybe", "Nested", "Part",
    "PeerRtt", "ProtocolError", "Stage", "StageError", "Text", "UInt", "decode",
    "decode_struct", "encode", "encode_struct", "even_stages", "is_valid", "message",
    "new_session_id", "node_id_of", "registered_messages", "split_parts", "verify",
    "wire_struct",
]
