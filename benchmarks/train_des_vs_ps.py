"""Delayed ε-Shrinking vs OFA progressive shrinking vs BigNAS sandwich rule, over several seeds.

Trains the same SuperNet once per shrinking policy and seed — same data subset, optimizer and seed for
the three policies of a seed — validating every epoch with BN-recalibrated min and max SubNets and,
after training, min, max and a fixed set of random SubNets (ws-train's ``SubNetValidation``). Each
policy runs with its paper's own settings:

* **DεS** (``DelayedEpsilonShrinking``): the max net alone for ``--warmup-fraction`` of the steps, then
  the ε ramp over the next ``--ramp-fraction`` (its switch T_w at their sum), then max + min + 2 random
  SubNets with inplace distillation; channels sorted once; the module's cosine learning rate.
* **OFA progressive shrinking** (``ProgressiveShrinking``): OFA's six phases with lengths proportional to
  its 180/125/25/125/25/125 epochs, 1/1/2/2/4/4 SubNets per step, each phase restarting a cosine learning
  rate at OFA's per-phase rate (2.6/0.96/0.08/0.24/0.08/0.24, relative to the module's ``--lr``), nested
  channel sorting per width phase; the teacher is the full net at the end of the full phase, whose own
  cosine schedule has run to its end (a fully annealed teacher) — its training counts in PS's cost.
* **BigNAS sandwich** (``SandwichRule``): max + min + 2 random SubNets with inplace distillation from step 0,
  zero-initialised last BN γ of every residual block, exponential learning-rate decay (× 0.97 per period)
  with a constant ending at 5 % — the period scaled from 2.4 of ``--bignas-reference-epochs`` (400, the
  DεpS paper's BigNAS run) to this run's length, so the rate reaches its floor at the same fraction of
  training as in a 400-epoch run (``--bignas-reference-epochs 0``: the unscaled 2.4-epoch period).

Two configurations (``--equal-compute``, the default, runs both):

1. *equal epochs* — every policy trains ``--epochs`` epochs (the same optimizer steps and images);
2. *equal compute* — DεS and PS train for as many **SubNet-steps** (one SubNet's forward and backward on
   one batch) as the sandwich spends in (1): their runs are lengthened (``Trainer(max_steps=...)``, all
   schedules resolved over the longer run); the sandwich's numbers are those of (1).

Printed: mean ± standard error over the seeds of the final min / max / mean-Pareto accuracy (Pareto front
of MACs vs accuracy, ws-core ``CostModel`` + ``pareto_front``, over the evaluated SubNets), SubNet-steps,
training CPU and wall seconds (optimizer steps only, validation excluded); every run per seed; the
per-epoch min/max curves; the DεpS paper's ImageNet headline beside ours; the paired differences and a
verdict that calls a difference only when its 95 % t interval over the seeds excludes 0
(``ws_core.stats``; the equal-compute run lengths: ``ws_train.comparison``).

Data: Fashion-MNIST from ``--data-root`` (offline: ``make data``; never downloads here) at 28×28 with
``ws_ofa_mbv3_035_28`` by default, validated on the 10,000 held-out images; ``--data digits`` (bundled,
8×8) and ``--data cifar10`` / ``auto`` (CIFAR-10 only if its files are already under ``--data-root``).

Example::

    python benchmarks/train_des_vs_ps.py --train-size 12800 --seeds 0 1 2 --json results.json
    python benchmarks/train_des_vs_ps.py --data digits --seeds 0 --epochs 4 --no-equal-compute
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
from ws_core.stats import mean_se, paired_difference, separated, verdict
from ws_train import (
    CIFAR10DataModule,
    DelayedEpsilonShrinking,
    DigitsDataModule,
    FashionMNISTDataModule,
    ProgressiveShrinking,
    SandwichRule,
    SubNetValidation,
    SuperNetModule,
)
from ws_train.comparison import (
    des_subnet_steps,
    progressive_shrinking_subnet_steps,
    sandwich_subnet_steps,
    steps_for_subnet_budget,
)
from ws_train.schedules import BIGNAS_LR_DECAY_EPOCHS

DES, PS, SANDWICH = "DelayedEpsilonShrinking", "ProgressiveShrinking", "SandwichRule"
SHORT = {DES: "DεS", PS: "OFA PS", SANDWICH: "BigNAS sandwich"}
#: The DεpS paper's ImageNet-1k table (MobileNetV3 space): smallest / largest SubNet top-1 %, mean Pareto %,
#: epochs, GPU hours (Annavajjala et al., ECCV 2024, Table 1; /work/shared/research/training.md §3.4).
PAPER = {
    DES: {"min": 73.8, "max": 77.3, "pareto": 75.81, "epochs": 270, "gpu_h": 700},
    PS: {"min": 71.8, "max": 77.2, "pareto": 75.77, "epochs": 605, "gpu_h": 1256},
    SANDWICH: {"min": 70.6, "max": 74.0, "pareto": 72.51, "epochs": 400, "gpu_h": 1778},
}
METRICS = (("min", "min SubNet"), ("max", "max SubNet"), ("mean_pareto", "mean Pareto"))


def make_policy(name: str, args: argparse.Namespace, seed: int):
    if name == DES:
        return DelayedEpsilonShrinking(warmup_fraction=args.warmup_fraction + args.ramp_fraction,
                                       ramp_fraction=args.ramp_fraction, seed=seed)
    if name == PS:
        return ProgressiveShrinking(seed=seed)  # OFA phases, per-phase lr restarts, nested sorting
    decay_epochs = (BIGNAS_LR_DECAY_EPOCHS * args.epochs / args.bignas_reference_epochs
                    if args.bignas_reference_epochs else BIGNAS_LR_DECAY_EPOCHS)
    return SandwichRule(lr_decay_epochs=decay_epochs, seed=seed)  # zero-init last BN γ, BigNAS lr


class CostMeter(Callback):
    """Training wall and CPU time (optimizer steps only), SubNet-steps and min/max accuracy per epoch."""

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
        self.curve.append({
            "epoch": trainer.current_epoch + 1,
            "step": trainer.global_step,
            "subnet_steps": pl_module.policy.subnet_passes,
            "train_seconds": self.train_seconds,
            "train_cpu_seconds": self.train_cpu_seconds,
            "min": self.validation.accuracy("min"),
            "max": self.validation.accuracy("max"),
        })


def data_kind(args: argparse.Namespace) -> str:
    if args.data == "auto":
        return "cifar10" if (Path(args.data_root) / "cifar-10-batches-py").is_dir() else "digits"
    return args.data


def make_data(args: argparse.Namespace, seed: int) -> tuple[L.LightningDataModule, str]:
    kind = data_kind(args)
    if kind == "cifar10":
        dm = CIFAR10DataModule(root=args.data_root, download=False, batch_size=args.batch_size,
                               num_workers=args.num_workers, calibration_batch_size=args.calibration_batch_size,
                               eval_batch_size=500, seed=seed)
        return dm, "CIFAR-10 (32×32)"
    if kind == "fashion-mnist":
        dm = FashionMNISTDataModule(root=args.data_root, download=False, image_size=args.image_size,
                                    val_size=args.val_size, train_size=args.train_size, augment=args.augment,
                                    batch_size=args.batch_size, num_workers=args.num_workers,
                                    calibration_batch_size=args.calibration_batch_size, eval_batch_size=500,
                                    seed=seed)
        held_out = "the 10,000 held-out images" if args.val_size == 0 else f"{args.val_size} held-out training images"
        return dm, (f"Fashion-MNIST {args.image_size}×{args.image_size}, {args.train_size or 'all'} training images "
                    f"(seeded stratified subset), validated on {held_out}")
    dm = DigitsDataModule(image_size=args.image_size, batch_size=args.batch_size, num_workers=args.num_workers,
                          train_size=args.train_size, calibration_batch_size=args.calibration_batch_size, seed=seed)
    return dm, f"digits (scikit-learn, {args.image_size}×{args.image_size} RGB)"


def quiet_trainer(**kwargs) -> L.Trainer:
    return L.Trainer(accelerator="cpu" if kwargs.pop("cpu") else "auto", devices=1, logger=False,
                     enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                     num_sanity_val_steps=0, **kwargs)


def run_policy(name: str, args: argparse.Namespace, seed: int, max_steps: int | None = None) -> dict:
    """Train ``name`` with ``seed`` for ``--epochs`` epochs (or ``max_steps`` optimizer steps) and evaluate it."""
    L.seed_everything(seed, verbose=False)
    data, _ = make_data(args, seed)
    module = SuperNetModule(args.model, num_classes=data.num_classes, lr=args.lr, weight_decay=args.weight_decay,
                            seed=seed, val_bn_batches=0, channels_last=args.channels_last)
    per_epoch = SubNetValidation(("min", "max"), bn_batches=args.bn_batches, seed=seed)
    meter = CostMeter(per_epoch)
    policy = make_policy(name, args, seed)
    length = {"max_epochs": args.epochs} if max_steps is None else {"max_epochs": -1, "max_steps": max_steps}
    trainer = quiet_trainer(cpu=args.cpu, callbacks=[policy, per_epoch, meter], **length)
    start = time.perf_counter()
    trainer.fit(module, data)
    wall = time.perf_counter() - start
    # the final evaluation after training, in its own Trainer: min, max and the same random SubNets for every
    # policy of this seed
    final = SubNetValidation(("min", "max"), num_random=args.eval_random, bn_batches=args.bn_batches, seed=seed)
    quiet_trainer(cpu=args.cpu, callbacks=[final]).validate(module, data, verbose=False)
    costs = CostModel(module.supernet, input_size=args.image_size)
    ids = list(final.subnets)
    macs = [costs.macs(final.subnets[i]) for i in ids]
    accs = [final.results[i] for i in ids]
    front = pareto_front(macs, accs)
    return {
        "policy": name,
        "seed": seed,
        "min": final.accuracy("min"),
        "max": final.accuracy("max"),
        "mean_pareto": sum(accs[i] for i in front) / len(front),
        "pareto_size": len(front),
        "evaluated": len(ids),
        "steps": policy.total_steps,
        "epochs": policy.total_steps / trainer.num_training_batches,
        "subnet_steps": policy.subnet_passes,
        "subnets_per_step": policy.subnet_passes / policy.total_steps,
        "train_seconds": meter.train_seconds,
        "train_cpu_seconds": meter.train_cpu_seconds,
        "wall_seconds": wall,
        "curve": meter.curve,
        "subnets": [{"id": i, "macs": m, "acc": a} for i, m, a in zip(ids, macs, accs)],
    }


def equal_compute_steps(name: str, args: argparse.Namespace, steps: int, steps_per_epoch: float) -> int:
    """Optimizer steps at which ``name`` spends the sandwich's SubNet-steps of a ``steps``-step run."""
    budget = sandwich_subnet_steps(steps)
    if name == DES:
        return steps_for_subnet_budget(
            lambda t: des_subnet_steps(t, steps_per_epoch, args.warmup_fraction + args.ramp_fraction,
                                       ramp_fraction=args.ramp_fraction), budget)
    if name == PS:
        return steps_for_subnet_budget(progressive_shrinking_subnet_steps, budget)
    return steps


