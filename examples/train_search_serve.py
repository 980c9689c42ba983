"""Train one SuperNet, pick a Pareto set of SubNets, serve them under bursty load — step by step.

This is what ``ws demo`` (and ``make demo``) runs, written out with the packages' public APIs so each
step can be changed: another SuperNet or data set, another shrinking policy, another served set,
another trace or policy.

    python examples/train_search_serve.py                 # ~8 min on 2 CPU cores
    python examples/train_search_serve.py --epochs 2      # a quick look
"""

from __future__ import annotations

import argparse
from datetime import datetime, timezone
from pathlib import Path

import timm

from weightshare import (
    PipelineConfig,
    PipelineResult,
    ServingRun,
    choose_load,
    deploy_served_set,
    evaluate_subnets,
    make_datamodule,
    measure_capacity,
    measure_overhead,
    select_served,
    serve_and_replay,
    train_supernet,
    write_report,
    ws_serve_process,
)
from ws_serve import bursty_trace


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--out", default="runs")
    args = parser.parse_args()
    cfg = PipelineConfig(epochs=args.epochs, out_dir=args.out).validate()
    run_dir = Path(cfg.out_dir) / datetime.now(timezone.utc).strftime("example-%Y%m%d-%H%M%S")
    run_dir.mkdir(parents=True)

    # 1. Train once: ws-train's SuperNetModule + DelayedEpsilonShrinking on a Lightning Trainer.
    image_size = timm.get_pretrained_cfg(cfg.model).input_size[-1]
    data = make_datamodule(cfg, image_size)                         # bundled digits, offline
    net, train = train_supernet(cfg, data, run_dir)                  # writes run_dir/supernet.safetensors

    # 2. Search: min, max and random SubNets, each with recalibrated BN, scored on held-out images;
    #    serve an even spread of the (MACs, accuracy) Pareto front.
    subnets = evaluate_subnets(net, data, candidates=cfg.candidates, bn_batches=cfg.bn_batches, seed=cfg.seed)
    served = select_served(subnets, cfg.served_subnets)
    for s in served:
        print(f"serving {s.id}: {100 * s.accuracy:.1f}% at {s.macs / 1e6:.2f} MMACs")

    # 3. Deploy: served set + SubnetNorm statistics next to the checkpoint, latency measured here;
    #    latency and throughput measured end to end on a server pinned to the most accurate SubNet.
    profile = deploy_served_set(train.checkpoint, served, cfg.max_batch, net=net)
    best = profile.num_subnets - 1
    sample_shape = (3, image_size, image_size)
    pinned = f"fixed:{profile.subnet_ids[best]}"
    with ws_serve_process(train.checkpoint, pinned, log=run_dir / "server-calibration.log") as url:
        overhead_ms = measure_overhead(url, cfg.model, sample_shape, forward_ms=profile.latency(best, 1))
        _, slo_ms, estimate = choose_load(profile, "max", 1.0, overhead_ms=overhead_ms)
        capacity = measure_capacity(url, cfg.model, sample_shape, slo_ms, start_qps=estimate)
    baseline, slo_ms, rate = choose_load(profile, "max", cfg.load, overhead_ms=overhead_ms, capacity_qps=capacity)
    trace = bursty_trace(0.25 * rate, 0.75 * rate, cv2=cfg.cv2, duration_s=cfg.trace_seconds, seed=cfg.seed)
    trace.save(run_dir / "trace.csv")

    # 4. Serve: the real ws-serve process on 127.0.0.1 per policy, the trace replayed open loop.
    runs = []
    for policy, label in [("slackfit", "SlackFit"), (f"fixed:{profile.subnet_ids[baseline]}", "fixed max SubNet")]:
        log = run_dir / f"server-{policy.partition(':')[0]}.log"
        report = serve_and_replay(train.checkpoint, policy, trace, slo_ms, log=log, model=cfg.model,
                                  sample_shape=sample_shape, max_batch=cfg.max_batch, overhead_ms=overhead_ms)
        runs.append(ServingRun(policy, label, report, log))
        print(f"{label}: SLO attainment {report.slo_attainment:.3f}, served accuracy {100 * report.mean_accuracy:.1f}%")

    # 5. Report: Markdown + PNG plots + results.json.
    result = PipelineResult(run_dir, cfg, train, subnets, profile, slo_ms, rate, trace, runs, overhead_ms=overhead_ms,
                            capacity_qps=capacity)
    print(f"report: {write_report(result)}")


if __name__ == "__main__":
    main()
