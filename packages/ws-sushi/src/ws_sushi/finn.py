"""FINN integration: folding configurations, FINN-style cycle estimates, and FINN's estimate-only build.

FINN compiles a QONNX model into a dataflow pipeline with one hardware layer per network layer.
Convolutions (lowered to matrix products) and fully connected layers become **MVAU** layers
(matrix-vector-activation units) with ``PE`` output and ``SIMD`` input parallelism; depthwise
convolutions become **VVAU** layers. FINN's cycle model (``get_exp_cycles``), reproduced here::

    MVAU: cycles = (MH / PE) · (MW / SIMD) · output_pixels      PE | MH, SIMD | MW
    VVAU: cycles = (C · k_h · k_w) / PE / SIMD · output_pixels   PE | C,  SIMD | k_h · k_w

with ``MH`` = output channels, ``MW`` = input channels × kernel area. The pipeline's throughput is set
by its slowest layer and its latency by the sum along the (linear) pipeline::

    estimated_throughput_fps = clock_hz / max_cycles
    estimated_latency_ns     = critical_path_cycles · clock period (ns)

(the fields of FINN's ``report/estimate_network_performance.json``).

* :func:`finn_layers` reads the MVAU/VVAU layers of a cleaned QONNX model (qonnx ``ModelWrapper``);
* :func:`set_folding` chooses PE/SIMD per layer for a target throughput with FINN's ``SetFolding``
  rules (MVAU: raise SIMD through the divisors of MW while the weight stream stays within
  ``mvau_wwidth_max`` bits, then PE through the divisors of MH; VVAU: PE first, then SIMD; stop at the
  first value under the target; if the slowest layer still misses it, fold again to that layer's
  cycles so the pipeline is balanced);
* :func:`folding_config` writes the folding-config JSON FINN's builder reads
  (``DataflowBuildConfig(folding_config_file=...)``); node names follow FINN's ``GiveUniqueNodeNames``
  (``MVAU_hls_0``, ``MVAU_hls_1``, ``VVAU_hls_0``, ... in graph order), which matches when every conv
  and linear layer becomes one MVAU/VVAU node;
* :func:`estimate_performance` is the FINN-style estimate of a folded pipeline;
* :func:`run_finn_estimate` runs FINN's estimate-only build when the FINN compiler is importable and
  :func:`read_finn_reports` reads the reports it writes (no Vivado/Vitis needed).
"""

from __future__ import annotations

import importlib.util
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "FinnLayer",
    "FinnReport",
    "Folding",
    "estimate_performance",
    "finn_available",
    "finn_layers",
    "finn_node_names",
    "folding_config",
    "mvau_cycles",
    "read_finn_reports",
    "run_finn_estimate",
    "set_folding",
    "target_cycles",
    "vvau_cycles",
]


def mvau_cycles(mh: int, mw: int, pe: int, simd: int, pixels: int = 1) -> int:
    """FINN's MVAU cycle estimate ``(MH/PE)·(MW/SIMD)·pixels`` (PE must divide MH, SIMD must divide MW)."""
    if mh % pe or mw % simd:
        raise ValueError(f"MVAU folding needs PE | MH and SIMD | MW, got MH={mh}, PE={pe}, MW={mw}, SIMD={simd}")
    return int((mh / pe) * (mw / simd) * pixels)


def vvau_cycles(channels: int, kernel_area: int, pe: int, simd: int, pixels: int = 1) -> int:
    """FINN's VVAU cycle estimate ``(C·k²)/PE/SIMD·pixels`` (PE must divide C, SIMD must divide k²)."""
    if channels % pe or kernel_area % simd:
        raise ValueError(f"VVAU folding needs PE | C and SIMD | k_h·k_w, got C={channels}, PE={pe}, "
                         f"k_h·k_w={kernel_area}, SIMD={simd}")
    return int((channels * kernel_area) / pe / simd * pixels)


