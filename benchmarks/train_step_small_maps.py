"""Training-step time of OFA MobileNetV3 SubNets at low resolution: depthwise-conv variants, one run.

At the digits' 8×8 (ws-fed) or CIFAR's 32×32 (ws-train, the main job) the last stages of the OFA
MobileNetV3 run on 1×1–4×4 maps with up-to-7×7 depthwise kernels. Three ways to run the same step
(forward + backward, SGD-ready gradients), measured back to back on the same SubNets:

* **all taps, NCHW** — ``F.conv2d`` with the full kernel (the baseline: what a plain depthwise conv does);
* **live taps, NCHW** — ``ws_core.elastic.depthwise_conv2d``: kernel taps that only ever read zero
  padding are dropped (exact: same outputs and gradients);
* **live taps, channels_last** — the same, with the SuperNet and input in ``torch.channels_last``
  memory format (what ws-fed clients use, ``channels-last = true``).

    python benchmarks/train_step_small_maps.py [--resolutions 8,32] [--batch 32] [--steps 20]
"""

from __future__ import annotations

import argparse
import contextlib
import platform
import statistics
import time

import timm
import torch
import torch.nn.functional as F

import ws_core  # noqa: F401  (registers the ws_* SuperNets)
from ws_core import elastic


@contextlib.contextmanager
def all_taps():
    """Run every ElasticDepthwiseConv2d with the full kernel (the baseline)."""
    live = elastic.depthwise_conv2d
    elastic.depthwise_conv2d = lambda x, w, stride, padding: F.conv2d(x, w, None, stride, padding, 1, w.shape[0])
    try:
        yield
    finally:
        elastic.depthwise_conv2d = live


def step_ms(net, subnet, x, y, steps: int, repeats: int = 3) -> float:
    """Median over ``repeats`` of the mean time of one forward + backward, in ms."""
    means = []
    with net.subnet(subnet):
        for _ in range(2):  # warm-up
            net.zero_grad(set_to_none=True)
            F.cross_entropy(net(x), y).backward()
        for _ in range(repeats):
            t0 = time.perf_counter()
            for _ in range(steps):
                net.zero_grad(set_to_none=True)
                F.cross_entropy(net(x), y).backward()
            means.append((time.perf_counter() - t0) / steps * 1e3)
    return statistics.median(means)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="ws_ofa_mbv3_035_32")
    parser.add_argument("--resolutions", default="8,32")
    parser.add_argument("--in-chans", type=int, default=1)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"# {args.model}, batch {args.batch}, {args.in_chans} input channel(s), torch {torch.__version__}, "
          f"{torch.get_num_threads()} thread(s), {platform.processor() or platform.machine()}")
    print("| resolution | SubNet | all taps, NCHW (ms) | live taps, NCHW (ms) | live taps, channels_last (ms) "
          "| speed-up |")
    print("|---:|---|---:|---:|---:|---:|")
    for res in (int(r) for r in args.resolutions.split(",")):
        net = timm.create_model(args.model, num_classes=10, in_chans=args.in_chans, resolutions=(res,)).train()
        x = torch.randn(args.batch, args.in_chans, res, res)
        y = torch.randint(0, 10, (args.batch,))
        for name, subnet in (("max", net.space.max()), ("min", net.space.min())):
            with all_taps():
                base = step_ms(net, subnet, x, y, args.steps)
            live = step_ms(net, subnet, x, y, args.steps)
            net_cl = net.to(memory_format=torch.channels_last)
            cl = step_ms(net_cl, subnet, x.contiguous(memory_format=torch.channels_last), y, args.steps)
            net = net.to(memory_format=torch.contiguous_format)
            print(f"| {res}×{res} | {name} | {base:.1f} | {live:.1f} | {cl:.1f} | {base / cl:.2f}× |", flush=True)


if __name__ == "__main__":
    main()
