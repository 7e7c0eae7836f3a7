"""The Watt economy: signed work receipts, the reward formula, balances derived from them."""

from .efficiency import (
    PART_WEIGHT_PERMILLE,
    efficiency_factor,
    efficiency_permille,
    power_permille,
    reward_mc,
    thermal_permille,
)
from .errors import EconomyError, ReceiptError, SpendError
from .ledger import Ledger, SpendStatus
from .receipt import WorkReceipt
from .spend import Spend

__all__ = [
    "PART_WEIGHT_PERMILLE",
    "EconomyError",
    "Ledger",
    "ReceiptError",
    "Spend",
    "SpendError",
    "SpendStatus",
    "WorkReceipt",
    "efficiency_factor",
    "efficiency_permille",
    "power_permille",
    "reward_mc",
    "thermal_permille",
]
