"""``ws-sushi`` command line (also ``python -m ws_sushi``): :func:`build_parser` and :func:`main`.

* ``ws-sushi simulate`` — serve a query stream (generated reference stream, a phases file, or a
  CSV/JSON trace) with SubNets of a SuperNet on a hardware profile, under SubGraph-Stationary
  caching and the baselines; prints latency, SLO attainment, served accuracy and off-chip energy.
* ``ws-sushi export`` — quantize one SubNet with brevitas, export it to QONNX, clean it with qonnx,
  check qonnx's execution against PyTorch, and write a FINN folding config with a FINN-style estimate
  (and run FINN's estimate-only build when the FINN compiler is importable).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["build_parser", "main"]


def _create_net(args: argparse.Namespace) -> Any:
    import timm
    import torch

    import ws_core  # noqa: F401  (registers the ws_* SuperNets)

    if not timm.is_model(args.model):
        raise ValueError(f"unknown model {args.model!r} (registered: {', '.join(timm.list_models('ws_*'))})")
    if getattr(args, "seed", None) is not None:
        torch.manual_seed(args.seed)  # an untrained SuperNet's weights: the same for the same --seed
    if args.checkpoint:
        from timm.models import split_model_name_tag

        from ws_core.checkpoint import CheckpointError, create_from_checkpoint, read_checkpoint_metadata

        architecture = read_checkpoint_metadata(args.checkpoint)["architecture"]
        if architecture != split_model_name_tag(args.model)[0]:
            raise CheckpointError(f"{args.checkpoint}: a checkpoint of {architecture!r}, not of --model "
                                  f"{args.model!r} (pass --model {architecture})")
        overrides = {} if args.num_classes is None else {"num_classes": args.num_classes}
        return create_from_checkpoint(args.checkpoint, **overrides).eval()
    try:
        net = timm.create_model(args.model, num_classes=args.num_classes)
    except RuntimeError as e:
        raise ValueError(f"cannot create model {args.model!r} ({e}); SuperNets: {timm.list_models('ws_*')}") from None
    if not hasattr(net, "weight_slices"):
        raise ValueError(f"model {args.model!r} is not a ws-core SuperNet; choose one of {timm.list_models('ws_*')}")
    return net.eval()


def _parse_subnet(net: Any, text: str) -> Any:
    if text == "min":
        return net.space.min()
    if text == "max":
        return net.space.max()
    path = Path(text)
    if path.is_file():
        text = path.read_text()
    try:
        values = json.loads(text)
    except json.JSONDecodeError:
        raise ValueError(f"--subnet must be 'min', 'max', a JSON file or a JSON object, got {text[:80]!r}") from None
    try:
        return net.space.validate(values)
    except ValueError as e:
        name = (getattr(net, "pretrained_cfg", None) or {}).get("architecture", type(net).__name__)
        raise ValueError(f"SubNet is outside the SuperNet {name}: {e}") from None


# simulate ---------------------------------------------------------------------------------------
def _block_compute(net: Any, path: str | None, device: str | None):
    """``(compute_ms, save)`` from a ws-core per-block latency table file, or ``(None, no-op)``.

    The table of this machine's CPU grows: blocks it lacks are timed here and ``save()`` writes it back.
    Another device's table must hold every block the candidates use (it cannot be timed here)."""
    if path is None:
        if device is not None:
            raise ValueError("--block-latency-device needs --block-latency-table")
        return None, lambda: None
    from ws_core.latency import BlockLatencyTable, device_key

    here = device_key("cpu")
    device = device or here
    if Path(path).is_file():
        tables = json.loads(Path(path).read_text())
        if device != here and device not in tables:
            raise ValueError(f"{path} has no block-latency table for device {device!r}; it has {sorted(tables)}")
        table = BlockLatencyTable.load(path, device)
    elif device != here:
        raise ValueError(f"--block-latency-table {path} does not exist; only this machine's CPU ({here!r}) can "
                         f"be measured here")
    else:
        table = BlockLatencyTable(here)
    size = len(table)
    if device == here:
        compute_ms = table.as_cost(net, 1, device="cpu")
    else:
        def compute_ms(cfg: Any) -> float:
            try:
                return table.predict(net, cfg, 1)
            except KeyError as e:
                raise ValueError(f"{path} ({device}): {e.args[0]}; measure them on that device") from None

    def save() -> None:
        if len(table) != size:
            table.save(path)
        print(f"compute: measured per-block latencies, {path} ({device}, {len(table)} blocks, "
              f"{len(table) - size} timed now); weight fetch: modelled from the hardware profile")

    return compute_ms, save


