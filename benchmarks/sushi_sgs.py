"""SUSHI benchmark: SubGraph-Stationary (SGS) caching vs no cache vs static caches, over several stream seeds.

For each setting (SuperNet, hardware profile, weight bit-width) and each query stream, the same stream is
served four times by the ws-sushi simulator — with no weight cache; with a static cache of the largest
SubGraph common to all candidate SubNets ("static", which leaves the rest of the buffer empty when the
buffer is larger); with a static cache chosen with hindsight ("static-hindsight": SGS's own planner run
once over the whole stream's SubNets and targets, so it may fill the buffer — a static baseline that knows
the future); and with SGS (the cached SubGraph re-planned every 16 queries from the last 64) — once per
stream seed (``--seeds``, default 0,1,2). The tables give each policy's mean latency, p99 latency, SLO
attainment, served accuracy, off-chip energy and cache updates as mean ± standard error over the seeds,
and the changes between policies paired per seed (``ws_sushi.seeds``, on ``ws_core.stats``; "(n.s.)":
the 95 % t interval includes 0). Latency and energy are outputs of the analytical accelerator model
(``ws_sushi.accel``), not hardware measurements.

Candidates: the 27 "uniform" SubNets of the OFA MobileNetV3 space (one depth, expand ratio and kernel
size everywhere; largest resolution). Their accuracy:

* ``fmnist4`` — **measured**: the trained Fashion-MNIST SuperNet of ``--checkpoint`` (``ws_ofa_mbv3_035_28``,
  10 classes, written by ``make demo`` to ``runs/<timestamp>/supernet.safetensors``) on the ``mcu_m7``
  profile at 4-bit weights; each candidate's top-1 accuracy on the first ``--eval-images`` of the 10,000
  held-out Fashion-MNIST images after BN recalibration on ``--bn-batches`` batches of 256 training images
  (the main job's data split and evaluation: ``weightshare.pipeline.make_datamodule`` and
  ``top1_accuracy``, ``ws_core.bn.recalibrate_bn``). Measured once; the seeds vary only the stream.
* ``fpga4``, ``fpga8``, ``mcu4`` — untrained SuperNets: a **proxy**, log-linear in MACs between 0.70 and
  0.77; served accuracy there is in proxy units, labelled "proxy (log-linear in MACs)" wherever printed.

Streams (``ws_sushi.reference_phases``, three cycles of five phases, about ``--queries-per-phase``
queries per phase, Poisson arrivals at 0.3 × the slowest SubNet's rate, twice that in the burst
phase), with f/s the fastest/slowest candidate latency without cache and m = (f + s) / 2:

* ``latency-targets`` — targets 1.3·f, m, 1.1·s, U[1.2·f, 2·f] (burst), 0.8·m; SushiSched serves the
  most accurate SubNet that meets the remaining budget (objective "accuracy");
* ``accuracy-floors`` — latency target 1.2·s, accuracy floors at 0.3, 0.8, 0.6, 0.1 (burst), 0.9 of
  the accuracy range; SushiSched serves the fastest SubNet above the floor (objective "latency"), so
  all three policies serve (almost) the same SubNets and only the caching differs.

    python benchmarks/sushi_sgs.py --settings fmnist4 --checkpoint runs/<timestamp>/supernet.safetensors
    python benchmarks/sushi_sgs.py --settings fpga4,fpga8,mcu4 [--seeds 0,1,2] [--queries-per-phase 150]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from itertools import islice
from pathlib import Path

import numpy as np
import timm
import torch

import ws_core  # noqa: F401  (registers the ws_* SuperNets)
from ws_core.stats import mean_se
from ws_sushi import (
    AccuracyTable,
    NoCache,
    StaticCache,
    SubGraphStationary,
    build_system,
    common_subgraph,
    compare_policies,
    generate_stream,
    plan_subgraph,
    reference_phases,
    simulate,
    supernet_subgraph,
    uniform_subnets,
)
from ws_sushi.accuracy import PROXY_LABEL
from ws_sushi.seeds import difference, format_change, policy_stats, relative_change, stream_verdict, within

SETTINGS = {
    "fpga4": ("ws_ofa_mbv3_100", 1000, "zcu104", 4),
    "fpga8": ("ws_ofa_mbv3_100", 1000, "zcu104", 8),
    "mcu4": ("ws_ofa_mbv3_035_32", 10, "mcu_m7", 4),
    "fmnist4": ("ws_ofa_mbv3_035_28", 10, "mcu_m7", 4),
}
#: settings whose accuracies are measured on a trained checkpoint (the others use the MACs proxy)
MEASURED = {"fmnist4"}
STREAMS = {"latency-targets": "accuracy", "accuracy-floors": "latency"}
PAIRS = (("sgs", "no-cache"), ("sgs", "static"), ("sgs", "static-hindsight"), ("static", "no-cache"),
         ("static-hindsight", "no-cache"))
#: SUSHI's headline (MLSys 2023; the same numbers in the IEEE Micro 2023 version, latency there up to 32 %)
PAPER = {"latency": "up to -25%", "accuracy": "+0.98 points", "energy": "up to -78.7%"}


def _hindsight_static(system, stream, objective: str, served) -> StaticCache:
    """A static cache chosen with hindsight: SGS's planner (``plan_subgraph``) run once over the whole stream —
    the SubNets served without cache, every query's targets — so it may fill the whole weight buffer."""
    ctx = system.context(objective)
    sub = plan_subgraph(ctx.evaluate, ctx.accuracy, ctx.subgraphs, served, stream.latency_target_s,
                        stream.accuracy_target, ctx.capacity_bytes, ctx.bits, ctx.priority, None, objective, ctx.memo)
    policy = StaticCache(sub)
    policy.name = "static-hindsight"
    return policy


