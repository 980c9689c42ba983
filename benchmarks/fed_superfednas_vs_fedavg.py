"""SuperFedNAS vs FedAvg-per-target: training cost and accuracy for K deployment targets, in one run.

Both methods run through the same code: the ws-fed ``ClientApp`` (``ws_fed.client_app:app``), the
``SuperFedNAS`` strategy (FedAvg-per-target is its static special case, ``FedAvgSubNet``) and
``ws_fed.run_federated``. To be fast, the rounds run in this process on an ``InProcessGrid`` (the
ClientApp is called directly with deep-copied messages) instead of Flower's simulation or deployment
engine; messages, aggregation and cost accounting are the same code as under ``flwr run``.

1. **SuperFedNAS**: one federated training of the SuperNet (tracking sandwich, MaxNet β schedule),
   then one-shot specialisation to K MAC budgets (evolutionary search on server-side validation
   accuracy, or loss with ``--search-criterion loss``; every SubNet scored is a candidate for every
   target it fits; no retraining). Each target's own search winner is printed for comparison.
2. **FedAvg per target**: for each target, the SubNet SuperFedNAS picked is trained from the same
   initial weights with FedAvg, for the same number of rounds, clients per round and local epochs.
   Targets that got the same SubNet share one (seeded, so identical) run. The cost is reported both
   ways, each labelled (``ws_fed.accounting.baseline_cost``): FedAvg charged once per distinct SubNet
   (the runs actually needed) and once per target (K trainings, also where targets share a SubNet).

Both methods train with the same client settings (constant learning rate by default; ``--lr-schedule
cosine`` anneals it over the rounds, the server sending each round's value). The defaults of ``--lr``,
``--momentum`` and ``--bn-mode`` are ws-fed's (``FedConfig``: SuperFedNAS's plain SGD, lr 0.1, no
momentum); runs recorded in docs/benchmarks.md before 2026-12 used ``--lr 0.05 --momentum 0.9``.

The logic lives in ``ws_fed.comparison`` (training, the saved-SuperNet reuse, the cost accounting
of a run, the goal and the pooling over seeds, with mean ± standard error from ``ws_core.stats``);
this script parses options and prints tables.

Data: ``--dataset digits`` (default; scikit-learn's 8×8 digits, bundled) or ``--dataset fashion-mnist``
(prepared under ``--data-root``, ``make data``): ``--train-size N`` draws a seeded stratified subset of
its training file (10 % of it held out for validation), its test file is the test split, and
``--image-size`` resizes the images (e.g. 14 for 14×14).

Costs are measured, not estimated: client compute = Σ over accepted replies of 3 × forward MACs of the
trained SubNet × samples processed (``ws_core.cost.CostModel``), and communication = bytes of the
serialized arrays sent to and received from clients. Accuracy is on the held-out test split,
each SubNet's BN statistics re-estimated on the validation split (the same procedure for both methods).

    python benchmarks/fed_superfednas_vs_fedavg.py            # defaults: 10 clients, Dirichlet α = 1
    python benchmarks/fed_superfednas_vs_fedavg.py --rounds 3 --targets 0.3,0.8   # smoke run
    python benchmarks/fed_superfednas_vs_fedavg.py --clients 20 --rounds 300 --local-epochs 1 --jobs 2
    python benchmarks/fed_superfednas_vs_fedavg.py --clients 20 --rounds 300 --local-epochs 1 --seeds 0,1,2
    python benchmarks/fed_superfednas_vs_fedavg.py --dataset fashion-mnist --data-root data --train-size 3000 \
        --image-size 14 --targets 0.05,0.15,0.25,0.4,0.5,0.65,0.8,0.95 --seeds 0,1,2 --jobs 2   # K = 8

One run compares two accuracies on one test split (360 digits; one image is 0.28 points, the standard
error of a gap near 98 % about 1 point). ``--seeds 0,1,2`` repeats everything per seed (data split,
client partition, initial weights, sampling) and then prints each target's mean gap over the runs and
the ratios of the summed costs, beside each run's own verdict; ``--combine a.json b.json ...`` prints
the same summary from the ``--json`` files of runs made separately (e.g. one seed per machine).

``--save-supernet PATH`` keeps the trained SuperNet (and its measured training cost); a later run with
``--load-supernet PATH`` and the same training settings skips SuperFedNAS training, e.g. to compare
search criteria on one SuperNet.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import platform
import sys
import time
from concurrent.futures import ProcessPoolExecutor

import torch

from ws_core.cost import CostModel
from ws_fed import DeploymentTarget, FedConfig
from ws_fed.accounting import baseline_cost
from ws_fed.comparison import fedavg_run, goal_met, parse_seeds, seeded_path, summarise, superfednas
from ws_fed.federated import evaluators, write_json
from ws_fed.specialise import CRITERIA, specialise
from ws_fed.task import BN_MODES, DATASETS, build_supernet, load_data


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", choices=DATASETS, default=FedConfig.dataset,
                   help="digits: scikit-learn's 8x8 digits (bundled); fashion-mnist: prepared under --data-root")
    p.add_argument("--data-root", default=FedConfig.data_root, help="folder holding FashionMNIST/raw (make data)")
    p.add_argument("--train-size", type=int, default=FedConfig.train_size,
                   help="fashion-mnist: stratified subset of the training file (train + 10%% validation); 0 = all")
    p.add_argument("--image-size", type=int, default=FedConfig.image_size,
                   help="side of the (resized) square images the SuperNet sees")
    p.add_argument("--clients", type=int, default=10, help="virtual clients (partitions)")
    p.add_argument("--fraction", type=float, default=0.4, help="share of clients per round (SuperFedNAS: 0.4)")
    p.add_argument("--rounds", type=int, default=30, help="rounds, for SuperFedNAS and for each FedAvg run")
    p.add_argument("--local-epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=FedConfig.lr)
    p.add_argument("--momentum", type=float, default=FedConfig.momentum,
                   help="clients' SGD momentum (SuperFedNAS: none)")
    p.add_argument("--bn-mode", choices=BN_MODES, default=FedConfig.bn_mode,
                   help="BatchNorm in federated training (see ws_fed.task.BN_MODES)")
    p.add_argument("--lr-schedule", choices=("cosine", "linear", "constant"), default="constant",
                   help="the clients' lr over the rounds, annealed to --lr-final (both methods alike; "
                        "cosine helps FedAvg more than SuperFedNAS here, see docs/benchmarks.md)")
    p.add_argument("--lr-final", type=float, default=0.0)
    p.add_argument("--alpha", type=float, default=1.0, help="Dirichlet concentration of the label split")
    p.add_argument("--beta-initial", type=float, default=0.5,
                   help="MaxNet share of round 1, decaying to 1/K (SuperFedNAS: 0.9 over 1,200 of 1,500 rounds)")
    p.add_argument("--targets", default="0.15,0.35,0.6,0.9",
                   help="K MAC budgets as fractions of the span from the smallest to the largest SubNet")
    p.add_argument("--search-population", type=int, default=16)
    p.add_argument("--search-generations", type=int, default=4)
    p.add_argument("--search-criterion", choices=CRITERIA, default="accuracy",
                   help="how the specialisation search ranks SubNets on the validation split")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--seeds", help="comma-separated seeds: one full repetition each (data split, partition, "
                                   "weights, sampling), then the mean over them per target (overrides --seed)")
    p.add_argument("--combine", nargs="+", metavar="JSON",
                   help="run nothing: summarise the --json files of earlier runs (e.g. one seed per machine)")
    p.add_argument("--jobs", type=int, default=1,
                   help="FedAvg trainings run in this many processes at once (each uses one core best)")
    p.add_argument("--json", help="also write all numbers here")
    p.add_argument("--save-supernet", metavar="PATH",
                   help="write the trained SuperNet and its training cost here (ws-core safetensors checkpoint; "
                        "'{seed}' in PATH is replaced by the seed)")
    p.add_argument("--load-supernet", metavar="PATH",
                   help="skip SuperFedNAS training: load a SuperNet written by --save-supernet with the same settings")
    args = p.parse_args(argv)
    try:
        args.seed_list = parse_seeds(args.seeds) if args.seeds else [args.seed]
    except ValueError as e:
        p.error(f"--{e}")
    try:
        run_config(args)  # FedConfig checks every setting (allowed values and the value given)
    except ValueError as e:
        p.error(str(e))
    for name in ("save_supernet", "load_supernet"):
        path = getattr(args, name)
        if path and len(args.seed_list) > 1 and "{seed}" not in path:
            p.error(f"--{name.replace('_', '-')} with several seeds needs '{{seed}}' in the path, got {path!r}")
    return args


def for_seed(args: argparse.Namespace, seed: int) -> argparse.Namespace:
    """``args`` for one repetition: ``seed`` set, ``{seed}`` filled into the SuperNet paths."""
    one = argparse.Namespace(**vars(args))
    one.seed = seed
    for name in ("save_supernet", "load_supernet"):
        setattr(one, name, seeded_path(getattr(one, name), seed))
    return one


def run_config(args: argparse.Namespace) -> FedConfig:
    return FedConfig(
        num_server_rounds=args.rounds, fraction_train=args.fraction, min_train_nodes=2, min_available_nodes=2,
        image_size=args.image_size, dataset=args.dataset, data_root=args.data_root, train_size=args.train_size,
        local_epochs=args.local_epochs, batch_size=args.batch_size, lr=args.lr, lr_schedule=args.lr_schedule,
        lr_final=args.lr_final, momentum=args.momentum, bn_mode=args.bn_mode, partitioner="dirichlet",
        dirichlet_alpha=args.alpha, beta_initial=args.beta_initial, seed=args.seed,
        search_population=args.search_population, search_generations=args.search_generations,
        search_criterion=args.search_criterion,
    )


def run_one(args: argparse.Namespace) -> dict:
    """One repetition (``args.seed``): train, specialise, train FedAvg per target; print its tables."""
    cfg = run_config(args)
    data = load_data(cfg)
    probe = build_supernet(cfg.model, cfg.image_size, seed=cfg.seed)
    costs = CostModel(probe)
    lo, hi = costs.macs(probe.space.min()), costs.macs(probe.space.max())
    fractions = [float(f) for f in args.targets.split(",")]
    targets = [DeploymentTarget(f"T{i + 1}", max_macs=lo + f * (hi - lo)) for i, f in enumerate(fractions)]
    per_round = max(int(args.clients * args.fraction), cfg.min_train_nodes)
    print(f"# SuperFedNAS vs FedAvg-per-target: {cfg.model} on {cfg.dataset} {cfg.image_size}x{cfg.image_size} "
          f"({len(data.train)} train / {len(data.val)} val / {len(data.test)} test images), "
          f"{args.clients} clients (Dirichlet alpha={args.alpha:g}), {per_round} per round, {args.rounds} rounds, "
          f"{args.local_epochs} local epoch(s), lr {args.lr:g} ({args.lr_schedule}), "
          f"beta {args.beta_initial:g} -> 1/{per_round}, K={len(targets)} targets, "
          f"search by validation {args.search_criterion}",
          flush=True)
    print(f"# SubNet MACs range {lo / 1e6:.3f}M .. {hi / 1e6:.3f}M; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {platform.processor() or platform.machine()}", flush=True)

    # 1. SuperFedNAS: one training, then one-shot specialisation -----------------------------------
    net, sfn_cost, sfn_time = superfednas(cfg, args.clients, save=args.save_supernet, load=args.load_supernet)
    print(f"SuperFedNAS trained in {sfn_time:.0f} s: {sfn_cost}", flush=True)
    t0 = time.perf_counter()
    val_acc, test_acc = evaluators(net, data, cfg)
    specs = specialise(net, targets, val_acc, test=test_acc, population_size=cfg.search_population,
                       generations=cfg.search_generations, seed=cfg.seed)
    search_time = time.perf_counter() - t0
    # inference work of the search: every distinct SubNet scored once (BN recalibration + validation pass)
    per_eval_samples = len(data.val) + (0 if cfg.bn_mode == "frozen" else cfg.bn_batches * cfg.batch_size)
    search_macs = sum(costs.macs(c) for c in val_acc.cache) * per_eval_samples
    print(f"specialised {len(specs)} targets in {search_time:.0f} s", flush=True)
    # for comparison: each target's own search winner (no shared candidates; the scores are cached)
    alone = specialise(net, targets, val_acc, population_size=cfg.search_population,
                       generations=cfg.search_generations, seed=cfg.seed, share_candidates=False)
    print("picks with / without shared candidates (MMACs, fitness): " + "; ".join(
        f"{s.target.name} {s.macs / 1e6:.3f} {s.fitness:.4f} / {a.macs / 1e6:.3f} {a.fitness:.4f}"
        for s, a in zip(specs, alone)), flush=True)

    # 2. FedAvg per target: each found SubNet trained on its own for the same rounds --------------
    # Targets that got the same SubNet share one run: FedAvg training is seeded, so training that SubNet
    # again for the next target would repeat it exactly. The accounting charges it once ("per distinct
    # SubNet") and, as the baseline of one FedAvg training per target, once per target ("per target").
    distinct = list(dict.fromkeys(spec.subnet for spec in specs))
    names = ["+".join(s.target.name for s in specs if s.subnet == sub) for sub in distinct]
    jobs = [(cfg, args.clients, name, sub) for name, sub in zip(names, distinct)]
    if args.jobs > 1:
        with ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            runs = list(pool.map(fedavg_run, *zip(*jobs)))
    else:
        runs = [fedavg_run(*job) for job in jobs]
    for sub, fa in zip(distinct, runs):
        print(f"FedAvg {fa['target']} ({costs.macs(sub) / 1e6:.3f}M MACs) in {fa['seconds']:.0f} s: "
              f"test acc {100 * fa['accuracy']:.2f}%", flush=True)
    fedavg = [runs[distinct.index(spec.subnet)] for spec in specs]

    # 3. Report ------------------------------------------------------------------------------------
    account = baseline_cost(sfn_cost, [distinct.index(spec.subnet) for spec in specs], dict(enumerate(runs)))
    fa_time = sum(f["seconds"] for f in runs)
    print()
    print("| target | MAC budget | SubNet | SubNet MMACs | SuperFedNAS acc % | FedAvg acc % | Δ (points) |")
    print("|---|---:|---|---:|---:|---:|---:|")
    deltas = []
    for spec, fa in zip(specs, fedavg):
        delta = 100 * (spec.test_accuracy - fa["accuracy"])
        deltas.append(delta)
        print(f"| {spec.target.name} | {spec.target.max_macs / 1e6:.3f}M | {spec.subnet.id} | {spec.macs / 1e6:.3f} | "
              f"{100 * spec.test_accuracy:.2f} | {100 * fa['accuracy']:.2f} | {delta:+.2f} |")
    ratios = account.ratios()
    d, k = account.num_distinct, account.num_targets
    print()
    print(f"| cost | SuperFedNAS (1 training + search) | FedAvg once per distinct SubNet ({d} trainings) | "
          f"FedAvg / SuperFedNAS | FedAvg once per target ({k} trainings) | FedAvg / SuperFedNAS |")
    print("|---|---:|---:|---:|---:|---:|")
    for key, label, unit in (("client_macs", "client training compute (GMACs)", 1e9),
                             ("bytes", "communication (MB, down + up)", 1e6)):
        print(f"| {label} | {account.superfednas[key] / unit:.1f} | {account.per_distinct_subnet[key] / unit:.1f} | "
              f"{ratios[f'{key}_distinct']:.2f}× | {account.per_target[key] / unit:.1f} | {ratios[key]:.2f}× |")
    print(f"| wall time here (s, distinct runs, summed over processes) | {sfn_time + search_time:.0f} | "
          f"{fa_time:.0f} | {fa_time / (sfn_time + search_time):.2f}× | | |")
    print(f"| server-side search compute (GMACs, inference; not client cost) | {search_macs / 1e9:.1f} | "
          "0 | – | 0 | – |")

    def verdict(*values: float) -> str:
        return "met" if goal_met(list(values), deltas) else "NOT met"

    print()
    print(f"goal (>= 3x lower cost at accuracy within 1 point per target; worst accuracy gap "
          f"{min(deltas):+.2f} points): "
          f"FedAvg once per distinct SubNet ({d}): compute {ratios['client_macs_distinct']:.2f}x, communication "
          f"{ratios['bytes_distinct']:.2f}x -> {verdict(ratios['client_macs_distinct'], ratios['bytes_distinct'])}; "
          f"FedAvg once per target ({k}): compute {ratios['client_macs']:.2f}x, communication "
          f"{ratios['bytes']:.2f}x -> {verdict(ratios['client_macs'], ratios['bytes'])}")

    return {
        "args": {k: v for k, v in vars(args).items() if k not in ("seeds", "seed_list", "combine")},
        "superfednas": {**sfn_cost, "seconds": sfn_time, "search_seconds": search_time, "search_macs": search_macs},
        "specialisation": [s.to_dict() for s in specs], "fedavg": fedavg, "fedavg_distinct": runs,
        "target_subnets": [distinct.index(spec.subnet) for spec in specs],
        "specialisation_without_shared_candidates": [a.to_dict() for a in alone],
        "ratios": ratios, "deltas_points": deltas,
    }


def print_summary(summary: dict) -> None:
    n = len(summary["seeds"])
    print()
    print(f"## Mean over {n} runs (seeds {', '.join(map(str, summary['seeds']))})")
    print()
    print("| target | MAC budget | mean SubNet MMACs | SuperFedNAS acc % | FedAvg acc % | Δ per run (points) | "
          "mean Δ ± s.e. | 95 % t interval excludes 0 |")
    print("|---|---|---:|---:|---:|---|---:|---|")
    for t in summary["targets"]:
        print(f"| {t['target']} | {t['budget']} | {t['mean_subnet_macs'] / 1e6:.3f} | "
              f"{100 * t['mean_superfednas_accuracy']:.2f} | {100 * t['mean_fedavg_accuracy']:.2f} | "
              f"{' / '.join(f'{d:+.2f}' for d in t['deltas_points'])} | "
              f"{t['mean_delta_points']:+.2f} ± {t['sem_delta_points']:.2f} | "
              f"{'yes' if t.get('gap_separated') else 'no'} |")
    r = summary["ratios"]
    worst = min(t["mean_delta_points"] for t in summary["targets"])
    print()
    print(f"pooled cost ratios (FedAvg / SuperFedNAS, summed over runs): FedAvg once per distinct SubNet: "
          f"compute {r['client_macs_distinct']:.2f}x, communication {r['bytes_distinct']:.2f}x; FedAvg once per "
          f"target: compute {r['client_macs']:.2f}x, communication {r['bytes']:.2f}x")

    def met(ok: bool) -> str:
        return "met" if ok else "NOT met"

    print(f"goal on the means (>= 3x lower cost, every target's mean gap within 1 point; worst {worst:+.2f}): "
          f"FedAvg once per distinct SubNet: {met(summary['goal_met_on_means_distinct'])} "
          f"(single runs meeting it: {summary['runs_meeting_goal_distinct']} of {n}); FedAvg once per target: "
          f"{met(summary['goal_met_on_means'])} (single runs meeting it: {summary['runs_meeting_goal']} of {n})")


def load_runs(paths: list[str]) -> list[dict]:
    """Per-seed payloads from --json files: a single run's, or the ``runs`` of a multi-seed file."""
    runs = []
    for path in paths:
        with open(path) as f:
            payload = json.load(f)
        runs.extend(payload.get("runs", [payload]))
    return runs


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.combine:
        runs = load_runs(args.combine)
    else:
        runs = []
        for seed in args.seed_list:
            runs.append(run_one(for_seed(args, seed)))
            if args.json and len(args.seed_list) > 1:  # keep finished runs if a later one fails
                write_json(args.json, {"runs": runs})
    summary = summarise(runs) if len(runs) > 1 else None
    if summary is not None:
        print_summary(summary)
    if args.json and not (args.combine and args.json in args.combine):
        write_json(args.json, runs[0] if summary is None else {"runs": runs, "summary": summary})
    return 0


if __name__ == "__main__":
    sys.exit(main())
