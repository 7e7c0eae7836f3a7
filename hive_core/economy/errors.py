"""Errors of the Watt economy: malformed or forged ledger entries, refused spends."""

from __future__ import annotations


class EconomyError(ValueError):
    """Base class: a ledger entry or an economy request is invalid."""


class ReceiptError(EconomyError):
    """A work receipt is malformed (bad bytes, out-of-range field) or its signature is forged."""


class SpendError(EconomyError):
    """A spend is malformed, forged, already recorded, or would overdraw its account."""