def _checkpoint_net(path: str | None):
    from ws_core.checkpoint import create_from_checkpoint, read_checkpoint_metadata

    model = SETTINGS["fmnist4"][0]
    if path is None or not Path(path).is_file():
        raise SystemExit(f"sushi_sgs.py: setting fmnist4 needs a trained Fashion-MNIST SuperNet ({model}): "
                         + ("pass --checkpoint PATH" if path is None else f"{path} does not exist")
                         + "; `make demo` trains one and writes runs/<timestamp>/supernet.safetensors")
    meta = read_checkpoint_metadata(path)
    if meta["architecture"] != model or meta["num_classes"] != 10:
        raise SystemExit(f"sushi_sgs.py: {path} is a checkpoint of {meta['architecture']} with "
                         f"{meta['num_classes']} classes; fmnist4 needs {model} with 10 (from `make demo`)")
    return create_from_checkpoint(path).eval()


def _measured_table(net, args: argparse.Namespace) -> tuple[AccuracyTable, float]:
    """The 27 uniform SubNets' held-out accuracy after BN recalibration, with the main job's data and helpers."""
    from weightshare.pipeline import PipelineConfig, make_datamodule, top1_accuracy
    from ws_core.bn import kept_bn_buffers, recalibrate_bn

    t0 = time.perf_counter()
    dm = make_datamodule(PipelineConfig(data_root=args.data_root, download=False), 28)
    try:
        dm.prepare_data()
    except FileNotFoundError as e:
        raise SystemExit(f"sushi_sgs.py: Fashion-MNIST is not under {args.data_root} (`make data` prepares it): "
                         f"{e}") from None
    dm.setup()
    fmt = torch.channels_last  # as the main job's search: same values, about half the CPU time
    calibration = [(x.contiguous(memory_format=fmt), y)
                   for x, y, *_ in islice(dm.calibration_dataloader(), args.bn_batches)]
    held_out, n = [], 0
    for x, y, *_ in dm.test_dataloader():
        take = min(len(y), args.eval_images - n)
        held_out.append((x[:take].contiguous(memory_format=fmt), y[:take]))
        n += take
        if n >= args.eval_images:
            break
    device = torch.device("cpu")
    print(f"\nMeasuring the 27 candidates: BN recalibration on {sum(len(y) for _, y in calibration):,} training "
          f"images ({len(calibration)} batches), top-1 on the first {n:,} of the 10,000 held-out images")

    def evaluate(cfg) -> float:
        recalibrate_bn(net, calibration, cfg, num_batches=len(calibration))
        with net.subnet(cfg):
            return top1_accuracy(net, held_out, device, dm.num_classes)

    net.to(memory_format=fmt)
    try:
        with kept_bn_buffers(net):
            table = AccuracyTable.measure(uniform_subnets(net.space), evaluate, metric="top1, held-out")
    finally:
        net.to(memory_format=torch.contiguous_format)
    return table, time.perf_counter() - t0


