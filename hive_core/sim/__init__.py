"""The hive simulator: many real DHT nodes in one process, on virtual time and real latencies."""

from hive_core.sim.clock import SimulationDeadlock, VirtualClockLoop, run_virtual
from hive_core.sim.errors import RttDataError, SimError
from hive_core.sim.fill import triangle_fill
from hive_core.sim.latency import LatencyModel, constant_latency, internet_latency
from hive_core.sim.network import SimNetwork, SimNode
from hive_core.sim.rtt_data import CountryRtt, load_country_rtt
from hive_core.sim.scenario import SimConfig, SimReport, run_simulation, simulate

__all__ = [
    "CountryRtt",
    "LatencyModel",
    "RttDataError",
    "SimConfig",
    "SimError",
    "SimNetwork",
    "SimNode",
    "SimReport",
    "SimulationDeadlock",
    "VirtualClockLoop",
    "constant_latency",
    "internet_latency",
    "load_country_rtt",
    "run_simulation",
    "run_virtual",
    "simulate",
    "triangle_fill",
]
