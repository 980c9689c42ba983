"""The pipeline's report: ``report.md``, two PNG plots and ``results.json`` in the run folder.

* ``accuracy_vs_macs.png`` — every evaluated SubNet (held-out accuracy after BN recalibration vs
  MACs per image), the Pareto front and the served SubNets.
* ``serving_timeline.png`` — per second of the trace: offered load, SLO attainment and mean served
  accuracy for each policy.
"""

from __future__ import annotations

import json
import math
import os
import platform
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["plot_accuracy_vs_macs", "plot_serving_timeline", "results_dict", "write_report"]


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


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
            label="Pareto front")
    served = [s for s in subnets if s.served]
    ax.scatter([s.macs / 1e6 for s in served], [100 * s.accuracy for s in served], s=60, facecolors="none",
               edgecolors="C3", linewidths=1.5, label="served", zorder=3)
    for s in subnets:
        if s.label in ("min", "max"):
            ax.annotate(s.label, (s.macs / 1e6, 100 * s.accuracy), textcoords="offset points", xytext=(4, -10),
                        fontsize=8)
    ax.set_xlabel("MACs per image (millions)")
    ax.set_ylabel("held-out accuracy (%)")
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


def results_dict(result) -> dict[str, Any]:
    """Every number of the run as plain JSON (``results.json``)."""
    return {
        "config": result.config.to_dict(),
        "train": {"checkpoint": str(result.train.checkpoint), "seconds": result.train.seconds,
                  "steps": result.train.steps, "metrics": result.train.metrics},
        "subnets": [s.to_dict() for s in result.subnets],
        "profile": result.profile.to_dict(),
        "slo_ms": result.slo_ms,
        "rate_qps": result.rate_qps,
        "overhead_ms": result.overhead_ms,
        "capacity_qps": result.capacity_qps,
        "trace": {"queries": len(result.trace), "duration_s": result.config.trace_seconds, "cv2": result.config.cv2},
        "serving": [{"policy": r.policy, "label": r.label, **r.report.to_dict(),
                     "timeline": r.report.timeline(1.0)} for r in result.serving],
        "seconds": result.seconds,
        "machine": {"python": platform.python_version(), "processor": platform.processor() or platform.machine(),
                    "cpus": os.cpu_count()},
    }


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
        f"- Held-out accuracy after BN recalibration: max SubNet {100 * maxnet.accuracy:.2f}% "
        f"({maxnet.macs / 1e6:.2f} MMACs), min SubNet {100 * minnet.accuracy:.2f}% ({minnet.macs / 1e6:.2f} MMACs); "
        f"Pareto front {sum(s.pareto for s in result.subnets)} SubNets.",
        f"- Serving: SLO {result.slo_ms:.1f} ms, {len(result.trace)} queries in {cfg.trace_seconds:g} s "
        f"(mean {result.rate_qps:.1f} q/s = {cfg.load:g} × the fixed SubNet's throughput, CV² {cfg.cv2:g}), "
        f"max batch {cfg.max_batch}, {cfg.workers} worker(s); measured on this machine: fixed-SubNet throughput "
        + (f"{result.capacity_qps:.1f} q/s sustained within the SLO, " if result.capacity_qps else "")
        + f"HTTP overhead {result.overhead_ms:.1f} ms per request.",
    ]
    for run in result.serving:
        r = run.report
        lines.append(f"- {run.label}: SLO attainment **{r.slo_attainment:.3f}**, mean served accuracy "
                     f"**{100 * r.mean_accuracy:.2f}%**." if r.met_slo else
                     f"- {run.label}: SLO attainment **{r.slo_attainment:.3f}** (no request met the SLO).")
    if "total" in result.seconds:
        steps = ", ".join(f"{k} {v:.0f}" for k, v in result.seconds.items() if k != "total")
        lines.append(f"- Wall time: {result.seconds['total']:.0f} s ({steps}).")

    lines += ["", "## SubNets", "", f"![accuracy vs MACs]({files['accuracy_plot']})", "",
              "| SubNet | kind | MMACs | params (M) | held-out accuracy % | Pareto | served |",
              "|---|---|---:|---:|---:|:-:|:-:|"]
    for s in sorted(result.subnets, key=lambda s: s.macs):
        lines.append(f"| `{s.id}` | {s.label} | {s.macs / 1e6:.3f} | {s.params / 1e6:.3f} | "
                     f"{100 * s.accuracy:.2f} | {'✓' if s.pareto else ''} | {'✓' if s.served else ''} |")

    p = result.profile
    lines += ["", "## Served set and measured latency", "",
              f"Latency of a batch (forward pass only), median of the profile measured on this machine ({p.device}); "
              f"each request also costs about {result.overhead_ms:.1f} ms of HTTP handling.", "",
              "| SubNet | accuracy % | " + " | ".join(f"batch {b} ms" for b in range(1, p.max_batch + 1)) + " |",
              "|---|---:|" + "---:|" * p.max_batch]
    for i, sid in enumerate(p.subnet_ids):
        lines.append(f"| `{sid}` | {100 * p.accuracies[i]:.2f} | "
                     + " | ".join(f"{p.latency(i, b):.1f}" for b in range(1, p.max_batch + 1)) + " |")

    lines += ["", "## Serving under a bursty trace", "", f"![serving timeline]({files['timeline_plot']})", "",
              "| policy | SLO attainment | mean served accuracy % | throughput q/s | p50 ms | p99 ms | responses |",
              "|---|---:|---:|---:|---:|---:|---|"]
    for run in result.serving:
        r = run.report
        acc = f"{100 * r.mean_accuracy:.2f}" if r.met_slo else "–"
        statuses = ", ".join(f"{n} × {k}" for k, n in sorted(r.statuses.items(), key=lambda kv: str(kv[0])))
        lines.append(f"| {run.label} | {r.slo_attainment:.3f} | {acc} | {r.throughput:.1f} | "
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
    _atomic_write(run_dir / files["results"], payload + "\n")
    path = run_dir / "report.md"
    _atomic_write(path, _markdown(result, files))
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
