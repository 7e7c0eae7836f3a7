"""Errors of the trust package: each a ValueError subclass with one clear message."""

from __future__ import annotations


class TrustError(ValueError):
    """A proof, signature, attestation or piece of evidence that does not check out."""


class SealError(TrustError):
    """A sealed (end-to-end encrypted) payload that cannot be opened or does not match."""


class EvidenceError(TrustError):
    """Slashing evidence that is malformed or does not prove what it claims."""


class Cleared(EvidenceError):
    """Evidence whose recomputation gives the output the accused signed: it was right."""
