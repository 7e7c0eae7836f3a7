"""The hive's map: node positions by MDS of measured RTTs, steady between updates."""

from hive_core.sim.fill import triangle_fill
from hive_core.sim.rtt_data import CountryRtt, load_country_rtt

from .align import align_to, procrustes_fit
from .complete import measured_mask, prepare
from .errors import LayoutError
from .heights import embed_with_heights, fit_heights
from .hive_map import HiveMap, MapSnapshot, rtt_matrix
from .mds import classical_mds, embed
from .quality import VIVALDI_MEDIAN_REL_ERR, LayoutQuality, PairError, evaluate, pair_error
from .synth import SyntheticHive, synthetic_hive

__all__ = [
    "VIVALDI_MEDIAN_REL_ERR",
    "CountryRtt",
    "HiveMap",
    "LayoutError",
    "LayoutQuality",
    "MapSnapshot",
    "PairError",
    "SyntheticHive",
    "align_to",
    "classical_mds",
    "embed",
    "embed_with_heights",
    "evaluate",
    "fit_heights",
    "load_country_rtt",
    "measured_mask",
    "pair_error",
    "prepare",
    "procrustes_fit",
    "rtt_matrix",
    "synthetic_hive",
    "triangle_fill",
]
