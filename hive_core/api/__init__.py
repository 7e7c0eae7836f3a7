"""The OpenAI-compatible HTTP API and the web page: answers through the hive (or this device),
and the live hive the page draws.

`schema` checks request bodies, `engine` answers them (`HiveEngine` over the one join path,
`LocalEngine` on this device), `answer` drives one answer and shapes OpenAI's JSON,
`admission` bounds the line, `live` is what the page's WebSocket carries, `app` the routes,
`server` runs uvicorn in the caller's event loop. The page is plain files in `static/`.
"""

from hive_core.api.app import Api, ApiConfig, build_app
from hive_core.api.connect import InProcessConnector, LiveConnector
from hive_core.api.engine import HiveEngine, LocalEngine
from hive_core.api.errors import ApiError, BadRequest, Busy, ModelNotFound, TooLarge, Unavailable
from hive_core.api.live import LiveHub, ring_layout
from hive_core.api.server import ApiServer, make_server

__all__ = [
    "Api", "ApiConfig", "ApiError", "ApiServer", "BadRequest", "Busy", "HiveEngine",
    "InProcessConnector", "LiveConnector", "LiveHub", "LocalEngine", "ModelNotFound",
    "TooLarge", "Unavailable", "build_app", "make_server", "ring_layout",
]
