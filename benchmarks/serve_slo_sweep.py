"""SLO attainment against the SLO, at one load: the main job's three policies on one of its runs.

The main job (``ws demo``) serves at one SLO, calibrated from a measured per-request overhead; this
replays the job's bursty traces at a list of fixed SLOs instead, holding the load, so the trade-off
can be read across SLOs: SlackFit, the most accurate and the least accurate served SubNet fixed, each
in its own ``ws-serve run`` process (the run's checkpoint, served set and cached profile), over gRPC.

    python benchmarks/serve_slo_sweep.py --run runs/NAME [--slos 5,8,12] [--traces 2] [--seconds 20]
        [--rate QPS] [--query-cost-ms MS]

``--rate`` and ``--query-cost-ms`` default to the run's own (``results.json``: ``rate_qps``,
``query_cost_ms``); traces are the job's (base stream 0.25 × rate, Gamma stream 0.75 × rate, CV²
``--cv2``), seeds 0..traces-1. Prints one row per SLO: mean attainment of each policy (per trace),
SlackFit's margin over the most accurate SubNet, SlackFit's mean served accuracy.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

import timm

from ws_serve.backends import server_backend_options
from ws_serve.calibration import serve_and_replay
from ws_serve.deploy import served_set_path
from ws_serve.profile import ServedSet
from ws_serve.traces import bursty_trace


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="a main-job run folder (supernet.safetensors, results.json)")
    parser.add_argument("--slos", default="5,8,12", help="comma-separated SLOs in ms")
    parser.add_argument("--traces", type=int, default=2, help="trace seeds per SLO and policy")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each trace")
    parser.add_argument("--cv2", type=float, default=8.0, help="CV² of the Gamma stream")
    parser.add_argument("--rate", type=float, help="mean arrival rate, q/s (default: the run's)")
    parser.add_argument("--query-cost-ms", type=float, help="handling cost SlackFit charges (default: the run's)")
    args = parser.parse_args()

    run = Path(args.run)
    results = json.loads((run / "results.json").read_text())
    config = results["config"]
    checkpoint = run / "supernet.safetensors"
    rate = args.rate if args.rate is not None else float(results["rate_qps"])
    query_cost = args.query_cost_ms if args.query_cost_ms is not None else float(results["query_cost_ms"])
    slos = [float(v) for v in args.slos.split(",")]
    if args.traces < 1 or args.seconds <= 0 or rate <= 0 or query_cost < 0 or not all(v > 0 for v in slos):
        raise SystemExit(f"need --traces >= 1, --seconds > 0, a rate > 0, a query cost >= 0 and SLOs > 0; got "
                         f"{args.traces}, {args.seconds}, {rate}, {query_cost}, {slos}")
    served = ServedSet.load(served_set_path(checkpoint))
    by_accuracy = sorted(served, key=lambda s: s.accuracy)
    most, least = by_accuracy[-1].id, by_accuracy[0].id
    policies = {"slackfit": "SlackFit", f"fixed:{most}": "fixed most accurate",
                f"fixed:{least}": "fixed least accurate"}
    size = int(timm.get_pretrained_cfg(config["model"]).input_size[-1])
    backend = config.get("backend", "auto")
    onnx_runtime = bool(server_backend_options(backend))  # as the main job starts its servers
    server_args = ["--backend", backend, *(["--intra-op-spinning", "run"] if onnx_runtime else [])]
    traces = [bursty_trace(0.25 * rate, 0.75 * rate, args.cv2, args.seconds, seed=seed) for seed in range(args.traces)]
    print(f"{checkpoint}: mean {rate:.1f} q/s, CV² {args.cv2:g}, {args.traces} trace(s) of {args.seconds:g} s, "
          f"query cost {query_cost:.3f} ms, max batch {config['max_batch']}, {config['transport']}")
    rows = {}
    with tempfile.TemporaryDirectory() as logs:
        for slo in slos:
            for seed, trace in enumerate(traces):
                for policy in policies:
                    report = serve_and_replay(checkpoint, policy, trace, slo, log=Path(logs) / "server.log",
                                              model=config["model"], sample_shape=(3, size, size),
                                              max_batch=config["max_batch"], workers=config["workers"],
                                              overhead_ms=float(results["overhead_ms"]), query_cost_ms=query_cost,
                                              seed=seed, extra_args=server_args, transport=config["transport"])
                    rows.setdefault((slo, policy), []).append(report)
                    print(f"  SLO {slo:g} ms, trace {seed}, {policy}: attainment {report.slo_attainment:.3f}, "
                          f"served accuracy {100 * report.mean_accuracy:.2f} %", flush=True)

    def attainment(slo, policy):
        return statistics.mean(r.slo_attainment for r in rows[(slo, policy)])

    print(f"\n| SLO | {' | '.join(policies.values())} | SlackFit − most accurate | SlackFit served accuracy |")
    print(f"|---|{'---:|' * (len(policies) + 2)}")
    for slo in slos:
        cells = [f"{attainment(slo, p):.3f} ({' / '.join(f'{r.slo_attainment:.3f}' for r in rows[(slo, p)])})"
                 for p in policies]
        margin = attainment(slo, "slackfit") - attainment(slo, f"fixed:{most}")
        accuracy = statistics.mean(r.mean_accuracy for r in rows[(slo, "slackfit")])
        print(f"| {slo:g} ms | {' | '.join(cells)} | {margin:+.3f} | {100 * accuracy:.2f} % |")


if __name__ == "__main__":
    main()
