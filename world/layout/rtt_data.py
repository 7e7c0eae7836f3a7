"""Loader for the RIPE Atlas country-to-country RTT data set shipped beside the repository."""

from __future__ import annotations

import csv
import gzip
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import LayoutError

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


def default_data_dir() -> Path:
    """`$CADENCIA_RTT_DATA`, else `<repo>/../shared/data/internet-rtt`."""
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR])
    repo = Path(__file__).resolve().parents[2]
    return repo.parent / "shared" / "data" / "internet-rtt"


def load_country_rtt(
    directory: str | os.PathLike[str] | None = None, *, stat: str = "rtt_avg"
) -> CountryRtt:
    """Read the data set; countries without any measured pair to another are dropped.

    `stat` picks the column: the mean (default, what a player's traffic sees) or the
    min/max. Rows naming the unknown country `None` are skipped.
    """
    if stat not in _STATS:
        raise LayoutError(f"stat must be one of {_STATS}, got {stat!r}")
    path = Path(directory) if directory is not None else default_data_dir()
    path = path / DATA_FILE if path.is_dir() or not path.suffix else path
    if not path.exists():
        raise FileNotFoundError(
            f"RTT data set not found at {path}: expected the RIPE Atlas file {DATA_FILE} "
            f"in ../shared/data/internet-rtt beside the repository (or set ${ENV_VAR})"
        )
    try:
        pairs, intra = _read_pairs(path, stat)
    except (OSError, EOFError, UnicodeDecodeError, csv.Error) as exc:
        # A truncated or non-gzip file: say which file, not a traceback from gzip.
        raise LayoutError(f"{path}: unreadable RTT data set ({exc})") from None
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


def _read_pairs(path: Path, stat: str) -> tuple[dict[tuple[str, str], float], dict[str, float]]:
    """Country pairs and intra-country RTTs of one column, every row checked."""
    pairs: dict[tuple[str, str], float] = {}
    intra: dict[str, float] = {}
    with gzip.open(path, "rt", newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        if tuple(reader.fieldnames or ()) != _COLUMNS:
            raise LayoutError(f"{path}: unexpected columns {reader.fieldnames}")
        for line, row in enumerate(reader, start=2):
            a, b, raw = row.get("cty1"), row.get("cty2"), row.get(stat)
            if None in row or not a or not b or raw is None:
                # DictReader puts surplus fields under None and fills short rows with None.
                raise LayoutError(f"{path}:{line}: expected {len(_COLUMNS)} fields")
            if UNKNOWN_COUNTRY in (a, b):
                continue
            try:
                value = float(raw)
            except ValueError:
                raise LayoutError(f"{path}:{line}: {stat} is not a number") from None
            if not math.isfinite(value) or value < 0:
                raise LayoutError(f"{path}:{line}: bad RTT {value}")
            if a == b:
                intra[a] = value
            else:
                pairs[(min(a, b), max(a, b))] = value
    return pairs, intra
