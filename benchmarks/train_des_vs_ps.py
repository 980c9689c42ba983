"""Delayed ε-Shrinking vs OFA progressive shrinking vs BigNAS sandwich rule, same budget, one run.

Trains the same SuperNet three times — once per shrinking policy — with the same data, epochs,
optimizer and seed, validating every epoch with BN-recalibrated SubNets (min, max and a fixed set of
random SubNets; ws-train's ``SubNetValidation``). Prints, per policy:

* final accuracy of the min SubNet, the max SubNet and the mean over the Pareto front (MACs vs
  accuracy, ws-core ``CostModel`` + ``pareto_front``) of the evaluated SubNets;
* training cost: SubNet-epochs (Σ over steps of SubNets trained ÷ steps per epoch, i.e. epochs ×
  SubNets per step) and training wall time (optimizer steps only, validation excluded), in all and
  until the min SubNet first reaches the *common target* — the lowest final min-SubNet accuracy of
  the three, so that every policy reaches it.

Data: the bundled digits (scikit-learn, offline) by default; CIFAR-10 when ``--data auto`` finds it
under ``--cifar-root`` (never downloads). Defaults keep the run at a few minutes on 2 CPU cores; the
DεpS paper's setting (CIFAR-10, 200+ epochs) is ``--data cifar10 --image-size 32 --epochs 200``.

Example::

    python benchmarks/train_des_vs_ps.py                      # digits at 8×8, 4 epochs
    python benchmarks/train_des_vs_ps.py --epochs 12 --json results.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from ws_core import CostModel, pareto_front
from ws_train import (
    CIFAR10DataModule,
    DelayedEpsilonShrinking,
    DigitsDataModule,
    ProgressiveShrinking,
    SandwichRule,
    SubNetValidation,
    SuperNetModule,
)

POLICIES = {
    "DelayedEpsilonShrinking": lambda seed: DelayedEpsilonShrinking(seed=seed),
    "ProgressiveShrinking": lambda seed: ProgressiveShrinking(seed=seed),
    "SandwichRule": lambda seed: SandwichRule(seed=seed),
}


class CostMeter(Callback):
    """Training wall and CPU time (optimizer steps only), SubNet passes and min/max accuracy per epoch."""

    def __init__(self, validation: SubNetValidation) -> None:
        self.validation = validation
        self.train_seconds = 0.0
        self.train_cpu_seconds = 0.0
        self.curve: list[dict] = []
        self._t0 = self._c0 = 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._t0, self._c0 = time.perf_counter(), time.process_time()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.train_seconds += time.perf_counter() - self._t0
        self.train_cpu_seconds += time.process_time() - self._c0

    def on_validation_epoch_end(self, trainer, pl_module):
        if trainer.sanity_checking or not self.validation.results:
            return
        policy = pl_module.policy
        self.curve.append({
            "epoch": trainer.current_epoch + 1,
            "subnet_epochs": policy.subnet_passes / policy.steps_per_epoch,
            "train_seconds": self.train_seconds,
            "train_cpu_seconds": self.train_cpu_seconds,
            "min": self.validation.accuracy("min"),
            "max": self.validation.accuracy("max"),
            "acc": dict(self.validation.results),
        })


def make_data(args: argparse.Namespace) -> tuple[L.LightningDataModule, str]:
    cifar_files = Path(args.cifar_root) / "cifar-10-batches-py"
    if args.data == "cifar10" or (args.data == "auto" and cifar_files.is_dir()):
        dm = CIFAR10DataModule(root=args.cifar_root, download=False, batch_size=args.batch_size,
                               num_workers=args.num_workers, seed=args.seed)
        return dm, "CIFAR-10"
    dm = DigitsDataModule(image_size=args.image_size, batch_size=args.batch_size, num_workers=args.num_workers,
                          train_size=args.train_size, seed=args.seed)
    return dm, f"digits (scikit-learn, {args.image_size}×{args.image_size} RGB)"


def run_policy(name: str, args: argparse.Namespace) -> dict:
    L.seed_everything(args.seed, verbose=False)
    data, _ = make_data(args)
    module = SuperNetModule(args.model, num_classes=data.num_classes, lr=args.lr, weight_decay=args.weight_decay,
                            seed=args.seed)
    # min and max every epoch (the cost-to-accuracy curve); the random SubNets of the Pareto front at the end only
    per_epoch = SubNetValidation(("min", "max"), bn_batches=args.bn_batches, seed=args.seed)
    final = SubNetValidation(("min", "max"), num_random=args.eval_random, bn_batches=args.bn_batches,
                             every_n_epochs=args.epochs, seed=args.seed)
    meter = CostMeter(per_epoch)
    policy = POLICIES[name](args.seed)
    trainer = L.Trainer(max_epochs=args.epochs, accelerator="cpu" if args.cpu else "auto", devices=1,
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0,
                        callbacks=[policy, per_epoch, final, meter])
    start = time.perf_counter()
    trainer.fit(module, data)
    wall = time.perf_counter() - start
    net = module.supernet
    costs_model = CostModel(net, input_size=args.image_size if isinstance(data, DigitsDataModule) else 32)
    ids = list(final.subnets)
    macs = [costs_model.macs(final.subnets[i]) for i in ids]
    accs = [final.results[i] for i in ids]
    front = pareto_front(macs, accs)
    return {
        "policy": name,
        "min": final.accuracy("min"),
        "max": final.accuracy("max"),
        "mean_pareto": sum(accs[i] for i in front) / len(front),
        "pareto_size": len(front),
        "evaluated": len(ids),
        "subnet_epochs": policy.subnet_passes / policy.steps_per_epoch,
        "subnets_per_step": policy.subnet_passes / policy.total_steps,
        "train_seconds": meter.train_seconds,
        "train_cpu_seconds": meter.train_cpu_seconds,
        "wall_seconds": wall,
        "curve": meter.curve,
    }


def reach(result: dict, target: float) -> dict | None:
    """First epoch at which the min SubNet reaches ``target`` (with the cost spent until then)."""
    for point in result["curve"]:
        if point["min"] >= target - 1e-9:
            return point
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="ws_ofa_mbv3_035_32")
    parser.add_argument("--data", choices=("auto", "digits", "cifar10"), default="auto",
                        help="auto: CIFAR-10 if its files are under --cifar-root, else digits (never downloads)")
    parser.add_argument("--cifar-root", default="data")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--image-size", type=int, default=8,
                        help="digits only: 8 = the native 8×8 images; 32 = upscaled like CIFAR (16× the compute)")
    parser.add_argument("--train-size", type=int, default=None, help="digits only: first N training images")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--weight-decay", type=float, default=3e-5)
    parser.add_argument("--eval-random", type=int, default=4, help="random SubNets evaluated besides min and max")
    parser.add_argument("--bn-batches", type=int, default=4, help="training batches per BN recalibration")
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--cpu", action="store_true", help="force CPU even when a GPU is present")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--policies", nargs="+", default=list(POLICIES), choices=list(POLICIES))
    parser.add_argument("--json", default=None, help="also write all numbers (with per-epoch curves) here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    _, data_name = make_data(args)
    print(f"# DεS vs ProgressiveShrinking vs SandwichRule: {args.model} on {data_name}, {args.epochs} epochs, "
          f"batch {args.batch_size}, lr {args.lr}, seed {args.seed}")
    print(f"# machine: {platform.machine()} {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, "
          f"{'CUDA ' + torch.cuda.get_device_name() if torch.cuda.is_available() and not args.cpu else 'CPU'}")
    results = []
    for name in args.policies:
        r = run_policy(name, args)
        results.append(r)
        print(f"# {name}: done in {r['wall_seconds']:.0f} s")

    target = min(r["min"] for r in results)
    print()
    print(f"Final accuracy (BN-recalibrated; Pareto front over min, max and {args.eval_random} random SubNets):")
    print("| policy | min SubNet | max SubNet | mean Pareto (size) | SubNets/step | SubNet-epochs | train s | "
          "train CPU s | wall s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        print(f"| {r['policy']} | {r['min']:.4f} | {r['max']:.4f} | {r['mean_pareto']:.4f} ({r['pareto_size']}) | "
              f"{r['subnets_per_step']:.2f} | {r['subnet_epochs']:.1f} | {r['train_seconds']:.0f} | "
              f"{r['train_cpu_seconds']:.0f} | {r['wall_seconds']:.0f} |")
    print()
    base = next((r for r in results if r["policy"] == "ProgressiveShrinking"), results[0])
    base_hit = reach(base, target)
    print(f"Cost to reach min-SubNet accuracy {target:.4f} (the lowest final min-SubNet accuracy of the three), "
          f"relative to {base['policy']}:")
    print(f"| policy | epoch reached | SubNet-epochs | train s | train CPU s | {base['policy']} cost ÷ this cost "
          "(SubNet-epochs / train s / CPU s) |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in results:
        hit = reach(r, target)
        if hit is None:
            print(f"| {r['policy']} | not reached | – | – | – | – |")
            continue
        ratio = (f"{base_hit['subnet_epochs'] / hit['subnet_epochs']:.2f}× / "
                 f"{base_hit['train_seconds'] / max(hit['train_seconds'], 1e-9):.2f}× / "
                 f"{base_hit['train_cpu_seconds'] / max(hit['train_cpu_seconds'], 1e-9):.2f}×"
                 if base_hit else "–")
        print(f"| {r['policy']} | {hit['epoch']} | {hit['subnet_epochs']:.1f} | {hit['train_seconds']:.0f} | "
              f"{hit['train_cpu_seconds']:.0f} | {ratio} |")
    print()
    print("SubNet-epochs / train CPU s until the min SubNet first reaches each policy's final min-SubNet accuracy:")
    targets = sorted({round(r["min"], 4) for r in results})
    print("| policy | " + " | ".join(f"≥ {t:.4f}" for t in targets) + " |")
    print("|---|" + "---:|" * len(targets))
    for r in results:
        cells = []
        for t in targets:
            hit = reach(r, t)
            cells.append(f"{hit['subnet_epochs']:.1f} / {hit['train_cpu_seconds']:.0f}" if hit else "not reached")
        print(f"| {r['policy']} | " + " | ".join(cells) + " |")
    print()
    print("Min-SubNet accuracy per epoch:")
    print("| policy | " + " | ".join(str(e + 1) for e in range(args.epochs)) + " |")
    print("|---|" + "---:|" * args.epochs)
    for r in results:
        cells = [f"{p['min']:.3f}" for p in r["curve"]]
        print(f"| {r['policy']} | " + " | ".join(cells) + " |")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "target": target, "results": results}, indent=1))
    if not all(math.isfinite(r["min"]) for r in results):
        raise SystemExit("non-finite accuracy")


if __name__ == "__main__":
    main()
