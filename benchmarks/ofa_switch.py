"""OFA checkpoints in ws-core: load/conversion time per checkpoint, and SubNet switch time vs OFA's own code.

Measured in one run, side by side:

* per published OFA SuperNet (MobileNetV3 w1.0 and w1.2, ResNet-50; here: a file the ``ofa`` package
  writes with random weights, in OFA's format ``torch.save({"state_dict": ...})`` — no network): the time of
  ``timm.create_model("<model>.ofa_in1k", pretrained=True, pretrained_cfg_overlay=dict(file=...))`` and its
  parts — building the SuperNet, ``torch.load(weights_only=True)``, the key conversion
  (``ws_core.ofa.checkpoint_filter_fn``) and ``load_state_dict``;
* the time to switch the SuperNet to a SubNet drawn by OFA's sampler: OFA's ``set_active_subnet`` vs ws-core's
  ``activate`` (first time / seen before) and ``activate(from_ofa_arch(...))`` (OFA's dict converted per call).

    python benchmarks/ofa_switch.py [--subnets 200] [--repeats 3]
"""

from __future__ import annotations

import argparse
import platform
import random
import statistics
import tempfile
import time
from pathlib import Path

import timm
import torch

import ws_core  # noqa: F401  (registers the ws_* SuperNets)
from _timing import percentile, times_us
from ws_core.ofa import OFA_NETS, checkpoint_filter_fn, from_ofa_arch


def _ofa_net(net_id: str):
    """The network of ``ofa.model_zoo.ofa_net(net_id)``, with random weights (nothing is downloaded)."""
    from ofa.imagenet_classification.elastic_nn.networks import OFAMobileNetV3, OFAResNets

    if net_id.startswith("ofa_resnet50"):
        return OFAResNets(n_classes=1000, dropout_rate=0, depth_list=[0, 1, 2], expand_ratio_list=[0.2, 0.25, 0.35],
                          width_mult_list=[0.65, 0.8, 1.0])
    return OFAMobileNetV3(n_classes=1000, dropout_rate=0, width_mult=float(net_id.rsplit("_w", 1)[1]),
                          ks_list=[3, 5, 7], expand_ratio_list=[3, 4, 6], depth_list=[2, 3, 4])


def _ms(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times), out




def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subnets", type=int, default=200, help="SubNets from OFA's sampler for the switch timings")
    parser.add_argument("--repeats", type=int, default=3, help="loads per checkpoint (median)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    print(f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, timm {timm.__version__},"
          f" {torch.get_num_threads()} threads\n")

    header = (f"{'checkpoint (random weights, OFA format)':<42}{'MiB':>7}{'build':>9}{'torch.load':>12}"
              f"{'convert':>9}{'load_sd':>9}{'create_model':>14}")
    print(header + "\n" + "-" * len(header) + f"   (ms, median of {args.repeats})")
    with tempfile.TemporaryDirectory() as tmp:
        for net_id, info in OFA_NETS.items():
            ofa = _ofa_net(net_id)
            path = Path(tmp) / net_id
            torch.save({"state_dict": ofa.state_dict()}, path)
            name = f"{info.model}.ofa_in1k"
            build, net = _ms(lambda name=name: timm.create_model(name), args.repeats)
            read, sd = _ms(lambda path=path: torch.load(path, map_location="cpu", weights_only=True)["state_dict"],
                           args.repeats)
            convert, ws_sd = _ms(lambda sd=sd, net=net: checkpoint_filter_fn(sd, net), args.repeats)
            load, _ = _ms(lambda ws_sd=ws_sd, net=net: net.load_state_dict(ws_sd), args.repeats)
            total, _ = _ms(lambda name=name, path=path: timm.create_model(
                name, pretrained=True, pretrained_cfg_overlay=dict(file=str(path))), args.repeats)
            mib = path.stat().st_size / 2**20
            print(f"{net_id[:42]:<42}{mib:>7.1f}{build:>9.0f}{read:>12.0f}{convert:>9.1f}{load:>9.0f}{total:>14.0f}")

    # switch time: the same SubNets (OFA's sampler) on both sides
    ofa = _ofa_net("ofa_mbv3_d234_e346_k357_w1.0").eval()
    net = timm.create_model("ws_ofa_mbv3_100.ofa_in1k").eval()
    random.seed(args.seed)
    archs = [ofa.sample_active_subnet() for _ in range(args.subnets)]
    configs = [from_ofa_arch(net, a) for a in archs]
    ofa.set_max_net()
    net.activate(net.space.min())  # warm up code paths once
    rows = [
        ("OFA set_active_subnet(ks=, e=, d=)  [baseline]",
         times_us(lambda a: ofa.set_active_subnet(ks=a["ks"], e=a["e"], d=a["d"]), archs)),
        ("ws activate(SubNetConfig), first time", times_us(net.activate, configs)),
        ("ws activate(SubNetConfig), seen before", times_us(net.activate, configs)),
        ("ws activate(from_ofa_arch(OFA dict))", times_us(lambda a: net.activate(from_ofa_arch(net, a)), archs)),
    ]
    base = statistics.median(rows[0][1])
    print(f"\nswitch to a SubNet, ws_ofa_mbv3_100 vs OFAMobileNetV3 w1.0 ({args.subnets} SubNets from OFA's sampler)")
    header = f"{'operation':<50}{'n':>5}{'median µs':>12}{'p90 µs':>10}{'vs OFA':>9}"
    print(header + "\n" + "-" * len(header))
    for name, values in rows:
        med = statistics.median(values)
        print(f"{name:<50}{len(values):>5}{med:>12.1f}{percentile(values, 0.9):>10.1f}{base / med:>8.2f}×")


if __name__ == "__main__":
    main()