# Printing ------------------------------------------------------------------------------------------------
def by_policy(results: list[dict], names: list[str]) -> dict[str, list[dict]]:
    return {n: sorted((r for r in results if r["policy"] == n), key=lambda r: r["seed"]) for n in names}


def print_summary(title: str, runs: dict[str, list[dict]]) -> None:
    print(title)
    print("| policy | min SubNet % | max SubNet % | mean Pareto % (front size) | epochs | SubNets/step | "
          "SubNet-steps | train CPU s | train wall s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, rs in runs.items():
        if not rs:
            continue

        def ms(key, scale=1.0, digits=2, rows=rs):
            return mean_se([r[key] for r in rows]).format(scale, digits)

        sizes = "/".join(str(r["pareto_size"]) for r in rs)
        print(f"| {SHORT[name]} | {ms('min', 100)} | {ms('max', 100)} | {ms('mean_pareto', 100)} ({sizes}) | "
              f"{rs[0]['epochs']:.2f} | {rs[0]['subnets_per_step']:.2f} | {ms('subnet_steps', 1, 0)} | "
              f"{ms('train_cpu_seconds', 1, 0)} | {ms('train_seconds', 1, 0)} |")


def print_differences(title: str, runs: dict[str, list[dict]]) -> list[str]:
    """Paired differences DεS − other per metric; returns the verdict lines."""
    if DES not in runs or len(runs) < 2:
        return []
    print(title)
    print("| metric | " + " | ".join(f"DεS − {SHORT[n]} (points)" for n in runs if n != DES) + " |")
    print("|---|" + "---:|" * (len(runs) - 1))
    lines = []
    for key, label in METRICS:
        cells = []
        for n, rs in runs.items():
            if n == DES:
                continue
            d = paired_difference([r[key] for r in runs[DES]], [r[key] for r in rs])
            mark = " *" if separated(d) else ""
            cells.append(d.format(100, 2) + mark)
        print(f"| {label} | " + " | ".join(cells) + " |")
        lines.append(verdict({SHORT[n]: [r[key] for r in rs] for n, rs in runs.items()}, SHORT[DES], label))
    print("(* the 95 % t interval over the seeds excludes 0)")
    return lines


def print_per_seed(runs: list[tuple[str, dict]]) -> None:
    print("Every run:")
    print("| configuration | policy | seed | min % | max % | mean Pareto % | steps | SubNet-steps | train CPU s | "
          "train wall s |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for config, r in runs:
        print(f"| {config} | {SHORT[r['policy']]} | {r['seed']} | {100 * r['min']:.2f} | {100 * r['max']:.2f} | "
              f"{100 * r['mean_pareto']:.2f} | {r['steps']} | {r['subnet_steps']} | {r['train_cpu_seconds']:.0f} | "
              f"{r['train_seconds']:.0f} |")


def print_curves(title: str, runs: dict[str, list[dict]]) -> None:
    print(title)
    print("| policy | epoch | SubNet-steps | min SubNet % | max SubNet % |")
    print("|---|---:|---:|---:|---:|")
    for name, rs in runs.items():
        n_points = min((len(r["curve"]) for r in rs), default=0)
        for k in range(n_points):
            pts = [r["curve"][k] for r in rs]
            print(f"| {SHORT[name]} | {pts[0]['epoch']} | {pts[0]['subnet_steps']} | "
                  f"{mean_se([p['min'] for p in pts]).format(100, 2)} | "
                  f"{mean_se([p['max'] for p in pts]).format(100, 2)} |")


def print_paper(equal_epochs: dict[str, list[dict]]) -> None:
    print("The DεpS paper (ImageNet-1k, MobileNetV3 space) beside this run (equal epochs); cost relative to DεS:")
    print("| policy | paper min % | paper max % | paper mean Pareto % | paper epochs | paper GPU h (÷ DεS) | "
          "ours min % | ours max % | ours mean Pareto % | ours SubNet-steps (÷ DεS) | ours train CPU s (÷ DεS) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    des = equal_epochs.get(DES)
    for name, rs in equal_epochs.items():
        if not rs:
            continue
        p = PAPER[name]
        ours_steps = mean_se([r["subnet_steps"] for r in rs]).mean
        ours_cpu = mean_se([r["train_cpu_seconds"] for r in rs]).mean
        if des:
            ratio_steps = ours_steps / mean_se([r["subnet_steps"] for r in des]).mean
            ratio_cpu = ours_cpu / mean_se([r["train_cpu_seconds"] for r in des]).mean
            ratio = f" ({ratio_steps:.2f}×)", f" ({ratio_cpu:.2f}×)"
        else:
            ratio = ("", "")
        print(f"| {SHORT[name]} | {p['min']} | {p['max']} | {p['pareto']} | {p['epochs']} | {p['gpu_h']} "
              f"({p['gpu_h'] / PAPER[DES]['gpu_h']:.2f}×) | "
              f"{mean_se([r['min'] for r in rs]).format(100, 2)} | {mean_se([r['max'] for r in rs]).format(100, 2)} | "
              f"{mean_se([r['mean_pareto'] for r in rs]).format(100, 2)} | {ours_steps:.0f}{ratio[0]} | "
              f"{ours_cpu:.0f}{ratio[1]} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", choices=("fashion-mnist", "digits", "cifar10", "auto"), default="fashion-mnist",
                        help="auto: CIFAR-10 if its files are under --data-root, else digits (never downloads)")
    parser.add_argument("--data-root", "--cifar-root", dest="data_root", default="data")
    parser.add_argument("--model", default=None,
                        help="default: ws_ofa_mbv3_035_28 for Fashion-MNIST, ws_ofa_mbv3_035_32 otherwise")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--image-size", type=int, default=None,
                        help="Fashion-MNIST: 28 (default); digits: 8 (default, native) or 32; CIFAR: 32")
    parser.add_argument("--train-size", type=int, default=None,
                        help="first N training images (seeded stratified subset; default: 12800 for "
                             "Fashion-MNIST, all digits)")
    parser.add_argument("--val-size", type=int, default=0,
                        help="Fashion-MNIST: hold out this many training images for validation (0: validate "
                             "on the 10,000 held-out images)")
    parser.add_argument("--augment", action="store_true", help="Fashion-MNIST: random crop + flip")
    parser.add_argument("--batch-size", type=int, default=None, help="default: 128 (Fashion-MNIST, CIFAR), 64 (digits)")
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--weight-decay", type=float, default=3e-5)
    parser.add_argument("--warmup-fraction", type=float, default=0.3,
                        help="DεS: the max net alone for this share of the steps")
    parser.add_argument("--ramp-fraction", type=float, default=0.1,
                        help="DεS: then the ε ramp over this share (its switch T_w at the sum)")
    parser.add_argument("--bignas-reference-epochs", type=float, default=400.0,
                        help="sandwich: scale BigNAS's 2.4-epoch lr-decay period by epochs / this (0: unscaled)")
    parser.add_argument("--eval-random", type=int, default=4, help="random SubNets evaluated besides min and max")
    parser.add_argument("--bn-batches", type=int, default=8, help="calibration batches per BN recalibration")
    parser.add_argument("--calibration-batch-size", type=int, default=250)
    parser.add_argument("--no-channels-last", dest="channels_last", action="store_false")
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--cpu", action="store_true", help="force CPU even when a GPU is present")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--seed", type=int, default=None, help="one seed (same as --seeds SEED)")
    parser.add_argument("--policies", nargs="+", default=[DES, PS, SANDWICH], choices=[DES, PS, SANDWICH])
    parser.add_argument("--equal-compute", action=argparse.BooleanOptionalAction, default=True,
                        help="also train DεS and PS for the sandwich's SubNet-steps (default: on)")
    parser.add_argument("--json", default=None, help="also write every number (per seed, per epoch) here")
    args = parser.parse_args()
    if args.seed is not None:
        args.seeds = [args.seed]
    if len(set(args.seeds)) != len(args.seeds):
        parser.error(f"--seeds must be distinct, got {args.seeds}")
    kind = data_kind(args)
    if args.model is None:
        args.model = "ws_ofa_mbv3_035_28" if kind == "fashion-mnist" else "ws_ofa_mbv3_035_32"
    if args.image_size is None:
        args.image_size = {"fashion-mnist": 28, "digits": 8, "cifar10": 32}[kind]
    if args.batch_size is None:
        args.batch_size = 64 if kind == "digits" else 128
    if args.train_size is None and kind == "fashion-mnist":
        args.train_size = 12800
    if args.threads:
        torch.set_num_threads(args.threads)

    _, data_name = make_data(args, args.seeds[0])
    load_start = os.getloadavg()
    started = time.perf_counter()
    print(f"# DεS vs OFA PS vs BigNAS sandwich: {args.model} on {data_name}; {args.epochs} epochs, batch "
          f"{args.batch_size}, lr {args.lr}, seeds {args.seeds}")
    print(f"# machine: {platform.machine()} {os.cpu_count()} CPUs, torch {torch.__version__}, Lightning "
          f"{L.__version__}, {torch.get_num_threads()} threads, "
          f"{'CUDA ' + torch.cuda.get_device_name() if torch.cuda.is_available() and not args.cpu else 'CPU'}; "
          f"load average at start {load_start[0]:.2f} / {load_start[1]:.2f} / {load_start[2]:.2f}")

    equal_epochs: list[dict] = []
    for seed in args.seeds:
        for name in args.policies:
            r = run_policy(name, args, seed)
            equal_epochs.append(r)
            print(f"# equal epochs, seed {seed}, {name}: min {r['min']:.4f} max {r['max']:.4f}, "
                  f"{r['subnet_steps']} SubNet-steps, {r['train_cpu_seconds']:.0f} CPU s, "
                  f"{r['wall_seconds']:.0f} s wall (load {os.getloadavg()[0]:.2f})", flush=True)

    equal_compute: list[dict] = []
    if args.equal_compute:
        ref = equal_epochs[0]
        for seed in args.seeds:
            for name in args.policies:
                if name == SANDWICH:
                    continue
                steps = equal_compute_steps(name, args, ref["steps"], ref["steps"] / ref["epochs"])
                r = run_policy(name, args, seed, max_steps=steps)
                equal_compute.append(r)
                print(f"# equal compute, seed {seed}, {name}: {steps} steps, min {r['min']:.4f} max {r['max']:.4f}, "
                      f"{r['subnet_steps']} SubNet-steps, {r['train_cpu_seconds']:.0f} CPU s, "
                      f"{r['wall_seconds']:.0f} s wall (load {os.getloadavg()[0]:.2f})", flush=True)
        equal_compute += [r for r in equal_epochs if r["policy"] == SANDWICH]

    load_end = os.getloadavg()
    total = time.perf_counter() - started
    print(f"# all runs: {total / 60:.1f} min wall; load average at end {load_end[0]:.2f} / {load_end[1]:.2f} / "
          f"{load_end[2]:.2f}")

    eq_epochs = by_policy(equal_epochs, args.policies)
    n = len(args.seeds)
    print()
    print_summary(f"Equal epochs ({args.epochs} epochs each): mean ± standard error over {n} seed(s); final "
                  f"accuracy after BN recalibration, Pareto front over min, max and {args.eval_random} random "
                  f"SubNets:", eq_epochs)
    print()
    verdicts = {"equal_epochs": print_differences("Paired differences, equal epochs (mean ± s.e. over seeds):",
                                                  eq_epochs)}
    eq_compute = by_policy(equal_compute, args.policies)
    if equal_compute:
        print()
        print_summary("Equal compute (DεS and PS lengthened to the sandwich's SubNet-steps; the sandwich as "
                      "above): mean ± standard error:", eq_compute)
        print()
        verdicts["equal_compute"] = print_differences("Paired differences, equal compute (mean ± s.e. over seeds):",
                                                      eq_compute)
    print()
    print_paper(eq_epochs)
    print()
    print_curves("Per-epoch min / max SubNet accuracy, equal epochs (mean ± s.e.):", eq_epochs)
    if equal_compute:
        print()
        print_curves("Per-epoch min / max SubNet accuracy, equal compute (mean ± s.e.):",
                     {k: v for k, v in eq_compute.items() if k != SANDWICH})
    print()
    print_per_seed([("equal epochs", r) for r in equal_epochs]
                   + [("equal compute", r) for r in equal_compute if r["policy"] != SANDWICH])
    print()
    print("Verdict (a difference is called only when its 95 % t interval over the seeds excludes 0):")
    for config, lines in verdicts.items():
        for line in lines:
            print(f"- {config.replace('_', ' ')}: {line}")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "args": vars(args), "data": data_name, "torch": torch.__version__, "lightning": L.__version__,
            "threads": torch.get_num_threads(), "load_average_start": load_start, "load_average_end": load_end,
            "total_wall_seconds": total, "paper": PAPER, "equal_epochs": equal_epochs,
            "equal_compute": equal_compute, "verdicts": verdicts,
        }, indent=1))
    if not all(math.isfinite(r["min"]) for r in equal_epochs + equal_compute):
        raise SystemExit("non-finite accuracy")


if __name__ == "__main__":
    main()
