"""ws-serve (SlackFit over a served set) vs Ray Serve ``@serve.batch`` serving one fixed SubNet.

Same machine, same open-loop trace, same client (``ws_serve.loadgen.replay``, KServe v2 requests with
binary tensor data), same SLO:

* **ws-serve** — a ``ws-serve run`` process, one CPU worker, SlackFit over a Pareto served set of the
  tiny SuperNet (SubNetAct, no weight copies);
* **Ray Serve** — one replica holding one extracted SubNet (the Clipper+-style single-model baseline),
  dynamic batching with ``@serve.batch(max_batch_size, batch_wait_timeout_s)``, behind Ray Serve's
  HTTP proxy. The replica parses the same v2 request (``ws_serve.server.parse_infer_request``) and
  answers in the same format, so only the serving system differs. Run once with the served set's
  most accurate SubNet and once with its median one.

Accuracy is the served set's accuracy (the relative-MACs proxy of an untrained SuperNet unless a served
set with measured accuracies is given via ``--served``).

    python benchmarks/serve_rayserve.py [--rate 20] [--cv2 4] [--duration 20] [--slo-ms 250]
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
from pathlib import Path

import torch

from ws_core.checkpoint import save_checkpoint
from ws_serve.deploy import load_supernet, served_set_path
from ws_serve.launch import server_process
from ws_serve.loadgen import replay_sync
from ws_serve.profile import ServedSet, pareto_served_set, profile_served
from ws_serve.subnetact import SubNetAct
from ws_serve.traces import bursty_trace

MODEL = "ws_ofa_mbv3_035_32"


def run_ws_serve(args, tmp, plain, served, trace):
    act = SubNetAct(load_supernet(MODEL), served.configs)
    profile = profile_served(act.net, served, max_batch=args.max_batch, warmup=2, repeats=5)
    ckpt = save_checkpoint(plain, Path(tmp) / "net.safetensors")
    served.save(served_set_path(ckpt))
    profile.save(Path(tmp) / "profile.json")
    args_run = ["--checkpoint", str(ckpt), "--profile", str(Path(tmp) / "profile.json"), "--max-batch",
                str(args.max_batch), "--policy", "slackfit", "--slo-ms", str(args.slo_ms)]
    with server_process(args_run, Path(tmp) / "ws-serve.log") as url:
        replay_sync(url, MODEL, trace.head(2.0), slo_ms=args.slo_ms)  # warm-up
        return replay_sync(url, MODEL, trace, slo_ms=args.slo_ms)


def run_ray_serve(args, served, index, trace):
    import ray
    from ray import serve
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response

    entry = served.subnets[index]

    @serve.deployment(num_replicas=1, ray_actor_options={"num_cpus": 1}, max_ongoing_requests=1024)
    class FixedSubNetServer:
        def __init__(self, config: dict, accuracy: float, max_batch: int):
            from ws_serve.deploy import load_supernet as load
            from ws_serve.profile import ServedSet as Served
            from ws_serve.server import ModelInfo

            net = load(MODEL)
            self.sub = net.extract(config).eval()
            self.accuracy = accuracy
            self.subnet_id = net.space.validate(config).id
            self.info = ModelInfo(MODEL, (3, 32, 32), 10, max_batch,
                                  Served.from_dict({"subnets": [{"config": config, "accuracy": accuracy}]}))

        @serve.batch(max_batch_size=args.max_batch, batch_wait_timeout_s=args.batch_wait_s)
        async def infer(self, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
            with torch.inference_mode():
                out = self.sub(torch.cat(inputs))
            return list(out.split([x.shape[0] for x in inputs]))

        async def __call__(self, request: Request):
            from ws_serve.server import BadRequest, parse_infer_request

            body = await request.body()
            header = request.headers.get("inference-header-content-length")
            try:
                parsed = parse_infer_request(body, None if header is None else int(header), self.info)
            except BadRequest as e:
                return JSONResponse({"error": str(e)}, status_code=e.status)
            logits = (await self.infer(parsed.inputs)).numpy().astype("<f4")
            raw = logits.tobytes()
            head = json.dumps({"model_name": MODEL, "parameters": {"subnet_id": self.subnet_id,
                                                                   "accuracy": self.accuracy},
                               "outputs": [{"name": "logits", "datatype": "FP32", "shape": list(logits.shape),
                                            "parameters": {"binary_data_size": len(raw)}}]}).encode()
            return Response(head + raw, media_type="application/octet-stream",
                            headers={"Inference-Header-Content-Length": str(len(head))})

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": args.ray_port})
        app = FixedSubNetServer.bind(entry.config.to_dict(), entry.accuracy, args.max_batch)
        serve.run(app, route_prefix=f"/v2/models/{MODEL}/infer", blocking=False)
        url = f"http://127.0.0.1:{args.ray_port}"
        replay_sync(url, MODEL, trace.head(2.0), slo_ms=args.slo_ms)  # warm-up
        return replay_sync(url, MODEL, trace, slo_ms=args.slo_ms)
    finally:
        serve.shutdown()
        ray.shutdown()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=20.0, help="mean queries/s (steady 1/4 + Gamma 3/4)")
    parser.add_argument("--cv2", type=float, default=4.0)
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--slo-ms", type=float, default=250.0)
    parser.add_argument("--max-batch", type=int, default=8)
    parser.add_argument("--batch-wait-s", type=float, default=0.005, help="Ray Serve batch_wait_timeout_s")
    parser.add_argument("--served", help="served set JSON (default: a 6-SubNet Pareto set, MACs proxy accuracy)")
    parser.add_argument("--ray-port", type=int, default=8471)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    plain = load_supernet(MODEL)
    served = ServedSet.load(args.served) if args.served else pareto_served_set(
        plain, 6, generator=torch.Generator().manual_seed(args.seed))
    trace = bursty_trace(args.rate / 4, args.rate * 3 / 4, args.cv2, args.duration, seed=args.seed)
    print(f"Machine: {platform.machine()} {platform.processor() or ''}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; trace: {len(trace)} queries in {trace.duration:.0f} s "
          f"({trace.mean_rate:.1f} q/s, CV² {args.cv2:g}), SLO {args.slo_ms:g} ms, max batch {args.max_batch}; "
          f"accuracy: {served.accuracy_source}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        rows.append(("ws-serve SlackFit (6 SubNets, SubNetAct)", run_ws_serve(args, tmp, plain, served, trace)))
    for index, label in ((len(served) - 1, "most accurate"), (len(served) // 2, "median")):
        rows.append((f"Ray Serve @serve.batch, fixed {label} SubNet", run_ray_serve(args, served, index, trace)))
    print("\n| system | SLO attainment | mean served accuracy | throughput (q/s) | p50 ms | p99 ms | statuses |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for name, r in rows:
        d = r.to_dict()
        print(f"| {name} | {d['slo_attainment']:.4f} | {d['mean_accuracy']:.4f} | {d['throughput']:.1f} | "
              f"{d['p50_ms']:.0f} | {d['p99_ms']:.0f} | {d['statuses']} |")


if __name__ == "__main__":
    main()
