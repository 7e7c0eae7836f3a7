"""The one exception the wire codec raises on anything malformed."""

from __future__ import annotations


class ProtocolError(ValueError):
    """A frame or field is malformed, oversized, truncated, of an unknown type or version.

    Every decoding failure, whatever its cause, surfaces as this exception so that a
    receiver can log it, drop the frame and keep serving.
    """
