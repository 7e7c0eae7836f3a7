"""Players' choices in the city doc: hosting a layer span, staking to referee, paying for
priority, achievements. Each is one append-only entry of the `actions` root, written in one
signed edit together with the spend that paid for it, so every player sees who chose what.

The rules an entry must follow, checked on every replica before it is accepted (`check_action`):

- only its owner writes it, once: an action is never changed or removed;
- its fields follow its kind (`schema.Action.check`): a host choice fits the free memory the
  machine reported, a stake or a paid ask names a spend;
- that spend is in the same doc, signed by the owner, for exactly the amount and with the
  purpose ``"<kind>:<action id>"`` (so one spend pays for one action only);
- an achievement is earned once per player, and proves itself where the doc can: the first
  verified token served names a receipt that paid the owner; a thousand tokens served needs
  the owner's receipts in the doc to add up to 1,000 tokens. A liar caught names the slashed
  node and session (the evidence lives with the game, not in the doc).
"""

from __future__ import annotations

import os
import time
from typing import Any

from hive_core.economy import EconomyError, Spend, WorkReceipt

from .errors import EditError, SchemaError
from .schema import ACTIONS, RECEIPTS, SPENDS, Action

THOUSAND = 1000  # tokens served for the "thousand-tokens" achievement


def purpose_of(action: Action) -> str:
    return f"{action.kind}:{action.id}"


def check_action(key: str, before: Any, after: Any, author: str, roots: dict[str, Any] | None) -> None:
    """Raise EditError unless `author` may write `after` as action `key` (see the module).

    `roots` are the doc's root maps as they will be with the edit applied (plain dicts or
    pycrdt Maps); without them the spends cannot be checked, so the action is refused.
    """
    if before is not None:
        raise EditError(f"action {key[:16]} cannot be changed or removed")
    try:
        action = Action.from_entry(key, after)
    except SchemaError as exc:
        raise EditError(f"invalid entry: {exc}") from None
    if action.owner != author:
        raise EditError(f"action {key[:16]} would be owned by someone else than its author")
    if roots is None:
        raise EditError("an action can only arrive in a signed edit (its spend must be checked)")
    if action.kind in ("stake", "ask"):
        _check_spend(action, roots)
    elif action.kind == "achievement":
        _check_achievement(action, roots)


def _get(root: Any, key: str) -> Any:
    value = root.get(key)
    return value if value is None or isinstance(value, (str, dict)) else _plain(value)


def _plain(value: Any) -> Any:
    to_py = getattr(value, "to_py", None)
    return to_py() if to_py is not None else value


def _check_spend(action: Action, roots: dict[str, Any]) -> None:
    raw = _get(roots[SPENDS], f"{action.owner}:{action.spend}")
    if not isinstance(raw, str):
        raise EditError(f"{action.kind} {action.id[:8]} names a spend that is not in the ledger")
    try:
        spend = Spend.parse(bytes.fromhex(raw))
        spend.verify()
    except (ValueError, EconomyError) as exc:
        raise EditError(f"{action.kind} {action.id[:8]}: its spend does not verify: {exc}") from None
    if spend.account_id.hex() != action.owner or spend.amount_mc != action.amount_mc \
            or spend.purpose != purpose_of(action):
        raise EditError(f"{action.kind} {action.id[:8]}: its spend is for another amount, "
                        "payer or purpose")


def _receipts_paying(owner: str, roots: dict[str, Any]) -> list[WorkReceipt]:
    out = []
    for raw in _plain(roots[RECEIPTS]).values():
        try:
            r = WorkReceipt.parse(bytes.fromhex(raw))
            r.verify()
        except (ValueError, EconomyError):
            continue
        if r.worker_id.hex() == owner:
            out.append(r)
    return out


def _check_achievement(action: Action, roots: dict[str, Any]) -> None:
    for key, raw in _plain(roots[ACTIONS]).items():
        if key != action.id and isinstance(raw, dict) and raw.get("owner") == action.owner \
                and raw.get("kind") == "achievement" and raw.get("name") == action.name:
            raise EditError(f"{action.owner[:12]} already holds the achievement {action.name}")
    if action.name == "first-verified-token":
        if not any(r.receipt_id == action.proof for r in _receipts_paying(action.owner, roots)):
            raise EditError("first-verified-token must name a receipt in the ledger that paid its owner")
    elif action.name == "thousand-tokens":
        served = sum(r.tokens for r in _receipts_paying(action.owner, roots))
        if served < THOUSAND:
            raise EditError(f"thousand-tokens: the ledger shows {served} tokens served")
    elif action.name == "liar-caught":
        node, _, session = action.proof.partition(":")
        if len(node) != 40 or not session or not all(c in "0123456789abcdef" for c in node + session):
            raise EditError("liar-caught must name the slashed node and session, as hex")


def choose(city: Any, kind: str, *, cost_mc: int = 0, **fields: Any) -> Action:  # city: City
    """What `City.choose` does: build the action (and its spend, if it costs), check it as
    every replica will, then write both in one transaction of the player's."""
    from pycrdt import Map

    from .authority import spend_key

    action_id = os.urandom(8).hex()
    spend = city._spend(cost_mc, f"{kind}:{action_id}") if cost_mc > 0 else None
    if spend is not None:
        fields = {**fields, "amount_mc": cost_mc, "spend": spend.spend_id_hex}
    action = Action(action_id, city.player_id, kind, time.time_ns() // 1_000_000, **fields)
    try:
        Action.from_entry(action.id, action.fields())
    except SchemaError as exc:
        raise SchemaError(str(exc).split(": ", 1)[-1]) from None
    if kind == "achievement":
        check_action(action.id, None, action.fields(), city.player_id, city._roots)
    with city._txn():
        city._roots[ACTIONS][action.id] = Map(action.fields())
        if spend is not None:
            city._roots[SPENDS][spend_key(spend)] = bytes(spend).hex()
    return action
