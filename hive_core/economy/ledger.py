"""The ledger view: balances derived from verified receipts and spends, never stored.

Credits move; they are not printed. Every entry is settled in one deterministic order
(timestamp, then kind, then id) that every peer holding the same entries computes alike:

- a receipt moves its reward from its client to its worker, and only what the client can
  pay: from the client's start (`START_MC`, credit for asking, which buys no building)
  first, then from its balance; a receipt its client cannot cover moves nothing;
- claims are bounded by what a session can really run: more than `MAX_RECEIPT_LAYERS`
  layers, or more layer-tokens per second of the asker-measured wall time than
  `MAX_LAYER_TOKENS_PER_S`, is an impossible claim and moves nothing; one (client, session,
  worker, stage) is paid once, so a receipt replayed or re-signed pays nothing more;
- what a worker can receive from other identities' starts is capped (`START_INCOME_MC`):
  a farm of fresh keys paying one worker gives it at most one cap, however many keys;
- a worker convicted in a session (`forfeits`) is paid nothing for it;
- a spend (a building) takes credits from the spendable balance, never from the start.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

from .errors import EconomyError, ReceiptError, SpendError
from .receipt import WorkReceipt
from .spend import Spend

log = logging.getLogger(__name__)

START_MC = 1_000_000  # every identity's start: 1,000 credits of asking (pays workers only)
START_INCOME_MC = 1_000_000  # the most one worker can ever receive out of others' starts
MAX_RECEIPT_LAYERS = 512  # no stage of a model we serve is deeper
MAX_LAYER_TOKENS_PER_S = 2_000_000  # far above what one device runs (SmolLM2: ~2,500 decoding)


@dataclass(frozen=True)
class SpendStatus:
    """The fate of one spend once the account's spends are settled in order."""

    spend: Spend
    valid: bool  # False: void, it charged nothing (it would have overdrawn)
    balance_after_mc: int  # the account's balance after this spend was settled


@dataclass(frozen=True)
class ReceiptStatus:
    """The fate of one receipt: what it moved from its client to its worker, and why not more."""

    receipt: WorkReceipt
    paid_mc: int
    reason: str  # "" when paid in full


@dataclass
class _Account:
    start: int = START_MC  # asking credit left
    balance: int = 0  # spendable credit
    start_income: int = 0  # received so far out of other identities' starts
    spends: list[SpendStatus] = field(default_factory=list)


def check_claim(receipt: WorkReceipt) -> None:
    """Raise ReceiptError if `receipt` claims more work than a session can run."""
    if receipt.n_layers > MAX_RECEIPT_LAYERS:
        raise ReceiptError(f"receipt claims {receipt.n_layers} layers (at most "
                           f"{MAX_RECEIPT_LAYERS})")
    rate = receipt.n_layers * receipt.tokens / max(receipt.wall_time_s, 1e-6)
    if rate > MAX_LAYER_TOKENS_PER_S:
        raise ReceiptError(f"receipt claims {rate:.3g} layer-tokens per second (at most "
                           f"{MAX_LAYER_TOKENS_PER_S:.3g})")


