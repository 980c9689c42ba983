"""Hostile input against a real ``ws-serve run`` process (HTTP and gRPC): counts of every status per kind.

Sends ``--http`` seeded hostile HTTP requests (malformed JSON and binary bodies, lying
``Inference-Header-Content-Length``, wrong shapes / datatypes / sizes, NaN and Inf, absurd ``slo_ms``,
wrong field types, bad encodings, unknown routes and methods, well-formed requests in between) and
``--grpc`` hostile gRPC ``ModelInfer`` calls, one after another, to a server of the untrained tiny
SuperNet, then prints a table of statuses per kind and every violation (a 5xx, a dropped connection,
an error body other than ``{"error": str}``, a 200 that is not strict JSON or valid binary data,
``INTERNAL`` / ``UNKNOWN`` / ``UNAVAILABLE`` over gRPC).

    python benchmarks/serve_fuzz.py [--http 1200] [--grpc 300] [--seed 0]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from ws_serve.hostile import FuzzReport, fuzz_grpc, fuzz_http, hostile_grpc_requests, hostile_http_requests
from ws_serve.launch import server_endpoints

MODEL = "ws_ofa_mbv3_035_32"


def _table(title: str, report: FuzzReport, seconds: float) -> None:
    statuses = sorted(report.statuses, key=str)
    kinds = sorted({kind for kind, _ in report.counts})
    total = sum(report.counts.values())
    print(f"\n#### {title}: {total} requests in {seconds:.1f} s\n")
    print("| kind | " + " | ".join(str(s) for s in statuses) + " |")
    print("|---|" + "---:|" * len(statuses))
    for kind in kinds:
        print(f"| {kind} | " + " | ".join(str(report.counts.get((kind, s), "")) for s in statuses) + " |")
    print("| **all** | " + " | ".join(f"**{report.statuses[s]}**" for s in statuses) + " |")
    print(f"\nviolations: {len(report.violations)}")
    for line in report.violations[:20]:
        print(f"  {line}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--http", type=int, default=1200, help="hostile HTTP requests")
    parser.add_argument("--grpc", type=int, default=300, help="hostile gRPC calls")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    server_args = ["--model", MODEL, "--subnets", "3", "--max-batch", "4", "--profile-repeats", "2",
                   "--backend", "eager", "--slo-ms", "10000", "--max-body-mb", "1", "--grpc-port", "0"]
    with tempfile.TemporaryDirectory() as tmp:
        with server_endpoints(server_args, Path(tmp) / "serve.log") as ends:
            t0 = time.perf_counter()
            http = fuzz_http(ends.http, hostile_http_requests(args.http, args.seed, MODEL, (3, 32, 32), max_batch=4))
            t1 = time.perf_counter()
            grpc = fuzz_grpc(ends.grpc, hostile_grpc_requests(args.grpc, args.seed, MODEL, (3, 32, 32), max_batch=4))
            t2 = time.perf_counter()
        log = (Path(tmp) / "serve.log").read_text(errors="replace")
    _table("HTTP (status per kind)", http, t1 - t0)
    _table("gRPC (status code per kind)", grpc, t2 - t1)
    print(f"\nserver log: {log.count('Traceback')} tracebacks; the server stopped "
          f"{'cleanly' if 'ws-serve: stopped' in log else 'UNCLEANLY'}")


if __name__ == "__main__":
    main()
