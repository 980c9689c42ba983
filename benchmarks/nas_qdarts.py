"""∇QDARTS vs DARTS fp32, uniform-bit QAT and post-training quantization — one run, one table.

Everything is measured in this run, on the same data, splits, network size and schedule:

1. **DARTS fp32** — search with float convolutions (``bits=None``, ``λ = 0``), retrain the genotype in fp32;
2. **uniform QAT** — the DARTS genotype retrained with uniform 4-bit and 2-bit weights/activations;
3. **PTQ** — the trained DARTS fp32 network quantized to 8/4/2 bits after training (BN recalibrated);
4. **∇QDARTS** — one search per ``λ`` over operations *and* per-conv {2, 4}-bit weight/activation
   precision, each genotype retrained with its searched bit-widths.

Reported per row: test accuracy, BitOps of the cell layers (the ∇QDARTS convention; the float stem
and classifier excluded) and of the whole network (stem + cells + head, ``ws_nas.cost.bitops_breakdown``;
float layers at 32 × 32 bits), both reductions vs DARTS fp32, MAC-weighted mean bit-widths, model size
in bits, wall times. The (cell BitOps, accuracy) Pareto front is marked with
``ws_core.search.pareto_front``. Goal (issue): ≥ 10× fewer BitOps than fp32 within 2 accuracy points —
reported for the cells (the paper's figure) and for the whole network.

The searches use ∇QDARTS's PC-DARTS partial channels, K = 4 (``--partial-channels``).

Default data: scikit-learn digits at 8×8 (bundled, offline; 1,257 train / 540 test images). The
searches use a stratified 600-image subset of the train part, split 50/50 into train / held-out
(``--search-train-limit``); retraining uses the whole train part. ``--dataset cifar10 --root DIR``
uses a local CIFAR-10 copy (never downloaded).

    python benchmarks/nas_qdarts.py                      # defaults: 4 searches + 6 retrains, one process
    python benchmarks/nas_qdarts.py --lambdas 1e-3 1e-2 --search-epochs 20 --retrain-epochs 60 --seeds 3 --json out.json
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import platform
import time
import warnings
from typing import Any

import lightning as L
import torch

from ws_core.search import pareto_front
from ws_nas import (
    DARTSNetwork,
    Genotype,
    ImageClassificationData,
    NablaQDARTS,
    RetrainModule,
    SearchModule,
    cost_report,
    post_training_quantize,
)
from ws_nas.cost import bitops_breakdown


def _trainer(epochs: int, callbacks=()) -> L.Trainer:
    return L.Trainer(max_epochs=epochs, accelerator="cpu", callbacks=list(callbacks), logger=False,
                     enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                     num_sanity_val_steps=0, check_val_every_n_epoch=max(1, epochs))


def search(args, bits, lam: float, seed: int) -> tuple[Genotype, float]:
    L.seed_everything(seed, verbose=False)
    data = ImageClassificationData(args.dataset, root=args.root, batch_size=args.batch_size, held_out_fraction=0.5,
                                   seed=seed, train_limit=args.search_train_limit or None)
    module = SearchModule(num_classes=data.num_classes, in_chans=data.in_chans, input_size=data.input_size, C=args.C,
                          layers=args.layers, bits=bits, partial_channels=args.partial_channels,
                          edge_normalization=True, lr=args.lr, precision_lr=args.precision_lr)
    callback = NablaQDARTS(complexity_weight=lam, warmup_epochs=args.warmup_epochs, arch_lr=args.arch_lr,
                           unrolled=args.unrolled)
    t0 = time.perf_counter()
    _trainer(args.search_epochs, [callback]).fit(module, data)
    return callback.genotype, time.perf_counter() - t0


def retrain(args, genotype: Genotype, precision, seed: int) -> tuple[RetrainModule, float, float]:
    L.seed_everything(seed, verbose=False)
    data = ImageClassificationData(args.dataset, root=args.root, batch_size=args.batch_size, seed=seed)
    module = RetrainModule(genotype, num_classes=data.num_classes, in_chans=data.in_chans, input_size=data.input_size,
                           C=args.C, layers=args.layers, precision=precision, lr=args.retrain_lr)
    trainer = _trainer(args.retrain_epochs)
    t0 = time.perf_counter()
    trainer.fit(module, data)
    seconds = time.perf_counter() - t0
    acc = trainer.test(module, data, verbose=False)[0]["test_acc"]
    return module, float(acc), seconds


@torch.no_grad()
def accuracy(net: torch.nn.Module, loader) -> float:
    net.eval()
    correct = total = 0
    for x, y in loader:
        correct += (net(x).argmax(-1) == y).sum().item()
        total += len(y)
    return correct / total


def row(name: str, lam: float | None, accs: list[float], net: DARTSNetwork, input_size: int, search_s: float,
        train_s: float) -> dict[str, Any]:
    c = cost_report(net, input_size)
    b = bitops_breakdown(net, input_size)  # whole network = stem + cells + head
    mean = sum(accs) / len(accs)
    std = math.sqrt(sum((a - mean) ** 2 for a in accs) / (len(accs) - 1)) if len(accs) > 1 else 0.0
    return dict(method=name, lam=lam, acc=mean, acc_std=std, accs=accs, cell_bitops=b.cells, bitops=b.total,
                stem_bitops=b.stem, head_bitops=b.head, bit_w=c.mean_weight_bits, bit_a=c.mean_act_bits,
                size_bits=c.model_size_bits, macs=c.macs, search_s=search_s, train_s=train_s)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="digits", choices=["digits", "cifar10"])
    p.add_argument("--root", default=None, help="folder with cifar-10-batches-py (cifar10 only)")
    p.add_argument("--lambdas", type=float, nargs="+", default=[1e-4, 3e-4, 1e-3], help="∇QDARTS λ sweep")
    p.add_argument("--bits", type=int, nargs="+", default=[2, 4], help="bit-widths of the precision mixtures")
    p.add_argument("--C", type=int, default=8)
    p.add_argument("--layers", type=int, default=3)
    p.add_argument("--partial-channels", type=int, default=4, help="PC-DARTS K (∇QDARTS on CIFAR: 4)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--search-epochs", type=int, default=5)
    p.add_argument("--warmup-epochs", type=int, default=2)
    p.add_argument("--retrain-epochs", type=int, default=10)
    p.add_argument("--search-train-limit", type=int, default=600,
                   help="searches use a stratified subset of this many training images, split 50/50 into "
                        "train / held-out (0: the whole train part); retraining always uses the whole train part")
    p.add_argument("--lr", type=float, default=0.05, help="search: SGD lr of the weights")
    p.add_argument("--precision-lr", type=float, default=0.01, help="search: SGD lr of γ")
    p.add_argument("--arch-lr", type=float, default=3e-3, help="search: Adam lr of α, β")
    p.add_argument("--retrain-lr", type=float, default=0.05)
    p.add_argument("--unrolled", action="store_true", help="second-order architecture gradient")
    p.add_argument("--seeds", type=int, default=1, help="retraining seeds per row (mean ± std)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1,
                   help="torch intra-op threads (1: these tiny convolutions run slower with 2 threads on 2 cores)")
    p.add_argument("--json", default=None, help="also write the rows as JSON here")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    if any(lam < 0 for lam in args.lambdas):
        p.error(f"--lambdas must be >= 0, got {args.lambdas}")

    input_size = 8 if args.dataset == "digits" else 32
    seeds = [args.seed + i for i in range(args.seeds)]
    t_start = time.perf_counter()
    rows: list[dict[str, Any]] = []
    genotypes: dict[str, Any] = {}

    # 1. DARTS fp32: search, retrain; PTQ and uniform QAT of its genotype.
    darts, darts_s = search(args, None, 0.0, args.seed)
    genotypes["DARTS"] = darts.to_dict()
    fp_runs = [retrain(args, darts, "float", s) for s in seeds]
    fp_net = fp_runs[0][0].network
    rows.append(row("DARTS fp32", None, [r[1] for r in fp_runs], fp_net, input_size, darts_s,
                    sum(r[2] for r in fp_runs) / len(seeds)))
    calib = ImageClassificationData(args.dataset, root=args.root, batch_size=args.batch_size, seed=args.seed)
    calib.setup()
    for b in (8, 4, 2):
        accs = []
        for module, _, _ in fp_runs:
            q = post_training_quantize(module.network, (b, b), calib.calibration_dataloader(), num_batches=10)
            accs.append(accuracy(q, calib.test_dataloader()))
        rows.append(row(f"DARTS + PTQ {b}-bit", None, accs, q, input_size, darts_s, 0.0))
    for b in (4, 2):
        runs = [retrain(args, darts, (b, b), s) for s in seeds]
        rows.append(row(f"DARTS + QAT {b}-bit", None, [r[1] for r in runs], runs[0][0].network, input_size, darts_s,
                        sum(r[2] for r in runs) / len(seeds)))

    # 2. ∇QDARTS, one search per λ.
    for lam in args.lambdas:
        genotype, search_s = search(args, args.bits, lam, args.seed)
        genotypes[f"NablaQDARTS lambda={lam:g}"] = genotype.to_dict()
        runs = [retrain(args, genotype, "genotype", s) for s in seeds]
        rows.append(row(f"∇QDARTS {tuple(args.bits)}", lam, [r[1] for r in runs], runs[0][0].network, input_size,
                        search_s, sum(r[2] for r in runs) / len(seeds)))

    # 3. Table.
    fp = rows[0]
    front = set(pareto_front([r["cell_bitops"] for r in rows], [r["acc"] for r in rows]))
    print(f"\n∇QDARTS benchmark — {args.dataset} ({input_size}×{input_size}), C={args.C}, layers={args.layers}, "
          f"PC-DARTS K={args.partial_channels}, search {args.search_epochs} epochs (warm-up {args.warmup_epochs}), "
          f"retrain {args.retrain_epochs} epochs, "
          f"{len(seeds)} seed(s); {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}; total {time.perf_counter() - t_start:.0f} s\n")
    header = ("| method | λ | test acc % | Δ vs fp32 | cell BitOps (∇QDARTS) | × fewer (cells) "
              "| whole-network BitOps (stem + cells + head) | × fewer (whole network) "
              "| bitW | bitA | size kbit | search s | retrain s | front |")
    print(header)
    print("|" + "---|" * 14)
    for i, r in enumerate(rows):
        acc = f"{100 * r['acc']:.2f}" + (f" ± {100 * r['acc_std']:.2f}" if len(seeds) > 1 else "")
        lam = "" if r["lam"] is None else f"{r['lam']:g}"
        print(f"| {r['method']} | {lam} | {acc} | "
              f"{100 * (r['acc'] - fp['acc']):+.2f} | {r['cell_bitops'] / 1e6:.3f}M | "
              f"{fp['cell_bitops'] / r['cell_bitops']:.1f}× | {r['bitops'] / 1e6:.2f}M | "
              f"{fp['bitops'] / r['bitops']:.1f}× | {r['bit_w']:.2f} | {r['bit_a']:.2f} | "
              f"{r['size_bits'] / 1e3:.1f} | {r['search_s']:.0f} | "
              f"{r['train_s']:.0f} | {'*' if i in front else ''} |")
    ours = [r for r in rows if r["lam"] is not None and r["acc"] >= fp["acc"] - 0.02]
    if ours:
        best = max(ours, key=lambda r: fp["cell_bitops"] / r["cell_bitops"])
        ratio = fp["cell_bitops"] / best["cell_bitops"]
        whole = fp["bitops"] / best["bitops"]
        print(f"\nGoal (≥ 10× fewer BitOps than fp32 within 2 points): λ={best['lam']:g} at "
              f"{100 * (best['acc'] - fp['acc']):+.2f} points gives {ratio:.1f}× fewer cell BitOps (∇QDARTS "
              f"convention) -> {'met' if ratio >= 10 else 'not met'}; {whole:.1f}× fewer whole-network BitOps "
              f"(stem + cells + head; stem {best['stem_bitops'] / 1e6:.2f}M + cells {best['cell_bitops'] / 1e6:.2f}M "
              f"+ head {best['head_bitops'] / 1e6:.2f}M) -> {'met' if whole >= 10 else 'not met'}")
    else:
        print("\nGoal (≥ 10× fewer BitOps than fp32 within 2 points): not met — no ∇QDARTS row within 2 points of fp32")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "rows": rows, "genotypes": genotypes}, f, indent=1)


if __name__ == "__main__":
    main()