@dataclass(frozen=True)
class FinnLayer:
    """One MVAU or VVAU layer of a FINN dataflow pipeline.

    Attributes:
        name: the QONNX node name it comes from.
        op: ``"MVAU"`` or ``"VVAU"``.
        mh: MVAU output channels (VVAU: channels).
        mw: MVAU input size ``C_in · k_h · k_w`` (VVAU: kernel area ``k_h · k_w``).
        pixels: output positions (1 for fully connected layers).
        weight_bits: weight bit-width (for the MVAU weight-stream width rule).
    """

    name: str
    op: str
    mh: int
    mw: int
    pixels: int = 1
    weight_bits: int = 8

    def __post_init__(self) -> None:
        if self.op not in ("MVAU", "VVAU"):
            raise ValueError(f"FinnLayer {self.name!r}: op must be 'MVAU' or 'VVAU', got {self.op!r}")
        for n in ("mh", "mw", "pixels", "weight_bits"):
            v = getattr(self, n)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"FinnLayer {self.name!r}: {n} must be an int >= 1, got {v!r}")

    def cycles(self, pe: int, simd: int) -> int:
        if self.op == "MVAU":
            return mvau_cycles(self.mh, self.mw, pe, simd, self.pixels)
        return vvau_cycles(self.mh, self.mw, pe, simd, self.pixels)

    @property
    def macs(self) -> int:
        return self.mh * self.mw * self.pixels


@dataclass(frozen=True)
class Folding:
    """PE/SIMD of one layer and its estimated cycles."""

    pe: int
    simd: int
    cycles: int


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def _fold_layer(layer: FinnLayer, target: int, mvau_wwidth_max: int) -> Folding:
    pe, simd = 1, 1
    if layer.op == "MVAU":
        for s in _divisors(layer.mw):
            prev, simd = simd, s
            if layer.cycles(pe, simd) < target:
                break
            if layer.weight_bits * simd > mvau_wwidth_max:
                simd = prev
                break
        for p in _divisors(layer.mh):
            pe = p
            if layer.cycles(pe, simd) < target:
                break
    else:
        for p in _divisors(layer.mh):
            pe = p
            if layer.cycles(pe, simd) < target:
                break
        if pe == layer.mh and layer.cycles(pe, simd) > target:
            for s in _divisors(layer.mw):
                simd = s
                if layer.cycles(pe, simd) < target:
                    break
    return Folding(pe, simd, layer.cycles(pe, simd))


def set_folding(
    layers: Sequence[FinnLayer],
    target_cycles_per_frame: int,
    mvau_wwidth_max: int = 1024,
    two_pass_relaxation: bool = True,
) -> dict[str, Folding]:
    """PE/SIMD per layer to reach ``target_cycles_per_frame`` (FINN ``SetFolding`` rules; module docstring).

    ``target_cycles_per_frame = clock_hz / target_fps`` (FINN: ``int(1e9 / clk_ns / target_fps)``).
    ``mvau_wwidth_max`` defaults to FINN's ``DataflowBuildConfig`` default (1024 bits).
    """
    if isinstance(target_cycles_per_frame, bool) or not isinstance(target_cycles_per_frame, int) \
            or target_cycles_per_frame < 1:
        raise ValueError(f"set_folding: target_cycles_per_frame must be an int >= 1, got {target_cycles_per_frame!r}")
    if not layers:
        raise ValueError("set_folding: no MVAU/VVAU layers to fold")
    names = [lay.name for lay in layers]
    if len(set(names)) != len(names):
        raise ValueError(f"set_folding: layer names must be unique, got {names}")
    folding = {lay.name: _fold_layer(lay, target_cycles_per_frame, mvau_wwidth_max) for lay in layers}
    worst = max(f.cycles for f in folding.values())
    if two_pass_relaxation and worst > target_cycles_per_frame:
        return set_folding(layers, worst, mvau_wwidth_max, two_pass_relaxation=False)
    return folding


def target_cycles(clock_hz: float, target_fps: float) -> int:
    """FINN's cycles-per-frame target for a clock and a frame rate: ``int(clock_hz / target_fps)``."""
    if not (clock_hz > 0 and target_fps > 0):
        raise ValueError(f"clock_hz and target_fps must be > 0, got {clock_hz}, {target_fps}")
    return int(clock_hz / target_fps)


def finn_node_names(layers: Sequence[FinnLayer], impl: str = "hls") -> dict[str, str]:
    """FINN node names (``MVAU_hls_0``, ``VVAU_hls_0``, ...) per layer, counted per op type in graph order."""
    if impl not in ("hls", "rtl"):
        raise ValueError(f"impl must be 'hls' or 'rtl', got {impl!r}")
    counters: dict[str, int] = {}
    out = {}
    for lay in layers:
        op = f"{lay.op}_{impl}"
        out[lay.name] = f"{op}_{counters.get(op, 0)}"
        counters[op] = counters.get(op, 0) + 1
    return out


