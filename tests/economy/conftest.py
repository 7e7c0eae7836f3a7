"""Shared builders for economy tests: deterministic identities and receipts."""

from __future__ import annotations

import pytest

from hive_core.base.identity import Identity
from hive_core.base.stage import Part
from hive_core.economy import WorkReceipt


def ident(n: int) -> Identity:
    return Identity.from_seed(bytes([n]) * 32)


def make_receipt(
    client: Identity,
    worker: Identity,
    *,
    tokens: int = 100,
    layers: tuple[int, int] = (0, 10),
    part: Part = Part.FULL,
    timestamp_ms: int = 1_700_000_000_000,
    session: bytes = b"s" * 16,
    stability: float = 1.0,
    temperature_c: float | None = 50.0,
    battery_pct: float | None = None,
    on_ac: bool = True,
) -> WorkReceipt:
    return WorkReceipt.create(
        client,
        session_id=session,
        worker_id=worker.node_id,
        layer_start=layers[0],
        layer_end=layers[1],
        part=part,
        tokens=tokens,
        wall_time_s=0.25,
        timestamp_ms=timestamp_ms,
        stability=stability,
        temperature_c=temperature_c,
        battery_pct=battery_pct,
        on_ac=on_ac,
    )


@pytest.fixture
def alice() -> Identity:
    return ident(1)


@pytest.fixture
def bob() -> Identity:
    return ident(2)


@pytest.fixture
def carol() -> Identity:
    return ident(3)
