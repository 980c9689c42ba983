"""Elastic ViT on Fashion-MNIST: DεS training, SubNet accuracy vs MACs, actuation and served latency, one run.

Trains the small ViT SuperNet (``ws_vit_nano_patch4_28``: embed {32, 48, 64}, heads {2, 3, 4}, MLP ratio
{2, 3, 4}, depth {4, 5, 6}) with ws-train's Delayed ε-Shrinking on a subset of Fashion-MNIST
(``FashionMNISTDataModule``, the data prepared under ``--root``; never downloads), then prints:

* held-out accuracy (the data module's test split) of the min, the max and ``--subnets`` random SubNets,
  their MACs (ws-core ``CostModel``, attention's ``q kᵀ`` / ``A v`` included) and the Spearman rank
  correlation of MACs and accuracy; training wall / CPU time;
* actuation: in-place ``activate`` per SubNet switch (first time and seen before), ws-serve's
  ``SubNetAct.actuate`` (a row lookup), against ``extract`` (the per-model baseline);
* served latency per SubNet through ws-serve's default CPU backend (ONNX Runtime, one exported session
  per SubNet) against the eager SubNetAct deployment, at batch 1 and ``--batch``.

The machine is shared: the load average is printed with every phase. LayerNorm needs no recalibration,
so accuracies are measured as trained (no BN in a ViT).

Example::

    python benchmarks/vit_small.py                                # 20,000 images × 4 epochs, ~10 min on 2 cores
    python benchmarks/vit_small.py --train-size 60000 --epochs 20 --json vit.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from _timing import times_us
from ws_core import CostModel, SubNetConfig
from ws_core.cost import profile_latency
from ws_core.search import spearman
from ws_serve.backends import make_backend
from ws_serve.subnetact import SubNetAct
from ws_train import DelayedEpsilonShrinking, FashionMNISTDataModule, SuperNetModule


class TrainClock(Callback):
    """Wall and CPU seconds of the optimizer steps (data loading between steps excluded)."""

    def __init__(self) -> None:
        self.wall = self.cpu = 0.0
        self._t = self._c = 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._t, self._c = time.perf_counter(), time.process_time()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.wall += time.perf_counter() - self._t
        self.cpu += time.process_time() - self._c


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} / {five:.2f} / {fifteen:.2f} (1 / 5 / 15 min)"


def p90(values: list[float]) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(0.9 * len(values)))]


@torch.inference_mode()
def accuracy(net, cfg: SubNetConfig, batches) -> float:
    correct = total = 0
    with net.subnet(cfg):
        for x, y in batches:
            correct += int((net(x).argmax(1) == y).sum())
            total += len(y)
    return correct / total


def distinct_samples(space, n: int, seed: int, exclude) -> list[SubNetConfig]:
    g = torch.Generator().manual_seed(seed)
    seen, out = set(exclude), []
    while len(out) < n:
        cfg = space.sample(g)
        if cfg not in seen:
            seen.add(cfg)
            out.append(cfg)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="ws_vit_nano_patch4_28")
    parser.add_argument("--root", default="data", help="folder holding FashionMNIST/raw (make data)")
    parser.add_argument("--train-size", type=int, default=20000, help="training images (seeded stratified subset)")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3, help="AdamW peak learning rate (cosine)")
    parser.add_argument("--weight-decay", type=float, default=0.05)
    parser.add_argument("--warmup-epochs", type=float, default=0.5)
    parser.add_argument("--augment", action="store_true",
                        help="random crop + flip (off by default: over a few epochs it slows a ViT down)")
    parser.add_argument("--eval-images", type=int, default=10000, help="held-out (test split) images per SubNet")
    parser.add_argument("--subnets", type=int, default=18, help="random SubNets evaluated besides min and max")
    parser.add_argument("--serve", type=int, default=6, help="SubNets timed through ws-serve (evenly spread in MACs)")
    parser.add_argument("--batch", type=int, default=32, help="second batch size of the latency table")
    parser.add_argument("--actuations", type=int, default=200, help="random SubNets for the activate timings")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="also write every number here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    print(f"# {args.model} on Fashion-MNIST ({args.train_size} training images × {args.epochs} epochs, batch "
          f"{args.batch_size}{', augmented' if args.augment else ''}), DelayedEpsilonShrinking, AdamW lr {args.lr} "
          f"wd {args.weight_decay}, seed {args.seed}")
    print(f"# machine: {platform.machine()} {os.cpu_count()} CPUs ({platform.processor() or 'cpu'}), torch "
          f"{torch.__version__}, {torch.get_num_threads()} threads; {load()}")

    # 1. Training --------------------------------------------------------------------------------------
    L.seed_everything(args.seed, verbose=False)
    data = FashionMNISTDataModule(root=args.root, download=False, image_size=28, train_size=args.train_size,
                                  augment=args.augment, batch_size=args.batch_size, eval_batch_size=500,
                                  seed=args.seed)
    module = SuperNetModule(args.model, num_classes=10, optimizer="adamw", lr=args.lr,
                            weight_decay=args.weight_decay, warmup_epochs=args.warmup_epochs, val_bn_batches=0,
                            seed=args.seed)
    policy, clock = DelayedEpsilonShrinking(seed=args.seed), TrainClock()
    trainer = L.Trainer(max_epochs=args.epochs, accelerator="cpu", devices=1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        num_sanity_val_steps=0, limit_val_batches=0, callbacks=[policy, clock])
    t0 = time.perf_counter()
    trainer.fit(module, data)
    train_wall = time.perf_counter() - t0
    train_load = load()
    print(f"# trained in {train_wall:.0f} s wall ({clock.wall:.0f} s wall / {clock.cpu:.0f} s CPU in optimizer "
          f"steps; {policy.total_steps} steps, {policy.subnet_passes} SubNet passes, switch at step "
          f"{policy.schedule.switch_step}); {train_load}")

    # 2. Held-out accuracy vs MACs ---------------------------------------------------------------------
    net = module.supernet.eval()
    space, costs = net.space, CostModel(net)
    data.setup("test")
    batches, n = [], 0
    for x, y in data.test_dataloader():
        batches.append((x, y))
        n += len(y)
        if n >= args.eval_images:
            break
    configs = [space.min(), space.max(), *distinct_samples(space, args.subnets, args.seed + 1,
                                                           [space.min(), space.max()])]
    labels = ["min", "max"] + ["random"] * args.subnets
    t0 = time.perf_counter()
    rows = [{"label": lab, "id": c.id, "config": c.to_dict(), "macs": costs.macs(c), "params": costs.params(c),
             "acc": accuracy(net, c, batches)} for lab, c in zip(labels, configs)]
    eval_seconds = time.perf_counter() - t0
    rho = spearman([r["macs"] for r in rows], [r["acc"] for r in rows])
    print(f"# evaluated {len(rows)} SubNets on {n} held-out images in {eval_seconds:.0f} s; {load()}")

    # 3. Actuation ---------------------------------------------------------------------------------------
    fresh = distinct_samples(space, args.actuations, args.seed + 2, configs)
    net.activate(space.min())
    first = times_us(net.activate, fresh)
    again = times_us(net.activate, fresh)
    extract = times_us(net.extract, fresh[:20])

    # 4. Served latency through ws-serve ------------------------------------------------------------------
    by_macs = sorted(rows, key=lambda r: r["macs"])
    picks = sorted({round(i * (len(by_macs) - 1) / max(args.serve - 1, 1)) for i in range(args.serve)})
    served_rows = [by_macs[i] for i in picks]
    served = [SubNetConfig(r["config"]) for r in served_rows]
    act = SubNetAct(net, served)
    actuate = times_us(act.actuate, [act.ids[i % len(act.ids)] for i in range(args.actuations)])
    sizes = [1, args.batch]
    ort = make_backend("auto", act, cache_dir=None)  # the default CPU backend: ONNX Runtime, exported in memory
    t0 = time.perf_counter()
    ort.prepare((3, 28, 28), sizes)
    export_seconds = time.perf_counter() - t0
    eager = make_backend("eager", act)
    eager.prepare((3, 28, 28), sizes)
    inputs = {b: torch.randn(b, 3, 28, 28, generator=torch.Generator().manual_seed(b)) for b in sizes}
    tables = {}
    for name, backend in (("onnxruntime", ort), ("eager", eager)):
        tables[name] = profile_latency(net, served, sizes, warmup=5, repeats=30, rounds=2,
                                       forward=lambda b, cfg, be=backend: be(inputs[b], cfg.id))
    serve_load = load()
    total = time.perf_counter() - started

    # Tables ------------------------------------------------------------------------------------------------
    print()
    print(f"Held-out accuracy of {len(rows)} SubNets ({n} test-split images), MACs per image; "
          f"Spearman(MACs, accuracy) = {rho:.3f}")
    print("| SubNet | embed | depth | heads (per block) | MLP ratio (per block) | MMACs | params | accuracy |")
    print("|---|---:|---:|---|---|---:|---:|---:|")
    for r in sorted(rows, key=lambda r: r["macs"]):
        c = r["config"]
        heads = " ".join(str(h) for h in c["num_heads"] if h is not None)
        ratios = " ".join(str(m) for m in c["mlp_ratio"] if m is not None)
        print(f"| {r['label']} {r['id'][:6]} | {c['embed_dim']} | {c['depth'][0]} | {heads} | {ratios} | "
              f"{r['macs'] / 1e6:.2f} | {r['params']:,} | {r['acc']:.4f} |")
    mx, mn = rows[1], rows[0]
    print()
    print("| result | value |")
    print("|---|---:|")
    print(f"| max SubNet accuracy ({mx['macs'] / 1e6:.1f} MMACs) | {mx['acc']:.4f} |")
    print(f"| min SubNet accuracy ({mn['macs'] / 1e6:.1f} MMACs) | {mn['acc']:.4f} |")
    print(f"| Spearman(MACs, accuracy), {len(rows)} SubNets | {rho:.3f} |")
    print(f"| training: wall s (optimizer steps: wall / CPU s) | {train_wall:.0f} "
          f"({clock.wall:.0f} / {clock.cpu:.0f}) |")
    print(f"| whole run, wall s | {total:.0f} |")
    print()
    base = statistics.median(extract)
    print("| actuation | n | median µs | p90 µs | vs extract |")
    print("|---|---:|---:|---:|---:|")
    for name, values in [("`activate(SubNetConfig)`, first time (validation + actuation)", first),
                         ("`activate(SubNetConfig)`, seen before", again),
                         ("ws-serve `SubNetAct.actuate(id)` (row lookup)", actuate),
                         ("`extract(SubNetConfig)` — baseline", extract)]:
        med = statistics.median(values)
        print(f"| {name} | {len(values)} | {med:.1f} | {p90(values):.1f} | {base / med:.0f}× |")
    print()
    print(f"Served latency per SubNet (ms; median of 30 per round, min over 2 rounds): ws-serve's default CPU "
          f"backend (ONNX Runtime; {len(served)} sessions exported in {export_seconds:.1f} s) vs the eager SubNetAct "
          f"deployment")
    print(f"| SubNet | MMACs | accuracy | ORT b1 | eager b1 | ORT b{args.batch} | eager b{args.batch} | "
          f"eager ÷ ORT (b1 / b{args.batch}) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r, cfg in zip(served_rows, served):
        o1, e1 = (tables[k].latency_ms(cfg.id, 1) for k in ("onnxruntime", "eager"))
        ob, eb = (tables[k].latency_ms(cfg.id, args.batch) for k in ("onnxruntime", "eager"))
        print(f"| {r['label']} {r['id'][:6]} | {r['macs'] / 1e6:.2f} | {r['acc']:.4f} | {o1:.3f} | {e1:.3f} | "
              f"{ob:.3f} | {eb:.3f} | {e1 / o1:.1f}× / {eb / ob:.1f}× |")
    print()
    print(f"# loads: after training {train_load}; after serving {serve_load}")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "args": vars(args), "rows": rows, "spearman": rho, "train_wall_s": train_wall,
            "train_step_wall_s": clock.wall, "train_step_cpu_s": clock.cpu, "eval_images": n,
            "activate_first_us": first, "activate_again_us": again, "actuate_us": actuate, "extract_us": extract,
            "latency": {k: t.to_dict() for k, t in tables.items()}, "loads": [train_load, serve_load],
        }, indent=1))


if __name__ == "__main__":
    main()