def folding_config(layers: Sequence[FinnLayer], folding: Mapping[str, Folding], impl: str = "hls") -> dict[str, Any]:
    """FINN folding-config JSON (``{"Defaults": {}, "MVAU_hls_0": {"PE": .., "SIMD": .., ...}, ...}``)."""
    names = finn_node_names(layers, impl)
    cfg: dict[str, Any] = {"Defaults": {}}
    for lay in layers:
        f = folding[lay.name]
        entry: dict[str, Any] = {"PE": f.pe, "SIMD": f.simd, "ram_style": "auto", "resType": "auto"}
        if lay.op == "MVAU":
            entry.update({"mem_mode": "internal_decoupled", "runtime_writeable_weights": 0})
        cfg[names[lay.name]] = entry
    return cfg


def estimate_performance(
    layers: Sequence[FinnLayer], folding: Mapping[str, Folding], clock_hz: float, impl: str = "hls"
) -> dict[str, Any]:
    """FINN-style ``estimate_network_performance`` of a linear pipeline of folded layers."""
    if not layers:
        raise ValueError("estimate_performance: no layers")
    names = finn_node_names(layers, impl)
    cycles = {names[lay.name]: folding[lay.name].cycles for lay in layers}
    worst = max(cycles, key=cycles.get)
    clk_ns = 1e9 / clock_hz
    critical = sum(cycles.values())
    return {
        "critical_path_cycles": critical,
        "max_cycles": cycles[worst],
        "max_cycles_node_name": worst,
        "estimated_throughput_fps": 1e9 / clk_ns / cycles[worst],
        "estimated_latency_ns": critical * clk_ns,
        "layer_cycles": cycles,
    }