def _print_table(net, table: AccuracyTable) -> None:
    from ws_core import CostModel
    from ws_core.search import spearman

    costs = CostModel(net)
    rows = sorted(((float(costs.macs(c)), c, table.accuracy(c)) for c in table.configs), key=lambda r: r[0])
    print("\n| SubNet | depth | expand | kernel | MMACs | held-out top-1 % (measured) |\n"
          "|---|---:|---:|---:|---:|---:|")
    for macs, c, acc in rows:
        print(f"| {c.id} | {c['depth'][0]} | {c['expand'][0]} | {c['kernel'][0]} | {macs / 1e6:.2f} "
              f"| {100 * acc:.2f} |")
    print(f"\nSpearman(MACs, accuracy) over the 27: {spearman([r[0] for r in rows], [r[2] for r in rows]):.2f}; "
          f"range {100 * min(r[2] for r in rows):.2f}–{100 * max(r[2] for r in rows):.2f} %")


def _setting(key: str, args: argparse.Namespace, seeds: list[int]) -> tuple[dict, list[str], list[tuple]]:
    model, classes, hardware, bits = SETTINGS[key]
    t0 = time.perf_counter()
    measure_s = None
    if key in MEASURED:
        net = _checkpoint_net(args.checkpoint)
        table, measure_s = _measured_table(net, args)
    else:
        torch.manual_seed(seeds[0])
        net = timm.create_model(model, num_classes=classes)
        table = AccuracyTable.log_macs_proxy(net, uniform_subnets(net.space), 0.70, 0.77)
    system = build_system(net, table, hardware, bits=bits)
    lat0 = system.costs.latency(None) * 1e3
    fast, slow = float(lat0.min()), float(lat0.max())
    phase_s = args.queries_per_phase * (slow / 1e3) / args.load
    source = f"measured on {args.checkpoint}" if key in MEASURED else PROXY_LABEL
    print(f"\n## {key}: {model} ({classes} classes) on {hardware}, {bits}-bit weights; accuracy {source}\n")
    shared = common_subgraph(lay.subgraph for lay in system.layouts).nbytes(bits) / 1e6
    print(f"SuperNet {system.supernet_bytes / 1e6:.3f} MB, SubGraph shared by all 27 candidates {shared:.3f} MB, "
          f"weight buffer {system.capacity_bytes / 1e6:.3f} MB ({system.capacity_bytes / system.supernet_bytes:.0%} "
          f"of the SuperNet); candidate latency without cache {fast:.3f}–{slow:.3f} ms (set-up "
          f"{time.perf_counter() - t0:.1f} s" + (f", of which accuracy measurement {measure_s:.0f} s)" if measure_s
                                                  else ")"))
    if key in MEASURED:
        _print_table(net, table)
    dump = {"accuracy_table": table.to_dict()} if key in MEASURED else {}
    goals, headline = [], []
    for stream_name, objective in STREAMS.items():
        acc_range = (float(system.accuracy.min()), float(system.accuracy.max())) if objective == "latency" else None
        phases = reference_phases((fast, slow), acc_range, load=args.load, phase_s=phase_s, cycles=args.cycles)
        runs, replay_change, queries = [], [], []
        t1 = time.perf_counter()
        for seed in seeds:
            stream = generate_stream(phases, seed=seed)
            results = compare_policies(stream, system, [NoCache(), StaticCache(),
                                                        SubGraphStationary(args.window, args.period)], objective)
            best = _hindsight_static(system, stream, objective, results["no-cache"].subnet)
            results = {**results, best.name: simulate(stream, system, best, objective)}
            runs.append({name: r.summary() for name, r in results.items()})
            replay = float(system.costs.latency(None)[results["sgs"].subnet].mean() * 1e3)
            replay_change.append(runs[-1]["sgs"]["mean_service_ms"] / replay - 1)
            queries.append(len(stream))
        label = runs[0]["no-cache"]["accuracy_label"]
        print(f"\n### {key}, stream {stream_name}: {len(seeds)} stream seeds {seeds}, "
              f"{min(queries)}–{max(queries)} queries each (simulated in {time.perf_counter() - t1:.1f} s)\n")
        print(f"| policy | mean ms | p99 ms | SLO met | served accuracy %, {label} | off-chip mJ | cache updates |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for name, s in policy_stats(runs).items():
            print(f"| {name} | {s['mean_latency_ms'].format(1, 3)} | {s['p99_latency_ms'].format(1, 3)} "
                  f"| {s['slo_attainment'].format(1, 3)} | {s['served_accuracy'].format(100, 2)} "
                  f"| {s['offchip_energy_mj'].format(1, 2)} | {s['cache_updates'].format(1, 1)} |")
        print(f"\n| change (paired per seed) | Δ mean latency | Δ p99 latency | Δ off-chip energy "
              f"| Δ served accuracy (points, {label}) |\n|---|---:|---:|---:|---:|")
        changes = {}
        for a, b in PAIRS:
            c = {"latency": relative_change(runs, "mean_latency_ms", a, b),
                 "p99": relative_change(runs, "p99_latency_ms", a, b),
                 "energy": relative_change(runs, "offchip_energy_mj", a, b),
                 "accuracy": difference(runs, "served_accuracy", a, b)}
            changes[f"{a} vs {b}"] = c
            print(f"| {a} vs {b} | {format_change(c['latency'])} | {format_change(c['p99'])} "
                  f"| {format_change(c['energy'])} | {format_change(c['accuracy'], 100, '', 2)} |")
        rc = mean_se(replay_change)
        print(f"\nsame SubNets (those SGS served, replayed without cache): SGS's mean service time "
              f"{format_change(rc)} vs no cache")
        print(f"\nverdict ({key}/{stream_name}, {len(seeds)} seeds): {stream_verdict(runs)}")
        lat, en = changes["sgs vs no-cache"]["latency"], changes["sgs vs no-cache"]["energy"]
        if within(lat, -0.20) and within(en, -0.50):
            goals.append(f"{key}/{stream_name} (latency {format_change(lat)}, off-chip energy {format_change(en)})")
        headline.append((f"{key}/{stream_name}", label, changes))
        dump[stream_name] = {"seeds": seeds, "queries": queries, "runs": runs,
                             "sgs_service_vs_same_subnets_no_cache": replay_change,
                             "changes": {k: {m: {"mean": v.mean, "se": v.se, "n": v.n} for m, v in c.items()}
                                         for k, c in changes.items()}}
    return dump, goals, headline


def _sweep(fractions: list[float], args: argparse.Namespace, seeds: list[int]) -> list[dict]:
    """fpga4 setting, accuracy-floors stream, weight buffer varied: where SGS beats the static cache."""
    model, classes, hardware, bits = SETTINGS["fpga4"]
    torch.manual_seed(seeds[0])
    net = timm.create_model(model, num_classes=classes)
    table = AccuracyTable.log_macs_proxy(net, uniform_subnets(net.space), 0.70, 0.77)
    print(f"\n## Weight-buffer sweep: {model} on {hardware} (bandwidth, clock, energies unchanged), {bits}-bit "
          f"weights, accuracy-floors stream, {len(seeds)} stream seeds {seeds}\n")
    print("| buffer MB | of SuperNet | static: Δ latency | static: Δ off-chip E | SGS: Δ latency | SGS: Δ off-chip E "
          "| SGS vs static: Δ off-chip E |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    rows, phases = [], None
    supernet_bytes = supernet_subgraph(net).nbytes(bits)
    for frac in fractions:
        system = build_system(net, table, hardware, bits=bits, cache_bytes=int(frac * supernet_bytes))
        if phases is None:
            lat0 = system.costs.latency(None) * 1e3
            slow = float(lat0.max())
            phases = reference_phases((float(lat0.min()), slow), (float(system.accuracy.min()),
                                      float(system.accuracy.max())), load=args.load,
                                      phase_s=args.queries_per_phase * (slow / 1e3) / args.load, cycles=args.cycles)
        runs = []
        for seed in seeds:
            res = compare_policies(generate_stream(phases, seed=seed), system,
                                   [NoCache(), StaticCache(), SubGraphStationary(args.window, args.period)], "latency")
            runs.append({k: r.summary() for k, r in res.items()})
        cells = [format_change(relative_change(runs, m, p, "no-cache"))
                 for p in ("static", "sgs") for m in ("mean_latency_ms", "offchip_energy_mj")]
        vs = format_change(relative_change(runs, "offchip_energy_mj", "sgs", "static"))
        print(f"| {system.capacity_bytes / 1e6:.3f} | {frac:.0%} | " + " | ".join(cells) + f" | {vs} |")
        rows.append({"cache_bytes": system.capacity_bytes, "fraction": frac, "seeds": seeds, "runs": runs})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settings", default="fpga4,fpga8,mcu4,fmnist4", help=f"comma-separated from {list(SETTINGS)}")
    parser.add_argument("--checkpoint", default=None,
                        help="trained Fashion-MNIST SuperNet for fmnist4 (`make demo` writes "
                             "runs/<timestamp>/supernet.safetensors)")
    parser.add_argument("--data-root", default="data", help="Fashion-MNIST folder (`make data`)")
    parser.add_argument("--bn-batches", type=int, default=4, help="BN recalibration batches of 256 training images")
    parser.add_argument("--eval-images", type=int, default=10000, help="held-out images per candidate (<= 10,000)")
    parser.add_argument("--seeds", default="0,1,2", help="stream seeds (comma-separated; >= 3 for a spread)")
    parser.add_argument("--queries-per-phase", type=int, default=150)
    parser.add_argument("--cycles", type=int, default=3)
    parser.add_argument("--load", type=float, default=0.3)
    parser.add_argument("--window", type=int, default=64)
    parser.add_argument("--period", type=int, default=16)
    parser.add_argument("--sweep", default="0.2,0.35,0.5,0.65,0.8",
                        help="weight-buffer sizes (fractions of the SuperNet) for the fpga4 buffer sweep; '' to skip")
    parser.add_argument("--json", default=None, help="also write all per-seed summaries and changes as JSON")
    args = parser.parse_args()
    keys = [k.strip() for k in args.settings.split(",") if k.strip()]
    unknown = [k for k in keys if k not in SETTINGS]
    if unknown:
        parser.error(f"unknown settings {unknown}; choose from {list(SETTINGS)}")
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    if not seeds or len(set(seeds)) != len(seeds):
        parser.error(f"--seeds must list distinct integers, got {args.seeds!r}")
    if not 1 <= args.eval_images <= 10000 or args.bn_batches < 1:
        parser.error("--eval-images must be in 1..10000 and --bn-batches >= 1")
    if "fmnist4" in keys:
        _checkpoint_net(args.checkpoint)  # fail before anything runs

    start = time.perf_counter()
    print(f"# SUSHI SGS benchmark — {platform.machine()} {platform.processor() or ''}, Python "
          f"{platform.python_version()}, torch {torch.__version__}, numpy {np.__version__}; stream seeds {seeds}")
    print("\nLatency and energy: analytical accelerator model (ws_sushi.accel), not hardware measurements. "
          f"Accuracy: measured for {sorted(MEASURED)}; elsewhere {PROXY_LABEL} between 0.70 and 0.77 — it orders "
          "SubNets by MACs, and its differences are not accuracy points.")
    goals, headline, dump = [], [], {}
    for key in keys:
        d, g, h = _setting(key, args, seeds)
        dump[key] = d
        goals += g
        headline += h
    fractions = [float(f) for f in args.sweep.split(",") if f.strip()]
    if fractions and "fpga4" in keys:
        dump["sweep"] = _sweep(fractions, args, seeds)

    print(f"\n## Headline: SUSHI paper vs this run (changes are mean ± SE over {len(seeds)} stream seeds, paired)\n")
    print("| source | comparison | Δ mean latency | Δ served accuracy (points) | accuracy | Δ off-chip energy |\n"
          "|---|---|---:|---:|---|---:|")
    print(f"| SUSHI, MLSys 2023 (paper, best case) | SGS vs no SGS | {PAPER['latency']} | {PAPER['accuracy']} "
          f"| paper's | {PAPER['energy']} |")
    for name, label, changes in headline:
        for pair in ("sgs vs no-cache", "sgs vs static", "sgs vs static-hindsight"):
            c = changes[pair]
            print(f"| {name} | {pair} | {format_change(c['latency'])} | {format_change(c['accuracy'], 100, '', 2)} "
                  f"| {label} | {format_change(c['energy'])} |")
    print("\nGoal (SGS vs no cache: >= 20% lower mean latency and >= 50% lower off-chip energy, over the whole 95% "
          "t interval) met for: " + (", ".join(goals) if goals else "none"))
    print(f"\nTotal wall time {time.perf_counter() - start:.0f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dump, f, indent=1)


if __name__ == "__main__":
    main()
