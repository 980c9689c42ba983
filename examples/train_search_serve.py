"""Train one SuperNet, pick a Pareto set of SubNets, serve them under bursty load — step by step.

What ``ws demo`` (and ``make demo``) runs, written out with the packages' public APIs so each step can
be changed: another SuperNet or data set, another shrinking policy, another served set, trace or policy.
``make data`` (or torchvision's download) puts Fashion-MNIST under ``data/`` first.

    python examples/train_search_serve.py                 # ~8 min on 2 CPU cores
    python examples/train_search_serve.py --epochs 1      # a quick look
"""

from __future__ import annotations

import argparse
from pathlib import Path

import lightning as L
import torch
from torchmetrics.classification import MulticlassAccuracy

from ws_core.bn import recalibrate_bn
from ws_core.cost import CostModel
from ws_core.search import pareto_search
from ws_serve.backends import server_backend_options
from ws_serve.calibration import (
    choose_load,
    estimate_query_cost,
    measure_capacity,
    measure_overhead,
    serve_and_replay,
    served_rate_ratio,
    ws_serve_process,
)
from ws_serve.deploy import deploy, save_served_set
from ws_serve.traces import bursty_trace
from ws_train import DelayedEpsilonShrinking, FashionMNISTDataModule, SuperNetModule


@torch.no_grad()
def accuracy(net, loader) -> float:
    metric = MulticlassAccuracy(num_classes=10, average="micro")
    for x, y in loader:
        metric.update(net(x).argmax(1), y)
    return float(metric.compute())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--out", default="runs/example")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    # 1. Train once: ws-train's SuperNetModule + Delayed ε-Shrinking on a Lightning Trainer.
    model = "ws_ofa_mbv3_035_28"                       # 28×28 inputs, elastic resolution 16–28
    data = FashionMNISTDataModule(root="data", train_size=30000, augment=False, batch_size=64,
                                  calibration_batch_size=256)
    module = SuperNetModule(model, num_classes=10, lr=0.1, channels_last=True)
    L.Trainer(max_epochs=args.epochs, callbacks=[DelayedEpsilonShrinking(warmup_fraction=0.3)], logger=False,
              enable_checkpointing=False).fit(module, data)
    checkpoint = module.save_supernet(str(out / "supernet.safetensors"))
    net = module.supernet.eval().to(memory_format=torch.contiguous_format)

    # 2. Search: min, max, random SubNets, then mutations of the Pareto front; each SubNet's BN
    #    statistics recalibrated, ranked on the validation split, reported on the held-out split.
    costs, stats = CostModel(net), {}

    def score(cfg) -> float:
        stats[cfg] = recalibrate_bn(net, data.calibration_dataloader(), cfg, num_batches=4)
        with net.subnet(cfg):
            return accuracy(net, data.val_dataloader())

    points = pareto_search(net.space, score, lambda c: float(costs.macs(c)), candidates=30,
                           generator=torch.Generator().manual_seed(0))
    front = sorted((p for p in points if p.pareto), key=lambda p: p.cost)
    served = [front[round(k * (len(front) - 1) / 5)] for k in range(6)] if len(front) > 6 else front
    held_out = {}
    for p in served:
        stats[p.config].apply(net)
        with net.subnet(p.config):
            held_out[p.config] = accuracy(net, data.test_dataloader())
        print(f"serving {p.config.id}: {p.cost / 1e6:.2f} MMACs, held-out accuracy {100 * held_out[p.config]:.2f}%")

    # 3. Deploy: served set + SubnetNorm statistics next to the checkpoint; latency measured here with
    #    the backend that will serve (ONNX Runtime on CPU) and the options `ws-serve run` gives its
    #    sessions (threads spinning only during a forward, a core kept for request handling), cached
    #    for the server.
    configs = [p.config for p in served]
    save_served_set(net, checkpoint, configs, [held_out[c] for c in configs], [stats[c] for c in configs])
    options = server_backend_options("auto", workers=1, spinning="run")
    profile = deploy(None, checkpoint, net=net, max_batch=8, backend="auto", backend_options=options,
                     progress=print).profile

    # 4. Calibrate on a server pinned to the most accurate SubNet, then replay one bursty trace per policy;
    #    the load generator speaks the Open Inference Protocol over gRPC (the cheaper client). The capacity
    #    also gives the server time a query costs outside the forward pass, which SlackFit charges to a backlog.
    sample, transport = (3, 28, 28), "grpc"
    best = profile.num_subnets - 1
    with ws_serve_process(Path(checkpoint), f"fixed:{profile.subnet_ids[best]}", log=out / "calibration.log",
                          transport=transport) as address:
        overhead = measure_overhead(address, model, sample, forward_ms=profile.latency(best, 1), transport=transport)
        _, slo_ms, estimate = choose_load(profile, "max", 1.0, overhead_ms=overhead)
        capacity = measure_capacity(address, model, sample, slo_ms, start_qps=estimate, transport=transport)
    _, slo_ms, rate = choose_load(profile, "max", 0.7, overhead_ms=overhead, capacity_qps=capacity)
    query_cost = estimate_query_cost(profile, best, capacity)
    print(f"SLO {slo_ms:.1f} ms, {rate:.0f} q/s; {query_cost:.2f} ms per query outside the forward: the fastest "
          f"SubNet drains a backlog {served_rate_ratio(profile, query_cost):.2f}x as fast as the most accurate")
    trace = bursty_trace(0.25 * rate, 0.75 * rate, cv2=8.0, duration_s=20.0, seed=0)
    for policy in ("slackfit", f"fixed:{profile.subnet_ids[best]}", f"fixed:{profile.subnet_ids[0]}"):
        report = serve_and_replay(Path(checkpoint), policy, trace, slo_ms, log=out / "server.log", model=model,
                                  sample_shape=sample, overhead_ms=overhead, query_cost_ms=query_cost,
                                  transport=transport)
        print(f"{policy}: SLO attainment {report.slo_attainment:.3f}, "
              f"served accuracy {100 * report.mean_accuracy:.2f}%")


if __name__ == "__main__":
    main()