class Ledger:
    """A read-only view of the ledger entries a doc holds.

    It keeps only the verified entries; every figure (earned, spent, balance) is
    recomputed from them on demand, so there is no number anyone could edit. Build it
    again (cheap) whenever the doc's ledger changes. `forfeits` are (worker, session)
    pairs convicted on evidence this node checked: those receipts pay nothing.
    """

    __slots__ = ("_forfeits", "_receipts", "_spends")

    def __init__(self, receipts: Iterable[WorkReceipt] = (), spends: Iterable[Spend] = (),
                 forfeits: Iterable[tuple[bytes, bytes]] = ()):
        self._receipts: dict[str, WorkReceipt] = {}
        self._spends: dict[tuple[bytes, bytes], Spend] = {}
        self._forfeits = frozenset(forfeits)
        for receipt in receipts:
            self._add_receipt(receipt)
        for spend in spends:
            self._add_spend(spend)

    @classmethod
    def from_entries(
        cls, receipts: Iterable[bytes] = (), spends: Iterable[bytes] = (),
        forfeits: Iterable[tuple[bytes, bytes]] = (),
    ) -> Ledger:
        """Parse and verify raw entries; malformed or forged ones are logged and ignored."""
        ledger = cls(forfeits=forfeits)
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

    # -- settlement ----------------------------------------------------------------------

    def _settle_all(self) -> tuple[dict[bytes, _Account], list[ReceiptStatus]]:
        events: list[tuple[int, int, bytes, WorkReceipt | Spend]] = [
            (r.timestamp_ms, 0, bytes.fromhex(k), r) for k, r in self._receipts.items()]
        events += [(s.timestamp_ms, 1, s.spend_id + s.account_id, s) for s in self._spends.values()]
        events.sort(key=lambda e: e[:3])
        accounts: dict[bytes, _Account] = {}
        paid: set[tuple[bytes, bytes, bytes, int, int, int]] = set()
        statuses = []
        for _, _, _, entry in events:
            if isinstance(entry, Spend):
                acct = accounts.setdefault(entry.account_id, _Account())
                valid = entry.amount_mc <= acct.balance
                if valid:
                    acct.balance -= entry.amount_mc
                acct.spends.append(SpendStatus(entry, valid, acct.balance))
                continue
            statuses.append(self._pay(entry, accounts, paid))
        return accounts, statuses

    def _pay(self, r: WorkReceipt, accounts: dict[bytes, _Account],
             paid: set[tuple[bytes, bytes, bytes, int, int, int]]) -> ReceiptStatus:
        key = (r.client_id, r.session_id, r.worker_id, r.layer_start, r.layer_end, int(r.part))
        try:
            check_claim(r)
        except ReceiptError as exc:
            return ReceiptStatus(r, 0, str(exc))
        if (r.worker_id, r.session_id) in self._forfeits:
            return ReceiptStatus(r, 0, "the worker was convicted of lying in this session")
        if key in paid:
            return ReceiptStatus(r, 0, "this stage of this session was already paid for")
        client = accounts.setdefault(r.client_id, _Account())
        worker = accounts.setdefault(r.worker_id, _Account())
        amount = r.reward_mc()
        from_start = min(amount, client.start, START_INCOME_MC - worker.start_income)
        from_balance = min(amount - from_start, client.balance)
        if from_start + from_balance < amount:
            return ReceiptStatus(r, 0, f"the client cannot pay {amount} mc")
        paid.add(key)
        client.start -= from_start
        client.balance -= from_balance
        worker.start_income += from_start
        worker.balance += amount
        return ReceiptStatus(r, amount, "")

    def receipt_statuses(self) -> list[ReceiptStatus]:
        """Every receipt's fate, in settlement order."""
        return self._settle_all()[1]

    def earned_mc(self, account_id: bytes) -> int:
        """Milli-credits `account_id` received as a worker (receipts its clients could pay)."""
        return sum(s.paid_mc for s in self.receipt_statuses()
                   if s.receipt.worker_id == account_id)

    def settle(self, account_id: bytes) -> list[SpendStatus]:
        """The account's spends in settlement order; one that would overdraw is void.

        This is the rule for concurrent spends merged from two devices of one player:
        every peer holding the same entries voids the same spends.
        """
        acct = self._settle_all()[0].get(account_id)
        return list(acct.spends) if acct is not None else []

    def balance_mc(self, account_id: bytes) -> int:
        """Spendable credit: received minus paid out of it minus the valid spends; never
        negative by construction (the start is not in it: it only pays for asking)."""
        acct = self._settle_all()[0].get(account_id)
        return acct.balance if acct is not None else 0

    def start_mc(self, account_id: bytes) -> int:
        """What is left of the account's start (asking credit)."""
        acct = self._settle_all()[0].get(account_id)
        return acct.start if acct is not None else START_MC

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
        trial = Ledger(self._receipts.values(), [*self._spends.values(), spend], self._forfeits)
        after = {st.spend.spend_id for st in trial.settle(account) if st.valid}
        if spend.spend_id not in after:
            raise SpendError(
                f"spend of {spend.amount_mc} mc overdraws: balance is "
                f"{self.balance_mc(account)} mc"
            )
        if not before <= after:
            raise SpendError("spend would void an earlier valid spend (timestamp too old)")
        return spend