def _simulate(args: argparse.Namespace) -> int:
    import numpy as np

    from .accuracy import AccuracyTable, uniform_subnets
    from .hardware import load_profile
    from .sched import NoCache, StaticCache, SubGraphStationary
    from .simulate import build_system, compare_policies, format_summary
    from .stream import generate_stream, load_phases, read_trace, reference_phases, write_trace

    profile = load_profile(args.hardware)  # fails early on an unknown profile
    net = _create_net(args)
    if args.accuracy:
        table = AccuracyTable.load(args.accuracy)
    else:
        low, high = args.proxy_accuracy
        table = AccuracyTable.log_macs_proxy(net, uniform_subnets(net.space), low, high)
        print(f"note: no --accuracy table given; using {len(table)} uniform SubNets with a log-MACs proxy accuracy "
              f"in [{low}, {high}] (served accuracy is in proxy units)")
    compute_ms, save_blocks = _block_compute(net, args.block_latency_table, args.block_latency_device)
    system = build_system(net, table, profile, bits=args.bits, cache_bytes=args.cache_bytes, compute_ms=compute_ms)
    save_blocks()
    lat0 = system.costs.latency(None) * 1e3
    if args.trace:
        stream = read_trace(args.trace)
        source = f"trace {args.trace}"
    elif args.phases:
        phases, seed = load_phases(args.phases)
        stream = generate_stream(phases, seed=seed if args.seed is None else args.seed)
        source = f"phases {args.phases}"
    else:
        acc_range = None
        if args.objective == "latency":
            acc_range = (float(system.accuracy.min()), float(system.accuracy.max()))
        phases = reference_phases((float(lat0.min()), float(lat0.max())), acc_range, load=args.load,
                                  phase_s=args.phase_seconds, cycles=args.cycles)
        stream = generate_stream(phases, seed=0 if args.seed is None else args.seed)
        source = "reference stream" + (" (accuracy floors)" if acc_range else " (latency targets)")
    if args.save_trace:
        write_trace(stream, args.save_trace)
    builders = {"no-cache": NoCache, "static": StaticCache,
                "sgs": lambda: SubGraphStationary(window=args.window, period=args.period)}
    names = [n.strip() for n in args.policies.split(",") if n.strip()]
    unknown = [n for n in names if n not in builders]
    if unknown or not names:
        raise ValueError(f"--policies allows {sorted(builders)}, got {args.policies!r}")
    print(f"SuperNet {args.model}: {system.supernet_bytes / 1e6:.3f} MB at {system.bits}-bit weights; "
          f"{len(system.layouts)} candidate SubNets, {lat0.min():.3f}-{lat0.max():.3f} ms without cache on "
          f"{profile.name}; weight buffer {system.capacity_bytes / 1e6:.3f} MB")
    print(f"stream: {source}, {len(stream)} queries over {stream.duration_s:.2f} s; objective {args.objective}")
    results = compare_policies(stream, system, [builders[n]() for n in names], objective=args.objective)
    print(format_summary(results))
    if args.json:
        out = {"model": args.model, "hardware": profile.name, "bits": system.bits,
               "cache_bytes": system.capacity_bytes, "supernet_bytes": system.supernet_bytes,
               "queries": len(stream), "objective": args.objective, "stream": source,
               "accuracy_source": table.source,
               "policies": {n: r.summary() for n, r in results.items()}}
        Path(args.json).write_text(json.dumps(out, indent=1, default=lambda o: o.item() if isinstance(
            o, np.generic) else str(o)))
    return 0


