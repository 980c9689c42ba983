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
(``--search-train-limit``); retraining uses the whole train part (``--train-limit`` for a subset).
``--dataset fashion_mnist`` reads Fashion-MNIST from ``--root`` (default ``data``, as ``make data``
prepares it; grey, one channel, ``--image-size`` 16 keeps every reduction cell's size even);
``--dataset cifar10 --root DIR`` uses a local CIFAR-10 copy (never downloaded).

``--seeds N`` repeats everything — every search and every retraining — with seeds ``--seed`` …
``--seed + N − 1`` and reports mean ± standard error over them (``ws_core.stats``), the gap to DARTS
fp32 paired by seed, and a verdict per quantized row that calls a gap only when its 95 % t interval
excludes 0. ``--combine a.json b.json`` pools the ``--json`` files of runs made separately (e.g. one
process per core).

    python benchmarks/nas_qdarts.py                      # defaults: 4 searches + 6 retrains, one process
    python benchmarks/nas_qdarts.py --dataset fashion_mnist --image-size 16 --seeds 3 --json out.json
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import time
import warnings
from typing import Any

import lightning as L
import torch

from ws_core.search import pareto_front
from ws_core.stats import mean_se, paired_difference, verdict
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


def data(args, seed: int, **kwargs) -> ImageClassificationData:
    """The data module of every search and retraining: grey images stay one channel at any size."""
    return ImageClassificationData(args.dataset, root=args.root, image_size=args.image_size,
                                   in_chans=None if args.dataset == "cifar10" else 1, batch_size=args.batch_size,
                                   seed=seed, **kwargs)


def search(args, bits, lam: float, seed: int) -> tuple[Genotype, float]:
    L.seed_everything(seed, verbose=False)
    data_ = data(args, seed, held_out_fraction=0.5, train_limit=args.search_train_limit or None)
    module = SearchModule(num_classes=data_.num_classes, in_chans=data_.in_chans, input_size=data_.input_size, C=args.C,
                          layers=args.layers, bits=bits, partial_channels=args.partial_channels,
                          edge_normalization=True, lr=args.lr, precision_lr=args.precision_lr)
    callback = NablaQDARTS(complexity_weight=lam, warmup_epochs=args.warmup_epochs, arch_lr=args.arch_lr,
                           unrolled=args.unrolled)
    t0 = time.perf_counter()
    _trainer(args.search_epochs, [callback]).fit(module, data_)
    return callback.genotype, time.perf_counter() - t0


def retrain(args, genotype: Genotype, precision, seed: int) -> tuple[RetrainModule, float, float]:
    L.seed_everything(seed, verbose=False)
    data_ = data(args, seed, train_limit=args.train_limit or None)
    module = RetrainModule(genotype, num_classes=data_.num_classes, in_chans=data_.in_chans,
                           input_size=data_.input_size, C=args.C, layers=args.layers, precision=precision,
                           lr=args.retrain_lr)
    trainer = _trainer(args.retrain_epochs)
    t0 = time.perf_counter()
    trainer.fit(module, data_)
    seconds = time.perf_counter() - t0
    acc = trainer.test(module, data_, verbose=False)[0]["test_acc"]
    return module, float(acc), seconds


@torch.no_grad()
def accuracy(net: torch.nn.Module, loader) -> float:
    net.eval()
    correct = total = 0
    for x, y in loader:
        correct += (net(x).argmax(-1) == y).sum().item()
        total += len(y)
    return correct / total


def row(name: str, lam: float | None, acc: float, net: DARTSNetwork, input_size: int, search_s: float,
        train_s: float) -> dict[str, Any]:
    """One method's numbers in one repetition (seed)."""
    c = cost_report(net, input_size)
    b = bitops_breakdown(net, input_size)  # whole network = stem + cells + head
    return dict(method=name, lam=lam, acc=acc, cell_bitops=b.cells, bitops=b.total, stem_bitops=b.stem,
                head_bitops=b.head, bit_w=c.mean_weight_bits, bit_a=c.mean_act_bits, size_bits=c.model_size_bits,
                macs=c.macs, search_s=search_s, train_s=train_s)


def run_seed(args, seed: int, input_size: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """One repetition: every search and retraining with ``seed`` (data split, initial weights, batches)."""
    rows: list[dict[str, Any]] = []
    genotypes: dict[str, Any] = {}
    # 1. DARTS fp32: search, retrain; PTQ and uniform QAT of its genotype.
    darts, darts_s = search(args, None, 0.0, seed)
    genotypes["DARTS"] = darts.to_dict()
    fp_module, fp_acc, fp_s = retrain(args, darts, "float", seed)
    rows.append(row("DARTS fp32", None, fp_acc, fp_module.network, input_size, darts_s, fp_s))
    calib = data(args, seed)
    calib.setup()
    for b in (8, 4, 2):
        q = post_training_quantize(fp_module.network, (b, b), calib.calibration_dataloader(), num_batches=10)
        rows.append(row(f"DARTS + PTQ {b}-bit", None, accuracy(q, calib.test_dataloader()), q, input_size,
                        darts_s, 0.0))
    for b in args.qat_bits:
        module, acc, seconds = retrain(args, darts, (b, b), seed)
        rows.append(row(f"DARTS + QAT {b}-bit", None, acc, module.network, input_size, darts_s, seconds))
    # 2. ∇QDARTS, one search per λ.
    for lam in args.lambdas:
        genotype, search_s = search(args, args.bits, lam, seed)
        genotypes[f"NablaQDARTS lambda={lam:g}"] = genotype.to_dict()
        module, acc, seconds = retrain(args, genotype, "genotype", seed)
        rows.append(row(f"∇QDARTS {tuple(args.bits)}", lam, acc, module.network, input_size, search_s, seconds))
    return rows, genotypes


def label(r: dict[str, Any]) -> str:
    return r["method"] + ("" if r["lam"] is None else f" λ={r['lam']:g}")


def summarise(per_seed: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Per method: mean ± standard error over the seeds of accuracy, of its paired gap to DARTS fp32 (points)
    and of its BitOps reductions vs fp32 (each seed's own fp32 network), and mean BitOps and bit-widths."""
    out = []
    fp = [rows[0] for rows in per_seed]
    for i, first in enumerate(per_seed[0]):
        rs = [rows[i] for rows in per_seed]
        accs = [r["acc"] for r in rs]
        out.append(dict(
            method=first["method"], lam=first["lam"], accs=accs, acc=mean_se(accs),
            delta=paired_difference(accs, [f["acc"] for f in fp]),
            cell_reduction=mean_se([f["cell_bitops"] / r["cell_bitops"] for f, r in zip(fp, rs)]),
            reduction=mean_se([f["bitops"] / r["bitops"] for f, r in zip(fp, rs)]),
            **{k: sum(r[k] for r in rs) / len(rs) for k in ("cell_bitops", "bitops", "stem_bitops", "head_bitops",
                                                             "bit_w", "bit_a", "size_bits", "search_s", "train_s")},
        ))
    return out


def report(args, table: list[dict[str, Any]], seeds: list[int], input_size: int, total_s: float) -> None:
    """Print the table (mean ± standard error over ``seeds``), the goal line and the verdicts."""
    front = set(pareto_front([r["cell_bitops"] for r in table], [r["acc"].mean for r in table]))
    print(f"\n∇QDARTS benchmark — {args.dataset} ({input_size}×{input_size}), C={args.C}, layers={args.layers}, "
          f"PC-DARTS K={args.partial_channels}, search {args.search_epochs} epochs (warm-up {args.warmup_epochs}), "
          f"retrain {args.retrain_epochs} epochs, {len(seeds)} seed(s) (mean ± standard error); "
          f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}" + (f"; total {total_s:.0f} s" if total_s > 0 else "") + "\n")
    print("| method | λ | test acc % | Δ vs fp32 (points) | cell BitOps (∇QDARTS) | × fewer (cells) "
          "| whole-network BitOps (stem + cells + head) | × fewer (whole network) "
          "| bitW | bitA | size kbit | search s | retrain s | front |")
    print("|" + "---|" * 14)
    for i, r in enumerate(table):
        lam = "" if r["lam"] is None else f"{r['lam']:g}"
        delta = "0" if i == 0 else (r["delta"].format(100, 2) if len(seeds) > 1 else f"{100 * r['delta'].mean:+.2f}")
        print(f"| {r['method']} | {lam} | {r['acc'].format(100, 2)} | {delta} | {r['cell_bitops'] / 1e6:.3f}M | "
              f"{r['cell_reduction'].format(1, 1)}× | {r['bitops'] / 1e6:.2f}M | {r['reduction'].format(1, 1)}× | "
              f"{r['bit_w']:.2f} | {r['bit_a']:.2f} | {r['size_bits'] / 1e3:.1f} | {r['search_s']:.0f} | "
              f"{r['train_s']:.0f} | {'*' if i in front else ''} |")
    fp = table[0]
    ours = [r for r in table if r["lam"] is not None and r["delta"].mean >= -0.02]
    if ours:
        best = max(ours, key=lambda r: r["cell_reduction"].mean)
        print(f"\nGoal (≥ 10× fewer BitOps than fp32 within 2 points, on the means): λ={best['lam']:g} at "
              f"{100 * best['delta'].mean:+.2f} points gives {best['cell_reduction'].mean:.1f}× fewer cell BitOps "
              f"(∇QDARTS convention) -> {'met' if best['cell_reduction'].mean >= 10 else 'not met'}; "
              f"{best['reduction'].mean:.1f}× fewer whole-network BitOps (stem + cells + head) -> "
              f"{'met' if best['reduction'].mean >= 10 else 'not met'}")
    else:
        print("\nGoal (≥ 10× fewer BitOps than fp32 within 2 points): not met — no ∇QDARTS row within 2 points "
              "of fp32 on the means")
    if len(seeds) > 1:
        accs = {label(r): r["accs"] for r in table}
        baselines = [n for n in accs if n == fp["method"] or "QAT" in n]  # fp32 and the uniform-QAT rows
        for name in [n for n in accs if n.startswith("∇QDARTS")]:
            print(verdict({name: accs[name], **{b: accs[b] for b in baselines}}, name, "test accuracy"))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="digits", choices=["digits", "fashion_mnist", "cifar10"])
    p.add_argument("--root", default=None,
                   help="folder with FashionMNIST/raw (default: data) or cifar-10-batches-py (cifar10)")
    p.add_argument("--image-size", type=int, default=None, help="image side (default: the data set's own)")
    p.add_argument("--lambdas", type=float, nargs="+", default=[1e-4, 3e-4, 1e-3], help="∇QDARTS λ sweep")
    p.add_argument("--bits", type=int, nargs="+", default=[2, 4], help="bit-widths of the precision mixtures")
    p.add_argument("--qat-bits", type=int, nargs="*", default=[4, 2],
                   help="uniform-QAT baselines of the DARTS genotype")
    p.add_argument("--C", type=int, default=8)
    p.add_argument("--layers", type=int, default=3)
    p.add_argument("--partial-channels", type=int, default=4, help="PC-DARTS K (∇QDARTS on CIFAR: 4)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--search-epochs", type=int, default=5)
    p.add_argument("--warmup-epochs", type=int, default=2)
    p.add_argument("--retrain-epochs", type=int, default=10)
    p.add_argument("--search-train-limit", type=int, default=600,
                   help="stratified subset of the train part used by the searches, split 50/50 into search "
                        "train / held-out (0: the whole train part)")
    p.add_argument("--train-limit", type=int, default=0,
                   help="stratified subset of the train part used for retraining (0: the whole train part)")
    p.add_argument("--lr", type=float, default=0.05, help="search: SGD lr of the weights")
    p.add_argument("--precision-lr", type=float, default=0.01, help="search: SGD lr of γ")
    p.add_argument("--arch-lr", type=float, default=3e-3, help="search: Adam lr of α, β")
    p.add_argument("--retrain-lr", type=float, default=0.05)
    p.add_argument("--unrolled", action="store_true", help="second-order architecture gradient")
    p.add_argument("--seeds", type=int, default=1,
                   help="repetitions, seeds --seed, --seed + 1, ...: each runs every search and retraining "
                        "again (mean ± standard error over them)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1,
                   help="torch intra-op threads (tiny convolutions: 1 is fastest on a 2-core machine)")
    p.add_argument("--json", default=None, help="also write the rows as JSON here")
    p.add_argument("--combine", nargs="+", metavar="JSON",
                   help="run nothing: pool the --json files of runs made separately (e.g. one seed per process)")
    args = p.parse_args()
    if args.combine:
        runs = []
        for path in args.combine:
            with open(path) as f:
                runs.append(json.load(f))
        seeds = [seed for run in runs for seed in run["seeds"]]
        if len(set(seeds)) != len(seeds):
            p.error(f"--combine: a seed appears twice: {seeds}")
        per_seed = [rows for run in runs for rows in run["per_seed"]]
        if len({tuple(label(r) for r in rows) for rows in per_seed}) != 1:
            p.error("--combine: the runs compared different methods")
        first = argparse.Namespace(**runs[0]["args"])
        report(first, summarise(per_seed), seeds, runs[0].get("input_size", first.image_size or 0),
               sum(run.get("total_s", 0.0) for run in runs))
        return
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    if any(lam < 0 for lam in args.lambdas):
        p.error(f"--lambdas must be >= 0, got {args.lambdas}")
    if args.seeds < 1:
        p.error(f"--seeds must be >= 1, got {args.seeds}")
    if args.dataset == "fashion_mnist" and args.root is None:
        args.root = "data"

    input_size = data(args, args.seed).input_size
    seeds = [args.seed + i for i in range(args.seeds)]
    t_start = time.perf_counter()
    per_seed, genotypes = [], {}
    for seed in seeds:
        rows, genotypes[seed] = run_seed(args, seed, input_size)
        per_seed.append(rows)
        print(f"# seed {seed} done after {time.perf_counter() - t_start:.0f} s: "
              + "; ".join(f"{label(r)} {100 * r['acc']:.2f}%" for r in rows), flush=True)
    table = summarise(per_seed)
    report(args, table, seeds, input_size, time.perf_counter() - t_start)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "seeds": seeds, "input_size": input_size,
                       "total_s": time.perf_counter() - t_start, "per_seed": per_seed, "genotypes": genotypes,
                       "summary": [{**r, **{k: vars(r[k]) for k in ("acc", "delta", "cell_reduction", "reduction")}}
                                   for r in table]}, f, indent=1)


if __name__ == "__main__":
    main()
