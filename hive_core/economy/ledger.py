"""The ledger view: balances derived from verified receipts and spends, never stored."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

from .errors import EconomyError, SpendError
from .receipt import WorkReceipt
from .spend import Spend

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SpendStatus:
    """The fate of one spend once the account's spends are settled in order."""

    spend: Spend
    valid: bool  # False: void, it charged nothing (it would have overdrawn)
    balance_after_mc: int  # the account's balance after this spend was settled


class Ledger:
    """A read-only view of the ledger entries a doc holds.

    It keeps only the verified entries; every figure (earned, spent, balance) is
    recomputed from them on demand, so there is no number anyone could edit. Build it
    again (cheap) whenever the doc's ledger changes.
    """

    __slots__ = ("_receipts", "_spends")

    def __init__(self, receipts: Iterable[WorkReceipt] = (), spends: Iterable[Spend] = ()):
        self._receipts: dict[str, WorkReceipt] = {}
        self._spends: dict[tuple[bytes, bytes], Spend] = {}
        for receipt in receipts:
            self._add_receipt(receipt)
        for spend in spends:
            self._add_spend(spend)

    @classmethod
    def from_entries(
        cls, receipts: Iterable[bytes] = (), spends: Iterable[bytes] = ()
    ) -> Ledger:
        """Parse and verify raw entries; malformed or forged ones are logged and ignored."""
        ledger = cls()
        for raw in receipts:
            try:
                receipt = WorkReceipt.parse(raw)
                receipt.verify()
            except EconomyError as exc:
                log.warning("ignored work receipt: %s", exc)
                continue
            ledger._add_receipt(receipt)
        for raw in spends:
            try:
                spend = Spend.parse(raw)
                spend.verify()
            except EconomyError as exc:
                log.warning("ignored spend: %s", exc)
                continue
            ledger._add_spend(spend)
        return ledger

    def _add_receipt(self, receipt: WorkReceipt) -> None:
        key = receipt.receipt_id
        if key in self._receipts:
            log.info("duplicate work receipt %s counted once", key)
            return
        self._receipts[key] = receipt

    def _add_spend(self, spend: Spend) -> None:
        key = (spend.account_id, spend.spend_id)
        old = self._spends.get(key)
        if old is not None:
            if old.body() != spend.body():
                # Two different orders under one id: only the account could sign both;
                # keep one deterministically so every peer agrees.
                log.warning("conflicting spends with id %s: keeping one", spend.spend_id_hex)
                if spend.body() < old.body():
                    self._spends[key] = spend
            return
        self._spends[key] = spend

    @property
    def receipts(self) -> list[WorkReceipt]:
        return list(self._receipts.values())

    @property
    def spends(self) -> list[Spend]:
        return list(self._spends.values())

    def earned_mc(self, account_id: bytes) -> int:
        """Milli-credits earned by `account_id` as a worker, from every verified receipt."""
        return sum(r.reward_mc() for r in self._receipts.values() if r.worker_id == account_id)

    def settle(self, account_id: bytes) -> list[SpendStatus]:
        """Walk the account's spends by (timestamp, id); one that would overdraw is void.

        This is the rule for concurrent spends merged from two devices of one player:
        every peer holding the same entries voids the same spends.
        """
        balance = self.earned_mc(account_id)
        mine = sorted(
            (s for (acct, _), s in self._spends.items() if acct == account_id),
            key=lambda s: s.order_key,
        )
        out = []
        for spend in mine:
            valid = spend.amount_mc <= balance
            if valid:
                balance -= spend.amount_mc
            out.append(SpendStatus(spend, valid, balance))
        return out

    def balance_mc(self, account_id: bytes) -> int:
        """Earned minus the valid spends; never negative by construction."""
        statuses = self.settle(account_id)
        return statuses[-1].balance_after_mc if statuses else self.earned_mc(account_id)

    def is_funded(self, spend_id_hex: str) -> bool:
        """Whether a recorded spend is valid (a building paid by a void spend is unfunded)."""
        for account_id, spend_id in self._spends:
            if spend_id.hex() == spend_id_hex:
                return any(
                    st.valid and st.spend.spend_id == spend_id for st in self.settle(account_id)
                )
        return False

    def check_spend(self, spend: Spend | bytes) -> Spend:
        """Validate a new spend before it is written; return it parsed, or raise SpendError.

        Refused: a bad signature, an id already recorded (the same spend twice), a spend
        that would overdraw, or one that would void a spend already valid (by being
        ordered before it).
        """
        if not isinstance(spend, Spend):
            spend = Spend.parse(spend)
        spend.verify()
        account = spend.account_id
        if (account, spend.spend_id) in self._spends:
            raise SpendError(f"spend {spend.spend_id_hex} is already recorded")
        before = {st.spend.spend_id for st in self.settle(account) if st.valid}
        trial = Ledger(self._receipts.values(), [*self._spends.values(), spend])
        after = {st.spend.spend_id for st in trial.settle(account) if st.valid}
        if spend.spend_id not in after:
            raise SpendError(
                f"spend of {spend.amount_mc} mc overdraws: balance is "
                f"{self.balance_mc(account)} mc"
            )
        if not before <= after:
            raise SpendError("spend would void an earlier valid spend (timestamp too old)")
        return spend