# export -----------------------------------------------------------------------------------------
def _export(args: argparse.Namespace) -> int:
    import torch

    from .finn import (
        estimate_performance,
        finn_available,
        finn_layers,
        folding_config,
        run_finn_estimate,
        set_folding,
        target_cycles,
    )
    from .quant import QuantSpec, check_qonnx, export_qonnx, quantize_subnet

    spec = QuantSpec(args.weight_bits, None if args.act_bits == 0 else args.act_bits, args.input_bits)
    if args.finn_build and not finn_available():
        raise ValueError("--finn-build needs the FINN compiler, which is not importable here (PyPI's 'finn' is an "
                         "unrelated placeholder; install FINN from https://github.com/Xilinx/finn)")
    net = _create_net(args)
    cfg = _parse_subnet(net, args.subnet)
    sub = net.extract(cfg).eval()  # validates the SubNet before any data is made
    size = cfg["resolution"] if "resolution" in cfg else net.pretrained_cfg["input_size"][-1]
    g = torch.Generator().manual_seed(args.seed)
    if args.calibration_npy:
        import numpy as np

        data = torch.from_numpy(np.load(args.calibration_npy)).float()
        batches = list(data.split(8))
    else:
        batches = [torch.randn(8, getattr(net, "in_chans", 3), size, size, generator=g)
                   for _ in range(args.calibration_batches)]
    if args.recalibrate_bn:
        from ws_core.bn import recalibrate_bn

        recalibrate_bn(net, batches, cfg, num_batches=len(batches))
        sub = net.extract(cfg).eval()
    qsub = quantize_subnet(sub, spec, calibration=batches)
    x = batches[0][:2]
    model = export_qonnx(qsub, x, args.out)
    print(f"exported SubNet {cfg.id} ({args.model}, W{spec.weight_bits}A{spec.act_bits}) to {args.out}")
    if not args.no_check:
        diff = check_qonnx(model, qsub, x)
        with torch.no_grad():
            scale = float(qsub(x).abs().max())
        print(f"qonnx execution vs PyTorch: max |diff| = {diff:.3e} (max |output| = {scale:.3e})")
        if scale < 1e-6:
            print("note: the outputs are almost zero (an untrained SuperNet's BN statistics?); pass --recalibrate-bn "
                  "or a trained --checkpoint for a meaningful check")
        if not diff <= args.atol:
            print(f"ws-sushi export: error: qonnx output differs from PyTorch by {diff:.3e} > --atol {args.atol}",
                  file=sys.stderr)
            return 1
    layers = finn_layers(model)
    folding = set_folding(layers, target_cycles(args.clock_mhz * 1e6, args.target_fps))
    perf = estimate_performance(layers, folding, args.clock_mhz * 1e6)
    print(f"FINN-style estimate at {args.clock_mhz:g} MHz for {args.target_fps:g} fps: "
          f"{perf['estimated_throughput_fps']:.1f} fps, latency {perf['estimated_latency_ns'] / 1e6:.3f} ms, "
          f"{len(layers)} MVAU/VVAU layers, bottleneck {perf['max_cycles_node_name']} ({perf['max_cycles']} cycles)")
    if args.folding:
        Path(args.folding).write_text(json.dumps(folding_config(layers, folding), indent=1))
        print(f"folding config written to {args.folding}")
    if args.finn_build:
        report = run_finn_estimate(args.out, args.finn_build, clock_hz=args.clock_mhz * 1e6,
                                   target_fps=int(args.target_fps))
        print(f"FINN estimate-only build: {report.throughput_fps:.1f} fps, latency {report.latency_ns / 1e6:.3f} ms, "
              f"resources {report.total_resources}")
    return 0


def _positive_int(text: str) -> int:
    v = int(text)
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be an int >= 1, got {text}")
    return v