def finn_layers(model: Any) -> list[FinnLayer]:
    """MVAU/VVAU layers of a cleaned QONNX model (``Conv`` → MVAU, or VVAU when depthwise; ``Gemm``/``MatMul`` → MVAU).

    Weight bit-widths come from the ``Quant`` node feeding each weight (8 if none).

    Raises:
        ValueError: for grouped (neither dense nor depthwise) convolutions, which FINN does not map.
    """
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.transformation.infer_shapes import InferShapes

    if not isinstance(model, ModelWrapper):
        model = ModelWrapper(os.fspath(model))
    model = model.transform(InferShapes())
    layers = []
    for node in model.graph.node:
        if node.op_type not in ("Conv", "Gemm", "MatMul"):
            continue
        wshape = model.get_tensor_shape(node.input[1])
        oshape = model.get_tensor_shape(node.output[0])
        if wshape is None or oshape is None:
            raise ValueError(f"finn_layers: shapes of node {node.name!r} are unknown; run qonnx cleanup first")
        bits = _weight_bits(model, node.input[1])
        if node.op_type == "Conv":
            group = next((a.i for a in node.attribute if a.name == "group"), 1)
            cout, cin_g, kh, kw = wshape
            pixels = int(oshape[2] * oshape[3])
            if group == 1:
                layers.append(FinnLayer(node.name, "MVAU", int(cout), int(cin_g * kh * kw), pixels, bits))
            elif cin_g == 1 and group == cout:
                layers.append(FinnLayer(node.name, "VVAU", int(cout), int(kh * kw), pixels, bits))
            else:
                raise ValueError(f"finn_layers: node {node.name!r} is a grouped convolution (group={group}, "
                                 f"{cin_g} inputs per group); FINN maps only dense and depthwise convolutions")
        else:
            trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
            mw, mh = (wshape[1], wshape[0]) if trans_b else (wshape[0], wshape[1])
            pixels = int(_prod(oshape[:-1]) // (oshape[0] or 1)) if len(oshape) > 2 else 1
            layers.append(FinnLayer(node.name, "MVAU", int(mh), int(mw), max(1, pixels), bits))
    return layers


def _prod(values: Sequence[int]) -> int:
    out = 1
    for v in values:
        out *= int(v)
    return out


def _weight_bits(model: Any, tensor: str) -> int:
    producer = model.find_producer(tensor)
    if producer is not None and producer.op_type == "Quant":
        bw = model.get_initializer(producer.input[3])
        if bw is not None:
            return round(float(bw))
    return 8


# FINN compiler ----------------------------------------------------------------------------------
def finn_available() -> bool:
    """Whether the FINN compiler (``finn.builder.build_dataflow``) is importable."""
    try:
        return importlib.util.find_spec("finn.builder.build_dataflow") is not None
    except (ImportError, ValueError):
        return False


@dataclass
class FinnReport:
    """What FINN's estimate reports say (``output_dir/report/*.json``)."""

    network: dict[str, Any]
    layer_resources: dict[str, Any] = field(default_factory=dict)
    layer_cycles: dict[str, Any] = field(default_factory=dict)
    op_and_param_counts: dict[str, Any] = field(default_factory=dict)
    output_dir: str = ""

    @property
    def throughput_fps(self) -> float:
        return float(self.network["estimated_throughput_fps"])

    @property
    def latency_ns(self) -> float:
        return float(self.network["estimated_latency_ns"])

    @property
    def total_resources(self) -> dict[str, Any]:
        return dict(self.layer_resources.get("total", {}))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def read_finn_reports(output_dir: str | os.PathLike) -> FinnReport:
    """Read the estimate reports of a FINN build in ``output_dir``.

    Raises:
        FileNotFoundError: if ``report/estimate_network_performance.json`` is missing.
        ValueError: if it lacks FINN's throughput/latency fields.
    """
    report = Path(output_dir) / "report"
    perf = report / "estimate_network_performance.json"
    if not perf.is_file():
        raise FileNotFoundError(f"{perf} not found: not a FINN build output, or the build stopped before "
                                f"step_generate_estimate_reports")

    def load(name: str) -> dict[str, Any]:
        p = report / name
        if not p.is_file():
            return {}
        with open(p) as f:
            return json.load(f)

    network = load("estimate_network_performance.json")
    needed = {"estimated_throughput_fps", "estimated_latency_ns", "max_cycles", "critical_path_cycles"}
    missing = sorted(needed - set(network))
    if missing:
        raise ValueError(f"{perf}: missing FINN fields {missing}")
    return FinnReport(network, load("estimate_layer_resources.json"), load("estimate_layer_cycles.json"),
                      load("op_and_param_counts.json"), str(output_dir))


def run_finn_estimate(
    model_path: str | os.PathLike,
    output_dir: str | os.PathLike,
    clock_hz: float = 100e6,
    target_fps: int | None = None,
    folding_config_file: str | os.PathLike | None = None,
    fpga_part: str = "xczu7ev-ffvc1156-2-e",
) -> FinnReport:
    """FINN's estimate-only dataflow build of a QONNX model, then its reports.

    Runs ``build_dataflow_cfg`` with ``estimate_only_dataflow_steps`` and
    ``generate_outputs=[ESTIMATE_REPORTS]`` (no Vivado or Vitis HLS needed). Give ``target_fps`` for
    FINN's own folding or ``folding_config_file`` (e.g. from :func:`folding_config`). The default part
    is the ZCU104's XCZU7EV.

    Raises:
        RuntimeError: if the FINN compiler is not importable (it is not on PyPI: the ``finn`` name
            there is an unrelated placeholder; install it from https://github.com/Xilinx/finn).
    """
    if not finn_available():
        raise RuntimeError("the FINN compiler is not importable (PyPI's 'finn' is an unrelated placeholder); "
                           "install FINN from https://github.com/Xilinx/finn and set FINN_BUILD_DIR")
    if (target_fps is None) == (folding_config_file is None):
        raise ValueError("run_finn_estimate: give exactly one of target_fps or folding_config_file")
    from finn.builder import build_dataflow as build
    from finn.builder import build_dataflow_config as build_cfg

    cfg = build_cfg.DataflowBuildConfig(
        output_dir=os.fspath(output_dir),
        synth_clk_period_ns=1e9 / clock_hz,
        fpga_part=fpga_part,
        target_fps=target_fps,
        folding_config_file=None if folding_config_file is None else os.fspath(folding_config_file),
        steps=build_cfg.estimate_only_dataflow_steps,
        generate_outputs=[build_cfg.DataflowOutputType.ESTIMATE_REPORTS],
        enable_build_pdb_debug=False,
        verbose=False,
    )
    status = build.build_dataflow_cfg(os.fspath(model_path), cfg)
    if status != 0:
        raise RuntimeError(f"FINN's estimate-only build failed (status {status}); see "
                           f"{Path(output_dir) / 'build_dataflow.log'}")
    return read_finn_reports(output_dir)
