"""Credits while hosting: the receipts the player's own shard server keeps become buildings.

`CreditKeeper.attach(server)` hooks a `hive_core.exec.ShardServer` running under the
player's key: every receipt an asking client signs for it (checked by the server, then
checked again here: signature, and that it names this player as the worker) is recorded
in the player's City ledger and played into the game (the district's credits). The balance
is the player's to spend on their choices (building, staking, priority); with `auto_build`
it is spent at once raising the player's buildings (`build_with_credits`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from hive_core.economy import EconomyError
from hive_core.events import ReceiptIssued
from world.view.game_source import GameSource

from .session import UPGRADE_MC, build_with_credits

logger = logging.getLogger(__name__)


class CreditKeeper:
    """The player's earnings: receipts in, ledger entries and raised buildings out."""

    def __init__(self, city: Any, source: GameSource | None = None, *, cost_mc: int = UPGRADE_MC,
                 say: Callable[[str], None] = lambda _m: None, auto_build: bool = False,
                 on_paid: Callable[[], None] | None = None) -> None:
        self.city, self.source, self.cost_mc, self.say = city, source, cost_mc, say
        self.auto_build = auto_build  # spend every credit raising buildings as it comes
        self.on_paid = on_paid  # called after each receipt is recorded (achievements)
        self.me = bytes.fromhex(city.player_id)
        self.receipts: list[Any] = []  # receipts recorded in the ledger
        self.refused = 0  # receipts not paying this player, or not verifying
        self.earned_mc = 0
        self.raised = 0  # building levels raised with them

    def attach(self, server: Any) -> None:
        """Record what `server` (the player's own node) is paid from now on."""
        if server.node.node_id != self.me:
            raise ValueError(f"server {server.node.node_id.hex()[:12]} does not run under the "
                             f"player's key {self.me.hex()[:12]}: its receipts would not pay them")
        server.receipt_hooks.append(self.on_receipt)

    def on_receipt(self, receipt: Any) -> None:
        try:
            receipt.verify()
        except EconomyError as exc:
            self.refused += 1
            logger.info("refused a receipt: %s", exc)
            return
        if receipt.worker_id != self.me:
            self.refused += 1
            return
        if any(r.receipt_id == receipt.receipt_id for r in self.receipts):
            return  # the same receipt pays once
        self.receipts.append(receipt)
        self.earned_mc += receipt.reward_mc()
        if self.source is not None:
            now = time.monotonic()
            try:
                self.source.on_event(ReceiptIssued(receipt, now), now)
            except ValueError as exc:
                logger.info("game refused a receipt: %s", exc)
        if self.auto_build:
            raised = build_with_credits(self.city, [receipt], cost_mc=self.cost_mc)
            self.raised += raised
            if raised:
                self.say(f"hosting earned {receipt.reward_mc()} mc: raised {raised} building level(s)")
        else:
            self.city.record_receipt(receipt)
        if self.source is not None:
            self.source.hud.set(player=f"{self.city.player_id[:8]} hosting: {self.earned_mc} mc earned, "
                                       f"{self.city.balance_mc()} mc to spend")
        if self.on_paid is not None:
            self.on_paid()
