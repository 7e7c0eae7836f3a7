"""The hive simulator: many real DHT nodes in one process, on virtual time and real latencies."""

from hive_core.sim.clock import SimulationDeadlock, VirtualClockLoop, run_virtual
from hive_core.sim.latency import LatencyModel, SimError, constant_latency, internet_latency
from hive_core.sim.network import SimNetwork, SimNode
from hive_core.sim.scenario import SimConfig, SimReport, run_simulation, simulate

__all__ = [
    "LatencyModel",
    "SimConfig",
    "SimError",
    "SimNetwork",
    "SimNode",
    "SimReport",
    "SimulationDeadlock",
    "VirtualClockLoop",
    "constant_latency",
    "internet_latency",
    "run_simulation",
    "run_virtual",
    "simulate",
]
