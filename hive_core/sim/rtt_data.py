"""The RIPE Atlas country-to-country RTT data set, shipped in this package, and its loader.

The file lives in `hive_core/sim/data/internet-rtt/` (package data, with its README:
source and terms) and is read through `importlib.resources`, so the simulator and the
map work from a clone or an installed wheel alike. `$CADENCIA_RTT_DATA`, or a path given
to `load_country_rtt`, points at another file (or a directory holding one) instead.
"""

from __future__ import annotations

import csv
import gzip
import logging
import math
import os
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

import numpy as np

from hive_core.sim.errors import RttDataError

log = logging.getLogger(__name__)

DATA_FILE = "country_rtt_stat.csv.gz"
ENV_VAR = "CADENCIA_RTT_DATA"
_COLUMNS = ("cty1", "cty2", "rtt_cnt", "rtt_avg", "rtt_std", "rtt_min", "rtt_max")
_STATS = ("rtt_avg", "rtt_min", "rtt_max")
UNKNOWN_COUNTRY = "None"


@dataclass(frozen=True)
class CountryRtt:
    """Country-to-country RTTs in milliseconds.

    `rtt[i, j]` is NaN where the pair was not measured; the matrix is symmetric with a
    zero diagonal. `intra[i]` is the measured RTT between two addresses of country i
    (NaN when none), kept apart because it is a different quantity (access networks).
    """

    countries: tuple[str, ...]
    rtt: np.ndarray
    intra: np.ndarray

    @property
    def measured(self) -> np.ndarray:
        """Boolean mask of measured off-diagonal pairs."""
        mask = ~np.isnan(self.rtt)
        np.fill_diagonal(mask, False)
        return mask


def shipped_data() -> Traversable:
    """The data set shipped in this package (a path in a clone or an unzipped wheel)."""
    return resources.files("hive_core.sim").joinpath("data", "internet-rtt", DATA_FILE)


def data_source(path: str | os.PathLike[str] | None = None) -> Traversable:
    """The file `load_country_rtt` reads: `path`, else `$CADENCIA_RTT_DATA`, else the
    shipped copy. A directory stands for the `DATA_FILE` inside it."""
    if path is None and os.environ.get(ENV_VAR):
        path = os.environ[ENV_VAR]
    if path is None:
        return shipped_data()
    chosen = Path(path)
    return chosen / DATA_FILE if chosen.is_dir() else chosen


def load_country_rtt(
    path: str | os.PathLike[str] | None = None, *, stat: str = "rtt_avg"
) -> CountryRtt:
    """Read the data set; countries without any measured pair to another are dropped.

    `path` is a file or a directory holding `DATA_FILE` (default: see `data_source`).
    `stat` picks the column: the mean (default, what a player's traffic sees) or the
    min/max. Rows naming the unknown country `None` are skipped. Raises RttDataError.
    """
    if stat not in _STATS:
        raise RttDataError(f"stat must be one of {_STATS}, got {stat!r}")
    source = data_source(path)
    if not source.is_file():
        raise RttDataError(f"RTT data set not found at {source} ({_origin(path)}): expected "
                           f"the RIPE Atlas file {DATA_FILE}")
    try:
        pairs, intra = _read_pairs(source, stat)
    except (OSError, EOFError, UnicodeDecodeError, csv.Error) as exc:
        # A truncated or non-gzip file: say which file, not a traceback from gzip.
        raise RttDataError(f"{source}: unreadable RTT data set ({exc})") from None
    linked = sorted({c for pair in pairs for c in pair})
    dropped = sorted(set(intra) - set(linked))
    if dropped:
        log.info("dropped %d countries with no measured pair: %s", len(dropped), dropped)
    index = {c: i for i, c in enumerate(linked)}
    n = len(linked)
    rtt = np.full((n, n), np.nan)
    np.fill_diagonal(rtt, 0.0)
    for (a, b), value in pairs.items():
        rtt[index[a], index[b]] = rtt[index[b], index[a]] = value
    intra_arr = np.array([intra.get(c, np.nan) for c in linked])
    return CountryRtt(tuple(linked), rtt, intra_arr)


def _origin(path: str | os.PathLike[str] | None) -> str:
    if path is not None:
        return "the path given"
    if os.environ.get(ENV_VAR):
        return f"from ${ENV_VAR}"
    return "the copy shipped in hive_core.sim: a broken install?"


def _read_pairs(
    source: Traversable, stat: str
) -> tuple[dict[tuple[str, str], float], dict[str, float]]:
    """Country pairs and intra-country RTTs of one column, every row checked."""
    pairs: dict[tuple[str, str], float] = {}
    intra: dict[str, float] = {}
    with source.open("rb") as raw, gzip.open(raw, "rt", newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        if tuple(reader.fieldnames or ()) != _COLUMNS:
            raise RttDataError(f"{source}: unexpected columns {reader.fieldnames}")
        for line, row in enumerate(reader, start=2):
            a, b, text = row.get("cty1"), row.get("cty2"), row.get(stat)
            if None in row or not a or not b or text is None:
                # DictReader puts surplus fields under None and fills short rows with None.
                raise RttDataError(f"{source}:{line}: expected {len(_COLUMNS)} fields")
            if UNKNOWN_COUNTRY in (a, b):
                continue
            try:
                value = float(text)
            except ValueError:
                raise RttDataError(f"{source}:{line}: {stat} is not a number") from None
            if not math.isfinite(value) or value < 0:
                raise RttDataError(f"{source}:{line}: bad RTT {value}")
            if a == b:
                intra[a] = value
            else:
                pairs[(min(a, b), max(a, b))] = value
    return pairs, intra