def _positive_float(text: str) -> float:
    v = float(text)
    if not (math.isfinite(v) and v > 0):
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {text}")
    return v


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ws-sushi", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    def model_args(p: argparse.ArgumentParser, default: str) -> None:
        p.add_argument("--model", default=default, help=f"a ws_* SuperNet from timm's registry (default {default})")
        p.add_argument("--num-classes", type=int, default=None,
                       help="classifier outputs (default: the checkpoint's or the model's)")
        p.add_argument("--checkpoint", default=None, help="a ws-core checkpoint (safetensors) to load")

    s = sub.add_parser("simulate", help="SubGraph-Stationary vs no cache vs static cache on a query stream")
    model_args(s, "ws_ofa_mbv3_100")
    s.add_argument("--hardware", default="zcu104", help="built-in profile (zcu104, mcu_m7) or a profile JSON path")
    s.add_argument("--bits", type=int, default=None, help="weight bit-width (default: the profile's)")
    s.add_argument("--cache-bytes", type=int, default=None, help="on-chip bytes for the cached SubGraph "
                   "(default: the profile's weight buffer)")
    s.add_argument("--block-latency-table", default=None, metavar="PATH",
                   help="compute latency of each SubNet from a ws-core per-block latency table (JSON, one table "
                        "per device) instead of the profile's MAC-array equation; weight fetch stays modelled")
    s.add_argument("--block-latency-device", default=None, metavar="KEY",
                   help="the device's table in that file (default: this machine's CPU, whose missing blocks "
                        "are timed here and added to the file)")
    s.add_argument("--accuracy", default=None, help="accuracy table JSON (its SubNets are the candidates)")
    s.add_argument("--proxy-accuracy", type=float, nargs=2, default=(0.70, 0.77), metavar=("LOW", "HIGH"),
                   help="without --accuracy: uniform SubNets with accuracy log-linear in MACs in [LOW, HIGH]")
    s.add_argument("--trace", default=None, help="a CSV/JSON trace (arrival_s, latency_target_ms[, accuracy_target])")
    s.add_argument("--phases", default=None, help="a phases JSON file to generate the stream from")
    s.add_argument("--load", type=_positive_float, default=0.3, help="reference stream: rate x slowest latency")
    s.add_argument("--phase-seconds", type=_positive_float, default=2.0, help="reference stream: seconds per phase")
    s.add_argument("--cycles", type=_positive_int, default=1, help="reference stream: repeats of the five phases")
    s.add_argument("--seed", type=int, default=None)
    s.add_argument("--objective", choices=("accuracy", "latency"), default="accuracy",
                   help="SushiSched: most accurate SubNet within the latency target, or fastest above the "
                        "accuracy floor")
    s.add_argument("--policies", default="no-cache,static,sgs", help="comma-separated: no-cache, static, sgs")
    s.add_argument("--window", type=_positive_int, default=64, help="SGS: recent queries the cache plan looks at")
    s.add_argument("--period", type=_positive_int, default=16, help="SGS: re-plan every N queries")
    s.add_argument("--save-trace", default=None, help="write the stream as a CSV/JSON trace")
    s.add_argument("--json", default=None, help="write the summaries as JSON")
    s.set_defaults(func=_simulate)

    e = sub.add_parser("export", help="quantized SubNet -> QONNX (brevitas, qonnx) + FINN folding config")
    model_args(e, "ws_ofa_mbv3_035_32")
    e.add_argument("--subnet", default="min", help="'min', 'max', a SubNet config JSON file or JSON object")
    e.add_argument("--out", required=True, help="QONNX output path (.onnx)")
    e.add_argument("--weight-bits", type=int, default=8)
    e.add_argument("--act-bits", type=int, default=8, help="activation bits (0: float activations)")
    e.add_argument("--input-bits", type=int, default=8)
    e.add_argument("--calibration-batches", type=_positive_int, default=4,
                   help="random N(0,1) batches for activation calibration when no --calibration-npy is given")
    e.add_argument("--calibration-npy", default=None, help="calibration inputs, a float array [N, C, H, W] (.npy)")
    e.add_argument("--recalibrate-bn", action="store_true",
                   help="re-estimate the SubNet's BN statistics on the calibration inputs before quantizing "
                        "(OFA practice for a SubNet taken from a SuperNet)")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--no-check", action="store_true", help="skip the qonnx-vs-PyTorch execution check")
    e.add_argument("--atol", type=float, default=1e-4, help="largest allowed |qonnx - PyTorch| difference")
    e.add_argument("--target-fps", type=_positive_float, default=1000.0, help="FINN folding target throughput")
    e.add_argument("--clock-mhz", type=_positive_float, default=100.0, help="FINN clock for folding and estimates")
    e.add_argument("--folding", default=None, help="write FINN's folding-config JSON here")
    e.add_argument("--finn-build", default=None, help="run FINN's estimate-only build into this folder "
                   "(needs the FINN compiler)")
    e.set_defaults(func=_export)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``ws-sushi``; returns the exit status (2 for bad input, with the reason on stderr)."""
    from .quant import ExportError

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, KeyError, ExportError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"ws-sushi {args.command}: error: {msg}", file=sys.stderr)
        return 2
