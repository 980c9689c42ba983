"""SUSHI benchmark: SubGraph-Stationary (SGS) caching vs no cache vs a static cache, in one run.

For each documented setting (SuperNet, hardware profile, weight bit-width) and each documented query
stream, the same stream is served three times by the ws-sushi simulator — with no weight cache, with
a static cache of the largest SubGraph common to all candidate SubNets, and with SGS (the cached
SubGraph re-planned every 16 queries from the last 64) — and the table reports mean/p99 end-to-end
latency, SLO attainment, served accuracy and off-chip energy, plus the ratios to no cache.

Candidates: the 27 "uniform" SubNets of the OFA MobileNetV3 space (one depth, expand ratio and
kernel size everywhere; largest resolution). Accuracy: a log-MACs proxy between 0.70 and 0.77 (no
trained SuperNet is used here), so served accuracy is in proxy units — every accuracy column and
difference below is labelled "proxy (log-linear in MACs)", and the JSON summaries carry
``accuracy_label``.

Streams (``ws_sushi.reference_phases``, three cycles of five phases, about ``--queries-per-phase``
queries per phase, Poisson arrivals at 0.3 × the slowest SubNet's rate, twice that in the burst
phase), with f/s the fastest/slowest candidate latency without cache and m = (f + s) / 2:

* ``latency-targets`` — targets 1.3·f, m, 1.1·s, U[1.2·f, 2·f] (burst), 0.8·m; SushiSched serves the
  most accurate SubNet that meets the remaining budget (objective "accuracy");
* ``accuracy-floors`` — latency target 1.2·s, accuracy floors at 0.3, 0.8, 0.6, 0.1 (burst), 0.9 of
  the accuracy range; SushiSched serves the fastest SubNet above the floor (objective "latency"), so
  all three policies serve the same SubNets and only the caching differs.

The "same SubNets" line replays the SubNets SGS served without any cache (service time only).

    python benchmarks/sushi_sgs.py [--settings fpga4,fpga8,mcu4] [--queries-per-phase 150] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np
import timm
import torch

import ws_core  # noqa: F401  (registers the ws_* SuperNets)
from ws_sushi import (
    AccuracyTable,
    NoCache,
    StaticCache,
    SubGraphStationary,
    build_system,
    common_subgraph,
    compare_policies,
    generate_stream,
    reference_phases,
    supernet_subgraph,
    uniform_subnets,
)
from ws_sushi.accuracy import PROXY_LABEL

SETTINGS = {
    "fpga4": ("ws_ofa_mbv3_100", 1000, "zcu104", 4),
    "fpga8": ("ws_ofa_mbv3_100", 1000, "zcu104", 8),
    "mcu4": ("ws_ofa_mbv3_035_32", 10, "mcu_m7", 4),
}
STREAMS = {"latency-targets": "accuracy", "accuracy-floors": "latency"}


def _row(name: str, s: dict, base: dict | None) -> str:
    rel = ""
    if base is not None:
        rel = (f"{s['mean_latency_ms'] / base['mean_latency_ms'] - 1:>+7.1%} | "
               f"{s['offchip_energy_mj'] / base['offchip_energy_mj'] - 1:>+7.1%} | "
               f"{100 * (s['served_accuracy'] - base['served_accuracy']):>+6.2f}")
    else:
        rel = f"{'':>7} | {'':>7} | {'':>6}"
    return (f"| {name:<8} | {s['mean_latency_ms']:>8.3f} | {s['p99_latency_ms']:>8.3f} | {s['slo_attainment']:>6.3f} "
            f"| {s['served_accuracy']:>7.4f} | {s['offchip_energy_mj']:>9.2f} | {s['cache_updates']:>3d} | {rel} |")


def _sweep(fractions: list[float], args: argparse.Namespace) -> list[dict]:
    """fpga4 setting, accuracy-floors stream, weight buffer varied: where SGS beats the static cache."""
    model, classes, hardware, bits = SETTINGS["fpga4"]
    torch.manual_seed(args.seed)
    net = timm.create_model(model, num_classes=classes)
    table = AccuracyTable.log_macs_proxy(net, uniform_subnets(net.space), 0.70, 0.77)
    print(f"\n## Weight-buffer sweep: {model} on {hardware} (bandwidth, clock, energies unchanged), {bits}-bit "
          f"weights, accuracy-floors stream\n")
    print("| buffer MB | of SuperNet | static: Δ latency | static: Δ off-chip E | SGS: Δ latency | SGS: Δ off-chip E "
          "| SGS vs static: Δ off-chip E |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    rows = []
    stream = None
    supernet_bytes = supernet_subgraph(net).nbytes(bits)
    for frac in fractions:
        system = build_system(net, table, hardware, bits=bits, cache_bytes=int(frac * supernet_bytes))
        if stream is None:
            lat0 = system.costs.latency(None) * 1e3
            slow = float(lat0.max())
            phases = reference_phases((float(lat0.min()), slow), (float(system.accuracy.min()),
                                      float(system.accuracy.max())), load=args.load,
                                      phase_s=args.queries_per_phase * (slow / 1e3) / args.load, cycles=args.cycles)
            stream = generate_stream(phases, seed=args.seed)
        res = compare_policies(stream, system, [NoCache(), StaticCache(),
                                                SubGraphStationary(args.window, args.period)], "latency")
        s = {k: r.summary() for k, r in res.items()}
        b = s["no-cache"]
        d = {k: (s[k]["mean_latency_ms"] / b["mean_latency_ms"] - 1, s[k]["offchip_energy_mj"] / b["offchip_energy_mj"]
                 - 1) for k in ("static", "sgs")}
        vs = s["sgs"]["offchip_energy_mj"] / s["static"]["offchip_energy_mj"] - 1
        print(f"| {system.capacity_bytes / 1e6:.3f} | {frac:.0%} | {d['static'][0]:+.1%} | {d['static'][1]:+.1%} "
              f"| {d['sgs'][0]:+.1%} | {d['sgs'][1]:+.1%} | {vs:+.1%} |")
        rows.append({"cache_bytes": system.capacity_bytes, "fraction": frac, "policies": s})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settings", default="fpga4,fpga8,mcu4", help=f"comma-separated from {sorted(SETTINGS)}")
    parser.add_argument("--queries-per-phase", type=int, default=150)
    parser.add_argument("--cycles", type=int, default=3)
    parser.add_argument("--load", type=float, default=0.3)
    parser.add_argument("--window", type=int, default=64)
    parser.add_argument("--period", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sweep", default="0.2,0.35,0.5,0.65,0.8",
                        help="weight-buffer sizes (fractions of the SuperNet) for the fpga4 buffer sweep; '' to skip")
    parser.add_argument("--json", default=None, help="also write all summaries as JSON")
    args = parser.parse_args()

    print(f"# SUSHI SGS benchmark — {platform.machine()} {platform.processor() or ''}, Python "
          f"{platform.python_version()}, torch {torch.__version__}, numpy {np.__version__}")
    print(f"\nAccuracy: {PROXY_LABEL} between 0.70 and 0.77 for all tables below — it orders SubNets by MACs; "
          f"its differences are not measured accuracy points.")
    goal_hits, dump = [], {}
    for key in [k.strip() for k in args.settings.split(",") if k.strip()]:
        model, classes, hardware, bits = SETTINGS[key]
        t0 = time.perf_counter()
        torch.manual_seed(args.seed)
        net = timm.create_model(model, num_classes=classes)
        table = AccuracyTable.log_macs_proxy(net, uniform_subnets(net.space), 0.70, 0.77)
        system = build_system(net, table, hardware, bits=bits)
        lat0 = system.costs.latency(None) * 1e3
        fast, slow = float(lat0.min()), float(lat0.max())
        phase_s = args.queries_per_phase * (slow / 1e3) / args.load
        print(f"\n## {key}: {model} ({classes} classes) on {hardware}, {bits}-bit weights\n")
        shared = common_subgraph(lay.subgraph for lay in system.layouts).nbytes(bits) / 1e6
        print(f"SuperNet {system.supernet_bytes / 1e6:.3f} MB, SubGraph shared by all 27 candidates {shared:.3f} MB, "
              f"weight buffer {system.capacity_bytes / 1e6:.3f} MB; candidate latency without cache "
              f"{fast:.3f}–{slow:.3f} ms (set-up {time.perf_counter() - t0:.1f} s)")
        for stream_name, objective in STREAMS.items():
            acc_range = None
            if objective == "latency":
                acc_range = (float(system.accuracy.min()), float(system.accuracy.max()))
            phases = reference_phases((fast, slow), acc_range, load=args.load, phase_s=phase_s, cycles=args.cycles)
            stream = generate_stream(phases, seed=args.seed)
            t1 = time.perf_counter()
            results = compare_policies(stream, system, [NoCache(), StaticCache(),
                                                        SubGraphStationary(args.window, args.period)], objective)
            sim_s = time.perf_counter() - t1
            summaries = {name: r.summary() for name, r in results.items()}
            base = summaries["no-cache"]
            print(f"\n### stream {stream_name}: {len(stream)} queries over {stream.duration_s:.1f} s "
                  f"(simulated in {sim_s:.1f} s)\n")
            acc_label = summaries["no-cache"]["accuracy_label"]
            print(f"| policy   |  mean ms |   p99 ms | SLO met | accuracy, {acc_label} | off-chip mJ | cache updates "
                  f"| Δ mean latency | Δ off-chip energy | Δ accuracy (points), {acc_label} |")
            print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
            for name, s in summaries.items():
                print(_row(name, s, None if name == "no-cache" else base))
            sgs = results["sgs"]
            replay = float(system.costs.latency(None)[sgs.subnet].mean() * 1e3)
            print(f"\nsame SubNets (those SGS served): mean service {replay:.3f} ms without cache vs "
                  f"{summaries['sgs']['mean_service_ms']:.3f} ms with SGS "
                  f"({summaries['sgs']['mean_service_ms'] / replay - 1:+.1%})")
            dl = 1 - summaries["sgs"]["mean_latency_ms"] / base["mean_latency_ms"]
            de = 1 - summaries["sgs"]["offchip_energy_mj"] / base["offchip_energy_mj"]
            if dl >= 0.20 and de >= 0.50:
                goal_hits.append(f"{key}/{stream_name} (latency -{dl:.1%}, off-chip energy -{de:.1%})")
            dump[f"{key}/{stream_name}"] = {"queries": len(stream), "policies": summaries,
                                            "same_subnets_no_cache_service_ms": replay}
    fractions = [float(f) for f in args.sweep.split(",") if f.strip()]
    if fractions:
        dump["sweep"] = _sweep(fractions, args)
    print("\nGoal (SGS vs no cache: >= 20% lower mean latency and >= 50% lower off-chip energy) met for: "
          + (", ".join(goal_hits) if goal_hits else "none"))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dump, f, indent=1)


if __name__ == "__main__":
    main()
