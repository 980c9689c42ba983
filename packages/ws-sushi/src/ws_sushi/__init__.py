"""ws-sushi: SUSHI — SubGraph-Stationary inference of weight-shared SuperNets on FPGA-class accelerators.

SUSHI (Behnam et al., "SubGraph Stationary Hardware-Software Inference Co-Design", MLSys 2023)
serves a stream of queries, each with its own latency/accuracy target, on SubNets of one SuperNet:
the SubGraph consecutive SubNets share stays cached on chip and only the rest streams from off-chip
memory. This package provides:

* :mod:`ws_sushi.subgraph` — SubGraphs from ws-core's ``weight_slices``: the SubGraph a set of SubNets
  shares, its size at a bit-width, and the bytes a SubNet still fetches given a cached SubGraph;
* :mod:`ws_sushi.hardware` / :mod:`ws_sushi.accel` — JSON hardware profiles (ZCU104-class FPGA,
  Cortex-M7-class MCU) and the SushiAccel-style cost model (per-layer latency and energy);
* :mod:`ws_sushi.accuracy` / :mod:`ws_sushi.sched` — accuracy tables and SushiSched (SubNet
  selection, SubGraph cache planning, cache policies);
* :mod:`ws_sushi.stream` / :mod:`ws_sushi.simulate` — query streams and traces, and the simulator
  comparing SubGraph Stationary with no cache and a static cache;
* :mod:`ws_sushi.quant` / :mod:`ws_sushi.finn` — brevitas quantization, QONNX export checked with
  qonnx's executor, FINN folding configs and estimates;
* ``ws-sushi simulate`` / ``ws-sushi export`` on the command line.

Example::

    >>> import timm, ws_core, ws_sushi
    >>> net = timm.create_model("ws_ofa_mbv3_100", num_classes=1000)
    >>> table = ws_sushi.AccuracyTable.log_macs_proxy(net, ws_sushi.uniform_subnets(net.space), 0.70, 0.77)
    >>> system = ws_sushi.build_system(net, table, "zcu104")
    >>> stream = ws_sushi.generate_stream([ws_sushi.Phase(2.0, 60, 3.0)], seed=0)
    >>> results = ws_sushi.compare_policies(stream, system, [ws_sushi.NoCache(), ws_sushi.SubGraphStationary()])
"""

from ._version import __version__ as __version__
from .accel import CandidateCosts, QueryCost, SubNetLayout, SushiAccel, layer_macs, subnet_layout
from .accuracy import AccuracyTable, uniform_subnets
from .hardware import HardwareProfile, list_profiles, load_profile
from .sched import (
    CachePolicy,
    NoCache,
    StaticCache,
    SubGraphStationary,
    fit_subgraph,
    plan_subgraph,
    select_subnet,
    select_subnets,
)
from .simulate import SimulationResult, SushiSystem, build_system, compare_policies, format_summary, simulate
from .stream import Phase, QueryStream, generate_stream, read_trace, reference_phases, write_trace
from .subgraph import SubGraph, common_subgraph, fetch_bytes, subnet_subgraph, supernet_subgraph

__all__ = [
    "AccuracyTable",
    "CachePolicy",
    "CandidateCosts",
    "HardwareProfile",
    "NoCache",
    "Phase",
    "QueryCost",
    "QueryStream",
    "SimulationResult",
    "StaticCache",
    "SubGraph",
    "SubGraphStationary",
    "SubNetLayout",
    "SushiAccel",
    "SushiSystem",
    "build_system",
    "common_subgraph",
    "compare_policies",
    "fetch_bytes",
    "fit_subgraph",
    "format_summary",
    "generate_stream",
    "layer_macs",
    "list_profiles",
    "load_profile",
    "plan_subgraph",
    "read_trace",
    "reference_phases",
    "select_subnet",
    "select_subnets",
    "simulate",
    "subnet_layout",
    "subnet_subgraph",
    "supernet_subgraph",
    "uniform_subnets",
    "write_trace",
]
