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
from .ledger import START_INCOME_MC, START_MC, Ledger, ReceiptStatus, SpendStatus, check_claim
from .receipt import WorkReceipt
from .spend import Spend

__all__ = [
    "PART_WEIGHT_PERMILLE",
    "START_INCOME_MC",
    "START_MC",
    "EconomyError",
    "Ledger",
    "ReceiptError",
    "ReceiptStatus",
    "Spend",
    "SpendError",
    "SpendStatus",
    "WorkReceipt",
    "check_claim",
    "efficiency_factor",
    "efficiency_permille",
    "power_permille",
    "reward_mc",
    "thermal_permille",
]
