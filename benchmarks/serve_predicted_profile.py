"""ws-serve's predicted latency profile vs the measured one, for the same served set, backend and device.

``ws-serve run --latency predicted`` (:func:`ws_serve.profile.predict_served_profile`) times each distinct
block of the served SubNets once (ws-core's per-block latency table) and scales the block sums by a
per-batch factor fitted on a few anchor SubNets measured whole; ``--latency measured`` (the default,
:func:`ws_serve.profile.profile_served`) times every served SubNet at every batch size. This script builds
both profiles for ``--subnets`` SubNets spread over the MACs range (a ws-core checkpoint's SuperNet, or an
untrained registered one: latency does not depend on the weights) and prints, per backend, the time each
took and how far the prediction is from the measurement on the SubNets that were not anchors: relative
error at batch 1 and at ``--max-batch`` (mean, max), and Spearman's rank correlation over the SubNets.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/serve_predicted_profile.py [--checkpoint ckpt.safetensors |
        --model ws_ofa_mbv3_035_28] [--subnets 20] [--max-batch 8] [--anchors 3] [--backends eager onnxruntime]
        [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch

import ws_core  # noqa: F401  (registers the SuperNets)
from ws_core.search import spearman
from ws_serve.backends import make_backend
from ws_serve.deploy import load_supernet
from ws_serve.profile import anchor_indices, pareto_served_set, predict_served_profile, profile_served
from ws_serve.subnetact import SubNetAct


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--model", default="ws_ofa_mbv3_035_28")
    parser.add_argument("--subnets", type=int, default=20)
    parser.add_argument("--max-batch", type=int, default=8)
    parser.add_argument("--anchors", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--backends", nargs="+", default=["eager", "onnxruntime"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()

    net = load_supernet(None if args.checkpoint else args.model, args.checkpoint, None, args.seed)
    arch = str((net.pretrained_cfg or {}).get("architecture") or args.model)
    served = pareto_served_set(net, args.subnets, generator=torch.Generator().manual_seed(args.seed))
    act = SubNetAct(net, served.configs)
    shape = tuple(int(v) for v in net.pretrained_cfg["input_size"])
    picked = set(anchor_indices([s.macs for s in served], args.anchors))
    others = [i for i in range(len(served)) if i not in picked]
    print(f"{arch} ({args.checkpoint or 'untrained'}), {len(served)} served SubNets "
          f"({min(s.macs for s in served) / 1e6:.2f}-{max(s.macs for s in served) / 1e6:.2f} MMACs), batch "
          f"1..{args.max_batch}, {args.anchors} anchors; {platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}")
    rows = []
    for name in args.backends:
        backend = make_backend(name, act)
        backend.prepare(shape, range(1, args.max_batch + 1))
        t0 = time.perf_counter()
        measured = profile_served(act.net, served, args.max_batch, backend=backend, sample_shape=shape,
                                  repeats=args.repeats, rounds=args.rounds)
        t_measured = time.perf_counter() - t0
        t0 = time.perf_counter()
        predicted = predict_served_profile(act.net, served, args.max_batch, anchors=args.anchors, backend=backend,
                                           sample_shape=shape, repeats=args.repeats, rounds=args.rounds)
        t_predicted = time.perf_counter() - t0
        row = {"backend": backend.name, "measured_s": t_measured, "predicted_s": t_predicted,
               "note": predicted.note}
        for b in (1, args.max_batch):
            m = [measured.latency(i, b) for i in others]
            p = [predicted.latency(i, b) for i in others]
            errors = [abs(x - y) / y for x, y in zip(p, m)]
            row[f"b{b}"] = {"mean_rel_error": statistics.fmean(errors), "max_rel_error": max(errors),
                            "spearman": spearman(p, m), "measured_ms": m, "predicted_ms": p}
        rows.append(row)

    big = args.max_batch
    print(f"\n| backend | profile measured (s) | predicted (s) | b1 error mean / max | b1 Spearman | "
          f"b{big} error mean / max | b{big} Spearman |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        b1, bb = r["b1"], r[f"b{big}"]
        print(f"| {r['backend']} | {r['measured_s']:.1f} | {r['predicted_s']:.1f} | "
              f"{100 * b1['mean_rel_error']:.1f} % / {100 * b1['max_rel_error']:.1f} % | {b1['spearman']:.3f} | "
              f"{100 * bb['mean_rel_error']:.1f} % / {100 * bb['max_rel_error']:.1f} % | {bb['spearman']:.3f} |")
    print(f"\nerrors over the {len(others)} SubNets that were not anchors; notes:")
    for r in rows:
        print(f"  {r['backend']}: {r['note']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
