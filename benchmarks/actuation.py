"""Actuation benchmark: in-place ``activate`` vs ``extract``, and memory of one SuperNet vs N SubNets.

Measured in one run on the same SubNets:

* time to switch the SuperNet to a SubNet in place (``activate``) — for a config seen for the first
  time (validation + actuation) and for one seen before (actuation only) — vs the time to build a
  standalone copy (``extract``), the baseline a per-model deployment pays;
* bytes of one SuperNet's weights vs the bytes of N extracted SubNets (what serving N SubNets as
  separate models costs), and the bytes ``activate`` allocates (none).

    python benchmarks/actuation.py [--model ws_ofa_mbv3_100_32] [--subnets 200] [--extract 30] [--memory-n 16]
"""

from __future__ import annotations

import argparse
import gc
import platform
import statistics
import warnings

import timm
import torch

import ws_core  # noqa: F401  (registers the ws_* SuperNets)
from _timing import percentile, times_us


def _live_tensors() -> int:
    gc.collect()
    with warnings.catch_warnings():  # isinstance() on some lazily deprecated module attributes warns
        warnings.simplefilter("ignore")
        return sum(isinstance(o, torch.Tensor) for o in gc.get_objects())


def _bytes(module: torch.nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in module.state_dict().values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="ws_ofa_mbv3_100_32")
    parser.add_argument("--subnets", type=int, default=200, help="random SubNets for activate timings")
    parser.add_argument("--extract", type=int, default=30, help="of those, how many to extract")
    parser.add_argument("--memory-n", type=int, default=16, help="N extracted SubNets for the memory row")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    net = timm.create_model(args.model, num_classes=10).eval()
    g = torch.Generator().manual_seed(args.seed)
    configs = [net.space.sample(g) for _ in range(args.subnets)]

    net.activate(net.space.min())  # warm up code paths once
    first = times_us(net.activate, configs)
    again = times_us(net.activate, configs)
    as_dicts = [c.to_dict() for c in configs]
    dicts = times_us(net.activate, as_dicts)
    extract = times_us(net.extract, configs[: args.extract])

    before = {k: v.data_ptr() for k, v in net.state_dict().items()}
    n_tensors = _live_tensors()
    for cfg in configs:
        net.activate(cfg)
    new_tensors = _live_tensors() - n_tensors
    moved = sum(before[k] != v.data_ptr() for k, v in net.state_dict().items())

    supernet_bytes = _bytes(net)
    subnets = [net.extract(c) for c in configs[: args.memory_n]]
    subnet_bytes = sum(_bytes(s) for s in subnets)

    base = statistics.median(extract)
    print(f"model {args.model}: {net.space.size():.2e} SubNets, {supernet_bytes / 2**20:.1f} MiB of weights")
    print(f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads\n")
    header = f"{'operation':<44}{'n':>5}{'median µs':>12}{'p90 µs':>12}{'vs extract':>12}"
    print(header)
    print("-" * len(header))
    for name, values in [
        ("activate(SubNetConfig), first time", first),
        ("activate(SubNetConfig), seen before", again),
        ("activate(dict), seen before", dicts),
        ("extract(SubNetConfig)  [baseline]", extract),
    ]:
        med = statistics.median(values)
        print(f"{name:<44}{len(values):>5}{med:>12.1f}{percentile(values, 0.9):>12.1f}{base / med:>11.0f}×")
    print()
    header = f"{'memory':<44}{'MiB':>12}"
    print(header)
    print("-" * len(header))
    print(f"{'one SuperNet (serves every SubNet)':<44}{supernet_bytes / 2**20:>12.2f}")
    print(f"{f'{args.memory_n} extracted SubNets':<44}{subnet_bytes / 2**20:>12.2f}"
          f"   ({subnet_bytes / supernet_bytes:.1f}× the SuperNet)")
    print(f"{f'allocated by {len(configs)} activate calls':<44}{0 if new_tensors <= 0 else float('nan'):>12.2f}"
          f"   (new tensors: {new_tensors}, moved parameter storages: {moved})")


if __name__ == "__main__":
    main()
